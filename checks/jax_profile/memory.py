"""Host-memory growth over the measured calls: a ``tracemalloc`` slope per call of the user's own allocations as a robust
trend with its uncertainty, and the lines that grew.

A trainer that keeps something per step forever (a list of per-step log dicts, the loss history as arrays) grows
the Python heap linearly; a steady trainer does not. Only blocks allocated by project code (not the standard
library, installed packages such as jax's own caches, or this profiler) are counted: ``tracemalloc`` is sampled
after every call and the growth per call estimated by the Theil–Sen slope (the median of the pairwise slopes) with
its 95% interval (Sen's, from Kendall's tau): robust to the steps a periodic evaluation or compile puts into the
curve, where a least-squares fit and its correlation are not. Growth is established when the *lower* bound of the
interval is at least :data:`GROWTH_BYTES_PER_CALL`, so a one-off allocation is not taken for a leak; otherwise the
estimate and its interval are still reported (a note), never dropped. The user's lines that grew most between the first and the last call
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
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from scipy.stats import theilslopes

from checks.jax_profile.files import LIBRARY_PREFIXES, PROFILER_DIR, display_path

#: growth (bytes per call) from which the host heap counts as growing: 32 MB over CORL's 1e6 updates, a tenth of
#: the smallest per-update log record (one dict of a few floats, ~300 B measured); below it jax's own per-call
#: bookkeeping (~0-250 B, not reachable from the trainer's state) and tracemalloc noise
GROWTH_BYTES_PER_CALL = 32.0
#: training-loop steps measured by default (an epoch loop: ``max(epochs, 5)`` epochs)
MEMORY_STEPS = 30
#: confidence of the slope interval
CONFIDENCE = 0.95
#: the length of training a growth is projected over when the target does not say (CORL's ``max_timesteps``)
DEFAULT_TRAINING_STEPS = 1_000_000
_USER_CODE = [tracemalloc.Filter(False, "<*"), tracemalloc.Filter(False, "*site-packages*"),
              tracemalloc.Filter(False, f"{PROFILER_DIR}*"),
              *(tracemalloc.Filter(False, f"{prefix}{os.sep}*") for prefix in LIBRARY_PREFIXES)]


def trend(samples: list[int]) -> tuple[float, float, float]:
    """Theil–Sen slope of ``samples`` against their index and its :data:`CONFIDENCE` interval (0s under 3 samples
    or for a flat series)."""
    if len(samples) < 3 or min(samples) == max(samples):
        return 0.0, 0.0, 0.0
    fit = theilslopes(samples, np.arange(len(samples)), alpha=CONFIDENCE)
    return float(fit.slope), float(fit.low_slope), float(fit.high_slope)


def reachable(root: Any, limit: int = 200_000) -> Iterator[Any]:
    """Objects reachable from ``root`` through containers and plain objects' attributes, each once; arrays are
    leaves; functions, modules and classes are not followed (at most ``limit`` objects)."""
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or inspect.isroutine(obj) or inspect.ismodule(obj) or inspect.isclass(obj):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, (jax.Array, np.ndarray)):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not callable(obj):
            stack.extend(vars(obj).values())


def state_bytes(root: Any, limit: int = 200_000) -> int:
    """Bytes reachable from ``root`` (:func:`reachable`): ``sys.getsizeof`` of each, plus ``nbytes`` of jax
    arrays."""
    return sum(sys.getsizeof(obj) + (obj.nbytes if isinstance(obj, jax.Array) else 0)
               for obj in reachable(root, limit))


def held_by_line(root: Any) -> dict[tuple[str, int], tuple[int, int]]:
    """(bytes, objects) of what ``root`` holds now, by the project line that allocated each object, among objects
    allocated while ``tracemalloc`` traced (``tracemalloc.get_object_traceback``)."""
    lines: dict[tuple[str, int], tuple[int, int]] = {}
    for obj in reachable(root):
        tb = tracemalloc.get_object_traceback(obj)
        if tb is None:
            continue
        frame = tb[0]
        if frame.filename.startswith(LIBRARY_PREFIXES) or frame.filename.startswith("<") or \
                "site-packages" in frame.filename or frame.filename.startswith(PROFILER_DIR):
            continue
        size, count = lines.get((frame.filename, frame.lineno), (0, 0))
        lines[(frame.filename, frame.lineno)] = (size + sys.getsizeof(obj), count + 1)
    return lines


def growing_lines(mid: dict[tuple[str, int], tuple[int, int]], end: dict[tuple[str, int], tuple[int, int]],
                  top: int = 3) -> list[dict[str, Any]]:
    """The lines whose held bytes grew between two :func:`held_by_line` readings, most first: where the state keeps
    accumulating what it allocates (a per-step log), not what it replaces every step (the new train state)."""
    grown = [(key, size - mid.get(key, (0, 0))[0], count - mid.get(key, (0, 0))[1])
             for key, (size, count) in end.items()]
    ranked = sorted((g for g in grown if g[1] > 0), key=lambda g: -g[1])[:top]
    return [{"path": display_path(path), "line": line, "bytes": size, "count": count}
            for (path, line), size, count in ranked]


def _user_snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(_USER_CODE)


def measure_growth(call: Callable[[], None], calls: int, state: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Run ``call`` ``calls`` times under ``tracemalloc``: bytes per call of the project's live allocations (Theil–Sen
    slope and its interval), total growth, the top growing lines; with ``state`` (the target's state), also its bytes
    per call, which must grow too for the growth to count.

    Returns {calls, bytes_per_call, low, high, confidence, threshold, growth_bytes, state_bytes_per_call, growing,
    top: [{path, line, bytes, count}]}.
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
        mid: dict[tuple[str, int], tuple[int, int]] = {}
        for i in range(calls):
            call()
            samples[i] = sum(t.size for t in _user_snapshot().traces) - base
            if state is not None:
                sizes[i] = state_bytes(state())
                if i == calls // 2:
                    mid = held_by_line(state())
        gc.collect()
        after = _user_snapshot()
        held = growing_lines(mid, held_by_line(state())) if state is not None else []
    finally:
        if started:
            tracemalloc.stop()
    slope, low, high = trend(samples)
    state_slope = trend(sizes)[0] if state is not None else None
    top = list(held)
    for stat in after.compare_to(before, "lineno") if not top else []:
        if stat.size_diff > 0:
            frame = stat.traceback[0]
            top.append({"path": display_path(frame.filename), "line": frame.lineno, "bytes": stat.size_diff,
                        "count": stat.count_diff})
        if len(top) == 3:
            break
    growing = low >= GROWTH_BYTES_PER_CALL and (state_slope is None or state_slope >= GROWTH_BYTES_PER_CALL)
    return {"calls": calls, "bytes_per_call": slope, "low": low, "high": high, "confidence": CONFIDENCE,
            "threshold": GROWTH_BYTES_PER_CALL, "growth_bytes": sum(t.size for t in after.traces) - base,
            "state_bytes_per_call": state_slope, "growing": growing, "top": top}


def projection(memory: dict[str, Any], training_steps: int) -> dict[str, Any]:
    """The measured growth per call extrapolated over ``training_steps`` calls: bytes at the estimate and at the
    interval's bounds (negative bounds clipped to 0)."""
    return {"training_steps": training_steps, "bytes": max(memory["bytes_per_call"], 0.0) * training_steps,
            "low": max(memory["low"], 0.0) * training_steps, "high": max(memory["high"], 0.0) * training_steps}
