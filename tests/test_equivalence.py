"""Equivalence harness: passes on our trainer, fails on mutants with a bundle, is inconclusive on a
nondeterministic reference, and reports bad inputs in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from checks.mutants import catalog, run_mutant
from multi_actor.config import build_config
from multi_actor.trainer import reference_factory
from pogo_audit.cli.main import main


def cfg_for(algo="iql", actors=3, overrides=()):
    return build_config(None, list(overrides), algo=algo, num_actors=actors)


def test_our_trainer_is_equivalent_and_every_group_is_compared(embedded_dataset):
    res = equivalence_for_algo("iql", cfg_for(), EquivalenceOptions(steps=12, full_every=5))
    assert res.verdict == "pass", res.summary
    groups = {row["group"]: row for row in res.details}
    assert set(groups) == {"critic losses", "actor0 losses", "critic params", "target params", "actor0 params",
                           "rng", "grad leak", "chain (W2 oracle)", "optimizer", "gradients used", "batch"}
    assert all(row["verdict"] == "pass" for row in res.details)
    assert groups["critic params"]["steps_compared"] == 13  # step 0 (initial parameters) + 12 steps
    assert res.metrics["self_check"] == "pass"


def test_sinkhorn_paired_chain_is_equivalent_and_oracle_agrees(embedded_dataset):
    cfg = cfg_for("iql", overrides=("actor_configs=[{type: gaussian}, {type: tanh_gaussian}, {type: implicit}]",))
    res = equivalence_for_algo("iql", cfg, EquivalenceOptions(steps=6, self_check=False))
    assert res.verdict == "pass", res.summary
    chain = next(r for r in res.details if r["group"] == "chain (W2 oracle)")
    assert chain["observables"] == 2 and chain["verdict"] == "pass"


def test_mutant_is_reported_with_first_divergence_and_bundle(embedded_dataset, tmp_path, capsys):
    mutant = next(m for m in catalog("iql") if m.name == "iql_rewards_not_squeezed")
    res = run_mutant(mutant, bundle_dir=str(tmp_path))
    assert res.metrics["killed"] and res.metrics["expected_caught"]
    assert res.first_divergence.step == 1 and res.first_divergence.observable == "critic/q_loss"
    bundle = Path(res.metrics["bundle"])
    assert bundle.is_file()
    plots = tmp_path / "plots"
    assert main(["inspect", str(bundle), "--top", "3", "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "critic/q_loss" in out and "mismatched" in out.lower()
    for name in ("diff_hist.png", "heatmap.png", "history.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _FlakyReference:
    """Reference whose second instance drifts at step 3 — the self-check must call it nondeterministic."""

    built = 0

    def __init__(self, config, spec, seed):
        type(self).built += 1
        self.inner = reference_factory(config, spec, seed)
        self.nth = type(self).built
        self.t = 0

    def step(self, batch):
        self.t += 1
        out = self.inner.step(batch)
        if self.nth % 2 == 0 and self.t == 3:
            out = {k: v + 1e-3 for k, v in out.items()}
        return out

    def parameters(self):
        return self.inner.parameters()

    def load_parameters(self, params):
        self.inner.load_parameters(params)


def test_nondeterministic_reference_is_inconclusive_not_a_false_failure(embedded_dataset):
    _FlakyReference.built = 0
    res = equivalence_for_algo("td3_bc", cfg_for("td3_bc"), EquivalenceOptions(steps=5),
                               reference=("flaky", _FlakyReference))
    assert res.verdict == "inconclusive"
    assert "nondeterministic" in res.summary and res.first_divergence.step == 3


def test_ci_outputs_from_the_cli(embedded_dataset, tmp_path, capsys):
    args = ["equivalence", "--algo", "td3_bc", "--steps", "4", "--actors", "2", "-q", "--no-self-check",
            "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"), "--sarif", str(tmp_path / "r.sarif"),
            "--summary-md", str(tmp_path / "s.md")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "equivalence td3_bc" in out and "grad leak" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema_version"] == 1 and data["checks"][0]["verdict"] == "pass"
    assert "<testsuites" in (tmp_path / "r.xml").read_text()
    assert json.loads((tmp_path / "r.sarif").read_text())["version"] == "2.1.0"
    assert (tmp_path / "s.md").stat().st_size < 1024 * 1024


# ------------------------------------------------------------------------------------------------ bad inputs


def assert_one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_candidate_missing_module(capsys):
    assert_one_line_error(capsys, ["equivalence", "--candidate", "no_such_pkg.mod:factory"], "--candidate",
                   "'no_such_pkg.mod'")


def test_candidate_bad_spec(capsys):
    assert_one_line_error(capsys, ["equivalence", "--candidate", "justamodule"], "--candidate", "MODULE:FACTORY")


def test_candidate_factory_raises(embedded_dataset, tmp_path, capsys, monkeypatch):
    (tmp_path / "bad_factories.py").write_text(
        "def raises(config, spec, seed):\n    raise ValueError('boom: no GPU here')\n"
        "class Half:\n    def step(self, batch):\n        return {}\n    def parameters(self):\n        return {}\n"
        "def incomplete(config, spec, seed):\n    return Half()\n")
    monkeypatch.chdir(tmp_path)
    assert main(["equivalence", "--steps", "2", "-q", "--candidate", "bad_factories:raises"]) == 1  # a finding
    assert "candidate crashed in factory: ValueError: boom: no GPU here" in capsys.readouterr().out
    assert_one_line_error(capsys, ["equivalence", "--steps", "2", "--candidate", "bad_factories:incomplete"],
                   "lacks protocol method(s) load_parameters")


def test_inspect_bad_bundles(tmp_path, capsys):
    trunc = tmp_path / "trunc.npz"
    np.savez(trunc, a=np.zeros(1000))
    trunc.write_bytes(trunc.read_bytes()[:300])
    assert_one_line_error(capsys, ["inspect", str(trunc)], "trunc.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a bundle at all")
    assert_one_line_error(capsys, ["inspect", str(junk)], "junk.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __header__=np.array([{"format": "x"}], dtype=object))
    assert_one_line_error(capsys, ["inspect", str(pickled)], "pickled.npz", "pickle")
    assert_one_line_error(capsys, ["inspect", str(tmp_path / "missing.npz")], "missing.npz")


# ------------------------------------------------------------------------------------------------ mutation catalog


def test_catalog_covers_the_required_bugs():
    names = {m.name for m in catalog()}
    assert len([m for m in catalog() if m.framework == "torch"]) >= 25
    for required in ("iql_next_v_after_v_update", "iql_adv_after_critic_update", "awac_missing_detach_advantage",
                     "iql_lr_schedule_not_stepped", "td3_no_grad_actor0_action", "td3_policy_freq_before_increment",
                     "td3_bc_scaled_by_alpha", "td3_actor_target_updated_twice", "td3_total_it_incremented_twice",
                     "td3_critic_updated_twice_on_policy_steps", "cql_policy_loss_after_critic_step",
                     "cql_bc_logprob_zeros", "actor1_extra_global_draw", "sac_n_actor_critic_order_swapped",
                     "awac_broadcast", "awac_next_action_mean", "actors_built_before_critics",
                     "eval_reseeds_global_numpy", "w2_std_term_dropped", "sinkhorn_half_cost",
                     "reference_actor_after_update"):
        assert required in names, required


@pytest.mark.parametrize("name", ["td3_critic_updated_twice_on_policy_steps", "awac_missing_detach_advantage",
                                  "w2_std_term_dropped", "actors_built_before_critics"])
def test_cheap_mutants_are_killed_by_their_expected_observable(embedded_dataset, name):
    mutant = next(m for m in catalog() if m.name == name)
    res = run_mutant(mutant)
    assert res.metrics["killed"] and res.metrics["expected_caught"], res.details
    assert res.metrics["location"]["line"] >= 1


@pytest.mark.slow
def test_every_mutant_is_killed_by_its_expected_group(embedded_dataset, capsys, tmp_path):
    """The whole catalog through the command (the JAX mutants included): each killed, by the observables it is
    expected to move, with the mutated line known."""
    out = tmp_path / "mutants.json"
    assert main(["mutants", "-q", "--json", str(out)]) == 0
    mutants = catalog()
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"all {len(mutants)} mutants killed"
    assert any(line.startswith(f"mutation catalog: {len(mutants)}/{len(mutants)} killed (100%)") for line in lines)
    results = {c["subject"]: c["metrics"] for c in json.loads(out.read_text())["checks"]}
    assert set(results) == {m.name for m in mutants}
    assert sum(m.framework == "jax" for m in mutants) >= 5
    for name, metrics in results.items():
        assert metrics["killed"] and metrics["expected_caught"], (name, metrics)
        assert metrics["location"] is not None, name


@pytest.mark.parametrize("twin_steps, verdict", [(2, "pass"), (3, "inconclusive"), (0, "inconclusive")])
def test_the_self_check_twin_runs_its_first_steps_only(embedded_dataset, twin_steps, verdict):
    """The twin drifts at step 3: seen when the self-check covers step 3 (or every step, 0), not when it stops at 2."""
    _FlakyReference.built = 0
    res = equivalence_for_algo("td3_bc", cfg_for("td3_bc"), EquivalenceOptions(steps=5, self_check_steps=twin_steps),
                               reference=("flaky", _FlakyReference))
    assert res.verdict == verdict, res.summary
    assert res.metrics["self_check_steps"] == (twin_steps or 5)


def test_candidate_magnitudes_are_computed_only_for_tensors_whose_digest_differs():
    """The lazy observation gives exactly the eager one: sums and norms of a tensor whose digest equals the
    reference's are the reference's numbers, the others are computed."""
    from checks.equivalence.observables import Deferred, param_observables, settle_deferred

    same = np.arange(6, dtype=np.float32).reshape(2, 3)
    other = same.copy()
    other[0, 0] = 7.0
    ref = param_observables({"critic/q/w": same, "actor0/pi/w": same})
    cand = param_observables({"critic/q/w": same, "actor0/pi/w": other}, lazy=True)
    computed = []
    for name, value in cand.items():
        if isinstance(value, Deferred):
            value.compute = (lambda f=value.compute, n=name: computed.append(n) or f())
    settle_deferred(ref, cand)
    assert cand == param_observables({"critic/q/w": same, "actor0/pi/w": other})
    assert sorted(computed) == ["params/actor0/pi/w/l2", "params/actor0/pi/w/sum"]


def test_a_lazy_reference_is_computed_once_for_every_side():
    """A reference observed in the calling process defers its magnitudes too: each is computed once, the candidate
    and the twin take it where their digest is the reference's, and nothing deferred is left on any side."""
    from checks.equivalence.observables import Deferred, param_observables, settle_deferred

    same = np.arange(6, dtype=np.float32).reshape(2, 3)
    other = same + 1.0
    params = {"critic/q/w": same, "actor0/pi/w": same}
    computed = []
    ref = param_observables(params, lazy=True)
    for name, value in ref.items():
        if isinstance(value, Deferred):
            value.compute = (lambda f=value.compute, n=name: computed.append(n) or f())
    cand = param_observables({"critic/q/w": same, "actor0/pi/w": other}, lazy=True)
    twin = param_observables(params, lazy=True)
    settle_deferred(ref, cand, twin)
    assert ref == twin == param_observables(params)
    assert cand == param_observables({"critic/q/w": same, "actor0/pi/w": other})
    assert sorted(computed) == sorted(k for k in ref if not k.endswith("/hash"))  # each once


