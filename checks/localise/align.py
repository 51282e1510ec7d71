"""Aligning two traced steps operation by operation (``difflib.SequenceMatcher`` on the operation keys — aten name,
argument shapes/dtypes/``requires_grad``/scalars, autograd mode, random stream — and the digests of the inputs, so
only operations computing the same thing from the same values align), and the places where they part
(:class:`Difference`: an operation only the candidate runs, one only the reference runs, a different operation, or
an aligned one with other outputs). Candidate-only operations that touch nothing compared (a multi-actor trainer's
extra actors) are kept out of the alignment (:func:`extension_ops`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from checks.localise.trace import SCHEDULE_STEP, UNINITIALISED, ModuleCall, Op, Trace
from pogo_audit.model.protocol import COMPARED_PARAM_ROLES

#: aten operations that read a tensor without building a graph through it (``state_dict()``'s detach)
NOT_DIFFERENTIATING = frozenset({"detach", "alias", "lift_fresh", "_to_copy", "clone"})
#: aten operations whose result never carries a graph
DETACHING = frozenset({"detach", "lift_fresh"})


def aligned_pairs(ref: Trace, cand: Trace) -> dict[int, int]:
    """Candidate operation index -> the reference operation it is aligned with: by signature and input values, and
    inside a changed block by signature alone (in order)."""
    out: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, _keys(ref, frozenset(), True),
                                      _keys(cand, extension_ops(ref, cand), True), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.update(zip(range(j1, j2), range(i1, i2)))
        elif tag == "replace":
            inner = difflib.SequenceMatcher(None, [o.key for o in ref.ops[i1:i2]], [o.key for o in cand.ops[j1:j2]],
                                            autojunk=False)
            for a, b, size in inner.get_matching_blocks():
                out.update(zip(range(j1 + b, j1 + b + size), range(i1 + a, i1 + a + size)))
    return out


@dataclass
class Difference:
    tag: str  # insert | delete | replace | value
    ref: Op | None  # the reference's operation at the divergence (the next one, for an insert)
    cand: Op | None  # the candidate's operation at the divergence (the next one, for a delete)
    prev_ref: Op | None
    prev_cand: Op | None
    deleted: list[Op] = field(default_factory=list)
    inserted: list[Op] = field(default_factory=list)


def differences(ref: Trace, cand: Trace) -> Iterator[Difference]:
    """Every place, in execution order, where the aligned operation sequences differ.

    Operations only the candidate runs are skipped when they cannot affect what is compared (a multi-actor trainer's
    snapshots and extra actors): no global-stream draw, no write to or gradient-requiring use of a compared parameter
    (:func:`relevant_extension`), and no later aligned operation reads what they produced. An aligned operation
    differs when what it computed (before a repair, :attr:`Op.computed`) differs from the reference's result."""
    ext = extension_ops(ref, cand)
    matcher = difflib.SequenceMatcher(None, _keys(ref, frozenset(), True), _keys(cand, ext, True), autojunk=False)
    opcodes = matcher.get_opcodes()
    neutral = ValueNeutral(ref, cand, ext)
    aligned_reads: list[frozenset[int]] = []  # per opcode: storages read by aligned candidate ops from there on
    later: frozenset[int] = frozenset()
    for tag, _, _, j1, j2 in reversed(opcodes):
        if tag == "equal":
            later = later.union(*(cand.ops[j].reads for j in range(j1, j2)))
        aligned_reads.append(later)
    aligned_reads.reverse()
    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "insert" and relevant_extension(cand.ops[j1:j2]) is None and \
                not frozenset().union(*(o.made for o in cand.ops[j1:j2])) & aligned_reads[n]:
            continue
        if tag == "insert" and all(o.index in ext for o in cand.ops[j1:j2]):
            continue
        if tag != "equal" and neutral.block(ref.ops[i1:i2], [o for o in cand.ops[j1:j2] if o.index not in ext]):
            continue
        prev_r = ref.ops[i1 - 1] if i1 else None
        prev_c = _own(cand, ext, j1 - 1, -1)
        if tag == "equal":
            for k in range(i2 - i1):
                r, c = ref.ops[i1 + k], cand.ops[j1 + k]
                if r.inputs != c.inputs or r.outputs != c.computed:
                    yield Difference("value", r, c, ref.ops[i1 + k - 1] if i1 + k else None,
                                      cand.ops[j1 + k - 1] if j1 + k else None)
            continue
        if tag == "replace":
            tag, i2, j1, j2 = _replace_block(ref, cand, ext, i1, i2, j1, j2)
        r = ref.ops[i1] if i1 < len(ref.ops) else None
        c = _own(cand, ext, j1, 1)
        yield Difference(tag, r, c, prev_r, prev_c, ref.ops[i1:i2], [o for o in cand.ops[j1:j2] if o.index not in ext])


