"""What the equivalence check adds to the CI outputs (:class:`~pogo_audit.core.exporters.ExportParts`): one JUnit
case per algorithm × observable group (plus a ``(run)`` case when no group reflects the verdict or a trainer
crashed), SARIF results at the candidate lines an ``--isolate`` run located, at a crash's frame, or at the
candidate's location, and a step-summary table of the groups."""

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
    gap_text,
    repo_uri,
    row,
    sarif_result,
    sarif_rule,
    seconds_of,
    table_header,
    tolerance_text,
    verdict_cell,
)
from pogo_audit.model.findings import Crash
from pogo_audit.model.results import ERROR, FAIL, INCONCLUSIVE, PASS, CheckResult

RUN_ROW = "(run)"


def equivalence_rows(res: CheckResult) -> list[dict[str, Any]]:
    """One row per observable group; plus a "(run)" row carrying the overall verdict when no row does, or the
    crash that ended the run."""
    rows = []
    for raw in res.details:
        if not isinstance(raw, dict):
            continue
        verdict = raw.get("verdict")
        if verdict == "warning":  # a hygiene note (metrics["warnings"]), not a failed test
            verdict = PASS
        elif verdict not in (PASS, FAIL, INCONCLUSIVE, ERROR):
            verdict = FAIL if raw.get("first_divergence_step") is not None else PASS
        rows.append({**raw, "group": str(raw.get("group", "?")), "verdict": verdict})
    reflected = any(r["verdict"] != PASS for r in rows) if res.verdict == FAIL else res.verdict == PASS
    if not rows or not reflected or res.metrics.get("crash"):  # a crash is a case of its own
        d = res.first_divergence
        crash = res.metrics.get("crash")
        if crash:  # the step it crashed at and the crash itself, in place of a divergence
            rows.append({"group": RUN_ROW, "steps_compared": res.steps_compared, "verdict": res.verdict,
                         "first_divergence_step": crash.get("step"), "observable": Crash(**crash).line(),
                         "max_abs": None, "max_rel": None})
        else:
            rows.append({"group": RUN_ROW, "steps_compared": res.steps_compared, "verdict": res.verdict,
                         "first_divergence_step": d.step if d else None, "observable": d.observable if d else None,
                         "max_abs": d.max_abs if d else None, "max_rel": d.max_rel if d else None})
    return rows


def _absent_text(row: dict[str, Any]) -> str:
    """"params/actor0/log_std: absent on candidate, critic/x: not logged" for a row's absences ("" without)."""
    return ", ".join(f"{name}: {kind}" for name, kind in (row.get("absent") or {}).items())


def _equivalence_row_message(res: CheckResult, row: dict[str, Any]) -> str:
    if row["group"] == RUN_ROW:
        if res.metrics.get("crash"):
            return res.summary
        return divergence_text(res) or res.summary or f"{res.subject}: {row['verdict']}"
    absent = _absent_text(row)
    if row.get("first_divergence_step") is None:
        return f"{row['group']}: {absent}" if absent else divergence_text(res) or res.summary or row["verdict"]
    gap = gap_text(row.get("difference"), row.get("max_abs"), row.get("max_rel"))
    return (f"{row['group']}: first divergence at step {row['first_divergence_step']} in {row.get('observable')} "
            f"({gap}; {tolerance_text(res)})" + (f"; {absent}" if absent else ""))


def _row_shown(row: dict[str, Any]) -> dict[str, Any]:
    """A group row as the step summary shows it: an absence is its own verdict, and a divergence without a magnitude
    (digest, shape, absence) shows its kind instead of numbers."""
    absent = row.get("absent") or {}
    only_absent = row.get("first_divergence_step") is None and bool(absent)
    verdict = ", ".join(dict.fromkeys(absent.values())) if only_absent and row["verdict"] == FAIL else row["verdict"]
    observable = ", ".join(absent) if only_absent else row.get("observable")
    text = row.get("difference") or ("—" if only_absent else None)
    return {"verdict": verdict, "observable": observable,
            "max_abs": text or row.get("max_abs"), "max_rel": text or row.get("max_rel")}


