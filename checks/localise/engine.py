"""Localise a divergent step: replay it on copies of both trainers under tracing and name the first differing
operation with its source line in the candidate.

The two traces (:mod:`checks.localise.trace`) are aligned operation by operation (``difflib.SequenceMatcher`` on the
operation keys — aten name, argument shapes/dtypes/``requires_grad``/scalars, autograd mode, random stream — and the
digests of the inputs, so only operations computing the same thing from the same values align). The first place
where they part is one of: an operation only the candidate runs (*insert*), one only the reference runs (*delete*), a
different operation or the same one on other values (*replace*), or an aligned operation whose outputs differ
(*value*). Candidate-only operations that touch nothing compared (a multi-actor trainer's snapshots and extra actors)
are skipped. Which candidate line caused it is decided by a short ladder of rules, each explained where it is applied:

1. a random draw involved -> the draw's own line (an extra/changed draw) or the line where the skipped draw belonged;
2. the operation runs inside a module that is not the one the reference runs there (canonical names) -> the line that
   called that module;
3. the call paths of the two sides part (same code base: same outermost function) -> the line that called the other
   function;
4. only the autograd mode differs -> the line that switches it (its place among the lines run since the last agreeing
   operation, as in the reference);
5. extra operations -> the outermost frame where they part from the last agreeing operation (a second call of a
   function from one line names that line; a block entered through a condition names the condition, or the line
   that last assigned a ``self.<attr>`` the condition read with another value than in the reference);
6. missing operations -> the candidate line, after the last agreeing operation, where the reference's missing
   operations sit;
7. otherwise the module call (differing inputs) or the operation itself.

Two rules replace the ladder's answer: a difference inside an optimizer step whose learning rate differs from the
reference's, with the two sides' learning-rate schedule steps differing too -> the skipped (or extra) schedule step
(:func:`_schedule_cause`); a compared parameter used with ``requires_grad`` after the reference's step while the
candidate froze others -> where the freeze's tensors are chosen (:func:`_leak_past_freeze`). Further defects of the
same step are named by repaired replays (:func:`repaired_differences`); defects around a block one side enters and
the other skips (a condition deciding otherwise) by replays that set what the condition reads to the reference's
values or jump into the skipped block (:func:`forced_differences`); a difference present right after construction
by replaying both constructions (:func:`localise_construction`). Operations of the candidate that extend the
reference's step without touching anything compared (extra actors) are kept out of the alignment
(:func:`extension_ops`).

The result is a :class:`Localisation`: its kind (``rng``, ``numeric``, ``order``, ``gradient``, ``none``), a message,
the located frames (candidate first), and excerpts of both traces around the divergence.
"""

from __future__ import annotations

import copy
import difflib
import linecache
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checks.equivalence import COMPARED_PARAM_ROLES
from checks.localise.frames import BRANCH, REPO_ROOT, Assign, Frame, Jump
from checks.localise.trace import SCHEDULE_STEP, ModuleCall, Op, Repair, Trace, record_step, recording

KINDS = ("rng", "numeric", "order", "gradient", "none")
#: aten operations that read a tensor without building a graph through it (``state_dict()``'s detach)
_NOT_DIFFERENTIATING = frozenset({"detach", "alias", "lift_fresh", "_to_copy", "clone"})
#: operations shown on each side of the divergence in the excerpts
EXCERPT = 3


@dataclass
class Localisation:
    """Where the candidate's step first differs from the reference's, JSON-serialisable via :meth:`as_dict`.

    ``frames``: the located candidate frame first, then its callers (innermost to outermost), each
    ``{file, line, function, code}``; ``reference_frames``: the reference's aligned operation, same shape;
    ``events``: a few described operations of each side around the divergence; ``module`` / ``gradient`` /
    ``schedule``: the module-level, optimizer-level and step-order findings that support the message (or None)."""

    kind: str
    message: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    reference_frames: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, list[str]] = field(default_factory=dict)
    rule: str = ""
    module: dict[str, Any] | None = None
    gradient: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    #: further structural differences later in the same step (extra, missing or changed operations after the first
    #: one), each ``{"message", "frame"}``: a second defect in the same step is named too, not hidden by the first
    more: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "frames": self.frames,
                "reference_frames": self.reference_frames, "events": self.events, "rule": self.rule,
                "module": self.module, "gradient": self.gradient, "schedule": self.schedule, "errors": self.errors,
                "more": self.more}

    @property
    def location(self) -> dict[str, Any] | None:
        """The candidate's located line as ``{path, line, function, code}`` (the shape of a CheckResult's
        ``metrics["candidate_location"]``, which the SARIF exporter points at), or None."""
        if not self.frames:
            return None
        f = self.frames[0]
        return {"path": f["file"], "line": f["line"], "function": f["function"], "code": f["code"]}


def localise_step(reference: Any, candidate: Any, batch: Any, rounds: int | None = None) -> Localisation:
    """Localise the first difference between one step of ``reference`` and of ``candidate``
    (:class:`pogo_audit.harness.IsolatedTrainer` objects in the state just before the step; neither is touched:
    deep copies are replayed, each on its own copy of ``batch``), then up to ``rounds`` (default
    :data:`REPAIR_ROUNDS`) repaired replays of the candidate name the further defects of the same step
    (:func:`repaired_differences`)."""
    with warnings.catch_warnings():  # the replays are diagnostics: what they warn was already seen in the real run
        warnings.simplefilter("ignore")
        ref_trace, _, ref_error = record_step(copy.deepcopy(reference), copy.deepcopy(batch), keep=True)
        cand_trace, _, cand_error = record_step(copy.deepcopy(candidate), copy.deepcopy(batch))
        result = compare_traces(ref_trace, cand_trace)
        if result.kind != "none" and ref_error is None and cand_error is None:
            seen = {(f["file"], f["line"]) for f in result.frames[:1]} | {
                (m["frame"]["file"], m["frame"]["line"]) for m in result.more}
            rounds = REPAIR_ROUNDS if rounds is None else rounds
            result.more += repaired_differences(ref_trace, cand_trace, candidate, batch, seen, rounds)
            result.more += forced_differences(ref_trace, cand_trace, candidate, batch, seen, rounds)
    for side, error in (("reference", ref_error), ("candidate", cand_error)):
        if error is not None:
            result.errors[side] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            result.message += f"; the {side}'s replay raised {result.errors[side]}"
    return result


