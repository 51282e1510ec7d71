"""JAX multi-actor ReBRAC: bitwise equal to the CORL-faithful reference on critic / actor0 / targets / key chain,
one compiled epoch (buffer as an argument, one device->host transfer), epoch path == step path, mutants killed.

Network sizes are small to keep compile and run times low; they change no code path.
"""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from checks.equivalence import EquivalenceOptions
from checks.equivalence.jax_audit import equivalence_for_rebrac
from multi_actor.config import build_config
from multi_actor.jax_trainer import MultiActorReBRAC, rebrac_multi_actor_factory, rebrac_reference_factory
from pogo_audit.runtime.data import DatasetSpec
from reference_algos.jax import rebrac

SMALL = ("base.hidden_dim=64", "base.batch_size=64", "base.num_updates_on_epoch=8")
SPEC = DatasetSpec("synthetic", "", 11, 3, 1.0)  # Hopper's dimensions
EPOCH = 8
BATCH = 64
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def cfg_for(actors: int, overrides: tuple[str, ...] = ()):
    return build_config(None, [*SMALL, *overrides], algo="rebrac", num_actors=actors)


def synthetic_buffer(seed: int, size: int = 500) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    arrays = {
        "states": rng.normal(size=(size, 11)), "actions": rng.uniform(-1, 1, (size, 3)),
        "rewards": rng.normal(size=size), "next_states": rng.normal(size=(size, 11)),
        "next_actions": rng.uniform(-1, 1, (size, 3)), "dones": (rng.uniform(size=size) < 0.05).astype(float),
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}


# ---------------------------------------------------------------------------------------------- equivalence


@pytest.mark.heavy
@pytest.mark.parametrize("actors", [1, 3])
def test_candidate_is_bitwise_equal_to_the_reference(embedded_dataset, actors):
    steps = 50
    res = equivalence_for_rebrac(cfg_for(actors), EquivalenceOptions(steps=steps, full_every=10, self_check=False))
    assert res.verdict == "pass", res.summary
    assert res.metrics["mode"] == "bitwise" and res.steps_compared == steps
    groups = {row["group"]: row for row in res.details}
    for name in ("critic losses", "actor0 losses", "critic params", "target params", "actor0 params", "rng"):
        assert groups[name]["verdict"] == "pass" and groups[name]["max_abs"] == 0.0, groups[name]
    assert groups["critic params"]["steps_compared"] == steps + 1  # step 0 (initial parameters) + every step
    assert groups["actor0 losses"]["steps_compared"] == steps // 2  # full updates only, as CORL logs them
    assert groups["rng"]["observables"] == 3  # rng/torch, rng/numpy and the JAX key chain rng/key
    if actors == 3:
        assert groups["chain (W2 oracle)"]["observables"] == 2 and groups["chain (W2 oracle)"]["verdict"] == "pass"
    else:
        assert "chain (W2 oracle)" not in groups


@pytest.mark.heavy
def test_reference_protocol_names_and_parameter_round_trip():
    ref = rebrac_reference_factory(cfg_for(3), SPEC, 0)
    cand = rebrac_multi_actor_factory(cfg_for(3), SPEC, 0)
    p_ref, p_cand = ref.parameters(), cand.parameters()
    assert {k.split("/", 2)[0] + "/" + k.split("/", 2)[1] for k in p_ref} == {
        "critic/critic", "target/critic_target", "actor0/actor", "target/actor_target"}
    assert all(np.array_equal(p_ref[k], p_cand[k]) for k in p_ref)
    assert {k.split("/")[0] for k in p_cand} - {k.split("/")[0] for k in p_ref} == {"actor1", "actor2"}
    assert ref.rng_digests() == cand.rng_digests()
    other = rebrac_multi_actor_factory(cfg_for(3), SPEC, 1)
    name = "actor1/params/Dense_0/kernel"
    assert not np.array_equal(other.parameters()[name], p_cand[name])
    other.load_parameters(p_cand)
    assert all(np.array_equal(v, other.parameters()[k]) for k, v in p_cand.items())


@pytest.mark.heavy
def test_update_state_is_loaded_key_optimizer_and_counter_included():
    """What ``--isolate`` does before a step: the candidate (other seed, not stepped) loads the stepped reference's
    update state and then agrees on parameters, optax state, key chain and full-update flag; its extra actors keep
    their own parameters."""
    ref = rebrac_reference_factory(cfg_for(3), SPEC, 0)
    cand = rebrac_multi_actor_factory(cfg_for(3), SPEC, 1)
    ref.step({k: np.asarray(v[:BATCH]) for k, v in synthetic_buffer(0).items()})
    extra = cand.parameters()["actor1/params/Dense_0/kernel"]
    assert ref.rng_digests() != cand.rng_digests()
    cand.load_jax_state(ref.jax_state())
    p_ref, p_cand = ref.parameters(), cand.parameters()
    assert all(np.array_equal(p_ref[k], p_cand[k]) for k in p_ref)
    assert np.array_equal(p_cand["actor1/params/Dense_0/kernel"], extra)
    o_ref, o_cand = ref.optimizer_state(), cand.optimizer_state()
    assert o_ref.keys() == o_cand.keys() and {o["step"] for o in o_cand.values()} == {1}
    assert all(np.array_equal(o_ref[k]["exp_avg"], o_cand[k]["exp_avg"]) for k in o_ref)
    assert ref.rng_digests() == cand.rng_digests()
    assert cand.jax_state()["updates"] == ref.jax_state()["updates"] == 1
    batch = {k: np.asarray(v[:BATCH]) for k, v in synthetic_buffer(1).items()}
    (_, ref_args), (_, cand_args) = ref.traced_update(batch, ref.jax_state()), cand.traced_update(batch,
                                                                                               cand.jax_state())
    assert int(ref_args[-1]) == int(cand_args[-1]) == 0  # update 1 of policy_freq 2: critic only, on both sides


