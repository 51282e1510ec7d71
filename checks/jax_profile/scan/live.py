"""Live objects as the static scan sees them: jitted callables, jax functions, and the calls that sync or convert.

Names in scanned code are resolved against the live objects they denote (module globals, closures, ``self``), so the
scan compares against the real ``jax.jit``, ``np.asarray``, ``float`` etc. rather than their spelling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

#: jax transforms that trace the functions passed to them
TRANSFORMS = frozenset({"grad", "value_and_grad", "vmap", "jacfwd", "jacrev", "hessian", "checkpoint", "remat",
                        "scan", "fori_loop", "while_loop", "cond", "switch", "map", "associative_scan",
                        "custom_jvp", "custom_vjp", "pmap", "shard_map", "jvp", "vjp", "linearize"})
#: transforms that return a function (calling them does not produce an array)
FUNCTION_TRANSFORMS = frozenset({"jit", "grad", "value_and_grad", "vmap", "jacfwd", "jacrev", "hessian", "checkpoint",
                                 "remat", "custom_jvp", "custom_vjp", "pmap", "shard_map"})
#: function transforms that differentiate their ``argnums`` (default 0): those arguments are traced whatever is passed
DIFFERENTIATING = frozenset({"grad", "value_and_grad", "jacfwd", "jacrev", "hessian"})
#: array attributes known at trace time (reading them is no sync)
STATIC_ATTRS = frozenset({"shape", "ndim", "dtype", "size", "sharding", "weak_type"})
#: builtins whose result is a host value whatever their arguments
HOST_RESULT = frozenset({len, isinstance, issubclass, range, type, hasattr, getattr, callable, id, print, repr,
                         str, float, int, bool, complex})
#: sinks: conversions of a device value to NumPy, to a Python scalar, and formatting
NUMPY_CONVERT = {np.asarray: "np.asarray()", np.array: "np.array()", np.asanyarray: "np.asanyarray()",
                 np.ascontiguousarray: "np.ascontiguousarray()"}
SCALARS = {float: "float()", int: "int()", bool: "bool()", complex: "complex()"}
FORMATTERS = frozenset({print, str, repr, format})
#: what a name resolves to when no live object is known for it
MISSING = object()


def member(obj: Any, collection: Mapping[Any, Any] | frozenset[Any]) -> bool:
    """``obj in collection``, False for unhashable objects."""
    try:
        return obj in collection
    except TypeError:
        return False


def is_jitted(obj: Any) -> bool:
    """A ``jax.jit``-compiled callable (PjitFunction / ``jax.stages.Wrapped``)."""
    return callable(obj) and hasattr(obj, "lower") and hasattr(obj, "__wrapped__")


def holds_device_array(value: Any) -> bool:
    """A pytree with a ``jax.Array`` leaf."""
    try:
        return any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(value))
    except (TypeError, ValueError):
        return False


def is_jax_object(obj: Any) -> bool:
    """Defined in jax or jaxlib (not followed by the scan)."""
    module = getattr(obj, "__module__", None) or ""
    return module == "jax" or module.startswith(("jax.", "jaxlib"))


def live_jitted(owner: Any) -> list[Callable[..., Any]]:
    """``jax.jit`` functions held by ``owner``: attributes, and values of dict/list/tuple attributes."""
    found = []
    for value in getattr(owner, "__dict__", {}).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in items if is_jitted(v)]
    return found
