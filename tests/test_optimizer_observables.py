"""Optimizer, learning-rate and consumed-gradient observables: per canonical parameter, bitwise on our trainers and
on the example adapter (one Adam over both critics vs CORL's two), a schedule never stepped fails at step 1, a
harmless .grad leak is a warning and a harmful one fails in "gradients used"."""

from __future__ import annotations

import pytest
import torch

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from pogo_audit.core.loading import load_factory
from checks.equivalence.optimizer import OptimizerProbe
from multi_actor.config import build_config
from multi_actor.loop import prepare_data
from multi_actor.trainer import multi_actor_factory, reference_factory
from pogo_audit.runtime.data import ReplayBuffer
from pogo_audit.cli.render import equivalence_table

SHORT = dict(steps=3, seed=0, self_check=False, chain_oracle=False, bundle_dir=None)


def groups_of(res):
    return {row["group"]: row for row in res.details}


def run(algo, candidate, steps=3):
    cfg = build_config(None, [], algo=algo, num_actors=3)
    return equivalence_for_algo(algo, cfg, EquivalenceOptions(**{**SHORT, "steps": steps}),
                                candidate=("test candidate", candidate))


def optimized_tensors(algo):
    """How many critic/actor0 tensors the reference trains (every one is in exactly one optimizer)."""
    cfg = build_config(None, [], algo=algo, num_actors=3)
    names = reference_factory(cfg, prepare_data(cfg).spec, 0).named_tensors()
    return len([k for k in names if k.startswith(("critic/", "actor0/"))])


def disabled(owner, method):
    """Our multi-actor trainer with ``owner(trainer.base).<method>`` replaced by a no-op."""

    def factory(config, spec, seed):
        trainer = multi_actor_factory(config, spec, seed)
        setattr(owner(trainer.base), method, lambda *args, **kwargs: None)
        return trainer

    return factory


def test_our_trainers_match_per_parameter_optimizer_state_bitwise(embedded_dataset):
    for algo, params in (("iql", 25), ("sac_n", 19)):  # sac_n: log_alpha included
        assert optimized_tensors(algo) == params
        res = run(algo, multi_actor_factory, steps=2)
        assert res.verdict == "pass", res.summary
        groups = groups_of(res)
        # lr, step, exp_avg/{sum,hash}, exp_avg_sq/{sum,hash} per parameter, compared from step 1
        assert groups["optimizer"]["observables"] == 6 * params
        assert groups["optimizer"]["steps_compared"] == 2 and groups["optimizer"]["verdict"] == "pass"
        assert groups["gradients used"]["observables"] == 2 * params
        assert groups["grad leak"]["verdict"] == "pass" and res.metrics["warnings"] == []


def test_the_temperature_is_an_observed_parameter(embedded_dataset):
    cfg = build_config(None, [], algo="cql", num_actors=3)
    data = prepare_data(cfg)
    trainer = reference_factory(cfg, data.spec, 0)
    probe = OptimizerProbe(trainer)
    assert probe.observe() == {}  # step 0: no optimizer state yet
    trainer.step(ReplayBuffer(data.processed, 1).sample(16))
    obs = probe.observe()
    scalar = "critic/log_alpha/constant"
    assert obs[f"optim/{scalar}/step"] == 1.0
    assert obs[f"optim/{scalar}/lr"] == float(trainer.base.optimizers()["alpha"].param_groups[0]["lr"])
    assert f"optim/{scalar}/exp_avg_sq/hash" in obs and f"grad_used/{scalar}/l2" in obs
    # the Lagrange multiplier's optimizer exists but steps only with cql_lagrange (off by default)
    assert obs["optim/critic/log_alpha_prime/constant/step"] == 0.0
    assert "grad_used/critic/log_alpha_prime/constant/l2" not in obs
    assert probe.observe().keys().isdisjoint({k for k in obs if k.startswith("grad_used/")})  # consumed once


def test_one_adam_over_both_critics_compares_with_two(embedded_dataset):
    res = run("td3_bc", load_factory("examples.pogo_adapter:factory", "--candidate"), steps=4)
    assert res.verdict == "pass", res.summary
    groups = groups_of(res)
    assert groups["optimizer"]["observables"] == 6 * 18  # actor 6 + 2 critics x 6 tensors
    assert groups["gradients used"]["observables"] == 2 * 18 and groups["gradients used"]["steps_compared"] == 4


