"""Diagnosis on code we did not write: single planted defects of the wild corpus (``examples/wild``), each audited
alone with ``--isolate`` as a user types it, are named at the line that decides them — not at the shared helper
(a generic ``mlp`` builder, a ``seed_all``), the user's adapter or the line where the effect shows."""

from __future__ import annotations

import pytest

from examples.wild.corpus import load_key, run_equivalence

#: (adapter, algorithm, defect, steps): the cases the diagnosis names at their key's line as its first location,
#: each audited for a few steps past the step its key says it first shows at (evaluation every 10 steps)
CASES = [
    ("branchy_adapter", "awac", "B1", 2),     # construction order decided by a local flag: the flag's assignment
    ("branchy_adapter", "iql", "B4", 2),      # a loss term, a graph-less extra actor forward before it
    ("branchy_adapter", "iql", "B5", 2),      # the TD target
    ("branchy_adapter", "iql", "B14", 12),    # evaluation reseeds through a shared helper: the call on that path
    ("branchy_adapter", "td3_bc", "B10", 3),  # a missing detach: the forward line, not `loss.backward()` in a helper
    ("branchy_adapter", "td3_bc", "B7", 3),   # the delayed update on odd steps: the flag's assignment above the
                                              # `if`/`with no_grad()` whose block calls a helper first
]


def _key_line(trainer: str, defect: str) -> int:
    return next(d["line"] for d in load_key(trainer)["defects"] if d["id"] == defect)


def _audit(trainer: str, adapter: str, algo: str, defect: str, steps: int, *options: str) -> dict:
    """``equivalence --isolate`` of the corpus trainer with only ``defect``, as a user types it (the key's glue
    declared); the check's JSON."""
    args = ["--algo", algo, "--candidate", f"examples.wild.{adapter}:only_{defect}", "--isolate", "--steps",
            str(steps), *options]
    for module in load_key(trainer)["glue"]:
        args += ["--glue", module]
    done = run_equivalence(args, threads=1)
    assert done.rc == 1 and done.check is not None, done.error
    return done.check


@pytest.mark.heavy
@pytest.mark.parametrize("adapter,algo,defect,steps", CASES, ids=[c[2] for c in CASES])
def test_a_single_defect_is_named_at_its_line(adapter, algo, defect, steps):
    key = load_key("pogo_branchy")
    assert next(d["first_step"] for d in key["defects"] if d["id"] == defect) < steps
    check = _audit("pogo_branchy", adapter, algo, defect, steps, "--eval-every", "10", "--no-self-check")
    findings = check["metrics"]["findings"]
    assert findings, check["summary"]
    located = [f for f in findings if f.get("location")]  # a loss only one side logs (B7's actor loss) has no line
    assert located, findings
    first = located[0]["location"]
    assert first["path"].endswith("pogo_branchy.py") and first["line"] == _key_line("pogo_branchy", defect), \
        (first, located[0].get("localisation"))
    glue_files = ("_adapter_common.py", "tensor_table.py", f"{adapter}.py")
    assert not any(f.get("location") and f["location"]["path"].endswith(glue_files) for f in findings)


#: (adapter, algorithm, trainer, defect): an architecture decided at one call of a generic ``mlp`` builder
BUILDER_CASES = [
    ("closures_adapter", "sac_n", "pogo_closures", "C4"),   # two hidden layers instead of three: the first draw
    ("cql_adapter", "cql", "pogo_cql_script", "Q4"),        # that differs is inside `mlp`, the loop over its layers
]


@pytest.mark.heavy
@pytest.mark.parametrize("adapter,algo,trainer,defect", BUILDER_CASES, ids=[c[3] for c in BUILDER_CASES])
def test_an_architecture_passed_to_a_shared_builder_is_named_at_the_call(embedded_dataset, adapter, algo, trainer,
                                                                         defect):
    """The construction replay moves out of the builder every factory path calls to the call that passed the
    sizes; the builder's line stays in the message as context. (Q4's trainer also seeds python's generator before
    numpy's, the reference after: reseeding in another order is no difference.)"""
    import importlib

    from checks.localise import localise_construction
    from multi_actor.algorithms import get_algorithm
    from multi_actor.config import build_config
    from multi_actor.loop import prepare_data
    from multi_actor.trainer import reference_factory
    from pogo_audit.model import glue

    key = load_key(trainer)
    cfg = build_config(None, [], algo=algo)
    data = prepare_data(cfg, get_algorithm(algo))
    factory = getattr(importlib.import_module(f"examples.wild.{adapter}"), f"only_{defect}")
    with glue.declared([glue.module_file(m) for m in key["glue"]] +
                       [glue.module_file(f"examples.wild.{adapter}")]):
        found = localise_construction(reference_factory, factory, cfg, data.spec, 0)
    assert found.frames[0]["file"].endswith(f"{trainer}.py"), found.message
    assert found.frames[0]["line"] == _key_line(trainer, defect), found.message
    assert "through the shared helper `mlp`" in found.message


@pytest.mark.heavy
def test_a_crash_after_a_value_neutral_snapshot_is_named_where_it_raised():
    """The closures trainer snapshots actor0 for its chain (``load_state_dict(actor.state_dict())``) and then raises
    calling the actor with a keyword it lacks (C2): everything it ran before the raise is value-neutral, so the line
    that raised is the finding — not the snapshot where the reference's step simply goes on."""
    crash = _audit("pogo_closures", "closures_adapter", "sac_n", "C2", 2, "--no-self-check")["metrics"]["crashes"][0]
    assert crash["location"]["path"].endswith("pogo_closures.py")
    assert crash["location"]["line"] == _key_line("pogo_closures", "C2"), crash
    assert crash["localisation"]["kind"] == "none", crash["localisation"]


@pytest.mark.heavy
def test_findings_that_follow_from_an_unsynchronised_architecture_name_no_line_of_the_step():
    """Q4 builds actor0 with one hidden layer less, so ``--isolate`` cannot give it the reference's tensors of that
    layer: every actor-dependent value of every step differs. The construction is named at its line (step 0); the
    steps' findings say they follow from the parameters the sides held differently, instead of naming the first
    forward line that reads them (a false alarm)."""
    findings = _audit("pogo_cql_script", "cql_adapter", "cql", "Q4", 2, "--no-self-check")["metrics"]["findings"]
    construction = [f for f in findings if f["first_step"] == 0 and f.get("location")]
    assert construction and construction[0]["location"]["line"] == _key_line("pogo_cql_script", "Q4")
    later = [f for f in findings if f["first_step"] >= 1 and (f.get("localisation") or {}).get("rule")]
    assert later, findings
    for f in later:
        assert not f.get("location"), f
        assert f["localisation"]["rule"] == "parameter state", f["localisation"]
        assert "actor0/actor/base_network.4" in f["localisation"]["message"]
