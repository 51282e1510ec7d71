"""JAX localisation: diff the traced update of the reference and of the candidate (jaxprs with source locations) and
name the first differing equation with its line in the candidate's code.

A jitted JAX update has no per-operation Python execution to hook, but its jaxpr lists every primitive with the
Python stack that emitted it (``eqn.source_info``). Both update functions are traced on the same arguments; their
equations (sub-jaxprs of ``pjit``/``cond``/``scan``/... flattened in place) are keyed by primitive, input and
output avals, literal values, simple parameters and *where each input comes from* (an argument position or the
equation that produced it), then aligned like the PyTorch operation sequences. Key handling is part of the trace:
``random_split``, ``random_fold_in``, ``random_bits`` and ``threefry2x32`` equations are the key chain, and a
difference there is an ``rng`` finding ("candidate splits an extra key").

A constant is traced where it is *used* (a literal of the equation that multiplies by it), not where the code chose
it. When the first differing equation differs only in a literal, a parameter or a closed-over constant, both
functions are traced again under a Python line tracer that records every concrete (non-traced) value a user line
assigns or passes as an argument; the first such value that differs between the two sides names the line that
chose the constant (e.g. the keyword argument that passes the wrong coefficient), and the equation that uses it is
kept in the message. The traced functions' inputs are compared before their jaxprs: a differing input (e.g. the
full-update flag) is reported as such.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import linecache
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np

from checks.localise.result import Localisation
from checks.localise.frames import Frame, frame_of, display_path, is_user_file

#: primitives of the key chain
RANDOM_PRIMITIVES = frozenset({"random_split", "random_fold_in", "random_bits", "random_seed", "random_wrap",
                               "random_unwrap", "threefry2x32"})


@dataclass
class Equation:
    """One jaxpr equation: its alignment key and the user frames that emitted it (outermost first)."""

    index: int
    primitive: str
    key: tuple[Any, ...]
    stack: tuple[Frame, ...]

    def frame(self) -> Frame | None:
        return self.stack[-1] if self.stack else None

    def describe(self) -> str:
        where = self.frame()
        return f"#{self.index} {self.primitive}" + (f" @ {where.file}:{where.line}" if where else "")


def _stack(source_info: Any) -> tuple[Frame, ...]:
    from jax._src import source_info_util

    traceback = getattr(source_info, "traceback", None)
    codes, lastis = traceback.raw_frames() if traceback is not None else ([], [])
    out = []
    for code, lasti in zip(codes, lastis):
        if not is_user_file(code.co_filename):
            continue
        f = source_info_util.raw_frame_to_frame(code, lasti)
        out.append(Frame(display_path(f.file_name), f.start_line, code.co_qualname,
                         linecache.getline(f.file_name, f.start_line).strip()))
    return tuple(reversed(out))  # the traceback lists the innermost frame first


def _param(value: Any) -> Any:
    if isinstance(value, (int, float, bool, str, type(None))):
        return repr(value)
    if isinstance(value, tuple) and all(isinstance(v, (int, float, bool, str, type(None))) for v in value):
        return repr(value)
    return type(value).__name__


def _sub_jaxprs(params: dict[str, Any]) -> Iterator[Any]:
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            inner = getattr(item, "jaxpr", item)
            if hasattr(inner, "eqns") and hasattr(inner, "invars"):
                yield inner


def flatten(jaxpr: Any, scope: str = "", out: list[Equation] | None = None) -> list[Equation]:
    """The equations of ``jaxpr`` (a ``Jaxpr`` or ``ClosedJaxpr``), sub-jaxprs flattened after their equation."""
    from jax.extend.core import Literal

    consts = list(getattr(jaxpr, "consts", ()))
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    out = [] if out is None else out
    ids: dict[Any, Any] = {v: f"{scope}in{i}" for i, v in enumerate(jaxpr.invars)}
    ids.update({v: ("const", value_digest(consts[i]) if i < len(consts) else f"{scope}const{i}")
                for i, v in enumerate(jaxpr.constvars)})
    for eqn in jaxpr.eqns:
        n = len(out)
        sources = tuple(("literal", repr(a.val)) if isinstance(a, Literal) else ids.get(a, "free")
                        for a in eqn.invars)
        params = tuple(sorted((k, _param(v)) for k, v in eqn.params.items()
                              if not any(True for _ in _sub_jaxprs({k: v}))))
        key = (eqn.primitive.name, tuple(str(a.aval) for a in eqn.invars), tuple(str(v.aval) for v in eqn.outvars),
               params, sources)
        out.append(Equation(n, eqn.primitive.name, key, _stack(eqn.source_info)))
        for k, v in enumerate(eqn.outvars):
            ids[v] = f"{scope}{n}.{k}"
        for j, sub in enumerate(_sub_jaxprs(eqn.params)):
            flatten(sub, f"{scope}{n}/{j}/", out)
    return out


def value_digest(value: Any, cache: dict[int, tuple[Any, str | None]] | None = None) -> str | None:
    """A digest of a concrete value — Python scalars and strings, numpy/JAX arrays, tuples, lists, dicts and
    dataclasses of them — or None when any part is traced (a JAX tracer) or of another type (a function, a module)."""
    import jax

    if cache is not None and id(value) in cache:
        return cache[id(value)][1]
    out: str | None
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None))):
        out = f"{type(value).__name__}:{value!r}"
    elif isinstance(value, jax.core.Tracer):
        out = None
    elif isinstance(value, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(value)
        out = f"{arr.dtype}{list(arr.shape)}:" + hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]
    elif isinstance(value, (tuple, list)):
        parts = [value_digest(v, cache) for v in value]
        out = None if any(p is None for p in parts) else f"{type(value).__name__}({','.join(parts)})"
    elif isinstance(value, dict):
        parts = [value_digest(v, cache) for v in value.values()]
        out = None if any(p is None for p in parts) else \
            "{" + ",".join(f"{k!r}:{p}" for k, p in zip(value, parts)) + "}"
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = [value_digest(getattr(value, f.name), cache) for f in dataclasses.fields(value)]
        out = None if any(p is None for p in parts) else f"{type(value).__qualname__}({','.join(parts)})"
    else:
        out = None
    if cache is not None:
        cache[id(value)] = (value, out)  # the value is kept alive, so its id is not reused within the trace
    return out


def trace_update(fn: Callable[..., Any], *args: Any) -> list[Equation]:
    """``fn(*args)`` traced to a jaxpr (nothing runs) and flattened."""
    import jax

    return flatten(jax.make_jaxpr(fn)(*args))


def _located(eqn: Equation, prev: Equation | None) -> Frame | None:
    """The outermost frame where ``eqn``'s stack parts from the last agreeing equation's (a new call from one line
    names that line; on the same line, the innermost frame)."""
    if prev is None or not eqn.stack:
        return eqn.frame()
    for level in range(min(len(eqn.stack), len(prev.stack))):
        here, there = eqn.stack[level], prev.stack[level]
        if (here.function, here.line) != (there.function, there.line):
            return here
    return eqn.frame()


def _constant_difference(r: Equation, c: Equation) -> bool:
    """Same primitive and shapes, and the equations differ only in parameters or in literal / closed-over constant
    inputs (not in which equation or argument an input comes from)."""
    if r.key[:3] != c.key[:3] or len(r.key[4]) != len(c.key[4]):
        return False
    traced = [(a, b) for a, b in zip(r.key[4], c.key[4]) if not (_is_constant(a) and _is_constant(b))]
    return all(a == b for a, b in traced)


def _is_constant(source: Any) -> bool:
    return isinstance(source, tuple) and source[0] in ("literal", "const")


def compare_jaxprs(ref: list[Equation], cand: list[Equation]) -> Localisation:
    """The first differing equation of two flattened traces (reference first), located in the candidate."""
    matcher = difflib.SequenceMatcher(None, [e.key for e in ref], [e.key for e in cand], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        r = ref[i1] if i1 < len(ref) else None
        c = cand[j1] if j1 < len(cand) else None
        prev = cand[j1 - 1] if j1 else None
        if tag == "delete" or c is None:
            assert r is not None
            frame = c.frame() if c is not None else (prev.frame() if prev is not None else None)
            what = f"candidate skips the reference's `{r.primitive}`" + (
                f" ({r.frame().where()})" if r.frame() else "")
        elif tag == "insert" or r is None:
            frame = _located(c, prev)
            what = f"candidate traces an extra `{c.primitive}`"
        elif r.primitive != c.primitive:
            frame = _located(c, prev)
            what = f"candidate traces `{c.primitive}` where the reference traces `{r.primitive}`"
        else:
            frame = _module_application(c) or c.frame()
            part = "literal/parameter" if r.key[:4] != c.key[:4] else "inputs"
            if _constant_difference(r, c):
                part, tag = "constants (literal, parameter or closed-over value)", "constant"
            what = f"candidate's `{c.primitive}` differs from the reference's in its {part}"
        changed = (ref[i1:i2] if tag != "insert" else []) + (cand[j1:j2] if tag != "delete" else [])
        kind = "rng" if any(e.primitive in RANDOM_PRIMITIVES for e in changed[:1] + changed[-1:]) else "numeric"
        if kind == "rng" and tag == "insert":
            what = f"candidate's key chain has an extra `{c.primitive}`" if c is not None else what
        message = what + (f" at {frame.where()}: `{frame.code}`" if frame is not None else "")
        first = {(frame.file, frame.line)} if frame is not None else set()
        more = [d for d in structural_differences(ref, cand) if (d["frame"]["file"], d["frame"]["line"]) not in first]
        return Localisation(kind, message, [frame.as_dict()] if frame is not None else [],
                            [f.as_dict() for f in reversed(r.stack)] if r is not None else [],
                            {"reference": [e.describe() for e in ref[max(i1 - 3, 0):i1 + 4]],
                             "candidate": [e.describe() for e in cand[max(j1 - 3, 0):j1 + 4]]},
                            rule=f"jaxpr {tag}", more=more)
    return Localisation("none", f"the traced updates are identical ({len(ref)} equations)")


def _shape_key(e: Equation) -> tuple[Any, ...]:
    """An equation's key without where its inputs come from (literal and constant values left out too): what two
    traces are aligned by before their data flow is compared through that alignment."""
    prim, ins, outs, params, sources = e.key
    return prim, ins, outs, params, tuple(s[0] if isinstance(s, tuple) else "var" for s in sources)


def _mapped(source: Any, index: dict[int, int]) -> Any:
    """A candidate input source with every equation number replaced by its aligned reference equation's
    (``?n`` for an unaligned one); literals, constants and free variables unchanged."""
    if not isinstance(source, str) or source == "free":
        return source
    *scope, last = source.split("/")
    scope = [str(index.get(int(p), f"?{p}")) if i % 2 == 0 else p for i, p in enumerate(scope)]
    if not last.startswith("in"):
        n, k = last.split(".")
        last = f"{index.get(int(n), f'?{n}')}.{k}"
    return "/".join([*scope, last])


def _producer(source: Any, eqns: list[Equation]) -> Equation | None:
    if not isinstance(source, str) or source == "free" or source.rsplit("/", 1)[-1].startswith("in"):
        return None
    return eqns[int(source.rsplit("/", 1)[-1].split(".")[0])]


_APPLY = re.compile(r"\.apply(_fn)?\(")


def _module_application(eqn: Equation) -> Frame | None:
    """The innermost frame of ``eqn``'s stack that applies a (flax) module — ``state.apply_fn(params, ...)`` or
    ``module.apply(params, ...)``. A module receives its parameters only there, so when an equation inside a module
    reads other parameters, that line chose them (not the layer inside the module that reads them)."""
    return next((f for f in reversed(eqn.stack) if _APPLY.search(f.code)), None)


def _parting(consumer: Equation, producer: Equation | None) -> Frame | None:
    """The consumer's frame at the level where its stack parts from its input's producer's: the line that passed
    that input (a call site), not the helper that uses it; the innermost frame when the producer has no stack."""
    if producer is None or not producer.stack or not consumer.stack:
        return consumer.frame()
    for level, here in enumerate(consumer.stack):
        if level >= len(producer.stack) or (here.function, here.line) != (producer.stack[level].function,
                                                                         producer.stack[level].line):
            return here
    return consumer.frame()


def structural_differences(ref: list[Equation], cand: list[Equation]) -> list[dict[str, Any]]:
    """Every structural difference of two traces, in the candidate's order, one per candidate line
    (``{"message", "frame"}``, the shape of :attr:`Localisation.more`, with ``"constant": True`` on a constant
    difference, which :func:`localise_traced` moves to the line that chose the value): equations only one side traces, aligned
    equations that use another literal/constant, and aligned equations that read another (aligned) producer — the
    data flow of the code, not its values, so a difference does not propagate to everything downstream of it. An
    input coming from an equation only one side traces is explained by that equation and not reported again."""
    matcher = difflib.SequenceMatcher(None, [_shape_key(e) for e in ref], [_shape_key(e) for e in cand],
                                      autojunk=False)
    index: dict[int, int] = {}
    opcodes = matcher.get_opcodes()
    for tag, i1, _, j1, j2 in opcodes:
        if tag == "equal":
            index.update({j: i1 + (j - j1) for j in range(j1, j2)})
    aligned_ref = set(index.values())
    found: list[tuple[int, Frame | None, str, bool]] = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag != "equal":
            c = cand[j1] if j1 < len(cand) else None
            r = ref[i1] if i1 < len(ref) else None
            frame = _located(c, cand[j1 - 1] if j1 else None) if c is not None and tag != "delete" else (
                c.frame() if c is not None else (cand[-1].frame() if cand else None))
            what = (f"candidate skips the reference's `{r.primitive}`" if tag == "delete" and r is not None else
                    f"candidate traces `{c.primitive}`" + (f" where the reference traces `{r.primitive}`"
                                                           if tag == "replace" and r is not None else " extra")
                    if c is not None else "candidate's trace ends early")
            if frame is not None:
                found.append((j1, frame, what, False))
            continue
        for j in range(j1, j2):
            r, c = ref[index[j]], cand[j]
            for r_src, c_src in zip(r.key[4], c.key[4]):
                if isinstance(r_src, tuple) or isinstance(c_src, tuple):
                    if r_src != c_src:
                        found.append((j, c.frame(), f"candidate's `{c.primitive}` uses another constant", True))
                        break
                    continue
                c_prod, r_prod = _producer(c_src, cand), _producer(r_src, ref)
                if (c_prod is not None and c_prod.index not in index) or (
                        r_prod is not None and r_prod.index not in aligned_ref):
                    continue  # explained by an equation only one side traces
                if _mapped(c_src, index) != r_src:
                    frame = _module_application(c) or _parting(c, c_prod if c_prod is not None else r_prod)
                    found.append((j, frame, f"candidate's `{c.primitive}` reads another input", False))
                    break
    out, seen = [], set()
    for _, frame, what, constant in sorted(found, key=lambda t: t[0]):
        if frame is None or (frame.file, frame.line) in seen:
            continue
        seen.add((frame.file, frame.line))
        out.append({"message": f"{what} at {frame.where()}: `{frame.code}`", "frame": frame.as_dict(),
                    **({"constant": True} if constant else {})})
    return out


@dataclass(frozen=True)
class Assignment:
    """A concrete value a user line produced while a function was traced: a local it assigned (``name``) or an
    argument it passed (``name`` = ``callee(parameter)``); ``digest`` from :func:`value_digest`."""

    frame: Frame
    name: str
    digest: str
    value: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, int, str]:
        return self.frame.file, self.frame.line, self.name


class ValueTracer:
    """``sys.settrace`` on user code: every concrete value a line assigns to a local, and every concrete argument a
    user line passes to a user function, in execution order (:class:`Assignment`)."""

    def __init__(self) -> None:
        self.assignments: list[Assignment] = []
        self._cache: dict[int, tuple[Any, str | None]] = {}
        self._seen: dict[int, tuple[int, dict[str, str]]] = {}
        self._previous: Any = None

    def _concrete(self, frame: FrameType) -> dict[str, str]:
        out = {}
        for name, value in frame.f_locals.items():
            digest = value_digest(value, self._cache)
            if digest is not None:
                out[name] = digest
        return out

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event in ("line", "return"):
            line, before = self._seen.get(id(frame), (frame.f_lineno, {}))
            now = self._concrete(frame)
            where = dataclasses.replace(frame_of(frame, {}), line=line,
                                        code=linecache.getline(frame.f_code.co_filename, line).strip())
            self.assignments.extend(Assignment(where, name, d, frame.f_locals.get(name)) for name, d in now.items()
                                    if before.get(name) != d)
            if event == "return":
                self._seen.pop(id(frame), None)
            else:
                self._seen[id(frame)] = (frame.f_lineno, now)
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call" or not is_user_file(frame.f_code.co_filename):
            return None
        args = self._concrete(frame)
        caller = frame.f_back
        if caller is not None and is_user_file(caller.f_code.co_filename):
            site = frame_of(caller, {})
            name = frame.f_code.co_name
            self.assignments.extend(Assignment(site, f"{name}({k})", d, frame.f_locals.get(k))
                                    for k, d in args.items())
        self._seen[id(frame)] = (frame.f_lineno, args)
        return self._local

    def __enter__(self) -> ValueTracer:
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.settrace(self._previous)


def traced_values(fn: Callable[..., Any], *args: Any) -> list[Assignment]:
    """The concrete values user lines assign or pass while ``fn(*args)`` is traced (:class:`ValueTracer`).

    ``fn`` is wrapped in a new function, so JAX's tracing cache (keyed by the function) cannot skip its Python code
    when it was traced before."""
    import jax

    def fresh(*a: Any) -> Any:
        return fn(*a)

    with ValueTracer() as tracer:
        jax.make_jaxpr(fresh)(*args)
    return tracer.assignments


def differing_values(ref: list[Assignment], cand: list[Assignment]) -> list[tuple[Assignment, Assignment]]:
    """Every aligned (same line, same name) pair of values that differ, (reference, candidate), in order, the first
    per candidate line."""
    matcher = difflib.SequenceMatcher(None, [a.key for a in ref], [a.key for a in cand], autojunk=False)
    out, lines = [], set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            continue
        for r, c in zip(ref[i1:i2], cand[j1:j2]):
            if r.digest != c.digest and c.key[:2] not in lines:
                lines.add(c.key[:2])
                out.append((r, c))
    return out


def _shown(value: Any) -> str:
    """A concrete value as a message shows it: scalars as they are, arrays by dtype and shape."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return repr(value)
    arr = np.asarray(value)
    return repr(arr.item()) if arr.ndim == 0 else f"a {arr.dtype}{list(arr.shape)} array"