def test_a_schedule_never_stepped_fails_at_step_1_in_the_learning_rate(embedded_dataset):
    res = run("iql", disabled(lambda base: base.actor_lr_schedule, "step"))
    assert res.verdict == "fail"
    first = res.first_divergence
    assert (first.step, first.observable) == (1, "optim/actor0/actor/log_std/lr"), first
    groups = groups_of(res)
    assert groups["optimizer"]["first_divergence_step"] == 1
    # a cosine schedule over 1e6 steps moves the lr by ~1e-12 relative: the parameters do not show it yet
    assert groups["actor0 params"]["verdict"] == "pass"


def _leaking(config, spec, seed):
    """td3_bc whose step leaves ones in every critic .grad (CORL's optimizers reset .grad before their backward)."""
    trainer = multi_actor_factory(config, spec, seed)
    step = trainer.step

    def leaky_step(batch):
        out = step(batch)
        for name, t in trainer.named_tensors().items():
            if name.startswith("critic/"):
                t.grad = torch.ones_like(t)
        return out

    trainer.step = leaky_step
    return trainer


def test_a_harmless_gradient_leak_is_a_warning_not_a_failure(embedded_dataset):
    res = run("td3_bc", _leaking)
    assert res.verdict == "pass", res.summary
    groups = groups_of(res)
    assert groups["grad leak"]["verdict"] == "warning" and groups["grad leak"]["first_divergence_step"] == 1
    assert groups["gradients used"]["verdict"] == "pass"
    [warning] = res.metrics["warnings"]
    assert (warning["group"], warning["step"]) == ("grad leak", 1)
    assert warning["observable"] == "grad_leak/critic/critic_1/net.0.weight/l2"
    assert "warning: hygiene: grad_leak/critic/critic_1/net.0.weight/l2 differs from step 1" in \
        str(equivalence_table(res).caption)


def test_a_gradient_leak_the_optimizer_consumes_fails_in_gradients_used(embedded_dataset):
    res = run("td3_bc", disabled(lambda base: base.critic_1_optimizer, "zero_grad"))
    assert res.verdict == "fail"
    groups = groups_of(res)
    used = groups["gradients used"]
    assert (used["verdict"], used["first_divergence_step"]) == ("fail", 2)
    assert used["observable"] == "grad_used/critic/critic_1/net.0.weight/l2"
    assert res.metrics["warnings"] == []  # the failure is the finding, not a hygiene note


@pytest.mark.heavy
def test_jax_rebrac_reports_its_optax_adam_state_per_parameter():
    pytest.importorskip("jax")
    import numpy as np

    from checks.equivalence.optimizer import StateProbe
    from multi_actor.jax_trainer import rebrac_reference_factory
    from pogo_audit.runtime.data import DatasetSpec

    cfg = build_config(None, ["base.hidden_dim=16", "base.batch_size=8"], algo="rebrac", num_actors=1)
    trainer = rebrac_reference_factory(cfg, DatasetSpec("synthetic", "", 11, 3, 1.0), 0)
    probe = StateProbe(trainer)
    assert probe.observe() == {}
    rng = np.random.default_rng(0)
    batch = {"states": rng.normal(size=(8, 11)), "actions": rng.uniform(-1, 1, (8, 3)), "rewards": rng.normal(size=8),
             "next_states": rng.normal(size=(8, 11)), "next_actions": rng.uniform(-1, 1, (8, 3)),
             "dones": np.zeros(8)}
    trainer.step({k: v.astype(np.float32) for k, v in batch.items()})
    obs = probe.observe()
    params = {k for k in trainer.parameters() if k.startswith(("critic/", "actor0/"))}
    assert {k.rsplit("/", 1)[0] for k in obs if k.endswith("/step")} == {f"optim/{p}" for p in params}
    assert len(obs) == 5 * len(params)  # step, exp_avg/{sum,hash}, exp_avg_sq/{sum,hash}
    critic = next(k for k in obs if k.startswith("optim/critic/") and k.endswith("/step"))
    assert obs[critic] == 1.0  # one critic update; ReBRAC's actor updates every policy_freq steps


def test_a_warning_row_is_not_a_failed_test_case(embedded_dataset):
    from checks.equivalence.export import equivalence_rows

    res = run("td3_bc", _leaking, steps=1)
    assert groups_of(res)["grad leak"]["verdict"] == "warning" and len(res.metrics["warnings"]) == 1
    rows = {r["group"]: r["verdict"] for r in equivalence_rows(res)}
    assert rows["grad leak"] == "pass" and set(rows.values()) == {"pass"}
