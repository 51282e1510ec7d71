"""Scores from evidence: apply ``rubric.yaml`` to a results model.

Each finding is one failing (or flagged) check result; each deduction names the rubric line that produced it and
the result it came from. Nothing here reads anything but the results model and the rubric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pogo_audit.results import CheckResult, RunResults

RUBRIC_PATH = Path(__file__).with_name("rubric.yaml")
FUZZ_LOGGING_TARGETS = ("logging",)


def load_rubric(path: str | Path | None = None) -> dict[str, Any]:
    return yaml.safe_load(Path(path or RUBRIC_PATH).read_text(encoding="utf-8"))


@dataclass
class Finding:
    """One instance of a rubric deduction, tied to the check result that evidences it."""

    rule_id: str
    check: str
    subject: str
    message: str


@dataclass
class AppliedRule:
    rule_id: str
    rule: str
    points: int
    cap: int
    count: int
    deducted: int
    findings: list[Finding] = field(default_factory=list)


@dataclass
class SectionScore:
    key: str
    title: str
    checks: list[str]
    five_stars: str
    measured: bool
    score: int | None
    applied: list[AppliedRule]
    results: list[CheckResult]

    @property
    def stars(self) -> str:
        if self.score is None:
            return "not measured"
        return "★" * self.score + "☆" * (5 - self.score)


# ------------------------------------------------------------------------------------------------- findings


def _fuzz_target(r: CheckResult) -> str:
    return str(r.metrics["target"])


JAX_KINDS = {"not_jitted": "not_jitted", "recompile": "recompiles", "host_sync": "host_sync",
             "host_to_device": "h2d_transfer"}


def _jax_findings(r: CheckResult) -> list[tuple[str, str]]:
    """The profile's failing findings (notes about non-training paths do not cost stars)."""
    return [(JAX_KINDS[f["kind"]], f"{r.subject}: {f['message']}") for f in r.details
            if f["severity"] == "fail" and f["kind"] in JAX_KINDS]


def findings_for(section: str, results: list[CheckResult]) -> list[Finding]:
    """Map check results to rubric findings of ``section``."""
    out: list[Finding] = []

    def add(rule: str, r: CheckResult, message: str) -> None:
        out.append(Finding(rule, r.check, r.subject, message))

    for r in results:
        if section == "documentation" and r.check == "docs" and not r.passed:
            add("docs_rule_failed", r, f"{r.subject}: {r.summary}")
        elif section == "equivalence":
            if r.check == "equivalence":
                if r.verdict == "fail" and r.metrics.get("crash"):
                    add("equivalence_error", r, f"{r.subject}: {r.summary}")
                elif r.verdict == "fail":
                    add("not_equivalent", r, f"{r.subject}: {r.summary}")
                elif r.verdict == "error":
                    add("equivalence_error", r, f"{r.subject}: {r.summary}")
                elif r.verdict == "inconclusive":
                    add("inconclusive", r, f"{r.subject}: {r.summary}")
                elif r.metrics["mode"] == "tolerance":
                    add("tolerance_only", r, f"{r.subject}: equivalent within rtol={r.metrics['rtol']}, "
                                             f"atol={r.metrics['atol']} only")
            elif r.check == "mutants" and not r.passed:
                add("surviving_mutant", r, f"mutant {r.subject} ({r.metrics['description']}) survived")
            elif r.check == "conformance" and not r.passed:
                add("conformance_failure", r, f"{r.subject}: {r.summary}")
        elif section == "bug_risk":
            if r.check == "fuzz" and not r.passed and _fuzz_target(r) not in FUZZ_LOGGING_TARGETS:
                add("fuzz_finding", r, f"{r.subject}: {r.summary}")
            elif r.check == "mutants" and not r.passed:
                add("surviving_mutant", r, f"mutant {r.subject} ({r.metrics['description']}) survived")
        elif section == "logging":
            if r.check == "fuzz" and not r.passed and _fuzz_target(r) in FUZZ_LOGGING_TARGETS:
                add("logging_fuzz_finding", r, f"{r.subject}: {r.summary}")
            elif r.check == "logging" and not r.passed:
                add("failure_not_handled", r, f"{r.subject}: {r.summary}")
        elif section == "jax_performance" and r.check == "jax_profile":
            for rule, message in _jax_findings(r):
                add(rule, r, message)
    return out


def _section_results(section: str, spec: dict[str, Any], results: RunResults) -> list[CheckResult]:
    rs = [r for r in results.checks if r.check in spec["checks"]]
    if section == "logging":
        rs = [r for r in rs if r.check != "fuzz" or _fuzz_target(r) in FUZZ_LOGGING_TARGETS]
    if section == "bug_risk":
        rs = [r for r in rs if r.check != "fuzz" or _fuzz_target(r) not in FUZZ_LOGGING_TARGETS]
    return rs


def score_sections(results: RunResults, rubric: dict[str, Any] | None = None) -> list[SectionScore]:
    """One SectionScore per rubric section, in rubric order."""
    rubric = rubric or load_rubric()
    top, bottom = int(rubric["scale"]["max"]), int(rubric["scale"]["min"])
    out = []
    for key, spec in rubric["sections"].items():
        rs = _section_results(key, spec, results)
        findings = findings_for(key, rs)
        applied = []
        present = {r.check for r in rs}
        for check, rule in (spec.get("requires") or {}).items():
            count = 0 if (check in present or not rs) else 1
            missing = [Finding(f"missing_{check}", check, "—", f"{spec['title']}: {rule.split(' when ', 1)[-1]}")
                       ] if count else []
            applied.append(AppliedRule(f"missing_{check}", rule, 1, 1, count, count, missing))
        for d in spec["deductions"]:
            mine = [f for f in findings if f.rule_id == d["id"]]
            deducted = min(len(mine) * int(d["points"]), int(d["cap"]))
            applied.append(AppliedRule(d["id"], d["rule"], int(d["points"]), int(d["cap"]), len(mine), deducted,
                                       mine))
        measured = bool(rs)
        score = max(bottom, top - sum(a.deducted for a in applied)) if measured else None
        out.append(SectionScore(key, spec["title"], list(spec["checks"]), spec["five_stars"], measured, score,
                                applied, rs))
    return out


def overall(sections: list[SectionScore]) -> float | None:
    measured = [s.score for s in sections if s.score is not None]
    return round(sum(measured) / len(measured), 1) if measured else None


def recommendations(sections: list[SectionScore]) -> list[dict[str, Any]]:
    """Findings ordered by the points they cost (then section order), as actionable lines."""
    recs = []
    for order, s in enumerate(sections):
        for a in s.applied:
            for f in a.findings:
                recs.append({"points": a.points, "order": order, "section": s.title, "rule": a.rule_id,
                             "message": f.message, "evidence": f"{f.check}/{f.subject}"})
    recs.sort(key=lambda r: (-r["points"], r["order"]))
    return recs
