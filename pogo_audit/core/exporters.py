"""CI outputs (JUnit XML, SARIF 2.1.0, GitHub step-summary Markdown) rendered from the results model only.

Every exporter takes a :class:`~pogo_audit.model.results.RunResults`, so the JSON results file, the test report, the
code-scanning alerts and the job summary always tell the same story. What is particular to one check — its JUnit
cases, its SARIF rules and results, its step-summary table — is data that check declares (:class:`ExportParts`, in
its ``CheckSpec``); a check without parts gets one test case and one summary row per result.
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from pogo_audit import __version__
from pogo_audit.model.results import ERROR, FAIL, INCONCLUSIVE, PASS, CheckResult, RunResults, located_findings
from pogo_audit.runtime.io import atomic_write_json, atomic_write_text

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
SARIF_URI_BASE = "SRCROOT"
STEP_SUMMARY_LIMIT = 1024 * 1024
_FINGERPRINT_KEY = "pogoAudit/v1"

Case = tuple[str, str, float, str, str, str]
"""One JUnit test case: (classname, name, seconds, verdict, message, body)."""
Section = tuple[str, str, list[tuple[str, bool]]]
"""One step-summary section: (heading, table header, [(row markdown, failing)])."""


@dataclass(frozen=True)
class ExportParts:
    """What one check adds to the CI outputs: ``junit_cases(result)`` (default: one case per result),
    ``sarif_results(result, repo_root)`` for its failed results and the SARIF ``rules`` they use (whatever it
    gives, every located finding of the results model is a result too: :func:`generic_sarif_results`),
    ``summary(results)`` its step-summary section (default: one row per result)."""

    junit_cases: Callable[[CheckResult], Iterable[Case]] | None = None
    sarif_results: Callable[[CheckResult, Path | None], list[dict[str, Any]]] | None = None
    rules: tuple[dict[str, Any], ...] = ()
    summary: Callable[[list[CheckResult]], Section] | None = None


_MD_SPECIAL = re.compile(r"[&<>\\|\r\n]")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_XML_ILLEGAL = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# --------------------------------------------------------------------------------------------------- formatting


def fmt(x: Any) -> str:
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


def jsonable(obj: Any) -> Any:
    """Strict-JSON copy: NaN/Inf become strings, non-JSON leaves become strings, keys become strings."""
    if isinstance(obj, float):
        return str(obj) if math.isnan(obj) or math.isinf(obj) else obj
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return str(obj)


def seconds_of(x: Any) -> float:
    try:
        s = float(x)
    except (TypeError, ValueError):
        return 0.0
    return s if math.isfinite(s) and s > 0 else 0.0


def tolerance_text(res: CheckResult) -> str:
    """The tolerance a result was judged with: "bitwise" or "rtol=…, atol=…"."""
    m = res.metrics
    if m.get("mode") == "bitwise":
        return "bitwise"
    d = res.first_divergence
    rtol = d.rtol if d is not None else m.get("rtol")
    atol = d.atol if d is not None else m.get("atol")
    if rtol is None and atol is None:
        return "unknown tolerance"
    return f"rtol={fmt(rtol)}, atol={fmt(atol)}"


def gap_text(kind: Any, max_abs: Any, max_rel: Any) -> str:
    """"max abs A, max rel R", or the kind of a divergence without a magnitude ("absent on candidate", ...)."""
    if kind:
        return str(kind)
    if isinstance(max_abs, float) and math.isnan(max_abs):
        return "digest differs"
    return f"max abs {fmt(max_abs)}, max rel {fmt(max_rel)}"


def divergence_text(res: CheckResult) -> str | None:
    """"first divergence at step S in OBS (max abs A, max rel R; tolerance)" or None without a divergence; an
    absence or a digest/shape difference is named instead of the magnitudes."""
    d = res.first_divergence
    if d is None:
        return None
    return f"first divergence at step {d.step} in {d.observable} ({gap_text(d.kind, d.max_abs, d.max_rel)}; " \
           f"{tolerance_text(res)})"


def _group_checks(results: RunResults) -> dict[str, list[CheckResult]]:
    """Results by check kind, kinds in order of first appearance."""
    groups: dict[str, list[CheckResult]] = {}
    for res in results.checks:
        groups.setdefault(res.check, []).append(res)
    return groups


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


def default_junit_cases(res: CheckResult) -> Iterable[Case]:
    """One case per result: classname ``pogo_audit.<check>``, name = subject."""
    body = "\n".join(s for s in (res.summary, divergence_text(res)) if s)
    message = (divergence_text(res) if res.verdict == FAIL else None) or res.summary or res.verdict
    yield f"pogo_audit.{res.check}", res.subject, seconds_of(res.seconds), res.verdict, message, body


def to_junit_xml(results: RunResults, parts: Mapping[str, ExportParts] | None = None) -> str:
    """JUnit XML: ``<testsuites>`` > one ``<testsuite>`` per check kind > ``<testcase>`` (the check's
    ``junit_cases``, else one per result). fail → ``<failure>``, inconclusive → ``<skipped>``, error → ``<error>``.
    """
    root = ET.Element("testsuites", name="pogo-audit")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    total_time = 0.0
    for kind, checks in _group_checks(results).items():
        suite = ET.SubElement(root, "testsuite", name=_xml_text(f"pogo_audit.{kind}"))
        counts = dict.fromkeys(totals, 0)
        suite_time = 0.0
        for res in checks:
            cases = ((parts or {}).get(kind) or ExportParts()).junit_cases or default_junit_cases
            for classname, name, seconds, verdict, message, body in cases(res):
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


def repo_uri(path: Any, repo_root: Path | None) -> str | None:
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


def fingerprint_of(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def sarif_rule(rule_id: str, name: str, short: str, full: str, tags: Iterable[str], level: str = "error"
               ) -> dict[str, Any]:
    """One SARIF ``reportingDescriptor`` (a check's rule)."""
    return {"id": rule_id, "name": name, "shortDescription": {"text": short}, "fullDescription": {"text": full},
            "defaultConfiguration": {"level": level}, "properties": {"tags": list(tags)}}


def sarif_result(rule_id: str, text: str, uri: str, line: Any, key: str, function: str | None,
                 properties: dict[str, Any]) -> dict[str, Any]:
    """One SARIF result (its ``ruleIndex`` is set by :func:`to_sarif`, which knows every check's rules); ``key``:
    its stable fingerprint (:func:`fingerprint_of`)."""
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
        "level": "error",
        "message": {"text": text},
        "locations": [location],
        "partialFingerprints": {_FINGERPRINT_KEY: key},
        "properties": jsonable(properties),
    }


