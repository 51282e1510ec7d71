"""Conformance of the reference algorithms with traces recorded from the original CORL code.

Two trace sets ship with the package: float32 (CORL's own numerics) and float64 (the same runs in float64 end to
end). The replay follows each set's recorded protocol (:class:`pogo_audit.golden.Protocol`: seeds, threads, dtype,
batch size, steps) and compares, at every step, every logged scalar, the sum and L2 of every online and target
tensor, the RNG state (torch) or key chain (JAX), and the snapshots the set carries.

How values are judged (:class:`Rule`):

* **float64 — the portable proof.** ``|a - b| <= F64_REL * max(|a|, |b|, scale)`` at every step, where ``scale`` is
  the key's RMS over the run for logged scalars, the tensor's L2 for sum digests and the tensor's RMS for snapshots
  (a sum that cancels to ~0 has no meaningful plain relative error). Changing the reduction order (2 threads, AVX2
  instead of AVX-512) moves the float64 traces by at most 1.2e-13 on that scale over 200 steps (the set's README);
  an AMD EPYC (AVX2) replaying the Intel AVX-512 recording measured at most 4.4e-13 (EDAC; 2.2e-14 CQL and SAC-N,
  <= 2.6e-15 the others). F64_REL = 1e-9 sits more than three orders above that, and the smallest planted bug we
  tried — IQL's expectile weights in float64 instead of CORL's float32 (1.7e-8 apart) — moves the value loss by
  4.0e-8 at step 1, 40x the bound.
* **float32 on the recording CPU** (fingerprints match on every field): bitwise.
* **float32 on another CPU — a drift report.** BLAS kernels differ per micro-architecture and Adam amplifies
  last-bit gradient differences, so float32 traces drift apart without any bug (CQL by 2.5e-3 already at step 3, up
  to 1.5 relative by step 200). The bound ``F32_REL`` is enforced over the first ``F32_STEPS`` steps only, where the
  drift is still at rounding level: the float64 set's evidence (CORL's float32 code on an Intel Xeon against the
  recording, and the thread/ISA proxies) gives at most 6.1e-5 (CQL) over steps 1-2 on the same scale, 2.2e-6 for
  every other variant; planted bugs move step-1/2 values by 1.3e-3 (discount 0.98 instead of 0.99) to inf. Later
  steps are reported (max, first step past the bound) but do not fail. RNG states and keys are integers: they must
  be bitwise equal on any CPU, in every mode, at every step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks.conformance_hparams import BUILD_ARG, resolve
from multi_actor import registry
from pogo_audit.errors import InputError, UsageError
from pogo_audit.fingerprint import describe, fingerprints_match, machine_fingerprint
from pogo_audit.golden import PRECISIONS, GoldenDir, GoldenVariant, param_digest
from pogo_audit.results import FAIL, PASS, CheckResult, Divergence

F64_REL = 1e-9
F32_REL = 5e-4
F32_STEPS = 2
PRECISION_CHOICES = ("both", *PRECISIONS)

TORCH_VARIANTS = tuple(registry.variants("torch"))
JAX_VARIANTS = tuple(registry.variants("jax"))
ALIASES = registry.variant_aliases()
RNG_TORCH = "rng/torch_cpu_state_sha256_after_step"


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


def golden_sets(golden: str | None, precision: str) -> list[GoldenDir]:
    """The trace sets to replay: ``--golden DIR`` (one set, its own dtype), else the shipped sets of ``precision``."""
    if precision not in PRECISION_CHOICES:
        raise UsageError(f"--precision: got {precision!r}; expected one of {', '.join(PRECISION_CHOICES)}")
    if golden is not None:
        gd = GoldenDir(golden)
        if precision != "both" and gd.dtype != precision:
            raise UsageError(f"--precision {precision}: the trace set {gd.root} is {gd.dtype}")
        return [gd]
    wanted = PRECISIONS if precision == "both" else (precision,)
    return [GoldenDir(precision=p) for p in wanted]


@dataclass(frozen=True)
class Rule:
    """How one comparison is judged: ``bitwise``, ``tolerance`` (every step) or ``drift`` (bound on early steps)."""

    mode: str
    rel: float = 0.0
    steps: int | None = None

    def describe(self) -> str:
        if self.mode == "bitwise":
            return "bitwise"
        bound = f"|a-b| <= {self.rel:g}*max(|a|,|b|,scale)"
        return bound if self.mode == "tolerance" else f"{bound} over steps 1-{self.steps}; later steps reported"

    def enforced_at(self, step: int) -> bool:
        return self.mode != "drift" or step <= (self.steps or 0)


def rule_for(precision: str, fingerprint_match: bool) -> Rule:
    """float64 → tolerance; float32 → bitwise on the recording CPU, else the early-step drift bound."""
    if precision == "float64":
        return Rule("tolerance", F64_REL)
    return Rule("bitwise") if fingerprint_match else Rule("drift", F32_REL, F32_STEPS)


def scaled_difference(expected: Any, actual: Any, scale: float) -> tuple[bool, float, float, int]:
    """``(bitwise, max_abs, max_rel, argmax)`` with ``rel = |a-b| / max(|a|, |b|, scale)``; NaN == NaN, shape → inf."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        return False, float("inf"), float("inf"), 0
    same = (e == a) | (np.isnan(e) & np.isnan(a))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.where(same, 0.0, np.abs(a - e))
        diff = np.where(np.isnan(diff), np.inf, diff)
        denom = np.maximum(np.maximum(np.abs(e), np.abs(a)), scale)
        rel = np.where(same, 0.0, np.where(denom > 0, diff / denom, np.inf))
        rel = np.where(np.isnan(rel), np.inf, rel)
    if e.size == 0:
        return True, 0.0, 0.0, 0
    i = int(np.argmax(rel))
    return bool(same.all()), float(diff.max()), float(rel.ravel()[i]), i


