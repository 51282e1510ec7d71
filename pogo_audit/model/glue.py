"""The user's glue: the modules that adapt a trainer to the protocol — the ``--candidate`` module and every
``--glue MOD`` — are context, never the primary location of a finding. Their lines do not decide what the audited
trainer computes; a finding points at the trainer's own line, and a crash raised inside the glue names the glue line
only when no trainer frame is on the stack.

One process-wide declaration (:func:`declared`), made by the command for the duration of a run and inherited by the
processes it forks; :func:`is_glue` is asked by every rule that picks a frame (crash frames, traced frames,
evaluation seeding calls).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_FILES: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=8192)
def _resolved(filename: str) -> str:
    return str(Path(filename).resolve())


def is_glue(filename: str | os.PathLike[str]) -> bool:
    """Whether ``filename`` is a declared glue module's file."""
    if not _FILES:
        return False
    name = str(filename)
    return name in _FILES or (not name.startswith("<") and _resolved(name) in _FILES)


def files() -> frozenset[str]:
    """The declared glue files (resolved paths)."""
    return _FILES


def module_file(module: str) -> str:
    """The source file of module ``module`` (imports it; raises ImportError or ValueError with the reason)."""
    mod = importlib.import_module(module)
    path = getattr(mod, "__file__", None)
    if not path:
        raise ValueError(f"module {module!r} has no source file")
    return _resolved(path)


@contextmanager
def declared(paths: Iterable[str | os.PathLike[str]]) -> Iterator[frozenset[str]]:
    """Treat ``paths`` (and what was declared before) as glue inside the block."""
    global _FILES
    before = _FILES
    _FILES = before | frozenset(_resolved(str(p)) for p in paths)
    try:
        yield _FILES
    finally:
        _FILES = before
