"""The observable vocabulary of the equivalence check, declared once: the observable groups (what each is called in
a table, the kill-matrix column, whether its cross-device tolerance is measured, whether a step replay locates it),
the batch observable, digests and magnitudes, and the parameter and gradient observables both trainers produce.

A leaf of the equivalence package: the comparator, the sides, the reference worker, the lock-step extras and the
optimizer probes build on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pogo_audit.model.protocol import COMPARED_PARAM_ROLES
from pogo_audit.runtime.digest import array_digest, arrays_digest


@dataclass(frozen=True)
class ObservableGroup:
    """One row of the equivalence table: the observables whose names start with ``prefixes``.

    ``abbrev``: its kill-matrix column; ``drift``: a cross-device audit derives its tolerance from the float32 drift
    measured on the reference (else its values stay exact: digests, RNG states); ``localised``: a finding of it is
    located by replaying the step under tracing (the evaluation audit locates its own); ``step_localised``: the
    localisation accuracy counts it (the W2 oracle and the evaluation audit are other instruments)."""

    name: str
    prefixes: tuple[str, ...]
    abbrev: str
    drift: bool
    localised: bool = True
    step_localised: bool = True


#: every observable group, in table order
OBSERVABLE_GROUPS = (
    ObservableGroup("critic losses", ("critic/",), "crit loss", drift=True),
    ObservableGroup("actor0 losses", ("actor0/",), "a0 loss", drift=True),
    ObservableGroup("critic params", ("params/critic/",), "crit par", drift=True),
    ObservableGroup("target params", ("params/target/",), "tgt par", drift=True),
    ObservableGroup("actor0 params", ("params/actor0/",), "a0 par", drift=True),
    ObservableGroup("rng", ("rng/",), "rng", drift=False),
    ObservableGroup("grad leak", ("grad_leak/",), "grad", drift=True),
    ObservableGroup("chain (W2 oracle)", ("chain/",), "W2", drift=False, step_localised=False),
    ObservableGroup("optimizer", ("optim/",), "optim", drift=True),
    ObservableGroup("gradients used", ("grad_used/",), "grad used", drift=True),
    ObservableGroup("evaluation", ("eval/",), "eval", drift=False, localised=False, step_localised=False),
    ObservableGroup("batch", ("batch/",), "batch", drift=False),
)
GROUPS = tuple(g.name for g in OBSERVABLE_GROUPS)
BY_NAME = {g.name: g for g in OBSERVABLE_GROUPS}
def localised(group: str) -> bool:
    """Whether a step replay under tracing locates a finding of ``group`` (:attr:`ObservableGroup.localised`)."""
    return group not in BY_NAME or BY_NAME[group].localised


#: observables of a parameter role no group names (``params/<other>/...``) count as critic parameters
_PARAMS_FALLBACK = "critic params"


@functools.lru_cache(maxsize=None)
def group_of(observable: str) -> str:
    """The table group of a canonical observable name (cached: the same few hundred names recur every step)."""
    for group in OBSERVABLE_GROUPS:
        if observable.startswith(group.prefixes):
            return group.name
    return _PARAMS_FALLBACK if observable.startswith("params/") else "other"


#: whether a trainer's ``step`` left the batch it was given as it was (each trainer gets its own copy, so an in-place
#: edit cannot reach the other trainers; the candidate's copy is checked after its step)
BATCH_OBSERVABLE = "batch/unchanged_by_step"
UNCHANGED = "unchanged"
MUTATED = "mutated in place by step"


def map_batch(batch: Any, fn: Callable[[Any], Any]) -> Any:
    """``batch`` (a list/tuple of tensors or arrays, a mapping of them, or one) with ``fn`` applied to each."""
    if isinstance(batch, Mapping):
        return {k: fn(v) for k, v in batch.items()}
    return type(batch)(fn(x) for x in batch) if isinstance(batch, (list, tuple)) else fn(batch)


def own_copy(batch: Any) -> Any:
    """A copy of ``batch`` (a list/tuple of tensors or arrays, or a mapping of them) that shares no storage."""
    return map_batch(batch, lambda x: x.clone() if hasattr(x, "clone") else np.array(x, copy=True))


def batch_digest(batch: Any) -> str:
    """One digest of every tensor of ``batch`` (values, shapes and dtypes)."""
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else [batch]
    return arrays_digest(x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x) for x in items)


def numbers(value: Any) -> np.ndarray | None:
    """``value`` as a float64 array, or None when it is not numeric (None, a string, an object...)."""
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.asarray(value).dtype.kind in "biuf" else None


def not_numeric(value: Any) -> str:
    """The observable of a value that should be numeric and is not (compared as a digest: always differs)."""
    return f"not numeric: {type(value).__name__}"


class Deferred:
    """A magnitude observable (a tensor's sum or norm), computed only when it is needed: the candidate's when the
    tensor's digest (``digest``: the name of its ``.../hash`` observable) differs from the reference's — equal digests
    mean equal bytes, hence equal sums and norms, so the reference's numbers are taken (:func:`settle_deferred`) —
    and a reference's in the calling process once, for both sides. The digest (XXH3, several GB/s) is far cheaper
    than a float64 sum, and every observation in the calling process runs on the audit's critical path."""

    __slots__ = ("compute", "digest")

    def __init__(self, compute: Callable[[], float], digest: str):
        self.compute, self.digest = compute, digest


def settle_deferred(obs_ref: dict[str, Any], *others: dict[str, Any]) -> None:
    """Replace every :class:`Deferred` in place: each of ``others`` (the candidate's, the twin's observables) takes
    the reference's value where the tensor's digest equals the reference's and computes its own otherwise; the
    reference's are computed (once) where they are used, and the rest after."""
    for obs in others:
        for name, value in obs.items():
            if isinstance(value, Deferred):
                same = name in obs_ref and value.digest in obs_ref and obs_ref[value.digest] == obs.get(value.digest)
                obs[name] = _settled(obs_ref, name) if same else value.compute()
    for name in obs_ref:
        _settled(obs_ref, name)


def _settled(obs: dict[str, Any], name: str) -> Any:
    value = obs[name]
    if isinstance(value, Deferred):
        value = obs[name] = value.compute()
    return value


def total(arr: np.ndarray) -> float:
    return float(np.asarray(arr, dtype=np.float64).ravel().sum())


def l2_norm(arr: np.ndarray) -> float:
    x = np.asarray(arr, dtype=np.float64).ravel()
    return float(np.sqrt((x * x).sum()))


class _Widened:
    """``arr`` as a flat float64 array, converted once for both its sum and its norm (and only when one is asked)."""

    __slots__ = ("arr", "wide")

    def __init__(self, arr: np.ndarray):
        self.arr, self.wide = arr, None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.wide is None:
            self.wide = np.asarray(self.arr, dtype=np.float64).ravel()
        return self.wide


def _numeric(arr: Any) -> bool:
    return isinstance(arr, np.ndarray) and arr.dtype.kind in "biuf" or numbers(arr) is not None


def magnitude(fn: Callable[[np.ndarray], float], arr: np.ndarray, digest: str, lazy: bool) -> Any:
    """``fn(arr)`` now, or (``lazy``) a :class:`Deferred` of it tied to the digest observable ``digest``."""
    return Deferred(lambda: fn(arr), digest) if lazy else fn(arr)


def param_observables(params: Mapping[str, np.ndarray], lazy: bool = False) -> dict[str, Any]:
    """``params/<name>/{sum,l2,hash}`` for the compared roles (critic, target, actor0); a value that is not a
    numeric array gets a "not numeric" marker instead, which never equals the reference's number. ``lazy``: sums and
    norms as :class:`Deferred`."""
    out: dict[str, Any] = {}
    for name, arr in params.items():
        if not name.startswith(COMPARED_PARAM_ROLES):
            continue
        if not _numeric(arr):
            for part in ("sum", "l2", "hash"):
                out[f"params/{name}/{part}"] = not_numeric(arr)
            continue
        digest, wide = f"params/{name}/hash", _Widened(arr)
        out[f"params/{name}/sum"] = magnitude(total, wide, digest, lazy)
        out[f"params/{name}/l2"] = magnitude(l2_norm, wide, digest, lazy)
        out[digest] = array_digest(np.asarray(arr))
    return out


def grad_observables(grads: Mapping[str, np.ndarray], lazy: bool = False) -> dict[str, Any]:
    """``grad_leak/<name>/{l2,hash}`` of the gradients left on parameters after a step (``lazy`` as
    :func:`param_observables`)."""
    out: dict[str, Any] = {}
    for name, g in grads.items():
        if not _numeric(g):
            out[f"grad_leak/{name}/l2"] = out[f"grad_leak/{name}/hash"] = not_numeric(g)
            continue
        digest = f"grad_leak/{name}/hash"
        out[f"grad_leak/{name}/l2"] = magnitude(l2_norm, g, digest, lazy)
        out[digest] = array_digest(np.asarray(g))
    return out


#: what a missing observable is called: a candidate parameter (or other observable) the candidate lacks, a reference
#: loss key the candidate never logs, a loss the candidate logs that the reference never does
ABSENT_ON_CANDIDATE = "absent on candidate"
NOT_LOGGED = "not logged"
NOT_LOGGED_BY_REFERENCE = "not logged by reference"
#: a key logged on both sides, but at this step by one side only (a real divergence, not an absence)
MISSING_AT_STEP = "missing at this step"
EXTRA_AT_STEP = "extra at this step"
_DIGESTS = ("sum", "l2", "hash", "full")


def finding_subject(name: str) -> str:
    """What a distinct finding is about: the loss key, the RNG stream, or the module for per-tensor observables
    (``params/critic/critic_1`` for ``params/critic/critic_1/net.0.weight/sum``)."""
    parts = name.split("/")
    if parts[0] in ("params", "grad_used", "grad_leak", "optim") and len(parts) >= 4:
        return "/".join(parts[:3])
    return observed_entity(name)


def finding_kind(kind: str | None) -> str:
    """A value or digest difference is one kind ("differs"); absences, shapes and non-numbers keep theirs."""
    return "differs" if kind in (None, "digest differs") else kind


def observed_entity(name: str) -> str:
    """What an observable measures: ``params/actor0/w`` for ``params/actor0/w/sum`` (one absence per tensor)."""
    head, _, last = name.rpartition("/")
    return head if head.count("/") >= 1 and last in _DIGESTS else name


def scalars(obs: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in obs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
