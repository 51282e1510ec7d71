"""Import a user-supplied ``pkg.module:attr`` (``--reference``, ``--candidate``, ``--target``) with one-line errors,
resolve our own registries' ``module:attr`` strings, and check that a factory's trainer has the protocol methods."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pogo_audit.model.protocol import PROTOCOL_METHODS
from pogo_audit.runtime.errors import UsageError


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


def glue_files(candidates: list[str], glue: list[str]) -> list[str]:
    """The source files of the user's glue: the module of every ``--candidate MOD:FACTORY`` and every ``--glue MOD``
    (:mod:`pogo_audit.model.glue`); a ``--glue`` module that cannot be imported is a :class:`UsageError`."""
    from pogo_audit.model.glue import module_file

    files = []
    for spec in candidates:
        module = spec.rpartition("=")[2].partition(":")[0]
        try:
            files.append(module_file(module))
        except (ImportError, ValueError):
            continue  # --candidate reports its own import errors
    for module in glue:
        try:
            files.append(module_file(module))
        except ImportError as exc:
            raise UsageError(f"--glue: cannot import module {module!r} ({exc})") from None
        except ValueError as exc:
            raise UsageError(f"--glue: {exc}") from None
    return files


def resolve(spec: str) -> Any:
    """The attribute a registry names as ``module:attr`` (our own code: an error here is a defect of pogo-audit, and
    ``tests/test_registries.py`` resolves every such string of every registry)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_factory(spec: str, option: str) -> Callable[..., Any]:
    """``pkg.module:factory`` → a factory that checks what it builds against the Trainer protocol (it pickles as its
    spec, so a worker process loads the same factory)."""
    return CheckedFactory(import_callable(spec, option, "examples.pogo_adapter:factory"), spec, option, True)


@dataclass(frozen=True)
class CheckedFactory:
    """``factory`` whose trainer must have the protocol methods (else a usage error naming ``option``). What the
    factory itself raises is the trainer's defect: the harness reports it as a crash in phase "factory".
    ``from_spec``: loaded from ``spec`` by :func:`load_factory`, and pickled as that spec."""

    factory: Callable[..., Any]
    spec: str
    option: str
    from_spec: bool = False

    def __call__(self, config: Any, dataset_spec: Any, seed: int) -> Any:
        trainer = self.factory(config, dataset_spec, seed)
        missing = [m for m in PROTOCOL_METHODS if not callable(getattr(trainer, m, None))]
        if missing:
            raise UsageError(f"{self.option}: trainer from {self.spec} lacks protocol method(s) {', '.join(missing)} "
                             f"(needs {', '.join(PROTOCOL_METHODS)})")
        return trainer

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.from_spec:
            return load_factory, (self.spec, self.option)
        return CheckedFactory, (self.factory, self.spec, self.option, False)
