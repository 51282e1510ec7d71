"""Reference algorithms reproduce the CORL golden traces shipped with the package, in float64 on any CPU and in
float32 as an honest drift report; planted bugs fail in both precisions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from checks.conformance import F32_REL, F32_STEPS, F64_REL, golden_sets, run_variant
from checks.conformance.command import JAX_VARIANTS, TORCH_VARIANTS
from checks.conformance.judge import Comparison, Rule, rule_for, scaled_difference
from pogo_audit.runtime.errors import UsageError
from pogo_audit.core.fingerprint import fingerprints_match, machine_fingerprint
from pogo_audit.core.golden import GoldenDir, shipped_golden_dir

ALL_VARIANTS = (*TORCH_VARIANTS, *JAX_VARIANTS)
FAST_STEPS = 20


@pytest.fixture(scope="module")
def f64() -> GoldenDir:
    return GoldenDir(precision="float64")


@pytest.fixture(scope="module")
def f32() -> GoldenDir:
    return GoldenDir(precision="float32")


def check_float64(res, variant: str, steps: int) -> None:
    """The float64 verdict: within the portable tolerance, with three orders of magnitude to spare."""
    assert res.verdict == "pass", res.first_divergence
    assert res.subject == f"{variant}/float64"
    assert res.metrics["mode"] == "tolerance" and res.metrics["rel"] == F64_REL
    assert res.steps_compared == steps
    assert res.metrics["max_rel"] < F64_REL * 1e-3  # measured <= 2.2e-14 here
    assert set(res.metrics["groups"]) >= {"logs", "digests"}


def check_float32(res, variant: str, steps: int) -> None:
    """The float32 report: bitwise on the recording CPU, else drift within the bound over the enforced steps."""
    assert res.verdict == "pass", res.first_divergence
    assert res.subject == f"{variant}/float32"
    assert res.steps_compared == steps
    if res.metrics["fingerprint_match"]:
        assert res.metrics["mode"] == "bitwise" and res.metrics["bitwise_pct"] == 100.0
    else:
        assert res.metrics["mode"] == "drift"
        assert res.metrics["fingerprint_differences"]
        assert max(res.metrics["max_rel_by_step"][:F32_STEPS]) <= F32_REL


#: the slow replay: float64 (the proof) at full length except the three slowest variants, which CI replays for their
#: first 40 steps (200 steps of float64 CQL, SAC-N and EDAC cost ~6 min of the 2-core CI machine, 60 steps ~1.5 min;
#: `pogo-audit conformance --algo all` replays them in full); float32 at full length for one torch and the JAX
#: variant, where the drift report past its enforced steps is exercised
SLOW_STEPS = {"cql": 40, "sac_n": 40, "edac": 40}
LONG_FLOAT32 = ("td3_bc", "rebrac")
FULL_LENGTH = [(v, "float64") for v in ALL_VARIANTS] + [(v, "float32") for v in LONG_FLOAT32]


@pytest.mark.heavy
@pytest.mark.parametrize("variant", [v for v in ALL_VARIANTS if v not in LONG_FLOAT32])
def test_float32_report_is_bitwise_only_on_the_recording_cpu(f32, variant):
    """The first steps in float32 of each variant the long replay does not run in float32."""
    check_float32(run_variant(f32, variant, steps=FAST_STEPS), variant, FAST_STEPS)


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "precision"), FULL_LENGTH)
def test_long_replay(variant, precision):
    """The float64 verdict of every variant, and the float32 report past its enforced steps of two."""
    gd = GoldenDir(precision=precision)
    steps = SLOW_STEPS.get(variant, 200) if precision == "float64" else 200
    res = run_variant(gd, variant, steps=steps)
    assert steps <= gd.variant(variant).protocol.n_steps == 200
    (check_float64 if precision == "float64" else check_float32)(res, variant, steps)


def test_the_shipped_sets_are_intact_and_complete():
    """Every file listed in each set's layout.json exists with its recorded sha256; both sets hold every variant."""
    import hashlib
    import json

    for precision in ("float32", "float64"):
        root = shipped_golden_dir(precision)
        layout = json.loads((root / "layout.json").read_text())
        for rel, digest in layout["sha256"].items():
            assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel
        gd = GoldenDir(root)
        assert gd.dtype == precision
        for v in ALL_VARIANTS:
            proto = gd.variant(v).protocol
            assert (proto.dtype, proto.n_steps, proto.batch_size) == (precision, 200, 256)
            assert gd.variant(v).init_params_path.is_file()


