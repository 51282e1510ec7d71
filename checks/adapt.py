"""Adapter help: propose the canonical-name mapping of a candidate trainer from its module structure.

``pogo-audit adapt --algo A --candidate MOD:FACTORY`` builds our reference trainer for ``A`` and the candidate
object (whatever the factory returns: the user's own trainer or an adapter around it), then matches every reference
module (``critic/qf``, ``actor0/actor``, ``target/q_target``, a bare tensor such as ``critic/log_alpha``) to a
candidate module whose parameter shapes, in registration (``state_dict``) order, are the same. Names never matter for
the match, so every layout of the reference networks (``net.net.*``, ``net.*``, ``base_network.*``, ``_mlp.*``,
``trunk.*`` + ``mu`` + ``log_sigma``, ...) maps onto any layout of the user's.

Ties between candidates with the same shapes (twin critics, a network and its target, the extra actors) are broken,
in this order, by initial values equal to the reference's (both sides are built from the same seed, so a faithful
initialisation gives bitwise-equal tensors), by the name (``targ`` for target roles), then by registration order;
every tie is reported. A reference module with no single match may match consecutive candidate modules (a twin
critic the user keeps as two networks). When the candidate has ``step(batch)``, one synthetic batch through both
sides proposes the log-key mapping by equal values.

Returns data (:class:`Proposal`); the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

#: how deep the attribute walk goes through plain objects (adapter -> user trainer -> container -> module)
WALK_DEPTH = 4
#: reference steps run to collect the algorithm's log keys (TD3+BC logs its actor loss every second step)
LOG_STEPS = 2
LOG_BATCH = 32
LOG_SEED = 1234


@dataclass(frozen=True)
class Tensor:
    """One tensor of a module: its ``state_dict`` key (``""`` for a bare tensor), shape and initial values."""

    key: str
    shape: tuple[int, ...]
    values: np.ndarray


@dataclass
class Unit:
    """A module (or bare tensor) on one side: its name (canonical prefix or attribute path) and its tensors."""

    name: str
    tensors: list[Tensor]
    order: int = 0
    ids: frozenset[int] = frozenset()

    @property
    def signature(self) -> tuple[tuple[int, ...], ...]:
        return tuple(t.shape for t in self.tensors)


@dataclass
class ModuleMatch:
    """One reference module and the candidate module(s) proposed for it."""

    reference: str
    candidates: list[str]
    tensors: int
    values_equal: bool
    #: how the candidate was chosen among equal-shaped ones; empty when there was no tie
    tie: str = ""
    #: the tie was decided by registration order alone: check it
    ambiguous: bool = False
    composite: bool = False


@dataclass
class Proposal:
    """Everything ``adapt`` proposes: the mapping, what is ambiguous and what is left unmatched."""

    algo: str
    candidate: str
    modules: list[ModuleMatch]
    #: candidate ``"<attribute path>/<state_dict key>"`` -> canonical name
    mapping: dict[str, str]
    unmatched_reference: list[str]
    unmatched_candidate: list[str]
    #: candidate module path -> ``actor<i>`` (leftover modules shaped like actor0)
    extra_actors: dict[str, str]
    reference_log_keys: list[str]
    #: candidate log key -> reference log key (equal values on a synthetic batch)
    log_mapping: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every reference tensor got a candidate tensor."""
        return not self.unmatched_reference


# ------------------------------------------------------------------------------------------------- discovery


def reference_units(parameters: Mapping[str, np.ndarray]) -> list[Unit]:
    """Canonical parameters grouped by ``<role>/<module>`` in their order (a bare tensor is its own unit)."""
    units: dict[str, Unit] = {}
    for name, value in parameters.items():
        role, module, *rest = name.split("/", 2)
        prefix = f"{role}/{module}"
        arr = np.asarray(value)
        units.setdefault(prefix, Unit(prefix, [], len(units))).tensors.append(
            Tensor(rest[0] if rest else "", tuple(arr.shape), arr))
    return list(units.values())


def _module_unit(path: str, module: nn.Module) -> Unit:
    sd = module.state_dict(keep_vars=True)
    return Unit(path, [Tensor(k, tuple(t.shape), t.detach().cpu().numpy()) for k, t in sd.items()],
                ids=frozenset(id(t) for t in sd.values()))


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        yield from ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        yield from ((str(i), v) for i, v in enumerate(obj))
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from vars(obj).items()


