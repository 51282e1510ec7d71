"""Access to CORL golden trace sets, validated on load, and the replay protocol they record.

A trace set is a directory in the golden format (see ``traces/corl/float32/README.md``): ``dataset.npz``,
``batch_idx.npy`` and one folder per variant with ``meta.json``, ``init_params.npz`` and ``steps.npz``. A set may keep
shared files elsewhere: an optional ``layout.json`` maps ``dataset``, ``batch_idx`` and per-variant ``init_params``
to paths relative to the set (how the shipped float32 and float64 sets share one copy of the data and initial
parameters). The sets recorded from CORL ship with the package (``pogo_audit/traces/corl/{float32,float64}``), so
conformance needs nothing outside the installed package.

Everything the replay depends on — seeds, batch size, number of steps, dtype, thread count, hyperparameters — is
read from ``meta.json`` (:class:`Protocol`); nothing of the protocol is a constant in code. Every problem with a set
(missing, missing or corrupt file, traces of another algorithm, a protocol field that cannot be read) is an
:class:`InputError` naming the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import load_json, load_npy, load_npz

GOLDEN_ENV_VAR = "POGO_AUDIT_GOLDEN_DIR"
SHIPPED_TRACES = Path(__file__).resolve().parents[1] / "traces" / "corl"
PRECISIONS = ("float64", "float32")


def shipped_golden_dir(precision: str) -> Path:
    """The trace set of ``precision`` (``float32`` or ``float64``) shipped with the package."""
    return SHIPPED_TRACES / precision


def default_golden_dir(precision: str = "float32") -> Path:
    """``$POGO_AUDIT_GOLDEN_DIR`` if set (one set, any precision), else the shipped set of ``precision``."""
    env = os.environ.get(GOLDEN_ENV_VAR)
    if env:
        return Path(env)
    return shipped_golden_dir(precision)


def param_digest(x: np.ndarray) -> tuple[float, float]:
    """Golden digest of a tensor: float64 sum and L2 norm (numpy pairwise summation)."""
    x64 = np.asarray(x, dtype=np.float64).ravel()
    return float(x64.sum()), float(np.sqrt((x64 * x64).sum()))


@dataclass(frozen=True)
class Protocol:
    """How a variant's traces were recorded, read from its ``meta.json``."""

    dtype: str
    n_steps: int
    batch_size: int
    construction_seed: int
    training_seed: int | None
    threads: int | None
    framework: str

    @property
    def is_float64(self) -> bool:
        return self.dtype == "float64"