def _consumed_gradients(trace: Trace) -> list[tuple[str, str]]:
    """Every (parameter, gradient digest) an optimizer step consumed, however the parameters are grouped into
    optimizers."""
    return sorted((name, d) for s in trace.optimizer_steps for name, d in s.grads.items()
                  if name.startswith(COMPARED_PARAM_ROLES))


def _numel(shape: list[int]) -> int:
    n = 1
    for k in shape:
        n *= int(k)
    return n


class ValueNeutral:
    """Whether a block the two op sequences do not share is only the same computation written another way (code
    not written from the reference's: a squeeze before or after a ``min``, a ``.item()`` for logging at another
    place, an expression reassociated). Judged by values, not by operation names and order:

    * operations only the reference runs are neutral when the candidate computes each of their results somewhere in
      its step (or, for one with no tensor result such as ``.item()``, runs the same operation on the same values;
      a draw: makes the same draw; a reseed: the same reseed, in any order), or when the reference itself drops them
      (they reach nothing compared);
    * operations only the candidate runs are neutral when they draw nothing from a global stream, write no compared
      parameter, and every result the reference never computes flows only into results the reference computes again
      (the path rejoins the reference's values before an optimizer step, a target update or the end of the step).

    A block that is neutral on both sides is no difference; anything else is left to the ladder."""

    def __init__(self, ref: Trace, cand: Trace, ext: frozenset[int] = frozenset()):
        #: graph differences matter only when some optimizer consumes other gradients than the reference's
        self.gradients_differ = _consumed_gradients(cand) != _consumed_gradients(ref)
        self.ref_values = frozenset(d for o in ref.ops for d in (*o.inputs, *o.outputs))
        self.cand_values = frozenset(d for o in cand.ops for d in (*o.inputs, *o.computed))
        self.cand_calls = frozenset((o.key, tuple(o.inputs)) for o in cand.ops)
        self.ref_calls = frozenset((o.key, tuple(o.inputs)) for o in ref.ops)
        self.consumers: dict[str, list[Op]] = {}
        for op in cand.ops:
            if op.index in ext:  # the extension (extra actors) is judged on its own
                continue
            for d in op.inputs:
                self.consumers.setdefault(d, []).append(op)
        self.ref_consumers: dict[str, list[Op]] = {}
        for op in ref.ops:
            for d in op.inputs:
                self.ref_consumers.setdefault(d, []).append(op)
        #: value -> whether the reference computed it with a graph, without one, or both
        self.ref_graph: dict[str, set[bool]] = {}
        for op in ref.ops:
            for d in op.outputs:
                self.ref_graph.setdefault(d, set()).add(self.differentiates(op))
        self.cand_graph: dict[str, set[bool]] = {}
        for op in cand.ops:
            for d in op.computed:
                self.cand_graph.setdefault(d, set()).add(self.differentiates(op))

    @staticmethod
    def differentiates(op: Op) -> bool:
        """Whether the operation builds a graph: autograd on, an input that requires grad, and not a ``detach``
        (``state_dict()`` reads every parameter through one)."""
        return op.grad_enabled and op.name.split(".")[1] not in DETACHING and \
            any(isinstance(a, tuple) and a[:1] == ("T",) and a[-1] is True for a in op.key[1])

    def _same_graph(self, op: Op) -> bool:
        """Whether the reference computed the candidate operation's result with a graph when ``op`` does (or
        without one when ``op`` does not): a missing ``detach`` changes no value, only where gradients flow. A
        graph-less copy of a value the candidate also computes with a graph, as the reference does, is the same
        graph (an extra forward under ``no_grad``)."""
        outs = op.computed
        if len(outs) != 1 or not op.shapes or _numel(op.shapes[0]) < 2 or outs[0] == UNINITIALISED:
            return True  # a scalar or an uninitialised buffer has too many twins to tell anything
        modes = self.ref_graph.get(outs[0])
        mine = self.differentiates(op)
        return modes is None or mine in modes or (not mine and True in self.cand_graph.get(outs[0], ()))

    def _reseed_of_reference(self, op: Op) -> bool:
        """A candidate's draw without a result (a reseed) that the reference makes too: seeding the generators in
        another order than the reference leaves each stream as the reference's."""
        return op.random and not op.computed and (op.key, tuple(op.inputs)) in self.ref_calls

    def _draw_of_reference(self, op: Op) -> bool:
        """A candidate's draw with the very numbers a draw of the reference gives (``randn_like`` where the
        reference runs ``empty`` + ``normal_``): the stream moves as the reference's."""
        return op.random and bool(op.computed) and all(d in self.ref_values for d in op.computed)

    def _deleted(self, op: Op) -> bool:
        if op.outputs and all(d == UNINITIALISED for d in op.outputs):
            return True  # an allocation computes nothing: what fills it is judged on its own
        if op.random and op.outputs:  # the same draw made elsewhere in the candidate's step leaves every stream as
            return all(d in self.cand_values for d in op.outputs)  # the reference's
        if not op.outputs:  # a reseed, a .item(): the candidate makes the same call (in any order)
            return (op.key, tuple(op.inputs)) in self.cand_calls
        missing = [d for d in op.outputs if d not in self.cand_values]
        return not missing or self._dead(missing)

    def _dead(self, values: list[str]) -> bool:
        """Whether the reference's ``values`` never reach anything compared in its own step (computed and dropped:
        a log-probability its actor returns and the caller ignores)."""
        pending, seen = list(values), set()
        while pending:
            d = pending.pop()
            if d in seen:
                continue
            seen.add(d)
            for user in self.ref_consumers.get(d, []):
                if user.random:
                    continue
                if user.optimizer_step is not None or (user.writes or "").startswith(COMPARED_PARAM_ROLES) or \
                        user.name.startswith("aten._local_scalar_dense") or len(seen) > 512:
                    return False
                pending.extend(x for x in user.outputs if x not in self.cand_values)
        return True

    def _acts(self, op: Op) -> bool:
        """Whether an operation changes what is compared in a way the reference's step does not: a draw (it moves
        a stream), an optimizer step or a write to a compared parameter with a result the reference never has, a
        value read out (for logging) that the reference never has."""
        if self.gradients_differ and not self._same_graph(op):
            return True
        unknown_out = any(d not in self.ref_values for d in op.computed)
        if op.random and not op.computed:
            return not self._reseed_of_reference(op)
        if op.random:
            return unknown_out
        if unknown_out and (op.optimizer_step is not None or (op.writes or "").startswith(COMPARED_PARAM_ROLES)):
            return True
        return op.name.startswith("aten._local_scalar_dense") and any(d not in self.ref_values for d in op.inputs)

    def inserted(self, ops: list[Op]) -> bool:
        """Whether operations only the candidate runs are neutral (see the class docstring)."""
        if any(self._acts(o) for o in ops):
            return False
        pending = [d for o in ops for d in o.computed if d not in self.ref_values]
        seen: set[str] = set()
        while pending:
            d = pending.pop()
            if d in seen:
                continue
            seen.add(d)
            for user in self.consumers.get(d, []):
                if user.random:  # a draw reads a value for its shape only; the draw itself is judged on its own
                    continue
                if self._acts(user) or len(seen) > 512:
                    return False
                pending.extend(x for x in user.computed if x not in self.ref_values)
        return True

    def block(self, deleted: list[Op], inserted: list[Op]) -> bool:
        """Whether a block (``deleted``: the reference's operations, ``inserted``: the candidate's) is neutral."""
        if not deleted and not inserted:
            return False
        moving = [o for o in inserted if not (self._reseed_of_reference(o) or self._draw_of_reference(o))]
        if any(o.name == SCHEDULE_STEP for o in (*deleted, *inserted)) or relevant_extension(moving) is not None:
            return False  # a learning-rate schedule step acts later; a leak into a compared parameter acts now
        return all(self._deleted(o) for o in deleted) and self.inserted(inserted)


