"""The scanned code: function bodies found from live callables, free names resolved against live objects, and
what calling an expression runs (a ``jax.jit`` function or plain Python, with its static arguments).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax

from checks.jax_profile.files import is_project_file
from checks.jax_profile.scan.live import MISSING, is_jax_object, is_jitted
from checks.jax_profile.scan.syntax import own_nodes, static_argnums_of_jit_call, static_names_of_jit_call


@dataclass
class Source:
    """A parsed project file: its lines and its function nodes by (first line incl. decorators, name)."""

    path: str
    lines: list[str]
    by_line: dict[tuple[int, str], ast.AST]


@dataclass(eq=False)
class Func:
    """A Python function body (def or lambda) with what is known of its live environment."""

    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    src: Source
    globals: dict[str, Any]
    live: dict[str, Any]
    instance: Any = None
    self_name: str | None = None
    parent: Func | None = None

    @property
    def qualname(self) -> str:
        name = getattr(self.node, "name", "<lambda>")
        return f"{self.parent.qualname}.{name}" if self.parent is not None else name

    def params(self) -> list[str]:
        a = self.node.args
        names = [p.arg for p in (*a.posonlyargs, *a.args)]
        return names[1:] if self.self_name is not None and names and names[0] == self.self_name else names

    def flag_params(self) -> set[str]:
        """Parameters annotated ``bool`` or ``str``: Python flags (a traced one could not drive an ``if``)."""
        a = self.node.args
        return {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)
                if (isinstance(p.annotation, ast.Name) and p.annotation.id in ("bool", "str")) or
                (isinstance(p.annotation, ast.Constant) and p.annotation.value in ("bool", "str"))}

    def all_params(self) -> set[str]:
        a = self.node.args
        names = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
        names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
        return names - {self.self_name} if self.self_name else names


@dataclass(frozen=True)
class Callee:
    """A resolved call: a jitted function (``jit``) or plain Python (``py``), its body when known."""

    kind: str
    func: Func | None
    static: frozenset[str] = frozenset()
    bound_positional: int = 0


class CodeIndex:
    """Parsed project sources and name/call resolution in them (memoized per function node)."""

    def __init__(self) -> None:
        self.sources: dict[str, Source | None] = {}
        self.unavailable: list[str] = []
        self._locals_memo: dict[int, tuple[dict[str, ast.AST], dict[str, ast.expr]]] = {}

    # ------------------------------------------------------------------------------------- sources and lookup

    def source(self, path: str) -> Source | None:
        """The parsed project file at ``path`` (None for library code or an unreadable file, noted once)."""
        if path not in self.sources:
            self.sources[path] = None
            if is_project_file(path):
                try:
                    text = open(path, encoding="utf-8").read()
                    tree = ast.parse(text, filename=path)
                except (OSError, SyntaxError, UnicodeDecodeError):
                    self.unavailable.append(path)
                    return None
                by_line: dict[tuple[int, str], ast.AST] = {}
                for n in ast.walk(tree):
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        first = min([n.lineno, *(d.lineno for d in n.decorator_list)])
                        by_line[(first, n.name)] = n
                        by_line.setdefault((n.lineno, n.name), n)
                    elif isinstance(n, ast.Lambda):
                        by_line.setdefault((n.lineno, "<lambda>"), n)
                self.sources[path] = Source(path, text.splitlines(), by_line)
        return self.sources[path]

    def func_of(self, fn: Any, instance: Any = None) -> Func | None:
        """The body of a live Python function (or bound method), when its source is project code."""
        if inspect.ismethod(fn):
            instance, fn = fn.__self__, fn.__func__
        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        src = self.source(code.co_filename)
        if src is None:
            return None
        node = src.by_line.get((code.co_firstlineno, code.co_name))
        if node is None:
            return None
        live = {}
        for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
            with contextlib.suppress(ValueError):
                live[name] = cell.cell_contents
        func = Func(node, src, getattr(fn, "__globals__", {}), live)
        if instance is not None and node.args.args:
            func.instance, func.self_name = instance, node.args.args[0].arg
        return func

    def lookup(self, func: Func, name: str) -> Any:
        """Live value of a free name in ``func``: closure cell, then globals, then builtins."""
        f: Func | None = func
        while f is not None:
            if name in f.live:
                return f.live[name]
            if f is not func and (name in f.all_params() or self.local_assignment(f, name) is not None):
                return MISSING
            f = f.parent
        if name in func.globals:
            return func.globals[name]
        return getattr(builtins, name, MISSING)

    def _locals(self, node: ast.AST) -> tuple[dict[str, ast.AST], dict[str, ast.expr]]:
        """(nested defs, single-name assignments) of a function body, by name."""
        if id(node) not in self._locals_memo:
            defs: dict[str, ast.AST] = {}
            assigned: dict[str, ast.expr] = {}
            if not isinstance(node, ast.Lambda):
                for n in own_nodes(node):
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        defs.setdefault(n.name, n)
                    elif isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                        assigned.setdefault(n.targets[0].id, n.value)
            self._locals_memo[id(node)] = (defs, assigned)
        return self._locals_memo[id(node)]

    def local_def(self, func: Func, name: str) -> Func | None:
        """A def nested in ``func`` (or an enclosing function) named ``name``."""
        f: Func | None = func
        while f is not None:
            node = self._locals(f.node)[0].get(name)
            if node is not None:
                return Func(node, f.src, f.globals, {}, f.instance, None, f)
            f = f.parent
        return None

    def local_assignment(self, func: Func, name: str) -> ast.expr | None:
        return self._locals(func.node)[1].get(name)

    def live_value(self, func: Func, expr: ast.expr) -> Any:
        """The live object a Name/Attribute chain denotes (module functions, ``self.attr``), else ``MISSING``."""
        if isinstance(expr, ast.Name):
            if expr.id == func.self_name and func.instance is not None:
                return func.instance
            if expr.id in func.all_params() or self.local_assignment(func, expr.id) is not None:
                return MISSING
            return self.lookup(func, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.live_value(func, expr.value)
            if base is MISSING:
                return MISSING
            try:
                return getattr(base, expr.attr)
            except Exception:  # a user property may raise anything; the scan then treats the name as unresolved
                return MISSING
        return MISSING

    # ------------------------------------------------------------------------------------- call resolution

    def resolve_live(self, obj: Any) -> Callee | None:
        if obj is MISSING or obj is None:
            return None
        if is_jitted(obj):
            inner, static, bound = obj.__wrapped__, set(), 0
            while isinstance(inner, partial):
                static |= set(inner.keywords)
                bound += len(inner.args)
                inner = inner.func
            if is_jax_object(inner):
                return None
            func = self.func_of(inner)
            if func is not None:
                static |= self._decorator_statics(func)
            return Callee("jit", func, frozenset(static), bound)
        if isinstance(obj, partial):
            callee = self.resolve_live(obj.func)
            if callee is None:
                return None
            return Callee(callee.kind, callee.func, callee.static | frozenset(obj.keywords),
                           callee.bound_positional + len(obj.args))
        if inspect.isfunction(obj) or inspect.ismethod(obj):
            func = self.func_of(obj)
            return Callee("py", func) if func is not None else None
        return None

    def _decorator_statics(self, func: Func) -> set[str]:
        static: set[str] = set()
        node = func.node
        if isinstance(node, ast.Lambda):
            return static
        params = [p.arg for p in (*node.args.posonlyargs, *node.args.args)]
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call):
                static |= static_names_of_jit_call(dec)
                static |= {params[i] for i in static_argnums_of_jit_call(dec) if i < len(params)}
        return static

    def resolve(self, func: Func, expr: ast.expr, depth: int = 0) -> Callee | None:
        """What calling ``expr`` inside ``func`` runs."""
        if depth > 8:
            return None
        if isinstance(expr, ast.Lambda):
            return Callee("py", Func(expr, func.src, func.globals, {}, func.instance, None, func))
        if isinstance(expr, ast.Call):
            target = self.live_value(func, expr.func)
            inner = expr.args[0] if expr.args else None
            if target is jax.jit and inner is not None:
                callee = self.resolve(func, inner, depth + 1)
                body = callee.func if callee else None
                static = set(static_names_of_jit_call(expr))
                if body is not None:
                    params = body.params()
                    static |= {params[i] for i in static_argnums_of_jit_call(expr) if i < len(params)}
                    static |= callee.static if callee else set()
                return Callee("jit", body, frozenset(static), callee.bound_positional if callee else 0)
            if target is partial and inner is not None:
                callee = self.resolve(func, inner, depth + 1)
                if callee is None:
                    return None
                return Callee(callee.kind, callee.func,
                               callee.static | frozenset(k.arg for k in expr.keywords if k.arg),
                               callee.bound_positional + len(expr.args) - 1)
            maker = self.resolve(func, expr.func, depth + 1)
            if maker is not None and maker.kind == "py" and maker.func is not None:
                for n in own_nodes(maker.func.node):
                    if isinstance(n, ast.Return) and n.value is not None:
                        made = self.resolve(maker.func, n.value, depth + 1)
                        if made is not None and made.kind == "jit":
                            return made
            return None
        if isinstance(expr, ast.Subscript):
            held = self.live_value(func, expr.value)
            values = list(held.values()) if isinstance(held, dict) else held if isinstance(held, (list, tuple)) \
                else []
            return Callee("jit", None) if values and all(is_jitted(v) for v in values) else None
        if isinstance(expr, ast.Name):
            nested = self.local_def(func, expr.id)
            if nested is not None:
                return Callee("py", nested)
            assigned = self.local_assignment(func, expr.id)
            if assigned is not None:
                return self.resolve(func, assigned, depth + 1)
        return self.resolve_live(self.live_value(func, expr))
