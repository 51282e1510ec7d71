"""``jax-profile`` on a JAX trainer written the way research code is written (``jax_research_script.py``: one long
``main()`` of closures driven as a generator, a Python loop over updates, ``Metrics``, inline evaluation, a growing
log list), judged against its answer key: what it finds is at a keyed line, nothing else fails, SARIF has one
result per located failure."""

from __future__ import annotations

import json
from pathlib import Path

import jax_research_target as research
import pytest

from checks.jax_profile.profile import profile_target
from checks.jax_profile.targets import as_target
from checks.registry import export_parts
from pogo_audit.core.exporters import to_sarif
from pogo_audit.model import glue
from pogo_audit.model.results import RunResults

KEY = json.loads((Path(__file__).parent / "jax_research_script.answers.json").read_text())
DEFECTS = {d["id"]: d for d in KEY["defects"]}
OPTIONS = dict(steps=3, epochs=2, warmup=1, unjitted_steps=0, repeats=1, timing_steps=3, memory_steps=30,
               evaluations=3)


def _keyed_lines(defect: dict) -> set[int]:
    return {defect["line"], *(r["line"] for r in defect.get("related", []))}


@pytest.mark.slow
def test_keyed_defects_at_their_lines_no_false_failure_and_sarif_per_located_failure():
    """The script with a constant BC weight (no per-update recompile, so the memory probe runs: the key's first
    interaction), profiled once: the keyed defects it can see are failures at their lines, every failure is at a
    keyed line (the extra actors' eager ops at the call that runs them un-jitted, not at the op deep inside the
    model), nothing at the non-defect lines, one SARIF result per located failure."""
    with glue.declared([research.__file__]):
        steady = profile_target(as_target(research.steady_research_target(), "steady"), **OPTIONS)
    failing = {(f["kind"], f.get("line")) for f in steady.details if f["severity"] == "fail"}
    assert ("host_memory_growth", DEFECTS["log-growth"]["line"]) in failing
    assert ("host_sync", DEFECTS["per-update-float-sync"]["line"]) in failing
    assert ("evaluation_recompile", DEFECTS["rejit-per-evaluation"]["line"]) in failing
    assert ("host_to_device", DEFECTS["extra-actors-not-jitted"]["line"]) in failing  # the call, not the eager op
    eager = next(f for f in steady.details if f["kind"] == "host_to_device")
    assert f"`{DEFECTS['extra-actors-not-jitted']['callee']['name']}` runs op by op" in eager["message"]
    assert eager["related"][0]["line"] == 77  # the first transfer: inside Actor.__call__, the key's consequence
    memory = steady.metrics["host_memory"]
    assert memory["growing"] and memory["low"] >= 256, memory  # one dict of 7 values per update, ~310 B

    keyed = set().union(*(_keyed_lines(d) for d in KEY["defects"]))
    for f in steady.details:
        if f["severity"] == "fail":
            assert f.get("line") is not None, f["message"]
            assert f["line"] in keyed, f["message"]
    non_defects = {d["line"] for d in KEY["non_defects"]}
    assert not any(f.get("line") in non_defects for f in steady.details)

    sarif = to_sarif(RunResults(checks=[steady]), parts=export_parts())
    located = [f for f in steady.details if f["severity"] == "fail" and f.get("line")]
    assert len(sarif["runs"][0]["results"]) == len(located) > 0


@pytest.mark.slow
def test_a_static_argument_that_changes_every_update_is_located_at_the_call():
    """As shipped, ``bc_coef`` (a new float every update) is a static argument of a jitted function: the recompile
    is named at the call that passes it, and the memory probe says why it did not run instead of dropping it."""
    with glue.declared([research.__file__]):
        res = profile_target(as_target(research.research_target(), "as-shipped"),
                             **{**OPTIONS, "evaluations": 0})
    defect = DEFECTS["static-bc-coef-recompile"]
    recompiles = [f for f in res.details if f["kind"] == "recompile" and f["function"] == defect["callee"]["name"]]
    assert [f["line"] for f in recompiles] == [defect["line"]]
    assert any(f["kind"] == "probe_failed" and "host memory not measured" in f["message"] for f in res.details)