def merge_more(into: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """A copy of the localisation ``into`` (as :meth:`Localisation.as_dict`) whose further differences (``more``)
    also hold the lines ``found`` (another step's localisation) names that ``into`` does not."""
    lines = {(f["file"], f["line"]) for f in (into.get("frames") or [])[:1]} | {
        (m["frame"]["file"], m["frame"]["line"]) for m in into.get("more") or []}
    merged = list(into.get("more") or [])
    frames = found.get("frames") or []
    extra = ([{"message": found["message"], "frame": frames[0]}] if frames else []) + list(found.get("more") or [])
    for m in extra:
        if (m["frame"]["file"], m["frame"]["line"]) not in lines:
            lines.add((m["frame"]["file"], m["frame"]["line"]))
            merged.append(m)
    return {**into, "more": merged}


def localise_construction(reference_factory: Any, candidate_factory: Any, config: Any, dataset_spec: Any,
                          seed: int) -> Localisation:
    """Localise a difference already present after construction (step 0): both factories are run again, each
    through a fresh :class:`pogo_audit.harness.IsolatedTrainer` (private global streams, as in the run), under
    tracing. Parameter initialisations draw from the global stream, so building something more, earlier or in
    another order shows as extra draws; those are located where the candidate's construction path parts from its
    last agreeing operation (rule 5), not at the layer that draws (the draws themselves are the library's)."""
    from pogo_audit.harness import IsolatedTrainer

    traces = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for factory in (reference_factory, candidate_factory):
            with recording(None) as trace:
                IsolatedTrainer(factory, config, dataset_spec, seed)
            traces.append(trace)
    ref, cand = traces
    result = compare_traces(ref, cand)
    d = first_difference(ref, cand)
    if d is not None and d.tag == "insert" and _first_draw(d.inserted) is not None and d.prev_cand is not None:
        frame, why = _inserted_at(ref, cand, d)
        if frame is not None:
            draw = _first_draw(d.inserted)
            assert draw is not None
            result.frames = [frame.as_dict()]
            result.rule = "construction"
            result.message = (f"at construction, candidate draws an extra `{_shape(draw)}` ({draw.stream}) and more "
                              f"the reference does not{why} at {frame.where()}: `{frame.code}`")
    return result


# ---------------------------------------------------------------------------------------------------- repair

#: repaired replays of the candidate after the first one (each aligns again on what the previous one computed; a
#: round runs only while the previous ones named something new)
REPAIR_ROUNDS = 2
#: at most this many further located lines per step
MORE_LIMIT = 8


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


def repaired_differences(ref: Trace, cand: Trace, candidate: Any, batch: Any, seen: set[tuple[str, int]],
                         rounds: int = REPAIR_ROUNDS, jump: Jump | None = None, note: str = ""
                         ) -> list[dict[str, Any]]:
    """Further defects of the same step, each ``{"message", "frame"}``: after a numeric difference every later value
    differs, so a second defect that only changes values would stay hidden. The candidate's step is replayed again
    (from a fresh copy, same RNG states) with every operation aligned with a reference operation returning the
    reference's result where it computed another one (:class:`checks.localise.trace.Repair`); what follows a
    repaired operation sees the reference's values again, so every remaining difference — an operation computing
    something else from equal inputs, or extra, missing and changed operations aligned again on equal values — is
    located like the first, each line once (``seen``: lines already named). ``jump``: the replays enter a block the
    candidate skipped (:func:`forced_differences`), ``note`` says so in the messages."""
    out: list[dict[str, Any]] = []
    previous = cand
    for _ in range(rounds):
        named = len(out)
        pairs = aligned_pairs(ref, previous)
        repair = Repair([o.key for o in previous.ops],
                        {k: (ref.ops[j].outputs, ref.values[j]) for k, j in pairs.items() if j in ref.values})
        trace, _, error = record_step(copy.deepcopy(candidate), copy.deepcopy(batch), repair=repair, edit=jump)
        if error is not None or not repair.repaired:
            break
        out += _newly_located(ref, trace, seen, "after repairing the values before it" + (f", {note}" if note else ""),
                              MORE_LIMIT - len(out))
        if len(out) >= MORE_LIMIT:
            return out
        if len(out) == named:  # a round that named nothing new: the next one would align the same way
            break
        previous = trace
    return out


def _newly_located(ref: Trace, cand: Trace, seen: set[tuple[str, int]], note: str, limit: int,
                   first_only: bool = False) -> list[dict[str, Any]]:
    """Every difference of ``cand`` from ``ref`` (``first_only``: the first one — after a value differs, the
    alignment by values of what follows is no evidence) located at a line not in ``seen`` (added to it), at most
    ``limit``, each ``{"message", "frame"}`` with ``note`` in parentheses."""
    out: list[dict[str, Any]] = []
    for n, d in enumerate(differences(ref, cand)):
        if len(out) >= limit or (first_only and n):
            break
        try:
            frame, _rule, what = _locate(ref, cand, d)
        except (IndexError, ValueError, AttributeError, AssertionError):  # an odd block: keep the others
            continue
        if frame is None or (frame.file, frame.line) in seen:
            continue
        seen.add((frame.file, frame.line))
        out.append({"message": f"{what} at {frame.where()}: `{frame.code}` ({note})", "frame": frame.as_dict()})
    return out


#: at most this many skipped branches are entered per replayed step
MAX_JUMPS = 2


def _entering_condition(trace: Trace, prev: Op | None, first: Op) -> tuple[int, Frame] | None:
    """The ``if``/``elif`` condition of ``trace`` through which ``first`` was reached after ``prev`` (its index in
    ``trace.lines``), and the first line of its block (None when ``first`` was not reached through a condition in
    the same call)."""
    if prev is None or not first.stack:
        return None
    located = None
    for level in range(min(len(first.stack), len(prev.stack))):
        here, there = first.stack[level], prev.stack[level]
        if here.call != there.call:
            located = first.stack[level - 1] if level else None
            break
        if here.line != there.line:
            located = here
            break
    if located is None:
        return None
    before = [i for i in range(max(prev.line_index - 1, 0), first.line_index)
              if trace.lines[i][0].call == located.call and trace.lines[i][0].line < located.line]
    if not before or not _source(trace.lines[before[-1]][0]).startswith(("if ", "elif ")):
        return None
    cond = trace.lines[before[-1]][0]
    body = next((f for f, _ in trace.lines[before[-1] + 1:] if f.call == cond.call), None)
    return (before[-1], body) if body is not None and body.line > cond.line else None


def _occurrence(trace: Trace, index: int) -> int:
    """How many times the line at ``trace.lines[index]`` ran before it in the step."""
    here = trace.lines[index][0]
    return sum(1 for f, _ in trace.lines[:index] if (f.file, f.line) == (here.file, here.line))


def _enters(trace: Trace, at: Frame, occurrence: int, body: int) -> bool | None:
    """Whether the ``occurrence``-th run of the line ``at`` in ``trace`` was followed, in its call, by line ``body``
    (None: that run is not in the trace)."""
    runs = [i for i, (f, _) in enumerate(trace.lines) if (f.file, f.line) == (at.file, at.line)]
    if occurrence >= len(runs):
        return None
    here = trace.lines[runs[occurrence]][0]
    following = next((f for f, _ in trace.lines[runs[occurrence] + 1:] if f.call == here.call), None)
    return following is not None and following.line == body


def _decisions(ref: Trace, cand: Trace) -> Iterator[tuple[_Difference, int, int, bool]]:
    """Blocks one side enters and the other skips at a condition both run: ``(difference, index of the candidate's
    condition in cand.lines, the block's first line in the candidate's code, whether the candidate enters it)``,
    found on the alignment by signature (after a value differs, an alignment by values no longer shows blocks)."""
    for d in structural_differences(ref, cand):
        if d.tag == "delete":
            skipped = _condition_of_skipped(ref, cand, d)
            if skipped is not None:
                i, cond, body = skipped
                yield d, i, cand.lines[i][0].line + body.line - cond.line, False
        elif d.tag == "insert" and d.inserted:
            entered = _entering_condition(cand, d.prev_cand, d.inserted[0])
            if entered is not None and _reference_line(ref, cand.lines[entered[0]][0],
                                                       d.ref.line_index if d.ref else len(ref.lines)) is not None:
                yield d, entered[0], entered[1].line, True


def forced_differences(ref: Trace, cand: Trace, candidate: Any, batch: Any, seen: set[tuple[str, int]],
                       rounds: int = REPAIR_ROUNDS) -> list[dict[str, Any]]:
    """Defects around a block one side enters and the other skips at this step (a condition deciding otherwise than
    the reference's, e.g. an actor update due on other steps):

    * a condition that read ``self.<attr>`` values other than the reference's is evaluated again on the reference's
      values (:class:`checks.localise.frames.Assign`); when it still decides as before, the condition itself differs
      and is named too (the assignment that changed the value is named by the plain localisation);
    * a block the candidate skips is entered (:class:`checks.localise.frames.Jump`) and compared with the
      reference's block of the same step, plainly and then with repairs: without this a defect inside a block one
      side runs on other steps than the other has no same-step counterpart and stays unnamed."""
    jumps: list[Jump] = []
    checks: list[tuple[Assign, int, bool, Frame]] = []
    for d, i, body, enters in _decisions(ref, cand):
        here = cand.lines[i][0]
        occurrence = _occurrence(cand, i)
        if not enters and len(jumps) < MAX_JUMPS:
            jump = Jump(here.file, here.line, occurrence, body)
            if jump not in jumps:
                jumps.append(jump)
        mine = cand.conditions.get(i, {})
        j = _reference_line(ref, here, (d.ref.line_index if d.ref is not None else len(ref.lines)))
        theirs = ref.conditions.get(j, {}) if j is not None else {}
        differing = tuple((n, theirs[n]) for n in mine if n in theirs and mine[n] != theirs[n])
        if differing and len(checks) < MAX_JUMPS:
            checks.append((Assign(here.file, here.line, occurrence, differing), body, enters, here))
    out: list[dict[str, Any]] = []
    for assign, body, enters, here in checks:
        trace, _, error = record_step(copy.deepcopy(candidate), copy.deepcopy(batch), edit=assign)
        if error is not None or not trace.edited or (here.file, here.line) in seen:
            continue
        if _enters(trace, here, assign.occurrence, body) == enters:
            values = ", ".join(f"`self.{n}` = {v!r}" for n, v in assign.values)
            seen.add((here.file, here.line))
            out.append({"message": f"with {values} as in the reference, the candidate's condition still "
                                   f"{'enters' if enters else 'skips'} the block the reference "
                                   f"{'skips' if enters else 'enters'}: the condition itself differs at "
                                   f"{here.where()}: `{here.code}`", "frame": here.as_dict()})
    for jump in jumps:
        trace, _, error = record_step(copy.deepcopy(candidate), copy.deepcopy(batch), edit=jump)
        if error is not None or not trace.edited:
            continue
        note = f"with the condition at {jump.file}:{jump.line} taken as in the reference"
        out += _newly_located(ref, trace, seen, note, MORE_LIMIT - len(out), first_only=True)
        out += repaired_differences(ref, trace, candidate, batch, seen, rounds, jump, note)[:MORE_LIMIT - len(out)]
        if len(out) >= MORE_LIMIT:
            break
    return out

# ------------------------------------------------------------------------------------------------- alignment


@dataclass
class _Difference:
    tag: str  # insert | delete | replace | value
    ref: Op | None  # the reference's operation at the divergence (the next one, for an insert)
    cand: Op | None  # the candidate's operation at the divergence (the next one, for a delete)
    prev_ref: Op | None
    prev_cand: Op | None
    deleted: list[Op] = field(default_factory=list)
    inserted: list[Op] = field(default_factory=list)


def differences(ref: Trace, cand: Trace) -> Iterator[_Difference]:
    """Every place, in execution order, where the aligned operation sequences differ.

    Operations only the candidate runs are skipped when they cannot affect what is compared (a multi-actor trainer's
    snapshots and extra actors): no global-stream draw, no write to or gradient-requiring use of a compared parameter
    (:func:`_relevant_extension`), and no later aligned operation reads what they produced. An aligned operation
    differs when what it computed (before a repair, :attr:`Op.computed`) differs from the reference's result."""
    ext = extension_ops(ref, cand)
    matcher = difflib.SequenceMatcher(None, _keys(ref, frozenset(), True), _keys(cand, ext, True), autojunk=False)
    opcodes = matcher.get_opcodes()
    aligned_reads: list[frozenset[int]] = []  # per opcode: storages read by aligned candidate ops from there on
    later: frozenset[int] = frozenset()
    for tag, _, _, j1, j2 in reversed(opcodes):
        if tag == "equal":
            later = later.union(*(cand.ops[j].reads for j in range(j1, j2)))
        aligned_reads.append(later)
    aligned_reads.reverse()
    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "insert" and _relevant_extension(cand.ops[j1:j2]) is None and \
                not frozenset().union(*(o.made for o in cand.ops[j1:j2])) & aligned_reads[n]:
            continue
        if tag == "insert" and all(o.index in ext for o in cand.ops[j1:j2]):
            continue
        prev_r = ref.ops[i1 - 1] if i1 else None
        prev_c = _own(cand, ext, j1 - 1, -1)
        if tag == "equal":
            for k in range(i2 - i1):
                r, c = ref.ops[i1 + k], cand.ops[j1 + k]
                if r.inputs != c.inputs or r.outputs != c.computed:
                    yield _Difference("value", r, c, ref.ops[i1 + k - 1] if i1 + k else None,
                                      cand.ops[j1 + k - 1] if j1 + k else None)
            continue
        if tag == "replace":
            tag, i2, j1, j2 = _replace_block(ref, cand, ext, i1, i2, j1, j2)
        r = ref.ops[i1] if i1 < len(ref.ops) else None
        c = _own(cand, ext, j1, 1)
        yield _Difference(tag, r, c, prev_r, prev_c, ref.ops[i1:i2], [o for o in cand.ops[j1:j2] if o.index not in ext])


def first_difference(ref: Trace, cand: Trace) -> _Difference | None:
    """The first of :func:`differences` (None: the two steps agree)."""
    return next(differences(ref, cand), None)


def structural_differences(ref: Trace, cand: Trace, after: int = -1) -> Iterator[_Difference]:
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
                _relevant_extension(cand.ops[j1:j2]) is None and
                not frozenset().union(*(o.made for o in cand.ops[j1:j2])) & later_reads[j2])):
            continue
        if tag == "replace":
            tag, i2, j1, j2 = _replace_block(ref, cand, ext, i1, i2, j1, j2)
        yield _Difference(tag, ref.ops[i1] if i1 < len(ref.ops) else None, _own(cand, ext, j1, 1),
                          ref.ops[i1 - 1] if i1 else None, _own(cand, ext, j1 - 1, -1), ref.ops[i1:i2],
                          [o for o in cand.ops[j1:j2] if o.index not in ext])


