"""Scores from evidence: apply ``rubric.yaml`` to a results model.

Each finding is one failing (or flagged) check result; each deduction names the rubric line that produced it and
the result it came from. Nothing here reads anything but the results model and the rubric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from pogo_audit.model.results import CheckResult, RunResults
from pogo_audit.runtime.io import yaml_load

RUBRIC_PATH = Path(__file__).with_name("rubric.yaml")


def load_rubric(path: str | Path | None = None) -> dict[str, Any]:
    return yaml_load(Path(path or RUBRIC_PATH).read_text(encoding="utf-8"))


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
    #: why a part of this section could not be measured on the candidate (e.g. "adapter has no `log`")
    absent: list[str] = field(default_factory=list)
    #: candidate mode: our own references' evidence (conformance, mutants), cited as the tool's credentials
    credentials: list[CheckResult] = field(default_factory=list)

    @property
    def not_measured_reason(self) -> str:
        if self.absent:
            return "; ".join(self.absent)
        return f"no `{'`/`'.join(self.checks)}` results"

    @property
    def stars(self) -> str:
        if self.score is None:
            return "not measured"
        return "★" * self.score + "☆" * (5 - self.score)


# ------------------------------------------------------------------------------------------------- selectors
#
# The rubric says which results a section reads and which results are findings with *selectors*: mappings from a
# result field to the value it must have (a list: one of those values). ``check``, ``subject`` and ``verdict`` are
# the result's fields, ``metrics.<key>`` its metrics; a ``not`` mapping inverts its own fields. A deduction with
# ``each: details`` produces one finding per matching ``details`` row (``detail`` selects the rows). Adding a check
# to the report is rubric data: a section's ``checks`` entry and its deductions, no code here.


def _field(r: CheckResult, path: str) -> Any:
    if path.startswith("metrics."):
        return r.metrics.get(path[len("metrics."):])
    return getattr(r, path)


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, list) else value == wanted


def _selects(r: CheckResult, selector: str | dict[str, Any]) -> bool:
    """Whether result ``r`` satisfies ``selector`` (a bare string selects by check name)."""
    if isinstance(selector, str):
        return r.check == selector
    for path, wanted in selector.items():
        if path == "not":
            if any(_matches(_field(r, p), w) for p, w in wanted.items()):
                return False
        elif not _matches(_field(r, path), wanted):
            return False
    return True


def _check_name(selector: str | dict[str, Any]) -> str:
    return selector if isinstance(selector, str) else str(selector["check"])


def section_checks(spec: dict[str, Any]) -> list[str]:
    """The check names a rubric section reads, in rubric order."""
    return list(dict.fromkeys(_check_name(s) for s in spec["checks"]))


def findings_for(deduction: dict[str, Any], results: list[CheckResult]) -> list[Finding]:
    """The findings of one rubric deduction among a section's results."""
    out: list[Finding] = []
    for r in results:
        if not _selects(r, deduction["match"]):
            continue
        if deduction.get("each") == "details":
            for row in r.details:
                if all(_matches(row.get(k), w) for k, w in (deduction.get("detail") or {}).items()):
                    out.append(Finding(deduction["id"], r.check, r.subject,
                                       deduction["message"].format(r=r, detail=row)))
        else:
            out.append(Finding(deduction["id"], r.check, r.subject, deduction["message"].format(r=r)))
    return out


def _section_results(spec: dict[str, Any], results: RunResults) -> list[CheckResult]:
    return [r for r in results.checks if any(_selects(r, s) for s in spec["checks"])]


CANDIDATE = "candidate"


def candidate_mode(results: RunResults) -> bool:
    """Whether the results review a user's trainer (any result tagged ``metrics.audited = "candidate"``)."""
    return any(r.metrics.get("audited") == CANDIDATE for r in results.checks)


def score_sections(results: RunResults, rubric: dict[str, Any] | None = None) -> list[SectionScore]:
    """One SectionScore per rubric section, in rubric order.

    In candidate mode only results measured on the candidate's code are scored: our own trainer's results never
    are, and ``requires`` rules (evidence the mode itself does not produce) do not apply; our references'
    conformance and mutation results, if present, are kept as the tool's credentials, not as deductions.
    """
    rubric = rubric or load_rubric()
    top, bottom = int(rubric["scale"]["max"]), int(rubric["scale"]["min"])
    candidate = candidate_mode(results)
    pool = RunResults(checks=[r for r in results.checks if r.metrics.get("audited") == CANDIDATE]) \
        if candidate else results
    out = []
    for key, spec in rubric["sections"].items():
        rs = _section_results(spec, pool)
        absent = [f"{r.summary.removeprefix('not measured (').removesuffix(')')}" for r in pool.checks
                  if r.metrics.get("absent_hook") and r.metrics.get("section") == key]
        credentials = [r for r in _section_results(spec, results) if r.check in ("conformance", "mutants")
                       and r.metrics.get("audited") != CANDIDATE] if candidate else []
        applied = []
        present = {r.check for r in rs}
        for check, rule in ({} if candidate else spec.get("requires") or {}).items():
            count = 0 if (check in present or not rs) else 1
            missing = [Finding(f"missing_{check}", check, "—", f"{spec['title']}: {rule.split(' when ', 1)[-1]}")
                       ] if count else []
            applied.append(AppliedRule(f"missing_{check}", rule, 1, 1, count, count, missing))
        for d in spec["deductions"]:
            mine = findings_for(d, rs)
            deducted = min(len(mine) * int(d["points"]), int(d["cap"]))
            applied.append(AppliedRule(d["id"], d["rule"], int(d["points"]), int(d["cap"]), len(mine), deducted,
                                       mine))
        measured = bool(rs)
        score = max(bottom, top - sum(a.deducted for a in applied)) if measured else None
        five_stars = spec.get("five_stars_candidate", spec["five_stars"]) if candidate else spec["five_stars"]
        out.append(SectionScore(key, spec["title"], section_checks(spec), five_stars, measured, score,
                                applied, rs, absent, credentials))
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