def _int_field(meta_path: Path, value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{meta_path}: protocol field {name} is {value!r}; expected an integer")
    return value


@dataclass(frozen=True)
class GoldenVariant:
    """One variant folder (e.g. ``cql/``) of a golden directory."""

    golden: GoldenDir
    name: str

    @property
    def root(self) -> Path:
        return self.golden.root

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

    @property
    def init_params_path(self) -> Path:
        """The variant folder's own ``init_params.npz`` if it has one, else the shared file the layout names."""
        own = self.folder / "init_params.npz"
        return own if own.exists() else self.golden.resolve("init_params", self.name) or own

    @cached_property
    def init_params(self) -> dict[str, np.ndarray]:
        return load_npz(self.init_params_path, "golden init_params.npz")

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

    @property
    def framework(self) -> str:
        return "jax" if "jax" in self.meta.get("framework", {}) else "torch"

    @cached_property
    def protocol(self) -> Protocol:
        """Seeds, sizes, dtype and threads of the recording.

        ``seeds`` (structured) is used where present. Older sets without it give the construction seed as the config's
        ``seed``/``train_seed`` and the training seed in the name of their ``torch_rng_state_sha256_after_manual_seed_<N>``
        field (whose value is checked against torch in the replay); JAX sets give the key seed in ``prng.initial``.
        """
        meta, path = self.meta, self.folder / "meta.json"
        hp = self.hyperparameters
        seeds = meta.get("seeds") or {}
        fw = meta.get("framework", {})
        if self.framework == "jax":
            seed = seeds.get("jax_prngkey_seed", meta.get("prng", {}).get("initial", {}).get("prngkey_seed"))
            construction, training, threads = _int_field(path, seed, "seeds.jax_prngkey_seed"), None, None
        else:
            construction = seeds.get("construction_seed", hp.get("seed", hp.get("train_seed")))
            training = seeds.get("torch_manual_seed_before_loop")
            if training is None:
                found = [int(m.group(1)) for k in meta
                         if (m := re.fullmatch(r"torch_rng_state_sha256_after_manual_seed_(\d+)", k))]
                training = found[0] if len(found) == 1 else None
            construction = _int_field(path, construction, "seeds.construction_seed")
            training = _int_field(path, training, "seeds.torch_manual_seed_before_loop")
            threads = _int_field(path, fw.get("torch_num_threads"), "framework.torch_num_threads")
        dtype = str(meta.get("dtype", "float32"))
        if dtype not in PRECISIONS:
            raise InputError(f"{path}: dtype {dtype!r}; expected one of {', '.join(PRECISIONS)}")
        batch_size = _int_field(path, meta.get("batch_size", hp.get("batch_size")), "batch_size")
        n_steps = _int_field(path, meta.get("n_steps", self.n_steps), "n_steps")
        idx = self.golden.batch_idx
        if idx.shape[1] != batch_size or idx.shape[0] < n_steps:
            raise InputError(f"{self.golden.batch_idx_path}: shape {list(idx.shape)} does not fit the protocol of "
                             f"{self.name} ({n_steps} steps of batch {batch_size}, from {path})")
        return Protocol(dtype=dtype, n_steps=min(n_steps, self.n_steps), batch_size=batch_size,
                        construction_seed=construction, training_seed=training, threads=threads,
                        framework=self.framework)

    def dataset_array(self, role: str) -> str:
        """Name of the dataset.npz array the variant used for ``observations`` / ``next_observations``."""
        used = self.meta.get("dataset_arrays_used", {})
        desc = str(used.get(role, role))
        return "raw_" + role if desc.startswith("raw_") else role


class GoldenDir:
    """A golden trace set: shared dataset + batch indices + one folder per variant (+ optional ``layout.json``)."""

    def __init__(self, root: str | os.PathLike | None = None, precision: str = "float32"):
        self.root = Path(root) if root is not None else default_golden_dir(precision)
        if not self.root.is_dir():
            raise InputError(
                f"golden directory not found: {self.root} (pass --golden DIR or set ${GOLDEN_ENV_VAR})"
            )

    @cached_property
    def layout(self) -> dict[str, Any]:
        path = self.root / "layout.json"
        if not path.exists():
            return {}
        layout = load_json(path, "golden layout.json")
        if not isinstance(layout, dict):
            raise InputError(f"{path}: expected a JSON object mapping dataset/batch_idx/init_params to paths")
        return layout

    def resolve(self, entry: str, variant: str | None = None) -> Path | None:
        """Path of a shared file named by ``layout.json`` (``None`` where the layout does not move it).

        Paths are relative to where ``layout.json`` really is, so a set assembled from links still finds them.
        """
        value = self.layout.get(entry)
        if isinstance(value, dict):
            value = value.get(variant)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InputError(f"{self.root / 'layout.json'}: {entry} must be a relative path, got {value!r}")
        return ((self.root / "layout.json").resolve().parent / value).resolve()

    def _shared(self, entry: str, name: str) -> Path:
        """``name`` in the set itself if present, else where the layout puts it."""
        own = self.root / name
        return own if own.exists() else self.resolve(entry) or own

    @property
    def dataset_path(self) -> Path:
        return self._shared("dataset", "dataset.npz")

    @property
    def batch_idx_path(self) -> Path:
        return self._shared("batch_idx", "batch_idx.npy")

    @cached_property
    def fingerprint(self) -> dict[str, Any] | None:
        """The recording CPU's fingerprint (``fingerprint.json``), ``None`` where the set records none."""
        path = self.root / "fingerprint.json"
        return load_json(path, "golden fingerprint.json") if path.exists() else None

    def variant(self, name: str) -> GoldenVariant:
        folder = self.root / name
        if not folder.is_dir():
            raise InputError(f"golden traces for {name!r} not found: {folder} is not a directory")
        return GoldenVariant(self, name)

    def has_variant(self, name: str) -> bool:
        return (self.root / name).is_dir()

    @cached_property
    def dtype(self) -> str:
        """The set's precision, from the first variant's ``meta.json`` (``float32`` when a set does not say)."""
        for folder in sorted(self.root.iterdir()):
            if (folder / "meta.json").is_file():
                return str(load_json(folder / "meta.json", "golden meta.json").get("dtype", "float32"))
        return "float32"

    @cached_property
    def dataset(self) -> dict[str, np.ndarray]:
        data = load_npz(self.dataset_path, "golden dataset.npz")
        required = ("observations", "actions", "rewards", "next_observations", "dones")
        missing = [k for k in required if k not in data]
        if missing:
            raise InputError(f"{self.dataset_path}: missing arrays {missing}; expected {list(required)}")
        return data

    @cached_property
    def batch_idx(self) -> np.ndarray:
        idx = load_npy(self.batch_idx_path, "golden batch_idx.npy")
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise InputError(f"{self.batch_idx_path}: expected an integer [steps, batch] array, got "
                             f"{idx.dtype}{list(idx.shape)}")
        return idx
