"""The verdict of a run — finished, inconclusive or ended by a crash — its summary, metrics and the distinct findings
with the candidate lines that located them."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from checks.equivalence.compare import Comparator
from checks.equivalence.observables import finding_subject, scalars
from checks.equivalence.options import EquivalenceOptions, twin_steps
from pogo_audit.model.findings import Crash, describe, parameter_check_text
from pogo_audit.model.locations import as_location
from pogo_audit.model.protocol import LOSS_PREFIXES
from pogo_audit.model.results import ERROR, FAIL, INCONCLUSIVE, PASS, CheckResult, Divergence


@dataclass
class Judge:
    """One way of judging the candidate (a mode and its comparator) and the first divergence it saw."""

    mode: str
    comp: Comparator
    bundle_info: dict[str, Any] | None = None


@dataclass
class RunState:
    """What the lock-step run has established so far — kept when a trainer crashes, so the result shows it."""

    t0: float
    #: the processes and threads of the run (:class:`checks.equivalence.worker.ProcessPlan`)
    plan: Any = None
    judges: list[Judge] = field(default_factory=list)
    self_comp: Comparator | None = None
    stop_comp: Comparator | None = None
    fallback: bool = False
    inconclusive_step: int | None = None
    #: the scalar observables of each side at each compared step (one dict a step; series built by :meth:`history`)
    rows: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"reference": [], "candidate": []})
    steps_done: list[int] = field(default_factory=list)
    parameter_check: dict[str, Any] | None = None
    candidate_actors: int | None = None
    bundle_path: Path | None = None
    crash: Crash | None = None
    #: optimizer probes, gradient hygiene and the evaluation audit (:class:`checks.equivalence.extras.LockStepExtras`)
    extras: Any = None
    #: (group, observed entity, kind) -> the localisation of the step where that finding first showed
    located: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: steps replayed under tracing, and the sets of findings seen at them
    replays: int = 0
    signatures: set[frozenset[tuple[str, ...]]] = field(default_factory=set)
    #: the reference and its twin (:mod:`checks.equivalence.worker`), closed when the run ends
    pair: Any = None
    #: process role -> the thread counts that process reported once its trainers were built
    thread_counts: dict[str, Any] = field(default_factory=dict)
    #: what ``--isolate`` (and ``--sync-init``) set on the candidate and what it left (:class:`SyncPlan`)
    sync: Any = None
    #: the candidate crashes an ``--isolate`` run went on after: one record per crash site (:meth:`crash_site`)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    #: why no step could be replayed under tracing (None: they could)
    not_localised: str | None = None
    #: the snapshots a localisation replays from (:class:`checks.equivalence.snapshots.Snapshots`; None: the run
    #: does not localise), released when the run ends
    snapshots: Any = None

    def crash_site(self, crash: Crash) -> dict[str, Any]:
        """The record of ``crash``'s site (side, phase, exception type, file and line), made on first sight:
        ``{"crash": Crash.to_dict(), "steps": [...], "localisation": ...}``."""
        frame = crash.frame or {}
        key = (crash.side, crash.phase, crash.type, frame.get("file"), frame.get("line"))
        for record in self.crashes:
            if record["key"] == key:
                return record
        record = {"key": key, "crash": crash.to_dict(), "steps": [], "localisation": None}
        self.crashes.append(record)
        return record

    def remember(self, step: int, obs_ref: Mapping[str, Any], obs_cand: Mapping[str, Any]) -> None:
        self.steps_done.append(step)
        self.rows["reference"].append(scalars(obs_ref))
        self.rows["candidate"].append(scalars(obs_cand))

    def history(self, keep: Callable[[str], bool] = lambda name: True) -> dict[str, dict[str, list[float]]]:
        """side -> observable -> its value at every compared step so far (NaN where that step lacked it), in order
        of first appearance; only the observables ``keep`` accepts."""
        out: dict[str, dict[str, list[float]]] = {}
        for side, rows in self.rows.items():
            series: dict[str, list[float]] = {}
            for i, row in enumerate(rows):
                for name, value in row.items():
                    if name not in series:
                        if not keep(name):
                            continue
                        series[name] = [float("nan")] * len(rows)
                    series[name][i] = value
            out[side] = series
        return out

    def judge(self) -> Judge:
        """Bitwise unless the device was shown not to be bitwise reproducible for this run."""
        return self.judges[-1] if self.nondeterministic else self.judges[0]

    @property
    def nondeterministic(self) -> bool:
        return self.fallback and self.self_comp is not None and self.self_comp.first is not None


def _divergence_gap(d: Divergence) -> str:
    """"max abs 0.1, max rel 0.2", or what the divergence is when it has no magnitude ("digest differs")."""
    if d.kind:
        return d.kind
    return "digest differs" if np.isnan(d.max_abs) else f"max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}"


def _findings_text(comp: Comparator, check: Mapping[str, Any] | None) -> str:
    """The first divergence, absences and parameter-check mismatches in one clause ("" when there are none)."""
    parts = []
    if comp.first is not None:
        d = comp.first
        parts.append(f"first divergence at step {d.step} in {d.observable} ({_divergence_gap(d)})")
    for kind, entities in comp.absences().items():
        shown = ", ".join(entities[:3]) + (f" and {len(entities) - 3} more" if len(entities) > 3 else "")
        parts.append(f"{kind}: {shown}")
    if check and check["issues"]:
        parts.append(f"parameter check: {parameter_check_text(check)}")
    return "; ".join(parts)


def _own_optimizer_first(finding: Mapping[str, Any], loc: dict[str, Any]) -> dict[str, Any]:
    """An optimizer-state finding (``optim/<label>``) is located first at a learning-rate schedule difference of that
    same optimizer when the step's localisation names one (the step's first differing operation is then kept as a
    further line): a skipped schedule step changes no tensor in its step, only that optimizer's next learning rate."""
    more = loc.get("more") or []
    if loc.get("rule") == "schedule_step":  # the step's first difference is that schedule step already
        return loc
    own = next((m for m in more if finding["group"] == "optimizer" and m.get("optimizer") is not None
                and finding["observable"] == f"optim/{m['optimizer']}"), None)
    if own is None:
        return loc
    frames = loc.get("frames") or []
    first = [{"message": loc["message"], "frame": frames[0]}] if frames else []
    return {**loc, "kind": "order", "message": own["message"], "frames": [own["frame"]],
            "more": first + [m for m in more if m is not own]}


