"""Logging payloads for ``RunLogger.log``: nested mappings of keys of every kind and values the logger must write
(Python/NumPy scalars of every real dtype, 0-d arrays and tensors) or skip (None, strings, complex numbers, n-d
arrays, containers), each leaf carrying what must be written for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, from_dtype
from hypothesis.strategies import SearchStrategy

from checks.fuzz.strategies.configs import finite_floats


class _Skip:
    """Expected outcome of a value the logger must skip (with one warning per key)."""

    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()


@dataclass(frozen=True)
class Leaf:
    """A logged value and what must be written for it (a Python scalar, or SKIP)."""

    value: Any
    expected: Any


@dataclass(frozen=True)
class Branch:
    """A (nested) payload mapping as ordered ``(key, Leaf | Branch)`` items."""

    items: tuple[tuple[Any, Leaf | Branch], ...]

    def materialize(self) -> dict[Any, Any]:
        return {k: v.materialize() if isinstance(v, Branch) else v.value for k, v in self.items}


@dataclass(frozen=True)
class LogCase:
    """Successive ``RunLogger.log`` calls as (step, payload)."""

    calls: tuple[tuple[int, Branch], ...]


_NP_REAL = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
            np.float16, np.float32, np.float64, np.longdouble)
_NP_COMPLEX = (np.complex64, np.complex128, np.clongdouble)
_TORCH_REAL = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
               torch.bfloat16, torch.float32, torch.float64)


def _as_python(value: Any, kind: str) -> bool | int | float:
    """The Python scalar a value of numpy dtype kind ``b``/``i``/``u``/``f`` stands for."""
    return bool(value) if kind == "b" else int(value) if kind in "iu" else float(value)


def _numpy_leaves(dtype: type, zero_d: bool) -> SearchStrategy[Leaf]:
    """NumPy scalars (or 0-d arrays) of ``dtype``; complex ones are expected to be skipped."""
    dt = np.dtype(dtype)

    def leaf(x: Any) -> Leaf:
        scalar = dt.type(x)
        value = np.array(scalar, dtype=dt) if zero_d else scalar
        return Leaf(value, SKIP if dt.kind == "c" else _as_python(scalar, dt.kind))

    return from_dtype(dt).map(leaf)


def _torch_leaves(dtype: torch.dtype) -> SearchStrategy[Leaf]:
    """0-d tensors of ``dtype`` (floats possibly requiring grad; out-of-range values saturate to ±Inf)."""
    def leaf(x: Any, grad: bool) -> Leaf:
        if dtype.is_floating_point:
            t = torch.tensor(x, dtype=torch.float64).to(dtype).requires_grad_(grad)
            return Leaf(t, float(t.item()))
        t = torch.tensor(x, dtype=dtype)
        return Leaf(t, bool(t.item()) if dtype is torch.bool else int(t.item()))

    if dtype is torch.bool:
        values: SearchStrategy[Any] = st.booleans()
    elif dtype.is_floating_point:
        values = st.floats()
    else:
        info = torch.iinfo(dtype)
        values = st.integers(info.min, info.max)
    return st.builds(leaf, values, st.booleans() if dtype.is_floating_point else st.just(False))


def scalar_leaves() -> SearchStrategy[Leaf]:
    """Everything the logger must write: Python/NumPy scalars of every real dtype, 0-d arrays and tensors."""
    python = st.one_of(st.booleans().map(lambda b: Leaf(b, b)),
                       (st.integers() | st.integers(2**63, 2**200)).map(lambda i: Leaf(i, i)),
                       st.floats().map(lambda f: Leaf(f, f)))
    return st.one_of(python, *[_numpy_leaves(t, z) for t in _NP_REAL for z in (False, True)],
                     *[_torch_leaves(t) for t in _TORCH_REAL])


def skipped_leaves() -> SearchStrategy[Leaf]:
    """Everything the logger must skip: None, strings, complex numbers, n-d arrays and tensors, containers."""
    nd = arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]),
                array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))
    values = st.one_of(
        st.none(), st.text(max_size=8), st.text(max_size=4).map(np.str_), st.text(max_size=4).map(np.array),
        st.complex_numbers(), st.binary(max_size=4), st.lists(st.floats(), max_size=3),
        st.tuples(st.integers()), nd, nd.map(torch.as_tensor),
        st.builds(lambda re, im: torch.tensor(complex(re, im)), finite_floats(-1e3, 1e3), finite_floats(-1e3, 1e3)),
    )
    complex_np = [_numpy_leaves(t, z) for t in _NP_COMPLEX for z in (False, True)]
    return st.one_of(values.map(lambda v: Leaf(v, SKIP)), *complex_np)


def log_keys() -> SearchStrategy[Any]:
    """Keys of every kind: short and very long strings, ints, tuples, None, bools, and likely collisions."""
    return st.one_of(st.text(max_size=8), st.sampled_from(["a", "b", "a/b", "1", "step", "None"]),
                     st.integers(-3, 3), st.tuples(st.integers(0, 2), st.text(max_size=2)), st.none(), st.booleans(),
                     st.builds(lambda c, n: c * n, st.characters(), st.integers(1000, 5000)))


def _branches(nodes: SearchStrategy[Leaf | Branch], max_size: int) -> SearchStrategy[Branch]:
    items = st.lists(st.tuples(log_keys(), nodes), max_size=max_size, unique_by=lambda kv: kv[0])
    return items.map(lambda kv: Branch(tuple(kv)))


def log_payloads() -> SearchStrategy[Branch]:
    """A payload mapping of up to six items, nested mappings up to eight leaves deep in total."""
    leaves = scalar_leaves() | skipped_leaves()
    nodes = st.recursive(leaves, lambda inner: _branches(inner, 3), max_leaves=8)
    return _branches(nodes, 6)


def log_cases() -> SearchStrategy[LogCase]:
    """One to three payloads, the whole sequence logged once or twice (warnings must not repeat)."""
    calls = st.lists(st.tuples(st.integers(0, 2**40), log_payloads()), min_size=1, max_size=3)
    return st.builds(lambda c, repeat: LogCase(tuple(c) * repeat), calls, st.integers(1, 2))