def test_the_history_has_every_scalar_at_every_step_nan_where_a_step_lacked_it():
    """The run keeps one dict of scalars a step and builds the series when a bundle or the result needs them: a
    series starts with NaN before its observable first shows, has NaN where a step lacked it, and non-scalars
    (digests, arrays, booleans) are left out."""
    from checks.equivalence.verdict import RunState

    run = RunState(t0=0.0)
    run.remember(0, {"params/a/sum": 1.0, "params/a/hash": "x"}, {"params/a/sum": 1.0})
    run.remember(1, {"params/a/sum": 2.0, "critic/loss": 0.5, "flag": True}, {"critic/loss": 0.25})
    run.remember(2, {"critic/loss": 0.75, "full": np.zeros(3)}, {"params/a/sum": 3.0, "critic/loss": 0.5})
    history = run.history()
    assert run.steps_done == [0, 1, 2]
    assert list(history["reference"]) == ["params/a/sum", "critic/loss"]
    np.testing.assert_array_equal(history["reference"]["params/a/sum"], [1.0, 2.0, np.nan])
    np.testing.assert_array_equal(history["reference"]["critic/loss"], [np.nan, 0.5, 0.75])
    np.testing.assert_array_equal(history["candidate"]["params/a/sum"], [1.0, np.nan, 3.0])
    losses = run.history(lambda name: name.startswith("critic/"))
    assert {side: list(series) for side, series in losses.items()} == {"reference": ["critic/loss"],
                                                                       "candidate": ["critic/loss"]}
