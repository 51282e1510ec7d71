"""``report --jobs N``: the stages run in worker processes (a per-algorithm stage one algorithm per worker) and the
results are the serial run's, field for field but wall times; the options rebuild in the workers from their specs."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from checks.suite import SuiteOptions, run_suite, stage_tasks
from pogo_audit.core.loading import load_factory

SKIP = ("mutants", "fuzz", "jax-profile", "conformance", "failure-handling")


def _fields(results) -> list[str]:
    """Every check's fields but its wall time and process layout, as JSON (NaN compares equal as text)."""
    out = []
    for check in results.checks:
        d = dataclasses.asdict(check)
        d.pop("seconds")
        d["metrics"].pop("threads", None)
        out.append(json.dumps(d, sort_keys=True, default=str))
    return out


def test_a_per_algorithm_stage_is_one_task_per_algorithm():
    opts = SuiteOptions(algos=("iql", "cql"), skip=("mutants", "fuzz", "conformance"))
    assert stage_tasks(opts) == [("docs", ("iql", "cql")), ("equivalence", ("iql",)), ("equivalence", ("cql",)),
                            ("jax-profile", ("iql", "cql")), ("failure-handling", ("iql", "cql"))]


def test_a_loaded_factory_pickles_as_its_spec():
    factory = load_factory("multi_actor.trainer:reference_factory", "--reference")
    again = pickle.loads(pickle.dumps(factory))
    assert again == factory and again.spec == "multi_actor.trainer:reference_factory"


@pytest.mark.heavy
def test_two_jobs_give_the_serial_results(embedded_dataset, tmp_path, monkeypatch):
    """At the same threads per trainer (CQL is thread-count sensitive): a serial report within a budget of one
    thread, and two jobs within a budget of two (one thread each)."""
    from pogo_audit.cli.main import build_parser
    from pogo_audit.runtime.threads import ENV_VAR

    opts = SuiteOptions(algos=("iql", "cql"), steps=5, skip=SKIP, bundle_dir=str(tmp_path / "bundles"),
                        parser=build_parser(), parser_spec="pogo_audit.cli.main:build_parser")
    monkeypatch.setenv(ENV_VAR, "1")
    serial = run_suite(opts)
    said: list[str] = []
    monkeypatch.setenv(ENV_VAR, "2")
    parallel = run_suite(opts, progress=said.append, jobs=2)
    for check in (*serial.checks, *parallel.checks):
        if check.check == "equivalence":
            assert check.metrics["threads"]["per_process"] == 1
    assert [c.check for c in serial.checks] == ["docs"] * (len(serial.checks) - 2) + ["equivalence"] * 2
    assert [c.subject for c in serial.checks[-2:]] == ["iql", "cql"]
    assert _fields(parallel) == _fields(serial)
    assert len(said) == 3 and {m.split(" done")[0] for m in said} == {"docs", "equivalence iql", "equivalence cql"}
