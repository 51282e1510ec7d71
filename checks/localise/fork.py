"""Replays in forked processes: an exact copy of the audited trainer, whatever it holds, with nothing pickled in.

A localisation replays one step of both trainers from the state they had just before it, several times (plain,
repaired, forced). Copying a trainer with ``copy.deepcopy`` fails on objects a research trainer commonly holds (a
module object, a lock, an open environment) and, worse, *succeeds* wrongly on closures: a copied function still
reads and writes the live trainer's objects, so a replay could change the audited run. ``os.fork`` copies the whole
process instead, copy-on-write, in about the time of a deep copy:

* :class:`FrozenState` forks before a step; the child keeps the pre-step state and waits. When the step turns out
  to need a localisation, the child runs it on its own copy (:meth:`FrozenState.run`) and sends back the result;
  otherwise it is told to exit (:meth:`FrozenState.discard`).
* :func:`run_forked` runs one replay in a grandchild, so every replay of the step starts from the same pre-step
  state; only the replay's result (a :class:`checks.localise.trace.Trace`) travels back, pickled.

Forked children run one torch thread (an OpenMP pool does not survive ``fork``) and end with ``os._exit`` (no
``atexit`` handler of the audited process runs twice). Linux only; elsewhere the caller deep-copies.
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import select
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: how long a replay may take before its process is killed and the replay reported as failed (seconds)
REPLAY_TIMEOUT = 600.0


def available() -> bool:
    """Whether replays can run in forked processes here (Linux; fork is not safe with macOS system frameworks)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


class ReplayFailed(RuntimeError):
    """A forked replay ended without a result (killed, timed out, or its result could not be sent back)."""


@dataclass(frozen=True)
class Raised:
    """An exception raised inside a forked replay, as text (the exception object itself may not pickle)."""

    name: str
    message: str

    def __str__(self) -> str:
        return self.message


def _fork() -> int:
    """``os.fork()``, without the warning JAX registers for any fork of a process that imported it: the children
    here never call into JAX (its localiser replays in-process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        return os.fork()


def _child_setup() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # noqa: BLE001 - a replay without torch needs nothing here
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _send(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int, pid: int, timeout: float) -> bytes:
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            raise ReplayFailed(f"the replay process did not answer within {timeout:.0f} s and was stopped")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _portable(value: Any) -> Any:
    """``value`` with every exception in it (top level or inside a tuple) replaced by a :class:`Raised`."""
    if isinstance(value, BaseException):
        text = str(value).strip()
        return Raised(type(value).__name__, text.splitlines()[0] if text else "")
    if isinstance(value, tuple):
        return tuple(_portable(v) for v in value)
    return value


def _serve(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], fd: int) -> None:
    """In the child: run ``fn``, send ``("ok", result)`` or ``("error", text)``, then exit without cleanup."""
    try:
        try:
            payload = pickle.dumps(("ok", _portable(fn(*args, **kwargs))), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - whatever failed is reported to the parent
            lines = traceback.format_exception_only(type(exc), exc)
            payload = pickle.dumps(("error", "".join(lines).strip()), protocol=pickle.HIGHEST_PROTOCOL)
        _send(fd, payload)
    finally:
        os._exit(0)


def _answer(data: bytes, what: str) -> Any:
    if not data:
        raise ReplayFailed(f"the {what} process ended without sending a result")
    status, value = pickle.loads(data)  # our own child's bytes, never a user file
    if status != "ok":
        raise ReplayFailed(f"the {what} raised {value}")
    return value


def run_forked(fn: Callable[..., Any], *args: Any, timeout: float = REPLAY_TIMEOUT, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a forked child (on its copy-on-write copy of this process's objects); its result,
    pickled back, with exceptions in it turned into :class:`Raised`. Raises :class:`ReplayFailed` when the child
    fails or gives no result."""
    read_fd, write_fd = os.pipe()
    pid = _fork()
    if pid == 0:
        os.close(read_fd)
        _child_setup()
        _serve(fn, args, kwargs, write_fd)
    os.close(write_fd)
    try:
        data = _receive(read_fd, pid, timeout)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    return _answer(data, "replay")


