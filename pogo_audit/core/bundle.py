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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.model.results import environment_info
from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import atomic_save_npz, load_npz

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


def write_divergence_bundle(bundle_dir: str | os.PathLike, algo: str, config: Any, info: dict[str, Any],
                            history: dict[str, dict[str, list[float]]], steps_done: list[int], first: Any,
                            mode: str) -> Path:
    """The bundle of a run's first divergence (``info``: the step, its batch, both sides' parameters before and after
    it, their gradients and observables, the observables that diverged), written to
    ``<bundle_dir>/<algo>-step<step>.npz``."""
    arrays: dict[str, np.ndarray] = {}
    batch = info["batch"]
    for i, t in (batch.items() if isinstance(batch, Mapping) else enumerate(batch)):
        arrays[f"batch/{i}"] = np.asarray(t)
    for section in ("before", "after"):
        for side, params in zip(SIDES, info[section]):
            for k, v in params.items():
                arrays[f"{section}/{side}/{k}"] = np.asarray(v)
    for side, grads in zip(SIDES, info.get("grads", ({}, {}))):
        for k, v in grads.items():
            arrays[f"grads/{side}/{k}"] = np.asarray(v)
    arrays["history/steps"] = np.asarray(steps_done, dtype=np.int64)
    for side, series in history.items():
        for k, v in series.items():
            arrays[f"history/{side}/{k}"] = np.asarray(v, dtype=np.float64)
    obs_ref, obs_cand = info["obs"]
    header = {
        "algo": algo,
        "step": info["step"],
        "first_divergence": None if first is None else {**first.__dict__},
        "divergent_observables": info["diverged"],
        "observables": {
            "reference": {k: v for k, v in obs_ref.items() if not isinstance(v, np.ndarray)},
            "candidate": {k: v for k, v in obs_cand.items() if not isinstance(v, np.ndarray)},
        },
        "config": config.to_dict() if hasattr(config, "to_dict") else repr(config),
        "environment": environment_info(),
        "mode": mode,
    }
    return write_bundle(Path(bundle_dir) / f"{algo}-step{info['step']}.npz", Bundle(header, arrays))
