"""Which candidate line caused a difference of two aligned traces: the ladder of rules, tried in order
(:data:`LADDER`; each rule's name is the ``rule`` id a localisation carries), and the rules that replace its answer.

The two traces (:mod:`checks.localise.trace`) are aligned operation by operation (``difflib.SequenceMatcher`` on the
operation keys — aten name, argument shapes/dtypes/``requires_grad``/scalars, autograd mode, random stream — and the
digests of the inputs, so only operations computing the same thing from the same values align). The first place
where they part is one of: an operation only the candidate runs (*insert*), one only the reference runs (*delete*), a
different operation or the same one on other values (*replace*), or an aligned operation whose outputs differ
(*value*). Candidate-only operations that touch nothing compared (a multi-actor trainer's snapshots and extra actors)
are skipped. Which candidate line caused it is decided by a short ladder of rules, each explained where it is applied:

1. a random draw involved -> the draw's own line (an extra/changed draw) or the line where the skipped draw belonged;
   the steps part inside a backward pass -> the forward operation before it whose result one side computes with a
   graph and the other detached (a missing or extra ``detach``), when there is one;
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
(:func:`schedule_cause`); a compared parameter used with ``requires_grad`` after the reference's step while the
candidate froze others -> where the freeze's tensors are chosen (:func:`leak_past_freeze`). Further defects of the
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

import difflib
import linecache
import re
from collections.abc import Callable
from pathlib import Path

from checks.localise.align import DETACHING, Difference, ValueNeutral, module_of, relevant_extension, shape_text
from checks.localise.frames import BRANCH, OPENERS, REPO_ROOT, Frame
from checks.localise.trace import SCHEDULE_STEP, Op, Trace
from pogo_audit.model.protocol import COMPARED_PARAM_ROLES





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


def _grad_switch(ref: Trace, cand: Trace, d: Difference) -> Frame | None:
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


def source_text(frame: Frame) -> str:
    path = Path(frame.file) if Path(frame.file).is_absolute() else REPO_ROOT / frame.file
    return linecache.getline(str(path), frame.line).strip()


def inserted_at(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str]:
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
    if located is None:  # one stack extends the other: the extra operation is on the shorter one's last line (the
        # outermost line when the last agreeing operation ran outside the trainer's code, e.g. an RNG restore)
        located = c.stack[max(len(prev.stack) - 1, 0)] if len(c.stack) > len(prev.stack) else c.frame()
    assert located is not None
    reference_runs_it = d.ref is not None and any((f.file, f.line) == (located.file, located.line)
                                                  for f in d.ref.stack)
    if not reference_runs_it:  # a block the reference does not enter: name the condition that let it run
        start = max(prev.line_index - 1, 0)
        before = [i for i in range(start, c.line_index) if cand.lines[i][0].call == located.call
                  and cand.lines[i][0].line < located.line]
        while before and source_text(cand.lines[before[-1]][0]).startswith(OPENERS):
            before.pop()  # `with torch.no_grad():` inside the block: the block's condition is above it
        if before and source_text(cand.lines[before[-1]][0]).startswith(BRANCH):
            cause = _condition_cause(ref, cand, before[-1], d.ref) or _local_cause(cand, before[-1])
            return cause or (cand.lines[before[-1]][0], " (the block entered by this condition)")
    return located, ""


def reference_line(ref: Trace, here: Frame, end: int) -> int | None:
    """The index in ``ref.lines``, before ``end``, of the last run of the reference's counterpart of the candidate
    line ``here``: the same function name and source, else (a changed line of the same code) the same file and
    line."""
    for same in (lambda f: f.name == here.name and f.code == here.code,
                 lambda f: (f.file, f.line) == (here.file, here.line)):
        found = next((i for i in range(min(end, len(ref.lines)) - 1, -1, -1) if same(ref.lines[i][0])), None)
        if found is not None:
            return found
    return None


def condition_of_skipped(ref: Trace, cand: Trace, d: Difference) -> tuple[int, Frame, Frame] | None:
    """For operations the candidate skips (``d``, a delete) that the reference ran inside an ``if`` block: the index
    in ``cand.lines`` of the candidate's run of that condition (same file and line, or same function and source),
    the reference's condition and its block's first line (None when the block was not entered through such a
    condition, or the candidate entered it too)."""
    if not d.deleted:
        return None
    entering = entering_condition(ref, d.prev_ref, d.deleted[0])
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
    i = reference_line(ref, here, r.line_index if r is not None else len(ref.lines))
    theirs = ref.conditions.get(i, {}) if i is not None else {}
    differing = [n for n in values if n in theirs and values[n] != theirs[n]]
    for name in differing:
        assigns = re.compile(rf"\bself\.{name}\s*(?:[-+*/%@&|^]|//|\*\*)?=(?!=)")
        for i in range(index - 1, -1, -1):
            if assigns.search(cand.lines[i][0].code):
                return cand.lines[i][0], (f" (the condition `{here.code}` at line {here.line} reads `self.{name}` = "
                                          f"{values[name]!r}, the reference's {theirs[name]!r}; last assigned)")
    return None


def _local_cause(cand: Trace, index: int) -> tuple[Frame, str] | None:
    """When the candidate's branch condition (line ``index``) is a bare local name (``if critics_first:``), the
    line of the same call that last assigned it before: the value of the condition is decided there."""
    here = cand.lines[index][0]
    m = re.fullmatch(r"\s*(?:el)?if\s+(not\s+)?([A-Za-z_]\w*)\s*:\s*", here.code or "")
    if m is None:
        return None
    assigns = re.compile(rf"^\s*{m.group(2)}\s*(?::[^=]+)?=(?!=)")
    for i in range(index - 1, -1, -1):
        frame = cand.lines[i][0]
        if frame.call == here.call and assigns.search(frame.code or ""):
            return frame, f" (the condition `{here.code.strip()}` at line {here.line} reads `{m.group(2)}`, decided here)"
    return None


def _deleted_at(cand: Trace, d: Difference) -> Frame | None:
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
    if not shared:  # code not written from the reference's: where the candidate stopped computing
        return _producer_of_input(cand, gone, d) or (d.cand.frame() if d.cand is not None else pc.frame())
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


def _producer_of_input(cand: Trace, gone: Op, d: Difference) -> Frame | None:
    """The line of the candidate's last operation, before the gap, that computed a value the reference's first
    missing operation goes on from: the candidate computed what the reference had at that point and stopped there
    (a division, a ``min``, a ``squeeze`` left out of an expression)."""
    end = d.cand.index if d.cand is not None else len(cand.ops)
    wanted = set(gone.inputs)
    for op in reversed(cand.ops[:end]):
        if wanted.intersection(op.computed) and op.frame() is not None:
            return op.frame()
    return None


def _module_change(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame, str] | None:
    """Rule 2: the candidate op runs inside a module other than the reference's at this point."""
    mc, mr = module_of(cand, d.cand), module_of(ref, d.ref)
    if mc is None or not mc.stack or (mr is not None and mr.name == mc.name):
        return None
    other = f"`{mr.name}`" if mr is not None else "no module"
    return mc.stack[-1], f"candidate calls `{mc.name}` (call {mc.count}) where the reference runs {other}"


