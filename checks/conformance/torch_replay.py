"""The replay of a PyTorch variant: the reference built from the set's hyperparameters, seeded and threaded as
recorded, stepped on the recorded batches, compared at every step (logs, digests, the torch RNG state, snapshots)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

import numpy as np

from checks.conformance.hyperparameters import BUILD_ARG, resolve
from checks.conformance.judge import log_scales
from checks.conformance.replay import Replay
from multi_actor import registry
from pogo_audit.core.golden import GoldenDir, GoldenVariant
from pogo_audit.model.results import CheckResult
from pogo_audit.runtime.errors import InputError


RNG_TORCH = "rng/torch_cpu_state_sha256_after_step"


def torch_rng_sha256() -> np.ndarray:
    """sha256 of the global torch CPU generator state, the golden RNG fingerprint."""
    import torch

    return np.frombuffer(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).digest(), dtype=np.uint8)


def _seed_check(golden: GoldenVariant, seed: int) -> str | None:
    """The recorded sha256 of the torch RNG state right after ``manual_seed(seed)``, where the set records it."""
    for key, value in golden.meta.items():
        m = re.fullmatch(r"torch_rng_state_sha256_after_manual_seed_(\d+)", key)
        if m and int(m.group(1)) == seed and isinstance(value, str):
            return value
    return None


def run_torch_variant(golden_dir: GoldenDir, variant: str, steps: int | None = None,
                      progress: Callable[[int], None] | None = None, device: str = "cpu") -> CheckResult:
    """Replay ``variant``'s recorded protocol with our PyTorch reference on ``device`` and compare everything.

    Off the CPU every global-stream draw is made by the CPU generator and copied to the device
    (:func:`pogo_audit.core.harness.cpu_drawn_randomness`), so the recorded CPU stream — and ``rng/torch`` — still
    apply; the float32 comparison is then the drift bound, float64 keeps its tolerance."""
    import contextlib

    import torch

    from pogo_audit.core.harness import cpu_drawn_randomness
    from reference_algos.torch.common import default_dtype

    t0 = time.perf_counter()
    replay = Replay.open(golden_dir, variant, steps, device)
    golden, cmp = replay.golden, replay.comparison
    proto = golden.protocol
    spec, spec_variant = registry.variants("torch")[variant]
    module = spec.reference
    data = golden_dir.dataset
    obs = data[golden.dataset_array("observations")]
    next_obs = data[golden.dataset_array("next_observations")]
    actions, rewards, dones = data["actions"], data["rewards"], data["dones"]
    batch_idx = golden_dir.batch_idx
    resolved = resolve(golden, module, spec_variant.overrides, actions.shape[1])
    replay.hyperparameters = resolved.metrics()
    cfg = resolved.config
    max_action = resolved.build.get(BUILD_ARG, 1.0)
    dtype = getattr(torch, proto.dtype)
    steps_arrays = golden.steps
    scales = log_scales(steps_arrays)
    snapshots = set(golden.snapshot_steps)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device=device, dtype=dtype)

    prev_threads = torch.get_num_threads()
    prev_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(proto.threads)
    torch.use_deterministic_algorithms(bool(getattr(cfg, "deterministic_torch", False)))
    try:
        with default_dtype(dtype), (cpu_drawn_randomness() if device != "cpu" else contextlib.nullcontext()):
            torch.manual_seed(proto.construction_seed)
            trainer = module.build(cfg, obs.shape[1], actions.shape[1], max_action, device, dtype=dtype)
            try:
                trainer.load_parameters(golden.init_params)
            except (KeyError, ValueError) as exc:
                raise InputError(f"{golden.init_params_path}: does not fit {variant}: {exc}") from None
            torch.manual_seed(proto.training_seed)
            recorded = _seed_check(golden, proto.training_seed)
            if recorded is not None:
                cmp.record("rng", 0, f"torch RNG state after manual_seed({proto.training_seed})", 0.0,
                           0.0 if torch_rng_sha256().tobytes().hex() == recorded else float("inf"), exact=True)
            for t in range(1, replay.n_steps + 1):
                idx = batch_idx[t - 1]
                batch = [tensor(obs[idx]), tensor(actions[idx]), tensor(rewards[idx][:, None]),
                         tensor(next_obs[idx]), tensor(dones[idx][:, None])]
                log = trainer.train_step(batch)
                cmp.record_logs(t, steps_arrays, log, trainer.extra_scalars(), scales)
                cmp.record_digests(t, steps_arrays, {k: v.detach().cpu().numpy() for k, v in
                                                     trainer.named_tensors().items()})
                if RNG_TORCH in steps_arrays:
                    same = bool(np.array_equal(torch_rng_sha256(), steps_arrays[RNG_TORCH][t - 1]))
                    cmp.record("rng", t, "rng/torch", 0.0, 0.0 if same else float("inf"), exact=True)
                if t in snapshots:
                    cmp.record_snapshot(t, golden, trainer.export_parameters())
                if progress is not None:
                    progress(t)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_deterministic)
    return replay.result(time.perf_counter() - t0)
