"""CI outputs (JUnit XML, SARIF 2.1.0, GitHub step-summary Markdown) rendered from the results model only.

Every exporter takes a :class:`~pogo_audit.results.RunResults` and nothing else, so the JSON results file, the test
report, the code-scanning alerts and the job summary always tell the same story.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from pogo_audit import __version__
from pogo_audit.findings import Crash
from pogo_audit.io import atomic_write_json, atomic_write_text
from pogo_audit.results import ERROR, FAIL, INCONCLUSIVE, PASS, CheckResult, RunResults

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
SARIF_URI_BASE = "SRCROOT"
STEP_SUMMARY_LIMIT = 1024 * 1024
_FINGERPRINT_KEY = "pogoAudit/v1"
_RUN_ROW = "(run)"

RULES: list[dict[str, Any]] = [
    {
        "id": "POGO-EQ001",
        "name": "not-equivalent",
        "shortDescription": {"text": "Multi-actor trainer is not equivalent to the reference algorithm"},
        "fullDescription": {"text": "Run on the same data with the same seed, the candidate (multi-actor) trainer "
                                    "produced observables that diverge from the reference implementation beyond the "
                                    "configured tolerance, so it no longer runs the original algorithm."},
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["correctness", "equivalence"]},
    },
    {
        "id": "POGO-EQ002",
        "name": "trainer-crashed",
        "shortDescription": {"text": "A trainer raised an exception during the equivalence run"},
        "fullDescription": {"text": "The reference or candidate trainer raised while the harness drove it (in its "
                                    "factory, load_parameters, a step, ...). The location is the innermost frame "
                                    "of the trainer's own code; what was compared before the crash is kept."},
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["correctness", "crash"]},
    },
    {
        "id": "POGO-MUT001",
        "name": "surviving-mutant",
        "shortDescription": {"text": "A seeded bug was not detected by the equivalence check"},
        "fullDescription": {"text": "A deliberate mutation of the algorithm at this location left every compared "
                                    "observable within tolerance; the equivalence check cannot see this class of bug."},
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["test-strength", "mutation"]},
    },
]
_RULE_INDEX = {rule["id"]: i for i, rule in enumerate(RULES)}

_MD_SPECIAL = re.compile(r"[&<>\\|\r\n]")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_XML_ILLEGAL = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# --------------------------------------------------------------------------------------------------- formatting


def _fmt(x: Any) -> str:
    """Short human rendering of a number (3 significant digits) or any other value; None becomes an em dash."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return "0" if x == 0 else f"{x:.3g}"
    return str(x)


def _jsonable(obj: Any) -> Any:
    """Strict-JSON copy: NaN/Inf become strings, non-JSON leaves become strings, keys become strings."""
    if isinstance(obj, float):
        return str(obj) if math.isnan(obj) or math.isinf(obj) else obj
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return str(obj)


def _seconds(x: Any) -> float:
    try:
        s = float(x)
    except (TypeError, ValueError):
        return 0.0
    return s if math.isfinite(s) and s > 0 else 0.0


def _tolerance(res: CheckResult) -> str:
    """The tolerance a result was judged with: "bitwise" or "rtol=…, atol=…"."""
    m = res.metrics
    if m.get("mode") == "bitwise":
        return "bitwise"
    d = res.first_divergence
    rtol = d.rtol if d is not None else m.get("rtol")
    atol = d.atol if d is not None else m.get("atol")
    if rtol is None and atol is None:
        return "unknown tolerance"
    return f"rtol={_fmt(rtol)}, atol={_fmt(atol)}"


def _gap(kind: Any, max_abs: Any, max_rel: Any) -> str:
    """"max abs A, max rel R", or the kind of a divergence without a magnitude ("absent on candidate", ...)."""
    if kind:
        return str(kind)
    if isinstance(max_abs, float) and math.isnan(max_abs):
        return "digest differs"
    return f"max abs {_fmt(max_abs)}, max rel {_fmt(max_rel)}"


def _divergence_text(res: CheckResult) -> str | None:
    """"first divergence at step S in OBS (max abs A, max rel R; tolerance)" or None without a divergence; an
    absence or a digest/shape difference is named instead of the magnitudes."""
    d = res.first_divergence
    if d is None:
        return None
    return f"first divergence at step {d.step} in {d.observable} ({_gap(d.kind, d.max_abs, d.max_rel)}; " \
           f"{_tolerance(res)})"


