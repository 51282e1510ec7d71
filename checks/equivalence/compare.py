"""Judging two observable dicts step by step (:class:`Comparator`: per-group statistics, the first divergence, the
distinct findings, absences), and the parameter pre-check run before anything steps."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks.equivalence.observables import (
    ABSENT_ON_CANDIDATE,
    BATCH_OBSERVABLE,
    EXTRA_AT_STEP,
    GROUPS,
    MISSING_AT_STEP,
    NOT_LOGGED,
    NOT_LOGGED_BY_REFERENCE,
    finding_kind,
    finding_subject,
    group_of,
    numbers,
    observed_entity,
)
from pogo_audit.core.compare import compare_arrays, compare_scalar
from pogo_audit.model.protocol import COMPARED_PARAM_ROLES, LOSS_PREFIXES
from pogo_audit.model.results import FAIL, PASS, Divergence


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
        numeric = (numbers(expected), numbers(actual))
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
