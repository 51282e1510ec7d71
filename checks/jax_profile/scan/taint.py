"""Taint analysis of the static scan: which expressions may hold a jax array (traced inside jit, on the device
outside), flow-insensitive per function and followed through calls into project code.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

import jax

from checks.jax_profile.scan.code import Callee, CodeIndex, Func
from checks.jax_profile.scan.live import (
    FUNCTION_TRANSFORMS,
    HOST_RESULT,
    MISSING,
    NUMPY_CONVERT,
    STATIC_ATTRS,
    holds_device_array,
    is_jax_object,
    member,
)
from checks.jax_profile.scan.syntax import dotted, own_nodes, target_names


class TaintAnalysis:
    """Tainted names per (function, tainted parameters, tainted closure names), memoized."""

    def __init__(self, code: CodeIndex) -> None:
        self.code = code
        self._taint_memo: dict[tuple[Any, ...], tuple[set[str], bool]] = {}
        self._in_progress: set[tuple[Any, ...]] = set()

    def expr_tainted(self, func: Func, expr: ast.AST | None, tainted: set[str]) -> bool:
        """Whether ``expr`` may hold a jax array (traced inside jit, on the device outside)."""
        if expr is None:
            return False
        if isinstance(expr, ast.Name):
            if expr.id in func.flag_params():
                return False
            if expr.id in tainted:
                return True
            if expr.id in func.all_params() or expr.id == func.self_name:
                return False
            value = self.code.lookup(func, expr.id)
            return value is not MISSING and not inspect.ismodule(value) and isinstance(value, jax.Array)
        if isinstance(expr, ast.Attribute):
            if expr.attr in STATIC_ATTRS:
                return False
            name = dotted(expr)
            if name is not None and name in tainted:
                return True
            if isinstance(expr.value, ast.Name) and expr.value.id == func.self_name and func.instance is not None:
                value = getattr(func.instance, expr.attr, None)
                return not callable(value) and holds_device_array(value)
            return self.expr_tainted(func, expr.value, tainted)
        if isinstance(expr, ast.Call):
            return self.call_tainted(func, expr, tainted)
        if isinstance(expr, (ast.Lambda, ast.Constant)):
            return False
        if isinstance(expr, ast.Compare) and all(isinstance(op, (ast.Is, ast.IsNot, ast.In, ast.NotIn))
                                                 for op in expr.ops):
            return False
        if isinstance(expr, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return any(self.expr_tainted(func, g.iter, tainted) for g in expr.generators) or any(
                self.expr_tainted(func, e, tainted | self.comp_targets(func, expr.generators, tainted))
                for e in ((expr.key, expr.value) if isinstance(expr, ast.DictComp) else (expr.elt,)))
        return any(self.expr_tainted(func, c, tainted) for c in ast.iter_child_nodes(expr)
                   if isinstance(c, ast.expr))

    def comp_targets(self, func: Func, generators: list[ast.comprehension], tainted: set[str]) -> set[str]:
        out: set[str] = set()
        for g in generators:
            out |= self.iter_taint(func, g.target, g.iter, tainted | out)
        return out

    def assign_taint(self, func: Func, target: ast.AST, value: ast.expr, tainted: set[str]) -> set[str]:
        """Names in ``target`` receiving a tainted part of ``value`` (tuples matched element by element)."""
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) and \
                len(target.elts) == len(value.elts) and not any(isinstance(e, ast.Starred) for e in target.elts):
            return set().union(*(self.assign_taint(func, t, v, tainted) for t, v in zip(target.elts, value.elts)))
        return target_names(target) if self.expr_tainted(func, value, tainted) else set()

    def iter_taint(self, func: Func, target: ast.AST, iterable: ast.expr, tainted: set[str]) -> set[str]:
        """Names bound by ``for target in iterable`` receiving tainted elements (``enumerate``, ``zip``, ``range``,
        ``dict.items/keys/values`` looked through)."""
        pair = isinstance(target, ast.Tuple) and len(target.elts) == 2
        if isinstance(iterable, ast.Call):
            fn = self.code.live_value(func, iterable.func)
            if fn is range:
                return set()
            if fn is enumerate and pair and iterable.args:
                return self.iter_taint(func, target.elts[1], iterable.args[0], tainted)
            if fn is zip and isinstance(target, ast.Tuple) and len(target.elts) == len(iterable.args):
                return set().union(*(self.iter_taint(func, t, a, tainted) for t, a in zip(target.elts, iterable.args)))
            if isinstance(iterable.func, ast.Attribute) and iterable.func.attr in ("items", "keys", "values") \
                    and not iterable.args:
                if iterable.func.attr == "keys" or not self.expr_tainted(func, iterable.func.value, tainted):
                    return set()
                if iterable.func.attr == "items" and pair:
                    return target_names(target.elts[1])
        return target_names(target) if self.expr_tainted(func, iterable, tainted) else set()

    def call_tainted(self, func: Func, call: ast.Call, tainted: set[str]) -> bool:
        target = self.code.live_value(func, call.func)
        if target is jax.device_get or member(target, NUMPY_CONVERT) or member(target, HOST_RESULT):
            return False
        if isinstance(call.func, ast.Attribute) and call.func.attr in ("item", "tolist", "__array__"):
            return False
        callee = self.code.resolve(func, call.func)
        if callee is not None and callee.kind == "jit":
            return True
        if target is not MISSING and is_jax_object(target):
            return getattr(target, "__name__", "") not in FUNCTION_TRANSFORMS
        if isinstance(call.func, ast.Call) and is_jax_object(self.code.live_value(func, call.func.func)):
            return True
        args_tainted = any(self.expr_tainted(func, a, tainted) for a in (*call.args, *(k.value for k in call.keywords)))
        if isinstance(call.func, ast.Attribute) and target is MISSING:
            args_tainted = args_tainted or self.expr_tainted(func, call.func.value, tainted)
        if callee is not None and callee.func is not None:
            params = self.bind(callee, call, func, tainted)
            return args_tainted or self.summary(callee.func, params)[1]
        return args_tainted

    def bind(self, callee: Callee, call: ast.Call, caller: Func, tainted: set[str]) -> frozenset[str]:
        """Parameters of ``callee`` receiving a tainted argument at ``call``."""
        body = callee.func
        assert body is not None
        params = body.params()[callee.bound_positional:]
        a = body.node.args
        out: set[str] = set()
        for i, arg in enumerate(call.args):
            t = self.expr_tainted(caller, arg.value if isinstance(arg, ast.Starred) else arg, tainted)
            if not t:
                continue
            if isinstance(arg, ast.Starred):
                out |= set(params[i:]) | ({a.vararg.arg} if a.vararg else set())
            elif i < len(params):
                out.add(params[i])
            elif a.vararg is not None:
                out.add(a.vararg.arg)
        for kw in call.keywords:
            if not self.expr_tainted(caller, kw.value, tainted):
                continue
            if kw.arg is None:
                out |= body.all_params()
            elif kw.arg in body.all_params():
                out.add(kw.arg)
            elif a.kwarg is not None:
                out.add(a.kwarg.arg)
        return frozenset(out - callee.static)

    def summary(self, func: Func, params: frozenset[str],
                closure: frozenset[str] = frozenset()) -> tuple[set[str], bool]:
        """(tainted local names, whether a return value is tainted), flow-insensitive, to a fixpoint."""
        key = (id(func.node), id(func.instance), params, closure)
        if key in self._taint_memo:
            return self._taint_memo[key]
        if key in self._in_progress:
            return set(params) | set(closure), False
        self._in_progress.add(key)
        tainted = set(params) | set(closure)
        nodes = list(own_nodes(func.node)) if not isinstance(func.node, ast.Lambda) else []
        for _ in range(6):
            before = len(tainted)
            for n in nodes:
                if isinstance(n, ast.Assign):
                    for t in n.targets:
                        tainted |= self.assign_taint(func, t, n.value, tainted)
                elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None:
                    if self.expr_tainted(func, n.value, tainted) or (
                            isinstance(n, ast.AugAssign) and self.expr_tainted(func, n.target, tainted)):
                        tainted |= target_names(n.target)
                elif isinstance(n, (ast.For, ast.AsyncFor)):
                    tainted |= self.iter_taint(func, n.target, n.iter, tainted)
                elif isinstance(n, ast.withitem) and n.optional_vars is not None and \
                        self.expr_tainted(func, n.context_expr, tainted):
                    tainted |= target_names(n.optional_vars)
                elif isinstance(n, ast.NamedExpr) and self.expr_tainted(func, n.value, tainted):
                    tainted |= target_names(n.target)
            if len(tainted) == before:
                break
        if isinstance(func.node, ast.Lambda):
            returns = self.expr_tainted(func, func.node.body, tainted)
        else:
            returns = any(isinstance(n, ast.Return) and self.expr_tainted(func, n.value, tainted) for n in nodes)
        self._in_progress.discard(key)
        self._taint_memo[key] = (tainted, returns)
        return tainted, returns
