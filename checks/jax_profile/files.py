"""Which source files are the project's (scanned, shown in findings) and how their paths are displayed."""

from __future__ import annotations

import os
import sysconfig

#: the standard library's and installed packages' directories (not the project's code)
LIBRARY_PREFIXES = tuple(os.path.abspath(p) for p in
                         {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")})


#: this package's own directory: its frames (the target wrappers, the probes) are never the user's code
PROFILER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def is_project_file(path: str | None) -> bool:
    """A real file outside the standard library and installed packages."""
    if not path or path.startswith("<"):
        return False
    full = os.path.abspath(path)
    return not full.startswith(LIBRARY_PREFIXES) and "site-packages" not in full and os.path.exists(full)


def display_path(path: str) -> str:
    """``path`` relative to the working directory when inside it, else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    return full if rel.startswith("..") else rel

