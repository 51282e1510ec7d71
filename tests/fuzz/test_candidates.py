"""`fuzz --target candidates`: generated broken trainers always end in a classified finding; the regressions it
found in the harness stay fixed; the property itself fails on a harness that would call a broken trainer equivalent."""

from __future__ import annotations

import numpy as np
import pytest

from checks.fuzz.properties import candidates as prop
from checks.fuzz.registry import get_property, properties_for
from checks.fuzz.runner import run_property
from checks.fuzz.strategies.candidates import CandidateCase, Defect
from pogo_audit.model.results import CheckResult


def _run(*defects: Defect, sync_init: bool = False) -> CheckResult:
    """The harness on the broken candidate, as the property runs it (returns the result)."""
    from checks.equivalence import EquivalenceOptions, run_equivalence
    from pogo_audit.core.loading import CheckedFactory
    from multi_actor.trainer import reference_factory
    from pogo_audit.runtime.data import ReplayBuffer

    config, data, batch_size = prop._setup()
    case = CandidateCase(tuple(defects), sync_init)
    return run_equivalence(prop.ALGO, config, data.spec, ReplayBuffer(data.processed, 1), reference_factory,
                           CheckedFactory(prop.broken_factory(case), "fuzz:broken", "--candidate"),
                           EquivalenceOptions(steps=3, self_check=True, bundle_dir=None, chain_oracle=False,
                                              sync_init=sync_init), batch_size=batch_size)


@pytest.mark.heavy
def test_generated_broken_candidates_are_all_findings(embedded_dataset):
    result = run_property(get_property("broken_candidate_is_a_finding"), 25, seed_value=3)
    assert result.verdict == "pass", result.metrics["findings"]
    assert result.metrics["examples_run"] == 25


def test_candidates_is_its_own_target():
    assert [p.name for p in properties_for("candidates")] == ["broken_candidate_is_a_finding"]
    assert "broken_candidate_is_a_finding" not in [p.name for p in properties_for("all")]


def test_a_step_that_edits_the_batch_in_place_is_a_finding_not_a_nondeterministic_reference(embedded_dataset):
    res = _run(Defect("mutate_batch", step=2))
    assert res.verdict == "fail" and res.metrics["self_check"] == "pass" and res.first_divergence.step == 2
    (batch,) = [row for row in res.details if row["group"] == "batch"]
    assert (batch["verdict"], batch["first_divergence_step"], batch["observable"]) == \
        ("fail", 2, "batch/unchanged_by_step")
    assert batch["difference"] == "mutated in place by step"


@pytest.mark.parametrize("value, kind", [(np.zeros(0), "shape differs: [0]"), ("0.5", "not numeric: str"),
                                         (None, "missing at this step"), ({"v": 1.0}, "not numeric: dict")])
def test_odd_loss_values_are_named(embedded_dataset, value, kind):
    res = _run(Defect("odd_loss", step=1, value=value))
    assert res.verdict == "fail"
    assert res.first_divergence.observable == "critic/critic_loss" and res.first_divergence.kind == kind


def test_a_non_numeric_parameter_is_named(embedded_dataset):
    res = _run(Defect("odd_param", value=(0, "w")))
    assert res.verdict == "fail" and res.first_divergence.step == 0
    assert res.first_divergence.kind == "not numeric: str"
    assert res.first_divergence.observable.startswith("params/actor0/actor/")


def test_the_property_fails_when_the_harness_says_equivalent(monkeypatch, embedded_dataset):
    """A check that cannot fail is a defect: with a harness that passes everything, the property reports it."""
    import checks.equivalence as equivalence

    monkeypatch.setattr(equivalence, "run_equivalence",
                        lambda *a, **k: CheckResult("equivalence", "td3_bc", "pass", summary="equivalent"))
    with pytest.raises(AssertionError, match="broken candidate judged 'pass'"):
        prop.check_broken_candidate(CandidateCase((Defect("nan_param", value=3),), False))
