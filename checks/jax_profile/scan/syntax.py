"""AST helpers of the static scan: a function's own nodes, dotted names, assignment targets, jit's static args."""

from __future__ import annotations

import ast
from collections.abc import Iterator


def walk_own(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and its descendants, not entering nested defs, lambdas or classes."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(n))


def dotted(expr: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        return ".".join([expr.id, *reversed(parts)])
    return None


def target_names(target: ast.AST) -> set[str]:
    """Names (dotted for attributes) an assignment to ``target`` binds or mutates."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Attribute):
        name = dotted(target)
        return {name} if name else set()
    if isinstance(target, ast.Subscript):
        return target_names(target.value)
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(target_names(e) for e in target.elts)) if target.elts else set()
    return set()


def own_nodes(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> Iterator[ast.AST]:
    """Every node of a function body, not entering nested defs, lambdas or classes."""
    for stmt in (node.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else [node.body]):
        yield from walk_own(stmt)


def static_names_of_jit_call(call: ast.Call) -> frozenset[str]:
    """``static_argnames`` of a ``jax.jit(...)`` call."""
    names: set[str] = set()
    for kw in call.keywords:
        if kw.arg == "static_argnames":
            for n in ast.walk(kw.value):
                if isinstance(n, ast.Constant) and isinstance(n.value, str):
                    names.add(n.value)
    return frozenset(names)


def static_argnums_of_jit_call(call: ast.Call) -> tuple[int, ...]:
    """``static_argnums`` of a ``jax.jit(...)`` call."""
    for kw in call.keywords:
        if kw.arg == "static_argnums":
            return tuple(n.value for n in ast.walk(kw.value)
                         if isinstance(n, ast.Constant) and isinstance(n.value, int))
    return ()


def argnums_of_call(call: ast.Call) -> tuple[int, ...]:
    """``argnums`` of a ``jax.grad(f, argnums=...)``-like call (positional second argument too; default 0)."""
    positional = call.args[1] if len(call.args) > 1 else None
    value = next((kw.value for kw in call.keywords if kw.arg == "argnums"), positional)
    if value is None:
        return (0,)
    return tuple(n.value for n in ast.walk(value) if isinstance(n, ast.Constant) and isinstance(n.value, int))
