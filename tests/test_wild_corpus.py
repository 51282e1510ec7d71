"""The wild corpus (``examples/wild``): answer keys agree with their trainer files, and every trainer builds with all
its planted defects fixed. Static only -- no training runs (``python -m examples.wild.check_corpus`` runs the audits).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from examples.wild.corpus import (
    all_keys,
    build_module,
    check_key,
    load_key,
    patched_source,
)

WILD = Path(__file__).resolve().parents[1] / "examples" / "wild"
KEYS = all_keys()
TORCH_ALGOS = {"iql", "td3_bc", "awac", "cql", "sac_n", "edac"}
CLASSES = {"crash", "construction_order", "architecture", "rng_draw", "loss_term", "optimizer", "evaluation"}


def test_corpus_is_complete():
    assert len(KEYS) >= 3
    assert set().union(*(k["algorithms"] for k in KEYS.values())) >= TORCH_ALGOS
    defects = [d for k in KEYS.values() for d in k["defects"]]
    assert len(defects) >= 29
    assert {d["class"] for d in defects} >= CLASSES
    assert all(len(k["defects"]) >= 6 for k in KEYS.values())
    phases = {d.get("crash_phase") for d in defects if d["class"] == "crash"}
    assert {"factory", "step"} <= phases


@pytest.mark.parametrize("stem", sorted(KEYS))
def test_answer_key_lines_match_the_file(stem):
    assert check_key(stem) == []


@pytest.mark.parametrize("stem", sorted(KEYS))
def test_answer_key_is_consistent(stem):
    key = load_key(stem)
    ids = [d["id"] for d in key["defects"]]
    assert len(ids) == len(set(ids))
    crashes = {d["id"] for d in key["defects"] if d["class"] == "crash"}
    for d in key["defects"]:
        assert d["algos"] and set(d["algos"]) <= set(key["algorithms"]), d["id"]
        assert d["description"] and d["expected_observables"], d["id"]
        assert d["hidden_by"] is None or d["hidden_by"] in crashes, d["id"]
        for algo, hider in (d.get("hidden_by_algo") or {}).items():
            assert algo in d["algos"] and (hider is None or hider in crashes), d["id"]
    assert key["mode"] in ("bitwise", "tolerance")
    adapter = importlib.import_module(key["adapter"])
    for name in ("factory", "clean_factory", "factory_fixing", "factory_only"):
        assert callable(getattr(adapter, name)), name
    assert callable(getattr(adapter, f"only_{ids[0]}"))


@pytest.mark.parametrize("stem", sorted(KEYS))
def test_trainer_imports_nothing_from_this_repository(stem):
    tree = ast.parse((WILD / load_key(stem)["trainer"]).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"reference_algos", "multi_actor", "pogo_audit", "checks", "examples"}, imported


@pytest.mark.parametrize("stem", sorted(KEYS))
def test_every_fix_is_one_line_and_the_build_compiles(stem):
    key = load_key(stem)
    path = WILD / key["trainer"]
    original = path.read_text().splitlines()
    fixed, _ = patched_source(stem, "all")
    lines = fixed.splitlines()
    assert len(lines) == len(original)
    changed = {i + 1 for i, (a, b) in enumerate(zip(original, lines)) if a != b}
    assert changed == {d["line"] for d in key["defects"]}
    for d in key["defects"]:  # indentation kept, exactly the fix
        assert lines[d["line"] - 1].strip() == d["fix"]
        assert lines[d["line"] - 1][: -len(d["fix"])] == original[d["line"] - 1][: -len(d["buggy"])]
    clean = build_module(stem, "all")
    shipped = build_module(stem)
    assert clean is not shipped and clean.__name__ != shipped.__name__
    assert clean.__file__ == str(path)
    funcs = [v for v in vars(clean).values() if callable(v) and getattr(v, "__module__", None) == clean.__name__]
    codes = [inspect.unwrap(f).__code__ for f in funcs if hasattr(inspect.unwrap(f), "__code__")]
    assert codes and all(c.co_filename == str(path) for c in codes)
    assert build_module(stem, "all") is clean  # cached
    for d in key["defects"]:
        build_module(stem, [d["id"]])  # each fix alone compiles too
