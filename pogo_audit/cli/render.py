"""rich renderables built from the results model (data → renderable; the CLI prints them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from checks.equivalence.observables import BY_NAME, OBSERVABLE_GROUPS
from pogo_audit.model.findings import Crash
from pogo_audit.model.results import ERROR, FAIL, CheckResult

_VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow", "error": "bold red",
                 "warning": "bold yellow"}


def verdict_text(verdict: str) -> str:
    return f"[{_VERDICT_STYLE.get(verdict, 'bold')}]{verdict}[/]"


def fmt_float(x: float) -> str:
    if x != x:  # NaN: a digest mismatch has no magnitude
        return "—"
    return "0" if x == 0 else f"{x:.3g}"


def conformance_table(res: CheckResult) -> Group:
    """One block per variant and precision: a headline with the rule, per quantity group the values compared, %
    bitwise-equal, max abs / rel diff (rel on the rule's scale), then both CPU fingerprints, the first step outside
    the enforced bound and, for a drift report, the first step past the bound at all."""
    m = res.metrics
    head = (f"conformance {escape(res.subject)}: {verdict_text(res.verdict)} — {res.steps_compared} steps, "
            f"{m.get('bitwise_pct', 0.0):.2f}% bitwise-equal, mode {m.get('mode')} ({escape(str(m.get('tolerance')))})")
    table = Table()
    for col in ("quantities", "compared", "bitwise-equal %", "max abs diff", "max rel diff"):
        table.add_column(col, justify="right" if col != "quantities" else "left")
    for group, g in m.get("groups", {}).items():
        pct = 100.0 * g["bitwise"] / max(g["compared"], 1)
        table.add_row(group, str(g["compared"]), f"{pct:.2f}", fmt_float(g["max_abs"]), fmt_float(g["max_rel"]))
    d = res.first_divergence
    lines = [f"  this machine: {escape(str(m.get('fingerprint_here_text', '?')))}",
             f"  recording:    {escape(str(m.get('fingerprint_recorded_text', '?')))}"
             f" — {'same fingerprint' if m.get('fingerprint_match') else 'differs: '}"
             f"{escape('; '.join(m.get('fingerprint_differences') or []))}"]
    if d is None:
        lines.append("  first step outside tolerance: none")
    else:
        lines.append(f"  first step outside tolerance: step {d.step}, {escape(d.observable)} "
                     f"(abs {fmt_float(d.max_abs)}, rel {fmt_float(d.max_rel)})")
    if m.get("mode") == "drift":
        past = m.get("first_step_past_bound")
        lines.append("  past the bound at any step: " + ("never" if past is None else
                     f"from step {past} ({escape(str(m.get('first_observable_past_bound')))}), reported only"))
        lines.append(f"  not a verdict on the hyperparameters beyond step {m.get('enforced_steps')}: the float64 "
                     f"replay of {escape(str(m.get('variant')))} is (pogo-audit conformance --precision float64)")
    if "seeds" in m:
        seeds, threads = m["seeds"], m.get("threads")
        lines.append(f"  protocol: construction seed {seeds.get('construction')}, training seed "
                     f"{seeds.get('training')}, batches of {m.get('batch_size')} (batch_idx rows)"
                     + (f", {threads} torch thread(s)" if threads is not None else ""))
    lines.extend(hyperparameter_lines(m.get("hyperparameters") or {}))
    return Group(head, table, *lines)


def hyperparameter_lines(hp: Mapping[str, Any]) -> list[str]:
    """Which protocol was replayed: the recorded values other than CORL's defaults, and where ``trainer_kwargs``
    overruled ``train_config``."""
    if not hp:
        return []
    differs = hp.get("differs_from_corl_defaults") or []
    lines = ["  differs from CORL defaults: " + (escape("; ".join(differs)) if differs else "nothing")]
    lines.extend(f"  note: {escape(n)}" for n in hp.get("notes") or [])
    return lines


def actors_text(m: Mapping[str, Any]) -> str:
    """"3 actors configured, candidate exposes 3" — the configured count is ours, the candidate's is what its
    canonical parameter names show (unknown when it crashed before exposing them)."""
    configured = m.get("actors")
    text = f"{configured if configured is not None else '?'} actors configured"
    if "candidate_actors" in m:
        seen = m.get("candidate_actors")
        text += f", candidate exposes {seen}" if seen is not None else ", candidate's actors unknown"
    return text


def threads_text(t: Mapping[str, Any] | None) -> str:
    """", 2 processes × 1 thread (budget 2)" — the threads every trainer ran with (part of the bitwise protocol)."""
    if not t:
        return ""
    procs = t["processes"]
    return (f", {procs} process{'es' if procs > 1 else ''} × {t['per_process']} thread"
            f"{'s' if t['per_process'] > 1 else ''} (budget {t['budget']})")


def _row_first(row: Mapping[str, Any]) -> str:
    """The group's first divergence, else its first absence ("—" when it has neither)."""
    if row.get("first_divergence_step") is not None:
        return f"step {row['first_divergence_step']}: {row['observable']}"
    absent = row.get("absent") or {}
    if absent:
        name, kind = next(iter(absent.items()))
        more = f" (+{len(absent) - 1} more)" if len(absent) > 1 else ""
        return f"{name}: {kind}{more}"
    return "—"


def _row_verdict(row: Mapping[str, Any]) -> str:
    """fail/pass, or the absence kind(s) when the group only lacks observables (their own verdict)."""
    absent = row.get("absent") or {}
    if row["verdict"] == FAIL and row.get("first_divergence_step") is None and absent:
        return f"[bold red]{escape(', '.join(dict.fromkeys(absent.values())))}[/]"
    return verdict_text(row["verdict"])


def _row_gap(row: Mapping[str, Any], key: str) -> str:
    if row.get("difference"):
        return str(row["difference"])
    if row.get("first_divergence_step") is None and row.get("absent"):
        return "—"
    return fmt_float(row[key])


def equivalence_table(res: CheckResult, config: object | None = None) -> Table:
    """Observable group, steps compared, verdict, first divergence step, max abs / rel diff."""
    m = res.metrics
    types = ""
    if config is not None and getattr(config, "actor_configs", None):
        types = escape(" [" + ", ".join(a.type for a in config.actor_configs) + "]")
    crash = Crash(**m["crash"]) if m.get("crash") else None
    # an evaluation crash does not stop training: the run went on to its last step
    crashed = "" if crash is None else (f"; {crash.side} evaluate crashed at step {crash.step}"
                                        if crash.phase == "evaluate" else f" then crashed {crash.where()}")
    title = (f"equivalence {res.subject}: {verdict_text(res.verdict)} — {res.steps_compared} steps{crashed}, "
             f"{m.get('mode', '?')}, {actors_text(m)}{types}, self-check {m.get('self_check', '?')}"
             f"{threads_text(m.get('threads'))}")
    table = Table(title=title, title_justify="left")
    for col in ("observable group", "observables", "steps", "verdict", "first divergence", "max abs diff",
                "max rel diff"):
        table.add_column(col, justify="left" if col in ("observable group", "first divergence") else "right")
    for row in res.details:
        table.add_row(row["group"], str(row["observables"]), str(row["steps_compared"]), _row_verdict(row),
                      escape(_row_first(row)), _row_gap(row, "max_abs"), _row_gap(row, "max_rel"))
    notes = [res.summary] if res.verdict not in ("pass", "fail") else []
    notes += [f"warning: {w['message']}" for w in m.get("warnings") or []]
    if notes:
        table.caption = escape("\n".join(notes))
    return table


def crash_lines(res: CheckResult) -> list[str]:
    """The crash of a result: side, phase and step, exception, and the trainer's frame with its source line."""
    c = res.metrics.get("crash")
    if not c:
        return []
    where = Crash(**c).where()
    out = [f"[bold red]{escape(c['side'])} crashed {escape(where)}[/]: {escape(c['type'])}: {escape(c['message'])}"]
    f = c.get("frame")
    if f:
        out.append(f"  at {escape(f['file'])}:{f['line']} in {escape(f['function'])}()")
        if f.get("code"):
            out.append(f"    {escape(f['code'])}")
    else:
        out.append("  no frame in the trainer's own code (the exception came from a library or the harness)")
    return out


def parameter_check_table(res: CheckResult) -> Table | None:
    """Missing, extra and shape-mismatched canonical parameters (compared roles), or None when all match."""
    check = res.metrics.get("parameter_check") or {}
    if not check.get("issues"):
        return None
    table = Table(title=f"parameter check {escape(res.subject)}: {check['issues']} mismatch(es) between reference "
                        f"and candidate names", title_justify="left")
    for col in ("parameter", "finding", "reference shape", "candidate shape"):
        table.add_column(col)
    for name in check.get("missing", []):
        table.add_row(escape(name), "[bold red]missing on candidate[/]", "present", "—")
    for name in check.get("extra", []):
        table.add_row(escape(name), "[bold red]extra on candidate[/]", "—", "present")
    for d in check.get("shape", []):
        table.add_row(escape(d["name"]), "[bold red]shape differs[/]", str(d["reference"]), str(d["candidate"]))
    return table


def sync_lines(res: CheckResult) -> list[str]:
    """What ``--isolate``/``--sync-init`` left as the candidate has it (by name, with why), once per run."""
    sync = res.metrics.get("sync") or {}
    left = {**(sync.get("left") or {}), **(sync.get("optimizer_left") or {})}
    if not left:
        return []
    out = [f"not synchronised from the reference ({len(left)}; {sync.get('synced', 0)} tensor(s) were): the candidate "
           "keeps its own value"]
    out += [f"  {escape(name)}: {escape(why)}" for name, why in list(left.items())[:8]]
    if len(left) > 8:
        out.append(f"  and {len(left) - 8} more (JSON: metrics.sync)")
    return out


def ignored_line(res: CheckResult) -> list[str]:
    ignored = res.metrics.get("ignored") or {}
    if not ignored.get("patterns"):
        return []
    names = ignored.get("observables") or []
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return [f"ignored ({escape(', '.join(ignored['patterns']))}): {escape(shown) if names else 'nothing matched'}"]


def equivalence_view(res: CheckResult) -> list[Any]:
    """The group table, then the parameter check, the crash and what was ignored (each only when there is one)."""
    extra = parameter_check_table(res)
    return [equivalence_table(res), *([extra] if extra is not None else []), *sync_lines(res), *crash_lines(res),
            *ignored_line(res)]


def kill_matrix_table(results: list[CheckResult]) -> Table:
    """Mutant × observable group → first step of detection (★ marks the expected group)."""
    groups = [g.name for g in OBSERVABLE_GROUPS]
    killed = sum(1 for r in results if r.metrics.get("killed"))
    table = Table(title=f"mutation catalog: {killed}/{len(results)} killed "
                        f"({100.0 * killed / max(len(results), 1):.0f}%) — cell = first step detected, ★ = expected",
                  title_justify="left")
    table.add_column("mutant")
    table.add_column("algo")
    for g in groups:
        table.add_column(BY_NAME[g].abbrev, justify="right")
    table.add_column("caught by")
    table.add_column("verdict")
    for r in results:
        steps = {d["group"]: d["step"] for d in r.details}
        cells = []
        for g in groups:
            s = steps.get(g)
            mark = "★" if g == r.metrics.get("expected") else ""
            cells.append(f"{mark}{'·' if s is None else s}")
        caught = r.metrics.get("caught_by") or "—"
        table.add_row(r.subject, r.metrics.get("algo", ""), *cells, caught,
                      verdict_text("pass" if r.metrics.get("killed") else "fail").replace("pass", "killed")
                      .replace("fail", "SURVIVED"))
    return table


def _fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}x"


