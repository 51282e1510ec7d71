"""Atomic writes, pickle-free loading and safe YAML.

Everything pogo-audit writes (logs, checkpoints, bundles, reports) goes through a temporary file in the target
directory followed by ``os.replace``, so a crash never leaves a half-written file. Loading never unpickles.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from pogo_audit.runtime.errors import InputError


def _umask() -> int:
    """The process umask (mkstemp creates 0600 files; the final file gets the usual 0666 & ~umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def atomic_save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` atomically; object arrays are refused (they would need pickle)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"refusing to save object array {key!r}: npz files here never contain pickles")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike, what: str = "file") -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` with ``allow_pickle=False``; any problem becomes one clear InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{path}: contains pickled objects; refusing to load (expected plain arrays)") from None
        raise InputError(f"{path}: corrupt {what} ({exc}); expected a numpy .npz archive") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise InputError(f"{path}: corrupt {what} ({type(exc).__name__}: {exc}); expected a numpy .npz archive") \
            from None


def load_npy(path: str | os.PathLike, what: str = "file") -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: corrupt {what} ({exc}); expected a numpy .npy array") from None


def load_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: corrupt {what} ({exc}); expected JSON") from None


#: libyaml's safe loader and dumper where PyYAML was built with it (about ten times faster; the same safe
#: constructor and resolver, so the same values), the pure-Python ones otherwise
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` of ``text`` (raises ``yaml.YAMLError``): plain data only, nothing constructed."""
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader


def yaml_dump(value: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` of plain data to a string."""
    return yaml.dump(value, Dumper=_YAML_DUMPER, **kwargs)
