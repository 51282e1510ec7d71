"""Static scan for device-to-host syncs in the code reachable from a target's ``step``/``epoch``.

Sinks: ``float()``/``int()``/``bool()``, ``.item()``/``.tolist()``, ``np.asarray()`` and friends on device values,
``jax.device_get``, ``print``/``str``/f-strings of arrays, and a Python ``if``/``while``/``assert`` on a traced or
device value. Each is reported with file:line and where it runs: inside jitted code, traced code, the per-step
Python loop or once per epoch.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax

from checks.jax_profile.contexts import EPOCH, HOST, JIT, SEVERITY_ORDER, STEP, TRACED
from checks.jax_profile.files import display_path
from checks.jax_profile.scan.code import CodeIndex, Func
from checks.jax_profile.scan.live import (
    DIFFERENTIATING,
    FORMATTERS,
    FUNCTION_TRANSFORMS,
    MISSING,
    NUMPY_CONVERT,
    SCALARS,
    TRANSFORMS,
    is_jax_object,
    live_jitted,
    member,
)
from checks.jax_profile.scan.syntax import argnums_of_call, own_nodes, walk_own
from checks.jax_profile.scan.taint import TaintAnalysis


@dataclass
class StaticScan:
    """Result of :func:`scan_sources`: host syncs, whether each root reaches jitted code, user function names."""

    syncs: list[dict[str, Any]]
    reaches_jit: dict[str, bool]
    user_names: set[str]
    files: list[str]
    unavailable: list[str]


class SyncScanner:
    """Walks the code reachable from the roots, recording each sink once at its most severe context."""

    def __init__(self) -> None:
        self.code = CodeIndex()
        self.taint = TaintAnalysis(self.code)
        self.syncs: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.reaches_jit: dict[str, bool] = {}
        self.visited: set[tuple[Any, ...]] = set()
        self._reach_memo: dict[int, bool] = {}
        self._applied: set[int] = set()

    def reaches_jit_call(self, func: Func, depth: int = 0) -> bool:
        """Whether ``func`` calls jitted code, directly or through project functions (bounded depth)."""
        if id(func.node) in self._reach_memo:
            return self._reach_memo[id(func.node)]
        self._reach_memo[id(func.node)] = False
        found = False
        if depth < 6:
            for n in own_nodes(func.node):
                if isinstance(n, ast.Call):
                    callee = self.code.resolve(func, n.func)
                    if callee is not None and (callee.kind == "jit" or (
                            callee.func is not None and self.reaches_jit_call(callee.func, depth + 1))):
                        found = True
                        break
        self._reach_memo[id(func.node)] = found
        return found

    def visit(self, func: Func, ctx: str, params: frozenset[str], root: str,
              closure: frozenset[str] = frozenset()) -> None:
        """Check every sink of ``func`` run in context ``ctx`` and follow its calls (params/closure: tainted names)."""
        key = (id(func.node), id(func.instance), ctx, params, closure, root)
        if key in self.visited or len(self.visited) > 5000:
            return
        self.visited.add(key)
        tainted, _ = self.taint.summary(func, params, closure)
        contexts = self._node_contexts(func, ctx)
        for n in own_nodes(func.node):
            here = contexts.get(id(n), ctx)
            self._check_sink(func, n, here, root, tainted)
            if isinstance(n, ast.Call):
                self._follow_call(func, n, here, root, tainted)

    def _node_contexts(self, func: Func, ctx: str) -> dict[int, str]:
        """Host code inside a Python ``for``/``while`` loop that drives jitted calls is per-step code."""
        out: dict[int, str] = {}
        if ctx not in HOST or isinstance(func.node, ast.Lambda):
            return out
        for n in own_nodes(func.node):
            if isinstance(n, (ast.For, ast.AsyncFor, ast.While)):
                inner = [m for s in n.body for m in walk_own(s)]
                if any(isinstance(m, ast.Call) and self._call_reaches_jit(func, m) for m in inner):
                    for m in inner:
                        out[id(m)] = STEP
        return out

    def _call_reaches_jit(self, func: Func, call: ast.Call) -> bool:
        callee = self.code.resolve(func, call.func)
        return callee is not None and (callee.kind == "jit" or (
            callee.func is not None and self.reaches_jit_call(callee.func)))

    def _applied_transform(self, func: Func, call: ast.Call, ctx: str, root: str, tainted: set[str]) -> bool:
        """``jax.grad(f)(a, b, flag)`` and the like: visit ``f`` traced with only the parameters that receive a
        device value at this call (and the differentiated ones) tainted, so a plain Python flag passed along stays a
        Python value; True when handled (the inner transform call is then not followed on its own)."""
        inner = call.func
        if not (isinstance(inner, ast.Call) and inner.args):
            return False
        maker = self.code.live_value(func, inner.func)
        name = getattr(maker, "__name__", "")
        if maker is MISSING or not is_jax_object(maker) or name not in FUNCTION_TRANSFORMS or name == "jit":
            return False
        passed = self.code.resolve(func, inner.args[0])
        if passed is None or passed.func is None or passed.kind != "py":
            return False
        params = set(self.taint.bind(passed, call, func, tainted))
        if name in DIFFERENTIATING:
            positional = passed.func.params()[passed.bound_positional:]
            params |= {positional[i] for i in argnums_of_call(inner) if i < len(positional)}
        self._applied.add(id(inner))
        self.visit(passed.func, JIT if ctx == JIT else TRACED, frozenset(params) - passed.static, root,
                   self._closure_taint(func, passed.func, tainted))
        return True

    def _follow_call(self, func: Func, call: ast.Call, ctx: str, root: str, tainted: set[str]) -> None:
        if id(call) in self._applied or self._applied_transform(func, call, ctx, root, tainted):
            return
        callee = self.code.resolve(func, call.func)
        target = self.code.live_value(func, call.func)
        if callee is not None:
            if callee.kind == "jit":
                if ctx in HOST:
                    self.reaches_jit[root] = True
                if callee.func is not None:
                    params = frozenset(set(callee.func.params()[callee.bound_positional:]) |
                                       {p.arg for p in callee.func.node.args.kwonlyargs}) - callee.static
                    self.visit(callee.func, JIT, params, root)
            elif callee.func is not None:
                self.visit(callee.func, ctx, self.taint.bind(callee, call, func, tainted), root,
                           self._closure_taint(func, callee.func, tainted))
        if target is jax.jit:
            return
        if target is partial:
            bound = self.code.resolve(func, call)
            if bound is not None and bound.func is not None and bound.kind == "py":
                params = frozenset(bound.func.all_params()) - bound.static if ctx in (JIT, TRACED) else frozenset()
                self.visit(bound.func, ctx, params, root, self._closure_taint(func, bound.func, tainted))
            return
        # functions passed as arguments: traced by jax transforms, otherwise called in this context
        transform = target is not MISSING and is_jax_object(target) and getattr(target, "__name__", "") in TRANSFORMS
        others = any(self.taint.expr_tainted(func, a, tainted) for a in call.args)
        for arg in (*call.args, *(k.value for k in call.keywords)):
            if isinstance(arg, ast.Call) and self.code.live_value(func, arg.func) is not partial:
                continue
            if not isinstance(arg, (ast.Name, ast.Attribute, ast.Lambda, ast.Call)):
                continue
            passed = self.code.resolve(func, arg)
            if passed is None or passed.func is None and passed.kind != "jit":
                continue
            if passed.kind == "jit":
                if ctx in HOST:
                    self.reaches_jit[root] = True
                if passed.func is not None:
                    self.visit(passed.func, JIT, frozenset(passed.func.all_params()) - passed.static, root)
                continue
            traced = transform or ctx in (JIT, TRACED)
            params = frozenset(passed.func.all_params()) - passed.static if traced or others else frozenset()
            inner = (JIT if ctx == JIT else TRACED) if transform else ctx
            self.visit(passed.func, inner, params, root, self._closure_taint(func, passed.func, tainted))

    @staticmethod
    def _closure_taint(caller: Func, callee: Func, tainted: set[str]) -> frozenset[str]:
        if callee.parent is not caller:
            return frozenset()
        return frozenset(t for t in tainted if "." not in t) - callee.all_params()

    def _check_sink(self, func: Func, n: ast.AST, ctx: str, root: str, tainted: set[str]) -> None:
        """Record ``n`` when it is a sink applied to a tainted value (keeping the most severe context per line)."""
        tainted_expr = self.taint.expr_tainted
        kind = None
        if isinstance(n, ast.Call):
            target = self.code.live_value(func, n.func)
            first = n.args[0] if n.args else None
            if target is jax.device_get:
                kind = "jax.device_get()"
            elif member(target, SCALARS) and first is not None and tainted_expr(func, first, tainted):
                kind = SCALARS[target]
            elif member(target, NUMPY_CONVERT) and first is not None and tainted_expr(func, first, tainted):
                kind = NUMPY_CONVERT[target]
            elif member(target, FORMATTERS) and any(tainted_expr(func, a, tainted) for a in n.args):
                kind = f"{target.__name__}()"
            elif isinstance(n.func, ast.Attribute) and n.func.attr in ("item", "tolist", "__array__") and \
                    tainted_expr(func, n.func.value, tainted):
                kind = f".{n.func.attr}()"
        elif isinstance(n, ast.JoinedStr):
            if any(isinstance(v, ast.FormattedValue) and tainted_expr(func, v.value, tainted) for v in n.values):
                kind = "f-string"
        elif isinstance(n, (ast.If, ast.While, ast.IfExp, ast.Assert)):
            if tainted_expr(func, n.test, tainted):
                kind = "while on array" if isinstance(n, ast.While) else "if on array"
        elif isinstance(n, ast.comprehension):
            if any(tainted_expr(func, c, tainted | self.taint.comp_targets(func, [n], tainted)) for c in n.ifs):
                kind = "if on array"
        if kind is None:
            return
        line = getattr(n, "lineno", 0)
        path = display_path(func.src.path)
        key = (path, line, kind)
        if key in self.syncs and SEVERITY_ORDER[self.syncs[key]["inside"]] <= SEVERITY_ORDER[ctx]:
            return
        code = func.src.lines[line - 1].strip() if 0 < line <= len(func.src.lines) else ""
        self.syncs[key] = {"path": path, "line": line, "code": code, "kind": kind, "function": func.qualname,
                           "inside": ctx, "root": root}


def scan_sources(roots: Mapping[str, Callable[..., Any]]) -> StaticScan:
    """Static scan of the code reachable from each root ({"step": fn, "epoch": fn}) for device→host syncs.

    Follows calls into project code (never into installed libraries), resolving names against the live objects
    (module globals, closures, ``self`` of bound methods), so ``self._step = jax.jit(partial(f, cfg=...))`` is known
    to run ``f`` under jit with ``cfg`` static; jitted functions held by the roots' ``self`` (e.g. built lazily at
    the first call) are scanned as jitted code too. ``inside`` is ``jit`` (traced by ``jax.jit``), ``traced``
    (traced by another transform outside jit), ``step`` (Python code run once per update) or ``epoch`` (once per
    epoch).
    """
    scanner = SyncScanner()
    for root, fn in roots.items():
        scanner.reaches_jit.setdefault(root, False)
        callee = scanner.code.resolve_live(fn)
        if callee is None:
            path = getattr(getattr(inspect.unwrap(fn), "__code__", None), "co_filename", repr(fn)) \
                if callable(fn) else repr(fn)
            scanner.code.unavailable.append(f"{root}: {path}")
            continue
        if callee.kind == "jit":
            scanner.reaches_jit[root] = True
            if callee.func is not None:
                scanner.visit(callee.func, JIT, frozenset(callee.func.all_params()) - callee.static, root)
        elif callee.func is not None:
            scanner.visit(callee.func, STEP if root == STEP else EPOCH, frozenset(), root)
    owners = {id(o): o for o in (getattr(fn, "__self__", None) for fn in roots.values()) if o is not None}
    for owner in owners.values():
        for fn in live_jitted(owner):
            callee = scanner.code.resolve_live(fn)
            if callee is not None and callee.func is not None:
                scanner.visit(callee.func, JIT, frozenset(callee.func.all_params()) - callee.static, JIT)
    user_names = {"<lambda>"}
    files = []
    for path, src in scanner.code.sources.items():
        if src is not None:
            files.append(display_path(path))
            user_names |= {name for _, name in src.by_line}
    syncs = sorted(scanner.syncs.values(), key=lambda s: (SEVERITY_ORDER[s["inside"]], s["path"], s["line"]))
    return StaticScan(syncs, dict(scanner.reaches_jit), user_names, sorted(files), scanner.code.unavailable)
