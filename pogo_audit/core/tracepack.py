"""Pack the CORL golden trace sets (float32 set A and its float64 twin) into the compact copy shipped in the package.

``pogo-audit traces pack --float32 DIR --float64 DIR --out pogo_audit/traces/corl`` writes::

    common/dataset.npz, batch_idx.npy, dataset_info.json     shared by both precisions (byte-identical in both sets)
    common/init_params/<variant>.npz                         once for both precisions (identical files stored once)
    float32/, float64/                                        one trace set each, in the golden format:
        README.md, manifest.json                              the recording's own documentation, unchanged
        layout.json                                           where the shared files are, sha256 of every file
        fingerprint.json                                      the recording CPU (unknown fields are null)
        <variant>/meta.json, steps.npz                        per-step logs, digests, RNG fingerprints / keys
        rebrac/rng_draws_steps1-2.npz                         the JAX draws the key-chain check compares

Left out: the parameter snapshots (every tensor's sum and L2 are in ``steps.npz`` at every step) and the torch
``rng_draws`` (the RNG-state fingerprint at every step covers draw order and count). The float32 ``meta.json`` gains
``dtype``, ``n_steps``, ``batch_size`` and the structured ``seeds`` of its protocol (the float64 set records the
same protocol; the seed is cross-checked against the float32 set's own ``torch_rng_state_sha256_after_manual_seed_<N>``
key). Nothing is recomputed: every array is copied byte for byte.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import atomic_write_json, load_json

COMMON_FILES = ("dataset.npz", "batch_idx.npy", "dataset_info.json")
SET_FILES = ("README.md", "manifest.json")
VARIANT_FILES = ("meta.json", "steps.npz")
JAX_DRAWS = "rng_draws_steps1-2.npz"
PRECISIONS = ("float32", "float64")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _variants(src: Path) -> list[str]:
    manifest = load_json(src / "manifest.json", "golden manifest.json")
    return list(manifest["algorithms"])


def _recording_fingerprint(meta: dict[str, Any], jax_meta: dict[str, Any]) -> dict[str, Any]:
    """What the recording's metas say about its CPU; every field they do not state stays ``None``."""
    fw, jfw = meta.get("framework", {}), jax_meta.get("framework", {})
    model = fw.get("cpu_model") or jfw.get("cpu_model")
    vendor = "GenuineIntel" if model and model.startswith("Intel") else "AuthenticAMD" if model and "AMD" in model \
        else None
    return {"vendor": vendor, "model": model, "isa": fw.get("cpu_capability"), "blas": None,
            "torch": fw.get("torch"), "jax": jfw.get("jax"), "threads": fw.get("torch_num_threads"),
            "source": "read from the variants' meta.json 'framework' fields; null = not recorded"}


def _float32_seeds(meta32: dict[str, Any], meta64: dict[str, Any]) -> dict[str, Any]:
    """Set A's seeds: the float64 twin's structured ``seeds``, checked against set A's own recorded seed key."""
    seeds = dict(meta64["seeds"])
    for key in meta32:
        m = re.fullmatch(r"torch_rng_state_sha256_after_manual_seed_(\d+)", key)
        if m and int(m.group(1)) != seeds.get("torch_manual_seed_before_loop"):
            raise InputError(f"float32 meta.json {key} disagrees with the float64 seeds {seeds}")
    seeds["source"] = "same protocol as the float64 twin set (copied from its meta.json 'seeds'; checked)"
    return seeds


def pack(src32: Path, src64: Path, out: Path) -> dict[str, int]:
    """Write the compact copy to ``out`` (replacing it); return bytes per top-level folder."""
    variants = _variants(src32)
    if variants != _variants(src64):
        raise InputError(f"{src32} and {src64} hold different variants")
    for name in COMMON_FILES:
        if sha256(src32 / name) != sha256(src64 / name):
            raise InputError(f"{name} differs between the float32 and float64 sets")
    if out.exists():
        shutil.rmtree(out)
    common = out / "common"
    (common / "init_params").mkdir(parents=True)
    for name in COMMON_FILES:
        shutil.copyfile(src32 / name, common / name)

    init_file: dict[str, str] = {}
    stored: dict[str, str] = {}
    for v in variants:
        p32, p64 = src32 / v / "init_params.npz", src64 / v / "init_params.npz"
        digest = sha256(p32)
        if digest != sha256(p64):
            raise InputError(f"{v}: init_params.npz differs between the float32 and float64 sets")
        if digest not in stored:
            stored[digest] = f"{v}.npz"
            shutil.copyfile(p32, common / "init_params" / stored[digest])
        init_file[v] = f"../common/init_params/{stored[digest]}"

    for precision, src in zip(PRECISIONS, (src32, src64)):
        dst = out / precision
        dst.mkdir()
        for name in SET_FILES:
            shutil.copyfile(src / name, dst / name)
        metas = {}
        for v in variants:
            (dst / v).mkdir()
            shutil.copyfile(src / v / "steps.npz", dst / v / "steps.npz")
            metas[v] = load_json(src / v / "meta.json", "golden meta.json")
            if (src / v / JAX_DRAWS).exists() and "jax" in metas[v].get("framework", {}):
                shutil.copyfile(src / v / JAX_DRAWS, dst / v / JAX_DRAWS)
        for v in variants:
            meta = metas[v]
            if precision == "float32":
                meta64 = load_json(src64 / v / "meta.json", "golden meta.json")
                meta = {**meta, "dtype": "float32", "n_steps": meta64["n_steps"], "batch_size": meta64["batch_size"],
                        "seeds": _float32_seeds(meta, meta64)}
            atomic_write_json(dst / v / "meta.json", meta)
        torch_meta = next(m for m in metas.values() if "torch" in m.get("framework", {}))
        jax_meta = next((m for m in metas.values() if "jax" in m.get("framework", {})), {})
        atomic_write_json(dst / "fingerprint.json", _recording_fingerprint(torch_meta, jax_meta))
        files = sorted(p for p in dst.rglob("*") if p.is_file())
        atomic_write_json(dst / "layout.json", {
            "format": "corl-golden, shared files outside the set",
            "dataset": "../common/dataset.npz",
            "batch_idx": "../common/batch_idx.npy",
            "dataset_info": "../common/dataset_info.json",
            "init_params": init_file,
            "sha256": {str(p.relative_to(dst)): sha256(p) for p in files}
                      | {f"../common/{n}": sha256(common / n) for n in COMMON_FILES}
                      | {rel: sha256(dst / rel) for rel in sorted(set(init_file.values()))},
        })
    return {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in sorted(out.iterdir())}
