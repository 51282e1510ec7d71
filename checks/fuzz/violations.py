"""How properties report a violation: an AssertionError naming it, and the first difference of two values."""

from __future__ import annotations

import math
from typing import Any, NoReturn


def fail(message: str) -> NoReturn:
    """Report a property violation (an AssertionError describing it)."""
    raise AssertionError(message)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """First place where ``a`` and ``b`` differ in value or type (NaN equals NaN), or None."""
    where = path or "<root>"
    if type(a) is not type(b):
        return f"{where}: {a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            diff = first_difference(a[k], b[k], f"{path}.{k}" if path else str(k))
            if diff:
                return diff
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, f"{path}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"
