"""JAX localisation: diff the traced update of the reference and of the candidate (jaxprs with source locations) and
name the first differing equation with its line in the candidate's code.

A jitted JAX update has no per-operation Python execution to hook, but its jaxpr lists every primitive with the
Python stack that emitted it (``eqn.source_info``). Both update functions are traced on the same arguments; their
equations (sub-jaxprs of ``pjit``/``cond``/``scan``/... flattened in place) are keyed by primitive, input and
output avals, literal values, simple parameters and *where each input comes from* (an argument position or the
equation that produced it), then aligned like the PyTorch operation sequences. Key handling is part of the trace:
``random_split``, ``random_fold_in``, ``random_bits`` and ``threefry2x32`` equations are the key chain, and a
difference there is an ``rng`` finding ("candidate splits an extra key").
"""

from __future__ import annotations

import difflib
import linecache
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from checks.localise.engine import Localisation
from checks.localise.frames import Frame, display_path, is_user_file

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

    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    out = [] if out is None else out
    ids: dict[Any, str] = {v: f"{scope}in{i}" for i, v in enumerate(jaxpr.invars)}
    ids.update({v: f"{scope}const{i}" for i, v in enumerate(jaxpr.constvars)})
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
            frame = c.frame()
            part = "literal/parameter" if r.key[:4] != c.key[:4] else "inputs"
            what = f"candidate's `{c.primitive}` differs from the reference's in its {part}"
        changed = (ref[i1:i2] if tag != "insert" else []) + (cand[j1:j2] if tag != "delete" else [])
        kind = "rng" if any(e.primitive in RANDOM_PRIMITIVES for e in changed[:1] + changed[-1:]) else "numeric"
        if kind == "rng" and tag == "insert":
            what = f"candidate's key chain has an extra `{c.primitive}`" if c is not None else what
        message = what + (f" at {frame.where()}: `{frame.code}`" if frame is not None else "")
        return Localisation(kind, message, [frame.as_dict()] if frame is not None else [],
                            [f.as_dict() for f in reversed(r.stack)] if r is not None else [],
                            {"reference": [e.describe() for e in ref[max(i1 - 3, 0):i1 + 4]],
                             "candidate": [e.describe() for e in cand[max(j1 - 3, 0):j1 + 4]]},
                            rule=f"jaxpr {tag}")
    return Localisation("none", f"the traced updates are identical ({len(ref)} equations)")


def localise_jax_update(reference_fn: Callable[..., Any], candidate_fn: Callable[..., Any], *args: Any
                        ) -> Localisation:
    """Trace both update functions on ``args`` and localise their first differing equation in the candidate."""
    return compare_jaxprs(trace_update(reference_fn, *args), trace_update(candidate_fn, *args))


def rebrac_loop_body_args(trainer: Any, batch: Any) -> tuple[Callable[[Callable[..., Any]], Callable[..., Any]],
                                                             tuple[Any, ...]]:
    """For a ``MultiActorReBRAC`` (or anything with ``state`` and ``rebrac_cfg``): a wrapper turning a ReBRAC loop
    body into a function of traceable arguments, and those arguments (key, actor, critic, metrics, full_update)."""
    import jax.numpy as jnp

    from reference_algos.jax import rebrac

    jbatch = {k: jnp.asarray(batch[k], jnp.float32) for k in rebrac.BATCH_KEYS}
    cfg = trainer.rebrac_cfg

    def wrap(body: Callable[..., Any]) -> Callable[..., Any]:
        def run(key: Any, actor: Any, critic: Any, metrics: Any, full: Any) -> Any:
            return body(key, actor, critic, metrics, full, lambda _batch_key: jbatch, cfg)

        return run

    state = trainer.state
    return wrap, (state.key, state.actor, state.critic, rebrac.Metrics.create(rebrac.METRIC_KEYS),
                  jnp.asarray(True))