def _equivalence_finding(res: CheckResult, repo_root: Path | None) -> dict[str, Any] | None:
    m = res.metrics
    loc = m.get("candidate_location")
    if not isinstance(loc, dict):
        return None
    uri = repo_uri(loc.get("path"), repo_root)
    if uri is None:
        return None
    candidate = m.get("candidate") or "the multi-actor trainer"
    reference = m.get("reference") or "the reference"
    cause = divergence_text(res) or next(
        (_equivalence_row_message(res, r) for r in equivalence_rows(res) if r["verdict"] == FAIL), None)
    text = f"{res.subject}: {candidate} is not equivalent to {reference}: {cause or res.summary or 'outputs differ'}."
    d = res.first_divergence
    props = {"check": res.check, "subject": res.subject, "mode": m.get("mode"),
             "step": d.step if d else None, "observable": d.observable if d else None, "absent": m.get("absent")}
    return sarif_result("POGO-EQ001", text, uri, loc.get("line"), fingerprint_of("POGO-EQ001", res.subject, uri),
                         None, props)


def _located_findings(res: CheckResult, repo_root: Path | None) -> list[dict[str, Any]]:
    """One POGO-EQ001 result per candidate line an ``--isolate`` run located (``metrics.findings``), with the
    findings it explains."""
    by_line: dict[tuple[str, int], dict[str, Any]] = {}
    for f in res.metrics.get("findings") or []:
        message = (f.get("localisation") or {}).get("message", "")
        for loc, text in ([(f["location"], message)] if f.get("location") else []) + \
                [(a, a.get("message", "")) for a in f.get("also") or []]:
            entry = by_line.setdefault((loc["path"], loc["line"]), {"loc": loc, "text": text, "findings": []})
            entry["findings"].append(f"{f.get('observable')} ({f.get('kind')}) from step {f.get('first_step')}")
    out = []
    for (path, line), entry in by_line.items():
        uri = repo_uri(path, repo_root)
        if uri is None:
            continue
        text = (f"{res.subject}: {entry['text'] or 'the candidate differs here'}; explains "
                f"{', '.join(entry['findings'][:4])}" + (" ..." if len(entry["findings"]) > 4 else ""))
        out.append(sarif_result("POGO-EQ001", text, uri, line, fingerprint_of("POGO-EQ001", res.subject, uri, line),
                                 entry["loc"].get("function"), {"check": res.check, "subject": res.subject,
                                                                "findings": entry["findings"]}))
    return out


def _crash_finding(res: CheckResult, repo_root: Path | None) -> dict[str, Any] | None:
    """POGO-EQ002 at the crash's frame in the trainer's code (None without a frame inside the repository)."""
    crash = res.metrics.get("crash")
    frame = crash.get("frame") if isinstance(crash, dict) else None
    if not isinstance(frame, dict):
        return None
    uri = repo_uri(frame.get("file"), repo_root)
    if uri is None:
        return None
    text = f"{res.subject}: {res.summary}."
    props = {"check": res.check, "subject": res.subject, "side": crash.get("side"), "phase": crash.get("phase"),
             "step": crash.get("step"), "exception": crash.get("type"), "code": frame.get("code")}
    key = fingerprint_of("POGO-EQ002", res.subject, crash.get("side"), crash.get("phase"), uri,
                               frame.get("function"))
    return sarif_result("POGO-EQ002", text, uri, frame.get("line"), key, frame.get("function"), props)


