"""Access to the CORL golden traces (``corl_golden/``), validated on load.

Layout and protocol are described in the golden directory's README. Every problem with the directory (missing,
missing or corrupt file, traces of another algorithm) is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.errors import InputError
from pogo_audit.io import load_json, load_npy, load_npz

GOLDEN_ENV_VAR = "POGO_AUDIT_GOLDEN_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_golden_dir() -> Path:
    """``$POGO_AUDIT_GOLDEN_DIR``, else ``../shared/corl_golden`` relative to the repository."""
    env = os.environ.get(GOLDEN_ENV_VAR)
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "corl_golden"


def param_digest(x: np.ndarray) -> tuple[float, float]:
    """Golden digest of a tensor: float64 sum and L2 norm (numpy pairwise summation)."""
    x64 = np.asarray(x, dtype=np.float64).ravel()
    return float(x64.sum()), float(np.sqrt((x64 * x64).sum()))


@dataclass(frozen=True)
class GoldenVariant:
    """One variant folder (e.g. ``cql/``) of a golden directory."""

    root: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @cached_property
    def meta(self) -> dict[str, Any]:
        meta = load_json(self.folder / "meta.json", "golden meta.json")
        if not isinstance(meta, dict) or "algorithm" not in meta:
            raise InputError(f"{self.folder / 'meta.json'}: not a golden meta file (no 'algorithm' field)")
        if meta["algorithm"] != self.name:
            raise InputError(
                f"{self.folder / 'meta.json'}: golden traces of algorithm {meta['algorithm']!r}, expected {self.name!r}"
            )
        return meta

    @cached_property
    def init_params(self) -> dict[str, np.ndarray]:
        return load_npz(self.folder / "init_params.npz", "golden init_params.npz")

    @cached_property
    def steps(self) -> dict[str, np.ndarray]:
        steps = load_npz(self.folder / "steps.npz", "golden steps.npz")
        if "step" not in steps:
            raise InputError(f"{self.folder / 'steps.npz'}: no 'step' array; not a golden steps file")
        return steps

    @property
    def n_steps(self) -> int:
        return int(self.steps["step"].shape[0])

    def params_at(self, step: int) -> dict[str, np.ndarray] | None:
        path = self.folder / f"params_step{step}.npz"
        return load_npz(path, f"golden params_step{step}.npz") if path.exists() else None

    @property
    def snapshot_steps(self) -> list[int]:
        steps = []
        for p in self.folder.glob("params_step*.npz"):
            suffix = p.stem.removeprefix("params_step")
            if suffix.isdigit():
                steps.append(int(suffix))
        return sorted(steps)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        hp = self.meta.get("hyperparameters", {})
        return hp.get("train_config", hp)

    def dataset_array(self, role: str) -> str:
        """Name of the dataset.npz array the variant used for ``observations`` / ``next_observations``."""
        used = self.meta.get("dataset_arrays_used", {})
        desc = str(used.get(role, role))
        return "raw_" + role if desc.startswith("raw_") else role


class GoldenDir:
    """A golden directory: shared dataset + batch indices + one folder per variant."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_golden_dir()
        if not self.root.is_dir():
            raise InputError(
                f"golden directory not found: {self.root} (pass --golden DIR or set ${GOLDEN_ENV_VAR})"
            )

    def variant(self, name: str) -> GoldenVariant:
        folder = self.root / name
        if not folder.is_dir():
            raise InputError(f"golden traces for {name!r} not found: {folder} is not a directory")
        return GoldenVariant(self.root, name)

    def has_variant(self, name: str) -> bool:
        return (self.root / name).is_dir()

    @cached_property
    def dataset(self) -> dict[str, np.ndarray]:
        data = load_npz(self.root / "dataset.npz", "golden dataset.npz")
        required = ("observations", "actions", "rewards", "next_observations", "dones")
        missing = [k for k in required if k not in data]
        if missing:
            raise InputError(f"{self.root / 'dataset.npz'}: missing arrays {missing}; expected {list(required)}")
        return data

    @cached_property
    def batch_idx(self) -> np.ndarray:
        idx = load_npy(self.root / "batch_idx.npy", "golden batch_idx.npy")
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise InputError(f"{self.root / 'batch_idx.npy'}: expected an integer [steps, batch] array, got "
                             f"{idx.dtype}{list(idx.shape)}")
        return idx