def test_an_optimizer_of_another_structure_is_not_loaded():
    from multi_actor.jax_trainer import synced_train_state

    ref = rebrac_reference_factory(cfg_for(1), SPEC, 0)
    sgd = ref.base.actor.replace(tx=optax.sgd(0.1), opt_state=optax.sgd(0.1).init(ref.base.actor.params))
    with pytest.raises(ValueError, match="optimizer states differ in structure"):
        synced_train_state(sgd, ref.base.actor)


# ---------------------------------------------------------------------------------------------------- epochs


@pytest.fixture(scope="module")
def epoch_run():
    """Two epochs of one trainer on two buffers of equal shapes but different contents, with compiles, traces
    and device->host transfers counted."""
    compiles: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            compiles.append(str(kwargs.get("fun_name")))

    trainer = rebrac_multi_actor_factory(cfg_for(3), SPEC, 0)
    traces: list[int] = []

    def counted_loop_body(*args):  # a fresh function: this trainer's epoch is compiled here, whatever ran before
        traces.append(1)
        return rebrac.loop_body(*args)

    trainer.loop_body_fn = counted_loop_body
    transfers: list[int] = []
    to_host = trainer._to_host
    trainer._to_host = lambda tree: transfers.append(1) or to_host(tree)
    buffers = [synthetic_buffer(1), synthetic_buffer(2)]
    per_epoch = []
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for buffer in buffers:
            before = (len(compiles), len(traces), len(transfers))
            metrics = trainer.train_epoch(buffer)
            per_epoch.append({
                "compiles": [n for n in compiles[before[0]:] if "multi_actor_rebrac_epoch" in n],
                "traces": len(traces) - before[1],
                "transfers": len(transfers) - before[2],
                "metrics": metrics,
            })
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return trainer, buffers, per_epoch


@pytest.mark.heavy
def test_epoch_compiles_once_and_the_buffer_is_an_argument(epoch_run):
    _, _, per_epoch = epoch_run
    assert len(per_epoch[0]["compiles"]) == 1, per_epoch[0]["compiles"]
    assert per_epoch[0]["traces"] >= 1
    # new buffer contents, same shapes: neither a retrace nor a compile
    assert per_epoch[1]["compiles"] == [] and per_epoch[1]["traces"] == 0


def test_exactly_one_device_to_host_transfer_per_epoch(epoch_run):
    trainer, buffers, per_epoch = epoch_run
    assert [e["transfers"] for e in per_epoch] == [1, 1]
    # the jitted epoch has no host callbacks, and the wrapper fetches nothing but through _to_host
    jaxpr = str(jax.make_jaxpr(trainer._compiled("epoch"))(trainer.state, buffers[0]))
    assert "callback" not in jaxpr
    source = inspect.getsource(MultiActorReBRAC.train_epoch)
    body = source.split('"""')[-1]
    assert body.count("self._to_host(") == 1
    for forbidden in (r"device_get", r"\bnp\.", r"\bfloat\(", r"\.item\(", r"block_until_ready", r"tolist"):
        assert re.search(forbidden, body) is None, forbidden
    metrics = per_epoch[0]["metrics"]
    assert {"critic/critic_loss", "actor0/loss", "actor1/w2", "actor2/w2"} <= set(metrics)
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())


@pytest.mark.heavy
def test_epoch_path_equals_step_path(epoch_run):
    epoch_trainer, buffers, per_epoch = epoch_run
    stepper = rebrac_multi_actor_factory(cfg_for(3), SPEC, 0)
    logs = []
    for buffer in buffers:
        for _ in range(EPOCH):
            _, batch_key = jax.random.split(stepper.state.key)  # the batch key loop_body splits off
            batch = jax.device_get(rebrac.sample_batch(buffer, batch_key, BATCH))
            logs.append(stepper.step(batch))
    expected, actual = epoch_trainer.parameters(), stepper.parameters()
    assert set(expected) == set(actual)
    differing = [k for k in expected if not np.array_equal(expected[k], actual[k])]
    assert differing == [], differing[:5]
    for a, b in zip(jax.tree.leaves(epoch_trainer.state), jax.tree.leaves(stepper.state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))  # keys, step counter and optimizer states too
    assert epoch_trainer.steps_done == stepper.steps_done == 2 * EPOCH
    # epoch means are the means of the per-update values (critic every update, actors on full updates)
    second = logs[EPOCH:]
    for key in ("critic/critic_loss", "actor0/loss", "actor1/loss"):
        values = [log[key] for log in second if key in log]
        assert len(values) == (EPOCH if key.startswith("critic") else EPOCH // 2)
        assert per_epoch[1]["metrics"][key] == pytest.approx(np.mean(values), rel=1e-5)


@pytest.mark.heavy
def test_evaluation_action_functions_are_built_once_per_actor():
    trainer = rebrac_multi_actor_factory(cfg_for(3, ("actor_configs=[{type: deterministic}, {type: gaussian}, "
                                                     "{type: tanh_gaussian}]",)), SPEC, 0)
    state = np.zeros(11, np.float32)
    first = [trainer.act(i, state) for i in range(3)]
    fns = dict(trainer._act_fns)
    again = [trainer.act(i, state) for i in range(3)]
    assert trainer._act_fns == fns and len(fns) == 3
    assert all(a.shape == (3,) and np.array_equal(a, b) for a, b in zip(first, again))
    assert all(np.all(np.abs(a) < 1.0) for a in first)


# the JAX mutants are killed by their expected groups in tests/test_equivalence.py (the whole catalog, one run)