def test_protocol_comes_from_the_traces(tmp_path, f32):
    """A set recorded with another training seed is replayed with that seed: changing only meta.json's seed makes
    the step-0 seed check and every RNG fingerprint fail, so the seed is read, not assumed."""
    import json
    import shutil

    src = f32.root
    dst = tmp_path / "set"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("layout.json"))
    (dst / "layout.json").symlink_to(src / "layout.json")  # shared files are found relative to the real layout
    meta_path = dst / "td3_bc" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["seeds"]["torch_manual_seed_before_loop"] = 4321
    meta_path.write_text(json.dumps(meta))
    gd = GoldenDir(dst)
    assert gd.variant("td3_bc").protocol.training_seed == 4321
    res = run_variant(gd, "td3_bc", steps=2)
    assert res.verdict == "fail"
    assert res.first_divergence.observable == "rng/torch" and res.first_divergence.step == 1


def test_precision_choices_and_a_mismatched_set(f32):
    assert [g.dtype for g in golden_sets(None, "both")] == ["float64", "float32"]
    assert [g.dtype for g in golden_sets(str(f32.root), "float32")] == ["float32"]
    with pytest.raises(UsageError, match="--precision float64: the trace set .* is float32"):
        golden_sets(str(f32.root), "float64")


# --------------------------------------------------------------------------------------------------- the rules


def test_rule_per_precision_and_fingerprint():
    assert rule_for("float64", False) == rule_for("float64", True) == Rule("tolerance", F64_REL)
    assert rule_for("float32", True) == Rule("bitwise")
    assert rule_for("float32", False) == Rule("drift", F32_REL, F32_STEPS)


def test_scaled_difference_uses_the_scale_for_cancelling_sums():
    assert scaled_difference(1e-12, 2e-12, 0.0)[2] == pytest.approx(0.5)
    assert scaled_difference(1e-12, 2e-12, 10.0)[2] == pytest.approx(1e-13)
    assert scaled_difference(np.nan, np.nan, 0.0)[:3] == (True, 0.0, 0.0)
    assert scaled_difference(1.0, np.nan, 1.0)[2] == np.inf
    assert scaled_difference(np.zeros(3), np.zeros(2), 1.0)[2] == np.inf


def test_bitwise_rule_fails_on_one_ulp_and_drift_rule_only_enforces_early_steps():
    one_ulp = float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    bitwise = Comparison(Rule("bitwise"))
    bitwise.record("logs", 1, "log/x", 1.0, one_ulp)
    assert bitwise.first is not None and bitwise.first.step == 1

    drift = Comparison(Rule("drift", 1e-4, 10))
    drift.record("logs", 5, "log/x", 1.0, 1.0 + 1e-5)   # inside the bound
    drift.record("logs", 50, "log/x", 1.0, 2.0)         # past it, but after the enforced steps: reported only
    assert drift.first is None and drift.first_past.step == 50
    drift.record("rng", 60, "rng/torch", 0.0, np.inf, exact=True)  # integer state: enforced at every step
    assert drift.first.step == 60
    drift2 = Comparison(Rule("drift", 1e-4, 10))
    drift2.record("logs", 3, "log/x", 1.0, 1.001)
    assert drift2.first.step == 3


def test_fingerprints_match_only_when_every_field_is_known():
    torch_fp = machine_fingerprint("torch", 1)
    assert fingerprints_match(dict(torch_fp), torch_fp) == (True, [])
    unknown = {**torch_fp, "model": None}
    ok, reasons = fingerprints_match(unknown, torch_fp)
    assert not ok and reasons == ["model: not recorded"]
    other = {**torch_fp, "isa": "AVX512" if torch_fp["isa"] != "AVX512" else "AVX2"}
    ok, reasons = fingerprints_match(other, torch_fp)
    assert not ok and reasons[0].startswith("isa: ")
    assert fingerprints_match(None, torch_fp)[0] is False


def test_float32_on_a_matching_fingerprint_demands_bitwise(f32, monkeypatch):
    """With the recording's fingerprint equal to this machine's, the float32 verdict is bitwise and a planted
    last-bit difference fails it (on a foreign CPU the same planted difference passes the drift bound)."""
    here = machine_fingerprint("torch", 1)
    monkeypatch.setattr(GoldenDir, "fingerprint", here)
    f32 = GoldenDir(f32.root)
    from reference_algos.torch import td3_bc

    original = td3_bc.TD3BC.train_step

    def last_bit(self, batch):
        log = original(self, batch)
        if "critic_loss" in log:
            log["critic_loss"] = float(np.nextafter(np.float32(log["critic_loss"]), np.float32(np.inf)))
        return log

    clean = run_variant(f32, "td3_bc", steps=3)
    assert clean.metrics["mode"] == "bitwise" and clean.metrics["fingerprint_match"]
    monkeypatch.setattr(td3_bc.TD3BC, "train_step", last_bit)
    res = run_variant(f32, "td3_bc", steps=3)
    assert clean.verdict == ("pass" if clean.metrics["bitwise_pct"] == 100.0 else "fail")
    assert res.verdict == "fail" and res.first_divergence.observable == "log/critic_loss"
    monkeypatch.setattr(GoldenDir, "fingerprint", None)
    assert run_variant(GoldenDir(f32.root), "td3_bc", steps=3).verdict == "pass"


