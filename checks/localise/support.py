"""Findings beside the located line: further structural differences of the same step, learning-rate schedule steps
one side skips, the first module call with other inputs or outputs, the first optimizer step that consumes other
gradients, and the first difference of the optimizer-step/target-update schedule."""

from __future__ import annotations

from typing import Any

from checks.localise.align import Difference, structural_differences
from checks.localise.decision import Decisions, decided
from checks.localise.rules import locate
from checks.localise.trace import SCHEDULE_STEP, Op, Trace
from pogo_audit.model.protocol import COMPARED_PARAM_ROLES


def further_differences(ref: Trace, cand: Trace, first: Difference, limit: int = 6,
                        decisions: Decisions | None = None) -> list[dict[str, Any]]:
    """Structural differences after ``first`` (:func:`structural_differences`), each located like the first.
    A defect that only changes values after the first difference stays hidden (values already differ there)."""
    anchor = next((k for k, o in enumerate(cand.ops) if o is (first.cand or first.prev_cand)), -1)
    seen = set()
    out: list[dict[str, Any]] = []
    for d in structural_differences(ref, cand, anchor):
        try:
            frame, _rule, what = locate(ref, cand, d)
        except (IndexError, ValueError, AttributeError):  # an odd block: keep the others
            continue
        frame = decided(decisions, cand, frame, d.cand, d.prev_cand, *d.inserted[:1])
        if frame is None or (frame.file, frame.line) in seen:
            continue
        seen.add((frame.file, frame.line))
        out.append({"message": f"{what} at {frame.where()}: `{frame.code}`", "frame": frame.as_dict()})
        if len(out) >= limit:
            break
    return out


def schedule_step_differences(ref: Trace, cand: Trace, decisions: Decisions | None = None) -> list[dict[str, Any]]:
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
        where = decided(decisions, cand, where)
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
