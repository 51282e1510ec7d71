"""rich renderables of a bundle inspection (:class:`pogo_audit.core.inspect.Inspection`): the mismatch table, the
top-K worst entries, the step history of the diverged observable."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pogo_audit.core.bundle import SIDES
from pogo_audit.core.inspect import (
    ALSO_SHOWN,
    HISTORY_AFTER,
    HISTORY_BEFORE,
    TOPK_TABLES,
    Inspection,
    index_text,
)

def _f(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, (int, float, np.floating, np.integer)):
        x = float(x)
        if math.isnan(x):
            return "—"
        return "0" if x == 0 else f"{x:.{digits}g}"
    return str(x)


def _expected_actual(fd: dict[str, Any]) -> str:
    if fd.get("expected") is None and fd.get("actual") is None:
        return ""
    at = f" at {index_text(tuple(fd['index']))}" if isinstance(fd.get("index"), list) and fd["index"] else ""
    return f"expected {_f(fd.get('expected'), 9)}, actual {_f(fd.get('actual'), 9)}{at}; "


def render_inspection(ins: Inspection) -> list[Any]:
    """rich renderables: header panel, mismatch table, top-K tables (worst 3), history table, plots."""
    out: list[Any] = []
    fd = ins.first_divergence
    lines = [
        f"[bold]bundle[/]     {escape(str(ins.path))}",
        f"[bold]algo[/]       {escape(ins.algo)}    [bold]step[/] {ins.step}",
        f"[bold]diverged[/]   {escape(ins.observable)}: {escape(_expected_actual(fd))}"
        f"abs {_f(fd.get('max_abs'))}, rel {_f(fd.get('max_rel'))}",
        f"[bold]tolerance[/]  rtol={ins.rtol:g}, atol={ins.atol:g}",
    ]
    others = [o for o in ins.divergent_observables if o != ins.observable]
    if others:
        shown = ", ".join(others[:ALSO_SHOWN])
        more = f" … and {len(others) - ALSO_SHOWN} more" if len(others) > ALSO_SHOWN else ""
        lines.append(f"[bold]also[/]       {escape(shown)}{more}")
    for side in SIDES:
        changed, total = ins.changed_params.get(side, (0, 0))
        if total:
            lines.append(f"[bold]{side}[/] changed {changed}/{total} parameters in this step")
    if ins.diverged_earlier:
        lines.append(f"[bold red]before/ tensors already differ ({len(ins.before)}/{ins.n_before_compared}, worst "
                     f"{escape(ins.before[0].name)} max abs {_f(ins.before[0].mismatch.max_abs)}): the divergence "
                     f"happened before step {ins.step}[/]")
    else:
        lines.append(f"[green]before/ tensors bitwise equal ({ins.n_before_compared}): the step itself diverged[/]")
    out.append(Panel("\n".join(lines), title="first-divergence bundle", title_align="left", expand=False))

    if not ins.tensors:
        out.append(Text(f"every after/ and grads/ tensor pair is bitwise equal ({ins.n_compared} compared)",
                        style="green"))
    table = Table(title=f"tensors not bitwise equal: {len(ins.tensors)} of {ins.n_compared} (after/, grads/), "
                        "worst first", title_justify="left")
    table.add_column("tensor", overflow="fold")
    for col in ("mismatched", "not bitwise", "max abs @ index", "max rel @ index", "tolerance"):
        table.add_column(col, justify="right")
    for t in ins.tensors:
        m = t.mismatch
        tol = f"rtol={m.rtol:g} atol={m.atol:g}"
        if m.shape_mismatch:
            table.add_row(Text(t.name), "—", "—", Text(m.shape_mismatch), "—", tol)
            continue
        pct = 100.0 * m.n_mismatched / max(m.n_total, 1)
        style = "red" if m.n_mismatched else "yellow"
        table.add_row(Text(t.name, style=style), f"{m.n_mismatched}/{m.n_total} ({pct:.1f}%)", str(m.n_not_bitwise),
                      f"{_f(m.max_abs)} @ {index_text(m.max_abs_index)}",
                      f"{_f(m.max_rel)} @ {index_text(m.max_rel_index)}", tol)
    if ins.tensors:
        out.append(table)

    shown = [t for t in ins.tensors if t.top][:TOPK_TABLES]
    for t in shown:
        noun = "entry" if len(t.top) == 1 else "entries"
        top = Table(title=f"top {len(t.top)} {noun} of {escape(t.name)} by |diff|", title_justify="left")
        for col in ("index", "reference", "candidate", "abs diff", "rel diff"):
            top.add_column(col, justify="right")
        for e in t.top:
            top.add_row(index_text(e.index), _f(e.reference, 9), _f(e.candidate, 9), _f(e.abs_diff), _f(e.rel_diff))
        out.append(top)
    n_with_top = sum(1 for x in ins.tensors if x.top)
    if n_with_top > len(shown):
        out.append(Text(f"top-{ins.top_k} tables shown only for the {len(shown)} worst of {n_with_top} differing "
                        "tensors", style="dim"))

    out.append(_history_table(ins))

    if ins.plots:
        out.append(Text("plots:\n" + "\n".join(f"  {name}: {p}" for name, p in ins.plots.items())))
    return out


def _history_table(ins: Inspection) -> Table | Text:
    h = ins.history
    if h is None:
        return Text(f"no per-step history for {ins.observable} in the bundle")
    window = (h.steps >= ins.step - HISTORY_BEFORE) & (h.steps <= ins.step + HISTORY_AFTER)
    if h.first_diff_step is not None:
        window |= h.steps == h.first_diff_step
    first = "none" if h.first_diff_step is None else str(h.first_diff_step)
    key = f" (history key {escape(h.key)})" if h.key != h.observable else ""
    if h.observable != ins.observable:
        key += f" — no history for {escape(ins.observable)}"
    table = Table(title=f"history of {escape(h.observable)}{key}: first step with |diff| > 0: {first}",
                      title_justify="left")
    for col in ("step", "reference", "candidate", "|diff|", ""):
        table.add_column(col, justify="right" if col else "left")
    for i in np.flatnonzero(window):
        s = int(h.steps[i])
        marks = []
        if s == ins.step:
            marks.append("divergence")
        if s == h.first_diff_step:
            marks.append("first |diff| > 0")
        style = "bold red" if s == ins.step else ("yellow" if h.abs_diff[i] > 0 else None)
        table.add_row(str(s), _f(h.reference[i], 9), _f(h.candidate[i], 9), _f(h.abs_diff[i]), ", ".join(marks),
                      style=style)
    table.caption = (f"up to {HISTORY_BEFORE} steps before and {HISTORY_AFTER} after the divergence "
                     f"({h.steps.size} recorded)")
    return table