# -------------------------------------------------------------------------------------------- planted bugs


def _built_with(module, **attrs):
    """``module.build`` whose trainer gets ``attrs`` set after construction (a reference that ignores its config)."""
    original = module.build

    def build(*args, **kwargs):
        trainer = original(*args, **kwargs)
        for k, v in attrs.items():
            setattr(trainer, k, v)
        return trainer

    return build


def _wrong_discount(monkeypatch):
    from reference_algos.torch import td3_bc

    monkeypatch.setattr(td3_bc, "build", _built_with(td3_bc, discount=0.98))
    return "td3_bc"


def _ignored_policy_freq(monkeypatch):
    from reference_algos.torch import td3_bc

    monkeypatch.setattr(td3_bc, "build", _built_with(td3_bc, policy_freq=1))
    return "td3_bc"


def _missing_detach(monkeypatch):
    """TD3+BC's lambda = alpha / mean|Q| without ``.detach()``: its gradient leaks into the actor update."""
    import torch.nn.functional as F

    from reference_algos.torch import td3_bc

    def actor_loss(pi, q, actions, alpha):
        return -(alpha / q.abs().mean()) * q.mean() + F.mse_loss(pi, actions)

    monkeypatch.setattr(td3_bc, "td3_bc_actor_loss", actor_loss)
    return "td3_bc"


def _extra_draw(monkeypatch):
    from reference_algos.torch import td3_bc

    original = td3_bc.TD3BC.train_step

    def shifted(self, batch):
        torch.rand(1)
        return original(self, batch)

    monkeypatch.setattr(td3_bc.TD3BC, "train_step", shifted)
    return "td3_bc"


def _swapped_order(monkeypatch):
    """IQL's Q step before its V step: the advantage then uses the updated target critic."""
    from reference_algos.torch import iql

    def train_step(self, batch):
        self.total_it += 1
        observations, actions, rewards, next_observations, dones = batch
        log_dict: dict[str, float] = {}
        with torch.no_grad():
            next_v = self.vf(next_observations)
        self._update_q(next_v, observations, actions, rewards.squeeze(dim=-1), dones.squeeze(dim=-1), log_dict)
        adv = self._update_v(observations, actions, log_dict)
        self._update_policy(adv, observations, actions, log_dict)
        return log_dict

    monkeypatch.setattr(iql.ImplicitQLearning, "train_step", train_step)
    return "iql_gaussian"


PLANTED = {"wrong discount": (_wrong_discount, ("critic_loss",)), "ignored policy_freq": (_ignored_policy_freq, ("actor",)),
           "missing detach": (_missing_detach, ("actor",)), "one extra random draw": (_extra_draw, ("critic_loss", "rng/torch")),
           "swapped update order": (_swapped_order, ("value_loss",))}


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_a_planted_bug_fails_in_both_precisions(monkeypatch, bug, precision):
    plant, where = PLANTED[bug]
    variant = plant(monkeypatch)
    res = run_variant(GoldenDir(precision=precision), variant, steps=3)
    assert res.verdict == "fail"
    assert res.first_divergence.step <= 2
    assert any(w in res.first_divergence.observable for w in where)
    rng = res.metrics["groups"]["rng"]
    assert (rng["bitwise"] < rng["compared"]) == (bug == "one extra random draw")  # an integer state, any CPU


def test_float64_tolerance_catches_the_float32_rounding_of_iql_constants(monkeypatch, f64):
    """CORL evaluates IQL's expectile weights in float32; the same loss with float64 weights (0.7 instead of
    float32(0.7), 1.7e-8 apart) must already fail the float64 bound — the tolerance cannot hide a real bug."""
    from reference_algos.torch import iql

    def float64_weights(u, tau):
        return torch.mean(torch.abs(tau - (u < 0).to(u.dtype)) * u**2)

    monkeypatch.setattr(iql, "asymmetric_l2_loss", float64_weights)
    res = run_variant(f64, "iql_gaussian", steps=3)
    assert res.verdict == "fail"
    assert res.first_divergence.step == 1
    assert res.first_divergence.max_rel > F64_REL


def test_float64_build_makes_every_tensor_float64():
    from multi_actor import registry

    for variant, (spec, v) in registry.variants("torch").items():
        module = spec.reference
        trainer = module.build(dataclasses.replace(module.Config(), **v.overrides), 11, 3, 1.0, "cpu",
                               dtype=torch.float64)
        dtypes = {str(t.dtype) for t in trainer.named_tensors().values()}
        assert dtypes == {"torch.float64"}, (variant, dtypes)
    assert torch.get_default_dtype() == torch.float32
