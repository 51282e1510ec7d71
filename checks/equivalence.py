"""Equivalence of a candidate trainer's critic and actor0 with the single-actor reference, step by step.

Both trainers are built by ``factory(config, dataset_spec, seed)`` with the same seed, each with a private copy of
the global RNG state (:class:`pogo_audit.harness.IsolatedTrainer`); every batch is sampled once and given to both.
At step 0 and after every step the harness compares the canonical observables:

* ``critic/*`` and ``actor0/*`` losses returned by ``step``;
* ``params/<name>/{sum,l2,hash}`` digests of every critic, target and actor0 tensor (full tensors every
  ``full_every`` steps and at the end);
* ``rng/torch`` and ``rng/numpy``: digests of each trainer's global RNG state (JAX trainers add ``rng/key``);
* ``grad_leak/<name>``: the ``.grad`` of critic/actor0 parameters — a loss of actor i ≥ 1 that writes a gradient
  there makes them differ from the reference's;
* ``chain/actor<i>/w2``: for a candidate exposing ``policies()``, the W2 it reports is checked against an
  independent oracle on the actors as they were at the start of the step (see :mod:`checks.chain_oracle`), on
  steps 1..K, every K-th step and the last (``oracle_every``).

The reference is run twice first-hand (in lock-step; on the CPU the twin runs the first ``self_check_steps`` steps)
so that a nondeterministic reference yields "inconclusive", never a false "not equivalent"; where the run allows it,
the reference and its twin each run in a worker process while this one runs the candidate and compares (:mod:`checks.reference_worker`, same observables, same verdicts).
Modes: ``bitwise`` (exact equality, hashes included) and ``tolerance``
(``|a - b| <= atol + rtol |b|``; hashes ignored).

Device (``config.device``): on CUDA both trainers run on the same GPU under :func:`pogo_audit.harness.torch_determinism`
and the ``rng/cuda`` digest joins the RNG observables. Bitwise mode then holds only if the reference's self-check
shows the device is bitwise reproducible for this run; otherwise the run is judged in tolerance mode (``rtol``,
``atol``), and the result says so and why (``metrics["mode"]``, ``metrics["self_check"]``).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import functools
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from checks import HARNESS_DIRS
from pogo_audit.bundle import Bundle, write_bundle
from pogo_audit.compare import DEFAULT_ATOL, DEFAULT_RTOL, compare_arrays, compare_scalar
from pogo_audit.findings import Crash, TrainerCrash, guarded, parameter_check_text
from checks.isolate import isolate
from pogo_audit.harness import IsolatedTrainer, torch_determinism
from pogo_audit import threads
from pogo_audit.results import FAIL, INCONCLUSIVE, PASS, CheckResult, Divergence, environment_info

GROUPS = ("critic losses", "actor0 losses", "critic params", "target params", "actor0 params", "rng", "grad leak",
          "chain (W2 oracle)", "optimizer", "gradients used", "evaluation", "batch")


@functools.lru_cache(maxsize=None)
def group_of(observable: str) -> str:
    """The table group of a canonical observable name (cached: the same few hundred names recur every step)."""
    if observable.startswith("critic/"):
        return "critic losses"
    if observable.startswith("actor0/"):
        return "actor0 losses"
    if observable.startswith("params/"):
        role = observable.split("/", 2)[1]
        return {"critic": "critic params", "target": "target params", "actor0": "actor0 params"}.get(role,
                                                                                                   "critic params")
    if observable.startswith("rng/"):
        return "rng"
    if observable.startswith("grad_leak/"):
        return "grad leak"
    if observable.startswith("chain/"):
        return "chain (W2 oracle)"
    if observable.startswith("batch/"):
        return "batch"
    return {"optim": "optimizer", "grad_used": "gradients used", "eval": "evaluation"}.get(
        observable.split("/", 1)[0], "other")


COMPARED_PARAM_ROLES = ("critic/", "actor0/", "target/")

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
    """A hash of every tensor of ``batch`` (values, shapes and dtypes; XXH3 as :func:`_hash`)."""
    h = xxhash.xxh3_128()
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else [batch]
    for x in items:
        a = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()[:16]


@dataclass
class EquivalenceOptions:
    steps: int = 300
    seed: int = 0
    batch_size: int | None = None
    mode: str = "bitwise"
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    full_every: int = 100
    self_check: bool = True
    #: on the CPU the self-check twin (the reference built and run a second time) runs steps 1..N (0: every step).
    #: A nondeterministic reference (thread scheduling, an unseeded draw) differs at the step the nondeterminism
    #: acts, in practice from the first steps on; past N the twin's steps — each as costly as the reference's — are
    #: not paid (its process ends). On other devices the twin runs every step: it decides the tolerance fallback.
    #: Critic and actor0 are compared with the reference every step.
    self_check_steps: int = 100
    bundle_dir: str | None = None
    chain_oracle: bool = True
    #: the W2 oracle (``chain/*``) checks steps 1..K, every K-th step and the last step (K <= 1: every step). It
    #: recomputes the extra actors' W2 with POT (tens of ms a step); the defects it exists for — a wrong scale, a
    #: dropped term, a reference actor taken after its update — are in the formula, so they show from the first
    #: steps on, and a defect that starts late is still seen within K steps. Critic and actor0 are compared every step.
    oracle_every: int = 10
    sync_init: bool = False
    #: in bitwise mode, fall back to tolerance mode when the self-check finds the reference not bitwise reproducible
    #: (instead of "inconclusive"); None: on for a CUDA device, off on the CPU (where bitwise is the promise)
    tolerance_fallback: bool | None = None
    #: tolerance mode: (rtol, atol) per observable group instead of ``rtol``/``atol`` (cross-device audits)
    group_tolerances: dict[str, tuple[float, float]] | None = None
    #: fnmatch globs of observables not compared (what a candidate does not log); listed in the result as ignored
    ignore: tuple[str, ...] = ()
    #: call both trainers' ``evaluate(seed, episodes)`` every K steps (0: never), see :mod:`checks.evaluation_audit`
    eval_every: int = 0
    eval_episodes: int = 1
    #: set the candidate to the reference's state before every step (:mod:`checks.isolate`)
    isolate: bool = False
    #: replay the step where a distinct finding first shows under tracing and name its line (:mod:`checks.localise`);
    #: None: on with ``isolate``
    localise: bool | None = None
    #: run the reference and its twin in a worker process while this one runs the candidate, where the run allows
    #: it (:func:`checks.reference_worker.reference_pair`); None: for runs of at least
    #: :data:`~checks.reference_worker.MIN_CONCURRENT_STEPS` steps. The comparison and the verdicts are the same
    concurrent: bool | None = None


def _hash(arr: np.ndarray) -> str:
    """A digest of the bytes of ``arr``: equal bytes give equal digests, any differing bit a different one (XXH3-128,
    cut to 64 bits; a non-cryptographic hash is enough against accidental differences and hashes several GB/s, so
    every tensor is hashed every step at a small fraction of a training step's cost)."""
    return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))[:16]


def _numbers(value: Any) -> np.ndarray | None:
    """``value`` as a float64 array, or None when it is not numeric (None, a string, an object...)."""
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if np.asarray(value).dtype.kind in "biuf" else None


def _not_numeric(value: Any) -> str:
    """The observable of a value that should be numeric and is not (compared as a digest: always differs)."""
    return f"not numeric: {type(value).__name__}"


class Deferred:
    """A magnitude observable (a tensor's sum or norm) of the candidate, computed only when the tensor's digest
    (``digest``: the name of its ``.../hash`` observable) differs from the reference's: equal digests mean equal
    bytes, hence equal sums and norms, so the reference's numbers are taken (:func:`settle_deferred`). The
    digest (XXH3, several GB/s) is far cheaper than a float64 sum, and the candidate's observation runs on the
    audit's critical path while the reference's runs beside it."""

    __slots__ = ("compute", "digest")

    def __init__(self, compute: Callable[[], float], digest: str):
        self.compute, self.digest = compute, digest


def settle_deferred(obs_ref: Mapping[str, Any], obs_cand: dict[str, Any]) -> None:
    """Replace every :class:`Deferred` of ``obs_cand`` in place: by the reference's value when the tensor's digest
    equals the reference's, else by computing it."""
    for name, value in obs_cand.items():
        if isinstance(value, Deferred):
            same = name in obs_ref and value.digest in obs_ref and obs_ref[value.digest] == obs_cand.get(value.digest)
            obs_cand[name] = obs_ref[name] if same else value.compute()