def crash_findings(run: RunState) -> list[dict[str, Any]]:
    """One finding per crash site of an ``--isolate`` run: where the step first differs from the reference's before
    the raise (the decision) when the replay found such a difference, else the line that raised; the raising line is
    kept as ``raised_at``."""
    out = []
    for record in run.crashes:
        crash = record["crash"]
        loc = record.get("localisation") or {}
        frames = loc.get("frames") or []
        raised = as_location(crash["frame"]) if crash.get("frame") else None
        decided = as_location(frames[0]) if loc.get("kind", "none") != "none" and frames else None
        steps = record["steps"]
        out.append({**crash, "steps": steps, "count": len(steps), "location": decided or raised, "raised_at": raised,
                    "localisation": {"kind": loc.get("kind"), "rule": loc.get("rule"), "message": loc.get("message")}
                    if loc else None})
    return out


def crashes_text(crashes: list[dict[str, Any]]) -> str:
    """"candidate crashed in 15 step(s) at 1 site: TypeError at f.py:154 (steps 2, 4, ...)"."""
    parts = []
    for c in crashes:
        where = c["raised_at"] or c["location"]
        at = f" at {where['path']}:{where['line']}" if where else ""
        steps = ", ".join(str(s) for s in c["steps"][:4]) + (", ..." if len(c["steps"]) > 4 else "")
        parts.append(f"{c['type']}{at} (step{'s' if len(c['steps']) > 1 else ''} {steps})")
    n = sum(c["count"] for c in crashes)
    return f"candidate crashed in {n} step(s): " + "; ".join(parts)