def _fmt_seconds(x: float | None) -> str:
    return "—" if x is None else f"{x * 1e3:.3g} ms"


def _per_call(count: Mapping[str, Any]) -> str:
    if count["transfers"] is None:
        return "≥1"
    return "—" if count["per_call"] is None else f"{count['per_call']:.3g}"


def _jax_caption(m: Mapping[str, Any]) -> str:
    h2d = ", ".join(f"{k} {_per_call(v)}/call" for k, v in m["host_to_device_transfers"].items()) or "—"
    r, s = m["ratios"], m["seconds_per_update"]
    gain = f", un-jitted / jitted {_fmt_ratio(r['unjitted_over_jitted'])}" if m.get("jitted") else ""
    timing = m.get("timing_note") or (
        f"per update: step loop {_fmt_seconds(s['step_loop'])}, epoch {_fmt_seconds(s['epoch'])}, un-jitted "
        f"{_fmt_seconds(s['unjitted_step'])} · python loop / scan {_fmt_ratio(r['python_loop_over_scan'])}{gain}")
    extra = []
    if m.get("host_memory"):
        mem = m["host_memory"]
        extra.append(f"host memory {mem['bytes_per_call']:.0f} B/{m['loop']} ({mem['low']:.0f}…{mem['high']:.0f})")
    if m.get("jit_gain") and m["jit_gain"].get("ratio"):
        extra.append(f"jit gain {_fmt_ratio(m['jit_gain']['ratio'])} ({m['jit_gain']['method']})")
    if m.get("evaluation"):
        extra.append(f"compiles per evaluate() {m['evaluation']['compiles_per_evaluation']}")
    return " · ".join([f"host→device transfers: {h2d}", timing, *extra])


