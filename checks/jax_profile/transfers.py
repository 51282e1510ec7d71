"""Host-to-device transfers: counted over the steady-state calls, and the first culprit's location.

``jax.transfer_guard_host_to_device("log")`` logs every implicit transfer; ``"disallow"`` stops at the first one with
its traceback. On CPU the device-to-host guard never fires, hence the static scan for syncs.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from checks.jax_profile.files import PROFILER_DIR, display_path, is_project_file
from pogo_audit.model.glue import is_glue



@dataclass
class TransferCount:
    """Host-to-device transfers seen by ``transfer_guard_host_to_device("log")`` during some calls."""

    calls: int = 0
    transfers: int | None = 0
    first: dict[str, Any] | None = None

    @property
    def per_call(self) -> float | None:
        return None if self.transfers is None or not self.calls else self.transfers / self.calls

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "transfers": self.transfers, "per_call": self.per_call, "first": self.first}


def count_host_to_device(run: Callable[[], None]) -> int:
    """Run ``run`` under ``transfer_guard_host_to_device("log")`` and count the guard's log lines.

    The guard logs from C++ to file descriptor 2, so fd 2 is redirected to a temporary file meanwhile; other
    output written there is passed on to stderr afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with jax.transfer_guard_host_to_device("log"):
                run()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    hits = [line for line in text.splitlines() if "host-to-device transfer" in line]
    rest = "\n".join(line for line in text.splitlines() if "host-to-device transfer" not in line)
    if rest.strip():
        sys.stderr.write(rest + "\n")
    return len(hits)


def probe_host_to_device(call: Callable[[], Any]) -> dict[str, Any] | None:
    """Run ``call`` once under ``transfer_guard_host_to_device("disallow")``: the first implicit transfer, or None.

    Returns {message, path, line, code} of the innermost project frame outside this profiler (whose target wrappers
    call the user's code) and, when the trainer's code reached it through more than one of its frames, ``entry``:
    the outermost trainer frame (not glue) ``{path, line, code, function, callee}`` — the line on the step's path
    that called into the code that transfers (``callee``: the trainer function it called). The call is cut short
    at the transfer.
    """
    try:
        with jax.transfer_guard_host_to_device("disallow"):
            call()
    except Exception as exc:
        text = str(exc)
        if "host-to-device" not in text:
            raise
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_project_file(f.filename)
                  and not os.path.abspath(f.filename).startswith(PROFILER_DIR)]
        trainer = [f for f in frames if not is_glue(f.filename)]
        where = (trainer or frames)[-1] if frames else None
        message = re.sub(r"^\w+: ", "", text.split("\n")[0]).split(", dst_sharding")[0]
        out = {"message": message[:300], **_frame(where)}
        if len(trainer) > 1:
            out["entry"] = {**_frame(trainer[0]), "function": trainer[0].name, "callee": trainer[1].name}
        return out
    return None


def _frame(frame: traceback.FrameSummary | None) -> dict[str, Any]:
    return {"path": display_path(frame.filename) if frame else None, "line": frame.lineno if frame else None,
            "code": (frame.line or "").strip() if frame else None}
