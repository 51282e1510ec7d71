"""Updates/s of the reference JAX ReBRAC: one jitted ``fori_loop`` epoch (baseline) vs the same updates as a Python
loop of jitted steps (the raw ``_step`` and the ``train_step`` API), vs un-jitted steps (``jax.disable_jit``), and
multi-actor JAX epochs with 1 and 3 actors when ``multi_actor.jax_trainer`` exists, also timed taking turns with the
reference epoch (the interleaved row: the ratio that survives this machine's drift).

Per-update normalisation: rows do different numbers of updates per timed call (the un-jitted one only
``UNJITTED_UPDATES``), so the conftest's ratios (mean time per *call*) are only comparable between rows with the same
``extra_info["updates_per_call"]``. Each row also stores ``seconds_per_update`` (its mean / updates_per_call),
``updates_per_s`` and ``per_update_ratio`` = its seconds_per_update / the baseline's, measured in the same run.
The epoch rows also record their matmul FLOPs per update (``benchmarks.flops``), the floor of their time ratio.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest

from benchmarks.flops import jax_flops_per_update
from checks.jax_profile import multi_actor_targets, synthetic_buffer
from reference_algos.jax import rebrac

GROUP = "jax rebrac updates"
UPDATES = 50
BATCH = 256
UNJITTED_UPDATES = 2
INTERLEAVED_EPOCHS = 20  # turns of the interleaved row (reference, 1 actor, 3 actors; one epoch each)
_BASELINE: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup():
    buffer = {k: jnp.asarray(v) for k, v in synthetic_buffer(seed=0).items()}
    cfg = rebrac.Config(batch_size=BATCH, num_updates_on_epoch=UPDATES)
    trainer = rebrac.build(cfg, buffer["states"].shape[1], buffer["actions"].shape[1])
    batch = {k: v[:BATCH] for k, v in buffer.items()}
    return trainer, buffer, batch


def _record(benchmark, label: str, updates: int, baseline: bool = False) -> None:
    benchmark.group = GROUP
    benchmark.extra_info.update(label=label, baseline=baseline, updates_per_call=updates)


def _normalise(benchmark, updates: int, baseline: bool = False) -> None:
    """Per-update figures in extra_info (skipped when benchmarks are disabled: there are no stats)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    per_update = stats.stats.mean / updates
    if baseline:
        _BASELINE["seconds_per_update"] = per_update
    benchmark.extra_info.update(seconds_per_update=per_update, updates_per_s=1.0 / per_update)
    if "seconds_per_update" in _BASELINE:
        benchmark.extra_info["per_update_ratio"] = per_update / _BASELINE["seconds_per_update"]


def _raw_step_loop(trainer, batch, n: int):
    """``n`` calls of the jitted ``_step`` on device-resident arguments, state carried, blocked at the end."""
    flags = [jnp.asarray(int(trainer.is_full_update(i)), jnp.int32) for i in range(trainer.config.policy_freq)]
    metrics = rebrac.Metrics.create()

    def run():
        for i in range(n):
            trainer.key, trainer.actor, trainer.critic, _ = trainer._step(
                trainer.key, trainer.actor, trainer.critic, batch, metrics, flags[i % len(flags)])
        jax.block_until_ready(trainer.critic.params)

    return run


def test_epoch_baseline(benchmark, setup):
    trainer, buffer, _ = setup
    trainer.train_epoch(buffer)
    _record(benchmark, f"epoch (fori_loop, {UPDATES} updates)", UPDATES, baseline=True)
    benchmark.extra_info["flops_per_update"] = jax_flops_per_update(
        trainer._epoch, (trainer.key, trainer.actor, trainer.critic, buffer, rebrac.Metrics.create()),
        trainer.config.policy_freq)
    benchmark.pedantic(trainer.train_epoch, args=(buffer,), rounds=5, warmup_rounds=1)
    _normalise(benchmark, UPDATES, baseline=True)


