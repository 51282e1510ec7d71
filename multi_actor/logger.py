"""Streaming run logger: JSONL file (always) and wandb (``online``/``offline``/``disabled``).

Any scalar-convertible value is logged — Python and NumPy scalars of every dtype, 0-d arrays and tensors; nested
mappings are flattened with ``/``. Anything else (None, strings, n-d arrays, complex numbers, …) is skipped with one
warning per key. Records are streamed (one line written and flushed per call), never accumulated in memory, and every
line is strict JSON (non-finite floats are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.runtime.io import atomic_write_text

_SKIP = object()


def to_scalar(value: Any) -> bool | int | float | object:
    """A JSON-able Python scalar for ``value``, or the sentinel ``_SKIP`` when it is not a real scalar."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and tuple(shape) == () and dtype is not None:
        try:
            item = value.item()
        except (TypeError, ValueError, RuntimeError):
            return _SKIP
        if isinstance(item, (numbers.Real, bool)) and not isinstance(item, complex):
            return to_scalar(item)
    return _SKIP


def _json_value(x: bool | int | float) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def flatten(values: Mapping[Any, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}/")
        else:
            yield name, value


class RunLogger:
    """Writes ``{"step": …, key: value, …}`` lines to ``path`` and mirrors scalars to wandb."""

    def __init__(self, path: str | os.PathLike, wandb_mode: str = "disabled", project: str = "pogo-audit",
                 config: Mapping[str, Any] | None = None, run_name: str | None = None,
                 wandb_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self.warned: set[str] = set()
        self._run = None
        if wandb_mode != "disabled":
            import wandb

            self._run = wandb.init(mode=wandb_mode, project=project, config=dict(config or {}), name=run_name,
                                   dir=str(wandb_dir or self.path.parent), reinit="finish_previous")

    def _warn_once(self, key: str, why: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(f"not logging {key!r}: {why}", RuntimeWarning, stacklevel=3)

    def log(self, step: int, values: Mapping[Any, Any]) -> dict[str, bool | int | float]:
        """Log one record; returns the scalars that were written."""
        scalars: dict[str, bool | int | float] = {}
        for key, value in flatten(values):
            x = to_scalar(value)
            if x is _SKIP:
                kind = "None" if value is None else type(value).__name__
                shape = getattr(value, "shape", None)
                self._warn_once(key, f"{kind}{list(shape) if shape is not None else ''} is not a scalar")
                continue
            if key in scalars or key == "step":
                self._warn_once(key, "duplicate key in one record")
                continue
            scalars[key] = x
        record = {"step": int(step), **{k: _json_value(v) for k, v in scalars.items()}}
        self._fh.write(json.dumps(record, allow_nan=False) + "\n")
        self._fh.flush()
        if self._run is not None and scalars:
            self._run.log(scalars, step=int(step))
        return scalars

    def event(self, step: int, kind: str, message: str) -> None:
        """A non-metric record (evaluation error, checkpoint written, …)."""
        self._fh.write(json.dumps({"step": int(step), "event": kind, "message": message}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
        if self._run is not None:
            self._run.finish()
            self._run = None


def truncate_after(path: str | os.PathLike, step: int) -> int:
    """Drop records with ``step`` > ``step`` (and a torn last line) when a run resumes; returns lines kept."""
    path = Path(path)
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return len(kept)