def candidate_units(obj: Any, depth: int = WALK_DEPTH) -> list[Unit]:
    """Every ``nn.Module`` (and each of its submodules) and every bare trainable tensor reachable from ``obj``
    through attributes, lists, tuples and dicts, in registration order; a tensor reachable twice counts once."""
    units: list[Unit] = []
    seen_objects: set[int] = set()
    seen_tensors: set[frozenset[int]] = set()

    def add(unit: Unit) -> None:
        if unit.tensors and unit.ids not in seen_tensors:
            seen_tensors.add(unit.ids)
            unit.order = len(units)
            units.append(unit)

    def walk(value: Any, path: str, left: int) -> None:
        if id(value) in seen_objects:
            return
        seen_objects.add(id(value))
        if isinstance(value, nn.Module):
            for sub, module in value.named_modules():
                add(_module_unit(f"{path}.{sub}" if sub else path, module))
            return
        if isinstance(value, torch.Tensor):
            if value.requires_grad or isinstance(value, nn.Parameter):
                add(Unit(path, [Tensor("", tuple(value.shape), value.detach().cpu().numpy())],
                         ids=frozenset((id(value),))))
            return
        if left == 0 or isinstance(value, (torch.optim.Optimizer, np.ndarray, str, bytes, int, float)):
            return
        for name, child in _children(value):
            walk(child, f"{path}.{name}" if path else name, left - 1)

    walk(obj, "", depth)
    return units


# -------------------------------------------------------------------------------------------------- matching


def _equal(ref: list[Tensor], cand: list[Tensor]) -> bool:
    return all(np.array_equal(r.values, c.values) for r, c in zip(ref, cand, strict=True))


def _rank(ref: Unit, cand: Unit) -> tuple[int, int, int]:
    """Sort key: equal initial values first, then a name that fits the role (``targ`` for targets), then order."""
    wants_target = ref.name.startswith("target/")
    name_fits = ("targ" in cand.name.lower()) == wants_target
    return (0 if _equal(ref.tensors, cand.tensors) else 1, 0 if name_fits else 1, cand.order)


def _tie(ref: Unit, ranked: list[Unit]) -> tuple[str, bool]:
    """How the first of several equal-shaped candidates was chosen, and whether only the order decided."""
    first, second = _rank(ref, ranked[0]), _rank(ref, ranked[1])
    names = ", ".join(u.name for u in ranked)
    how = ("its initial values equal the reference's" if first[0] != second[0]
           else "its name fits the role" if first[1] != second[1] else "registration order")
    return (f"{len(ranked)} candidate modules have these shapes ({names}); chose {ranked[0].name} by {how}",
            how == "registration order")


def _composite(ref: Unit, free: list[Unit]) -> list[Unit] | None:
    """Consecutive free candidate units (in registration order) whose shapes concatenate to ``ref``'s."""
    want = ref.signature
    for start, first in enumerate(free):
        if not first.signature or want[:len(first.signature)] != first.signature:
            continue
        chosen, used, pos = [first], set(first.ids), len(first.signature)
        for unit in free[start + 1:]:
            if pos == len(want):
                break
            n = len(unit.signature)
            if unit.ids & used or not n or want[pos:pos + n] != unit.signature:
                continue
            chosen.append(unit)
            used |= unit.ids
            pos += n
        if pos == len(want) and len(chosen) > 1:
            return chosen
    return None


def match_units(ref_units: list[Unit], cand_units: list[Unit]) -> tuple[list[ModuleMatch], dict[str, str],
                                                                          list[Unit]]:
    """Match every reference unit to candidate unit(s); returns the matches, the tensor mapping (candidate
    ``path/key`` -> canonical name) and the candidate units left free."""
    used: set[int] = set()
    matches: list[ModuleMatch] = []
    mapping: dict[str, str] = {}

    def free() -> list[Unit]:
        return [u for u in cand_units if not u.ids & used]

    for ref in ref_units:
        same = sorted((u for u in free() if u.signature == ref.signature), key=lambda u: _rank(ref, u))
        chosen = [same[0]] if same else _composite(ref, free())
        if not chosen:
            continue
        cand_tensors = [(u, t) for u in chosen for t in u.tensors]
        for (unit, ct), rt in zip(cand_tensors, ref.tensors, strict=True):
            mapping[f"{unit.name}/{ct.key}" if ct.key else unit.name] = \
                f"{ref.name}/{rt.key}" if rt.key else ref.name
        for unit in chosen:
            used |= unit.ids
        tie, ambiguous = _tie(ref, same) if len(same) > 1 else ("", False)
        matches.append(ModuleMatch(ref.name, [u.name for u in chosen], len(ref.tensors),
                                   _equal(ref.tensors, [t for _, t in cand_tensors]), tie, ambiguous,
                                   composite=len(chosen) > 1))
    return matches, mapping, free()