def generic_rule_id(check: str) -> str:
    """The SARIF rule of a check that declares none: ``POGO-`` and its name."""
    return "POGO-" + re.sub(r"[^A-Za-z0-9]+", "-", check).upper()


def generic_rule(check: str, description: str = "") -> dict[str, Any]:
    """The rule of a check's located findings when it declares no rules of its own."""
    return sarif_rule(generic_rule_id(check), check, f"A failing finding of the {check} check",
                      description or f"pogo-audit {check} located a failing finding at this line.", (check,))


def generic_sarif_results(res: CheckResult, repo_root: Path | None) -> list[dict[str, Any]]:
    """One result per located finding of ``res`` (:func:`pogo_audit.model.results.located_findings`) inside the
    repository, under the check's generic rule."""
    rule = generic_rule_id(res.check)
    out = []
    for f in located_findings(res):
        uri = repo_uri(f.path, repo_root)
        if uri is None:
            continue
        key = fingerprint_of(rule, res.subject, uri, f.line, f.kind)
        out.append(sarif_result(rule, f"{res.subject}: {f.message}", uri, f.line, key, f.function,
                                {"check": res.check, "subject": res.subject, "kind": f.kind}))
    return out


def _where(result: dict[str, Any]) -> tuple[str, int]:
    region = result["locations"][0]["physicalLocation"]
    return region["artifactLocation"]["uri"], region["region"]["startLine"]


