"""How a source file is named in a finding: relative to a root (the working directory, or the repository for our
own files) when it lies inside it, else absolute — one rule for crash frames, located lines, mutants and profiles."""

from __future__ import annotations

import os
from pathlib import Path


def display_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> str:
    """``path`` as a posix path relative to ``root`` (default: the working directory) when inside it, else absolute."""
    full = Path(path).resolve()
    try:
        return full.relative_to(Path(root or os.getcwd()).resolve()).as_posix()
    except ValueError:
        return full.as_posix()
