"""Host-memory growth over the measured calls: a ``tracemalloc`` slope per call of the user's own allocations, and
the lines that grew.

A trainer that keeps something per step forever (a list of per-step log dicts, the loss history as arrays) grows
the Python heap linearly; a steady trainer does not. Only blocks allocated by project code (not the standard
library, installed packages such as jax's own caches, or this profiler) are counted: ``tracemalloc`` is sampled
after every call and a least-squares line fitted. Growth is flagged when the slope is at least
:data:`GROWTH_BYTES_PER_CALL` and the samples lie on the line (correlation at least :data:`GROWTH_MIN_R`), so a
one-off allocation is not taken for a leak. The user's lines that grew most between the first and the last call
are named.
"""

from __future__ import annotations

import gc
import os
import statistics
import tracemalloc
from collections.abc import Callable
from typing import Any

from checks.jax_profile.files import LIBRARY_PREFIXES, display_path

#: slope (bytes per call) from which the host heap counts as growing; a per-step dict of a few floats is ~100 B
GROWTH_BYTES_PER_CALL = 32.0
#: the samples must be this close to a straight line (Pearson r) for the growth to count as unbounded
GROWTH_MIN_R = 0.9
_PROFILER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_USER_CODE = [tracemalloc.Filter(False, "<*"), tracemalloc.Filter(False, "*site-packages*"),
              tracemalloc.Filter(False, f"{_PROFILER_DIR}*"),
              *(tracemalloc.Filter(False, f"{prefix}{os.sep}*") for prefix in LIBRARY_PREFIXES)]


def _fit(samples: list[int]) -> tuple[float, float]:
    """(slope, Pearson r) of ``samples`` against their index."""
    xs = list(range(len(samples)))
    if len(samples) < 3 or statistics.pvariance(samples) == 0:
        return 0.0, 0.0
    slope, _ = statistics.linear_regression(xs, samples)
    return slope, statistics.correlation(xs, samples)


def _user_snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(_USER_CODE)


def measure_growth(call: Callable[[], None], calls: int) -> dict[str, Any]:
    """Run ``call`` ``calls`` times under ``tracemalloc``: bytes per call of the project's live allocations (slope),
    r, total growth, the top growing lines.

    Returns {calls, bytes_per_call, r, growth_bytes, growing, top: [{path, line, bytes, count}]}.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    samples = [0] * calls
    try:
        gc.collect()
        before = _user_snapshot()
        base = sum(t.size for t in before.traces)
        for i in range(calls):
            call()
            samples[i] = sum(t.size for t in _user_snapshot().traces) - base
        gc.collect()
        after = _user_snapshot()
    finally:
        if started:
            tracemalloc.stop()
    slope, r = _fit(samples)
    top = []
    for stat in after.compare_to(before, "lineno"):
        if stat.size_diff > 0:
            frame = stat.traceback[0]
            top.append({"path": display_path(frame.filename), "line": frame.lineno, "bytes": stat.size_diff,
                        "count": stat.count_diff})
        if len(top) == 3:
            break
    return {"calls": calls, "bytes_per_call": slope, "r": r,
            "growth_bytes": sum(t.size for t in after.traces) - base,
            "growing": slope >= GROWTH_BYTES_PER_CALL and r >= GROWTH_MIN_R, "top": top}