def _sum(arr: np.ndarray) -> float:
    return float(np.asarray(arr, dtype=np.float64).ravel().sum())


def _l2(arr: np.ndarray) -> float:
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
    return isinstance(arr, np.ndarray) and arr.dtype.kind in "biuf" or _numbers(arr) is not None


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
                out[f"params/{name}/{part}"] = _not_numeric(arr)
            continue
        digest, wide = f"params/{name}/hash", _Widened(arr)
        out[f"params/{name}/sum"] = magnitude(_sum, wide, digest, lazy)
        out[f"params/{name}/l2"] = magnitude(_l2, wide, digest, lazy)
        out[digest] = _hash(np.asarray(arr))
    return out


def grad_observables(grads: Mapping[str, np.ndarray], lazy: bool = False) -> dict[str, Any]:
    """``grad_leak/<name>/{l2,hash}`` of the gradients left on parameters after a step (``lazy`` as
    :func:`param_observables`)."""
    out: dict[str, Any] = {}
    for name, g in grads.items():
        if not _numeric(g):
            out[f"grad_leak/{name}/l2"] = out[f"grad_leak/{name}/hash"] = _not_numeric(g)
            continue
        digest = f"grad_leak/{name}/hash"
        out[f"grad_leak/{name}/l2"] = magnitude(_l2, g, digest, lazy)
        out[digest] = _hash(np.asarray(g))
    return out


#: what a missing observable is called: a candidate parameter (or other observable) the candidate lacks, a reference
#: loss key the candidate never logs, a loss the candidate logs that the reference never does
ABSENT_ON_CANDIDATE = "absent on candidate"
NOT_LOGGED = "not logged"
NOT_LOGGED_BY_REFERENCE = "not logged by reference"
#: a key logged on both sides, but at this step by one side only (a real divergence, not an absence)
MISSING_AT_STEP = "missing at this step"
EXTRA_AT_STEP = "extra at this step"
LOSS_PREFIXES = ("critic/", "actor0/")
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


@dataclass
class _GroupStats:
    observables: set[str] = field(default_factory=set)
    steps: set[int] = field(default_factory=set)
    first: Divergence | None = None
    max_abs: float = 0.0
    max_rel: float = 0.0
    #: a divergence with a magnitude was seen (else the maxima say nothing: digests, shapes)
    numeric: bool = False
    #: observed entity -> its absence kind (ABSENT_ON_CANDIDATE, NOT_LOGGED, NOT_LOGGED_BY_REFERENCE)
    absent: dict[str, str] = field(default_factory=dict)


class Comparator:
    """Compares two observable dicts step by step and keeps per-group statistics and the first divergence.

    An observable one side lacks is judged when the run ends (:meth:`settle`): never produced by that side at all,
    it is an absence (its own verdict, in :attr:`absent`, never a number); produced at other steps, it diverges at
    that step. Observables matching an ``ignore`` glob (fnmatch) are not compared and are listed in :attr:`ignored`.
    """

    def __init__(self, mode: str, rtol: float, atol: float,
                 group_tolerances: Mapping[str, tuple[float, float]] | None = None, ignore: Sequence[str] = ()):
        self.mode = mode
        self.rtol, self.atol = (0.0, 0.0) if mode == "bitwise" else (rtol, atol)
        #: (rtol, atol) per observable group, tolerance mode only (a per-observable tolerance still wins)
        self.group_tolerances = dict(group_tolerances or {}) if mode != "bitwise" else {}
        self.groups: dict[str, _GroupStats] = {g: _GroupStats() for g in GROUPS}
        self.first: Divergence | None = None
        self.diverged_at_step: list[str] = []
        #: ``(observable, side lacking it)`` for the losses only one side logged at the last compared step
        self.lacking_at_step: frozenset[tuple[str, str]] = frozenset()
        self.ignore = tuple(ignore)
        self.ignored: set[str] = set()
        #: observed entity -> the Divergence (kind = absence kind) of its first absence
        self.absent: dict[str, Divergence] = {}
        self._by_name: dict[str, _GroupStats] = {}
        self._seen: dict[str, set[str]] = {"reference": set(), "candidate": set()}
        self._missing: list[tuple[int, str, str]] = []  # (step, observable, side lacking it)
        #: (group, observed entity, kind) -> first step and the steps it diverged at
        self.findings: dict[tuple[str, str, str], dict[str, Any]] = {}

    def _tol(self, name: str, tolerance: tuple[float, float] | None) -> tuple[float, float]:
        return tolerance or self.group_tolerances.get(group_of(name)) or (self.rtol, self.atol)

    def _note(self, g: _GroupStats, div: Divergence) -> None:
        """Make ``div`` the group's / run's first divergence when it is earlier than theirs; count it as a distinct
        finding of its (group, observed entity, kind)."""
        if g.first is None or div.step < g.first.step:
            g.first = div
        if self.first is None or div.step < self.first.step:
            self.first = div
        key = (group_of(div.observable), finding_subject(div.observable), finding_kind(div.kind))
        found = self.findings.setdefault(key, {"group": key[0], "observable": key[1], "kind": key[2],
                                               "first_step": div.step, "steps": set()})
        found["first_step"] = min(found["first_step"], div.step)
        found["steps"].add(div.step)

    def distinct(self) -> list[dict[str, Any]]:
        """Every distinct finding — (group, observed entity, kind) — with its first step and the number of steps it
        was seen at, in order of first step."""
        self.settle()
        return [{**{k: v for k, v in f.items() if k != "steps"}, "steps": len(f["steps"])}
                for f in sorted(self.findings.values(), key=lambda f: (f["first_step"], f["group"], f["observable"]))]

    def _group(self, name: str) -> _GroupStats:
        """The statistics of ``name``'s group (kept per name: the same few hundred names recur every step)."""
        g = self._by_name.get(name)
        if g is None:
            g = self._by_name[name] = self.groups.setdefault(group_of(name), _GroupStats())
        return g

    def _record(self, step: int, name: str, expected: Any, actual: Any,
                tolerance: tuple[float, float] | None = None) -> bool:
        g = self._group(name)
        g.observables.add(name)
        g.steps.add(step)
        if isinstance(expected, (float, str)) and type(expected) is type(actual) and expected == actual:
            return True  # equal numbers or digests pass in every mode (and leave the maxima at their value)
        rtol, atol = self._tol(name, tolerance)
        index, kind = None, None
        numeric = (_numbers(expected), _numbers(actual))
        if isinstance(expected, str) and isinstance(actual, str):
            if self.mode != "bitwise" and name.endswith("/hash"):
                return True
            if expected == actual:
                return True
            # a digest carries no magnitude: NaN marks "differs" without polluting the group's numeric maxima
            ok, max_abs, max_rel = False, float("nan"), float("nan")
            kind = actual if actual.startswith("not numeric") or name == BATCH_OBSERVABLE else "digest differs"
        elif numeric[0] is None or numeric[1] is None:  # a string, None, an object where a number belongs
            ok, max_abs, max_rel = False, float("nan"), float("nan")
            kind = actual if isinstance(actual, str) and actual.startswith("not numeric") else \
                f"not numeric: {type(actual).__name__}" if numeric[1] is None else "digest differs"
        elif isinstance(expected, np.ndarray) and expected.ndim > 0:
            mm = compare_arrays(expected, np.asarray(actual), rtol, atol)
            ok, max_abs, max_rel = mm.close, mm.max_abs, mm.max_rel
            index = list(mm.max_abs_index)
            if mm.shape_mismatch:
                ok, max_abs, max_rel, kind, index = False, float("nan"), float("nan"), "shape differs", None
        elif numeric[1].size != 1:
            ok, max_abs, max_rel, kind = False, float("nan"), float("nan"), f"shape differs: {list(numeric[1].shape)}"
        else:
            mm = compare_scalar(float(numeric[0].reshape(())), float(numeric[1].reshape(())), rtol, atol)
            ok, max_abs, max_rel = mm.close, mm.max_abs, mm.max_rel
        if not np.isnan(max_abs):
            g.max_abs = max(g.max_abs, max_abs)
        if not np.isnan(max_rel):
            g.max_rel = max(g.max_rel, max_rel)
        if ok:
            return True
        g.numeric = g.numeric or kind is None
        self._note(g, Divergence(step=step, observable=name, max_abs=float(max_abs), max_rel=float(max_rel),
                                 rtol=rtol, atol=atol, index=index,
                                 expected=float(expected) if isinstance(expected, (int, float)) else None,
                                 actual=float(actual) if isinstance(actual, (int, float)) else None, kind=kind))
        self.diverged_at_step.append(name)
        return False

    def _kept(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """``obs`` without the ignored observables and None values (recording what was ignored)."""
        if not self.ignore:
            return {name: value for name, value in obs.items() if value is not None}
        out = {}
        for name, value in obs.items():
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.ignore):
                self.ignored.add(name)
            elif value is not None:
                out[name] = value
        return out

    def compare(self, step: int, ref: Mapping[str, Any], cand: Mapping[str, Any],
                tolerances: Mapping[str, tuple[float, float]] | None = None) -> list[str]:
        """Compare every observable the reference has; returns the names that diverged at this step (an observable
        one side lacks is judged by :meth:`settle`)."""
        self.diverged_at_step = []
        ref, cand = self._kept(ref), self._kept(cand)
        self._seen["reference"].update(ref)
        self._seen["candidate"].update(cand)
        tolerances = tolerances or {}
        missing: list[tuple[int, str, str]] = []
        for name, expected in ref.items():
            if name not in cand:
                missing.append((step, name, "candidate"))
                continue
            actual = cand[name]
            if type(expected) is type(actual) and type(expected) in (float, str) and expected == actual:
                g = self._group(name)  # :meth:`_record`'s first case, inline: nearly every observable, every step
                g.observables.add(name)
                g.steps.add(step)
                continue
            self._record(step, name, expected, actual, tolerances.get(name))
        for name in cand:  # a critic/actor0 loss the reference did not log at this step
            if name.startswith(LOSS_PREFIXES) and name not in ref:
                missing.append((step, name, "reference"))
        self._missing.extend(missing)
        self.lacking_at_step = frozenset((name, side) for _, name, side in missing if name.startswith(LOSS_PREFIXES))
        return list(self.diverged_at_step)

    def settle(self) -> None:
        """Judge the observables one side lacked: an absence when that side never produced them, else a
        divergence at the step it lacked them. Idempotent; call before reading :attr:`first` or :meth:`rows`."""
        for step, name, lacking in self._missing:
            g = self.groups.setdefault(group_of(name), _GroupStats())
            g.observables.add(name)
            g.steps.add(step)
            rtol, atol = self._tol(name, None)
            if name in self._seen[lacking]:
                kind = MISSING_AT_STEP if lacking == "candidate" else EXTRA_AT_STEP
                self._note(g, Divergence(step, name, float("nan"), float("nan"), rtol, atol, kind=kind))
                continue
            if lacking == "reference":
                kind = NOT_LOGGED_BY_REFERENCE
            else:
                kind = NOT_LOGGED if name.startswith(LOSS_PREFIXES) else ABSENT_ON_CANDIDATE
            entity = observed_entity(name)
            g.absent.setdefault(entity, kind)
            self.absent.setdefault(entity, Divergence(step, name, float("nan"), float("nan"), rtol, atol, kind=kind))
        self._missing = []

    def absences(self) -> dict[str, list[str]]:
        """Absence kind -> the observed entities absent that way (sorted)."""
        out: dict[str, list[str]] = {}
        for entity, div in sorted(self.absent.items()):
            out.setdefault(str(div.kind), []).append(entity)
        return out

    def rows(self, steps_total: int) -> list[dict[str, Any]]:
        self.settle()
        rows = []
        for name in GROUPS:
            g = self.groups.get(name)
            if g is None or not g.observables:
                continue
            rows.append({
                "group": name,
                "observables": len(g.observables),
                "steps_compared": len(g.steps),
                "verdict": PASS if g.first is None and not g.absent else FAIL,
                "first_divergence_step": None if g.first is None else g.first.step,
                "observable": None if g.first is None else g.first.observable,
                "max_abs": g.max_abs,
                "max_rel": g.max_rel,
                # what the maxima cannot say: the first divergence had no magnitude (digest/shape) and none did
                "difference": g.first.kind if g.first is not None and not g.numeric else None,
                "absent": dict(sorted(g.absent.items())),
            })
        return rows


