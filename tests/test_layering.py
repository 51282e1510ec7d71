"""Layering: the import-linter contracts in pyproject.toml hold, a planted forbidden import breaks exactly its contract,
every ``pogo_audit`` module is placed in a layer, and only the CLI prints."""

from __future__ import annotations

import ast
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pogo_audit

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in CONFIG["contracts"]}
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint(tree: Path) -> tuple[int, dict[str, str], str]:
    """Run ``lint-imports`` on the packages under ``tree``: (exit code, contract id -> KEPT/BROKEN, output)."""
    proc = subprocess.run(
        [sys.executable, "-c", LINT, "--config", "pyproject.toml", "--no-cache", "--no-logo"],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "400"},
        capture_output=True, text=True, timeout=120,
    )
    by_name = dict(re.findall(r"^(.+) (KEPT|BROKEN)$", proc.stdout, flags=re.M))
    return proc.returncode, {cid: by_name.get(c["name"], "missing") for cid, c in CONTRACTS.items()}, \
        proc.stdout + proc.stderr


def test_contracts_hold():
    code, states, output = lint(ROOT)
    assert states == {cid: "KEPT" for cid in CONTRACTS}, output
    assert code == 0, output


def test_every_pogo_audit_subpackage_is_in_the_cli_layer_or_below_the_checks():
    """Contracts name subpackages: every module of pogo_audit lives in one of them (a new top-level module would
    be in no contract)."""
    cli_layer = {CONTRACTS["layers"]["layers"][0]}
    below = set(CONTRACTS["core"]["source_modules"])
    assert not cli_layer & below and set(CONTRACTS["below-core"]["layers"]) == below
    found = {(f"pogo_audit.{m.name}", m.ispkg) for m in pkgutil.iter_modules(pogo_audit.__path__)}
    assert found == {(name, True) for name in cli_layer | below}, "place new pogo_audit modules in a subpackage"


PLANTS = [
    # (file, code appended or written, contracts it must break)
    ("reference_algos/torch/planted.py", "from pogo_audit.model.results import CheckResult\n", {"reference_algos"}),
    ("multi_actor/planted.py", "import checks.equivalence\n", {"layers", "multi_actor"}),
    ("checks/planted.py", "def lazy():\n    from pogo_audit.cli.main import build_parser\n", {"layers", "checks"}),
    ("checks/planted.py", "from rich.table import Table\n", {"checks"}),
    ("pogo_audit/runtime/seeding.py", "\n\ndef planted():\n    import multi_actor.config\n", {"core"}),
    ("pogo_audit/runtime/planted.py", "from pogo_audit.model.results import CheckResult\n", {"below-core", "acyclic"}),
    ("reports/planted.py", "import pogo_audit.core.golden\n", {"reports"}),
    ("multi_actor/planted.py", "from pogo_audit.core.harness import IsolatedTrainer\n", {"multi_actor"}),
    ("checks/localise/planted.py", "import checks.equivalence\n", {"acyclic"}),
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A copy of the project's packages and pyproject.toml (tests never touch the real tree)."""
    tree = tmp_path_factory.mktemp("pristine")
    for package in CONFIG["root_packages"]:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


@pytest.mark.parametrize("path,code,broken", PLANTS, ids=[f"{p}:{sorted(b)}" for p, _, b in PLANTS])
def test_planted_forbidden_import_breaks_its_contract(pristine, tmp_path, path, code, broken):
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    with open(tree / path, "a", encoding="utf-8") as f:
        f.write(code)
    exit_code, states, output = lint(tree)
    assert exit_code != 0, output
    assert {cid for cid, state in states.items() if state == "BROKEN"} == broken, output
    assert all(states[cid] == "KEPT" for cid in CONTRACTS if cid not in broken), output
    importer = path.removesuffix(".py").replace("/", ".")
    if broken == {"acyclic"}:  # a cycle is reported between sibling packages: ".localise -> .equivalence"
        package = importer.rsplit(".", 2)[-2]
        assert re.search(rf"^\s*-\s+\.{re.escape(package)} -> ", output, flags=re.M), output
    else:
        assert re.search(rf"^\s*-\s+{re.escape(importer)} -> ", output, flags=re.M), output


# ------------------------------------------------------------------------------------------ only the CLI prints

#: printing outside the CLI that is not ours: the JAX profiler captures fd 2 to count transfer-guard lines and passes
#: on whatever else was written there meanwhile
PRINT_ALLOWED = {("checks/jax_profile/transfers.py", "sys.stderr.write")}
PRINT_CALLS = {"print", "pprint", "sys.stdout.write", "sys.stderr.write", "sys.stdout.buffer.write",
               "sys.stderr.buffer.write"}


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def printing_calls(source: str) -> list[tuple[int, str]]:
    """(line, callee) of every call that writes to the terminal: print(), sys.std*.write, X.print(), Console()."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func) or ""
        last = name.rsplit(".", 1)[-1]
        if name in PRINT_CALLS or last in ("print", "Console"):
            found.append((node.lineno, name))
    return found


def test_printing_calls_are_detected():
    snippet = ("print('x')\nconsole.print(table)\nsys.stderr.write('e')\nc = rich.console.Console()\n"
               "logger.info('x')\nwarnings.warn('w')\nhandle.write('data')\n")
    assert printing_calls(snippet) == [(1, "print"), (2, "console.print"), (3, "sys.stderr.write"),
                                       (4, "rich.console.Console")]


def test_only_the_cli_prints():
    offenders = []
    for package in CONFIG["root_packages"]:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("pogo_audit/cli/"):
                continue
            for line, name in printing_calls(path.read_text(encoding="utf-8")):
                if (rel, name) not in PRINT_ALLOWED:
                    offenders.append(f"{rel}:{line} {name}()")
    assert not offenders, offenders
