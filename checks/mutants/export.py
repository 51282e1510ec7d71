"""What the mutants check adds to the CI outputs: one JUnit case per mutant (classname
``pogo_audit.mutants.<algo>``), a SARIF result at the mutated line of a surviving mutant, and the kill table."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pogo_audit.core.exporters import (
    Case,
    ExportParts,
    Section,
    cell,
    divergence_text,
    fingerprint_of,
    repo_uri,
    row,
    sarif_result,
    sarif_rule,
    seconds_of,
    table_header,
    verdict_cell,
)
from pogo_audit.model.results import FAIL, PASS, CheckResult


def _mutant_text(res: CheckResult) -> str:
    m = res.metrics
    loc = m.get("location") or {}
    where = f" in {loc.get('function')}() at {loc.get('path')}:{loc.get('line')}" if loc else ""
    desc = f" ({m['description']})" if m.get("description") else ""
    if m.get("killed"):
        step = f" at step {m.get('step')}" if m.get("step") is not None else ""
        return f"mutant {res.subject}{desc}{where} killed by {m.get('caught_by')}{step}"
    expected = f"; expected the {m['expected']} observables to catch it" if m.get("expected") else ""
    return f"mutant {res.subject}{desc}{where} survived: no compared observable diverged{expected}"


def _mutant_finding(res: CheckResult, repo_root: Path | None) -> dict[str, Any] | None:
    m = res.metrics
    loc = m.get("location")
    if not isinstance(loc, dict):
        return None
    uri = repo_uri(loc.get("path"), repo_root)
    if uri is None:
        return None
    desc = f" ({m['description']})" if m.get("description") else ""
    expected = f"; the {m['expected']} observables were expected to catch it" if m.get("expected") else ""
    algo = f" of {m['algo']}" if m.get("algo") else ""
    text = f"Mutant {res.subject}{algo}{desc} survived: no compared observable diverged{expected}."
    props = {"check": res.check, "subject": res.subject, "algo": m.get("algo"), "expected": m.get("expected")}
    key = fingerprint_of("POGO-MUT001", res.subject, m.get("algo"), uri, loc.get("function"))
    return sarif_result("POGO-MUT001", text, uri, loc.get("line"), key, loc.get("function"), props)


def junit_cases(res: CheckResult) -> Iterable[Case]:
    """One case per mutant, classname ``pogo_audit.mutants.<algo>``."""
    body = "\n".join(s for s in (res.summary, divergence_text(res)) if s)
    algo = res.metrics.get("algo")
    classname = f"pogo_audit.mutants.{algo}" if algo else "pogo_audit.mutants"
    text = _mutant_text(res)
    detail = "\n".join(s for s in (body, text) if s)
    message = text if res.verdict == FAIL else res.summary or text
    yield classname, res.subject, seconds_of(res.seconds), res.verdict, message, detail


def sarif_results(res: CheckResult, repo_root: Path | None) -> list[dict[str, Any]]:
    """A surviving mutant at its mutated line."""
    finding = _mutant_finding(res, repo_root)
    return [finding] if finding is not None else []


def summary(checks: list[CheckResult]) -> Section:
    """The kill table: one row per mutant."""
    n_bad = sum(not c.passed for c in checks)
    header = table_header(["mutant", "algo", "expected observable", "caught by", "step", "killed"])
    rows = []
    for res in checks:
        m = res.metrics
        killed = {PASS: "yes", FAIL: "**no**"}.get(res.verdict, verdict_cell(res.verdict))
        cells = [cell(res.subject), cell(m.get("algo")), cell(m.get("expected")), cell(m.get("caught_by")),
                 cell(m.get("step")), killed]
        rows.append((row(cells), not res.passed))
    return f"### Mutants — {len(checks) - n_bad}/{len(checks)} killed", header, rows


MUTANT_RULES = (
    sarif_rule("POGO-MUT001", "surviving-mutant", "A seeded bug was not detected by the equivalence check",
               "A deliberate mutation of the algorithm at this location left every compared observable within "
               "tolerance; the equivalence check cannot see this class of bug.", ("test-strength", "mutation")),
)

#: the mutants check's part of the CI outputs
PARTS = ExportParts(junit_cases, sarif_results, MUTANT_RULES, summary)