def differing_leaf(ref: Any, cand: Any, path: str = "") -> tuple[str, Any, Any]:
    """Where two concrete values first differ — ``(path, reference leaf, candidate leaf)`` — descending into dicts,
    tuples, lists and dataclasses of equal shape (``critic_kwargs['critic_bc_coef']``)."""
    if isinstance(ref, dict) and isinstance(cand, dict) and list(ref) == list(cand):
        items = [(f"{path}[{k!r}]", ref[k], cand[k]) for k in ref]
    elif isinstance(ref, (tuple, list)) and type(ref) is type(cand) and len(ref) == len(cand):
        items = [(f"{path}[{i}]", r, c) for i, (r, c) in enumerate(zip(ref, cand))]
    elif dataclasses.is_dataclass(ref) and type(ref) is type(cand) and not isinstance(ref, type):
        items = [(f"{path}.{f.name}", getattr(ref, f.name), getattr(cand, f.name)) for f in dataclasses.fields(ref)]
    else:
        return path, ref, cand
    for sub, r, c in items:
        if value_digest(r) != value_digest(c):
            return differing_leaf(r, c, sub)
    return path, ref, cand


def value_difference(ref: Any, cand: Any) -> tuple[str, str, str]:
    """:func:`differing_leaf` with both leaves shown as a message shows them."""
    path, r, c = differing_leaf(ref, cand)
    return path, _shown(r), _shown(c)


