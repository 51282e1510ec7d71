"""Reference algorithms reproduce the CORL golden traces; the conformance check can fail."""

from __future__ import annotations

import pytest

from checks.conformance import JAX_VARIANTS, TORCH_VARIANTS, run_variant

ALL_VARIANTS = (*TORCH_VARIANTS, *JAX_VARIANTS)

FAST_STEPS = 50


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_variant_matches_golden_first_steps_bitwise(golden_dir, variant):
    res = run_variant(golden_dir, variant, steps=FAST_STEPS)
    assert res.verdict == "pass", res.first_divergence
    assert res.steps_compared == FAST_STEPS
    assert res.metrics["bitwise_pct"] == 100.0
    assert set(res.metrics["groups"]) >= {"logs", "digests", "snapshots"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_variant_matches_golden_all_steps(golden_dir, variant):
    res = run_variant(golden_dir, variant)
    assert res.verdict == "pass", res.first_divergence
    assert res.steps_compared == golden_dir.variant(variant).n_steps == 200
    assert res.metrics["bitwise_pct"] == 100.0


def test_conformance_detects_a_planted_ordering_bug(golden_dir, monkeypatch):
    """IQL with the target update skipped must fail at step 1 on a q_target digest."""
    from reference_algos.torch import iql

    monkeypatch.setattr(iql, "soft_update", lambda target, source, tau: None)
    res = run_variant(golden_dir, "iql_gaussian", steps=3)
    assert res.verdict == "fail"
    assert res.first_divergence.step == 1
    assert res.first_divergence.observable.startswith(("sum/q_target/", "l2/q_target/"))


def test_conformance_detects_a_shifted_rng_stream(golden_dir, monkeypatch):
    """An extra global-RNG draw before TD3+BC's step is caught by the RNG fingerprint and the losses."""
    import torch

    from reference_algos.torch.td3_bc import TD3BC

    original = TD3BC.train_step

    def shifted(self, batch):
        torch.rand(1)
        return original(self, batch)

    monkeypatch.setattr(TD3BC, "train_step", shifted)
    res = run_variant(golden_dir, "td3_bc", steps=2)
    assert res.verdict == "fail"
    assert res.first_divergence.step == 1