def _outermost(units: list[Unit]) -> list[Unit]:
    """Units not contained in another unit of the list (a network rather than its layers)."""
    return [u for u in units if not any(o is not u and u.ids < o.ids for o in units)]


def extra_actors(candidate: Any, actor0: Unit | None, left: list[Unit]) -> tuple[dict[str, str], list[str]]:
    """Leftover candidate modules that are the extra actors -> ``actor1``, ``actor2``, ... and notes.

    A candidate with ``policies()`` says which they are (actors 1..K, each a module or an object holding one);
    otherwise the leftover modules shaped like actor0 are taken, in registration order."""
    policies = getattr(candidate, "policies", None)
    if callable(policies):
        try:
            extra = list(policies())[1:]
        except Exception as exc:  # the user's method: its failure is information
            return {}, [f"candidate policies() raised {type(exc).__name__}: {exc}"]
        out = {}
        for i, policy in enumerate(extra, start=1):
            ids = set().union(*(u.ids for u in candidate_units(policy)))
            unit = next((u for u in left if ids and u.ids == ids), None)
            if unit is not None:
                out[unit.name] = f"actor{i}"
        return out, []
    if actor0 is None:
        return {}, []
    shaped = _outermost([u for u in left if u.signature == actor0.signature])
    return {u.name: f"actor{i}" for i, u in enumerate(shaped, start=1)}, []


# ------------------------------------------------------------------------------------------------- log keys


def _synthetic_batch(spec: Any) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(LOG_SEED)
    s, a = spec.state_dim, spec.action_dim
    return [torch.randn(LOG_BATCH, s, generator=gen), torch.rand(LOG_BATCH, a, generator=gen) * 2 - 1,
            torch.randn(LOG_BATCH, 1, generator=gen), torch.randn(LOG_BATCH, s, generator=gen),
            torch.zeros(LOG_BATCH, 1)]


def _logs(trainer: Any, batch: list[torch.Tensor]) -> list[dict[str, float]]:
    """Numeric log entries of :data:`LOG_STEPS` calls of ``trainer.step(batch)`` (an :class:`IsolatedTrainer`)."""
    return [{k: float(v) for k, v in dict(trainer.call("step", batch)).items()
             if isinstance(v, (int, float, np.floating, np.integer))} for _ in range(LOG_STEPS)]


def propose_log_keys(ref: Any, cand: Any, batch: list[torch.Tensor]) -> tuple[list[str], dict[str, str], list[str]]:
    """Reference log keys over :data:`LOG_STEPS` steps, the candidate keys whose values equal them at the same
    step (``cand`` may be None: no candidate ``step``) and notes."""
    ref_logs = _logs(ref, batch)
    keys = list(dict.fromkeys(k for log in ref_logs for k in log))
    if cand is None:
        return keys, {}, ["the candidate has no step(batch): log keys were not matched"]
    try:
        cand_logs = _logs(cand, batch)
    except Exception as exc:  # the user's step: its failure is information, not a reason to stop
        first = str(exc).splitlines()[0] if str(exc) else ""
        return keys, {}, [f"candidate step(batch) raised {type(exc).__name__}: {first}; log keys were not matched"]
    out: dict[str, str] = {}
    for key in keys:
        steps = [i for i, log in enumerate(ref_logs) if key in log]
        for ckey in dict.fromkeys(k for log in cand_logs for k in log):
            if ckey not in out and all(ckey in cand_logs[i] and cand_logs[i][ckey] == ref_logs[i][key]
                                       for i in steps):
                out[ckey] = key
                break
    return keys, out, []


# ---------------------------------------------------------------------------------------------------- entry


