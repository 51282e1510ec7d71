"""``pogo-audit report --candidate`` on the two worked examples: every section is measured on the example's own code.

The correct TD3+BC trainer (with ``examples/USER_README.md``) passes every measured section; the broken IQL trainer
(with ``examples/USER_README_IQL.md``) shows each planted defect as a finding of its section. Scores are exact, and no
scored result comes from our own trainer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from checks.suite import SuiteOptions, run_suite
from pogo_audit.cli.main import build_parser, main
from pogo_audit.core.loading import import_callable
from pogo_audit.model.results import CheckResult, RunResults
from reports.scoring import SectionScore, score_sections

REPO = Path(__file__).resolve().parents[1]
GOOD = ("td3_bc", "examples.pogo_adapter:factory", "examples/USER_README.md")
BROKEN = ("iql", "examples.broken_adapter:factory", "examples/USER_README_IQL.md")
STEPS, EXAMPLES = 4, 20


def _suite(case: tuple[str, str, str], bundle_dir: Path) -> RunResults:
    algo, spec, readme = case
    cwd = os.getcwd()
    os.chdir(REPO)  # --candidate modules and --readme resolve from the repository root, as from a shell there
    try:
        factory = import_callable(spec, "--candidate", spec)
        opts = SuiteOptions(algos=(algo,), steps=STEPS, fuzz_examples=EXAMPLES, readme=readme,
                            candidates={algo: (spec, factory)}, parser=build_parser(), bundle_dir=str(bundle_dir))
        return run_suite(opts)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def good(embedded_dataset, tmp_path_factory) -> RunResults:
    return _suite(GOOD, tmp_path_factory.mktemp("good-bundles"))


@pytest.fixture(scope="module")
def broken(embedded_dataset, tmp_path_factory) -> RunResults:
    return _suite(BROKEN, tmp_path_factory.mktemp("broken-bundles"))


def _sections(results: RunResults) -> dict[str, SectionScore]:
    return {s.key: s for s in score_sections(results)}


def _findings(section: SectionScore) -> list[str]:
    return [f.message for a in section.applied for f in a.findings]


def _assert_only_candidate_evidence(results: RunResults) -> None:
    assert results.checks and {r.metrics.get("audited") for r in results.checks} == {"candidate"}
    for section in score_sections(results):
        assert all(r.metrics.get("audited") == "candidate" for r in section.results), section.key
        assert section.credentials == []  # no reference conformance/mutation evidence in these runs


def test_correct_example_passes_every_measured_section(good):
    sections = _sections(good)
    assert {k: s.score for k, s in sections.items()} == {
        "documentation": 5, "equivalence": 5, "bug_risk": 5, "logging": 5, "jax_performance": None}
    assert {k: _findings(s) for k, s in sections.items()} == {k: [] for k in sections}
    _assert_only_candidate_evidence(good)
    subjects = {r.subject for r in good.checks}
    assert {"td3_bc: candidate_config_validation", "td3_bc: candidate_logging_path",
            "td3_bc: checkpoint_resume_bitwise", "td3_bc: checkpoint_crash_keeps_previous",
            "td3_bc: checkpoint_full_disk_keeps_previous", "td3_bc: checkpoint_full_disk_reported",
            "td3_bc: checkpoint_unwritable_dir_reported"} <= subjects
    fuzz = {r.subject: r for r in good.checks if r.check == "fuzz"}
    assert all(r.metrics["examples_run"] >= EXAMPLES for r in fuzz.values())


@pytest.mark.heavy
def test_broken_example_shows_each_planted_defect_in_its_section(broken):
    sections = _sections(broken)
    assert {k: s.score for k, s in sections.items()} == {
        "documentation": 1, "equivalence": 3, "bug_risk": 4, "logging": 1, "jax_performance": None}
    _assert_only_candidate_evidence(broken)

    # section 1: the README's own defects (no diagram, "actor 0", a flag that does not exist) among the failing rules
    docs = {r.subject: r for r in sections["documentation"].results if r.verdict != "pass"}
    assert set(docs) == {"architecture", "command_list", "algorithm_table", "config_fields", "terminology",
                         "commands_parse"}
    assert "'actor 0'" in docs["terminology"].summary
    assert any("--eval-freq" in row.get("command", "") and "error" in row for row in docs["commands_parse"].details)

    # section 2: (c) the never-stepped LR schedule at step 1; (d) the harmless leak as a hygiene warning only
    (eq,) = sections["equivalence"].results
    assert eq.verdict == "fail" and eq.first_divergence.step == 1
    assert eq.first_divergence.observable.startswith("optim/actor0/actor/") and \
        eq.first_divergence.observable.endswith("/lr")
    assert [w["group"] for w in eq.metrics["warnings"]] == ["grad leak"]

    # section 3: (e) w2_weights padded/cut instead of rejected
    (bug,) = _findings(sections["bug_risk"])
    assert "w2_weights length differs from num_actors - 1: silently accepted" in bug

    # section 4: (f) float() of every logged value; (g) in-place, weights-only checkpoint
    logging = {r.subject.removeprefix("iql: "): r for r in sections["logging"].results}
    (crash,) = [f["exception"] for f in logging["candidate_logging_path"].metrics["findings"]]
    assert "log(metrics, step=0) raised TypeError: float() argument must be" in crash
    assert {s: r.verdict for s, r in logging.items() if s.startswith("checkpoint_")} == {
        "checkpoint_resume_bitwise": "fail", "checkpoint_full_disk_reported": "pass",
        "checkpoint_full_disk_keeps_previous": "fail", "checkpoint_crash_keeps_previous": "fail",
        "checkpoint_unwritable_dir_reported": "pass"}
    assert "resuming from the step-2 checkpoint differs" in logging["checkpoint_resume_bitwise"].summary
    assert "previous checkpoint was destroyed" in logging["checkpoint_crash_keeps_previous"].summary


def test_our_own_trainers_failures_do_not_reach_a_candidate_review(good):
    """Failing results of pogo-audit's own trainer (a self-audit run merged in) change no section of the review."""
    own = [CheckResult("fuzz", "config_validation", "fail", summary="our own config",
                       metrics={"target": "configs", "audited": "self"}),
           CheckResult("fuzz", "logging_path", "fail", summary="our own logger", metrics={"target": "logging"}),
           CheckResult("failure-handling", "checkpoint_crash", "fail", summary="our own checkpoints"),
           CheckResult("equivalence", "td3_bc", "fail", summary="our own trainer", metrics={"audited": "self"})]
    merged = RunResults(checks=[*good.checks, *own])
    assert {k: s.score for k, s in _sections(merged).items()} == {k: s.score for k, s in _sections(good).items()}
    _assert_only_candidate_evidence(RunResults(checks=[r for s in score_sections(merged) for r in s.results]))


def test_cli_report_on_the_correct_example(embedded_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "report.json"
    algo, spec, readme = GOOD
    assert main(["report", "--candidate", f"{algo}={spec}", "--readme", readme, "--steps", "3", "--fuzz-examples",
                 "10", "--format", "json", "-o", str(out), "--fail-under", "5"]) == 0
    report = json.loads(out.read_text())
    assert [(s["title"], s["score"]) for s in report["sections"]] == [
        ("Documentation", 5), ("Critic/actor0 equivalence", 5), ("Bug risk", 5), ("Logging", 5),
        ("JAX performance", None)]
    assert report["overall"] == 5.0