def _group_checks(results: RunResults) -> dict[str, list[CheckResult]]:
    """Results by check kind, kinds in order of first appearance."""
    groups: dict[str, list[CheckResult]] = {}
    for res in results.checks:
        groups.setdefault(res.check, []).append(res)
    return groups


def _equivalence_rows(res: CheckResult) -> list[dict[str, Any]]:
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
            rows.append({"group": _RUN_ROW, "steps_compared": res.steps_compared, "verdict": res.verdict,
                         "first_divergence_step": crash.get("step"), "observable": Crash(**crash).line(),
                         "max_abs": None, "max_rel": None})
        else:
            rows.append({"group": _RUN_ROW, "steps_compared": res.steps_compared, "verdict": res.verdict,
                         "first_divergence_step": d.step if d else None, "observable": d.observable if d else None,
                         "max_abs": d.max_abs if d else None, "max_rel": d.max_rel if d else None})
    return rows


def _absent_text(row: dict[str, Any]) -> str:
    """"params/actor0/log_std: absent on candidate, critic/x: not logged" for a row's absences ("" without)."""
    return ", ".join(f"{name}: {kind}" for name, kind in (row.get("absent") or {}).items())


def _equivalence_row_message(res: CheckResult, row: dict[str, Any]) -> str:
    if row["group"] == _RUN_ROW:
        if res.metrics.get("crash"):
            return res.summary
        return _divergence_text(res) or res.summary or f"{res.subject}: {row['verdict']}"
    absent = _absent_text(row)
    if row.get("first_divergence_step") is None:
        return f"{row['group']}: {absent}" if absent else _divergence_text(res) or res.summary or row["verdict"]
    gap = _gap(row.get("difference"), row.get("max_abs"), row.get("max_rel"))
    return (f"{row['group']}: first divergence at step {row['first_divergence_step']} in {row.get('observable')} "
            f"({gap}; {_tolerance(res)})" + (f"; {absent}" if absent else ""))


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


# ---------------------------------------------------------------------------------------------------- JUnit XML


def _xml_text(s: Any) -> str:
    return _XML_ILLEGAL.sub("\ufffd", str(s))


def _testcase(parent: ET.Element, classname: str, name: str, seconds: float, verdict: str, message: str,
              body: str) -> None:
    case = ET.SubElement(parent, "testcase", classname=_xml_text(classname), name=_xml_text(name),
                         time=f"{seconds:.3f}")
    if verdict == PASS:
        return
    tag = {FAIL: "failure", INCONCLUSIVE: "skipped"}.get(verdict, "error")
    attrs = {"message": _xml_text(message)}
    if tag != "skipped":
        attrs["type"] = verdict
    el = ET.SubElement(case, tag, attrs)
    if body and body != message:
        el.text = _xml_text(body)


def _junit_cases(res: CheckResult) -> Iterable[tuple[str, str, float, str, str, str]]:
    """(classname, name, seconds, verdict, message, body) for the test cases of one result."""
    body = "\n".join(s for s in (res.summary, _divergence_text(res)) if s)
    if res.check == "equivalence":
        rows = _equivalence_rows(res)
        m = res.metrics
        context = ", ".join(f"{k}={m[k]}" for k in ("reference", "candidate", "mode", "actors", "candidate_actors",
                                                     "seed", "bundle") if m.get(k) is not None)
        frame = (m.get("crash") or {}).get("frame")
        if frame:
            context += f"\ncrash at {frame['file']}:{frame['line']} in {frame['function']}(): {frame.get('code', '')}"
        ignored = (m.get("ignored") or {}).get("patterns")
        if ignored:
            context += f"\nignored: {', '.join(ignored)} ({len(m['ignored'].get('observables') or [])} observables)"
        for row in rows:
            message = _equivalence_row_message(res, row) if row["verdict"] == FAIL else (res.summary or row["verdict"])
            yield (f"pogo_audit.equivalence.{res.subject}", row["group"], _seconds(res.seconds) / len(rows),
                   row["verdict"], message, "\n".join(s for s in (body, context) if s))
    elif res.check == "mutants":
        algo = res.metrics.get("algo")
        classname = f"pogo_audit.mutants.{algo}" if algo else "pogo_audit.mutants"
        text = _mutant_text(res)
        detail = "\n".join(s for s in (body, text) if s)
        message = text if res.verdict == FAIL else res.summary or text
        yield classname, res.subject, _seconds(res.seconds), res.verdict, message, detail
    else:
        message = (_divergence_text(res) if res.verdict == FAIL else None) or res.summary or res.verdict
        yield f"pogo_audit.{res.check}", res.subject, _seconds(res.seconds), res.verdict, message, body


