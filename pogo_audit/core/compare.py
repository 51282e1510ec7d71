"""Numeric comparison with ``torch.testing.assert_close`` semantics, reported as data.

``|actual - expected| <= atol + rtol * |expected|`` elementwise, NaNs equal to NaNs, plus an exact (bitwise) flag.
Messages follow torch.testing: mismatched count, greatest absolute and relative difference with index, tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# torch.testing defaults for float32
DEFAULT_RTOL = 1.3e-6
DEFAULT_ATOL = 1e-5


@dataclass(frozen=True)
class Mismatch:
    """Elementwise comparison of two same-shaped arrays."""

    n_total: int
    n_mismatched: int
    n_not_bitwise: int
    max_abs: float
    max_abs_index: tuple[int, ...]
    max_rel: float
    max_rel_index: tuple[int, ...]
    rtol: float
    atol: float
    shape_mismatch: str | None = None

    @property
    def bitwise_equal(self) -> bool:
        return self.shape_mismatch is None and self.n_not_bitwise == 0

    @property
    def close(self) -> bool:
        return self.shape_mismatch is None and self.n_mismatched == 0

    def describe(self, name: str = "Tensor-likes") -> str:
        if self.shape_mismatch:
            return f"{name}: {self.shape_mismatch}"
        if self.close and self.bitwise_equal:
            return f"{name}: bitwise equal ({self.n_total} elements)"
        pct = 100.0 * self.n_mismatched / max(self.n_total, 1)
        return (
            f"{name}: mismatched elements {self.n_mismatched} / {self.n_total} ({pct:.1f}%), "
            f"not bitwise equal {self.n_not_bitwise}; greatest absolute difference {self.max_abs:.6g} at index "
            f"{self.max_abs_index} (up to {self.atol:g} allowed); greatest relative difference {self.max_rel:.6g} at "
            f"index {self.max_rel_index} (up to {self.rtol:g} allowed)"
        )


def _bits_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact equality that treats NaN == NaN (same payload not required) and keeps -0.0 == 0.0."""
    return (a == b) | (np.isnan(a) & np.isnan(b))


def compare_arrays(expected: np.ndarray, actual: np.ndarray, rtol: float = DEFAULT_RTOL,
                   atol: float = DEFAULT_ATOL) -> Mismatch:
    """Compare ``actual`` to ``expected`` (any float/int dtypes; evaluated in float64)."""
    e = np.asarray(expected)
    a = np.asarray(actual)
    if e.shape != a.shape:
        return Mismatch(int(e.size), int(e.size), int(e.size), float("inf"), (), float("inf"), (), rtol, atol,
                        shape_mismatch=f"shape {list(a.shape)} != expected {list(e.shape)}")
    e64 = e.astype(np.float64, copy=False)
    a64 = a.astype(np.float64, copy=False)
    exact = _bits_equal(e64, a64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(a64 - e64)
        diff = np.where(exact, 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = np.where(exact, 0.0, diff / np.abs(e64))
        rel = np.where(np.isnan(rel), np.inf, rel)
        ok = exact | (diff <= atol + rtol * np.abs(e64))
    if e.size == 0:
        return Mismatch(0, 0, 0, 0.0, (), 0.0, (), rtol, atol)
    ia = np.unravel_index(int(np.argmax(diff)), e.shape)
    ir = np.unravel_index(int(np.argmax(rel)), e.shape)
    return Mismatch(
        n_total=int(e.size),
        n_mismatched=int((~ok).sum()),
        n_not_bitwise=int((~exact).sum()),
        max_abs=float(diff[ia]),
        max_abs_index=tuple(int(i) for i in ia),
        max_rel=float(rel[ir]),
        max_rel_index=tuple(int(i) for i in ir),
        rtol=rtol,
        atol=atol,
    )


def compare_scalar(expected: float, actual: float, rtol: float = DEFAULT_RTOL,
                   atol: float = DEFAULT_ATOL) -> Mismatch:
    return compare_arrays(np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64), rtol, atol)


def parameter_differences(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, str]:
    """Every canonical parameter two ``parameters()`` dicts do not hold bitwise alike, in name order, with how: one
    side lacks it, another shape or dtype ("reference [256] float32, candidate [6] float32"), or other values."""
    out = {}
    for name in sorted(reference.keys() | candidate.keys()):
        if name not in candidate or name not in reference:
            out[name] = f"only the {'reference' if name in reference else 'candidate'} has it"
            continue
        r, c = np.asarray(reference[name]), np.asarray(candidate[name])
        if r.shape != c.shape or r.dtype != c.dtype:
            out[name] = f"reference {list(r.shape)} {r.dtype}, candidate {list(c.shape)} {c.dtype}"
        elif r.tobytes() != c.tobytes():
            out[name] = "same shape, other values"
    return out