@dataclass
class Tally:
    """Running statistics of one group of compared quantities (logs, digests, rng, snapshots)."""

    compared: int = 0
    bitwise: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0

    def add(self, n_bitwise: int, max_abs: float, max_rel: float) -> None:
        self.compared += 1
        self.bitwise += n_bitwise
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)


@dataclass
class Comparison:
    """Everything compared in one replay, judged by ``rule``; ``first`` is the first failure, ``first_past`` the
    first value past the bound at any step (the same unless the rule is a drift report)."""

    rule: Rule
    groups: dict[str, Tally] = field(default_factory=dict)
    first: Divergence | None = None
    first_past: Divergence | None = None
    max_rel_by_step: dict[int, float] = field(default_factory=dict)

    def record(self, group: str, step: int, name: str, expected: Any, actual: Any, scale: float = 0.0,
               exact: bool = False) -> None:
        """Compare one quantity; ``exact`` ones (RNG states, keys) must be bitwise equal whatever the rule."""
        bitwise, max_abs, max_rel, index = scaled_difference(expected, actual, scale)
        self.groups.setdefault(group, Tally()).add(int(bitwise), max_abs, max_rel)
        self.max_rel_by_step[step] = max(self.max_rel_by_step.get(step, 0.0), max_rel)
        past = not bitwise if (exact or self.rule.mode == "bitwise") else max_rel > self.rule.rel
        if not past:
            return
        scalar = np.ndim(expected) == 0
        div = Divergence(step=step, observable=name, max_abs=max_abs, max_rel=max_rel, rtol=self.rule.rel, atol=0.0,
                         index=None if scalar else [index],
                         expected=float(expected) if scalar else None, actual=float(actual) if scalar else None)
        if self.first_past is None:
            self.first_past = div
        if self.first is None and (exact or self.rule.enforced_at(step)):
            self.first = div

    def record_logs(self, t: int, steps: dict[str, np.ndarray], log: dict[str, float], extras: dict[str, float],
                    scales: dict[str, float]) -> None:
        """Logged scalars where the golden ``logmask`` is set (and keys logged on steps CORL does not log them)."""
        i = t - 1
        for name in steps:
            if name.startswith("log/"):
                key = name.removeprefix("log/")
                if steps[f"logmask/{key}"][i]:
                    self.record("logs", t, name, steps[name][i], log.get(key, float("nan")), scales[name])
                elif key in log:
                    self.record("logs", t, f"{name} (logged on a step CORL does not log it)", float("nan"), log[key])
            elif name.startswith("extra/"):
                self.record("logs", t, name, steps[name][i], extras.get(name, float("nan")), scales[name])

    def record_digests(self, t: int, steps: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> None:
        """Sum (on the tensor's L2 scale) and L2 of every tensor, per-member digests of ensembles where recorded."""
        i = t - 1
        for name, arr in params.items():
            s, l2 = param_digest(arr)
            if f"sum/{name}" not in steps:
                self.record("digests", t, f"sum/{name} (not in golden)", float("nan"), s)
                continue
            self.record("digests", t, f"sum/{name}", steps[f"sum/{name}"][i], s, float(steps[f"l2/{name}"][i]))
            self.record("digests", t, f"l2/{name}", steps[f"l2/{name}"][i], l2)
            if f"member_sum/{name}" in steps:
                members = np.array([param_digest(m) for m in arr])
                member_l2 = steps[f"member_l2/{name}"][i]
                self.record("digests", t, f"member_sum/{name}", steps[f"member_sum/{name}"][i], members[:, 0],
                            float(np.min(member_l2)))
                self.record("digests", t, f"member_l2/{name}", member_l2, members[:, 1])

    def record_snapshot(self, t: int, golden: GoldenVariant, params: dict[str, np.ndarray]) -> None:
        """Full tensors at the set's snapshot steps (``<name>#member<k>`` is member k of an ensemble)."""
        for name, arr in (golden.params_at(t) or {}).items():
            rms = float(np.sqrt(np.mean(np.square(arr, dtype=np.float64)))) if arr.size else 0.0
            self.record("snapshots", t, f"params_step{t}/{name}", arr, _snapshot_value(params, name, arr), rms)


def log_scales(steps: dict[str, np.ndarray]) -> dict[str, float]:
    """RMS over the run of every logged key (where logged) and extra scalar: the scale of its tolerance."""
    out = {}
    for name, values in steps.items():
        if name.startswith("log/"):
            mask = steps[f"logmask/{name.removeprefix('log/')}"].astype(bool)
            v = np.asarray(values, dtype=np.float64)[mask]
        elif name.startswith("extra/"):
            v = np.asarray(values, dtype=np.float64)
        else:
            continue
        v = v[np.isfinite(v)]
        out[name] = float(np.sqrt(np.mean(v * v))) if v.size else 0.0
    return out


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


@dataclass
class Replay:
    """One variant's protocol and fingerprint context, shared by the torch and JAX replays."""

    golden_dir: GoldenDir
    golden: GoldenVariant
    n_steps: int
    comparison: Comparison
    fingerprint_here: dict[str, Any]
    fingerprint_match: bool
    fingerprint_reasons: list[str]

    #: torch device of the replay; off the CPU the float32 rule is the drift bound (another kernel library)
    device: str = "cpu"
    #: how every recorded hyperparameter was used (:meth:`checks.conformance_hparams.Resolved.metrics`)
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, golden_dir: GoldenDir, variant: str, steps: int | None, device: str = "cpu") -> Replay:
        golden = golden_dir.variant(variant)
        proto = golden.protocol
        n_steps = proto.n_steps if steps is None else min(steps, proto.n_steps)
        if n_steps < 1:
            raise UsageError(f"--steps: must be >= 1, got {steps}")
        here = machine_fingerprint(proto.framework, proto.threads)
        match, reasons = fingerprints_match(golden_dir.fingerprint, here)
        if device != "cpu":
            match, reasons = False, [*reasons, f"replayed on {device}, recorded on the CPU"]
        return cls(golden_dir, golden, n_steps, Comparison(rule_for(proto.dtype, match)), here, match, reasons,
                   device)

    def result(self, seconds: float) -> CheckResult:
        """The check result: verdict by the rule, with mode, tolerance, both fingerprints and the drift per step."""
        cmp, proto = self.comparison, self.golden.protocol
        compared = sum(g.compared for g in cmp.groups.values())
        bitwise = sum(g.bitwise for g in cmp.groups.values())
        pct = 100.0 * bitwise / max(compared, 1)
        max_abs = max((g.max_abs for g in cmp.groups.values()), default=0.0)
        max_rel = max((g.max_rel for g in cmp.groups.values()), default=0.0)
        verdict = PASS if cmp.first is None else FAIL
        mode = {"bitwise": "bitwise", "tolerance": "float64 tolerance", "drift": "float32 drift report"}[cmp.rule.mode]
        past = cmp.first_past
        if verdict == FAIL:
            summary = (f"{mode}: step {cmp.first.step}: {cmp.first.observable} outside "
                       f"{cmp.rule.describe()} (rel {cmp.first.max_rel:.3g})")
        else:
            summary = f"{mode}: {self.n_steps} steps, {pct:.2f}% bitwise-equal, max rel diff {max_rel:.3g}"
            if past is not None:
                summary += f"; past {cmp.rule.rel:g} from step {past.step} (reported, not enforced)"
        if cmp.rule.mode == "drift":
            summary += (f"; not a verdict on the hyperparameters beyond step {cmp.rule.steps} — the float64 "
                        "replay of the same variant is")
        return CheckResult(
            check="conformance",
            subject=f"{self.golden.name}/{proto.dtype}",
            verdict=verdict,
            steps_compared=self.n_steps,
            summary=summary,
            first_divergence=cmp.first,
            metrics={
                "variant": self.golden.name,
                "precision": proto.dtype,
                "mode": cmp.rule.mode,
                "tolerance": cmp.rule.describe(),
                "rel": cmp.rule.rel,
                "enforced_steps": cmp.rule.steps if cmp.rule.mode == "drift" else self.n_steps,
                "values_compared": compared,
                "bitwise_equal": bitwise,
                "bitwise_pct": pct,
                "max_abs": max_abs,
                "max_rel": max_rel,
                "first_step_past_bound": None if past is None else past.step,
                "first_observable_past_bound": None if past is None else past.observable,
                "max_rel_by_step": [cmp.max_rel_by_step.get(t, 0.0) for t in range(1, self.n_steps + 1)],
                "fingerprint_here": self.fingerprint_here,
                "fingerprint_recorded": self.golden_dir.fingerprint,
                "fingerprint_match": self.fingerprint_match,
                "fingerprint_differences": self.fingerprint_reasons,
                "fingerprint_here_text": describe(self.fingerprint_here),
                "fingerprint_recorded_text": describe(self.golden_dir.fingerprint),
                "golden": str(self.golden_dir.root),
                "seeds": {"construction": proto.construction_seed, "training": proto.training_seed},
                "threads": proto.threads,
                "batch_size": proto.batch_size,
                "device": self.device,
                "groups": {k: dataclasses.asdict(v) for k, v in cmp.groups.items()},
                "hyperparameters": self.hyperparameters,
            },
            seconds=seconds,
        )