def jax_profile_tables(result: CheckResult) -> list[Any]:
    """One JAX profile: function table (transfers and timing ratios in its caption), then the findings table."""
    from checks.jax_profile import explanations_gist  # imports jax: only when a profile is rendered

    m = result.metrics
    out: list[Any] = []
    if result.verdict == ERROR or not m:
        out.append(f"jax-profile {escape(result.subject)}: {verdict_text(result.verdict)} — {escape(result.summary)}")
        return out
    steady = f"{m['steps']} steps" + (f" / {m['epochs']} epochs of {m['updates_per_epoch']} updates"
                                      if m["epochs"] else "")
    title = (f"jax-profile {escape(result.subject)}: {verdict_text(result.verdict)} — "
             f"{'jitted' if m['jitted'] else '[bold red]not jitted[/]'} step, training loop: {m['loop']}, "
             f"warm-up {m['warmup']}, steady {steady}, backend {m.get('backend', '?')}")
    table = Table(title=title, title_justify="left")
    for col in ("jitted function", "compiles", "traces", "after warm-up", "cache-miss explanation (after warm-up)"):
        table.add_column(col, justify="right" if col in ("compiles", "traces", "after warm-up") else "left")
    for row in m["functions"]:
        gist = explanations_gist(row["cache_miss_explanations"])
        after = row["compiles_after_warmup"]
        table.add_row(escape(row["name"]), str(row["compiles"]), str(row["traces"]),
                      f"[bold red]{after}[/]" if after else "0", escape(gist) or "—")
    table.caption = escape(_jax_caption(m))
    table.caption_justify = "left"
    out.append(table)
    if result.details:
        findings = Table(title=f"findings ({sum(f['severity'] == FAIL for f in result.details)} failing)",
                         title_justify="left")
        for col in ("severity", "finding", "where", "inside"):
            findings.add_column(col)
        for f in result.details:
            sev = "[bold red]fail[/]" if f["severity"] == FAIL else "[yellow]note[/]"
            where = f"{f['path']}:{f['line']}" if f.get("path") else "—"
            findings.add_row(sev, escape(f["message"]), escape(where), f.get("inside", "—"))
        out.append(findings)
    return out