def to_junit_xml(results: RunResults) -> str:
    """JUnit XML: ``<testsuites>`` > one ``<testsuite>`` per check kind > ``<testcase>``.

    Equivalence yields one case per algorithm × observable group (classname ``pogo_audit.equivalence.<algo>``,
    name = group; the result's seconds are split evenly over its cases), plus a ``(run)`` case when the overall
    verdict is not reflected by any group row. Conformance yields one case per variant, mutants one per mutant
    (classname ``pogo_audit.mutants.<algo>``), any other check one per result. fail → ``<failure>``,
    inconclusive → ``<skipped>``, error → ``<error>``.
    """
    root = ET.Element("testsuites", name="pogo-audit")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    total_time = 0.0
    for kind, checks in _group_checks(results).items():
        suite = ET.SubElement(root, "testsuite", name=_xml_text(f"pogo_audit.{kind}"))
        counts = dict.fromkeys(totals, 0)
        suite_time = 0.0
        for res in checks:
            for classname, name, seconds, verdict, message, body in _junit_cases(res):
                _testcase(suite, classname, name, seconds, verdict, message, body)
                counts["tests"] += 1
                key = {FAIL: "failures", INCONCLUSIVE: "skipped", ERROR: "errors"}.get(verdict)
                if key:
                    counts[key] += 1
                suite_time += seconds
        suite.set("timestamp", _xml_text(results.created))
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{suite_time:.3f}")
        total_time += suite_time
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -------------------------------------------------------------------------------------------------------- SARIF


def _repo_uri(path: Any, repo_root: Path | None) -> str | None:
    """Repo-relative, forward-slash, percent-encoded URI for ``path``; None when it lies outside the repository."""
    if not path:
        return None
    text = str(path).replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:/", text):
        base = repo_root if repo_root is not None else Path.cwd()
        for root in (base, base.resolve()):
            try:
                text = Path(text).relative_to(root).as_posix()
                break
            except ValueError:
                continue
        else:
            return None
    norm = posixpath.normpath(text)
    if norm in (".", "") or norm == ".." or norm.startswith("../") or PurePosixPath(norm).is_absolute():
        return None
    return quote(norm, safe="/")


def _start_line(line: Any) -> int:
    try:
        n = int(line)
    except (TypeError, ValueError):
        return 1
    return max(n, 1)


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def _sarif_result(rule_id: str, text: str, uri: str, line: Any, fingerprint: str, function: str | None,
                  properties: dict[str, Any]) -> dict[str, Any]:
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": uri, "uriBaseId": SARIF_URI_BASE},
            "region": {"startLine": _start_line(line)},
        }
    }
    if function:
        location["logicalLocations"] = [{"name": str(function), "kind": "function"}]
    return {
        "ruleId": rule_id,
        "ruleIndex": _RULE_INDEX[rule_id],
        "level": "error",
        "message": {"text": text},
        "locations": [location],
        "partialFingerprints": {_FINGERPRINT_KEY: fingerprint},
        "properties": _jsonable(properties),
    }


