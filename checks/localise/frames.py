"""Source frames of the audited trainer's own code, and a line tracer that numbers its calls.

A frame is *user code* when its file is neither in the Python installation (stdlib, site-packages: torch, numpy, ...)
nor in the audit tool itself (``pogo_audit/``, ``checks/``). ``multi_actor/`` and ``reference_algos/`` count as user
code: our own trainers are audited too. Code compiled by :mod:`checks.source_patch` carries the real file name, so a
mutant's frames point at the mutated file.

:class:`LineTracer` (``sys.settrace``, user frames only) gives every user call a serial number — two calls of the same
function from the same line are told apart — and logs every user line as it starts, with the autograd mode, so a
divergence caused by a line that runs no tensor operation (``with torch.enable_grad():``, a skipped ``squeeze``) can
still be named.
"""

from __future__ import annotations

import functools
import linecache
import re
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from checks.source_patch import PATCH_SCOPE
from pogo_audit.model import locations
from pogo_audit.model.glue import is_glue

REPO_ROOT = Path(__file__).resolve().parents[2]
_TOOL_DIRS = tuple(str(REPO_ROOT / d) + "/" for d in ("pogo_audit", "checks"))
_SYSTEM_DIRS = tuple(sorted({str(Path(p).resolve()) + "/" for key in ("stdlib", "platstdlib", "purelib", "platlib")
                             if (p := sysconfig.get_paths().get(key))} |
                            {str(Path(p).resolve()) + "/" for p in sys.path if "site-packages" in p}))
_USER: dict[str, bool] = {}
#: source lines that decide which code runs next
BRANCH = ("if ", "elif ", "while ", "for ", "else:")
#: source lines that open a block without deciding whether it runs (the deciding line is above them)
OPENERS = ("with ", "try:")
_SELF_ATTR = re.compile(r"\bself\.(\w+)")


def is_user_file(filename: str) -> bool:
    """Whether ``filename`` holds the audited trainer's code (see the module docstring); the user's glue (the adapter,
    :mod:`pogo_audit.model.glue`) does not: its frames are never traced or named."""
    if is_glue(filename):
        return False
    known = _USER.get(filename)
    if known is None:
        if filename.startswith("<"):
            known = False
        else:
            path = str(Path(filename).resolve())
            known = not path.startswith(_TOOL_DIRS + _SYSTEM_DIRS) and "site-packages/" not in path
        _USER[filename] = known
    return known


@functools.lru_cache(maxsize=4096)
def display_path(filename: str) -> str:
    """Repository-relative posix path when ``filename`` is inside the repository, else the absolute path."""
    return locations.display_path(filename, REPO_ROOT)


@dataclass(frozen=True)
class Frame:
    """One user-code frame: ``file`` (repository-relative when inside it), 1-based ``line``, ``function``
    (qualified name), ``code`` (the stripped source line) and ``call`` (the serial number of the call it belongs
    to, 0 when the tracer did not see the call start)."""

    file: str
    line: int
    function: str
    code: str
    call: int = 0

    @property
    def name(self) -> str:
        """The function's own name (what two sides' call paths are compared by)."""
        return self.function.rsplit(".", 1)[-1]

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function, "code": self.code}

    def where(self) -> str:
        return f"{self.file}:{self.line} in `{self.function}`"


def frame_of(f: FrameType, serials: dict[int, int]) -> Frame:
    code = f.f_code
    # a function recompiled by checks.source_patch runs inside a scope function; its own qualified name is the rest
    return Frame(display_path(code.co_filename), f.f_lineno, code.co_qualname.replace(f"{PATCH_SCOPE}.<locals>.", ""),
                 linecache.getline(code.co_filename, f.f_lineno).strip(), serials.get(id(f), 0))


@dataclass(frozen=True)
class Jump:
    """Continue the ``occurrence``-th run (0-based, in the traced step) of ``file:line`` at line ``target`` of the
    same function, without running ``line``: a branch condition the candidate evaluated otherwise than the reference
    is skipped and its block entered, so the block's own code can be compared with the reference's."""

    file: str
    line: int
    occurrence: int
    target: int


@dataclass(frozen=True)
class Assign:
    """Before the ``occurrence``-th run of ``file:line``, set attributes of the running method's ``self``
    (``values``: ``(name, value)`` pairs): a branch condition evaluated on the reference's values, to tell a
    condition that reads another value from a condition that is itself other."""

    file: str
    line: int
    occurrence: int
    values: tuple[tuple[str, Any], ...]


class LineTracer:
    """``sys.settrace`` on user code only: call serials, a log of the user lines started, and user stacks
    (``edit``: one intervention at one line, :class:`Jump` or :class:`Assign`)."""

    def __init__(self, grad_enabled: Callable[[], bool], edit: Jump | Assign | None = None):
        self._grad_enabled = grad_enabled
        self._edit = edit
        self._seen = 0
        #: whether ``edit`` was made
        self.edited = False
        self._next = 0
        self.serials: dict[int, int] = {}
        #: (frame, grad mode when the line started) for every user line, in execution order
        self.lines: list[tuple[Frame, bool]] = []
        #: line index -> scalar ``self.<attr>`` values read by the branch condition starting there
        self.conditions: dict[int, dict[str, Any]] = {}
        self._previous: Any = None

    def stack(self) -> tuple[Frame, ...]:
        """The user frames of the current Python stack that started while tracing (the traced step's own calls, not
        whoever called the step), outermost first."""
        out = []
        f: FrameType | None = sys._getframe(1)
        while f is not None:
            if id(f) in self.serials:
                out.append(frame_of(f, self.serials))
            f = f.f_back
        return tuple(reversed(out))

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            here = frame_of(frame, self.serials)
            edit = self._edit
            if edit is not None and not self.edited and (here.file, here.line) == (edit.file, edit.line):
                self._seen += 1
                if self._seen > edit.occurrence:
                    self.edited = True
                    if isinstance(edit, Jump):
                        self.lines.append((here, self._grad_enabled()))
                        frame.f_lineno = edit.target  # Python emits no line event for the line jumped to
                        here = frame_of(frame, self.serials)
                    else:
                        owner = frame.f_locals.get("self")
                        for name, value in edit.values:
                            setattr(owner, name, value)
            if here.code.startswith(BRANCH):
                self._remember_condition(frame, here.code)
            self.lines.append((here, self._grad_enabled()))
        elif event == "return":
            self.serials.pop(id(frame), None)
        return self._local

    def _remember_condition(self, frame: FrameType, code: str) -> None:
        """The scalar ``self.<attr>`` values a branch condition reads, as the line starts."""
        owner = frame.f_locals.get("self")
        values = {}
        for name in dict.fromkeys(_SELF_ATTR.findall(code)):
            value = getattr(owner, name, None)
            if isinstance(value, (int, float, bool, str)):
                values[name] = value
        if values:
            self.conditions[len(self.lines)] = values

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call" or not is_user_file(frame.f_code.co_filename):
            return None
        self._next += 1
        self.serials[id(frame)] = self._next
        return self._local

    def __enter__(self) -> LineTracer:
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.settrace(self._previous)
