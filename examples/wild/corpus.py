"""Load the wild corpus: answer keys, and trainer modules built with any subset of their planted defects fixed.

An answer key (``<trainer>.answers.json``, next to the trainer) lists every planted defect as one line of the trainer
file: its 1-based ``line``, the stripped ``buggy`` text found there and the stripped ``fix`` that replaces it. A
module is built by reading the trainer's source, checking each chosen line, replacing it by its fix (keeping the
line's indentation, so the line count and every other line number stay the same), compiling with the *original*
file path as filename (tracebacks, frames and localisation point at the real file and its real line numbers) and
executing it into a fresh module object with a distinct name. Built modules are cached per (trainer, fixed set).

    from examples.wild.corpus import all_keys, build_module, load_key
    key = load_key("pogo_branchy")                       # or "pogo_branchy.py"
    clean = build_module("pogo_branchy", fixed="all")    # every defect fixed
    one = build_module("pogo_branchy", fixed=[d["id"] for d in key["defects"] if d["id"] != "B4"])  # only B4 left

Note: tracebacks show the text of the file on disk (``linecache``), i.e. the buggy line even where the built module
runs its fix; the line *numbers* are exact in every build.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = __name__.rpartition(".")[0] or "examples.wild"

_CACHE: dict[tuple[str, frozenset[str]], types.ModuleType] = {}
_LOCK = threading.Lock()


class CorpusError(ValueError):
    """An answer key that does not match its trainer file, or an unknown trainer or defect id."""


def _stem(name: str) -> str:
    name = Path(name).name
    for suffix in (".answers.json", ".py"):
        name = name.removesuffix(suffix)
    return name


def key_path(name: str) -> Path:
    return HERE / f"{_stem(name)}.answers.json"


def trainer_path(name: str) -> Path:
    return HERE / load_key(name)["trainer"]


def all_keys() -> dict[str, dict[str, Any]]:
    """Every answer key of the corpus, by trainer stem (``"pogo_branchy"`` ...), in file-name order."""
    return {_stem(p.name): load_key(p.name) for p in sorted(HERE.glob("*.answers.json"))}


def load_key(name: str) -> dict[str, Any]:
    """The answer key of trainer ``name`` (stem, file name or key file name)."""
    path = key_path(name)
    if not path.is_file():
        raise CorpusError(f"no answer key {path.name} in {HERE}")
    return json.loads(path.read_text(encoding="utf-8"))


def defect_ids(name: str) -> list[str]:
    return [d["id"] for d in load_key(name)["defects"]]


def check_key(name: str) -> list[str]:
    """Problems of the answer key against its trainer file (empty list: every line matches)."""
    key = load_key(name)
    lines = (HERE / key["trainer"]).read_text(encoding="utf-8").splitlines()
    problems, seen = [], {}
    for d in key["defects"]:
        n = d["line"]
        if n in seen:
            problems.append(f"{d['id']}: line {n} is also the line of {seen[n]}")
        seen[n] = d["id"]
        if not 1 <= n <= len(lines):
            problems.append(f"{d['id']}: line {n} outside the file ({len(lines)} lines)")
            continue
        if lines[n - 1].strip() != d["buggy"]:
            problems.append(f"{d['id']}: line {n} is {lines[n - 1].strip()!r}, the key says {d['buggy']!r}")
        if d["fix"].strip() != d["fix"] or "\n" in d["fix"] or d["fix"] == d["buggy"]:
            problems.append(f"{d['id']}: fix must be one stripped line that differs from the buggy one")
    return problems


def patched_source(name: str, fixed: Iterable[str] | str = ()) -> tuple[str, Path]:
    """The trainer's source with the defects ``fixed`` (ids, or ``"all"``) replaced by their fixes."""
    key = load_key(name)
    path = HERE / key["trainer"]
    by_id = {d["id"]: d for d in key["defects"]}
    chosen = set(by_id) if fixed == "all" else set(fixed)
    unknown = sorted(chosen - set(by_id))
    if unknown:
        raise CorpusError(f"{key['trainer']}: unknown defect id(s) {unknown}; known: {sorted(by_id)}")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for ident in sorted(chosen):
        d = by_id[ident]
        text = lines[d["line"] - 1]
        if text.strip() != d["buggy"]:
            raise CorpusError(f"{key['trainer']}:{d['line']} ({ident}) is {text.strip()!r}, expected {d['buggy']!r}")
        indent = text[: len(text) - len(text.lstrip())]
        ending = "\n" if text.endswith("\n") else ""
        lines[d["line"] - 1] = indent + d["fix"] + ending
    return "".join(lines), path


def build_module(name: str, fixed: Iterable[str] | str = ()) -> types.ModuleType:
    """The trainer module with the defects ``fixed`` (ids, or ``"all"``) fixed; cached per fixed set.

    Compiled with the original file path as filename; executed into a fresh module named
    ``examples.wild._built.<stem>__<fixed ids or 'asis'>`` (registered in ``sys.modules``, so pickling by
    reference, dataclasses and ``inspect`` work)."""
    stem = _stem(name)
    ids = frozenset(defect_ids(stem) if fixed == "all" else fixed)
    with _LOCK:
        if (stem, ids) in _CACHE:
            return _CACHE[(stem, ids)]
        source, path = patched_source(stem, ids)
        label = "_".join(sorted(ids)) if ids else "asis"
        if len(label) > 80:
            label = f"n{len(ids)}_" + hashlib.sha1(label.encode()).hexdigest()[:10]
        parent = f"{PACKAGE}._built"
        if parent not in sys.modules:
            pkg = types.ModuleType(parent, "Namespace of the modules built by examples.wild.corpus.")
            pkg.__path__ = []
            sys.modules[parent] = pkg
        mod_name = f"{parent}.{stem}__{label}"
        module = types.ModuleType(mod_name)
        module.__file__ = str(path)
        module.__dict__["__builtins__"] = __builtins__
        code = compile(source, str(path), "exec", dont_inherit=True)
        sys.modules[mod_name] = module
        try:
            exec(code, module.__dict__)  # noqa: S102 -- building the trainer module is the point
        except BaseException:
            sys.modules.pop(mod_name, None)
            raise
        _CACHE[(stem, ids)] = module
        return module


@dataclass
class CliRun:
    """One ``pogo-audit equivalence`` command as a user types it: its wall time, exit code and JSON check."""

    seconds: float
    rc: int
    check: dict[str, Any] | None
    error: str | None


def run_equivalence(args: Sequence[str], threads: int | None = None) -> CliRun:
    """Run ``pogo-audit equivalence ARGS --json ... -q`` in a subprocess (wandb off, a temporary bundle dir)."""
    with tempfile.TemporaryDirectory(prefix="wild-run-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "pogo_audit.cli", "equivalence", *args,
               "--bundle-dir", str(Path(tmp) / "bundles"), "--json", str(out), "-q"]
        if threads:
            cmd += ["--threads", str(threads)]
        env = dict(os.environ, WANDB_MODE="disabled")
        env.setdefault("MUJOCO_GL", "egl")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if not out.is_file():
            error = (proc.stderr or proc.stdout).strip()[-600:] or f"rc={proc.returncode} and no JSON result"
            return CliRun(seconds, proc.returncode, None, error)
        return CliRun(seconds, proc.returncode, json.loads(out.read_text())["checks"][0], None)