def _snapshot_value(actual: dict[str, np.ndarray], name: str, expected: np.ndarray) -> np.ndarray:
    """Our tensor for a golden snapshot key; ``<name>#member<k>`` is member k of an ensemble tensor."""
    base, sep, member = name.partition("#member")
    if sep and base in actual and member.isdigit():
        return actual[base][int(member)]
    return actual.get(name, np.full_like(expected, np.nan))


def run_torch_variant(golden_dir: GoldenDir, variant: str, steps: int | None = None,
                      progress: Callable[[int], None] | None = None, device: str = "cpu") -> CheckResult:
    """Replay ``variant``'s recorded protocol with our PyTorch reference on ``device`` and compare everything.

    Off the CPU every global-stream draw is made by the CPU generator and copied to the device
    (:func:`pogo_audit.harness.cpu_drawn_randomness`), so the recorded CPU stream — and ``rng/torch`` — still apply;
    the float32 comparison is then the drift bound, float64 keeps its tolerance."""
    import contextlib

    import torch

    from pogo_audit.harness import cpu_drawn_randomness
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


def run_variant(golden_dir: GoldenDir, variant: str, steps: int | None = None,
                progress: Callable[[int], None] | None = None, device: str = "cpu") -> CheckResult:
    """Replay one variant of one trace set (PyTorch or JAX, by the framework the registry gives the variant).

    ``device`` is the torch device of a PyTorch variant; the JAX variant runs on JAX's default backend (recorded in
    its fingerprint)."""
    golden_dir.variant(variant)  # a missing variant folder is an InputError before anything is built
    if registry.variants()[variant][0].framework == "jax":
        from checks.conformance_jax import run_jax_variant

        return run_jax_variant(golden_dir, variant, steps, progress)
    return run_torch_variant(golden_dir, variant, steps, progress, device)


