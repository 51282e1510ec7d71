"""Minari-like episodes for the data layer: clean ones (mixed dtypes, random flags, empty episodes) or with exactly
one defect, each with the DataError it must raise (naming the episode and field) or that it must load."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from hypothesis.strategies import SearchStrategy

EPISODE_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


@dataclass(frozen=True)
class DataCase:
    """Episodes and the expected outcome.

    ``must_fail``: a DataError is required, naming ``episode`` (when set) and one of ``fields``. Otherwise the data
    must load, except for a dataset-level DataError: no steps/transitions at all, or (when ``fields`` is set) a
    statistics overflow naming one of ``fields``.
    """

    episodes: tuple[SimpleNamespace, ...]
    mutation: str
    must_fail: bool = False
    episode: int | None = None
    fields: tuple[str, ...] = ()


def _elements(dtype: type) -> SearchStrategy[Any]:
    if dtype is np.bool_:
        return st.booleans()
    if np.issubdtype(dtype, np.integer):
        return st.integers(-1000, 1000)
    width = {np.float16: 16, np.float32: 32}.get(dtype, 64)
    bound = 1000.0 if dtype is np.float16 else 1e6
    return st.floats(-bound, bound, width=width)


def real_arrays(shape: tuple[int, ...]) -> SearchStrategy[np.ndarray]:
    """Finite arrays of moderate magnitude in a numeric dtype (float16/32/64, int32/64, bool)."""
    dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_])
    return dtypes.flatmap(lambda dt: arrays(dt, shape, elements=_elements(dt)))


def flag_arrays(length: int) -> SearchStrategy[np.ndarray]:
    """Termination/truncation flags as bool, 0/1 int8 or 0.0/1.0 float32."""
    return st.one_of(arrays(np.bool_, (length,)), arrays(np.int8, (length,), elements=st.sampled_from([0, 1])),
                     arrays(np.float32, (length,), elements=st.sampled_from([0.0, 1.0])))


@st.composite
def episodes(draw: st.DrawFn, ep_id: int, state_dim: int, action_dim: int) -> SimpleNamespace:
    """One clean episode of 0 to 6 steps."""
    steps = draw(st.integers(0, 6))
    return SimpleNamespace(id=ep_id, observations=draw(real_arrays((steps + 1, state_dim))),
                           actions=draw(real_arrays((steps, action_dim))), rewards=draw(real_arrays((steps,))),
                           terminations=draw(flag_arrays(steps)), truncations=draw(flag_arrays(steps)))


@st.composite
def episode_lists(draw: st.DrawFn, min_size: int = 1) -> list[SimpleNamespace]:
    """``min_size`` to four clean episodes with shared dimensions and distinct ids."""
    n = draw(st.integers(min_size, 4))
    state_dim, action_dim = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    ids = draw(st.lists(st.integers(0, 999), min_size=n, max_size=n, unique=True))
    return [draw(episodes(i, state_dim, action_dim)) for i in ids]


def _replace(eps: Sequence[SimpleNamespace], k: int, **changes: Any) -> tuple[SimpleNamespace, ...]:
    out = list(eps)
    out[k] = SimpleNamespace(**{**vars(eps[k]), **changes})
    return tuple(out)


def _spots(eps: Sequence[SimpleNamespace], fields: Sequence[str],
           keep: Callable[[np.ndarray], bool] = lambda a: True) -> SearchStrategy[tuple[int, str]]:
    spots = [(k, f) for k, ep in enumerate(eps) for f in fields if keep(np.asarray(getattr(ep, f)))]
    return st.sampled_from(spots) if spots else st.nothing()


def _with_value(eps: Sequence[SimpleNamespace], spot: tuple[int, str], index: int, value: Any,
                dtype: type) -> tuple[SimpleNamespace, ...]:
    k, f = spot
    arr = np.array(getattr(eps[k], f), dtype=dtype)
    arr.flat[index % arr.size] = value
    return _replace(eps, k, **{f: arr})


def _bad(eps: Sequence[SimpleNamespace], mutation: str, k: int, *fields: str) -> DataCase:
    return DataCase(tuple(eps), mutation, True, eps[k].id, fields)


def _clean(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """The episodes as drawn (mixed dtypes, random flags, possibly empty episodes)."""
    return st.just(DataCase(tuple(eps), "clean"))


def _constant_feature(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One feature constant over the whole dataset (std 0 before eps)."""
    def build(j: int, c: float) -> DataCase:
        out = []
        for ep in eps:
            obs = np.array(ep.observations, dtype=np.float64)
            obs[:, j % obs.shape[1]] = c
            out.append(SimpleNamespace(**{**vars(ep), "observations": obs}))
        return DataCase(tuple(out), "constant feature")

    return st.builds(build, st.integers(0, 3), st.floats(-1e6, 1e6))


