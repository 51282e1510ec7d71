"""Runtime device-to-host sync probe: what the measured calls actually copy to the host, with the user's line.

On CPU ``transfer_guard_device_to_host`` never fires, and the static scan cannot follow every call (a method of an
object returned by another call, ``Metrics.compute()`` doing ``np.array(...)`` or ``if v[1] > 0``). While a
:class:`SyncProbe` is active, the conversions of a concrete ``jax.Array`` to host values are intercepted:

* the array class's ``__array__``, ``__float__``, ``__int__``, ``__bool__``, ``__index__``, ``__complex__``,
  ``item`` and ``tolist`` (class attributes of jaxlib's ``ArrayImpl``, restored on exit);
* ``jax.device_get``, and ``numpy.asarray``/``array``/``asanyarray``/``ascontiguousarray`` called on a jax array (on
  CPU NumPy reads the array through the buffer protocol, never through ``__array__``).

Each sync is recorded at the innermost frame of the user's code (file:line, function, source line) and counted per
measured call, so a site seen in every call is told from one seen once (evaluation, setup). Calls made by jax or by
this profiler are not the user's syncs and are skipped, as are conversions nested inside a recorded one.

Each sync also keeps the trainer functions on its stack: a sync of a ``step()``/``epoch()`` call made inside the
function ``evaluate()`` enters (an evaluation the training loop runs inline) is counted per evaluation, not per
update (:meth:`SyncProbe.classify`).
"""

from __future__ import annotations

import contextlib
import functools
import linecache
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from checks.jax_profile.compiles import EVALUATE
from checks.jax_profile.files import PROFILER_DIR, display_path, is_project_file
from pogo_audit.model.glue import is_glue

#: array methods that copy a concrete array to the host
ARRAY_METHODS = ("__array__", "__float__", "__int__", "__bool__", "__index__", "__complex__", "item", "tolist")
NUMPY_FUNCTIONS = ("asarray", "array", "asanyarray", "ascontiguousarray")
_JAX_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (jax, np)
                  if getattr(m, "__file__", None))
#: jax's pytree helpers call the user's function (``jax.tree.map(float, metrics)``): their frames are not jax's own
_USER_CALLBACK_FILES = ("tree_util.py", "tree.py")
_KIND = {"__array__": "__array__()", "__float__": "float()", "__int__": "int()", "__bool__": "bool() / if",
         "__index__": "__index__()", "__complex__": "complex()", "item": ".item()", "tolist": ".tolist()"}


@functools.lru_cache(maxsize=4096)
def _is_profiler(path: str) -> bool:
    return os.path.abspath(path).startswith(PROFILER_DIR)


@functools.lru_cache(maxsize=4096)
def _is_user_file(path: str) -> bool:
    return is_project_file(path) and not _is_profiler(path)


@functools.lru_cache(maxsize=4096)
def _is_library_caller(path: str) -> bool:
    """Frames of jax or NumPy internals converting arrays for their own purposes (not a callback of the user's)."""
    full = os.path.abspath(path)
    return full.startswith(_JAX_DIRS) and not full.endswith(_USER_CALLBACK_FILES)


def _holds_array(value: Any) -> bool:
    if isinstance(value, jax.Array):
        return True
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, jax.Array) for v in value)
    return False


@dataclass
class SyncSite:
    """One line of user code that synced: its kind and how many times per measured call (by path and index)."""

    path: str
    line: int
    function: str
    code: str
    kind: str
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (path, call index) -> the trainer functions (code objects, outermost first) on the stack of each sync
    stacks: dict[tuple[str, int], set[tuple[Any, ...]]] = field(default_factory=dict)

    def calls(self, path_name: str) -> dict[int, int]:
        """{call index: syncs} for one path."""
        return {i: n for (p, i), n in self.counts.items() if p == path_name}

    def as_dict(self) -> dict[str, Any]:
        by_path: dict[str, list[int]] = {}
        for (p, i), n in sorted(self.counts.items()):
            by_path.setdefault(p, []).append(n)
        return {"path": self.path, "line": self.line, "function": self.function, "code": self.code,
                "kind": self.kind, "per_call": by_path}


