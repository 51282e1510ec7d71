"""Which source files are the project's (scanned, shown in findings) and how their paths are displayed."""

from __future__ import annotations

import os
import sysconfig

from pogo_audit.model.locations import display_path

__all__ = ["LIBRARY_PREFIXES", "PROFILER_DIR", "display_path", "is_project_file"]

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