def to_sarif(results: RunResults, repo_root: str | os.PathLike | None = None,
             parts: Mapping[str, ExportParts] | None = None) -> dict[str, Any]:
    """SARIF 2.1.0 log (strict-JSON-safe dict) for code scanning: each failed result's findings with a code location,
    as its check's ``sarif_results`` gives them, and every located finding of the results model
    (:func:`generic_sarif_results`) at a line those did not already name, so no check can leave one out; rules:
    every check's, in registry order, then the generic rule of each check in the results. A location outside the
    repository is not emitted (JUnit and the step summary still report it). Absolute paths are made relative to
    ``repo_root`` (default: the current directory); when ``repo_root`` is given it is also recorded as the
    ``SRCROOT`` base URI.
    """
    parts = parts or {}
    root = Path(repo_root) if repo_root is not None else None
    rules = [rule for p in parts.values() for rule in p.rules]
    rules += [generic_rule(check) for check in sorted({r.check for r in results.checks})]
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    findings = []
    for res in results.checks:
        if res.verdict != FAIL:
            continue
        emit = (parts.get(res.check) or ExportParts()).sarif_results
        own = emit(res, root) if emit is not None else []
        seen = {_where(f) for f in own}
        own += [f for f in generic_sarif_results(res, root) if _where(f) not in seen]
        findings.extend({"ruleId": f["ruleId"], "ruleIndex": index[f["ruleId"]], **f} for f in own)
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "pogo-audit", "version": __version__, "semanticVersion": __version__,
                            "rules": rules}},
        "results": findings,
        "columnKind": "unicodeCodePoints",
    }
    if root is not None:
        run["originalUriBaseIds"] = {SARIF_URI_BASE: {"uri": root.resolve().as_uri().rstrip("/") + "/"}}
    return jsonable({"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]})


# ------------------------------------------------------------------------------------------------- step summary


def cell(value: Any) -> str:
    """A Markdown table cell: HTML-escaped, pipes and backslashes escaped, newlines as ``<br>``."""
    text = fmt(value)
    if not _MD_SPECIAL.search(text):
        return text
    text = html.escape(text, quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return _NEWLINES.sub("<br>", text)


def verdict_cell(verdict: str) -> str:
    return verdict if verdict == PASS else f"**{verdict}**"


def row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_header(columns: list[str]) -> str:
    return row(columns) + "\n" + row("---" for _ in columns)


def default_summary(checks: list[CheckResult]) -> Section:
    """One row per result: subject, steps, verdict, summary."""
    kind, n_bad = checks[0].check, sum(not c.passed for c in checks)
    header = table_header(["subject", "steps", "verdict", "summary"])
    rows = [(row([cell(res.subject), cell(res.steps_compared), verdict_cell(res.verdict), cell(res.summary)]),
             not res.passed) for res in checks]
    return f"### {html.escape(kind)} — {len(checks) - n_bad}/{len(checks)} passed", header, rows


def _summary_sections(results: RunResults, parts: Mapping[str, ExportParts]) -> list[Section]:
    """One section per check kind, in order of first appearance."""
    return [((parts.get(kind) or ExportParts()).summary or default_summary)(checks)
            for kind, checks in _group_checks(results).items()]


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


def to_step_summary(results: RunResults, limit_bytes: int = STEP_SUMMARY_LIMIT,
                    parts: Mapping[str, ExportParts] | None = None) -> str:
    """GitHub step-summary Markdown: a headline and one table per check kind.

    The UTF-8 size is strictly below ``limit_bytes``: when the full summary would not fit, rows are dropped
    (failing rows kept first, then passing rows in order) and a note says how many were omitted.
    """
    headline = _headline(results)
    sections = _summary_sections(results, parts or {})
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
                  repo_root: str | os.PathLike | None = None,
                  parts: Mapping[str, ExportParts] | None = None) -> dict[str, Path]:
    """Write whichever outputs are given, each atomically (temporary sibling + rename); returns {kind: path}.

    When ``summary_path`` is the file named by ``$GITHUB_STEP_SUMMARY`` the summary is appended to its current
    content (other steps/tools may already have written there) and sized to fit the remaining 1 MiB budget;
    any other summary path is replaced. ``parts``: each check's :class:`ExportParts` (``checks.registry.export_parts``).
    """
    written: dict[str, Path] = {}
    if json_path is not None:
        atomic_write_json(json_path, results.to_dict())
        written["json"] = Path(json_path)
    if junit_path is not None:
        atomic_write_text(junit_path, to_junit_xml(results, parts))
        written["junit"] = Path(junit_path)
    if sarif_path is not None:
        atomic_write_text(sarif_path, json.dumps(to_sarif(results, repo_root, parts), indent=2, allow_nan=False) + "\n")
        written["sarif"] = Path(sarif_path)
    if summary_path is not None:
        existing = ""
        if _same_file(summary_path, os.environ.get("GITHUB_STEP_SUMMARY")) and Path(summary_path).is_file():
            existing = Path(summary_path).read_text(encoding="utf-8", errors="replace")
            if existing and not existing.endswith("\n"):
                existing += "\n"
        budget = STEP_SUMMARY_LIMIT - len(existing.encode("utf-8"))
        atomic_write_text(summary_path, existing + to_step_summary(results, max(budget, 1), parts))
        written["summary"] = Path(summary_path)
    return written
