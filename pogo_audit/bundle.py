"""First-divergence bundles: one ``.npz`` (never pickled) holding a JSON header and the tensors of the step.

Layout (array keys):

``__header__``                 uint8 UTF-8 JSON: format, version, algo, step, first divergence, observables of the
                               step for both trainers, config, versions, tensor names
``batch/<i>``                  the batch given to both trainers at the divergent step
``before/<side>/<param>``      parameters before the step (``side`` = ``reference`` | ``candidate``)
``after/<side>/<param>``       parameters after the step
``grads/<side>/<param>``       ``.grad`` of critic/actor0 parameters after the step
``history/steps``              int64 steps of the run
``history/<side>/<obs>``       float64 value of every scalar observable at every step (NaN where absent)

Loading validates the header and refuses object arrays; any problem is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.errors import InputError
from pogo_audit.io import atomic_save_npz, load_npz

FORMAT = "pogo-audit-divergence-bundle"
VERSION = 1
SIDES = ("reference", "candidate")


@dataclass
class Bundle:
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def section(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays under ``prefix/`` with the prefix removed."""
        p = prefix.rstrip("/") + "/"
        return {k[len(p):]: v for k, v in self.arrays.items() if k.startswith(p)}

    @property
    def step(self) -> int:
        return int(self.header["step"])


def write_bundle(path: str | os.PathLike, bundle: Bundle) -> Path:
    """Write atomically; returns the path."""
    header = {"format": FORMAT, "version": VERSION, **bundle.header}
    raw = np.frombuffer(json.dumps(header, allow_nan=True, default=str).encode("utf-8"), dtype=np.uint8)
    atomic_save_npz(path, {"__header__": raw, **bundle.arrays})
    return Path(path)


def read_bundle(path: str | os.PathLike) -> Bundle:
    arrays = load_npz(path, "divergence bundle")
    raw = arrays.pop("__header__", None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise InputError(f"{path}: not a pogo-audit divergence bundle (no __header__)")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: corrupt bundle header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"{path}: not a pogo-audit divergence bundle (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path}: corrupt bundle header")
    if header.get("version") != VERSION:
        raise InputError(f"{path}: bundle version {header.get('version')!r}, expected {VERSION}")
    for key in ("step", "algo", "first_divergence"):
        if key not in header:
            raise InputError(f"{path}: bundle header lacks {key!r}")
    return Bundle(header, arrays)
