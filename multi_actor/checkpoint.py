"""Checkpoints that resume a run bitwise: every network, optimizer, schedule, counter and generator state.

Written atomically (temporary file + rename) and read with ``torch.load(weights_only=True)`` — a checkpoint can
never execute code on load. Read with ``map_location="cpu"`` whatever device wrote it: generator states and Adam's
step counters must stay CPU tensors, and the trainer's load methods copy parameters and optimizer moments onto its
own device, so a checkpoint written on a GPU loads on a CPU-only machine and the other way round.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import atomic_write_bytes

FORMAT = "pogo-audit-checkpoint"
VERSION = 2  # 2: the extra actors share one Adam (`actor_optimizer`); 1 had one per actor


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a loadable pogo-audit checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not a pogo-audit checkpoint (missing format marker)")
    if state.get("version") != VERSION:
        raise InputError(f"{path}: checkpoint version {state.get('version')!r}, expected {VERSION}")
    return state