def _equivalence_finding(res: CheckResult, repo_root: Path | None) -> dict[str, Any] | None:
    m = res.metrics
    loc = m.get("candidate_location")
    if not isinstance(loc, dict):
        return None
    uri = _repo_uri(loc.get("path"), repo_root)
    if uri is None:
        return None
    candidate = m.get("candidate") or "the multi-actor trainer"
    reference = m.get("reference") or "the reference"
    cause = _divergence_text(res) or next(
        (_equivalence_row_message(res, r) for r in _equivalence_rows(res) if r["verdict"] == FAIL), None)
    text = f"{res.subject}: {candidate} is not equivalent to {reference}: {cause or res.summary or 'outputs differ'}."
    d = res.first_divergence
    props = {"check": res.check, "subject": res.subject, "mode": m.get("mode"),
             "step": d.step if d else None, "observable": d.observable if d else None, "absent": m.get("absent")}
    return _sarif_result("POGO-EQ001", text, uri, loc.get("line"), _fingerprint("POGO-EQ001", res.subject, uri),
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
            entry["findings"].append(f"{f['observable']} ({f['kind']}) from step {f['first_step']}")
    out = []
    for (path, line), entry in by_line.items():
        uri = _repo_uri(path, repo_root)
        if uri is None:
            continue
        text = (f"{res.subject}: {entry['text'] or 'the candidate differs here'}; explains "
                f"{', '.join(entry['findings'][:4])}" + (" ..." if len(entry["findings"]) > 4 else ""))
        out.append(_sarif_result("POGO-EQ001", text, uri, line, _fingerprint("POGO-EQ001", res.subject, uri, line),
                                 entry["loc"].get("function"), {"check": res.check, "subject": res.subject,
                                                                "findings": entry["findings"]}))
    return out


def _crash_finding(res: CheckResult, repo_root: Path | None) -> dict[str, Any] | None:
    """POGO-EQ002 at the crash's frame in the trainer's code (None without a frame inside the repository)."""
    crash = res.metrics.get("crash")
    frame = crash.get("frame") if isinstance(crash, dict) else None
    if not isinstance(frame, dict):
        return None
    uri = _repo_uri(frame.get("file"), repo_root)
    if uri is None:
        return None
    text = f"{res.subject}: {res.summary}."
    props = {"check": res.check, "subject": res.subject, "side": crash.get("side"), "phase": crash.get("phase"),
             "step": crash.get("step"), "exception": crash.get("type"), "code": frame.get("code")}
    fingerprint = _fingerprint("POGO-EQ002", res.subject, crash.get("side"), crash.get("phase"), uri,
                               frame.get("function"))
    return _sarif_result("POGO-EQ002", text, uri, frame.get("line"), fingerprint, frame.get("function"), props)


def _mutant_finding(res: CheckResult, repo_root: Path | None) -> dict[str, Any] | None:
    m = res.metrics
    loc = m.get("location")
    if not isinstance(loc, dict):
        return None
    uri = _repo_uri(loc.get("path"), repo_root)
    if uri is None:
        return None
    desc = f" ({m['description']})" if m.get("description") else ""
    expected = f"; the {m['expected']} observables were expected to catch it" if m.get("expected") else ""
    algo = f" of {m['algo']}" if m.get("algo") else ""
    text = f"Mutant {res.subject}{algo}{desc} survived: no compared observable diverged{expected}."
    props = {"check": res.check, "subject": res.subject, "algo": m.get("algo"), "expected": m.get("expected")}
    fingerprint = _fingerprint("POGO-MUT001", res.subject, m.get("algo"), uri, loc.get("function"))
    return _sarif_result("POGO-MUT001", text, uri, loc.get("line"), fingerprint, loc.get("function"), props)


def to_sarif(results: RunResults, repo_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """SARIF 2.1.0 log (strict-JSON-safe dict) for code scanning.

    Findings are failed results that carry a code location: surviving mutants (``metrics.location``, rule
    POGO-MUT001), failing equivalence results (``metrics.candidate_location``, rule POGO-EQ001) and trainer crashes
    (the trainer's frame in ``metrics.crash``, rule POGO-EQ002). Failing results
    without a location, or whose location lies outside the repository, are NOT emitted (JUnit and the step summary
    still report them). Absolute paths are made relative to ``repo_root`` (default: the current directory); when
    ``repo_root`` is given it is also recorded as the ``SRCROOT`` base URI.
    """
    root = Path(repo_root) if repo_root is not None else None
    findings = []
    for res in results.checks:
        if res.verdict != FAIL:
            continue
        if res.check == "equivalence" and res.metrics.get("findings") and not res.metrics.get("crash"):
            located = _located_findings(res, root)
            if located:
                findings.extend(located)
                continue
        if res.check == "mutants":
            finding = _mutant_finding(res, root)
        elif res.check == "equivalence":
            finding = _crash_finding(res, root) if res.metrics.get("crash") else _equivalence_finding(res, root)
        else:
            finding = None
        if finding is not None:
            findings.append(finding)
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "pogo-audit", "version": __version__, "semanticVersion": __version__,
                            "rules": RULES}},
        "results": findings,
        "columnKind": "unicodeCodePoints",
    }
    if root is not None:
        run["originalUriBaseIds"] = {SARIF_URI_BASE: {"uri": root.resolve().as_uri().rstrip("/") + "/"}}
    return _jsonable({"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]})


# ------------------------------------------------------------------------------------------------- step summary


def _cell(value: Any) -> str:
    """A Markdown table cell: HTML-escaped, pipes and backslashes escaped, newlines as ``<br>``."""
    text = _fmt(value)
    if not _MD_SPECIAL.search(text):
        return text
    text = html.escape(text, quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return _NEWLINES.sub("<br>", text)


def _verdict_cell(verdict: str) -> str:
    return verdict if verdict == PASS else f"**{verdict}**"


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table_header(columns: list[str]) -> str:
    return _row(columns) + "\n" + _row("---" for _ in columns)


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


def _summary_sections(results: RunResults) -> list[tuple[str, str, list[tuple[str, bool]]]]:
    """(heading, table header, [(row markdown, failing)]) for each check kind."""
    sections = []
    for kind, checks in _group_checks(results).items():
        rows: list[tuple[str, bool]] = []
        n_bad = sum(not c.passed for c in checks)
        if kind == "equivalence":
            header = _table_header(["algorithm", "group", "steps", "verdict", "first divergence step", "observable",
                                    "max abs", "max rel"])
            for res in checks:
                for r in _equivalence_rows(res):
                    shown = _row_shown(r)
                    cells = [_cell(res.subject), _cell(r["group"]), _cell(r.get("steps_compared")),
                             _verdict_cell(shown["verdict"]), _cell(r.get("first_divergence_step")),
                             _cell(shown["observable"]), _cell(shown["max_abs"]), _cell(shown["max_rel"])]
                    rows.append((_row(cells), r["verdict"] != PASS))
            heading = f"### Equivalence — {len(checks) - n_bad}/{len(checks)} algorithms passed"
        elif kind == "conformance":
            header = _table_header(["variant", "steps", "bitwise %", "max rel", "verdict"])
            for res in checks:
                pct = res.metrics.get("bitwise_pct")
                cells = [_cell(res.subject), _cell(res.steps_compared),
                         _cell(f"{pct:.2f}" if isinstance(pct, (int, float)) else pct),
                         _cell(res.metrics.get("max_rel")), _verdict_cell(res.verdict)]
                rows.append((_row(cells), not res.passed))
            heading = f"### Conformance — {len(checks) - n_bad}/{len(checks)} variants passed"
        elif kind == "mutants":
            header = _table_header(["mutant", "algo", "expected observable", "caught by", "step", "killed"])
            for res in checks:
                m = res.metrics
                killed = {PASS: "yes", FAIL: "**no**"}.get(res.verdict, _verdict_cell(res.verdict))
                cells = [_cell(res.subject), _cell(m.get("algo")), _cell(m.get("expected")),
                         _cell(m.get("caught_by")), _cell(m.get("step")), killed]
                rows.append((_row(cells), not res.passed))
            heading = f"### Mutants — {len(checks) - n_bad}/{len(checks)} killed"
        else:
            header = _table_header(["subject", "steps", "verdict", "summary"])
            for res in checks:
                cells = [_cell(res.subject), _cell(res.steps_compared), _verdict_cell(res.verdict),
                         _cell(res.summary)]
                rows.append((_row(cells), not res.passed))
            heading = f"### {html.escape(kind)} — {len(checks) - n_bad}/{len(checks)} passed"
        sections.append((heading, header, rows))
    return sections


def _headline(results: RunResults) -> str:
    n = len(results.checks)
    if n == 0:
        return "## pogo-audit: no checks were run"
    bad = [c for c in results.checks if not c.passed]
    if not bad:
        return f"## pogo-audit: all {n} checks passed ✅"
    parts = [f"{sum(c.verdict == v for c in bad)} {label}" for v, label in
             ((FAIL, "failed"), (ERROR, "errored"), (INCONCLUSIVE, "inconclusive"))
             if any(c.verdict == v for c in bad)]
    noun = "problem" if len(bad) == 1 else "problems"
    return f"## pogo-audit: ❌ {len(bad)} {noun} in {n} checks ({', '.join(parts)})"


def _render_summary(headline: str, sections: list[tuple[str, str, list[tuple[str, bool]]]],
                    keep: set[tuple[int, int]] | None, omitted: int, limit_bytes: int) -> str:
    parts = [headline, ""]
    for si, (heading, header, rows) in enumerate(sections):
        parts += [heading, ""]
        kept = [r for ri, (r, _) in enumerate(rows) if keep is None or (si, ri) in keep]
        if kept:
            parts += [header, *kept]
        if len(kept) < len(rows):
            parts.append(f"\n_{len(rows) - len(kept)} of {len(rows)} rows omitted._")
        parts.append("")
    if omitted:
        parts.append(f"> **Note:** {omitted} table rows were omitted to keep this summary under {limit_bytes} bytes "
                     f"(failing rows are kept first). The JSON results and JUnit report have every row.")
        parts.append("")
    return "\n".join(parts)


def to_step_summary(results: RunResults, limit_bytes: int = STEP_SUMMARY_LIMIT) -> str:
    """GitHub step-summary Markdown: a headline and one table per check kind.

    The UTF-8 size is strictly below ``limit_bytes``: when the full summary would not fit, rows are dropped
    (failing rows kept first, then passing rows in order) and a note says how many were omitted.
    """
    headline = _headline(results)
    sections = _summary_sections(results)
    full = _render_summary(headline, sections, None, 0, limit_bytes)
    if len(full.encode("utf-8")) < limit_bytes:
        return full
    indexed = [(si, ri, failing) for si, (_, _, rows) in enumerate(sections) for ri, (_, failing) in enumerate(rows)]
    priority = [(si, ri) for si, ri, failing in indexed if failing] + \
               [(si, ri) for si, ri, failing in indexed if not failing]
    total = len(priority)

    def render(k: int) -> str:
        return _render_summary(headline, sections, set(priority[:k]), total - k, limit_bytes)

    lo, hi = 0, total - 1
    first = render(0)
    best = first if len(first.encode("utf-8")) < limit_bytes else None
    while best is not None and lo < hi:
        mid = (lo + hi + 1) // 2
        text = render(mid)
        if len(text.encode("utf-8")) < limit_bytes:
            lo, best = mid, text
        else:
            hi = mid - 1
    if best is None:
        best = f"{headline}\n\n> **Note:** all {total} table rows omitted (summary limit {limit_bytes} bytes).\n"
        if len(best.encode("utf-8")) >= limit_bytes:
            best = best.encode("utf-8")[:max(limit_bytes - 1, 0)].decode("utf-8", errors="ignore")
    return best


# ------------------------------------------------------------------------------------------------------ writing


def _same_file(a: str | os.PathLike, b: str | None) -> bool:
    if not b:
        return False
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def write_outputs(results: RunResults, json_path: str | os.PathLike | None = None,
                  junit_path: str | os.PathLike | None = None, sarif_path: str | os.PathLike | None = None,
                  summary_path: str | os.PathLike | None = None,
                  repo_root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write whichever outputs are given, each atomically (temporary sibling + rename); returns {kind: path}.

    When ``summary_path`` is the file named by ``$GITHUB_STEP_SUMMARY`` the summary is appended to its current
    content (other steps/tools may already have written there) and sized to fit the remaining 1 MiB budget;
    any other summary path is replaced.
    """
    written: dict[str, Path] = {}
    if json_path is not None:
        atomic_write_json(json_path, results.to_dict())
        written["json"] = Path(json_path)
    if junit_path is not None:
        atomic_write_text(junit_path, to_junit_xml(results))
        written["junit"] = Path(junit_path)
    if sarif_path is not None:
        atomic_write_text(sarif_path, json.dumps(to_sarif(results, repo_root), indent=2, allow_nan=False) + "\n")
        written["sarif"] = Path(sarif_path)
    if summary_path is not None:
        existing = ""
        if _same_file(summary_path, os.environ.get("GITHUB_STEP_SUMMARY")) and Path(summary_path).is_file():
            existing = Path(summary_path).read_text(encoding="utf-8", errors="replace")
            if existing and not existing.endswith("\n"):
                existing += "\n"
        budget = STEP_SUMMARY_LIMIT - len(existing.encode("utf-8"))
        atomic_write_text(summary_path, existing + to_step_summary(results, max(budget, 1)))
        written["summary"] = Path(summary_path)
    return written
