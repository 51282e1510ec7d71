"""Diagnosis on code we did not write: the wild corpus (``examples/wild/``) audited as a new user audits it.

For each trainer and each of its algorithms: ``pogo-audit equivalence --isolate --eval-every K --steps N`` on the
trainer as shipped (every planted defect in place); when the run reports a crash, the user fixes the defect that
crashed (the key's crash defect at the reported line, or whose crash site it is) and runs again — the runs needed
are 1 + the crashes on the way. Every run's located findings are scored against the answer key:

* **at its line**: the defect's line is the primary location of a finding (or the reported crash line);
* **further line only**: the defect's line is only among a finding's further located lines;
* **missed**: neither;
* **false alarms**: distinct primary lines at no defect line (any file: the trainer, its adapter, a library);
* **further noise**: further located lines at no defect line (listed, not a verdict).

A defect counts for the trainer when any run of any of its algorithms names it. Prints a table per trainer and, with
``--json PATH``, every run's findings.

Run: ``.venv/bin/python -m benchmarks.wild [--trainer pogo_branchy] [--jobs 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    """One equivalence run of a corpus trainer with some crash defects fixed."""

    algo: str
    fixed: tuple[str, ...]
    rc: int | None = None
    seconds: float = 0.0
    summary: str = ""
    primary: list[tuple[str, int, str]] = field(default_factory=list)  # (file name, line, message)
    further: list[tuple[str, int, str]] = field(default_factory=list)
    crashes: list[dict[str, Any]] = field(default_factory=list)  # the run-ending crash and the ones it went on after
    error: str = ""


def _name(path: str | None) -> str:
    return Path(path or "?").name


def _locations(check: dict[str, Any]) -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
    """Primary and further located lines of one equivalence result (findings, hygiene warnings, the crash)."""
    primary, further = [], []
    metrics = check.get("metrics") or {}
    for f in metrics.get("findings") or []:
        what = f"{f.get('observable')} ({f.get('kind')})"
        loc = f.get("location")
        if loc:
            primary.append((_name(loc.get("path")), int(loc.get("line") or 0), what))
        for a in f.get("also") or []:
            further.append((_name(a.get("path")), int(a.get("line") or 0), what))
    crash = metrics.get("crash")
    if crash and crash.get("frame"):
        frame = crash["frame"]
        primary.append((_name(frame.get("file")), int(frame.get("line") or 0), f"crash in {crash.get('phase')}"))
    for c in metrics.get("crashes") or []:
        loc = c.get("location")
        if loc:
            primary.append((_name(loc.get("path")), int(loc.get("line") or 0), f"crash in {c.get('phase')}"))
        raised = c.get("raised_at")
        if raised and raised != loc:
            further.append((_name(raised.get("path")), int(raised.get("line") or 0), f"crash in {c.get('phase')}"))
    return primary, further


def audit(key: dict[str, Any], run: Run, steps: int, eval_every: int, threads: int | None) -> Run:
    """One CLI run (as a user types it) with ``run.fixed`` crash defects fixed."""
    from examples.wild.corpus import run_equivalence

    factory = f"fixing_{'_'.join(run.fixed)}" if run.fixed else "factory"
    args = ["--algo", run.algo, "--candidate", f"{key['adapter']}:{factory}", "--isolate", "--steps", str(steps),
            "--eval-every", str(eval_every), "--mode", key.get("mode", "bitwise")]
    for module in key.get("glue", []):
        args += ["--glue", module]
    done = run_equivalence(args, threads)
    run.seconds, run.rc = done.seconds, done.rc
    if done.check is None:
        run.error = done.error
        return run
    check = done.check
    run.summary = check.get("summary", "")
    run.primary, run.further = _locations(check)
    metrics = check.get("metrics") or {}
    run.crashes = [c for c in [metrics.get("crash"), *(metrics.get("crashes") or [])] if c]
    return run


def _crash_defects(key: dict[str, Any], algo: str, crashes: list[dict[str, Any]], fixed: tuple[str, ...]
                   ) -> list[str]:
    """The key's crash defects a user fixes after a run that reported ``crashes``: each crash defect (not fixed
    yet) at a reported line or whose crash site one is."""
    here = set()
    for c in crashes:
        for where in (c.get("frame"), c.get("location"), c.get("raised_at")):
            if where:
                here.add((_name(where.get("file") or where.get("path")), int(where.get("line") or 0)))
    trainer, out = key["trainer"], []
    for d in key["defects"]:
        if d["class"] != "crash" or algo not in d["algos"] or d["id"] in fixed:
            continue
        site = d.get("crash_site", "")
        if (trainer, d["line"]) in here or (site.rpartition(":")[0], int(site.rpartition(":")[2] or 0)) in here:
            out.append(d["id"])
    return out


def audit_algorithm(key: dict[str, Any], algo: str, steps: int, eval_every: int, threads: int | None,
                    log: Any) -> list[Run]:
    """Runs until one reports no crash of the key (each round fixes the crash defects the run reported)."""
    runs: list[Run] = []
    fixed: tuple[str, ...] = ()
    while True:
        run = audit(key, Run(algo, fixed), steps, eval_every, threads)
        runs.append(run)
        what = run.error or run.summary
        log(f"  {key['trainer']:20s} {algo:7s} run {len(runs)} (fixed: {', '.join(fixed) or '-'}) rc={run.rc} "
            f"{run.seconds:5.1f}s  {what[:110]}")
        found = _crash_defects(key, algo, run.crashes, fixed) if not run.error else []
        if not found or len(runs) > 10:
            return runs
        fixed += tuple(found)


def score(key: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
    """Named at line / further line only / missed per defect, false alarms and noise, over ``runs``."""
    trainer = key["trainer"]
    lines = {d["line"]: d["id"] for d in key["defects"]}
    primary = {(f, n) for r in runs for f, n, _ in r.primary}
    further = {(f, n) for r in runs for f, n, _ in r.further}
    at, only_further, missed = [], [], []
    for d in key["defects"]:
        here = (trainer, d["line"])
        (at if here in primary else only_further if here in further else missed).append(d["id"])
    false = sorted({(f, n) for r in runs for f, n, _ in r.primary if f != trainer or n not in lines})
    noise = sorted({(f, n) for r in runs for f, n, _ in r.further if f != trainer or n not in lines})
    return {"defects": len(key["defects"]), "at_line": at, "further_only": only_further, "missed": missed,
            "false_alarms": [f"{f}:{n} ({', '.join(sorted({w for r in runs for g, m, w in r.primary if (g, m) == (f, n)}))})"
                             for f, n in false],
            "further_noise": [f"{f}:{n}" for f, n in noise]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.wild", description=__doc__.splitlines()[0])
    p.add_argument("--trainer", action="append", help="only this trainer stem (repeatable)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--jobs", type=int, default=1, help="algorithms audited at once (each gets cores/jobs threads)")
    p.add_argument("--json", help="write every run's findings and the scores here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from examples.wild.corpus import all_keys

    keys = all_keys()
    if args.trainer:
        keys = {k: v for k, v in keys.items() if k in {Path(t).stem for t in args.trainer}}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // args.jobs) if args.jobs > 1 else None
    jobs = [(stem, algo) for stem, key in keys.items() for algo in key["algorithms"]]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = dict(zip(jobs, pool.map(lambda j: audit_algorithm(keys[j[0]], j[1], args.steps, args.eval_every,
                                                                  threads, lambda s: print(s, flush=True)), jobs)))
    report: dict[str, Any] = {}
    print(f"\n{'trainer':20s} {'defects':>7s} {'at line':>7s} {'further':>7s} {'missed':>6s} {'false':>5s} "
          f"{'runs':>4s} {'wall s':>6s}")
    for stem, key in keys.items():
        runs = [r for algo in key["algorithms"] for r in done[(stem, algo)]]
        s = score(key, runs)
        s["runs"] = {algo: len(done[(stem, algo)]) for algo in key["algorithms"]}
        s["seconds"] = round(sum(r.seconds for r in runs), 1)
        report[stem] = {**s, "runs_detail": [vars(r) for r in runs]}
        print(f"{stem:20s} {s['defects']:7d} {len(s['at_line']):7d} {len(s['further_only']):7d} "
              f"{len(s['missed']):6d} {len(s['false_alarms']):5d} {sum(s['runs'].values()):4d} {s['seconds']:6.0f}")
    for stem, s in report.items():
        print(f"\n{stem}: at line {', '.join(s['at_line']) or '-'}; further only {', '.join(s['further_only']) or '-'}"
              f"; missed {', '.join(s['missed']) or '-'}")
        for f in s["false_alarms"]:
            print(f"  false alarm: {f}")
    total = sum(s["defects"] for s in report.values())
    named = sum(len(s["at_line"]) for s in report.values())
    print(f"\n{named}/{total} defects named at their line, "
          f"{sum(len(s['false_alarms']) for s in report.values())} false alarm(s), "
          f"{time.perf_counter() - t0:.0f} s wall")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
