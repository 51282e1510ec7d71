"""Two recorded steps → one :class:`~checks.localise.result.Localisation`: the first difference, located by the
ladder (or a rule that replaces its answer), its kind, its frames, the supporting findings and the further
differences of the step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from checks.localise.align import Difference, first_difference, shape_text
from checks.localise.decision import Decisions, call_position, decided, helper_context, known_values, stack_of
from checks.localise.frames import Frame
from checks.localise.result import Localisation, excerpt
from checks.localise.align import relevant_extension
from checks.localise.rules import in_backward, leak_past_freeze, locate, schedule_cause
from checks.localise.support import (
    further_differences,
    gradient_finding,
    module_finding,
    schedule_finding,
    schedule_step_differences,
)
from checks.localise.trace import SCHEDULE_STEP, Op, Trace


def _requires_grad_only(d: Difference) -> bool:
    """The same operation on the same values, only the inputs' ``requires_grad`` differ (a detach or a frozen
    parameter more or less)."""
    if d.cand is None or d.ref is None or d.tag not in ("replace", "value"):
        return False

    def plain(op: Op) -> tuple[Any, ...]:
        args = tuple(a[:3] if isinstance(a, tuple) and a and a[0] == "T" else a for a in op.key[1])
        return op.key[0], args, op.key[2], op.key[3], tuple(op.inputs)

    return d.cand.key != d.ref.key and plain(d.cand) == plain(d.ref)


def _schedule_step_itself(d: Difference) -> bool:
    """The difference is a learning-rate schedule step one side runs and the other does not."""
    ops = d.deleted if d.tag == "delete" else d.inserted if d.tag == "insert" else []
    return bool(ops) and ops[0].name == SCHEDULE_STEP


#: the ``rule`` of a first difference that reads a parameter the two sides already held differently
STATE_RULE = "parameter state"


def compare_traces(ref: Trace, cand: Trace, construction: bool = False,
                   differing: Mapping[str, str] | None = None) -> Localisation:
    """The :class:`Localisation` of two recorded steps (reference first; ``construction``: two factories' runs, where
    a shared builder's line is moved to the call that passed its arguments, :class:`Decisions`). ``differing``: the
    canonical parameters the sides held differently before the step (name -> how): a first difference whose
    operations (up to where both sides agree again) read one of them follows from that state, not from a line of
    this step, and is not located."""
    d = first_difference(ref, cand)
    module, gradient, schedule = module_finding(ref, cand), gradient_finding(ref, cand), schedule_finding(ref, cand)
    if d is None:
        return Localisation("none", "the step replays identically on both sides: every operation, random draw, "
                                    "module call and optimizer step agrees, apart from candidate-only operations that "
                                    "touch nothing compared (the divergence comes from state carried into this step)",
                            module=module, gradient=gradient, schedule=schedule)
    read = sorted({name for op in (d.cand, d.ref, *d.inserted, *d.deleted) if op is not None
                   for name, _ in op.params} & set(differing or ()))
    if read:
        op = d.cand or d.ref
        assert op is not None and differing is not None
        return Localisation("numeric", f"the first difference (from `{shape_text(op)}` on) reads {read[0]}, which "
                                       "the two sides held differently "
                                       f"before this step ({differing[read[0]]}): the difference follows from that "
                                       "state (see the parameter check and step 0), not from a line of this step",
                            rule=STATE_RULE, module=module, gradient=gradient, schedule=schedule)
    extension = None
    relevant = relevant_extension(d.inserted) if d.tag == "insert" and d.ref is None else None
    if relevant is not None:  # after the reference's whole step: start at the operation that matters
        d.inserted = d.inserted[relevant[0]:]
        d.cand = d.inserted[0]
        extension = relevant[1]
    leak = leak_past_freeze(ref, cand, d)
    if leak is not None:
        frame, rule, what = leak
    elif extension is not None and extension != "draw":
        frame, rule = d.cand.frame(), "extension"
        what = f"after the reference's step, candidate operation `{shape_text(d.cand)}` {extension}"
    else:
        frame, rule, what = locate(ref, cand, d)
        cause = schedule_cause(ref, cand, d) if rule != "random_draw" else None
        if cause is not None:
            frame, rule, what = cause
        elif _schedule_step_itself(d):  # the ladder named the skipped (or extra) schedule step: it is that rule's
            rule = "schedule_step"
    decisions = Decisions(cand, known_values(ref), construction)
    located, frame = frame, decided(decisions, cand, frame, d.cand, d.prev_cand, *d.inserted[:1])
    if rule == "random_draw":
        kind = "rng"
    elif schedule is not None or rule == "schedule_step":
        kind = "order"
    elif rule in ("grad_mode", "leak_past_freeze") or (extension or "").startswith("uses") or _requires_grad_only(d) \
            or in_backward(d.cand):
        kind = "gradient"
    else:
        kind = "numeric"
    frames: list[Frame] = []
    if frame is not None:
        stack = stack_of(cand, frame, d.cand, d.prev_cand, *d.inserted[:1])
        k = call_position(frame, stack)
        outer = list(reversed(stack[:k])) if k is not None else []
        frames = [frame, *outer]
    message = what + (f" at {frame.where()}: `{frame.code}`" if frame is not None else "")
    message += helper_context(located, frame)
    support = {"order": schedule, "gradient": gradient, "numeric": module}.get(kind)
    if support is not None:
        message += f"; {support['message']}"
    ref_op = d.ref if d.tag != "insert" else d.prev_ref
    first_line = (frame.file, frame.line) if frame is not None else None
    more = [m for m in further_differences(ref, cand, d, decisions=decisions)
            if (m["frame"]["file"], m["frame"]["line"]) != first_line]
    if rule != "schedule_step":
        named = {first_line, *((m["frame"]["file"], m["frame"]["line"]) for m in more)}
        more += [m for m in schedule_step_differences(ref, cand, decisions)
                 if (m["frame"]["file"], m["frame"]["line"]) not in named]
    return Localisation(
        kind, message, [f.as_dict() for f in frames],
        [f.as_dict() for f in reversed(ref_op.stack)] if ref_op is not None else [],
        {"reference": excerpt(ref, d.deleted[0] if d.deleted else d.ref, len(ref.ops)),
         "candidate": excerpt(cand, d.inserted[0] if d.inserted else d.cand, len(cand.ops))},
        rule, module, gradient, schedule, more=more)