def _scalars(obs: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in obs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}




@dataclass
class _Side:
    """One trainer in the lock-step run plus what the harness remembers about it.

    Every call into the trainer goes through :meth:`call` / :meth:`guard`, which turn an exception into a
    :class:`~pogo_audit.findings.TrainerCrash` naming this side, the phase (the method) and the current step."""

    iso: IsolatedTrainer
    side: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    step: int | None = None
    #: optimizer observables (:class:`checks.optimizer_observables.OptimizerProbe`) when every side supports them;
    #: the ``grad_leak/*`` digests then go to ``leak`` (a hygiene warning) instead of the compared observables
    probe: Any = None
    leak: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, side: str, factory: Callable[..., Any], config: Any, dataset_spec: Any, seed: int) -> _Side:
        with guarded(side, "factory", None, HARNESS_DIRS):
            return cls(IsolatedTrainer(factory, config, dataset_spec, seed), side)

    def guard(self, phase: str) -> AbstractContextManager[None]:
        return guarded(self.side, phase, self.step, HARNESS_DIRS)

    def call(self, method: str, *args: Any) -> Any:
        with self.guard(method):
            return self.iso.call(method, *args)

    def probe_kind(self) -> str | None:
        from checks.optimizer_observables import probe_kind

        return probe_kind(self.iso.trainer)

    def attach_probe(self) -> None:
        from checks.optimizer_observables import make_probe

        self.probe = make_probe(self.iso.trainer)

    def gradients(self) -> dict[str, Any]:
        """The trainer's ``gradients()`` (a bundle keeps them), {} when it has none."""
        return self.call("gradients") if hasattr(self.iso.trainer, "gradients") else {}

    def observe(self, losses: Mapping[str, Any], full: bool, jax: bool = False, lazy: bool = False
                ) -> dict[str, Any]:
        """The observables after a step (``lazy``: magnitudes as :class:`Deferred`, see :func:`settle_deferred`)."""
        with self.iso.installed() as trainer:
            reads = self._read(trainer)
        return self._observables(losses, full, lazy, *reads)

    def step_and_observe(self, batch: Any, full: bool, lazy: bool = False, compared_only: bool = False
                         ) -> tuple[Any, dict[str, Any]]:
        """``step(batch)``'s output and the observables after it (:meth:`observe`; ``compared_only``: only the
        critic/actor0 losses among them). The trainer's RNG state is swapped in once for the step and the reads
        after it (each swap costs ~0.25 ms, numpy's state alone ~0.1 ms, and would run three times)."""
        with self.iso.installed() as trainer:
            with self.guard("step"):
                out = trainer.step(batch)
            reads = self._read(trainer)
        return out, self._observables(_compared_losses(out) if compared_only else out, full, lazy, *reads)

    def _read(self, trainer: Any) -> tuple[dict[str, np.ndarray], dict[str, Any] | None, dict[str, Any] | None]:
        """``parameters()``, ``rng_digests()`` and ``gradients()`` (those the trainer has), in that order."""
        with self.guard("parameters"):
            params = trainer.parameters()
        rng = grads = None
        if hasattr(trainer, "rng_digests"):
            with self.guard("rng_digests"):
                rng = trainer.rng_digests()
        if hasattr(trainer, "gradients"):
            with self.guard("gradients"):
                grads = trainer.gradients()
        return params, rng, grads

    def _observables(self, losses: Mapping[str, Any], full: bool, lazy: bool, params: dict[str, np.ndarray],
                     rng: Mapping[str, Any] | None, grads: Mapping[str, Any] | None) -> dict[str, Any]:
        self.params = params
        obs: dict[str, Any] = {k: v for k, v in losses.items()}
        obs.update(param_observables(params, lazy))
        if full:
            obs.update({f"params/{k}/full": np.asarray(v) for k, v in params.items()
                        if k.startswith(COMPARED_PARAM_ROLES)})
        obs.update(self.iso.rng_digests())
        if rng is not None:
            obs.update(rng)
        if grads is not None:
            observed = grad_observables(grads, lazy)
            if self.probe is None:
                obs.update(observed)
            else:
                self.leak = observed
        if self.probe is not None:
            obs.update(self.probe.observe(lazy))
        return obs


