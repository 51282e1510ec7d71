"""Conformance of the reference algorithms with traces recorded from the original CORL code.

Follows the golden protocol exactly: one torch thread, build with construction seed 0, load the golden initial
parameters, ``torch.manual_seed(12345)``, then the fixed batches. Every logged scalar, every parameter digest (sum
and L2 of every online and target tensor), the torch RNG fingerprint and the full parameter snapshots are compared at
every step they exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pogo_audit.compare import compare_arrays, compare_scalar
from pogo_audit.errors import InputError, UsageError
from pogo_audit.golden import GoldenDir, GoldenVariant, param_digest
from pogo_audit.results import FAIL, PASS, CheckResult, Divergence

CONFORMANCE_RTOL = 1e-5
CONFORMANCE_ATOL = 1e-6
CONSTRUCTION_SEED = 0
TRAINING_SEED = 12345

TORCH_VARIANTS = ("iql_gaussian", "iql_deterministic", "td3_bc", "cql", "awac", "sac_n", "edac")
JAX_VARIANTS = ("rebrac",)
ALIASES = {"iql": ("iql_gaussian", "iql_deterministic")}


def resolve_variants(algo: str, available: Iterable[str]) -> list[str]:
    """``all`` → every implemented variant; ``iql`` → both IQL variants; else a single known variant."""
    available = list(available)
    if algo == "all":
        return available
    if algo in ALIASES:
        return list(ALIASES[algo])
    known = (*TORCH_VARIANTS, *JAX_VARIANTS)
    if algo not in known:
        raise UsageError(f"--algo: unknown algorithm {algo!r}; expected one of all, iql, {', '.join(known)}")
    if algo not in available:
        raise UsageError(f"--algo: {algo!r} has no reference implementation in this checkout")
    return [algo]


@dataclass
class _Tally:
    """Running statistics of one group of compared quantities (logs, digests, rng, snapshots)."""

    compared: int = 0
    bitwise: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0

    def add(self, n: int, n_bitwise: int, max_abs: float, max_rel: float) -> None:
        self.compared += n
        self.bitwise += n_bitwise
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)


@dataclass
class _Run:
    rtol: float
    atol: float
    groups: dict[str, _Tally] = field(default_factory=dict)
    first: Divergence | None = None

    def record(self, group: str, step: int, name: str, expected: Any, actual: Any, scalar: bool) -> None:
        mm = compare_scalar(expected, actual, self.rtol, self.atol) if scalar else \
            compare_arrays(expected, actual, self.rtol, self.atol)
        # a whole tensor counts as one quantity so that a million snapshot elements cannot dilute the percentage
        self.groups.setdefault(group, _Tally()).add(1, int(mm.bitwise_equal), mm.max_abs, mm.max_rel)
        if not mm.close and self.first is None:
            self.first = Divergence(
                step=step, observable=name, max_abs=mm.max_abs, max_rel=mm.max_rel, rtol=self.rtol, atol=self.atol,
                index=None if scalar else list(mm.max_abs_index),
                expected=float(expected) if scalar else None, actual=float(actual) if scalar else None,
            )


    def record_logs(self, t: int, steps_arrays: dict[str, np.ndarray], log: dict[str, float],
                    extras: dict[str, float]) -> None:
        """Logged scalars where the golden ``logmask`` is set (and keys logged on steps CORL does not log them)."""
        i = t - 1
        for name in steps_arrays:
            if not name.startswith("log/"):
                continue
            key = name.removeprefix("log/")
            if steps_arrays[f"logmask/{key}"][i]:
                self.record("logs", t, name, steps_arrays[name][i], log.get(key, float("nan")), True)
            elif key in log:
                self.record("logs", t, f"{name} (logged on a step CORL does not log it)", float("nan"), log[key],
                            True)
        for name in steps_arrays:
            if name.startswith("extra/"):
                self.record("logs", t, name, steps_arrays[name][i], extras.get(name, float("nan")), True)

    def record_digests(self, t: int, steps_arrays: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> None:
        """Sum and L2 of every tensor (and per-member digests of ensembles when the golden has them)."""
        i = t - 1
        for name, arr in params.items():
            s, l2 = param_digest(arr)
            if f"sum/{name}" not in steps_arrays:
                self.record("digests", t, f"sum/{name} (not in golden)", float("nan"), s, True)
                continue
            self.record("digests", t, f"sum/{name}", steps_arrays[f"sum/{name}"][i], s, True)
            self.record("digests", t, f"l2/{name}", steps_arrays[f"l2/{name}"][i], l2, True)
            if f"member_sum/{name}" in steps_arrays:  # ensembles: one digest per member along axis 0
                members = np.array([param_digest(m) for m in arr])
                self.record("digests", t, f"member_sum/{name}", steps_arrays[f"member_sum/{name}"][i],
                            members[:, 0], False)
                self.record("digests", t, f"member_l2/{name}", steps_arrays[f"member_l2/{name}"][i],
                            members[:, 1], False)

    def record_snapshot(self, t: int, golden: GoldenVariant, params: dict[str, np.ndarray]) -> None:
        """Full tensors at the golden snapshot steps (``<name>#member<k>`` is member k of an ensemble)."""
        for name, arr in (golden.params_at(t) or {}).items():
            self.record("snapshots", t, f"params_step{t}/{name}", arr, _snapshot_value(params, name, arr), False)


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, float) and isinstance(value, str):
        return float(value)
    return value


def config_for(golden: GoldenVariant, module: Any, overrides: dict[str, Any]) -> Any:
    """Reference config built from the golden hyperparameters (only fields the config declares)."""
    hp = golden.hyperparameters
    cfg = module.Config()
    values = {}
    for f in dataclasses.fields(cfg):
        if f.name in hp:
            values[f.name] = _coerce(hp[f.name], getattr(cfg, f.name))
    values.update(overrides)
    return dataclasses.replace(cfg, **values)


