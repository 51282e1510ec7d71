"""Wall-time measurement of a target's calls: asynchronous dispatch waited for, medians over repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax

from checks.jax_profile.compiles import ProfileSession
from checks.jax_profile.targets import JaxTarget


def wait(value: Any) -> None:
    """Block until every jax array in ``value`` is computed (dispatch is asynchronous)."""
    for leaf in jax.tree.leaves(value):
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()


def run_calls(target: JaxTarget, fn: Callable[[], Any], n: int) -> None:
    """Call ``fn`` ``n`` times and wait for the last result (or the target's state when it returns None)."""
    result = None
    for _ in range(n):
        result = fn()
    wait(result if result is not None else (target.state() if target.state else None))


def seconds_per_call(target: JaxTarget, fn: Callable[[], Any], n: int, repeats: int) -> float:
    """Median over ``repeats`` of the wall time per call of ``n`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_calls(target, fn, n)
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def eager_warmup(session: ProfileSession, target: JaxTarget, max_calls: int = 4) -> None:
    """Call ``step`` (under ``disable_jit``) until a call compiles nothing: eager mode compiles each primitive once
    per shape, and different calls may take different branches."""
    for _ in range(max_calls):
        before = len(session.events)
        run_calls(target, target.step, 1)
        if not any(kind == "compile" for _, kind, _ in session.events[before:]):
            return