def parameter_check(reference: Mapping[str, Any], candidate: Mapping[str, Any],
                    ignore: Sequence[str] = ()) -> dict[str, Any]:
    """Canonical names of the compared roles (critic/, actor0/, target/) missing from the candidate, extra on it, and
    of different shape; a name is left out when ``params/<name>`` or ``params/<name>/sum`` matches an ``ignore``
    glob. ``issues`` counts them all."""
    def kept(params: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        return {k: tuple(np.shape(v)) for k, v in params.items() if k.startswith(COMPARED_PARAM_ROLES) and not any(
            fnmatch.fnmatchcase(f"params/{k}", p) or fnmatch.fnmatchcase(f"params/{k}/sum", p) for p in ignore)}

    ref, cand = kept(reference), kept(candidate)
    shape = [{"name": k, "reference": list(ref[k]), "candidate": list(cand[k])}
             for k in ref if k in cand and ref[k] != cand[k]]
    out = {"missing": sorted(set(ref) - set(cand)), "extra": sorted(set(cand) - set(ref)), "shape": shape}
    return {**out, "issues": len(out["missing"]) + len(out["extra"]) + len(shape)}


def candidate_actors(params: Mapping[str, Any]) -> int | None:
    """Actors the candidate exposes: distinct ``actor<i>/`` prefixes of its canonical names (None if none)."""
    found = {k.split("/", 1)[0] for k in params if re.fullmatch(r"actor\d+", k.split("/", 1)[0])}
    return len(found) or None


def _compared_losses(obs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obs.items() if k.startswith(("critic/", "actor0/"))}


def run_equivalence(
    algo: str,
    config: Any,
    dataset_spec: Any,
    buffer: Any,
    reference_factory: Callable[..., Any],
    candidate_factory: Callable[..., Any],
    options: EquivalenceOptions,
    progress: Callable[[int], None] | None = None,
    labels: tuple[str, str] = ("reference", "candidate"),
    batch_size: int = 256,
    chain_oracle: Callable[[Any, Any], Any] | None = None,
    localiser: Localiser | None = None,
) -> CheckResult:
    """Drive reference (twice, for the self-check) and candidate in lock-step; return one CheckResult.

    A trainer that raises (in its factory, ``load_parameters``, a step, ...) ends the run with verdict ``fail`` and
    ``metrics["crash"]`` (:class:`pogo_audit.findings.Crash`); what was compared before the crash is kept.
    ``chain_oracle(trainer, config)`` builds the W2 oracle (default :meth:`ChainOracle.for_trainer`); ``localiser``
    replays a divergent step under tracing (default :data:`TORCH_LOCALISER`)."""
    from checks.reference_worker import process_plan

    device = str(getattr(config, "device", "cpu"))
    plan = process_plan(options, reference_factory, config, dataset_spec, device, algo, threads.budget())
    run = _RunState(t0=time.perf_counter(), plan=plan)
    with torch_determinism(device) as determinism, threads.using(plan.threads):
        try:
            _run_lock_step(algo, config, dataset_spec, buffer, reference_factory, candidate_factory, options,
                           progress, batch_size, chain_oracle, device, run, localiser or TORCH_LOCALISER)
        except TrainerCrash as exc:
            run.crash = exc.crash
        finally:
            if run.pair is not None:
                run.pair.close()
    result = _result(algo, config, options, labels, device, run)
    result.metrics["device"] = device
    if determinism:
        result.metrics["determinism"] = determinism
    return result


@dataclass
class _Judge:
    """One way of judging the candidate (a mode and its comparator) and the first divergence it saw."""

    mode: str
    comp: Comparator
    bundle_info: dict[str, Any] | None = None


def twin_steps(options: EquivalenceOptions, device: str) -> int:
    """How many steps the self-check twin runs (0: every step): ``options.self_check_steps`` on the CPU, every step
    on other devices, where the twin decides whether bitwise comparison holds at all."""
    return options.self_check_steps if device == "cpu" else 0


@dataclass
class _RunState:
    """What the lock-step run has established so far — kept when a trainer crashes, so the result shows it."""

    t0: float
    #: the processes and threads of the run (:class:`checks.reference_worker.ProcessPlan`)
    plan: Any = None
    judges: list[_Judge] = field(default_factory=list)
    self_comp: Comparator | None = None
    stop_comp: Comparator | None = None
    fallback: bool = False
    inconclusive_step: int | None = None
    #: the scalar observables of each side at each compared step (one dict a step; series built by :meth:`history`)
    rows: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"reference": [], "candidate": []})
    steps_done: list[int] = field(default_factory=list)
    parameter_check: dict[str, Any] | None = None
    candidate_actors: int | None = None
    bundle_path: Path | None = None
    crash: Crash | None = None
    #: optimizer probes, gradient hygiene and the evaluation audit (:class:`checks.lockstep_extras.LockStepExtras`)
    extras: Any = None
    #: (group, observed entity, kind) -> the localisation of the step where that finding first showed
    located: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: steps replayed under tracing, and the sets of findings seen at them
    replays: int = 0
    signatures: set[frozenset[tuple[str, ...]]] = field(default_factory=set)
    #: the reference and its twin (:mod:`checks.reference_worker`), closed when the run ends
    pair: Any = None
    #: process role -> the thread counts that process reported once its trainers were built
    thread_counts: dict[str, Any] = field(default_factory=dict)

    def remember(self, step: int, obs_ref: Mapping[str, Any], obs_cand: Mapping[str, Any]) -> None:
        self.steps_done.append(step)
        self.rows["reference"].append(_scalars(obs_ref))
        self.rows["candidate"].append(_scalars(obs_cand))

    def history(self, keep: Callable[[str], bool] = lambda name: True) -> dict[str, dict[str, list[float]]]:
        """side -> observable -> its value at every compared step so far (NaN where that step lacked it), in order
        of first appearance; only the observables ``keep`` accepts."""
        out: dict[str, dict[str, list[float]]] = {}
        for side, rows in self.rows.items():
            series: dict[str, list[float]] = {}
            for i, row in enumerate(rows):
                for name, value in row.items():
                    if name not in series:
                        if not keep(name):
                            continue
                        series[name] = [float("nan")] * len(rows)
                    series[name][i] = value
            out[side] = series
        return out

    def judge(self) -> _Judge:
        """Bitwise unless the device was shown not to be bitwise reproducible for this run."""
        return self.judges[-1] if self.nondeterministic else self.judges[0]

    @property
    def nondeterministic(self) -> bool:
        return self.fallback and self.self_comp is not None and self.self_comp.first is not None


#: at most this many steps are replayed under tracing in one run (each a few seconds)
MAX_LOCALISED = 8
#: groups a training-step replay cannot explain: the evaluation audit locates its own findings (the crash frame)
NOT_LOCALISED = ("evaluation",)


def _snapshot(ref: _Side, cand: _Side) -> tuple[Any, Any] | None:
    """Copies of both trainers before a step (None when a trainer cannot be copied, e.g. it holds an open env)."""
    try:
        return copy.deepcopy(ref.iso), copy.deepcopy(cand.iso)
    except Exception:  # noqa: BLE001 - a trainer that cannot be deep-copied is simply not localised
        return None


def _localise_torch(snapshot: tuple[Any, Any], batch: Any) -> Any:
    from checks.localise import localise_step

    return localise_step(snapshot[0], snapshot[1], batch)


@dataclass(frozen=True)
class Localiser:
    """How a run replays a divergent step under tracing: ``snapshot(reference, candidate)`` takes what the replay
    needs from both sides (:class:`_Side`) before every step (None: it cannot), ``localise(snapshot, batch)`` returns
    a :class:`checks.localise.Localisation`; ``construction`` says whether a difference present right after
    construction can be located by replaying both factories under tracing (PyTorch)."""

    snapshot: Callable[[Any, Any], Any]
    localise: Callable[[Any, Any], Any]
    construction: bool = False