def _value_message(r: Assignment, c: Assignment) -> str:
    where, r_shown, c_shown = value_difference(r.value, c.value)
    what = f"`{c.name}{where}`" if "(" not in c.name else f"argument `{c.name}{where}`"
    return f"candidate sets {what} to {c_shown} where the reference has {r_shown} at {c.frame.where()}: `{c.frame.code}`"


def _leaf_digests(r: Assignment, c: Assignment) -> tuple[str | None, str | None]:
    _, r_leaf, c_leaf = differing_leaf(r.value, c.value)
    return value_digest(r_leaf), value_digest(c_leaf)


def _relocate_constants(found: Localisation, ref_fn: Callable[..., Any], ref_args: tuple[Any, ...],
                        cand_fn: Callable[..., Any], cand_args: tuple[Any, ...]) -> Localisation:
    """Constant differences moved to the lines that chose the differing values (the concrete values user lines
    assign or pass differently, :func:`differing_values`): the first for a constant primary difference, with the
    equation that uses it kept in the message, the others replacing the constant differences among ``more``.
    ``found`` unchanged when no traced value differs."""
    primary = found.rule == "jaxpr constant"
    if not primary and not any(m.get("constant") for m in found.more):
        return found
    pairs = differing_values(traced_values(ref_fn, *ref_args), traced_values(cand_fn, *cand_args))
    if not pairs:
        return found
    if primary:
        r, c = pairs[0]
        found = dataclasses.replace(found, message=f"{_value_message(r, c)}; used by: {found.message}",
                                    frames=[c.frame.as_dict()] + found.frames,
                                    reference_frames=[r.frame.as_dict()] + found.reference_frames,
                                    rule="jaxpr constant, traced value")
    if pairs and any(m.get("constant") for m in found.more):
        # a value passed on (a dict entry, then the keyword argument it fills) is named once, where it was chosen
        seen = {_leaf_digests(r, c)} if primary else set()
        values = []
        for r, c in pairs:
            if _leaf_digests(r, c) not in seen:
                seen.add(_leaf_digests(r, c))
                values.append({"message": _value_message(r, c), "frame": c.frame.as_dict()})
        constants = [m for m in found.more if m.get("constant")]
        found = dataclasses.replace(found, more=[m for m in found.more if not m.get("constant")]
                                    + (values if values or primary else constants))
    return found


