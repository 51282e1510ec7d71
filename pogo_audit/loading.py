"""Import a user-supplied ``pkg.module:attr`` (``--reference``, ``--candidate``, ``--target``) with one-line errors."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from pogo_audit.errors import UsageError


def import_callable(spec: str, option: str, example: str) -> Callable[..., Any]:
    """``pkg.module:attr`` → the callable; the current directory is importable, as with ``python -m``.

    A malformed spec, a module that cannot be imported (or raises while importing) and a missing or non-callable
    attribute are each a :class:`UsageError` naming ``option``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{option}: expected MODULE:FACTORY (e.g. {example}), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{option}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # user code failing at import time is reported, not hidden
        raise UsageError(f"{option}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    value = getattr(module, attr, None)
    if not callable(value):
        raise UsageError(f"{option}: {module_name!r} has no callable {attr!r}")
    return value