class SyncProbe:
    """Context manager patching the host conversions of jax arrays; records only inside :meth:`measuring`."""

    def __init__(self) -> None:
        self.sites: dict[tuple[str, int, str], SyncSite] = {}
        self.calls: dict[str, int] = {}
        self._current: tuple[str, int] | None = None
        self._busy = False
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> SyncProbe:
        array_type = type(jnp.zeros(()))
        for name in ARRAY_METHODS:
            original = array_type.__dict__.get(name)
            if original is not None:
                self._patch(array_type, name, self._wrap(_KIND[name], original, lambda args: True))
        self._patch(jax, "device_get", self._wrap("jax.device_get()", jax.device_get, lambda args: True))
        for name in NUMPY_FUNCTIONS:
            original = getattr(np, name)
            self._patch(np, name, self._wrap(f"np.{name}()", original, lambda args: bool(args) and
                                             _holds_array(args[0])))
        return self

    def __exit__(self, *exc: object) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, replacement)

    def _wrap(self, kind: str, original: Any, applies: Callable[[tuple[Any, ...]], bool]) -> Callable[..., Any]:
        probe = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if probe._current is None or probe._busy:
                return original(*args, **kwargs)
            probe._busy = True
            try:
                if applies(args):
                    probe._note(kind, sys._getframe(1))
                return original(*args, **kwargs)
            finally:
                probe._busy = False

        with contextlib.suppress(AttributeError, TypeError):
            functools.update_wrapper(wrapper, original)
        return wrapper

    def _note(self, kind: str, caller: FrameType) -> None:
        if _is_library_caller(caller.f_code.co_filename):
            return
        frame: FrameType | None = caller
        while frame is not None and not _is_user_file(frame.f_code.co_filename):
            frame = frame.f_back
        outer = frame
        while outer is not None and (is_glue(outer.f_code.co_filename)
                                     or not _is_user_file(outer.f_code.co_filename)):
            outer = outer.f_back
        frame = outer or frame  # the user's glue only when no trainer frame is on the stack
        if frame is None or self._current is None:
            return
        path, line = frame.f_code.co_filename, frame.f_lineno
        key = (display_path(path), line, kind)
        site = self.sites.get(key)
        if site is None:
            function = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            site = self.sites[key] = SyncSite(key[0], line, function, linecache.getline(path, line).strip(), kind)
        site.counts[self._current] = site.counts.get(self._current, 0) + 1
        site.stacks.setdefault(self._current, set()).add(_trainer_codes(frame))

    @contextlib.contextmanager
    def measuring(self, path_name: str, index: int) -> Iterator[None]:
        """Record the syncs of one measured call of ``path_name`` (``step``, ``epoch``, ``evaluate``); the call counts
        as measured when it returns."""
        previous, self._current = self._current, (path_name, index)
        try:
            yield
        finally:
            self._current = previous
        self.calls[path_name] = max(self.calls.get(path_name, 0), index + 1)

    def evaluation_entries(self) -> set[Any]:
        """The trainer functions ``evaluate()`` entered (the outermost trainer frame of each of its syncs)."""
        return {stack[0] for site in self.sites.values() for (p, _), stacks in site.stacks.items()
                if p == EVALUATE for stack in stacks if stack}

    def classify(self, path_name: str, updates_per_call: int = 1) -> list[dict[str, Any]]:
        """The sites seen on ``path_name``: ``recurring`` when seen in every measured call, ``per_update`` when at
        least ``updates_per_call`` times in each, with the calls that saw it; ``in_evaluation`` when every sync of
        the site on this path ran inside a function ``evaluate()`` enters (an inline evaluation), with
        ``per_evaluation``: its syncs per ``evaluate()`` call where that was measured."""
        out = []
        n = self.calls.get(path_name, 0)
        entries = self.evaluation_entries() if path_name != EVALUATE else set()
        for site in self.sites.values():
            calls = {i: c for i, c in site.calls(path_name).items() if i < n}
            if not calls:
                continue
            recurring = n > 0 and len(calls) == n
            stacks = [stack for (p, i), found in site.stacks.items() if p == path_name and i < n for stack in found]
            inline = bool(entries) and all(entries.intersection(stack) for stack in stacks)
            evaluations = site.calls(EVALUATE)
            out.append({**site.as_dict(), "on": path_name, "calls_seen": len(calls), "calls_measured": n,
                        "recurring": recurring, "in_evaluation": inline,
                        "per_evaluation": max(evaluations.values()) if inline and evaluations else None,
                        "per_update": recurring and not inline and min(calls.values()) >= updates_per_call})
        return sorted(out, key=lambda s: (s["path"], s["line"], s["kind"]))


def _trainer_codes(frame: FrameType | None) -> tuple[Any, ...]:
    """The code objects of the trainer's frames (user files, not glue) from ``frame`` out to the profiler's call
    into the target, outermost first."""
    codes = []
    while frame is not None and not _is_profiler(frame.f_code.co_filename):
        if _is_user_file(frame.f_code.co_filename) and not is_glue(frame.f_code.co_filename):
            codes.append(frame.f_code)
        frame = frame.f_back
    return tuple(reversed(codes))