def first_draw(ops: list[Op]) -> Op | None:
    """The first draw from a global stream (what the reference's RNG digests see), else the first draw."""
    draws = [o for o in ops if o.random]
    return next((o for o in draws if o.stream != "explicit generator"), draws[0] if draws else None)


def leak_past_freeze(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame, str, str] | None:
    """Candidate operations after the reference's whole step (only the harness's own operations, which have no user
    frame, may follow on the reference's side) that use a compared parameter with ``requires_grad`` under autograd
    while the candidate froze other compared parameters for them (:func:`_incomplete_freeze`); None otherwise."""
    if d.tag != "insert" or (d.ref is not None and any(o.stack for o in ref.ops[d.ref.index:])):
        return None
    relevant = relevant_extension(d.inserted)
    if relevant is None or not relevant[1].startswith("uses"):
        return None
    op = d.inserted[relevant[0]]
    found = _incomplete_freeze(cand, op)
    if found is None:
        return None
    d.cand = op
    return found[0], "leak_past_freeze", (f"after the reference's step, candidate operation `{shape_text(op)}` "
                                          f"{relevant[1]}{found[1]}")


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


def schedule_cause(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str, str] | None:
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
            return extra.frame(), "schedule_step", f"candidate runs an extra learning-rate schedule step{why}"
        if gone is not None:
            prev_c = cand.ops[j1 - 1] if j1 else None
            missing = Difference("delete", gone, cand.ops[j1] if j1 < len(cand.ops) else None,
                                  ref.ops[gone.index - 1] if gone.index else None, prev_c, [gone])
            where = gone.frame()
            return _deleted_at(cand, missing), "schedule_step", (
                "candidate skips the reference's learning-rate schedule step" +
                (f" ({where.where()})" if where else "") + why)
    return None