def rng_fingerprint() -> np.ndarray:
    import torch

    return np.frombuffer(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).digest(), dtype=np.uint8)


def run_torch_variant(golden_dir: GoldenDir, variant: str, steps: int | None = None,
                      rtol: float = CONFORMANCE_RTOL, atol: float = CONFORMANCE_ATOL,
                      progress: Callable[[int], None] | None = None) -> CheckResult:
    """Replay ``variant``'s golden protocol with our reference implementation and compare everything."""
    import torch

    from reference_algos.torch import VARIANTS, variant_module

    t0 = time.perf_counter()
    golden = golden_dir.variant(variant)
    meta = golden.meta
    module = variant_module(variant)
    cfg = config_for(golden, module, VARIANTS[variant][1])
    data = golden_dir.dataset
    obs = data[golden.dataset_array("observations")]
    next_obs = data[golden.dataset_array("next_observations")]
    actions, rewards, dones = data["actions"], data["rewards"], data["dones"]
    batch_idx = golden_dir.batch_idx
    total = min(golden.n_steps, batch_idx.shape[0])
    n_steps = total if steps is None else min(steps, total)
    if n_steps < 1:
        raise UsageError(f"--steps: must be >= 1, got {steps}")
    max_action = float(meta.get("hyperparameters", {}).get("trainer_kwargs", {}).get("max_action", 1.0))

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(CONSTRUCTION_SEED)
        trainer = module.build(cfg, obs.shape[1], actions.shape[1], max_action, "cpu")
        try:
            trainer.load_parameters(golden.init_params)
        except (KeyError, ValueError) as exc:
            raise InputError(f"{golden.folder / 'init_params.npz'}: does not fit {variant}: {exc}") from None
        run = _Run(rtol, atol)
        steps_arrays = golden.steps
        rng_key = "rng/torch_cpu_state_sha256_after_step"
        snapshots = set(golden.snapshot_steps)
        torch.manual_seed(TRAINING_SEED)
        for t in range(1, n_steps + 1):
            idx = batch_idx[t - 1]
            batch = [
                torch.from_numpy(obs[idx]),
                torch.from_numpy(actions[idx]),
                torch.from_numpy(rewards[idx][:, None]),
                torch.from_numpy(next_obs[idx]),
                torch.from_numpy(dones[idx][:, None]),
            ]
            log = trainer.train_step(batch)
            run.record_logs(t, steps_arrays, log, trainer.extra_scalars())
            run.record_digests(t, steps_arrays, {k: v.detach().cpu().numpy() for k, v in
                                                 trainer.named_tensors().items()})
            if rng_key in steps_arrays:
                same = bool(np.array_equal(rng_fingerprint(), steps_arrays[rng_key][t - 1]))
                run.record("rng", t, "rng/torch", 0.0, 0.0 if same else float("inf"), True)
            if t in snapshots:
                run.record_snapshot(t, golden, trainer.export_parameters())
            if progress is not None:
                progress(t)
    finally:
        torch.set_num_threads(prev_threads)

    return _result(variant, run, n_steps, time.perf_counter() - t0)


def _snapshot_value(actual: dict[str, np.ndarray], name: str, expected: np.ndarray) -> np.ndarray:
    """Our tensor for a golden snapshot key; ``<name>#member<k>`` is member k of an ensemble tensor."""
    base, sep, member = name.partition("#member")
    if sep and base in actual and member.isdigit():
        return actual[base][int(member)]
    return actual.get(name, np.full_like(expected, np.nan))


def _result(variant: str, run: _Run, n_steps: int, seconds: float) -> CheckResult:
    compared = sum(g.compared for g in run.groups.values())
    bitwise = sum(g.bitwise for g in run.groups.values())
    pct = 100.0 * bitwise / max(compared, 1)
    verdict = PASS if run.first is None else FAIL
    max_abs = max((g.max_abs for g in run.groups.values()), default=0.0)
    max_rel = max((g.max_rel for g in run.groups.values()), default=0.0)
    summary = (f"{n_steps} steps, {pct:.2f}% bitwise-equal, max rel diff {max_rel:.3g}" if verdict == PASS else
               f"step {run.first.step}: {run.first.observable} outside tolerance (rel {run.first.max_rel:.3g})")
    return CheckResult(
        check="conformance",
        subject=variant,
        verdict=verdict,
        steps_compared=n_steps,
        summary=summary,
        first_divergence=run.first,
        metrics={
            "values_compared": compared,
            "bitwise_equal": bitwise,
            "bitwise_pct": pct,
            "max_abs": max_abs,
            "max_rel": max_rel,
            "rtol": run.rtol,
            "atol": run.atol,
            "groups": {k: dataclasses.asdict(v) for k, v in run.groups.items()},
        },
        seconds=seconds,
    )


def run_variant(golden_dir: GoldenDir, variant: str, steps: int | None = None, rtol: float = CONFORMANCE_RTOL,
                atol: float = CONFORMANCE_ATOL, progress: Callable[[int], None] | None = None) -> CheckResult:
    """Dispatch to the PyTorch or JAX replay."""
    if variant in JAX_VARIANTS:
        from checks.conformance_jax import run_jax_variant

        return run_jax_variant(golden_dir, variant, steps, rtol, atol, progress)
    return run_torch_variant(golden_dir, variant, steps, rtol, atol, progress)


def implemented_variants() -> list[str]:
    from reference_algos.torch import available_variants

    out = available_variants()
    try:
        import reference_algos.jax.rebrac  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        out.append("rebrac")
    return out
