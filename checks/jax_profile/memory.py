"""Host-memory growth over the measured calls: a ``tracemalloc`` slope per call of the user's own allocations, and
the lines that grew.

A trainer that keeps something per step forever (a list of per-step log dicts, the loss history as arrays) grows
the Python heap linearly; a steady trainer does not. Only blocks allocated by project code (not the standard
library, installed packages such as jax's own caches, or this profiler) are counted: ``tracemalloc`` is sampled
after every call and a least-squares line fitted. Growth is flagged when the slope is at least
:data:`GROWTH_BYTES_PER_CALL` and the samples lie on the line (correlation at least :data:`GROWTH_MIN_R`), so a
one-off allocation is not taken for a leak. The user's lines that grew most between the first and the last call
are named.

Allocations made inside jax's C++ code are attributed to the user's line that called it (``tracemalloc`` sees no
C frames), and jax keeps per-call bookkeeping of its own there (the reference ReBRAC's jitted epoch "grows" ~250 B
per call that way, none of it reachable from the trainer). So when the target exposes its state (the protocol
object's attributes), growth counts only if that state grows too, measured by :func:`state_bytes` — a per-step
log kept in the trainer does, jax's bookkeeping does not.
"""

from __future__ import annotations

import gc
import inspect
import os
import statistics
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from checks.jax_profile.files import LIBRARY_PREFIXES, PROFILER_DIR, display_path

#: slope (bytes per call) from which the host heap counts as growing; a per-step dict of a few floats is ~100 B
GROWTH_BYTES_PER_CALL = 32.0
#: the samples must be this close to a straight line (Pearson r) for the growth to count as unbounded
GROWTH_MIN_R = 0.9
_USER_CODE = [tracemalloc.Filter(False, "<*"), tracemalloc.Filter(False, "*site-packages*"),
              tracemalloc.Filter(False, f"{PROFILER_DIR}*"),
              *(tracemalloc.Filter(False, f"{prefix}{os.sep}*") for prefix in LIBRARY_PREFIXES)]


def _fit(samples: list[int]) -> tuple[float, float]:
    """(slope, Pearson r) of ``samples`` against their index."""
    xs = list(range(len(samples)))
    if len(samples) < 3 or statistics.pvariance(samples) == 0:
        return 0.0, 0.0
    slope, _ = statistics.linear_regression(xs, samples)
    return slope, statistics.correlation(xs, samples)


def state_bytes(root: Any, limit: int = 200_000) -> int:
    """Bytes reachable from ``root`` through containers and plain objects' attributes: ``sys.getsizeof`` of each,
    ``nbytes`` of NumPy and jax arrays; functions, modules and classes are not followed (at most ``limit`` objects)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or inspect.isroutine(obj) or inspect.ismodule(obj) or inspect.isclass(obj):
            continue
        seen.add(id(obj))
        if isinstance(obj, (jax.Array, np.ndarray)):
            total += sys.getsizeof(obj) + (obj.nbytes if isinstance(obj, jax.Array) else 0)
            continue
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not callable(obj):
            stack.extend(vars(obj).values())
    return total


def _user_snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(_USER_CODE)


def measure_growth(call: Callable[[], None], calls: int, state: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Run ``call`` ``calls`` times under ``tracemalloc``: bytes per call of the project's live allocations (slope),
    r, total growth, the top growing lines; with ``state`` (the target's state), also its bytes per call, which must
    grow too for the growth to count.

    Returns {calls, bytes_per_call, r, growth_bytes, state_bytes_per_call, growing, top: [{path, line, bytes,
    count}]}.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    samples = [0] * calls
    sizes = [0] * calls
    try:
        gc.collect()
        before = _user_snapshot()
        base = sum(t.size for t in before.traces)
        for i in range(calls):
            call()
            samples[i] = sum(t.size for t in _user_snapshot().traces) - base
            if state is not None:
                sizes[i] = state_bytes(state())
        gc.collect()
        after = _user_snapshot()
    finally:
        if started:
            tracemalloc.stop()
    slope, r = _fit(samples)
    state_slope = _fit(sizes)[0] if state is not None else None
    top = []
    for stat in after.compare_to(before, "lineno"):
        if stat.size_diff > 0:
            frame = stat.traceback[0]
            top.append({"path": display_path(frame.filename), "line": frame.lineno, "bytes": stat.size_diff,
                        "count": stat.count_diff})
        if len(top) == 3:
            break
    growing = slope >= GROWTH_BYTES_PER_CALL and r >= GROWTH_MIN_R and (
        state_slope is None or state_slope >= GROWTH_BYTES_PER_CALL)
    return {"calls": calls, "bytes_per_call": slope, "r": r,
            "growth_bytes": sum(t.size for t in after.traces) - base, "state_bytes_per_call": state_slope,
            "growing": growing, "top": top}