def entering_condition(trace: Trace, prev: Op | None, first: Op) -> tuple[int, Frame] | None:
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
    if not before or not source_text(trace.lines[before[-1]][0]).startswith(("if ", "elif ")):
        return None
    cond = trace.lines[before[-1]][0]
    body = next((f for f, _ in trace.lines[before[-1] + 1:] if f.call == cond.call), None)
    return (before[-1], body) if body is not None and body.line > cond.line else None


# ------------------------------------------------------------------------------------------------- the ladder
# Each rule answers ``(frame, what)`` for the difference it explains, or None to pass it on; the first rule that
# answers locates the difference, and its name is the ``rule`` the localisation carries.


def random_draw(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """A random draw is involved: an extra or changed draw at its own line, a skipped one where it belonged."""
    c, r = d.cand, d.ref
    extra_draw = first_draw(d.inserted) if d.tag in ("insert", "replace") else None
    missing_draw = first_draw(d.deleted) if d.tag in ("delete", "replace") else None
    if d.tag == "replace" and c is not None and r is not None and (c.key[:2], c.key[3]) == (r.key[:2], r.key[3]):
        extra_draw = missing_draw = None  # the same draw, only the autograd mode or the inputs differ
    if extra_draw is not None:
        if missing_draw is not None and d.tag == "replace":
            return extra_draw.frame(), (f"candidate draws `{shape_text(extra_draw)}` ({extra_draw.stream}) where "
                                        f"the reference draws `{shape_text(missing_draw)}` ({missing_draw.stream})")
        return extra_draw.frame(), f"candidate draws an extra `{shape_text(extra_draw)}` ({extra_draw.stream})"
    if missing_draw is not None:
        where = missing_draw.frame()
        return _deleted_at(cand, d), (f"candidate skips the draw `{shape_text(missing_draw)}` ({missing_draw.stream}) "
                                      "the reference makes" + (f" at {where.where()}" if where else ""))
    if d.tag == "value" and c is not None and c.random:
        return c.frame(), f"the draw `{shape_text(c)}` gives other numbers than the reference's"
    return None


def in_backward(op: Op | None) -> bool:
    """Whether the operation runs inside a backward pass (its innermost user line calls ``backward``)."""
    return op is not None and any("backward" in f.code for f in op.stack[-1:])




def graph_source(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """The steps part inside a backward pass while the forward values before it agree: the forward operation
    (since the previous backward) whose result the candidate computes with a graph where the reference computes the
    same value only detached (a missing ``detach``: gradients flow through it), or without one where the reference
    builds its graph (a ``detach`` too many) — the line that decides where gradients flow, not the ``backward()``
    line where the consequence shows."""
    c = d.cand if d.cand is not None else (d.inserted[0] if d.inserted else None)
    if c is None or not in_backward(c):
        return None
    start = c.index
    while start > 0 and in_backward(cand.ops[start - 1]):
        start -= 1
    begin = start
    while begin > 0 and not in_backward(cand.ops[begin - 1]) and cand.ops[begin - 1].optimizer_step is None:
        begin -= 1
    graphs = ValueNeutral(ref, cand)  # which values each side computes with a graph, without one, or both
    for op in cand.ops[begin:start]:
        if len(op.computed) != 1 or op.random or op.name.split(".")[1] in DETACHING:
            continue
        value, mine = op.computed[0], ValueNeutral.differentiates(op)
        theirs = graphs.ref_graph.get(value)
        if mine and theirs == {False}:
            return op.frame(), (f"candidate computes `{shape_text(op)}` with autograd where the reference computes "
                                "the same value detached, so gradients flow through it")
        if not mine and theirs == {True} and True not in graphs.cand_graph[value]:
            return op.frame(), (f"candidate computes `{shape_text(op)}` without a graph where the reference keeps "
                                "its graph, so no gradient flows through it")
    return None


def extra_operations(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """Operations only the candidate runs: the outermost frame where they part from the last agreeing operation."""
    if d.tag != "insert":
        return None
    assert d.cand is not None
    frame, why = inserted_at(ref, cand, d)
    return frame, f"candidate runs `{shape_text(d.cand)}` and more the reference does not{why}"


def missing_operations(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """Operations only the reference runs: where they belong in the candidate, or the assignment that made a
    condition skip them."""
    if d.tag != "delete":
        return None
    gone = d.deleted[0]
    what = f"candidate skips the reference's `{shape_text(gone)}`" + (f" ({gone.frame().where()})" if gone.frame()
                                                                     else "")
    skipped = condition_of_skipped(ref, cand, d)
    cause = _condition_cause(ref, cand, skipped[0], d.ref) if skipped is not None else None
    if cause is not None:  # the condition skipped it because it read another value
        return cause[0], what + cause[1]
    return _deleted_at(cand, d), what


def module_swap(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """The operation runs inside another module than the reference's: the line that called that module."""
    return _module_change(ref, cand, d)


def call_path(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """The call paths part (same outermost function): the line that calls the other function."""
    assert d.cand is not None and d.ref is not None
    return _caller_of_path_change(d.cand, d.ref)


def grad_mode(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """Only the autograd mode differs: the line that switches it."""
    c, r = d.cand, d.ref
    assert c is not None and r is not None
    if d.tag != "replace" or c.key[:2] != r.key[:2] or c.key[2] == r.key[2]:
        return None
    mode = "enabled" if c.grad_enabled else "disabled"
    return _grad_switch(ref, cand, d) or c.frame(), f"candidate runs `{shape_text(c)}` with autograd {mode}, the " \
                                                   "reference not"


def other_operation(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """Another operation where the reference runs one: the operation's own line."""
    if d.tag != "replace":
        return None
    assert d.cand is not None and d.ref is not None
    return d.cand.frame(), f"candidate runs `{shape_text(d.cand)}` where the reference runs `{shape_text(d.ref)}`"


def module_input(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """The same operation on other values, inside a module whose inputs already differ: the module's call."""
    mc, mr = module_of(cand, d.cand), module_of(ref, d.ref)
    if mc is None or mr is None or mc.inputs == mr.inputs or not mc.stack:
        return None
    return mc.stack[-1], f"forward of `{mc.name}` (call {mc.count}) gets other inputs"


def value(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str] | None:
    """Otherwise: the operation itself gives other numbers."""
    c, r = d.cand, d.ref
    assert c is not None and r is not None
    inputs = "its inputs differ" if c.inputs != r.inputs else "same inputs, other result"
    return c.frame(), f"`{shape_text(c)}` gives other numbers ({inputs})"


#: the rules in the order they are tried (their names are the ``rule`` ids localisations carry)
LADDER: tuple[Callable[[Trace, Trace, Difference], tuple[Frame | None, str] | None], ...] = (
    random_draw, graph_source, extra_operations, missing_operations, module_swap, call_path, grad_mode,
    other_operation, module_input, value)


def locate(ref: Trace, cand: Trace, d: Difference) -> tuple[Frame | None, str, str]:
    """``(frame, rule, what)`` for a difference: the first rule of :data:`LADDER` that explains it."""
    c, r = d.cand, d.ref
    if d.tag == "replace" and c is not None and r is not None and c.key == r.key and c.inputs != r.inputs:
        d.tag = "value"  # the same operation on other inputs
    for rule in LADDER:
        found = rule(ref, cand, d)
        if found is not None:
            return found[0], rule.__name__, found[1]
    raise AssertionError("value() locates every difference")