def further_differences(ref: Trace, cand: Trace, first: _Difference, limit: int = 6) -> list[dict[str, Any]]:
    """Structural differences after ``first`` (:func:`structural_differences`), each located like the first.
    A defect that only changes values after the first difference stays hidden (values already differ there)."""
    anchor = next((k for k, o in enumerate(cand.ops) if o is (first.cand or first.prev_cand)), -1)
    seen = set()
    out: list[dict[str, Any]] = []
    for d in structural_differences(ref, cand, anchor):
        try:
            frame, _rule, what = _locate(ref, cand, d)
        except (IndexError, ValueError, AttributeError):  # an odd block: keep the others
            continue
        if frame is None or (frame.file, frame.line) in seen:
            continue
        seen.add((frame.file, frame.line))
        out.append({"message": f"{what} at {frame.where()}: `{frame.code}`", "frame": frame.as_dict()})
        if len(out) >= limit:
            break
    return out


def schedule_step_differences(ref: Trace, cand: Trace) -> list[dict[str, Any]]:
    """Learning-rate schedule steps the candidate skips (or adds) after an optimizer's step, counted per optimizer
    label (the optimizer step before each schedule step), each located at the candidate's step of that optimizer.

    Counting rather than aligning operations: a trainer that computes the same numbers with other operations (a
    third-party trainer) misaligns the op sequences, but its optimizer steps still carry canonical labels."""
    def per_label(trace: Trace) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        for op in trace.ops:
            if op.name != SCHEDULE_STEP:
                continue
            before = [s for s in trace.optimizer_steps if s.first_op < op.index]
            label = before[-1].label if before else ""
            out.setdefault(label, []).append(op)
        return out

    theirs, mine = per_label(ref), per_label(cand)
    found = []
    for label in [*theirs, *(k for k in mine if k not in theirs)]:
        n_ref, n_cand = len(theirs.get(label, [])), len(mine.get(label, []))
        if n_ref == n_cand:
            continue
        steps = [s for s in cand.optimizer_steps if s.label == label]
        where = steps[-1].stack[-1] if steps and steps[-1].stack else None
        if n_cand > n_ref:
            where = mine[label][n_ref].frame() or where
        if where is None:
            continue
        ref_where = theirs[label][0].frame() if n_ref else None
        what = (f"candidate runs {n_cand - n_ref} more learning-rate schedule step(s) than the reference" if
                n_cand > n_ref else
                "candidate skips the reference's learning-rate schedule step" +
                (f" ({ref_where.where()})" if ref_where else "") + f" after the optimizer step of `{label}`")
        found.append({"message": f"{what} at {where.where()}: `{where.code}`", "frame": where.as_dict(),
                      "optimizer": label})
    return found


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
        if (any(f.name not in known for f in op.stack[1:]) and _relevant_extension([op]) is None
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


# ------------------------------------------------------------------------------------------------- the ladder


def _module(trace: Trace, op: Op | None) -> ModuleCall | None:
    return None if op is None or op.module_call is None else trace.modules[op.module_call]


def _shape(op: Op) -> str:
    return f"{op.name.split('.')[1] if op.name.startswith('aten.') else op.name}({op.shapes[0] if op.shapes else []})"


def _caller_of_path_change(c: Op, r: Op) -> tuple[Frame, str] | None:
    """Rule 3: with the same outermost function (a fork of the reference's code), the candidate frame whose callee
    differs from the reference's at the same depth, and what it calls instead."""
    if not c.stack or not r.stack or c.stack[0].name != r.stack[0].name:
        return None
    for level in range(1, min(len(c.stack), len(r.stack))):
        if c.stack[level].name != r.stack[level].name:
            return c.stack[level - 1], (f"candidate calls `{c.stack[level].function}` where the reference calls "
                                        f"`{r.stack[level].function}`")
    return None


def _gap_lines(trace: Trace, after: Op | None, before: Op | None) -> list[tuple[Frame, bool]]:
    start = after.line_index - 1 if after is not None else 0
    end = before.line_index if before is not None else len(trace.lines)
    return trace.lines[max(start, 0):end]


def _grad_switch(ref: Trace, cand: Trace, d: _Difference) -> Frame | None:
    """Rule 4: the line where the reference switches the autograd mode since its last agreeing operation, mapped to
    the candidate line at the same position since the candidate's last agreeing operation."""
    assert d.ref is not None and d.cand is not None
    ref_gap, cand_gap = _gap_lines(ref, d.prev_ref, d.ref), _gap_lines(cand, d.prev_cand, d.cand)
    modes = [m for _, m in ref_gap] + [d.ref.grad_enabled]
    switches = [i for i in range(len(ref_gap)) if modes[i] != modes[i + 1]]
    if switches and len(cand_gap) == len(ref_gap):
        return cand_gap[switches[-1]][0]
    cand_modes = [m for _, m in cand_gap] + [d.cand.grad_enabled]
    switches = [i for i in range(len(cand_gap)) if cand_modes[i] != cand_modes[i + 1]]
    return cand_gap[switches[-1]][0] if switches else None


def _source(frame: Frame) -> str:
    path = Path(frame.file) if Path(frame.file).is_absolute() else REPO_ROOT / frame.file
    return linecache.getline(str(path), frame.line).strip()


def _inserted_at(ref: Trace, cand: Trace, d: _Difference) -> tuple[Frame | None, str]:
    """Rule 5: where extra candidate operations start, relative to the last agreeing operation (and why, when a
    condition decided it)."""
    c, prev = d.cand, d.prev_cand
    assert c is not None
    if prev is None or not c.stack:
        return c.frame(), ""
    located = None
    for level in range(min(len(c.stack), len(prev.stack))):
        here, there = c.stack[level], prev.stack[level]
        if here.call != there.call:  # another call of the same function from one line: the calling line
            located = c.stack[level - 1] if level else here
            break
        if here.line != there.line:
            located = here
            break
    if located is None:  # one stack extends the other: the extra operation is on the shorter one's last line
        located = c.stack[len(prev.stack) - 1] if len(c.stack) > len(prev.stack) else c.frame()
    assert located is not None
    reference_runs_it = d.ref is not None and any((f.file, f.line) == (located.file, located.line)
                                                  for f in d.ref.stack)
    if not reference_runs_it:  # a block the reference does not enter: name the condition that let it run
        start = max(prev.line_index - 1, 0)
        before = [i for i in range(start, c.line_index) if cand.lines[i][0].call == located.call
                  and cand.lines[i][0].line < located.line]
        if before and _source(cand.lines[before[-1]][0]).startswith(BRANCH):
            cause = _condition_cause(ref, cand, before[-1], d.ref)
            return cause or (cand.lines[before[-1]][0], " (the block entered by this condition)")
    return located, ""


def _reference_line(ref: Trace, here: Frame, end: int) -> int | None:
    """The index in ``ref.lines``, before ``end``, of the last run of the reference's counterpart of the candidate
    line ``here``: the same function name and source, else (a changed line of the same code) the same file and
    line."""
    for same in (lambda f: f.name == here.name and f.code == here.code,
                 lambda f: (f.file, f.line) == (here.file, here.line)):
        found = next((i for i in range(min(end, len(ref.lines)) - 1, -1, -1) if same(ref.lines[i][0])), None)
        if found is not None:
            return found
    return None


def _condition_of_skipped(ref: Trace, cand: Trace, d: _Difference) -> tuple[int, Frame, Frame] | None:
    """For operations the candidate skips (``d``, a delete) that the reference ran inside an ``if`` block: the index
    in ``cand.lines`` of the candidate's run of that condition (same file and line, or same function and source),
    the reference's condition and its block's first line (None when the block was not entered through such a
    condition, or the candidate entered it too)."""
    if not d.deleted:
        return None
    entering = _entering_condition(ref, d.prev_ref, d.deleted[0])
    if entering is None:
        return None
    cond, body = ref.lines[entering[0]][0], entering[1]
    start = max(d.prev_cand.line_index - 1, 0) if d.prev_cand is not None else 0
    end = d.cand.line_index if d.cand is not None else len(cand.lines)
    for i in range(start, min(end, len(cand.lines))):
        f = cand.lines[i][0]
        if (f.file, f.line) != (cond.file, cond.line) and (f.name, f.code) != (cond.name, cond.code):
            continue
        following = next((g for g, _ in cand.lines[i + 1:] if g.call == f.call), None)
        if following is not None and following.line == f.line + body.line - cond.line:
            return None  # the candidate entered the block: the operations are missing for another reason
        return i, cond, body
    return None


def _condition_cause(ref: Trace, cand: Trace, index: int, r: Op | None) -> tuple[Frame, str] | None:
    """When the candidate's branch condition (line ``index``) read a ``self.<attr>`` value other than the same
    condition in the reference, the candidate's last line before it that assigned that attribute."""
    here = cand.lines[index][0]
    values = cand.conditions.get(index, {})
    i = _reference_line(ref, here, r.line_index if r is not None else len(ref.lines))
    theirs = ref.conditions.get(i, {}) if i is not None else {}
    differing = [n for n in values if n in theirs and values[n] != theirs[n]]
    for name in differing:
        assigns = re.compile(rf"\bself\.{name}\s*(?:[-+*/%@&|^]|//|\*\*)?=(?!=)")
        for i in range(index - 1, -1, -1):
            if assigns.search(cand.lines[i][0].code):
                return cand.lines[i][0], (f" (the condition `{here.code}` at line {here.line} reads `self.{name}` = "
                                          f"{values[name]!r}, the reference's {theirs[name]!r}; last assigned)")
    return None


def _deleted_at(cand: Trace, d: _Difference) -> Frame | None:
    """Rule 6: where the reference's missing operations belong in the candidate. The reference's last agreeing
    operation and its first missing one share some calls; at the innermost shared call (whose function the candidate
    also runs at that depth): on the same line -> the candidate's line at its last agreeing operation. Otherwise, when
    the missing operations ran inside a call made from a function the candidate's next operation also runs in (a
    call replaced by something else) -> the candidate's line there; else the first candidate line run in the shared
    call after its last agreeing operation."""
    pr, gone, pc = d.prev_ref, (d.deleted[0] if d.deleted else d.ref), d.prev_cand
    if pr is None or pc is None or gone is None:
        return d.cand.frame() if d.cand is not None else None
    shared = 0
    while (shared < min(len(pr.stack), len(gone.stack), len(pc.stack))
           and pr.stack[shared].call == gone.stack[shared].call
           and pc.stack[shared].name == pr.stack[shared].name):
        shared += 1
    if not shared:
        return d.cand.frame() if d.cand is not None else pc.frame()
    level = shared - 1
    if pr.stack[level].line == gone.stack[level].line:
        return pc.stack[level]
    nc = d.cand
    if nc is not None:  # the missing operations ran inside a call the candidate replaced by its next operation
        common = 0
        while common < min(len(gone.stack), len(nc.stack)) and gone.stack[common].name == nc.stack[common].name:
            common += 1
        if common > shared and len(gone.stack) > common:
            return nc.stack[common - 1]
    call = pc.stack[level].call
    later = [f for f, _ in cand.lines[pc.line_index:] if f.call == call]
    return later[0] if later else pc.stack[level]


def _module_change(ref: Trace, cand: Trace, d: _Difference) -> tuple[Frame, str] | None:
    """Rule 2: the candidate op runs inside a module other than the reference's at this point."""
    mc, mr = _module(cand, d.cand), _module(ref, d.ref)
    if mc is None or not mc.stack or (mr is not None and mr.name == mc.name):
        return None
    other = f"`{mr.name}`" if mr is not None else "no module"
    return mc.stack[-1], f"candidate calls `{mc.name}` (call {mc.count}) where the reference runs {other}"


def _first_draw(ops: list[Op]) -> Op | None:
    """The first draw from a global stream (what the reference's RNG digests see), else the first draw."""
    draws = [o for o in ops if o.random]
    return next((o for o in draws if o.stream != "explicit generator"), draws[0] if draws else None)


def _relevant_extension(ops: list[Op]) -> tuple[int, str] | None:
    """Among candidate operations after the reference's whole step (a multi-actor trainer's extra actors): the first
    one that matters for the compared state, and why — a draw from a global stream, an in-place write to a compared
    parameter, or a compared parameter used with ``requires_grad`` under autograd (a gradient can leak into it)."""
    for i, op in enumerate(ops):
        if op.random and op.stream != "explicit generator":
            return i, "draw"
        if op.writes is not None and op.writes.startswith(COMPARED_PARAM_ROLES) and op.optimizer_step is None:
            return i, f"writes `{op.writes}`"
        leaking = [n for n, grad in op.params if grad and n.startswith(COMPARED_PARAM_ROLES)]
        if leaking and op.grad_enabled and op.name.split(".")[1] not in _NOT_DIFFERENTIATING:
            return i, f"uses `{leaking[0]}` with requires_grad under autograd"
    return None


def _leak_past_freeze(ref: Trace, cand: Trace, d: _Difference) -> tuple[Frame, str, str] | None:
    """Candidate operations after the reference's whole step (only the harness's own operations, which have no user
    frame, may follow on the reference's side) that use a compared parameter with ``requires_grad`` under autograd
    while the candidate froze other compared parameters for them (:func:`_incomplete_freeze`); None otherwise."""
    if d.tag != "insert" or (d.ref is not None and any(o.stack for o in ref.ops[d.ref.index:])):
        return None
    relevant = _relevant_extension(d.inserted)
    if relevant is None or not relevant[1].startswith("uses"):
        return None
    op = d.inserted[relevant[0]]
    found = _incomplete_freeze(cand, op)
    if found is None:
        return None
    d.cand = op
    return found[0], "freeze", f"after the reference's step, candidate operation `{_shape(op)}` {relevant[1]}{found[1]}"


def _incomplete_freeze(cand: Trace, op: Op) -> tuple[Frame, str] | None:
    """A compared parameter used with ``requires_grad`` after the reference's step while the candidate froze other
    compared parameters before (``requires_grad_(False)``): the freeze left it out, and what a freeze covers is
    chosen where the freezing function is called (or its context built) — the last line before the freezing code
    ran that names that function; else the freezing line itself. None when the candidate froze nothing compared."""
    leaking = next((n for n, grad in op.params if grad and n.startswith(COMPARED_PARAM_ROLES)), None)
    if leaking is None:
        return None
    flips = [f for f in cand.flips if f.op <= op.index and not f.value and f.name != leaking
             and f.name.startswith(COMPARED_PARAM_ROLES) and f.stack]
    if not flips:
        return None
    flip = flips[-1]
    freezer = flip.stack[-1]
    why = (f"; the candidate freezes `{flip.name}` and others before it, not `{leaking}`"
           f" ({freezer.where()})")
    start = next((i for i in range(flip.line_index) if cand.lines[i][0].call == freezer.call), flip.line_index)
    calls = re.compile(rf"\b{re.escape(freezer.name)}\s*\(")
    for i in range(start - 1, -1, -1):
        here = cand.lines[i][0]
        if calls.search(here.code):
            return here, why + f"; the frozen tensors are chosen where `{freezer.name}` is called"
    return freezer, why


def _schedule_cause(ref: Trace, cand: Trace, d: _Difference) -> tuple[Frame | None, str, str] | None:
    """Rule 0: the difference is inside an optimizer step whose learning rate (or another hyperparameter) differs
    from the reference's, and the two sides' learning-rate schedule steps differ in this step too -> the first
    schedule step the candidate skips (located like missing operations) or runs in addition. A schedule step changes
    no tensor in the step it runs in, only the next step's learning rate, so without this rule the optimizer step
    that uses the learning rate would be named. None when the hyperparameters agree or the schedules do."""
    c, r = d.cand, d.ref
    if c is None or r is None or c.optimizer_step is None or r.optimizer_step is None:
        return None
    mine, theirs = cand.optimizer_steps[c.optimizer_step], ref.optimizer_steps[r.optimizer_step]
    if mine.hyper == theirs.hyper:
        return None
    matcher = difflib.SequenceMatcher(None, [o.key for o in ref.ops], [o.key for o in cand.ops], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        gone = next((o for o in ref.ops[i1:i2] if o.name == SCHEDULE_STEP), None)
        extra = next((o for o in cand.ops[j1:j2] if o.name == SCHEDULE_STEP), None)
        why = f"; the optimizer of `{mine.label}` steps with another learning rate than the reference's"
        if extra is not None and (gone is None or extra.index - j1 <= gone.index - i1):
            return extra.frame(), "lr schedule", f"candidate runs an extra learning-rate schedule step{why}"
        if gone is not None:
            prev_c = cand.ops[j1 - 1] if j1 else None
            missing = _Difference("delete", gone, cand.ops[j1] if j1 < len(cand.ops) else None,
                                  ref.ops[gone.index - 1] if gone.index else None, prev_c, [gone])
            where = gone.frame()
            return _deleted_at(cand, missing), "lr schedule", (
                "candidate skips the reference's learning-rate schedule step" +
                (f" ({where.where()})" if where else "") + why)
    return None


def _locate(ref: Trace, cand: Trace, d: _Difference) -> tuple[Frame | None, str, str]:
    """``(frame, rule, what)`` for a difference."""
    c, r = d.cand, d.ref
    extra_draw = _first_draw(d.inserted) if d.tag in ("insert", "replace") else None
    missing_draw = _first_draw(d.deleted) if d.tag in ("delete", "replace") else None
    if d.tag == "replace" and c is not None and r is not None and (c.key[:2], c.key[3]) == (r.key[:2], r.key[3]):
        extra_draw = missing_draw = None  # the same draw, only the autograd mode or the inputs differ
    if extra_draw is not None:
        if missing_draw is not None and d.tag == "replace":
            return extra_draw.frame(), "rng", (f"candidate draws `{_shape(extra_draw)}` ({extra_draw.stream}) where "
                                               f"the reference draws `{_shape(missing_draw)}` ({missing_draw.stream})")
        return extra_draw.frame(), "rng", f"candidate draws an extra `{_shape(extra_draw)}` ({extra_draw.stream})"
    if missing_draw is not None:
        where = missing_draw.frame()
        return _deleted_at(cand, d), "rng", (f"candidate skips the draw `{_shape(missing_draw)}` "
                                             f"({missing_draw.stream}) the reference makes"
                                             + (f" at {where.where()}" if where else ""))
    if d.tag == "value" and c is not None and c.random:
        return c.frame(), "rng", f"the draw `{_shape(c)}` gives other numbers than the reference's"
    if d.tag == "insert":
        assert c is not None
        frame, why = _inserted_at(ref, cand, d)
        return frame, "extra operations", f"candidate runs `{_shape(c)}` and more the reference does not{why}"
    if d.tag == "delete":
        gone = d.deleted[0]
        what = f"candidate skips the reference's `{_shape(gone)}`" + (f" ({gone.frame().where()})" if gone.frame()
                                                                      else "")
        skipped = _condition_of_skipped(ref, cand, d)
        cause = _condition_cause(ref, cand, skipped[0], d.ref) if skipped is not None else None
        if cause is not None:  # the condition skipped it because it read another value
            return cause[0], "missing operations", what + cause[1]
        return _deleted_at(cand, d), "missing operations", what
    assert c is not None and r is not None
    changed = _module_change(ref, cand, d)
    if changed is not None:
        return changed[0], "module", changed[1]
    caller = _caller_of_path_change(c, r)
    if caller is not None:
        return caller[0], "call path", caller[1]
    if c.key == r.key and c.inputs != r.inputs:
        d.tag = "value"
    if d.tag == "replace" and c.key[:2] == r.key[:2] and c.key[2] != r.key[2]:
        switch = _grad_switch(ref, cand, d)
        mode = "enabled" if c.grad_enabled else "disabled"
        return switch or c.frame(), "grad mode", f"candidate runs `{_shape(c)}` with autograd {mode}, the reference not"
    if d.tag == "replace":
        return c.frame(), "other operation", f"candidate runs `{_shape(c)}` where the reference runs `{_shape(r)}`"
    mc, mr = _module(cand, c), _module(ref, r)
    if mc is not None and mr is not None and mc.inputs != mr.inputs and mc.stack:
        return mc.stack[-1], "module input", f"forward of `{mc.name}` (call {mc.count}) gets other inputs"
    inputs = "its inputs differ" if c.inputs != r.inputs else "same inputs, other result"
    return c.frame(), "value", f"`{_shape(c)}` gives other numbers ({inputs})"


# ------------------------------------------------------------------------------------------- supporting findings


def _describe(op: Op) -> str:
    where = op.frame()
    return f"#{op.index} {_shape(op)}" + (f" {op.stream}" if op.random else "") + (
        f" @ {where.file}:{where.line}" if where else "")


def _excerpt(trace: Trace, at: Op | None, fallback: int) -> list[str]:
    centre = at.index if at is not None else fallback
    return [_describe(o) for o in trace.ops[max(centre - EXCERPT, 0):centre + EXCERPT + 1]]


def module_finding(ref: Trace, cand: Trace) -> dict[str, Any] | None:
    """The first candidate module call (in execution order) whose inputs or outputs differ from the reference's
    call of the same canonical name and call index (None when every shared call agrees)."""
    by_key = {(m.name, m.count): m for m in ref.modules}
    for m in cand.modules:
        other = by_key.get((m.name, m.count))
        if other is None:
            continue
        for side, mine, theirs in (("input", m.inputs, other.inputs), ("output", m.outputs, other.outputs)):
            for i, (a, b) in enumerate(zip(mine, theirs)):
                if a != b:
                    where = m.stack[-1] if m.stack else None
                    text = (f"first differing value: forward of `{m.name}` (call {m.count}): {side} {i} "
                            f"(shape {a[1]}) differs" + (f"; called at {where.where()}" if where else ""))
                    return {"module": m.name, "call": m.count, "side": side, "index": i, "shape": a[1],
                            "frame": where.as_dict() if where else None, "message": text}
    return None


def gradient_finding(ref: Trace, cand: Trace) -> dict[str, Any] | None:
    """The first candidate optimizer step whose consumed gradients differ from the reference's step of the same
    parameters (same label and occurrence), with the parameters concerned."""
    seen: dict[str, int] = {}
    ref_steps: dict[tuple[str, int], Any] = {}
    for s in ref.optimizer_steps:
        ref_steps[(s.label, seen.get(s.label, 0))] = s
        seen[s.label] = seen.get(s.label, 0) + 1
    seen = {}
    for s in cand.optimizer_steps:
        n = seen.get(s.label, 0)
        seen[s.label] = n + 1
        other = ref_steps.get((s.label, n))
        if other is None:
            continue
        differing = sorted(k for k in s.grads if other.grads.get(k, s.grads[k]) != s.grads[k])
        if differing:
            where = s.stack[-1] if s.stack else None
            text = (f"gradient consumed by the optimizer of `{s.label}` differs ({len(differing)} parameter(s), "
                    f"first `{differing[0]}`)" + (f"; stepped at {where.where()}" if where else ""))
            return {"optimizer": s.label, "occurrence": n, "parameters": differing,
                    "frame": where.as_dict() if where else None, "message": text}
    return None


def schedule_finding(ref: Trace, cand: Trace) -> dict[str, Any] | None:
    """The first difference between the two sides' sequences of optimizer steps and target updates."""
    def compared(trace: Trace) -> list[str]:
        return [e for e, _ in trace.schedule() if e.split(" of ", 1)[1].startswith(COMPARED_PARAM_ROLES)]

    a, b = compared(ref), compared(cand)
    if a == b:
        return None
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    mine = b[i] if i < len(b) else None
    theirs = a[i] if i < len(a) else None
    if mine is None:
        text = f"candidate stops after {i} optimizer steps/target updates; the reference then runs `{theirs}`"
    elif theirs is None:
        text = f"candidate runs an extra `{mine}` after the reference's {i} optimizer steps/target updates"
    else:
        text = f"candidate runs `{mine}` where the reference runs `{theirs}` (event {i + 1})"
    return {"reference": a, "candidate": b, "index": i, "message": text}


def _requires_grad_only(d: _Difference) -> bool:
    """The same operation on the same values, only the inputs' ``requires_grad`` differ (a detach or a frozen
    parameter more or less)."""
    if d.cand is None or d.ref is None or d.tag not in ("replace", "value"):
        return False

    def plain(op: Op) -> tuple[Any, ...]:
        args = tuple(a[:3] if isinstance(a, tuple) and a and a[0] == "T" else a for a in op.key[1])
        return op.key[0], args, op.key[2], op.key[3], tuple(op.inputs)

    return d.cand.key != d.ref.key and plain(d.cand) == plain(d.ref)


def _in_backward(op: Op | None) -> bool:
    return op is not None and any("backward" in f.code for f in op.stack[-1:])


def compare_traces(ref: Trace, cand: Trace) -> Localisation:
    """The :class:`Localisation` of two recorded steps (reference first)."""
    d = first_difference(ref, cand)
    module, gradient, schedule = module_finding(ref, cand), gradient_finding(ref, cand), schedule_finding(ref, cand)
    if d is None:
        return Localisation("none", "the step replays identically on both sides: every operation, random draw, "
                                    "module call and optimizer step agrees, apart from candidate-only operations that "
                                    "touch nothing compared (the divergence comes from state carried into this step)",
                            module=module, gradient=gradient, schedule=schedule)
    extension = None
    relevant = _relevant_extension(d.inserted) if d.tag == "insert" and d.ref is None else None
    if relevant is not None:  # after the reference's whole step: start at the operation that matters
        d.inserted = d.inserted[relevant[0]:]
        d.cand = d.inserted[0]
        extension = relevant[1]
    leak = _leak_past_freeze(ref, cand, d)
    if leak is not None:
        frame, rule, what = leak
    elif extension is not None and extension != "draw":
        frame, rule = d.cand.frame(), "extension"
        what = f"after the reference's step, candidate operation `{_shape(d.cand)}` {extension}"
    else:
        frame, rule, what = _locate(ref, cand, d)
        cause = _schedule_cause(ref, cand, d) if rule != "rng" else None
        if cause is not None:
            frame, rule, what = cause
    if rule == "rng":
        kind = "rng"
    elif schedule is not None or rule == "lr schedule":
        kind = "order"
    elif rule in ("grad mode", "freeze") or (extension or "").startswith("uses") or _requires_grad_only(d) \
            or _in_backward(d.cand):
        kind = "gradient"
    else:
        kind = "numeric"
    frames: list[Frame] = []
    if frame is not None:
        stack = d.cand.stack if d.cand is not None and frame in d.cand.stack else ()
        outer = list(reversed(stack[:stack.index(frame)])) if stack else []
        frames = [frame, *outer]
    message = what + (f" at {frame.where()}: `{frame.code}`" if frame is not None else "")
    support = {"order": schedule, "gradient": gradient, "numeric": module}.get(kind)
    if support is not None:
        message += f"; {support['message']}"
    ref_op = d.ref if d.tag != "insert" else d.prev_ref
    first_line = (frame.file, frame.line) if frame is not None else None
    more = [m for m in further_differences(ref, cand, d) if (m["frame"]["file"], m["frame"]["line"]) != first_line]
    if rule != "lr schedule":
        named = {first_line, *((m["frame"]["file"], m["frame"]["line"]) for m in more)}
        more += [m for m in schedule_step_differences(ref, cand)
                 if (m["frame"]["file"], m["frame"]["line"]) not in named]
    return Localisation(
        kind, message, [f.as_dict() for f in frames],
        [f.as_dict() for f in reversed(ref_op.stack)] if ref_op is not None else [],
        {"reference": _excerpt(ref, d.deleted[0] if d.deleted else d.ref, len(ref.ops)),
         "candidate": _excerpt(cand, d.inserted[0] if d.inserted else d.cand, len(cand.ops))},
        rule, module, gradient, schedule, more=more)