def run_conformance(variants: Iterable[str], sets: Iterable[GoldenDir], steps: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    device: str = "cpu") -> Iterator[CheckResult]:
    """Every variant in every trace set (float64 first); ``progress(label, done, total)`` after each step."""
    for gd in sets:
        for v in variants:
            if not gd.has_variant(v):
                raise InputError(f"golden traces for {v!r} not found in {gd.root}")
            total = gd.variant(v).protocol.n_steps if steps is None else \
                min(steps, gd.variant(v).protocol.n_steps)
            label = f"{v}/{gd.dtype}"
            yield run_variant(gd, v, steps, None if progress is None else
                              (lambda t, label=label, total=total: progress(label, t, total)), device)


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[CheckResult]:
    """``pogo-audit conformance``: every input validated before the first replay, then each variant and set."""
    variants = resolve_variants(args.algo, implemented_variants())
    sets = golden_sets(args.golden, args.precision)
    for golden in sets:
        for v in variants:
            g = golden.variant(v)
            _ = g.meta, g.steps, g.init_params, g.protocol
        _ = golden.dataset, golden.batch_idx
    yield from run_conformance(variants, sets, args.steps, progress, args.device or "cpu")


def implemented_variants() -> list[str]:
    """Variants whose reference module is importable in this installation (the JAX one needs jax)."""
    out = []
    for name, (spec, _) in registry.variants().items():
        try:
            spec.reference
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: every variant of the audited algorithms against both shipped trace sets."""
    wanted = set()
    for a in opts.algos:
        wanted.update(ALIASES.get(a, (a,)))
    out = []
    for golden in golden_sets(None, "both"):
        for v in implemented_variants():
            if v in wanted:
                say(f"conformance {v}/{golden.dtype}")
                out.append(run_variant(golden, v, steps=opts.conformance_steps, device=opts.device))
    return out