def differing_input(ref_fn: Callable[..., Any], ref_args: tuple[Any, ...], cand_args: tuple[Any, ...]
                     ) -> Localisation | None:
    """A Localisation naming the first input of the traced update whose value differs (None when they agree)."""
    import jax

    names = list(inspect.signature(ref_fn).parameters)
    for i, (r, c) in enumerate(zip(ref_args, cand_args)):
        r_leaves, c_leaves = jax.tree_util.tree_flatten_with_path(r)[0], jax.tree_util.tree_flatten_with_path(c)[0]
        name = names[i] if i < len(names) else f"input {i}"
        # by leaf paths, not tree definitions: those hold static fields (an optax closure) equal only by identity
        if [p for p, _ in r_leaves] != [p for p, _ in c_leaves]:
            return Localisation("numeric", f"candidate's update input `{name}` differs in structure from the "
                                           "reference's", rule="jaxpr input")
        for (path, rv), (_, cv) in zip(r_leaves, c_leaves):
            rd, cd = value_digest(rv), value_digest(cv)
            if rd != cd:
                scalar = np.ndim(rv) == 0 and np.issubdtype(np.asarray(rv).dtype, np.integer)
                shown = f" ({_shown(cv)} vs the reference's {_shown(rv)})" if scalar else ""
                return Localisation("order" if scalar else "numeric",
                                    f"candidate's update input `{name}{jax.tree_util.keystr(path)}` differs from the "
                                    f"reference's{shown}: the step starts from a different state or flag",
                                    rule="jaxpr input")
    return None


