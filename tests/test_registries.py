"""The registries are complete and resolve: every ``module:attribute`` string of every registry names something, every
observable group has its README row, its kill-matrix column and a mutant expecting it, and every check has one
name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from checks.conformance.command import FRAMEWORK_REPLAYS
from checks.equivalence.command import FRAMEWORK_RUNNERS
from checks.equivalence.observables import OBSERVABLE_GROUPS, group_of
from checks.registry import CHECKS
from multi_actor import registry as algorithms
from pogo_audit.core.loading import resolve

ROOT = Path(__file__).resolve().parent.parent


def _registry_strings() -> list[tuple[str, str]]:
    out = [(f"check {name}", s) for name, spec in CHECKS.items() for s in spec.module_strings()]
    out += [(f"framework runner {k}", v) for k, v in FRAMEWORK_RUNNERS.items()]
    out += [(f"conformance replay {k}", v) for k, v in FRAMEWORK_REPLAYS.items()]
    out += [(f"algorithm {a.name} adapter", a.adapter) for a in algorithms.ALGORITHMS.values() if a.adapter]
    return out


@pytest.mark.parametrize("where, spec", _registry_strings(), ids=[w for w, _ in _registry_strings()])
def test_every_registry_string_resolves(where, spec):
    assert resolve(spec) is not None, where


def test_every_algorithm_reference_imports_and_every_framework_has_a_runner():
    for spec in algorithms.ALGORITHMS.values():
        assert spec.reference.__name__ == spec.reference_module
        assert spec.framework in FRAMEWORK_RUNNERS and spec.framework in FRAMEWORK_REPLAYS


def _readme_observable_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| observable group | observables | catches |", 1)[1].split("\n\n", 1)[0]
    return [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("|")]


def test_every_observable_group_has_a_readme_row_a_column_and_a_mutant():
    from checks.mutants import catalog

    assert _readme_observable_rows() == [g.name for g in OBSERVABLE_GROUPS]
    abbrevs = [g.abbrev for g in OBSERVABLE_GROUPS]
    assert len(set(abbrevs)) == len(abbrevs)
    expected = {m.expected for m in catalog()}
    assert [g.name for g in OBSERVABLE_GROUPS if g.name not in expected] == []


def test_group_of_reads_the_declared_prefixes():
    for group in OBSERVABLE_GROUPS:
        assert group_of(group.prefixes[0] + "x/y") == group.name
    assert group_of("params/actor3/w/sum") == "critic params"  # an undeclared role counts as critic parameters
    assert group_of("something/else") == "other"


def test_the_kill_matrix_has_a_column_per_group():
    from rich.console import Console

    from pogo_audit.cli.render import kill_matrix_table

    console = Console(width=400, record=True)
    console.print(kill_matrix_table([]))
    header = next(line for line in console.export_text().splitlines() if "mutant" in line and "algo" in line)
    assert all(g.abbrev in header for g in OBSERVABLE_GROUPS)


def test_a_check_has_one_name():
    """The name a check's command has is the ``check`` of every result it yields (the rubric and the report
    read results by that name): no other spelling appears in the rubric, the templates or the code."""
    names = set(CHECKS)
    rubric = (ROOT / "reports" / "rubric.yaml").read_text(encoding="utf-8")
    for old in ("jax_profile", "check: logging"):
        assert old not in rubric
    selected = set(re.findall(r"check: \[?([a-z_-]+)", rubric)) | set(re.findall(r"checks: \[([a-z_-]+)", rubric))
    assert selected <= names | {"benchmark"}, selected - names
