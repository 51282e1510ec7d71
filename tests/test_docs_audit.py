"""Docs audit: our README passes every rule; a README with planted defects fails exactly those rules."""

from __future__ import annotations

import argparse

import pytest

from checks.docs_audit import audit_readme
from pogo_audit.cli.main import build_parser


def by_rule(results):
    return {r.subject: r for r in results}


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def test_repository_readme_passes_every_rule(parser):
    results = by_rule(audit_readme(parser))
    assert set(results) == {"quickstart", "architecture", "command_list", "algorithm_table", "config_fields",
                            "terminology", "commands_parse"}
    failing = {k: r.summary for k, r in results.items() if not r.passed}
    assert not failing, failing


def test_planted_defects_are_found(parser, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# tool\n\n## Quickstart\n\nRun it.\n\n## Architecture\n\nIt is layered.\n\n"
        "## Commands\n\n| command | example |\n| --- | --- |\n| `pogo-audit equivalence` | ... |\n\n"
        "Actor 0 is trained by the base algorithm; `algo` and `seed` are config fields.\n\n"
        "```bash\npogo-audit equivalence --algo ppo\npogo-audit inspect\n```\n"
    )
    results = by_rule(audit_readme(parser, readme))
    for rule in ("quickstart", "architecture", "command_list", "algorithm_table", "config_fields", "terminology",
                 "commands_parse"):
        assert not results[rule].passed, rule
    assert "mutants" in results["command_list"].summary
    assert any(d.get("found") == "Actor 0" for d in results["terminology"].details)
    errors = [d for d in results["commands_parse"].details if "error" in d]
    assert {e["command"] for e in errors} == {"pogo-audit equivalence --algo ppo", "pogo-audit inspect"}


def test_commands_come_from_the_parser_given():
    parser = build_parser()
    parser.commands = {**parser.commands, "frobnicate": argparse.ArgumentParser(prog="pogo-audit frobnicate")}
    results = by_rule(audit_readme(parser))
    assert not results["command_list"].passed
    assert results["command_list"].summary.endswith("missing: frobnicate")
    assert "pogo-audit frobnicate --help" in {d["command"] for d in results["commands_parse"].details}