# ------------------------------------------------------------------------------------------- views per check


def fuzz_table(results: list[CheckResult]) -> Table:
    """One row per property: target, examples run, findings, seconds, verdict."""
    seeds = sorted({str(r.metrics.get("seed")) for r in results})
    table = Table(title=f"fuzz: {len(results)} properties, seed {', '.join(seeds)}", title_justify="left")
    for col in ("property", "target", "examples", "findings", "seconds", "verdict"):
        table.add_column(col)
    for r in results:
        m = r.metrics
        table.add_row(r.subject, m["target"], str(m["examples_run"]), str(len(m["findings"])), f"{r.seconds:.1f}",
                      "[green]pass[/]" if r.passed else "[bold red]fail[/]")
    return table


def fuzz_findings(res: CheckResult) -> list[str]:
    """Each finding of a failing property: exception, shrunk example, traceback tail."""
    out = []
    for f in res.metrics.get("findings", []):
        out.append(f"[bold red]{escape(f['property'])}[/]: {escape(f['exception'])}")
        out.append(f"  minimal example: {escape(f['minimal_example'] or '?')}")
        out.extend(f"  {escape(line)}" for line in f["traceback_tail"].splitlines())
    return out


def equivalence_failure(res: CheckResult) -> list[str]:
    """The failing algorithm's summary and, when one was written, its bundle with the command that explains it."""
    out = [f"[bold red]{escape(res.subject)}[/]: {escape(res.summary)}"]
    for f in res.metrics.get("findings") or []:
        loc = f.get("location")
        where = f" — {loc['path']}:{loc['line']} `{loc['code']}`" if loc else ""
        out.append(f"  • {escape(f['observable'])} ({escape(f['kind'])}) from step {f['first_step']}, "
                   f"{f['steps']} step(s){escape(where)}")
        if f.get("localisation") and loc:
            out.append(f"    {escape(f['localisation']['message'])}")
    if res.metrics.get("bundle"):
        out.append(f"  bundle: {res.metrics['bundle']} (pogo-audit inspect {res.metrics['bundle']})")
    return out