def localise_traced(reference_fn: Callable[..., Any], reference_args: tuple[Any, ...],
                    candidate_fn: Callable[..., Any], candidate_args: tuple[Any, ...]) -> Localisation:
    """Localise the first difference between ``reference_fn(*reference_args)`` and ``candidate_fn(*candidate_args)``
    (traced, nothing runs): a differing input first, else the first differing equation, a constant difference
    followed back to the line that chose the value."""
    found = differing_input(reference_fn, reference_args, candidate_args)
    ref_eqns = trace_update(reference_fn, *reference_args)
    cand_eqns = trace_update(candidate_fn, *candidate_args)
    if found is not None:  # the code may differ too: its structural differences are further findings
        found = dataclasses.replace(found, more=structural_differences(ref_eqns, cand_eqns))
    else:
        found = compare_jaxprs(ref_eqns, cand_eqns)
    return _relocate_constants(found, reference_fn, reference_args, candidate_fn, candidate_args)


def localise_jax_update(reference_fn: Callable[..., Any], candidate_fn: Callable[..., Any], *args: Any
                        ) -> Localisation:
    """Trace both update functions on ``args`` and localise their first differing equation in the candidate."""
    return localise_traced(reference_fn, args, candidate_fn, args)


def jax_snapshot(reference: Any, candidate: Any) -> tuple[Any, Mapping[str, Any], Any, Mapping[str, Any]] | None:
    """Before a step (``reference``/``candidate``: the harness's sides): each trainer and the state its update starts
    from (``jax_state()``, immutable arrays: no copy needed); None when a side does not offer ``jax_state`` and
    ``traced_update``."""
    trainers = reference.iso.trainer, candidate.iso.trainer
    if not all(callable(getattr(t, m, None)) for t in trainers for m in ("jax_state", "traced_update")):
        return None
    return trainers[0], reference.call("jax_state"), trainers[1], candidate.call("jax_state")