def first_difference(ref: Trace, cand: Trace) -> Difference | None:
    """The first of :func:`differences` (None: the two steps agree)."""
    return next(differences(ref, cand), None)


def structural_differences(ref: Trace, cand: Trace, after: int = -1) -> Iterator[Difference]:
    """The extra, missing and changed blocks that matter when the operation sequences are aligned by signature alone
    (values differ anyway after a numeric difference), from candidate operation ``after`` + 1 on."""
    ext = extension_ops(ref, cand)
    matcher = difflib.SequenceMatcher(None, _keys(ref, frozenset(), False), _keys(cand, ext, False), autojunk=False)
    later_reads: list[frozenset[int]] = [frozenset()] * (len(cand.ops) + 1)  # storages read by ops from j on
    for j in range(len(cand.ops) - 1, -1, -1):
        later_reads[j] = later_reads[j + 1] | cand.ops[j].reads
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or j1 <= after:
            continue
        if tag == "insert" and (all(o.index in ext for o in cand.ops[j1:j2]) or (
                relevant_extension(cand.ops[j1:j2]) is None and
                not frozenset().union(*(o.made for o in cand.ops[j1:j2])) & later_reads[j2])):
            continue
        if tag == "replace":
            tag, i2, j1, j2 = _replace_block(ref, cand, ext, i1, i2, j1, j2)
        yield Difference(tag, ref.ops[i1] if i1 < len(ref.ops) else None, _own(cand, ext, j1, 1),
                          ref.ops[i1 - 1] if i1 else None, _own(cand, ext, j1 - 1, -1), ref.ops[i1:i2],
                          [o for o in cand.ops[j1:j2] if o.index not in ext])