def first_line_failure(res: CheckResult) -> list[str]:
    first = res.summary.splitlines()[0] if res.summary else res.verdict
    return [f"[bold red]{escape(res.subject)}[/]: {escape(first)}"]


def results_table(results: list[CheckResult]) -> Table:
    """The generic view of any check: subject, verdict, steps, summary."""
    table = Table(title=f"{results[0].check if results else 'check'}: {len(results)} result(s)", title_justify="left")
    for col in ("subject", "verdict", "steps", "summary"):
        table.add_column(col)
    for r in results:
        table.add_row(escape(r.subject), verdict_text(r.verdict), str(r.steps_compared), escape(r.summary))
    return table


def matrix_table(results: list[CheckResult]) -> Table:
    """One row per grid cell: its axes, the verdict, where it first diverged and how long it took."""
    table = Table(title=f"matrix: {len(results)} cells", title_justify="left")
    for col in ("cell", "algo", "seed", "actor types", "w2", "overrides", "verdict", "first divergence", "seconds"):
        table.add_column(col)
    for r in results:
        cell = r.metrics["cell"]
        d = r.first_divergence
        table.add_row(cell["key"], cell["algo"], str(cell["seed"]), escape(",".join(cell["actor_types"]) or "default"),
                      cell["w2_method"] or "default", escape(" ".join(cell["sets"]) or "—"), verdict_text(r.verdict),
                      escape(f"step {d.step}: {d.observable}") if d is not None and not r.passed else "—",
                      f"{r.seconds:.1f}")
    return table


@dataclass(frozen=True)
class View:
    """How the CLI shows one check: renderables for each result as it arrives, for all results at the end, and
    detail lines for each result that did not pass."""

    each: Callable[[CheckResult], list[Any]] | None = None
    summary: Callable[[list[CheckResult]], list[Any]] | None = None
    failure: Callable[[CheckResult], list[Any]] | None = None


#: check name (:data:`checks.registry.CHECKS`) → its view; a check without one gets :func:`results_table`
#: the views the check registry names (``CheckSpec.view``)
CONFORMANCE_VIEW = View(each=lambda r: [conformance_table(r)])
EQUIVALENCE_VIEW = View(each=equivalence_view, failure=equivalence_failure)
MUTANTS_VIEW = View(summary=lambda rs: [kill_matrix_table(rs)] if all(r.check == "mutants" for r in rs)
                    else [results_table(rs)], failure=first_line_failure)
FUZZ_VIEW = View(summary=lambda rs: [fuzz_table(rs)], failure=fuzz_findings)
JAX_PROFILE_VIEW = View(each=jax_profile_tables, failure=first_line_failure)
MATRIX_VIEW = View(summary=lambda rs: [matrix_table(rs)], failure=first_line_failure)
DEFAULT_VIEW = View(summary=lambda rs: [results_table(rs)], failure=first_line_failure)