def passed_against_config(assignments: list[Assignment]) -> Assignment | None:
    """The first argument passed under the name of a config field (a field of a dataclass the same code handled
    before, e.g. ``cfg.policy_freq``) whose value is not that field's: ``delayed_updates(policy_freq)`` = 1 while
    ``cfg.policy_freq`` is 2 names the line that hard-codes the value."""
    fields: dict[str, str] = {}
    for a in assignments:
        if dataclasses.is_dataclass(a.value) and not isinstance(a.value, type):
            for f in dataclasses.fields(a.value):
                digest = value_digest(getattr(a.value, f.name))
                if digest is not None:
                    fields.setdefault(f.name, digest)
        elif a.name.endswith(")"):
            param = a.name[a.name.index("(") + 1:-1]
            if param in fields and fields[param] != a.digest:
                return a
    return None


def _input_source(found: Localisation, trainer: Any, batch: Any, state: Mapping[str, Any]) -> Localisation:
    """For a differing input: run the candidate's ``traced_update`` (its Python code computes the inputs, e.g. the
    full-update flag from its schedule) under the value tracer and name the line that passes a value contradicting
    its own config (:func:`passed_against_config`); ``found`` unchanged when there is none."""
    with ValueTracer() as tracer:
        trainer.traced_update(batch, state)
    a = passed_against_config(tracer.assignments)
    if a is None:
        return found
    param = a.name[a.name.index("(") + 1:-1]
    message = (f"{found.message}; candidate passes `{param}` = {_shown(a.value)}, not its config's value, at "
               f"{a.frame.where()}: `{a.frame.code}`")
    return dataclasses.replace(found, message=message, frames=[a.frame.as_dict()], rule="jaxpr input, traced value")


