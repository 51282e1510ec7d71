"""Render the scored review report (Markdown, GitHub step summary, JSON) and its PNG assets from results only.

Templates use ``StrictUndefined`` and a ``finalize`` hook that refuses ``None``: a missing field in the results
fails loudly instead of rendering "None" or a blank cell.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from pogo_audit.model.findings import Crash, parameter_check_text
from pogo_audit.runtime.io import atomic_write_bytes
from pogo_audit.model.results import ERROR, CheckResult, RunResults
from reports.review import Claim, claims_vs_evidence
from reports.scoring import overall, recommendations, score_sections

TEMPLATES = Path(__file__).with_name("templates")
SUMMARY_LIMIT = 1024 * 1024


class MissingValue(ValueError):
    """A template tried to print None (a field the results should have carried)."""


def _finalize(value: Any) -> Any:
    if value is None:
        raise MissingValue("a report field is None (missing in the results)")
    return value


def _md(value: Any) -> str:
    """Escape a value for a Markdown table cell."""
    text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, str):
        value = float(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "digest differs"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "htm", "xml"]), finalize=_finalize,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = _md
    env.filters["num"] = _num
    return env


class _ByCheck(dict):
    """Check name → its results, in order; a check with none reads as an empty list (templates need no list of
    check names)."""

    def __missing__(self, key: str) -> list[CheckResult]:
        return []


def by_check(results: RunResults) -> dict[str, list[CheckResult]]:
    out = _ByCheck()
    for r in results.checks:
        out.setdefault(r.check, []).append(r)
    return out


def report_model(results: RunResults, sources: list[str], target: str,
                 review: list[Claim] | None = None) -> dict[str, Any]:
    sections = score_sections(results)
    return {
        "review_rows": claims_vs_evidence(review, sections) if review else [],
        "target": target,
        "sources": sources,
        "created": results.created,
        "environment": results.environment,
        "sections": sections,
        "overall": overall(sections),
        "recommendations": recommendations(sections),
        "checks": results.checks,
        "by_check": by_check(results),
        "equivalence_groups": equivalence_group_table(results),
        "equivalence_warnings": [(r.subject, w["message"]) for r in results.by_check("equivalence")
                                 for w in r.metrics.get("warnings") or []],
        "equivalence_rows": [equivalence_row(r) for r in results.by_check("equivalence")],
    }


def _text(value: Any) -> str:
    return "—" if value is None else str(value)


def equivalence_row(r: CheckResult) -> dict[str, Any]:
    """One algorithm's equivalence result as report cells: passed, failed, crashed (its crash as evidence) or
    errored. Only an errored result may lack the run's metrics (shown "—"); a run's result without them is
    incomplete results and fails loudly (KeyError)."""
    m = r.metrics
    missing = [k for k in ("mode", "actors", "self_check") if k not in m]
    if missing and r.verdict != ERROR:
        raise KeyError(missing[0])
    d = r.first_divergence
    gap = (d.kind or ("digest differs" if math.isnan(d.max_abs) else None)) if d is not None else None
    actors = _text(m.get("actors"))
    if m.get("candidate_actors") is not None:
        actors += f" (candidate exposes {m['candidate_actors']})"
    crash = m.get("crash") or m.get("error")
    crash_row = None
    if crash:
        frame = crash.get("frame") or {}
        crash_row = {
            "side": crash["side"], "where": Crash(**crash).where(), "exception": f"{crash['type']}: {crash['message']}",
            "location": f"{frame['file']}:{frame['line']} in {frame['function']}()" if frame else
            "no frame in the trainer's code", "code": frame.get("code") or "—",
        }
    absent = m.get("absent") or {}
    ignored = (m.get("ignored") or {}).get("patterns") or []
    check = m.get("parameter_check") or {}
    return {
        "subject": r.subject, "verdict": r.verdict, "steps": r.steps_compared, "mode": _text(m.get("mode")),
        "actors": actors, "self_check": _text(m.get("self_check")),
        "first": f"step {d.step}: `{d.observable}`" if d is not None else "none",
        "max_abs": gap or (_num(d.max_abs) if d is not None else "0"),
        "max_rel": gap or (_num(d.max_rel) if d is not None else "0"),
        "bundle": f"`{m['bundle']}`" if m.get("bundle") else "—",
        "crash": crash_row,
        "absent": "; ".join(f"{kind}: {', '.join(names)}" for kind, names in absent.items()),
        "ignored": ", ".join(ignored),
        "parameter_check": parameter_check_text(check) if check.get("issues") else "",
    }


def equivalence_group_table(results: RunResults) -> dict[str, Any]:
    """Columns = every observable group of any trainer (first-seen order); a cell is None where a trainer lacks it."""
    checks = results.by_check("equivalence")
    groups = list(dict.fromkeys(row["group"] for r in checks for row in r.details))
    rows = [(r.subject, [next((row for row in r.details if row["group"] == g), None) for g in groups]) for r in checks]
    return {"groups": groups, "rows": rows}


# ----------------------------------------------------------------------------------------------------- plots


def _figure(width: float = 8, height: float = 4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def divergence_plot(results: RunResults, path: Path) -> Path | None:
    """Per-algorithm max |reference - candidate| over the critic/actor0 losses, per step (log scale)."""
    import numpy as np

    series = []
    for r in results.by_check("equivalence"):
        hist = r.metrics.get("history") or {}
        steps = hist.get("steps") or []
        keys = [k.removeprefix("reference/") for k in hist if k.startswith("reference/")]
        if not steps or not keys:
            continue
        diffs = np.zeros(len(steps))
        for k in keys:
            a = np.asarray(hist[f"reference/{k}"], dtype=float)
            b = np.asarray(hist.get(f"candidate/{k}", [np.nan] * len(a)), dtype=float)
            d = np.abs(a - b)
            diffs = np.fmax(diffs, np.where(np.isnan(a) & np.isnan(b), 0.0, d))
        series.append((r.subject, np.asarray(steps), diffs))
    if not series:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    floor = 1e-12
    for name, steps, diffs in series:
        ax.plot(steps, np.where(diffs > 0, diffs, floor), marker=".", label=name)
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, None)
    ax.set_xlabel("step")
    ax.set_ylabel("max |reference − candidate| over losses")
    ax.set_title(f"critic/actor0 loss divergence per step (points at {floor:g} are bitwise equal)")
    ax.legend()
    return _save(fig, path)


def compiles_plot(results: RunResults, path: Path) -> Path | None:
    """Compiles per jitted function (total and after warm-up) for every JAX profile."""
    rows = [(f"{r.subject}:{fn['name']}", fn["compiles"], fn["compiles_after_warmup"])
            for r in results.by_check("jax-profile") for fn in r.metrics["functions"]]
    if not rows:
        return None
    fig = _figure(8, max(2.5, 0.35 * len(rows) + 1))
    ax = fig.add_subplot()
    names = [n for n, _, _ in rows]
    ax.barh(names, [c for _, c, _ in rows], label="compiles")
    ax.barh(names, [a for _, _, a in rows], label="after warm-up", color="tab:red")
    ax.set_xlabel("count")
    ax.set_title("JAX compiles per jitted function")
    ax.legend()
    return _save(fig, path)


def ratios_plot(results: RunResults, path: Path) -> Path | None:
    """Speed ratios measured side by side (JAX profile ratios and benchmark groups)."""
    rows = []
    for r in results.by_check("jax-profile"):
        for name, value in r.metrics["ratios"].items():
            if value is not None:
                rows.append((f"{r.subject}: {name}", float(value)))
    for r in results.by_check("benchmark"):
        for label, value in r.metrics["ratios"].items():
            rows.append((f"{r.subject}: {label}", float(value)))
    if not rows:
        return None
    fig = _figure(8, max(2.5, 0.35 * len(rows) + 1))
    ax = fig.add_subplot()
    ax.barh([n for n, _ in rows], [v for _, v in rows])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("ratio (measured in one run)")
    ax.set_title("measured speed ratios")
    return _save(fig, path)


def write_assets(results: RunResults, assets: Path) -> dict[str, Path]:
    out = {}
    for name, fn in (("divergence", divergence_plot), ("compiles", compiles_plot), ("ratios", ratios_plot)):
        path = fn(results, assets / f"{name}.png")
        if path is not None:
            out[name] = path
    return out


# ---------------------------------------------------------------------------------------------------- render


def render_markdown(results: RunResults, sources: list[str], target: str, assets: dict[str, Path],
                    assets_rel: str, review: list[Claim] | None = None) -> str:
    model = report_model(results, sources, target, review)
    model["assets"] = {k: f"{assets_rel}/{v.name}" for k, v in assets.items()}
    return tidy_markdown(environment().get_template("report.md.j2").render(**model))


def tidy_markdown(text: str) -> str:
    """One blank line around every heading and image, no runs of blank lines, no trailing spaces."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        block = line.startswith(("#", "!["))
        if block and lines and lines[-1]:
            lines.append("")
        if line or (lines and lines[-1]):
            lines.append(line)
        if block:
            lines.append("")
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def render_summary(results: RunResults, sources: list[str], target: str, limit: int = SUMMARY_LIMIT) -> str:
    """GitHub step summary: scores, rubric lines and recommendations; strictly below ``limit`` bytes."""
    model = report_model(results, sources, target)
    env = environment()
    text = env.get_template("summary.md.j2").render(**model, max_recs=len(model["recommendations"]))
    shown = len(model["recommendations"])
    while len(text.encode("utf-8")) >= limit and shown > 0:
        shown //= 2
        text = env.get_template("summary.md.j2").render(**model, max_recs=shown)
    return text


def render_json(results: RunResults, sources: list[str], target: str,
                review: list[Claim] | None = None) -> dict[str, Any]:
    model = report_model(results, sources, target, review)
    return {
        "review": model["review_rows"],
        "target": target,
        "sources": sources,
        "overall": model["overall"],
        "sections": [
            {"key": s.key, "title": s.title, "measured": s.measured, "score": s.score, "stars": s.stars,
             "five_stars": s.five_stars, "rubric": [asdict(a) for a in s.applied],
             "not_measured": None if s.measured and not s.absent else s.not_measured_reason,
             "evidence": [f"{r.check}/{r.subject}" for r in s.results]}
            for s in model["sections"]
        ],
        "recommendations": model["recommendations"],
    }