class FrozenState:
    """A forked copy of this process taken now, waiting: :meth:`run` runs a function on ``objects`` as they were
    when it was taken; :meth:`discard` lets it go. Each is used once."""

    def __init__(self, *objects: Any) -> None:
        go_read, self._go = os.pipe()
        self._result, result_write = os.pipe()
        pid = _fork()
        if pid == 0:
            os.close(self._go)
            os.close(self._result)
            _child_setup()
            job = _wait_for_job(go_read)
            if job is None:
                os._exit(0)
            _serve(job[0], objects + job[1], job[2], result_write)
        os.close(go_read)
        os.close(result_write)
        self.pid = pid
        self._done = False

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = REPLAY_TIMEOUT, **kwargs: Any) -> Any:
        """``fn(*objects, *args, **kwargs)`` in the frozen copy: ``objects`` are the child's own copies; ``fn`` and
        the other arguments are pickled to it (a module-level function and small values)."""
        if self._done:
            raise ReplayFailed("a frozen state runs one job")
        self._done = True
        try:
            _send(self._go, pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL))
            os.close(self._go)
            data = _receive(self._result, self.pid, timeout)
        finally:
            self._close()
        return _answer(data, "frozen state")

    def discard(self) -> None:
        if not self._done:
            self._done = True
            os.close(self._go)  # the child reads end-of-file and exits
            self._close(wait=False)

    def _close(self, wait: bool = True) -> None:
        os.close(self._result)
        if wait:
            os.waitpid(self.pid, 0)
        else:
            _ZOMBIES.append(self.pid)
            reap()

    def __del__(self) -> None:
        try:
            self.discard()
        except OSError:
            pass


#: discarded children not waited for yet (reaped without blocking at the next discard)
_ZOMBIES: list[int] = []


def reap() -> None:
    """Collect the discarded children that have exited."""
    for pid in list(_ZOMBIES):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _ZOMBIES.remove(pid)


def _wait_for_job(fd: int) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return pickle.loads(b"".join(chunks)) if chunks else None  # our parent's bytes


def _storages(root: Any, limit: int = 100_000) -> set[int]:
    """Storage addresses of every tensor reachable from ``root`` through attributes, containers, ``nn.Module``
    state and functions' closures and defaults (what a replay of a copy could write through)."""
    import torch

    seen: set[int] = set()
    found: set[int] = set()
    stack = [root]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if obj.layout == torch.strided and obj.device.type != "meta" and obj.untyped_storage().nbytes():
                found.add(obj.untyped_storage().data_ptr())
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif callable(obj) and hasattr(obj, "__code__"):
            stack.extend(c.cell_contents for c in (obj.__closure__ or ()) if _filled(c))
            stack.extend(obj.__defaults__ or ())
            stack.append(getattr(obj, "__self__", None))
        elif hasattr(obj, "__self__") and hasattr(obj, "__func__"):
            stack.extend((obj.__self__, obj.__func__))
        if hasattr(obj, "__dict__") and not isinstance(obj, type) and not inspect.ismodule(obj):
            stack.extend(vars(obj).values())
    return found


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def independent_copy(obj: Any) -> Any:
    """``copy.deepcopy(obj)`` when the copy shares no tensor storage with ``obj`` (through closures, bound methods
    or anything deepcopy keeps by reference), so a replay on it cannot write into the audited run; raises
    :class:`ReplayFailed` naming why otherwise (and whatever deepcopy raised)."""
    duplicate = copy.deepcopy(obj)
    shared = _storages(obj) & _storages(duplicate)
    if shared:
        raise ReplayFailed(f"a deep copy of {type(obj).__name__} shares {len(shared)} tensor storage(s) with the "
                           "original (closures or objects deepcopy keeps by reference)")
    return duplicate
