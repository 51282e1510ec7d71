"""What the conformance check adds to the CI outputs: a step-summary table of variants (bitwise share, max rel)."""

from __future__ import annotations

from pogo_audit.core.exporters import ExportParts, Section, cell, row, table_header, verdict_cell
from pogo_audit.model.results import CheckResult


def summary(checks: list[CheckResult]) -> Section:
    """One row per variant and precision."""
    n_bad = sum(not c.passed for c in checks)
    header = table_header(["variant", "steps", "bitwise %", "max rel", "verdict"])
    rows = []
    for res in checks:
        pct = res.metrics.get("bitwise_pct")
        cells = [cell(res.subject), cell(res.steps_compared),
                 cell(f"{pct:.2f}" if isinstance(pct, (int, float)) else pct),
                 cell(res.metrics.get("max_rel")), verdict_cell(res.verdict)]
        rows.append((row(cells), not res.passed))
    return f"### Conformance — {len(checks) - n_bad}/{len(checks)} variants passed", header, rows


#: the conformance check's part of the CI outputs
PARTS = ExportParts(summary=summary)
