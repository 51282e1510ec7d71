"""How conformance judges a replayed value against a recorded one: the rule per precision and CPU fingerprint, and the
running comparison of one replay.

Conformance of the reference algorithms with traces recorded from the original CORL code.

Two trace sets ship with the package: float32 (CORL's own numerics) and float64 (the same runs in float64 end to
end). The replay follows each set's recorded protocol (:class:`pogo_audit.core.golden.Protocol`: seeds, threads, dtype,
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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pogo_audit.core.golden import GoldenVariant, param_digest
from pogo_audit.model.results import Divergence


F64_REL = 1e-9


F32_REL = 5e-4


F32_STEPS = 2


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


def _snapshot_value(actual: dict[str, np.ndarray], name: str, expected: np.ndarray) -> np.ndarray:
    """Our tensor for a golden snapshot key; ``<name>#member<k>`` is member k of an ensemble tensor."""
    base, sep, member = name.partition("#member")
    if sep and base in actual and member.isdigit():
        return actual[base][int(member)]
    return actual.get(name, np.full_like(expected, np.nan))


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