def junit_cases(res: CheckResult) -> Iterable[Case]:
    """One case per observable group (classname ``pogo_audit.equivalence.<algo>``, name = group; the result's
    seconds split evenly over its cases)."""
    body = "\n".join(s for s in (res.summary, divergence_text(res)) if s)
    rows = equivalence_rows(res)
    m = res.metrics
    context = ", ".join(f"{k}={m[k]}" for k in ("reference", "candidate", "mode", "actors", "candidate_actors",
                                                 "seed", "bundle") if m.get(k) is not None)
    frame = (m.get("crash") or {}).get("frame")
    if frame:
        context += f"\ncrash at {frame['file']}:{frame['line']} in {frame['function']}(): {frame.get('code', '')}"
    ignored = (m.get("ignored") or {}).get("patterns")
    if ignored:
        context += f"\nignored: {', '.join(ignored)} ({len(m['ignored'].get('observables') or [])} observables)"
    for r in rows:
        message = _equivalence_row_message(res, r) if r["verdict"] == FAIL else (res.summary or r["verdict"])
        yield (f"pogo_audit.equivalence.{res.subject}", r["group"], seconds_of(res.seconds) / len(rows),
               r["verdict"], message, "\n".join(s for s in (body, context) if s))


def _step_crash_findings(res: CheckResult, repo_root: Path | None) -> list[dict[str, Any]]:
    """POGO-EQ002 per crash site of an ``--isolate`` run (``metrics.crashes``), at the line that decided it."""
    out = []
    for c in res.metrics.get("crashes") or []:
        loc = c.get("location") or {}
        uri = repo_uri(loc.get("path"), repo_root)
        if uri is None:
            continue
        raised = c.get("raised_at") or {}
        at = f" (raised at {raised['path']}:{raised['line']})" if raised and raised != loc else ""
        text = f"{res.subject}: candidate crashed in {c.get('count')} step(s): {c.get('type')}: {c.get('message')}{at}"
        key = fingerprint_of("POGO-EQ002", res.subject, "steps", uri, loc.get("line"))
        out.append(sarif_result("POGO-EQ002", text, uri, loc.get("line"), key, loc.get("function"),
                                {"check": res.check, "subject": res.subject, "steps": c.get("steps"),
                                 "exception": c.get("type")}))
    return out


def sarif_results(res: CheckResult, repo_root: Path | None) -> list[dict[str, Any]]:
    """One result per located line of an ``--isolate`` run and per crash site, else the crash's frame, else the
    candidate's location."""
    out = _located_findings(res, repo_root) + _step_crash_findings(res, repo_root)
    if res.metrics.get("crash"):
        out += [f for f in [_crash_finding(res, repo_root)] if f is not None]
    if not out:
        out += [f for f in [_equivalence_finding(res, repo_root)] if f is not None]
    return out


def summary(checks: list[CheckResult]) -> Section:
    """One row per algorithm × observable group."""
    n_bad = sum(not c.passed for c in checks)
    header = table_header(["algorithm", "group", "steps", "verdict", "first divergence step", "observable",
                           "max abs", "max rel"])
    rows = []
    for res in checks:
        for r in equivalence_rows(res):
            shown = _row_shown(r)
            cells = [cell(res.subject), cell(r["group"]), cell(r.get("steps_compared")),
                     verdict_cell(shown["verdict"]), cell(r.get("first_divergence_step")),
                     cell(shown["observable"]), cell(shown["max_abs"]), cell(shown["max_rel"])]
            rows.append((row(cells), r["verdict"] != PASS))
    return f"### Equivalence — {len(checks) - n_bad}/{len(checks)} algorithms passed", header, rows


EQUIVALENCE_RULES = (
    sarif_rule("POGO-EQ001", "not-equivalent", "Multi-actor trainer is not equivalent to the reference algorithm",
               "Run on the same data with the same seed, the candidate (multi-actor) trainer produced observables "
               "that diverge from the reference implementation beyond the configured tolerance, so it no longer runs "
               "the original algorithm.", ("correctness", "equivalence")),
    sarif_rule("POGO-EQ002", "trainer-crashed", "A trainer raised an exception during the equivalence run",
               "The reference or candidate trainer raised while the harness drove it (in its factory, "
               "load_parameters, a step, ...). The location is the innermost frame of the trainer's own code; what "
               "was compared before the crash is kept.", ("correctness", "crash")),
)

#: the equivalence check's part of the CI outputs
PARTS = ExportParts(junit_cases, sarif_results, EQUIVALENCE_RULES, summary)