def localise_jax_step(snapshot: tuple[Any, Mapping[str, Any], Any, Mapping[str, Any]], batch: Any) -> Localisation:
    """Trace both trainers' critic/actor0 update (``traced_update(batch, state)``) from the snapshot and localise the
    first difference in the candidate's code (:func:`localise_traced`); a differing input is followed into the
    candidate's code that computed it (:func:`_input_source`)."""
    ref, ref_state, cand, cand_state = snapshot
    ref_fn, ref_args = ref.traced_update(batch, ref_state)
    cand_fn, cand_args = cand.traced_update(batch, cand_state)
    found = localise_traced(ref_fn, tuple(ref_args), cand_fn, tuple(cand_args))
    if found.rule == "jaxpr input":
        found = _input_source(found, cand, batch, cand_state)
    return found


def rebrac_loop_body_args(trainer: Any, batch: Any) -> tuple[Callable[[Callable[..., Any]], Callable[..., Any]],
                                                             tuple[Any, ...]]:
    """For a ``MultiActorReBRAC`` (``jax_state`` and ``rebrac_cfg``): a wrapper turning a ReBRAC loop body into a
    function of traceable arguments, and those arguments (key, actor, critic, metrics, full_update = 1) — to trace a
    patched loop body against the original on one trainer's state."""
    from multi_actor.jax_trainer import loop_body_update

    state = trainer.jax_state()
    _, args = loop_body_update(lambda *a: None, state, batch, trainer.rebrac_cfg, True)
    return (lambda body: loop_body_update(body, state, batch, trainer.rebrac_cfg, True)[0]), args
