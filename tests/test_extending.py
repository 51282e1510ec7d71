"""Extending pogo-audit touches the places the README's Extending table says, and no more: in a copy of the tree, a
throw-away algorithm, check and observable group are added with exactly those edits, and then work end to end
(an equivalence run of the algorithm, the check's command and its report stage, the group in a run's table and a
mutant caught by it, the registry tests of the copy)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pogo_audit", "checks", "multi_actor", "reference_algos", "reports")

TOY_CHECK = '''"""A throw-away check."""

from pogo_audit.model.results import CheckResult


def run_command(args, progress):
    yield CheckResult("toy-check", "it", "pass")


def suite_stage(opts, say):
    return [CheckResult("toy-check", "it", "pass")]
'''
#: what each extension edits: file -> (anchor, "before" | "after", text); a new file: (None, None, its text)
ALGORITHM = {
    "reference_algos/torch/toy.py": (None, None, None),  # a new reference (here a copy of TD3+BC's)
    "multi_actor/algorithms.py": ("\n\nclass CQL(TorchAlgorithm):", "before",
                                  '\n\nclass Toy(TD3BC):\n    name = "toy"\n'),
    "multi_actor/registry.py": ('    AlgorithmSpec("rebrac", "jax",', "before",
                                '    AlgorithmSpec("toy", "torch", "reference_algos.torch.toy", '
                                'adapter="multi_actor.algorithms:Toy", actor0_types=("deterministic",), '
                                'extra_actor_type="deterministic", variants=()),\n'),
    "README.md": ("| `td3_bc` | `td3_bc.py` | tanh MLP × max_action | twin Q | actor and targets every 2nd step, "
                  "λ from critic_1 |\n", "after", "| `toy` | `toy.py` | as TD3+BC | as TD3+BC | a throw-away copy |\n"),
}
CHECK = {
    "checks/toy_check.py": (None, None, TOY_CHECK),
    "checks/registry.py": ("CHECKS: dict[str, CheckSpec] = {spec.name: spec for spec in (\n", "after",
                           '    CheckSpec("toy-check", "a toy", "A toy check.", lambda p: None, '
                           '"checks.toy_check:run_command", passed=lambda rs: "toy ok", failed=lambda rs: "toy bad", '
                           'report=ReportStage("checks.toy_check:suite_stage", audits="either")),\n'),
    "README.md": ("| `pogo-audit train` |", "before", "| `pogo-audit toy-check` | a toy | `pogo-audit toy-check` |\n"),
}
#: to appear in the report, one more place: a rubric section that reads it (here the documentation section)
CHECK_IN_REPORT = {
    "reports/rubric.yaml": ("    checks: [docs", "after", ", toy-check"),
}
GROUP = {
    "checks/equivalence/observables.py": ('    ObservableGroup("batch", ("batch/",), "batch", drift=False),\n', "after",
                                          '    ObservableGroup("toy counter", ("toy/",), "toy", drift=False),\n'),
    "checks/equivalence/side.py": ("        obs.update(self.iso.rng_digests())\n", "after",
                                   "        obs['toy/total_it'] = float(getattr(getattr(self.iso.trainer, 'base', "
                                   "None), 'total_it', -1))\n"),
    "README.md": ("| a step that edits the batch in place |\n", "after",
                  "| toy counter | `toy/total_it` | a counter incremented twice |\n"),
    "checks/mutants/torch_catalog.py": ('        Mutant("td3_target_without_min", "td3_bc",', "before",
                                        '        Mutant("toy_total_it_twice", "td3_bc", "total_it incremented twice", '
                                        '"toy counter", SourcePatch(TD3.train_step, "self.total_it += 1", '
                                        '"self.total_it += 2"), steps=2),\n'),
}


def readme_counts() -> dict[str, int]:
    """The places the README's Extending table states for an algorithm, a check (and to join the report) and an
    observable group: the numbers in its ``where`` column ("**N places**")."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Extending pogo-audit", 1)[1].split("\n\n", 2)[1]
    counts = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        found = re.findall(r"\*\*(\d+) places?\*\*", cells[1])
        if found:
            counts[cells[0]] = [int(n) for n in found]
    return counts


def _apply(tree: Path, edits: dict[str, tuple[str | None, str | None, str | None]]) -> None:
    for rel, (anchor, where, text) in edits.items():
        path = tree / rel
        if anchor is None:
            path.write_text(text if text is not None else (tree / "reference_algos/torch/td3_bc.py").read_text())
            continue
        source = path.read_text(encoding="utf-8")
        assert source.count(anchor) == 1, (rel, anchor)
        path.write_text(source.replace(anchor, anchor + text if where == "after" else text + anchor, 1))


def _run(tree: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run([sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("extended")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    _apply(tree, ALGORITHM)
    _apply(tree, CHECK)
    _apply(tree, CHECK_IN_REPORT)
    _apply(tree, GROUP)
    return tree


def test_the_readme_states_the_places_an_extension_touches():
    counts = readme_counts()
    assert counts == {"an algorithm": [len(ALGORITHM)], "a check": [len(CHECK), len(CHECK) + len(CHECK_IN_REPORT)],
                      "an observable group": [len(GROUP)]}, counts


@pytest.mark.heavy
def test_the_throw_away_algorithm_runs_end_to_end(extended, tmp_path):
    out = tmp_path / "eq.json"
    proc = _run(extended, "-m", "pogo_audit.cli", "equivalence", "--algo", "toy", "--steps", "3", "-q", "--json",
                str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())["checks"]
    assert result["subject"] == "toy" and result["verdict"] == "pass"
    assert "toy counter" in {row["group"] for row in result["details"]}  # the new group is compared, and agrees
    docs = _run(extended, "-m", "pogo_audit.cli", "docs", "--readme", "README.md", "-q")
    assert docs.returncode == 0, docs.stdout[-3000:]


def test_the_throw_away_check_runs_and_joins_the_report(extended, tmp_path):
    proc = _run(extended, "-m", "pogo_audit.cli", "toy-check", "-q", "--json", str(tmp_path / "t.json"))
    assert proc.returncode == 0 and "toy ok" in proc.stdout, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "t.json").read_text())["checks"][0]["check"] == "toy-check"
    skip = "equivalence,mutants,fuzz,jax-profile,conformance,failure-handling,docs"
    report = _run(extended, "-m", "pogo_audit.cli", "report", "--algo", "iql", "--skip", skip, "-o",
                  str(tmp_path / "r.md"))
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert "toy-check" in (tmp_path / "r.results.json").read_text()


@pytest.mark.heavy
def test_the_throw_away_group_catches_its_mutant_and_the_registries_hold(extended):
    proc = _run(extended, "-m", "pogo_audit.cli", "mutants", "--only", "toy_total_it_twice", "-q", "--json",
                "mutants.json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads((extended / "mutants.json").read_text())["checks"]
    assert result["verdict"] == "pass" and result["metrics"]["expected_caught"]
    assert {row["group"]: row["step"] for row in result["details"]}["toy counter"] == 1
    tests = _run(extended, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_registries.py")
    assert tests.returncode == 0, tests.stdout[-3000:]