#: PyTorch: copies of both trainers, replayed by :func:`checks.localise.localise_step`
TORCH_LOCALISER = Localiser(_snapshot, _localise_torch, construction=True)


def _traced(localise: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``localise(*args).as_dict()``, or a localisation saying why it failed (tracing failing must not cost the run
    its verdict)."""
    try:
        return localise(*args).as_dict()
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return {"kind": "none", "message": f"localisation failed: {type(exc).__name__}: {exc}", "frames": []}


def _localise_construction(run: _RunState, comp: Comparator, factories: tuple[Callable[..., Any], Callable[..., Any]],
                           config: Any, dataset_spec: Any, seed: int) -> None:
    """Findings present right after construction (step 0) are located by replaying both constructions under
    tracing (:func:`checks.localise.engine.localise_construction`)."""
    from checks.localise.engine import localise_construction

    new = [k for k, f in comp.findings.items() if f["first_step"] == 0 and k[0] not in NOT_LOCALISED]
    if new:
        run.replays += 1
        found = _traced(localise_construction, *factories, config, dataset_spec, seed)
        for key in new:
            run.located[key] = found


def _localise_new(run: _RunState, comp: Comparator, step: int, snapshot: Any, batch: Any,
                  localise: Callable[[Any, Any], Any]) -> None:
    """Replay ``step`` from ``snapshot`` under tracing when a finding showed for the first time at it, or the set of
    findings at it was not seen at a replayed step (a defect acting only at some steps, e.g. inside a delayed actor
    update, hides behind the findings of another one), and attach the located lines to the findings of this step."""
    from checks.localise import merge_more

    here = frozenset(k for k, f in comp.findings.items() if step in f["steps"] and k[0] not in NOT_LOCALISED)
    new = [k for k in here if comp.findings[k]["first_step"] == step and k not in run.located]
    # which losses only one side logged belongs to the step's signature: a block one side runs on other steps
    # than the other (an actor update due on other steps) leaves the same set of differing observables
    signature = here | frozenset(comp.lacking_at_step)
    if not new and (not here or signature in run.signatures):
        return
    run.replays += 1
    run.signatures.add(signature)
    found = _traced(localise, snapshot, own_copy(batch))
    for key in new:
        run.located[key] = found
    for key in here - set(new):
        if key in run.located:
            run.located[key] = merge_more(run.located[key], found)


def _run_lock_step(algo: str, config: Any, dataset_spec: Any, buffer: Any, reference_factory: Callable[..., Any],
                   candidate_factory: Callable[..., Any], options: EquivalenceOptions,
                   progress: Callable[[int], None] | None, batch_size: int,
                   chain_oracle: Callable[[Any, Any], Any] | None, device: str, run: _RunState,
                   localiser: Localiser) -> None:
    from checks.chain_oracle import ChainOracle
    from checks.lockstep_extras import LockStepExtras
    from checks.reference_worker import CAND_FACTORY, reference_pair

    seed = options.seed
    fallback = options.tolerance_fallback
    if fallback is None:
        fallback = device.startswith("cuda")
    run.fallback = fallback = bool(fallback) and options.mode == "bitwise" and options.self_check
    judges = run.judges
    judges.append(_Judge(options.mode, Comparator(options.mode, options.rtol, options.atol, options.group_tolerances,
                                                  options.ignore)))
    run.self_comp = self_comp = Comparator("bitwise", 0.0, 0.0)
    # with the fallback, only a twin that differs beyond the tolerance makes the run inconclusive
    stop_comp = self_comp
    if fallback:
        judges.append(_Judge("tolerance", Comparator("tolerance", options.rtol, options.atol, ignore=options.ignore)))
        stop_comp = Comparator("tolerance", options.rtol, options.atol)
    run.stop_comp = stop_comp

    run.pair = pair = reference_pair(options, reference_factory, config, dataset_spec, device, run.plan)
    ref, twin = pair.ref, getattr(pair, "twin", None)
    try:
        cand = _Side.build("candidate", candidate_factory, config, dataset_spec, seed)
    except TrainerCrash:
        pair.built(below=CAND_FACTORY)
        raise
    ref_params, ref_rng = pair.built()
    run.thread_counts = {"candidate" if pair.threads() else "candidate+reference": threads.report(),
                         **pair.threads()}
    cand_params = cand.call("parameters")
    run.parameter_check = parameter_check(ref_params, cand_params, options.ignore)
    run.candidate_actors = candidate_actors(cand_params)
    if options.sync_init:
        cand.call("load_parameters", {k: v for k, v in ref_params.items() if k.startswith(COMPARED_PARAM_ROLES)})
        cand.iso.rng = copy.deepcopy(ref_rng)
    oracle = None
    if options.chain_oracle:
        with cand.guard("policies"):
            oracle = (chain_oracle or ChainOracle.for_trainer)(cand.iso.trainer, config)
    run.extras = extras = LockStepExtras(options, ref, twin, cand)

    def self_check(step: int, obs_ref: Mapping[str, Any], obs_twin: Mapping[str, Any]) -> bool:
        """Compare the twin; True when the run is inconclusive from this step on."""
        diverged = self_comp.compare(step, obs_ref, obs_twin)
        if stop_comp is not self_comp:
            diverged = stop_comp.compare(step, obs_ref, obs_twin)
        return bool(diverged)

    pair.submit(0, None, True)
    crash = None
    try:
        obs_cand = cand.observe({}, full=True)
    except TrainerCrash as exc:
        crash = exc
    obs_ref, obs_twin = pair.collect(crash)  # raises the first crash in the serial order
    if obs_twin is not None and self_check(0, obs_ref, obs_twin):
        run.inconclusive_step = 0
    for judge in judges:
        diverged = judge.comp.compare(0, obs_ref, obs_cand)
        if diverged:
            judge.bundle_info = {"step": 0, "batch": [], "before": ({}, {}), "obs": (obs_ref, obs_cand),
                                 "after": (dict(ref.params), dict(cand.params)), "diverged": diverged}
    run.remember(0, obs_ref, obs_cand)

    localise = options.isolate if options.localise is None else options.localise
    if localise and localiser.construction:
        _localise_construction(run, judges[0].comp, (reference_factory, candidate_factory), config, dataset_spec,
                               seed)
    for step in range(1, options.steps + 1):
        if run.inconclusive_step is not None:
            break
        cand.step = step
        if options.isolate:
            isolate(ref, cand)
            cand.params = dict(ref.params)
        snapshot = localiser.snapshot(ref, cand) if localise and run.replays < MAX_LOCALISED else None
        batch = buffer.sample(batch_size)
        before = (ref.params, cand.params)  # every observation binds a new dict: these stay the pre-step ones
        pre_policies = None
        every = options.oracle_every
        oracle_due = oracle is not None and (every <= 1 or step <= every or step % every == 0 or step == options.steps)
        if oracle_due:
            with cand.guard("policies"):
                pre_policies = oracle.snapshot()
        full = step % options.full_every == 0 or step == options.steps
        given = batch_digest(batch)
        pair.submit(step, batch, full)
        cand_batch = own_copy(batch)
        crash = None
        try:
            cand_out, obs_cand = cand.step_and_observe(cand_batch, full, lazy=True)
        except TrainerCrash as exc:
            crash = exc
        obs_ref, obs_twin = pair.collect(crash)
        settle_deferred(obs_ref, obs_cand)
        if cand.leak:
            settle_deferred(ref.leak or {}, cand.leak)
        if obs_twin is None:
            extras.twin = None  # no twin (any more): the evaluation audit no longer drives it
        obs_ref[BATCH_OBSERVABLE] = UNCHANGED
        obs_cand[BATCH_OBSERVABLE] = UNCHANGED if batch_digest(cand_batch) == given else MUTATED
        if obs_twin is not None and self_check(step, obs_ref, obs_twin):
            run.inconclusive_step = step
        tolerances = {}
        if oracle_due:
            with cand.guard("policies"):
                chain_ref, chain_cand, tolerances = oracle.check(pre_policies, batch, cand_out)
            obs_ref.update(chain_ref)
            obs_cand.update(chain_cand)
        extras.after_step(step, obs_ref, obs_cand)
        diverged_by = [judge.comp.compare(step, obs_ref, obs_cand, tolerances) for judge in judges]
        run.remember(step, obs_ref, obs_cand)
        if snapshot is not None and diverged_by[0]:
            _localise_new(run, judges[0].comp, step, snapshot, batch, localiser.localise)
        for judge, diverged in zip(judges, diverged_by):
            if diverged and judge.bundle_info is None:
                judge.bundle_info = {
                    "step": step, "batch": batch, "before": tuple(dict(p) for p in before),
                    "after": (dict(ref.params), dict(cand.params)), "obs": (obs_ref, obs_cand), "diverged": diverged,
                    "grads": (ref.gradients(), cand.gradients())}
                if options.bundle_dir and not fallback:  # with the fallback the mode is known only at the end
                    run.bundle_path = _write(options, algo, config, judge.bundle_info, run.history(),
                                             run.steps_done, judge.comp, judge.mode)
        if progress is not None:
            progress(step)

    judge = run.judge()
    if judge.bundle_info is not None and options.bundle_dir:
        run.bundle_path = _write(options, algo, config, judge.bundle_info, run.history(), run.steps_done,
                                 judge.comp, judge.mode)


def _divergence_gap(d: Divergence) -> str:
    """"max abs 0.1, max rel 0.2", or what the divergence is when it has no magnitude ("digest differs")."""
    if d.kind:
        return d.kind
    return "digest differs" if np.isnan(d.max_abs) else f"max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}"


def _findings_text(comp: Comparator, check: Mapping[str, Any] | None) -> str:
    """The first divergence, absences and parameter-check mismatches in one clause ("" when there are none)."""
    parts = []
    if comp.first is not None:
        d = comp.first
        parts.append(f"first divergence at step {d.step} in {d.observable} ({_divergence_gap(d)})")
    for kind, entities in comp.absences().items():
        shown = ", ".join(entities[:3]) + (f" and {len(entities) - 3} more" if len(entities) > 3 else "")
        parts.append(f"{kind}: {shown}")
    if check and check["issues"]:
        parts.append(f"parameter check: {parameter_check_text(check)}")
    return "; ".join(parts)


def _own_optimizer_first(finding: Mapping[str, Any], loc: dict[str, Any]) -> dict[str, Any]:
    """An optimizer-state finding (``optim/<label>``) is located first at a learning-rate schedule difference of that
    same optimizer when the step's localisation names one (the step's first differing operation is then kept as a
    further line): a skipped schedule step changes no tensor in its step, only that optimizer's next learning rate."""
    more = loc.get("more") or []
    own = next((m for m in more if finding["group"] == "optimizer" and m.get("optimizer") is not None
                and finding["observable"] == f"optim/{m['optimizer']}"), None)
    if own is None:
        return loc
    frames = loc.get("frames") or []
    first = [{"message": loc["message"], "frame": frames[0]}] if frames else []
    return {**loc, "kind": "order", "message": own["message"], "frames": [own["frame"]],
            "more": first + [m for m in more if m is not own]}