def extension_ops(ref: Trace, cand: Trace) -> frozenset[int]:
    """Indices of the candidate's operations that extend the reference's step without touching anything compared (a
    multi-actor trainer's extra-actor updates): run inside a function of a name the reference never runs (below
    the outermost frame), no global-stream draw, no write to a compared parameter (optimizer steps included), no
    compared parameter used with ``requires_grad`` under autograd, and nothing they produce read by a later
    operation outside the extension. Alignment gives them keys that match nothing, so they are never taken for the
    reference's operations of similar shape (an extra actor's update for actor0's update the candidate skips)."""
    known = frozenset(f.name for o in ref.ops for f in o.stack)
    out: set[int] = set()
    read_later: set[int] = set()
    for op in reversed(cand.ops):
        if (any(f.name not in known for f in op.stack[1:]) and relevant_extension([op]) is None
                and not (op.writes or "").startswith(COMPARED_PARAM_ROLES) and not op.made & read_later):
            out.add(op.index)
        else:
            read_later.update(op.reads)
    return frozenset(out)


def _own(trace: Trace, ext: frozenset[int], start: int, direction: int) -> Op | None:
    """The first operation of ``trace`` from index ``start`` on (``direction`` 1) or back (-1) that is not in
    ``ext`` (None: there is none)."""
    k = start
    while 0 <= k < len(trace.ops):
        if k not in ext:
            return trace.ops[k]
        k += direction
    return None


def _keys(trace: Trace, ext: frozenset[int], values: bool) -> list[tuple[Any, ...]]:
    """Alignment keys of ``trace``'s operations (with their input digests when ``values``), unique ones for
    :func:`extension_ops`."""
    return [("extension", o.index) if o.index in ext else ((o.key, tuple(o.inputs)) if values else o.key)
            for o in trace.ops]


def _replace_block(ref: Trace, cand: Trace, ext: frozenset[int], i1: int, i2: int, j1: int, j2: int
                   ) -> tuple[str, int, int, int]:
    """``(tag, i2, j1, j2)`` of a replaced block: a delete when the candidate's side holds only extension operations
    (or starts with operations the reference runs later), an insert when the reference's side starts with ones the
    candidate runs later, else a replace (see :func:`_replace_kind`)."""
    own = [o for o in cand.ops[j1:j2] if o.index not in ext]
    tag = _replace_kind(ref.ops[i1:i2], own) if own else "delete"
    if tag == "delete":  # the candidate resumes at a later reference operation: that one's predecessors
        return tag, i2, j1, j1
    if tag == "insert":
        return tag, i1, j1, j2
    return tag, i2, j1, j2


def _replace_kind(ref_ops: list[Op], cand_ops: list[Op]) -> str:
    """A replaced block that starts with missing (or extra) operations: the candidate's first operation is one the
    reference runs later in the block (a *delete*), or the reference's first one is one the candidate runs later
    (an *insert*); otherwise a true *replace*. Only the operation signature is compared (values already differ)."""
    c, r = cand_ops[0], ref_ops[0]
    if c.key == r.key or c.key[0] == r.key[0]:
        return "replace"
    if any(o.key == c.key for o in ref_ops[1:]):
        return "delete"
    if any(o.key == r.key for o in cand_ops[1:]):
        return "insert"
    return "replace"


def module_of(trace: Trace, op: Op | None) -> ModuleCall | None:
    return None if op is None or op.module_call is None else trace.modules[op.module_call]


def shape_text(op: Op) -> str:
    return f"{op.name.split('.')[1] if op.name.startswith('aten.') else op.name}({op.shapes[0] if op.shapes else []})"


def relevant_extension(ops: list[Op]) -> tuple[int, str] | None:
    """Among candidate operations after the reference's whole step (a multi-actor trainer's extra actors): the first
    one that matters for the compared state, and why — a draw from a global stream, an in-place write to a compared
    parameter, or a compared parameter used with ``requires_grad`` under autograd (a gradient can leak into it)."""
    for i, op in enumerate(ops):
        if op.random and op.stream != "explicit generator":
            return i, "draw"
        if op.writes is not None and op.writes.startswith(COMPARED_PARAM_ROLES) and op.optimizer_step is None:
            return i, f"writes `{op.writes}`"
        leaking = [n for n, grad in op.params if grad and n.startswith(COMPARED_PARAM_ROLES)]
        if leaking and op.grad_enabled and op.name.split(".")[1] not in NOT_DIFFERENTIATING:
            return i, f"uses `{leaking[0]}` with requires_grad under autograd"
    return None
