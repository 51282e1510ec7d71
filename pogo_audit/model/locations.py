"""Where a finding points in source code, one rule for every check: how a file is named (relative to a root — the
working directory, or the repository for our own files — when it lies inside it, else absolute) and one location
record (``path``, ``line``, ``function``, ``code``) built from any frame record (crash frames and traced frames name
their file ``file``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def display_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> str:
    """``path`` as a posix path relative to ``root`` (default: the working directory) when inside it, else absolute."""
    full = Path(path).resolve()
    try:
        return full.relative_to(Path(root or os.getcwd()).resolve()).as_posix()
    except ValueError:
        return full.as_posix()


def as_location(frame: Mapping[str, Any]) -> dict[str, Any]:
    """The location record of a frame record (``file`` or ``path``, ``line``, ``function``, ``code``)."""
    return {"path": frame.get("path", frame.get("file")), "line": frame["line"], "function": frame.get("function"),
            "code": frame.get("code")}