def test_python_loop_of_jitted_steps(benchmark, setup):
    trainer, _, batch = setup
    run = _raw_step_loop(trainer, batch, UPDATES)
    run()
    _record(benchmark, "python loop of jitted _step", UPDATES)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    _normalise(benchmark, UPDATES)


def test_python_loop_of_train_step_api(benchmark, setup):
    trainer, _, batch = setup
    counter = itertools.count()

    def run():
        for _ in range(UPDATES):
            trainer.train_step(batch, next(counter))

    run()
    _record(benchmark, "python loop of train_step (metrics synced per step)", UPDATES)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    _normalise(benchmark, UPDATES)


def test_unjitted_steps(benchmark, setup):
    trainer, _, batch = setup
    step = _raw_step_loop(trainer, batch, UNJITTED_UPDATES)

    def run():
        with jax.disable_jit():
            step()

    _record(benchmark, f"un-jitted _step (disable_jit, {UNJITTED_UPDATES} updates/call)", UNJITTED_UPDATES)
    # two warm-up rounds: eager mode compiles every primitive once per shape, on both lax.cond branches
    benchmark.pedantic(run, rounds=3, warmup_rounds=2)
    _normalise(benchmark, UNJITTED_UPDATES)


@pytest.mark.parametrize("actors", [1, 3])
def test_multi_actor_epoch(benchmark, actors):
    targets, skipped = multi_actor_targets((actors,), updates_per_epoch=UPDATES, batch_size=BATCH)
    if not targets:
        pytest.skip("; ".join(skipped) or "multi_actor.jax_trainer has no recognised interface")
    target = targets[0]
    target.epoch()
    _record(benchmark, f"multi-actor epoch, {actors} actor{'s' if actors > 1 else ''}", target.updates_per_epoch)
    trainer, buffer = target.state(), synthetic_buffer(seed=0)  # the targets' default data
    if "state" in trainer and "epoch" in trainer.get("_jitted", {}):  # our trainer: its compiled epoch function
        benchmark.extra_info["flops_per_update"] = jax_flops_per_update(
            trainer["_jitted"]["epoch"], (trainer["state"], {k: buffer[k] for k in rebrac.BATCH_KEYS}),
            trainer["rebrac_cfg"].policy_freq)
    benchmark.pedantic(target.epoch, rounds=5, warmup_rounds=1)
    _normalise(benchmark, target.updates_per_epoch)


def test_multi_actor_epoch_interleaved(benchmark, setup):
    """The reference epoch and the 1- and 3-actor multi-actor epochs taking turns epoch by epoch
    (``INTERLEAVED_EPOCHS`` turns): the rows above, timed one after the other, drift with the machine (a 1-actor
    epoch, which runs the reference's updates plus bookkeeping, read 0.79× the reference's in one run). The median
    ratio per turn in ``extra_info["ratios"]`` (printed by the summary), the ratio of total times beside it."""
    import statistics
    import time

    targets, skipped = multi_actor_targets((1, 3), updates_per_epoch=UPDATES, batch_size=BATCH)
    if len(targets) < 2:
        pytest.skip("; ".join(skipped) or "multi_actor.jax_trainer has no recognised interface")
    trainer, buffer, _ = setup
    rows = {"reference": lambda: trainer.train_epoch(buffer), "1 actor": targets[0].epoch,
            "3 actors": targets[1].epoch}
    for run in rows.values():
        run()  # compiled before the turns
    times: dict[str, list[float]] = {k: [] for k in rows}

    def turns():
        for _ in range(INTERLEAVED_EPOCHS):
            for k, run in rows.items():
                start = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - start)

    benchmark.group = f"{GROUP}, interleaved"
    benchmark.pedantic(turns, rounds=1)
    base = times["reference"]
    benchmark.extra_info.update(
        label="all rows", updates_per_call=UPDATES,
        ratios={k: statistics.median(a / b for a, b in zip(v, base)) for k, v in times.items()},
        total_time_ratios={k: sum(v) / sum(base) for k, v in times.items()},
        seconds_per_update={k: statistics.median(v) / UPDATES for k, v in times.items()})