def located_findings(comp: Comparator, located: Mapping[tuple[str, str, str], dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """Every distinct finding with, where its first step was replayed under tracing, the located candidate line."""
    out = []
    for f in comp.distinct():
        loc = located.get((f["group"], f["observable"], f["kind"]))
        row = dict(f)
        if loc is not None:
            loc = _own_optimizer_first(f, loc)
            frames = loc.get("frames") or []
            row["location"] = as_location(frames[0]) if frames else None
            row["localisation"] = {"kind": loc.get("kind"), "rule": loc.get("rule"), "message": loc.get("message")}
            row["also"] = [{**as_location(m["frame"]), "message": m["message"]} for m in loc.get("more") or []]
        out.append(row)
    return out


def result_of(algo: str, config: Any, options: EquivalenceOptions, labels: tuple[str, str], device: str,
            run: RunState) -> CheckResult:
    """The verdict, summary and metrics of a run — finished, inconclusive or ended by a crash."""
    judge = run.judge()
    comp, mode = judge.comp, judge.mode
    comp.settle()
    rows = comp.rows(options.steps)
    why = ""
    if run.nondeterministic:
        d = run.self_comp.first
        why = (f"; tolerance mode because the reference is not bitwise reproducible on {device} (two runs differ at "
               f"step {d.step} in {d.observable})")
    findings = _findings_text(comp, run.parameter_check)
    first = comp.first or next(iter(comp.absent.values()), None)
    if run.crash is not None:
        verdict = FAIL
        c = run.crash
        if first is None:  # nothing diverged before: the crash is where the runs part (consumers need a step)
            first = Divergence(c.step if c.step is not None else 0, f"crash/{c.side}/{c.phase}", float("nan"),
                               float("nan"), comp.rtol, comp.atol, kind="crash")
        context = ""
        if c.phase == "load_parameters" and run.parameter_check and run.parameter_check["issues"]:
            context = f" (parameter check: {parameter_check_text(run.parameter_check)})"
        compared = f"{max(run.steps_done)} step(s) compared" if run.steps_done else "nothing compared"
        summary = f"{c.line()}{context}; before the crash: {compared}" + (f", {findings}" if findings else
                                                                          ", no divergence")
    elif run.inconclusive_step is not None:
        verdict = INCONCLUSIVE
        d = run.stop_comp.first
        beyond = " beyond the tolerance" if run.stop_comp is not run.self_comp else ""
        summary = (f"inconclusive: reference is nondeterministic (two runs differ{beyond} at step {d.step} in "
                   f"{d.observable})")
        first = d
    elif findings or run.crashes:
        verdict = FAIL
        crashed = crashes_text(crash_findings(run)) if run.crashes else ""
        summary = "not equivalent: " + "; ".join(p for p in (crashed, findings) if p) + why
    else:
        verdict = PASS
        summary = f"{labels[1]} is equivalent to {labels[0]} over {options.steps} steps ({mode}){why}"
    if not options.self_check:
        self_check_state = "off"
    elif run.inconclusive_step is not None:
        self_check_state = "nondeterministic"
    elif run.crash is not None and not run.steps_done:
        self_check_state = "not run (crash)"
    else:
        self_check_state = "pass (within tolerance, not bitwise)" if run.nondeterministic else "pass"
    history = run.history(lambda name: name.startswith(LOSS_PREFIXES))
    metrics: dict[str, Any] = {
        "mode": mode,
        "rtol": comp.rtol,
        "atol": comp.atol,
        "actors": getattr(config, "num_actors", None),
        "candidate_actors": run.candidate_actors,
        "seed": options.seed,
        "bundle": str(run.bundle_path) if run.bundle_path else None,
        "reference": labels[0],
        "candidate": labels[1],
        "self_check": self_check_state,
        "self_check_steps": 0 if not options.self_check else min(twin_steps(options, device) or options.steps,
                                                                  options.steps),
        "parameter_check": run.parameter_check,
        "absent": comp.absences(),
        "ignored": {"patterns": list(options.ignore), "observables": sorted(comp.ignored)},
        "history": {"steps": run.steps_done, **{f"{side}/{k}": v for side in history for k, v in
                                                 history[side].items()}},
    }
    if run.plan is not None:
        metrics["threads"] = {"budget": run.plan.budget, "processes": run.plan.processes,
                              "per_process": run.plan.threads,
                              "twin_in_reference_worker": run.plan.twin_in_reference_worker,
                              "reported": run.thread_counts}
    if run.crash is not None:
        metrics["crash"] = run.crash.to_dict()
    if run.sync is not None and (options.isolate or options.sync_init):
        metrics["sync"] = run.sync.as_dict()
    if run.crashes:
        metrics["crashes"] = crash_findings(run)
        metrics["not_compared"] = sorted(s for c in run.crashes for s in c["steps"])
    if run.not_localised:
        metrics["not_localised"] = run.not_localised
    if options.isolate or run.located:
        distinct = located_findings(comp, run.located)
        metrics["isolate"] = options.isolate
        metrics["findings"] = distinct
        located = [f for f in distinct if f.get("location")]
        if located:
            metrics["candidate_location"] = located[0]["location"]
        if verdict == FAIL and distinct:
            lines = sorted({f"{loc['path']}:{loc['line']}" for f in located for loc in [f["location"], *f["also"]]})
            summary += (f"; {len(distinct)} distinct finding(s)" +
                        (f", located at {', '.join(lines[:6])}" if lines else ""))
    result = CheckResult(
        check="equivalence",
        subject=algo,
        verdict=verdict,
        steps_compared=max(run.steps_done) if run.steps_done else 0,
        summary=summary,
        first_divergence=first if verdict != PASS else None,
        metrics=metrics,
        details=rows,
        seconds=time.perf_counter() - run.t0,
    )
    result = run.extras.finish(result) if run.extras is not None else result
    for warning in result.metrics.get("warnings") or []:  # a hygiene warning localised like a finding
        loc = run.located.get(("grad leak", finding_subject(warning["observable"]), "warning"))
        if loc is not None and loc.get("frames"):
            warning["location"] = as_location(loc["frames"][0])
            warning["localisation"] = {"kind": loc.get("kind"), "rule": loc.get("rule"), "message": loc.get("message")}
    return result


def harness_error(algo: str, exc: Exception, labels: tuple[str, str], mode: str, seconds: float) -> CheckResult:
    """Verdict ``error``: the run failed outside any trainer call; says what raised where (never a traceback)."""
    info = describe(exc, "harness", "run", None)
    return CheckResult(check="equivalence", subject=algo, verdict=ERROR,
                       summary=f"the equivalence harness raised {info.type}: {info.message} at {info.location()}",
                       metrics={"reference": labels[0], "candidate": labels[1], "mode": mode,
                                "error": info.to_dict()},
                       seconds=seconds)
