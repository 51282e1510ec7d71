"""Replaying a divergent step under tracing: on copies of both trainers (:func:`localise_step`), again with every
aligned operation given the reference's result so that further defects of the step show (repaired replays), with a
condition forced into the block one side skipped (forced replays), and both constructions
(:func:`localise_construction`)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from checks.localise.align import (
    Difference,
    ValueNeutral,
    aligned_pairs,
    differences,
    extension_ops,
    first_difference,
    shape_text,
    structural_differences,
)
from checks.localise.compare import compare_traces
from checks.localise.decision import Decisions, decided, helper_context, known_values
from checks.localise.frames import Assign, Frame, Jump
from checks.localise.result import Localisation
from checks.localise.rules import (
    condition_of_skipped,
    entering_condition,
    first_draw,
    inserted_at,
    locate,
    reference_line,
)
from checks.localise.trace import Repair, Trace, record_step, recording
from pogo_audit.core.compare import parameter_differences

#: ``replay(trainer, batch, **options) -> (trace, output, error)``: one traced step from ``trainer``'s state, which it
#: leaves as it was (:func:`copied_replay`, :func:`forked_replay`)
Replay = Callable[..., tuple[Trace, Any, Any]]


def copied_replay(trainer: Any, batch: Any, **options: Any) -> tuple[Trace, Any, Any]:
    """A replay on deep copies of the trainer and the batch."""
    return record_step(copy.deepcopy(trainer), copy.deepcopy(batch), **options)


def forked_replay(trainer: Any, batch: Any, **options: Any) -> tuple[Trace, Any, Any]:
    """A replay in a forked child (:func:`checks.localise.fork.run_forked`): no copy of the trainer is made, its
    step's exception comes back as a :class:`checks.localise.fork.Raised`."""
    from checks.localise.fork import run_forked

    return run_forked(record_step, trainer, batch, **options)


def error_text(error: Any) -> str:
    """``"TypeError: first line of the message"`` of an exception or a :class:`checks.localise.fork.Raised`."""
    name = getattr(error, "name", None) if not isinstance(error, BaseException) else type(error).__name__
    text = str(error).strip()
    return f"{name or type(error).__name__}: {text.splitlines()[0] if text else ''}"


def localise_step(reference: Any, candidate: Any, batch: Any, rounds: int | None = None,
                  replay: Replay = copied_replay) -> Localisation:
    """Localise the first difference between one step of ``reference`` and of ``candidate``
    (:class:`pogo_audit.core.harness.IsolatedTrainer` objects in the state just before the step; neither is touched:
    every replay runs on a copy, ``replay``), then up to ``rounds`` (default :data:`REPAIR_ROUNDS`) repaired replays
    of the candidate name the further defects of the same step (:func:`repaired_differences`)."""
    with warnings.catch_warnings():  # the replays are diagnostics: what they warn was already seen in the real run
        warnings.simplefilter("ignore")
        ref_trace, _, ref_error = replay(reference, batch, keep=True)
        cand_trace, _, cand_error = replay(candidate, batch)
        result = compare_traces(ref_trace, cand_trace, differing=held_differently(reference, candidate))
        if result.kind != "none" and ref_error is None and cand_error is None:
            seen = {(f["file"], f["line"]) for f in result.frames[:1]} | {
                (m["frame"]["file"], m["frame"]["line"]) for m in result.more}
            rounds = REPAIR_ROUNDS if rounds is None else rounds
            result.more += repaired_differences(ref_trace, cand_trace, candidate, batch, seen, rounds,
                                                replay=replay)
            result.more += forced_differences(ref_trace, cand_trace, candidate, batch, seen, rounds, replay=replay)
    for side, error in (("reference", ref_error), ("candidate", cand_error)):
        if error is not None:
            result.errors[side] = error_text(error)
            result.message += f"; the {side}'s replay raised {result.errors[side]}"
    return result


