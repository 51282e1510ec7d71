"""Findings about an audited trainer, as data: its crash and its parameter-name mismatches.

A crash says which side, in which phase and step, what it raised, and where in its own code.

A harness that drives a trainer wraps every call in :func:`guarded`; an exception becomes :class:`TrainerCrash`,
carrying a :class:`Crash` whose ``frame`` is the innermost traceback frame in the trainer's own code — not in the
standard library, an installed package (torch, numpy, ...) or the harness's packages — so the user is pointed at
their line, not at ``torch/nn/functional.py``. pogo-audit's own usage errors (:class:`PogoAuditError`) pass through.
"""

from __future__ import annotations

import ast
import functools
import re
import sysconfig
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pogo_audit.model.glue import is_glue
from pogo_audit.model.locations import display_path
from pogo_audit.runtime.errors import PogoAuditError

#: the pogo_audit package: harness code, never the trainer's
POGO_AUDIT_DIR = Path(__file__).resolve().parents[1]
_LIBRARY_DIRS = tuple({Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
                       if (p := sysconfig.get_paths().get(key))})


@dataclass(frozen=True)
class Crash:
    """One trainer exception, classified (the ``metrics["crash"]`` of a result)."""

    side: str
    phase: str
    step: int | None
    type: str
    message: str
    frame: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def where(self) -> str:
        """"in step 2", "in factory", "in parameters (step 3)"."""
        if self.phase == "step" and self.step is not None:
            return f"in step {self.step}"
        return f"in {self.phase}" + (f" (step {self.step})" if self.step is not None else "")

    def location(self) -> str:
        """"file:line in function" of the trainer frame, or "no frame in the trainer's code"."""
        f = self.frame
        return f"{f['file']}:{f['line']} in {f['function']}()" if f else "no frame in the trainer's code"

    def line(self) -> str:
        """One line: side, phase and step, exception, file:line."""
        return f"{self.side} crashed {self.where()}: {self.type}: {self.message} at {self.location()}"


class TrainerCrash(Exception):
    """A trainer raised while the harness drove it (carries the classified :class:`Crash`)."""

    def __init__(self, crash: Crash):
        super().__init__(crash.line())
        self.crash = crash


def _outside(path: Path, dirs: Iterable[Path]) -> bool:
    return not any(path == d or d in path.parents for d in dirs)


def trainer_frame(tb: TracebackType | None, harness_dirs: Iterable[Path] = (),
                  exc: BaseException | None = None) -> dict[str, Any] | None:
    """The frame of ``tb`` in the trainer's own code where the exception is decided (:func:`own_frame`); None when
    every frame is library or harness code."""
    return own_frame(traceback.extract_tb(tb), harness_dirs, exc)


#: a call whose arguments do not fit the callee: decided by the caller, raised inside the callee or a wrapper
_SIGNATURE = re.compile(r"unexpected keyword argument|missing \d+ required (positional|keyword-only) argument|"
                        r"takes \d+ positional arguments? but \d+ (was|were) given|got multiple values for argument|"
                        r"takes no arguments|positional-only arguments? passed as keyword")
#: a source line that passes its own ``*args`` / ``**kwargs`` on (a wrapper, not the caller that chose them)
_FORWARDS = re.compile(r"\(\s*(\*\w+\s*,\s*)?\*\*\w+\s*\)|\(\s*\*\w+\s*\)")


def _own(fs: traceback.FrameSummary, excluded: tuple[Path, ...]) -> bool:
    if fs.filename.startswith("<") or is_glue(fs.filename):
        return False
    path = Path(fs.filename).resolve()
    return "site-packages" not in path.parts and "dist-packages" not in path.parts and _outside(path, excluded)


def _record(fs: traceback.FrameSummary) -> dict[str, Any]:
    return {"file": display_path(Path(fs.filename).resolve()), "line": int(fs.lineno or 0), "function": fs.name,
            "code": (fs.line or "").strip()}


