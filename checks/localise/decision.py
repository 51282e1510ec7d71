"""Blame the decision, not the plumbing: a located line inside a shared helper is moved to the call that decided.

A research trainer routes many computations through small helpers (``sgd_step(opt, loss, sched=None)``,
``polyak(target, source, tau)``, ``mlp(sizes, ...)``). When the first difference shows inside such a helper, the
helper's line is rarely the defect: the call that passed another argument (no scheduler, the wrong source network)
is. The rule, judged on the traced step itself:

* the function is called in this step from two or more call sites, and
* every call of it from *another* site computed only values the reference also computed (the helper works),

then the located frame moves out to its caller, and so on while the caller is such a helper too. A defect inside
the helper itself makes its other calls differ as well, and the helper's line stays named.

At construction the second condition cannot be judged (after the first difference the global stream has moved, so
every later value differs): a function the factory calls from two or more places is a builder whose product its
arguments decide (``mlp([obs, 256, 256])``), and the call that passed them is named. The helper's line stays in the
message as context.
"""

from __future__ import annotations

from collections.abc import Iterable

from checks.localise.frames import Frame
from checks.localise.trace import Op, Trace

_Site = tuple[str, int]
_Function = tuple[str, str]


class Decisions:
    """The call sites of every candidate function in one traced step, and which calls computed only known values."""

    def __init__(self, cand: Trace, known: Iterable[str], construction: bool = False):
        known = frozenset(known)
        self.construction = construction
        #: function -> call serial -> (call site, whether every operation of the call computed a known value)
        self.calls: dict[_Function, dict[int, tuple[_Site, bool]]] = {}
        for op in cand.ops:
            agrees = all(d in known for d in op.computed)
            for i in range(1, len(op.stack)):
                f, caller = op.stack[i], op.stack[i - 1]
                calls = self.calls.setdefault((f.file, f.function), {})
                site, ok = calls.get(f.call, ((caller.file, caller.line), True))
                calls[f.call] = (site, ok and agrees)

    def _helper(self, frame: Frame) -> bool:
        calls = self.calls.get((frame.file, frame.function), {})
        here = calls.get(frame.call)
        if here is None:
            return False
        others = [ok for site, ok in calls.values() if site != here[0]]
        return bool(others) and (self.construction or all(others))

    def decide(self, frame: Frame | None, stack: tuple[Frame, ...]) -> Frame | None:
        """``frame`` (a frame of ``stack``, outermost first), moved out of helpers to the call that decided."""
        k = call_position(frame, stack)
        if k is None or not self._helper(stack[k]):
            return frame
        while k > 0 and self._helper(stack[k]):
            k -= 1
        return stack[k]


def helper_context(located: Frame | None, decided_frame: Frame | None, why: str = "") -> str:
    """The message's note on the shared helper a located line was moved out of (empty when it was not moved);
    ``why`` says what the helper's line did."""
    if located is None or decided_frame is None or located == decided_frame:
        return ""
    return (f" (through the shared helper `{located.function}`, {located.file}:{located.line}: "
            f"`{located.code}`{why})")


def call_position(frame: Frame | None, stack: tuple[Frame, ...]) -> int | None:
    """Where ``frame``'s call is in ``stack`` (a located line such as a loop header runs no operation itself: the
    call it belongs to is what is found), None when it is not there."""
    if frame is None:
        return None
    if frame in stack:
        return stack.index(frame)
    same = [k for k, f in enumerate(stack) if (f.file, f.function, f.call) == (frame.file, frame.function, frame.call)]
    return same[-1] if same and frame.call else None


def stack_of(cand: Trace, frame: Frame | None, *hints: Op | None) -> tuple[Frame, ...]:
    """The user stack (outermost first) ``frame``'s call belongs to: of the first of ``hints`` that holds it, else
    of the first candidate operation that does (empty when none)."""
    if frame is None:
        return ()
    for op in (*hints, *cand.ops):
        if op is not None and call_position(frame, op.stack) is not None:
            return op.stack
    return ()


def decided(decisions: Decisions | None, cand: Trace, frame: Frame | None, *hints: Op | None) -> Frame | None:
    """``frame`` moved out of shared helpers (:meth:`Decisions.decide`); unchanged without ``decisions``."""
    if decisions is None or frame is None:
        return frame
    return decisions.decide(frame, stack_of(cand, frame, *hints))


def known_values(ref: Trace) -> frozenset[str]:
    """Every value (digest) the reference's step reads or computes."""
    return frozenset(d for o in ref.ops for d in (*o.inputs, *o.outputs))