def crash_line(exc: BaseException) -> str:
    """``TypeError: message (at file:line in function: source)``, the innermost frame outside pogo-audit, torch,
    numpy and the standard library (the user's own code), when there is one."""
    import sysconfig
    import traceback
    from pathlib import Path

    ours = Path(__file__).resolve().parents[1]
    skip = tuple(str(Path(p).resolve()) for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                                   sysconfig.get_paths()["platlib"]})
    own = [f for f in traceback.extract_tb(exc.__traceback__)
           if not str(Path(f.filename).resolve()).startswith(skip)
           and not any(Path(f.filename).resolve().is_relative_to(ours / d)
                       for d in ("checks", "multi_actor", "pogo_audit", "reference_algos"))]
    first = str(exc).splitlines()[0] if str(exc) else ""
    where = f" (at {own[-1].filename}:{own[-1].lineno} in {own[-1].name}: {own[-1].line})" if own else ""
    return f"{type(exc).__name__}: {first}{where}"



def propose(algo: str, config: Any, dataset_spec: Any, candidate_spec: str, factory: Callable[..., Any],
            seed: int = 0) -> Proposal:
    """Build the reference and the candidate from ``seed`` and propose the candidate's adapter tables.

    The candidate factory's exceptions propagate (the caller reports them as a finding)."""
    from multi_actor.trainer import reference_factory
    from pogo_audit.core.harness import IsolatedTrainer

    ref = IsolatedTrainer(reference_factory, config, dataset_spec, seed)
    cand = IsolatedTrainer(factory, config, dataset_spec, seed)
    ref_units = reference_units(ref.trainer.parameters())
    cand_units = candidate_units(cand.trainer)
    matches, mapping, left = match_units(ref_units, cand_units)
    matched = {m.reference for m in matches}
    unmatched_ref = [f"{u.name}/{t.key}" if t.key else u.name for u in ref_units if u.name not in matched
                     for t in u.tensors]
    actor0 = next((u for u in ref_units if u.name.startswith("actor0/")), None)
    extras, notes = extra_actors(cand.trainer, actor0, left)
    extra_ids = set().union(*(u.ids for u in left if u.name in extras))
    leftover = [u for u in _outermost(left) if not u.ids <= extra_ids]
    unmatched_cand = [f"{u.name}/{t.key}" if t.key else u.name for u in leftover for t in u.tensors]
    batch = _synthetic_batch(dataset_spec)
    log_keys, log_mapping, log_notes = propose_log_keys(
        ref, cand if callable(getattr(cand.trainer, "step", None)) else None, batch)
    notes += log_notes
    if not cand_units:
        notes.append("no torch nn.Module or trainable tensor was found on the candidate object")
    return Proposal(algo, candidate_spec, matches, mapping, unmatched_ref, unmatched_cand, extras, log_keys,
                    log_mapping, notes)


def python_tables(p: Proposal) -> str:
    """The proposal as Python literals to paste into an adapter: ``PARAMETERS`` (candidate attribute path/key ->
    canonical name), ``EXTRA_ACTORS`` and ``LOG_KEYS`` (your key -> reference key; unmatched ones as TODO)."""
    lines = [f"# pogo-audit adapt --algo {p.algo} --candidate {p.candidate}",
             "# PARAMETERS: '<attribute path>/<state_dict key>' of your object -> canonical name", "PARAMETERS = {"]
    by_ref: dict[str, list[tuple[str, str]]] = {}
    for cand, canon in p.mapping.items():
        role, module, *_ = canon.split("/")
        by_ref.setdefault(f"{role}/{module}", []).append((cand, canon))
    for m in p.modules:
        note = "" if m.values_equal else "  (initial values differ from the reference's)"
        lines.append(f"    # {m.reference} <- {' + '.join(m.candidates)}{note}")
        if m.tie:
            lines.append(f"    # {'AMBIGUOUS, check' if m.ambiguous else 'tie'}: {m.tie}")
        lines += [f"    {cand!r}: {canon!r}," for cand, canon in by_ref.get(m.reference, [])]
    lines += [f"    # unmatched: {name}" for name in p.unmatched_reference]
    lines.append("}")
    lines.append("# EXTRA_ACTORS: your module -> actor<i> (their tensors are actor<i>/<state_dict key>)")
    lines.append("EXTRA_ACTORS = {" + ", ".join(f"{k!r}: {v!r}" for k, v in p.extra_actors.items()) + "}")
    lines.append("# LOG_KEYS: your log key -> reference log key")
    lines.append("LOG_KEYS = {")
    found = set(p.log_mapping.values())
    lines += [f"    {ck!r}: {rk!r}," for ck, rk in p.log_mapping.items()]
    lines += [f"    'TODO: your key for {rk}': {rk!r}," for rk in p.reference_log_keys if rk not in found]
    lines.append("}")
    return "\n".join(lines)
