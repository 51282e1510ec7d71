"""CPU fingerprint: what decides whether a float32 trace can be reproduced bitwise on this machine.

BLAS and XLA pick their kernels per micro-architecture, so float32 results are bitwise reproducible only on the same
CPU model with the same libraries and thread count. A fingerprint records exactly those facts; two fingerprints
*match* only when every field is known on both sides and equal — an unknown field (a trace set that did not record
its CPU model, say) never counts as a match, so bitwise equality is never demanded on a guess.
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: fields compared by :func:`fingerprints_match`, in display order
FIELDS = ("vendor", "model", "isa", "blas", "torch", "jax", "threads")


def _cpuinfo() -> dict[str, str]:
    """First processor block of ``/proc/cpuinfo`` (empty where the file does not exist)."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def _torch_blas() -> str | None:
    """The BLAS torch was built with (``BLAS_INFO`` of ``torch.__config__.show()``), with MKL/oneDNN versions."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    shown = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", shown)
    parts = [blas.group(1) if blas else "unknown"]
    mkl = re.search(r"Intel\(R\) (?:oneAPI )?Math Kernel Library Version ([\d.]+)", shown)
    if mkl:
        parts.append(f"MKL {mkl.group(1)}")
    dnn = re.search(r"oneDNN v([\d.]+)", shown)
    if dnn:
        parts.append(f"oneDNN {dnn.group(1)}")
    return ", ".join(parts)


def machine_fingerprint(framework: str, threads: int | None) -> dict[str, Any]:
    """This machine's fingerprint for a run of ``framework`` (``torch`` or ``jax``) with ``threads`` threads.

    The framework must already be imported (this module imports neither). For JAX the ISA is the CPU's best vector
    extension seen in the flags (XLA:CPU compiles for the host) and ``blas`` is XLA's own kernels.
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    fp: dict[str, Any] = {
        "vendor": info.get("vendor_id") or None,
        "model": info.get("model name") or platform.processor() or None,
        "isa": None,
        "blas": None,
        "torch": None,
        "jax": None,
        "threads": threads,
    }
    if framework == "torch":
        torch = sys.modules["torch"]
        fp["isa"] = torch.backends.cpu.get_cpu_capability()
        fp["blas"] = _torch_blas()
        fp["torch"] = torch.__version__
    else:
        jax = sys.modules["jax"]
        fp["isa"] = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "baseline"
        fp["blas"] = "XLA:CPU (Eigen)"
        fp["jax"] = jax.__version__
    return fp


def fingerprints_match(recorded: Mapping[str, Any] | None, here: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """``(match, reasons)``: match only when every field used here is known and equal on both sides.

    ``reasons`` names each field that differs (``isa: AVX512 (recorded) vs AVX2 (here)``) or is unknown.
    """
    if not recorded:
        return False, ["the trace set records no fingerprint"]
    reasons = []
    for key in FIELDS:
        mine = here.get(key)
        if mine is None:
            continue
        theirs = recorded.get(key)
        if theirs is None:
            reasons.append(f"{key}: not recorded")
        elif str(theirs) != str(mine):
            reasons.append(f"{key}: {theirs} (recorded) vs {mine} (here)")
    return not reasons, reasons


def describe(fp: Mapping[str, Any] | None) -> str:
    """One line: ``GenuineIntel Intel(R) Xeon(R) …, AVX512, torch 2.13.0+cpu, 1 thread``; unknown fields as ``?``."""
    if not fp:
        return "not recorded"
    parts = [f"{fp.get('vendor') or '?'} {fp.get('model') or '?'}", str(fp.get("isa") or "?")]
    if fp.get("blas"):
        parts.append(str(fp["blas"]))
    for lib in ("torch", "jax"):
        if fp.get(lib):
            parts.append(f"{lib} {fp[lib]}")
    if fp.get("threads") is not None:
        parts.append(f"{fp['threads']} thread{'s' if fp['threads'] != 1 else ''}")
    return ", ".join(parts)
