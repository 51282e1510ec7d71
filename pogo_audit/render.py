"""rich renderables built from the results model (data → renderable; the CLI prints them)."""

from __future__ import annotations

from rich.table import Table

from pogo_audit.results import CheckResult

_VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow", "error": "bold red"}


def verdict_text(verdict: str) -> str:
    return f"[{_VERDICT_STYLE.get(verdict, 'bold')}]{verdict}[/]"


def fmt_float(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def conformance_table(res: CheckResult) -> Table:
    """One table per variant: per quantity group, values compared, % bitwise-equal, max abs / rel diff."""
    m = res.metrics
    title = f"conformance {res.subject}: {verdict_text(res.verdict)} — {res.steps_compared} steps, " \
            f"{m.get('bitwise_pct', 0.0):.2f}% bitwise-equal, rtol={m.get('rtol')}, atol={m.get('atol')}"
    table = Table(title=title, title_justify="left")
    for col in ("quantities", "compared", "bitwise-equal %", "max abs diff", "max rel diff"):
        table.add_column(col, justify="right" if col != "quantities" else "left")
    for group, g in m.get("groups", {}).items():
        pct = 100.0 * g["bitwise"] / max(g["compared"], 1)
        table.add_row(group, str(g["compared"]), f"{pct:.2f}", fmt_float(g["max_abs"]), fmt_float(g["max_rel"]))
    d = res.first_divergence
    if d is None:
        table.caption = "first step outside tolerance: none"
    else:
        table.caption = (f"first step outside tolerance: step {d.step}, {d.observable} (abs {fmt_float(d.max_abs)}, "
                         f"rel {fmt_float(d.max_rel)})")
    return table