def located_findings(comp: Comparator, located: Mapping[tuple[str, str, str], dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """Every distinct finding with, where its first step was replayed under tracing, the located candidate line."""
    out = []
    for f in comp.distinct():
        loc = located.get((f["group"], f["observable"], f["kind"]))
        row = dict(f)
        if loc is not None:
            loc = _own_optimizer_first(f, loc)
            frames = loc.get("frames") or []
            row["location"] = ({"path": frames[0]["file"], "line": frames[0]["line"],
                                "function": frames[0]["function"], "code": frames[0]["code"]} if frames else None)
            row["localisation"] = {"kind": loc.get("kind"), "message": loc.get("message")}
            row["also"] = [{"path": m["frame"]["file"], "line": m["frame"]["line"], "function": m["frame"]["function"],
                            "code": m["frame"]["code"], "message": m["message"]} for m in loc.get("more") or []]
        out.append(row)
    return out


def _result(algo: str, config: Any, options: EquivalenceOptions, labels: tuple[str, str], device: str,
            run: _RunState) -> CheckResult:
    """The verdict, summary and metrics of a run — finished, inconclusive or ended by a crash."""
    judge = run.judge()
    comp, mode = judge.comp, judge.mode
    comp.settle()
    rows = comp.rows(options.steps)
    why = ""
    if run.nondeterministic:
        d = run.self_comp.first
        why = (f"; tolerance mode because the reference is not bitwise reproducible on {device} (two runs differ at "
               f"step {d.step} in {d.observable})")
    findings = _findings_text(comp, run.parameter_check)
    first = comp.first or next(iter(comp.absent.values()), None)
    if run.crash is not None:
        verdict = FAIL
        c = run.crash
        if first is None:  # nothing diverged before: the crash is where the runs part (consumers need a step)
            first = Divergence(c.step if c.step is not None else 0, f"crash/{c.side}/{c.phase}", float("nan"),
                               float("nan"), comp.rtol, comp.atol, kind="crash")
        context = ""
        if c.phase == "load_parameters" and run.parameter_check and run.parameter_check["issues"]:
            context = f" (parameter check: {parameter_check_text(run.parameter_check)})"
        compared = f"{max(run.steps_done)} step(s) compared" if run.steps_done else "nothing compared"
        summary = f"{c.line()}{context}; before the crash: {compared}" + (f", {findings}" if findings else
                                                                          ", no divergence")
    elif run.inconclusive_step is not None:
        verdict = INCONCLUSIVE
        d = run.stop_comp.first
        beyond = " beyond the tolerance" if run.stop_comp is not run.self_comp else ""
        summary = (f"inconclusive: reference is nondeterministic (two runs differ{beyond} at step {d.step} in "
                   f"{d.observable})")
        first = d
    elif findings:
        verdict = FAIL
        summary = f"not equivalent: {findings}{why}"
    else:
        verdict = PASS
        summary = f"{labels[1]} is equivalent to {labels[0]} over {options.steps} steps ({mode}){why}"
    if not options.self_check:
        self_check_state = "off"
    elif run.inconclusive_step is not None:
        self_check_state = "nondeterministic"
    elif run.crash is not None and not run.steps_done:
        self_check_state = "not run (crash)"
    else:
        self_check_state = "pass (within tolerance, not bitwise)" if run.nondeterministic else "pass"
    history = run.history(lambda name: name.startswith(LOSS_PREFIXES))
    metrics: dict[str, Any] = {
        "mode": mode,
        "rtol": comp.rtol,
        "atol": comp.atol,
        "actors": getattr(config, "num_actors", None),
        "candidate_actors": run.candidate_actors,
        "seed": options.seed,
        "bundle": str(run.bundle_path) if run.bundle_path else None,
        "reference": labels[0],
        "candidate": labels[1],
        "self_check": self_check_state,
        "self_check_steps": 0 if not options.self_check else min(twin_steps(options, device) or options.steps,
                                                                  options.steps),
        "parameter_check": run.parameter_check,
        "absent": comp.absences(),
        "ignored": {"patterns": list(options.ignore), "observables": sorted(comp.ignored)},
        "history": {"steps": run.steps_done, **{f"{side}/{k}": v for side in history for k, v in
                                                 history[side].items()}},
    }
    if run.plan is not None:
        metrics["threads"] = {"budget": run.plan.budget, "processes": run.plan.processes,
                              "per_process": run.plan.threads,
                              "twin_in_reference_worker": run.plan.twin_in_reference_worker,
                              "reported": run.thread_counts}
    if run.crash is not None:
        metrics["crash"] = run.crash.to_dict()
    if options.isolate or run.located:
        distinct = located_findings(comp, run.located)
        metrics["isolate"] = options.isolate
        metrics["findings"] = distinct
        located = [f for f in distinct if f.get("location")]
        if located:
            metrics["candidate_location"] = located[0]["location"]
        if verdict == FAIL and distinct:
            lines = sorted({f"{loc['path']}:{loc['line']}" for f in located for loc in [f["location"], *f["also"]]})
            summary += (f"; {len(distinct)} distinct finding(s)" +
                        (f", located at {', '.join(lines[:6])}" if lines else ""))
    result = CheckResult(
        check="equivalence",
        subject=algo,
        verdict=verdict,
        steps_compared=max(run.steps_done) if run.steps_done else 0,
        summary=summary,
        first_divergence=first if verdict != PASS else None,
        metrics=metrics,
        details=rows,
        seconds=time.perf_counter() - run.t0,
    )
    return run.extras.finish(result) if run.extras is not None else result


# ------------------------------------------------------------------------------------------------ cross-device

#: the cross-device tolerance of a group is this many times the largest float32 drift measured for it
DRIFT_FACTOR = 10.0
#: observable groups whose cross-device tolerance is derived from the measured drift (digests stay exact)
DRIFT_GROUPS = ("critic losses", "actor0 losses", "critic params", "target params", "actor0 params", "grad leak",
                "optimizer", "gradients used")
_MEASURE_ONLY = 1e300


def on_device(factory: Callable[..., Any], device: str, cpu_draws: bool) -> Callable[..., Any]:
    """``factory`` building its trainer on ``device`` (and, with ``cpu_draws``, drawing its global-stream random
    numbers on the CPU generator, see :func:`pogo_audit.harness.cpu_drawn_randomness`)."""
    from pogo_audit.harness import CPUDrawnTrainer

    def build(config: Any, dataset_spec: Any, seed: int) -> Any:
        trainer = factory(dataclasses.replace(config, device=device), dataset_spec, seed)
        return CPUDrawnTrainer(trainer) if cpu_draws else trainer

    return build


def cross_device_equivalence(algo: str, config: Any, dataset_spec: Any, make_buffer: Callable[[], Any],
                             reference_factory: Callable[..., Any], candidate_factory: Callable[..., Any],
                             options: EquivalenceOptions, devices: tuple[str, str],
                             progress: Callable[[int], None] | None = None,
                             labels: tuple[str, str] = ("reference", "candidate"), batch_size: int = 256
                             ) -> CheckResult:
    """Reference on ``devices[0]`` vs candidate on ``devices[1]`` (e.g. ``("cpu", "cuda")``).

    Every global-stream draw of the candidate-device trainers is made on the CPU generator, so generator differences
    cannot pass for a bug. First the reference is run on both devices (same batches, same draws) to measure the
    float32 drift of every observable group; then the candidate is judged in tolerance mode with, per group,
    ``atol = DRIFT_FACTOR × measured max |diff|`` (at least the default atol) and the default rtol. RNG digests stay
    exact: if the reference's two runs differ there, the draws could not be shared and the result is inconclusive.
    ``make_buffer()`` gives a fresh buffer that samples the same batches each time.
    """
    ref_device, cand_device = devices
    config = dataclasses.replace(config, device=cand_device)
    reference = on_device(reference_factory, ref_device, cpu_draws=False)
    calibration = dataclasses.replace(options, mode="tolerance", rtol=_MEASURE_ONLY, atol=_MEASURE_ONLY,
                                      self_check=False, chain_oracle=False, bundle_dir=None, group_tolerances=None)
    drift_run = run_equivalence(algo, config, dataset_spec, make_buffer(), reference,
                                on_device(reference_factory, cand_device, cpu_draws=True), calibration,
                                labels=(f"reference on {ref_device}", f"reference on {cand_device}"),
                                batch_size=batch_size)
    drift = {r["group"]: {"max_abs": r["max_abs"], "max_rel": r["max_rel"]} for r in drift_run.details}
    info: dict[str, Any] = {"reference_device": ref_device, "candidate_device": cand_device,
                            "drift_factor": DRIFT_FACTOR, "measured_drift": drift}
    if drift_run.verdict != PASS:
        d = drift_run.first_divergence
        where = f" ({d.observable} differs at step {d.step})" if d is not None else f" ({drift_run.summary})"
        return CheckResult(check="equivalence", subject=algo, verdict=INCONCLUSIVE,
                           steps_compared=drift_run.steps_compared, first_divergence=d,
                           summary=f"inconclusive: the reference on {ref_device} and on {cand_device} do not share "
                                   f"their random draws{where}, so no cross-device tolerance can be derived",
                           metrics={"mode": "tolerance", "cross_device": info, "reference": labels[0],
                                    "candidate": labels[1], "device": cand_device},
                           details=drift_run.details, seconds=drift_run.seconds)
    tolerances = {g: (DEFAULT_RTOL, max(DEFAULT_ATOL, DRIFT_FACTOR * drift[g]["max_abs"]))
                  for g in DRIFT_GROUPS if g in drift}
    info["tolerances"] = {g: {"rtol": r, "atol": a} for g, (r, a) in tolerances.items()}
    judged = dataclasses.replace(options, mode="tolerance", group_tolerances=tolerances, tolerance_fallback=False)
    result = run_equivalence(algo, config, dataset_spec, make_buffer(), reference,
                             on_device(candidate_factory, cand_device, cpu_draws=True), judged, progress,
                             labels, batch_size)
    result.metrics["cross_device"] = info
    widest = max(tolerances.items(), key=lambda kv: kv[1][1]) if tolerances else None
    if widest is not None:
        result.summary += (f"; {ref_device} vs {cand_device} with shared random draws, tolerance per group = "
                           f"{DRIFT_FACTOR:g} × the measured float32 drift of the reference (widest: {widest[0]} "
                           f"atol {widest[1][1]:.2g})")
    return result


def _write(options: EquivalenceOptions, algo: str, config: Any, info: dict[str, Any],
           history: dict[str, dict[str, list[float]]], steps_done: list[int], comp: Comparator, mode: str) -> Path:
    arrays: dict[str, np.ndarray] = {}
    batch = info["batch"]
    for i, t in (batch.items() if isinstance(batch, Mapping) else enumerate(batch)):
        arrays[f"batch/{i}"] = np.asarray(t)
    for side, params in zip(("reference", "candidate"), info["before"]):
        for k, v in params.items():
            arrays[f"before/{side}/{k}"] = np.asarray(v)
    for side, params in zip(("reference", "candidate"), info["after"]):
        for k, v in params.items():
            arrays[f"after/{side}/{k}"] = np.asarray(v)
    for side, grads in zip(("reference", "candidate"), info.get("grads", ({}, {}))):
        for k, v in grads.items():
            arrays[f"grads/{side}/{k}"] = np.asarray(v)
    arrays["history/steps"] = np.asarray(steps_done, dtype=np.int64)
    for side, series in history.items():
        for k, v in series.items():
            arrays[f"history/{side}/{k}"] = np.asarray(v, dtype=np.float64)
    first = comp.first
    obs_ref, obs_cand = info["obs"]
    header = {
        "algo": algo,
        "step": info["step"],
        "first_divergence": None if first is None else {**first.__dict__},
        "divergent_observables": info["diverged"],
        "observables": {
            "reference": {k: v for k, v in obs_ref.items() if not isinstance(v, np.ndarray)},
            "candidate": {k: v for k, v in obs_cand.items() if not isinstance(v, np.ndarray)},
        },
        "config": config.to_dict() if hasattr(config, "to_dict") else repr(config),
        "environment": environment_info(),
        "mode": mode,
    }
    out = Path(options.bundle_dir) / f"{algo}-step{info['step']}.npz"
    return write_bundle(out, Bundle(header, arrays))


def load_factory(spec: str, option: str) -> Callable[..., Any]:
    """``pkg.module:factory`` → a factory that checks what it builds against the Trainer protocol (it pickles as its
    spec, so a worker process loads the same factory)."""
    from pogo_audit.loading import import_callable

    return CheckedFactory(import_callable(spec, option, "examples.pogo_adapter:factory"), spec, option, True)


PROTOCOL_METHODS = ("step", "parameters", "load_parameters")


@dataclass(frozen=True)
class CheckedFactory:
    """``factory`` whose trainer must have the protocol methods (else a usage error naming ``option``). What the
    factory itself raises is the trainer's defect: the harness reports it as a crash in phase "factory".
    ``from_spec``: loaded from ``spec`` by :func:`load_factory`, and pickled as that spec."""

    factory: Callable[..., Any]
    spec: str
    option: str
    from_spec: bool = False

    def __call__(self, config: Any, dataset_spec: Any, seed: int) -> Any:
        from pogo_audit.errors import UsageError

        trainer = self.factory(config, dataset_spec, seed)
        missing = [m for m in PROTOCOL_METHODS if not callable(getattr(trainer, m, None))]
        if missing:
            raise UsageError(f"{self.option}: trainer from {self.spec} lacks protocol method(s) {', '.join(missing)} "
                             f"(needs step, parameters, load_parameters)")
        return trainer

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.from_spec:
            return load_factory, (self.spec, self.option)
        return CheckedFactory, (self.factory, self.spec, self.option, False)


def _checked_factory(factory: Callable[..., Any], spec: str, option: str) -> Callable[..., Any]:
    """:class:`CheckedFactory` of an already loaded ``factory``."""
    return CheckedFactory(factory, spec, option)


def equivalence_for_algo(algo: str, config: Any, options: EquivalenceOptions,
                         reference: tuple[str, Callable[..., Any]] | None = None,
                         candidate: tuple[str, Callable[..., Any]] | None = None,
                         progress: Callable[[int], None] | None = None,
                         devices: tuple[str, str] | None = None) -> CheckResult:
    """Equivalence on ``config.dataset`` with the base algorithm's preprocessing; defaults compare our reference
    with our multi-actor trainer. A trainer that raises yields verdict ``fail`` with ``metrics["crash"]``; an
    exception outside any trainer call (the harness's own failure) yields verdict ``error`` (:func:`harness_error`).
    ``devices`` = (reference device, candidate device) runs :func:`cross_device_equivalence`."""
    from multi_actor.algorithms import get_algorithm
    from multi_actor.loop import prepare_data
    from multi_actor.trainer import multi_actor_factory, reference_factory
    from pogo_audit.data import ReplayBuffer
    from pogo_audit.errors import PogoAuditError
    from pogo_audit.seeding import BUFFER_OFFSET, derived_seed

    _warm_up_workers(options, str(getattr(config, "device", "cpu")))
    algorithm = get_algorithm(algo)
    data = prepare_data(config, algorithm)
    def make_buffer() -> ReplayBuffer:
        return ReplayBuffer(data.processed, derived_seed(options.seed, BUFFER_OFFSET))

    batch_size = options.batch_size or algorithm.batch_size(algorithm.base_config(config.base))
    ref_label, ref_factory = reference or ("reference_algos (CORL-faithful)", reference_factory)
    cand_label, cand_factory = candidate or ("multi_actor.MultiActorTrainer", multi_actor_factory)
    t0 = time.perf_counter()
    try:
        if devices is not None:
            return cross_device_equivalence(algo, config, data.spec, make_buffer, ref_factory, cand_factory, options,
                                            devices, progress, (ref_label, cand_label), batch_size)
        return run_equivalence(algo, config, data.spec, make_buffer(), ref_factory, cand_factory, options, progress,
                               (ref_label, cand_label), batch_size)
    except PogoAuditError:
        raise
    except Exception as exc:  # not a trainer call (those are crash findings): the harness itself failed
        return harness_error(algo, exc, (ref_label, cand_label), options.mode, time.perf_counter() - t0)


def _warm_up_workers(options: EquivalenceOptions, device: str) -> None:
    """Start the reference workers' fork server now when the run will want it: it imports torch in the background
    while this process imports it, prepares the data and builds the candidate (idempotent)."""
    from checks.reference_worker import wants_worker

    if wants_worker(options, device) and (threads.budget() >= 2 or options.concurrent):
        from checks.workers import warm_up

        warm_up()


def harness_error(algo: str, exc: Exception, labels: tuple[str, str], mode: str, seconds: float) -> CheckResult:
    """Verdict ``error``: the run failed outside any trainer call; says what raised where (never a traceback)."""
    from pogo_audit.findings import describe
    from pogo_audit.results import ERROR

    info = describe(exc, "harness", "run", None)
    return CheckResult(check="equivalence", subject=algo, verdict=ERROR,
                       summary=f"the equivalence harness raised {info.type}: {info.message} at {info.location()}",
                       metrics={"reference": labels[0], "candidate": labels[1], "mode": mode,
                                "error": info.to_dict()},
                       seconds=seconds)


def equivalence(algo: str, config: Any, options: EquivalenceOptions,
                reference: tuple[str, Callable[..., Any]] | None = None,
                candidate: tuple[str, Callable[..., Any]] | None = None,
                progress: Callable[[int], None] | None = None,
                devices: tuple[str, str] | None = None) -> CheckResult:
    """Equivalence of ``algo`` in the framework the algorithm registry gives it (PyTorch or JAX)."""
    from multi_actor import registry
    from pogo_audit.errors import UsageError

    if registry.algorithm(algo).framework == "jax":
        if devices is not None:
            raise UsageError(f"--reference-device/--candidate-device: PyTorch algorithms only, not {algo}")
        from checks.equivalence_jax import equivalence_for_rebrac  # imports jax

        return equivalence_for_rebrac(config, options, reference, candidate, progress=progress)
    return equivalence_for_algo(algo, config, options, reference, candidate, progress=progress, devices=devices)


def command_config(args: Any, algo: str) -> Any:
    """The multi-actor config of ``algo`` from the command's ``--config``/``--set``/``--actor-types``/... options."""
    from multi_actor.config import build_config

    overrides = [*args.set, *([f"w2_method={args.w2_method}"] if args.w2_method else [])]
    types = [t.strip() for t in args.actor_types.split(",") if t.strip()] if args.actor_types else None
    return build_config(args.config, overrides, types, algo=algo, num_actors=args.actors, dataset=args.dataset,
                        seed=args.seed, device=args.device)


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[CheckResult]:
    """``pogo-audit equivalence``: every selected algorithm (configs and factories validated before the first run)."""
    from multi_actor import registry

    algos = list(registry.names()) if args.algo == "all" else [args.algo]
    options = EquivalenceOptions(steps=args.steps, seed=args.seed if args.seed is not None else 0, mode=args.mode,
                                 rtol=args.rtol, atol=args.atol, full_every=args.full_every,
                                 self_check=not args.no_self_check, self_check_steps=args.self_check_steps,
                                 bundle_dir=args.bundle_dir,
                                 sync_init=args.sync_init, ignore=tuple(args.ignore), eval_every=args.eval_every,
                                 eval_episodes=args.eval_episodes, isolate=args.isolate,
                                 oracle_every=args.oracle_every)
    if registry.algorithm(algos[0]).framework == "torch":
        _warm_up_workers(options, args.device or "cpu")  # before this process imports torch
    reference = (args.reference, load_factory(args.reference, "--reference")) if args.reference else None
    candidate = (args.candidate, load_factory(args.candidate, "--candidate")) if args.candidate else None
    configs = {a: command_config(args, a) for a in algos}
    devices = None
    if args.reference_device or args.candidate_device:
        devices = (args.reference_device or configs[algos[0]].device,
                   args.candidate_device or configs[algos[0]].device)
    for algo in algos:
        yield equivalence(algo, configs[algo], options, reference, candidate,
                          progress=lambda t, algo=algo: progress(f"equivalence {algo}", t, args.steps),
                          devices=devices)


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: every audited algorithm, through the candidate's adapter where one is given (those results are
    tagged ``audited: candidate``; the JAX algorithm has no external trainer and is then not audited)."""
    from multi_actor import registry
    from multi_actor.config import build_config
    from pogo_audit.errors import UsageError

    out = []
    for algo in opts.algos:
        torch_algo = registry.algorithm(algo).framework == "torch"  # --reference/--candidate are PyTorch trainers
        candidate = opts.candidate_for(algo) if torch_algo else None
        if opts.external and candidate is None:
            continue
        say(f"equivalence {algo}")
        cfg = build_config(None, [], algo=algo, seed=opts.seed, device=opts.device if torch_algo else None)
        options = EquivalenceOptions(steps=opts.steps, seed=opts.seed, bundle_dir=opts.bundle_dir,
                                     concurrent=opts.concurrent)
        if candidate is not None:  # the candidate's evaluation is part of its review: audit it halfway and at the end
            options = dataclasses.replace(options, eval_every=max(1, opts.steps // 2))
        try:
            result = equivalence(algo, cfg, options, opts.reference if torch_algo else None, candidate)
        except UsageError as exc:
            if not str(exc).startswith("--eval-every") or not options.eval_every:
                raise
            result = equivalence(algo, cfg, dataclasses.replace(options, eval_every=0),
                                 opts.reference if torch_algo else None, candidate)
            result.metrics.setdefault("notes", []).append("evaluation not audited: the adapter has no "
                                                          "evaluate(seed, episodes)")
        result.metrics["audited"] = "candidate" if candidate is not None else "self"
        out.append(result)
    return out