@functools.lru_cache(maxsize=256)
def call_sites(path: str, name: str) -> int:
    """How many calls of a function named ``name`` the source file ``path`` makes (0 when it cannot be parsed)."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return 0
    return sum(1 for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == name) or
        (isinstance(node.func, ast.Attribute) and node.func.attr == name)))


def decision_frame(frames: Iterable[traceback.FrameSummary], harness_dirs: Iterable[Path] = ()
                   ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """(decided, via) for an action observed at the innermost own frame of ``frames`` (a reseed, a draw): a helper
    that its file calls from two or more places does what it is told, so the call site on this path decided it —
    climbed while the innermost own frame is such a helper; ``via`` is the helper's frame (None when not climbed)."""
    excluded = (*_LIBRARY_DIRS, POGO_AUDIT_DIR, *(Path(d).resolve() for d in harness_dirs))
    own = [fs for fs in frames if not fs.filename.startswith("<") and _own(fs, excluded)]
    if not own:
        return None
    k = len(own) - 1
    while k > 0 and call_sites(own[k].filename, own[k].name) >= 2:
        k -= 1
    return _record(own[k]), (_record(own[-1]) if k < len(own) - 1 else None)


def own_frame(frames: Iterable[traceback.FrameSummary], harness_dirs: Iterable[Path] = (),
              exc: BaseException | None = None) -> dict[str, Any] | None:
    """The innermost of ``frames`` (outermost first: a traceback or ``traceback.extract_stack()``) in the trainer's
    own code — not the standard library, site-packages, pogo-audit or ``harness_dirs``, and not the user's glue
    (:mod:`pogo_audit.model.glue`) unless no other frame is left. For a call-signature ``TypeError`` (an unexpected
    keyword, a missing argument) a frame that only passes its own ``*args``/``**kwargs`` on is a wrapper: the
    caller that chose the arguments is named."""
    excluded = (*_LIBRARY_DIRS, POGO_AUDIT_DIR, *(Path(d).resolve() for d in harness_dirs))
    frames = [fs for fs in frames if not fs.filename.startswith("<")]
    own = [fs for fs in frames if _own(fs, excluded)]
    if not own:
        glue = [fs for fs in frames if is_glue(fs.filename)]
        return _record(glue[-1]) if glue else None
    k = len(own) - 1
    if isinstance(exc, TypeError) and _SIGNATURE.search(str(exc)):
        while k > 0 and _FORWARDS.search(own[k].line or ""):
            k -= 1
    return _record(own[k])


def describe(exc: BaseException, side: str, phase: str, step: int | None,
             harness_dirs: Iterable[Path] = ()) -> Crash:
    """``exc`` raised by the ``side`` trainer in ``phase`` (at ``step``) as a :class:`Crash`."""
    text = str(exc).strip()
    message = text.splitlines()[0] if text else ""
    return Crash(side, phase, step, type(exc).__name__, message, trainer_frame(exc.__traceback__, harness_dirs, exc))


@contextmanager
def guarded(side: str, phase: str, step: int | None, harness_dirs: Iterable[Path] = ()) -> Iterator[None]:
    """Run a trainer call; any exception but pogo-audit's own becomes :class:`TrainerCrash`."""
    try:
        yield
    except (PogoAuditError, TrainerCrash):
        raise
    except Exception as exc:  # the trainer's defect, whatever it raised
        raise TrainerCrash(describe(exc, side, phase, step, harness_dirs)) from exc


def parameter_check_text(check: Mapping[str, Any]) -> str:
    """A parameter check (``metrics["parameter_check"]``) in one clause: "missing on candidate a; shape of b:
    reference [2, 3] vs candidate [3, 2]" (empty when all match)."""
    parts = []
    if check.get("missing"):
        parts.append("missing on candidate " + ", ".join(check["missing"]))
    if check.get("extra"):
        parts.append("extra on candidate " + ", ".join(check["extra"]))
    parts += [f"shape of {d['name']}: reference {d['reference']} vs candidate {d['candidate']}"
              for d in check.get("shape", [])]
    return "; ".join(parts)