def _all_terminal(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Every step terminal, no truncation."""
    out = tuple(SimpleNamespace(**{**vars(ep), "terminations": np.ones(len(ep.rewards), bool),
                                   "truncations": np.zeros(len(ep.rewards), bool)}) for ep in eps)
    return st.just(DataCase(out, "all terminal"))


def _zero_length_episode(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """An extra zero-length episode anywhere in the list."""
    s, a = eps[0].observations.shape[1], eps[0].actions.shape[1]
    empty = SimpleNamespace(id=1000, observations=np.zeros((1, s), np.float32), actions=np.zeros((0, a), np.float32),
                            rewards=np.zeros(0, np.float32), terminations=np.zeros(0, bool),
                            truncations=np.zeros(0, bool))
    return st.integers(0, len(eps)).map(lambda i: DataCase(tuple(eps[:i]) + (empty,) + tuple(eps[i:]),
                                                           "zero-length episode"))


def _non_finite_value(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One NaN/±Inf in observations, actions or rewards."""
    return st.builds(lambda spot, i, v, dt: _bad(_with_value(eps, spot, i, v, dt), "NaN/Inf", spot[0], spot[1]),
                     _spots(eps, ("observations", "actions", "rewards"), lambda a: a.size > 0),
                     st.integers(0, 100), st.sampled_from([math.nan, math.inf, -math.inf]),
                     st.sampled_from([np.float32, np.float64]))


def _float32_overflow(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Finite float64 values that become ±Inf as float32."""
    value = st.floats(3.5e38, 1e308) | st.floats(-1e308, -3.5e38)
    return st.builds(lambda spot, i, v: _bad(_with_value(eps, spot, i, v, np.float64), "float32 overflow", spot[0],
                                             spot[1]),
                     _spots(eps, ("observations", "actions", "rewards"), lambda a: a.size > 0),
                     st.integers(0, 100), value)


def _extreme_observations(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """A float32 feature near the float32 limit: either loads finite or the error names the observations."""
    def build(k: int, j: int, v: float) -> DataCase:
        obs = np.array(eps[k].observations, dtype=np.float32)
        obs[:, j % obs.shape[1]] = v
        return DataCase(_replace(eps, k, observations=obs), "extreme float32 observations", False, None,
                        ("observations", "next_observations"))

    lo, hi = float(np.float32(1e19)), float(np.finfo(np.float32).max)
    value = st.floats(lo, hi, width=32) | st.floats(-hi, -lo, width=32)
    return st.builds(build, st.integers(0, len(eps) - 1), st.integers(0, 3), value)


def _bad_dtype(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Object, string, complex, datetime and timedelta arrays."""
    def convert(a: np.ndarray, how: str) -> np.ndarray:
        if how == "object":
            out = np.empty(a.shape, dtype=object)
            out[...] = None
            return out
        if how == "str":
            return a.astype(str)
        if how in ("datetime64[s]", "timedelta64[s]"):
            return np.zeros(a.shape, dtype=how)
        return a.astype(np.complex128) + 1j

    def build(spot: tuple[int, str], how: str) -> DataCase:
        k, f = spot
        return _bad(_replace(eps, k, **{f: convert(np.asarray(getattr(eps[k], f)), how)}), f"{how} dtype", k, f)

    kinds = st.sampled_from(["object", "str", "complex", "datetime64[s]", "timedelta64[s]"])
    return st.builds(build, _spots(eps, EPISODE_FIELDS), kinds)


def _wrong_ndim(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One field flattened or given an extra trailing axis (e.g. rewards as [T, 1])."""
    def build(spot: tuple[int, str], flatten: bool) -> DataCase:
        k, f = spot
        a = np.asarray(getattr(eps[k], f))
        changed = a.reshape(-1) if flatten and a.ndim > 1 else a[..., None]
        return _bad(_replace(eps, k, **{f: changed}), "wrong ndim", k, f)

    return st.builds(build, _spots(eps, EPISODE_FIELDS), st.booleans())


def _wrong_length(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One row too few or too many (actions: the observations no longer match, either may be named)."""
    def build(spot: tuple[int, str], longer: bool) -> DataCase:
        k, f = spot
        a = np.asarray(getattr(eps[k], f))
        changed = a[:-1] if a.shape[0] and not longer else np.concatenate([a, np.zeros((1, *a.shape[1:]), a.dtype)])
        named = ("observations", "actions") if f == "actions" else (f,)
        return _bad(_replace(eps, k, **{f: changed}), "wrong length", k, *named)

    return st.builds(build, _spots(eps, EPISODE_FIELDS), st.booleans())


def _missing_field(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One episode without one of its five fields."""
    def build(spot: tuple[int, str]) -> DataCase:
        k, f = spot
        out = list(eps)
        out[k] = SimpleNamespace(**{n: v for n, v in vars(eps[k]).items() if n != f})
        return _bad(out, "missing field", k, f)

    return st.builds(build, _spots(eps, EPISODE_FIELDS))


def _dims_differ(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """A later episode with one more observation or action feature (needs two episodes)."""
    def build(k: int, f: str) -> DataCase:
        a = np.asarray(getattr(eps[k], f))
        wider = np.concatenate([a, np.zeros((a.shape[0], 1), a.dtype)], axis=1)
        return _bad(_replace(eps, k, **{f: wider}), "dims differ from earlier episodes", k, f)

    return st.builds(build, st.integers(1, len(eps) - 1), st.sampled_from(["observations", "actions"]))


def _bad_flags(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Termination/truncation flags that are not 0/1 (NaN, Inf, 2, -1, 0.5)."""
    return st.builds(lambda spot, i, v: _bad(_with_value(eps, spot, i, v, np.float64), "flag not 0/1", spot[0],
                                             spot[1]),
                     _spots(eps, ("terminations", "truncations"), lambda a: a.size > 0), st.integers(0, 100),
                     st.sampled_from([math.nan, math.inf, 2.0, -1.0, 0.5]))


def _no_features(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Every episode with zero observation (or action) features."""
    def build(f: str) -> DataCase:
        out = [SimpleNamespace(**{**vars(ep), f: np.zeros((np.asarray(getattr(ep, f)).shape[0], 0), np.float32)})
               for ep in eps]
        return _bad(out, "zero features", 0, f)

    return st.sampled_from(["observations", "actions"]).map(build)


#: (mutation, minimum number of episodes), drawn first so that examples spread evenly over them
DATA_MUTATIONS: tuple[tuple[Callable[[list[SimpleNamespace]], SearchStrategy[DataCase]], int], ...] = (
    (_clean, 1), (_constant_feature, 1), (_all_terminal, 1), (_zero_length_episode, 1), (_non_finite_value, 1),
    (_float32_overflow, 1), (_extreme_observations, 1), (_bad_dtype, 1), (_wrong_ndim, 1),
    (_wrong_length, 1), (_missing_field, 1), (_dims_differ, 2), (_bad_flags, 1), (_no_features, 1),
)


def data_cases() -> SearchStrategy[DataCase]:
    """Clean episodes (incl. zero-length, all-terminal, constant features) or with exactly one defect."""
    return st.sampled_from(DATA_MUTATIONS).flatmap(lambda m: episode_lists(m[1]).flatmap(m[0]))
