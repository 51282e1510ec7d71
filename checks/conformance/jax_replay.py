"""Conformance of the JAX ReBRAC reference with the golden traces recorded from CORL's ``rebrac.py``.

Follows the set's recorded protocol: build as CORL does (``PRNGKey(seed)`` split into key / actor_key / critic_key;
the seed from ``meta.json``), overwrite the online parameters with ``init_params.npz`` (targets become copies), then
for update i = 0..n-1 run one CORL loop body on the fixed batch ``batch_idx[i]`` (the batch key is split off and left
unused, as in the golden run). Compared at every step: the logged scalars (where ``logmask`` is set), the sum and L2
digests of every online and target tensor, the key chain (bitwise, on any CPU) and, at the snapshot steps, the full
parameters. Values are judged by the set's rule (see :mod:`checks.conformance.judge`).

``jax_threefry_partitionable`` and ``jax_enable_x64`` are set from ``meta.json`` (the golden keys are only valid
under the recorded threefry mode; the float64 set was recorded under x64 with float64 parameters and buffer). Matmul
precision is left at its default: on XLA:CPU float32 matmuls are computed in full float32 already.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from checks.conformance.hyperparameters import resolve
from checks.conformance.judge import log_scales
from checks.conformance.replay import Replay
from multi_actor import registry
from pogo_audit.runtime.errors import InputError, UsageError
from pogo_audit.core.golden import GoldenDir
from pogo_audit.model.results import CheckResult

# CORL buffer field -> dataset.npz array, when meta.json does not say (it does for the recorded traces)
DEFAULT_ARRAYS = {"states": "raw_observations", "actions": "actions", "rewards": "rewards",
                  "next_states": "raw_next_observations", "next_actions": "next_actions", "dones": "dones"}
RNG_DRAWS = "rng_draws_steps1-2.npz"


def _same(expected: np.ndarray, actual: np.ndarray) -> float:
    """0.0 if bitwise identical (dtype, shape and bits), else inf: keys are never "close", only equal or not."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    ok = expected.dtype == actual.dtype and expected.shape == actual.shape and \
        expected.tobytes() == actual.tobytes()
    return 0.0 if ok else float("inf")


def run_jax_variant(golden_dir: GoldenDir, variant: str, steps: int | None = None,
                    progress: Callable[[int], None] | None = None) -> CheckResult:
    """Replay ``variant``'s golden protocol with the JAX reference implementation and compare everything."""
    import jax

    if variant not in registry.variants("jax"):
        raise UsageError(f"no JAX reference implementation for {variant!r}")
    module = registry.variants("jax")[variant][0].reference
    t0 = time.perf_counter()
    replay = Replay.open(golden_dir, variant, steps)
    golden, run = replay.golden, replay.comparison
    meta, proto = golden.meta, golden.protocol
    data = golden_dir.dataset
    used = {**DEFAULT_ARRAYS, **meta.get("dataset_arrays_used", {})}
    resolved = resolve(golden, module, registry.variants("jax")[variant][1].overrides, data[used["actions"]].shape[1])
    replay.hyperparameters = resolved.metrics()
    cfg = dataclasses.replace(resolved.config, train_seed=proto.construction_seed)
    missing = [used[k] for k in module.BATCH_KEYS if used[k] not in data]
    if missing:
        raise InputError(f"{golden_dir.dataset_path}: missing arrays {missing} needed by {variant}")
    buffer = {k: np.asarray(data[used[k]], dtype=np.float32) for k in module.BATCH_KEYS}
    batch_idx = golden_dir.batch_idx
    partitionable = bool(meta.get("framework", {}).get("jax_threefry_partitionable", True))

    with jax.threefry_partitionable(partitionable), jax.enable_x64(proto.is_float64):
        dtype = jax.numpy.dtype(proto.dtype)
        jbuffer = {k: jax.numpy.asarray(v, dtype) for k, v in buffer.items()}
        trainer = module.build(cfg, buffer["states"].shape[1], buffer["actions"].shape[1], dtype=dtype)
        try:
            trainer.load_parameters(golden.init_params)
        except (KeyError, ValueError) as exc:
            raise InputError(f"{golden.init_params_path}: does not fit {variant}: {exc}") from None
        steps_arrays = golden.steps
        scales = log_scales(steps_arrays)
        snapshots = set(golden.snapshot_steps)
        draws_path = golden.folder / RNG_DRAWS
        draws = dict(np.load(draws_path, allow_pickle=False)) if draws_path.exists() else {}
        for t in range(1, replay.n_steps + 1):
            i = t - 1
            idx = jax.numpy.asarray(batch_idx[i], jax.numpy.int32)
            batch = {k: arr[idx] for k, arr in jbuffer.items()}
            full = trainer.is_full_update(i)
            key_before = np.asarray(trainer.key)
            log = trainer.train_step(batch, i)
            key_after = np.asarray(trainer.key)

            run.record_logs(t, steps_arrays, log, {}, scales)
            run.record_digests(t, steps_arrays, trainer.export_parameters())

            # key chain: carry keys come from the trainer; the per-use keys are CORL's split order replayed from
            # the trainer's carry key (the parameters then show they were the keys actually used)
            if "full_update" in steps_arrays:
                run.record("rng", t, "full_update", 0.0, _same(np.bool_(steps_arrays["full_update"][i]),
                                                               np.bool_(full)), exact=True)
            key, batch_key = jax.random.split(jax.numpy.asarray(key_before))
            key, actions_key = jax.random.split(key)
            random_action_key = np.zeros(2, np.uint32)
            if full:
                key, random_action_key = jax.random.split(key, 2)
            used_keys = {
                "rng/carry_key_before_step": key_before,
                "rng/batch_key_unused": np.asarray(batch_key),
                "rng/actions_key": np.asarray(actions_key),
                "rng/random_action_key": np.asarray(random_action_key),
                "rng/carry_key_after_step": key_after,
            }
            run.record("rng", t, "rng/carry_key_after_step (replayed split order)", 0.0,
                       _same(np.asarray(key), key_after), exact=True)
            for name, actual in used_keys.items():
                if name in steps_arrays:
                    run.record("rng", t, name, 0.0, _same(steps_arrays[name][i], actual), exact=True)
            shape = tuple(batch["actions"].shape)
            normal_name = f"step{t}/normal_actions_key_{shape[0]}x{shape[1]}"
            if normal_name in draws:
                run.record("rng draws", t, f"{RNG_DRAWS}/{normal_name}", draws[normal_name],
                           np.asarray(jax.random.normal(actions_key, shape)), 1.0)
            uniform_name = f"step{t}/uniform_random_action_key_{shape[0]}x{shape[1]}"
            if uniform_name in draws:
                run.record("rng draws", t, f"{RNG_DRAWS}/{uniform_name}", draws[uniform_name],
                           np.asarray(jax.random.uniform(random_action_key, shape, minval=-1.0, maxval=1.0)), 1.0)

            if t in snapshots:
                run.record_snapshot(t, golden, trainer.export_parameters())
            if progress is not None:
                progress(t)

    return replay.result(time.perf_counter() - t0)