def held_differently(reference: Any, candidate: Any) -> dict[str, str]:
    """The parameters both trainers (``IsolatedTrainer`` objects) name but hold with another shape, dtype or value
    (an architecture or initialisation ``--isolate`` could not synchronise), each with how; {} when a side's
    ``parameters()`` raises (the step's replay reports that)."""
    try:
        ref, cand = reference.call("parameters"), candidate.call("parameters")
    except Exception:  # noqa: BLE001 - the trainer's own failure: no parameter is called differing
        return {}
    return {k: how for k, how in parameter_differences(ref, cand).items() if k in ref and k in cand}


def _unfinished(ref: Trace, cand: Trace, d: Difference) -> bool:
    """The first difference is only the reference's step going on where the candidate raised: nothing the candidate
    ran from there (before the raise: a snapshot of its actor, ...) changes a value the reference's step has."""
    if d.tag not in ("delete", "replace"):
        return False
    start = d.cand.index if d.cand is not None else len(cand.ops)
    rest = [o for o in cand.ops[start:] if o.stack]  # without a user frame: the replay's own restores after the raise
    return ValueNeutral(ref, cand, extension_ops(ref, cand)).inserted(rest)


def localise_crash(reference: Any, candidate: Any, batch: Any, replay: Replay = copied_replay) -> Localisation:
    """What a candidate step that raises computed before raising, against the reference's same step: both are
    replayed from the state before the step (as :func:`localise_step`); the candidate's trace ends at the raise.
    The first difference *before* that point is located like any other (a shape decided earlier than the operation
    that fails on it); when the candidate agrees with the reference up to the raise, the localisation says so
    (kind ``none``) and the crash's own line stands."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_trace, _, ref_error = replay(reference, batch, keep=False)
        cand_trace, _, cand_error = replay(candidate, batch)
    d = first_difference(ref_trace, cand_trace)
    if ref_error is not None:
        result = Localisation("none", f"the reference's replay raised {error_text(ref_error)}")
    elif d is None or _unfinished(ref_trace, cand_trace, d):
        done = len(cand_trace.ops)
        result = Localisation("none", f"up to the raise the candidate's step agrees with the reference's ({done} "
                                      "operation(s) compared): the line that raised is where the two part")
    else:
        result = compare_traces(ref_trace, cand_trace, differing=held_differently(reference, candidate))
        result.more = []  # after the first difference the rest of a crashing step is no evidence
    if cand_error is None:
        result.message += "; the candidate's replay did not raise this time"
    else:
        result.errors["candidate"] = error_text(cand_error)
    return result


def localise_construction(reference_factory: Any, candidate_factory: Any, config: Any, dataset_spec: Any,
                          seed: int) -> Localisation:
    """Localise a difference already present after construction (step 0): both factories are run again, each
    through a fresh :class:`pogo_audit.core.harness.IsolatedTrainer` (private global streams, as in the run), under
    tracing. Parameter initialisations draw from the global stream, so building something more, earlier or in
    another order shows as extra draws; those are located where the candidate's construction path parts from its
    last agreeing operation (rule 5), not at the layer that draws (the draws themselves are the library's)."""
    from pogo_audit.core.harness import IsolatedTrainer

    traces = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for factory in (reference_factory, candidate_factory):
            with recording(None) as trace:
                IsolatedTrainer(factory, config, dataset_spec, seed)
            traces.append(trace)
    ref, cand = traces
    result = compare_traces(ref, cand, construction=True)
    d = first_difference(ref, cand)
    involved = d is not None and (first_draw(d.inserted) is not None or first_draw(d.deleted) is not None)
    if involved and d.cand is not None and d.prev_cand is not None:
        located, why = inserted_at(ref, cand, d)
        decisions = Decisions(cand, known_values(ref), construction=True)
        frame = decided(decisions, cand, located, d.cand, d.prev_cand, *d.inserted[:1])
        draw = first_draw(d.inserted) or next((o for o in cand.ops[d.cand.index:] if o.random), None)
        instead = first_draw(d.deleted)
        if frame is not None and draw is not None:
            what = (f"draws `{shape_text(draw)}` ({draw.stream}) where the reference draws `{shape_text(instead)}`"
                    if instead is not None else f"draws an extra `{shape_text(draw)}` ({draw.stream}) and more the "
                                                "reference does not")
            result.frames = [frame.as_dict()]
            result.rule = "construction"
            context = helper_context(located, frame, why)
            result.message = (f"at construction, candidate {what}{'' if context else why} at {frame.where()}: "
                              f"`{frame.code}`{context}")
    return result


#: repaired replays of the candidate after the first one (each aligns again on what the previous one computed; a
#: round runs only while the previous ones named something new)
REPAIR_ROUNDS = 2


#: at most this many further located lines per step
MORE_LIMIT = 8


def repaired_differences(ref: Trace, cand: Trace, candidate: Any, batch: Any, seen: set[tuple[str, int]],
                         rounds: int = REPAIR_ROUNDS, jump: Jump | None = None, note: str = "",
                         replay: Replay = copied_replay) -> list[dict[str, Any]]:
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
        trace, _, error = replay(candidate, batch, repair=repair, edit=jump)
        if error is not None or not trace.repaired:
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
    decisions = Decisions(cand, known_values(ref))
    for n, d in enumerate(differences(ref, cand)):
        if len(out) >= limit or (first_only and n):
            break
        try:
            frame, _rule, what = locate(ref, cand, d)
        except (IndexError, ValueError, AttributeError, AssertionError):  # an odd block: keep the others
            continue
        frame = decided(decisions, cand, frame, d.cand, d.prev_cand, *d.inserted[:1])
        if frame is None or (frame.file, frame.line) in seen:
            continue
        seen.add((frame.file, frame.line))
        out.append({"message": f"{what} at {frame.where()}: `{frame.code}` ({note})", "frame": frame.as_dict()})
    return out


#: at most this many skipped branches are entered per replayed step
MAX_JUMPS = 2


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


def _decisions(ref: Trace, cand: Trace) -> Iterator[tuple[Difference, int, int, bool]]:
    """Blocks one side enters and the other skips at a condition both run: ``(difference, index of the candidate's
    condition in cand.lines, the block's first line in the candidate's code, whether the candidate enters it)``,
    found on the alignment by signature (after a value differs, an alignment by values no longer shows blocks)."""
    for d in structural_differences(ref, cand):
        if d.tag == "delete":
            skipped = condition_of_skipped(ref, cand, d)
            if skipped is not None:
                i, cond, body = skipped
                yield d, i, cand.lines[i][0].line + body.line - cond.line, False
        elif d.tag == "insert" and d.inserted:
            entered = entering_condition(cand, d.prev_cand, d.inserted[0])
            if entered is not None and reference_line(ref, cand.lines[entered[0]][0],
                                                       d.ref.line_index if d.ref else len(ref.lines)) is not None:
                yield d, entered[0], entered[1].line, True


def forced_differences(ref: Trace, cand: Trace, candidate: Any, batch: Any, seen: set[tuple[str, int]],
                       rounds: int = REPAIR_ROUNDS, replay: Replay = copied_replay) -> list[dict[str, Any]]:
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
        j = reference_line(ref, here, (d.ref.line_index if d.ref is not None else len(ref.lines)))
        theirs = ref.conditions.get(j, {}) if j is not None else {}
        differing = tuple((n, theirs[n]) for n in mine if n in theirs and mine[n] != theirs[n])
        if differing and len(checks) < MAX_JUMPS:
            checks.append((Assign(here.file, here.line, occurrence, differing), body, enters, here))
    out: list[dict[str, Any]] = []
    for assign, body, enters, here in checks:
        trace, _, error = replay(candidate, batch, edit=assign)
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
        trace, _, error = replay(candidate, batch, edit=jump)
        if error is not None or not trace.edited:
            continue
        note = f"with the condition at {jump.file}:{jump.line} taken as in the reference"
        out += _newly_located(ref, trace, seen, note, MORE_LIMIT - len(out), first_only=True)
        out += repaired_differences(ref, trace, candidate, batch, seen, rounds, jump, note,
                                    replay)[:MORE_LIMIT - len(out)]
        if len(out) >= MORE_LIMIT:
            break
    return out
