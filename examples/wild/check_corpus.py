"""Verify the wild corpus end to end:  ``.venv/bin/python -m examples.wild.check_corpus [options]``

1. every answer-key line matches its trainer file (``corpus.check_key``);
2. every *clean* trainer (all defects fixed) passes plain ``pogo-audit equivalence`` for each of its algorithms
   (``--steps`` 30, ``--eval-every`` 10, the key's mode; ``--isolate`` also runs each clean trainer with ``--isolate``);
3. every defect *alone* (all others fixed, ``--candidate <adapter>:only_<ID>``) is detected by plain equivalence
   (exit 1) for each algorithm it lists, and every glob of its ``expected_observables`` matches an observable the
   run reported (first divergence per observable group, absences, ``crash/candidate/<phase>``,
   ``parameter_check/<kind>/<name>``);
4. the trainer *as shipped* is run per algorithm: the crash it stops at must be one of the key's crash defects, and
   the key's ``hidden_by`` / ``hidden_by_algo`` must be what that crash implies (a factory crash hides everything
   else of that algorithm; a crash in step N hides every defect whose own first divergence is at step >= N);
5. prints a table (``--json PATH`` writes every run's summary).

Each audit is a CLI subprocess (``python -m pogo_audit.cli equivalence ... --json``), from the repository root.
Exit 0 when everything holds, 1 otherwise. ``--fast`` runs the per-defect and as-shipped audits for 12 steps
without the self-check twin (every defect of the corpus shows by step 10; the clean runs keep the full protocol).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples.wild.corpus import all_keys, check_key, run_equivalence

REPO = Path(__file__).resolve().parents[2]
CRASH = "crash"


@dataclass
class Audit:
    """One ``pogo-audit equivalence`` run of a corpus trainer."""

    trainer: str
    algo: str
    factory: str  # attribute of the adapter: factory, clean_factory, only_<ID>
    isolate: bool = False
    rc: int | None = None
    verdict: str = "?"
    summary: str = ""
    first_step: int | None = None
    first_observable: str | None = None
    observed: list[str] = field(default_factory=list)
    crash: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.trainer}:{self.factory} [{self.algo}{' --isolate' if self.isolate else ''}]"


def _observed(check: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None]:
    names: set[str] = set()
    first = check.get("first_divergence") or {}
    if first.get("observable"):
        names.add(first["observable"])
    for row in check.get("details") or []:
        if row.get("verdict") in ("fail", "warning") and row.get("observable"):
            names.add(row["observable"])
        names.update((row.get("absent") or {}).keys())
    metrics = check.get("metrics") or {}
    crash = metrics.get("crash")
    if crash:
        names.add(f"crash/{crash.get('side')}/{crash.get('phase')}")
    pc = metrics.get("parameter_check") or {}
    for kind in ("missing", "extra"):
        names.update(f"parameter_check/{kind}/{n}" for n in pc.get(kind) or [])
    names.update(f"parameter_check/shape/{s['name']}" for s in pc.get("shape") or [] if isinstance(s, dict))
    return sorted(names), crash


def run_audit(a: Audit, adapter: str, mode: str, steps: int, eval_every: int, self_check: bool,
              threads: int | None) -> Audit:
    args = ["--algo", a.algo, "--candidate", f"{adapter}:{a.factory}", "--steps", str(steps),
            "--eval-every", str(eval_every), "--mode", mode]
    if a.isolate:
        args.append("--isolate")
    if not self_check:
        args.append("--no-self-check")
    done = run_equivalence(args, threads)
    a.seconds, a.rc = done.seconds, done.rc
    if done.check is None:
        a.error = done.error
        return a
    check = done.check
    a.verdict, a.summary = check["verdict"], check.get("summary", "")
    first = check.get("first_divergence") or {}
    a.first_step, a.first_observable = first.get("step"), first.get("observable")
    a.observed, a.crash = _observed(check)
    return a


def _crash_site(crash: dict[str, Any] | None) -> tuple[str, str, int] | None:
    if not crash:
        return None
    frame = crash.get("frame") or {}
    return crash.get("type", ""), frame.get("file", ""), int(frame.get("line") or 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.wild.check_corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--trainer", action="append", help="only this trainer stem (repeatable)")
    p.add_argument("--defect", action="append", help="only these defect ids in step 3 (repeatable)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--fast", action="store_true", help="per-defect and as-shipped audits: 12 steps, no self-check")
    p.add_argument("--isolate", action="store_true", help="also run every clean trainer with --isolate")
    p.add_argument("--skip-clean", action="store_true")
    p.add_argument("--skip-defects", action="store_true")
    p.add_argument("--skip-shipped", action="store_true")
    p.add_argument("--keys-only", action="store_true", help="only step 1")
    p.add_argument("--jobs", type=int, default=1, help="audits run at once (each gets cores/jobs threads)")
    p.add_argument("--json", help="write every audit's summary here")
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    keys = all_keys()
    if args.trainer:
        keys = {k: v for k, v in keys.items() if k in {Path(t).stem for t in args.trainer}}
    problems: list[str] = []

    # 1. answer keys against the files
    for stem, key in keys.items():
        problems += [f"{stem}: {msg}" for msg in check_key(stem)]
    for stem, key in keys.items():
        for d in key["defects"]:
            per = d.get("hidden_by_algo")
            if per is None:
                continue
            hiders = [per.get(algo) for algo in d["algos"]]
            want = hiders[0] if all(h is not None for h in hiders) else None
            if set(per) != set(d["algos"]) or d["hidden_by"] != want:
                problems.append(f"{stem}: {d['id']}: hidden_by must be the first algorithm's hider when every "
                                f"algorithm's run hides it, else null (hidden_by_algo {per}, hidden_by {d['hidden_by']})")
    n_defects = sum(len(k["defects"]) for k in keys.values())
    print(f"answer keys: {len(keys)} trainers, {n_defects} defects, "
          f"{'every line matches' if not problems else f'{len(problems)} problem(s)'}")
    if problems or args.keys_only:
        for msg in problems:
            print("  KEY MISMATCH", msg)
        return 1 if problems else 0

    # 2.-4. audits
    audits: list[tuple[str, Audit]] = []  # (stage, audit)
    for stem, key in keys.items():
        for algo in key["algorithms"]:
            if not args.skip_clean:
                audits.append(("clean", Audit(stem, algo, "clean_factory")))
                if args.isolate:
                    audits.append(("clean", Audit(stem, algo, "clean_factory", isolate=True)))
            if not args.skip_shipped:
                audits.append(("shipped", Audit(stem, algo, "factory")))
        if not args.skip_defects:
            for d in key["defects"]:
                if args.defect and d["id"] not in args.defect:
                    continue
                for algo in d["algos"]:
                    audits.append(("defect", Audit(stem, algo, f"only_{d['id']}")))

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // args.jobs) if args.jobs > 1 else None
    fast_steps = 12

    def go(item: tuple[str, Audit]) -> tuple[str, Audit]:
        stage, a = item
        key = keys[a.trainer]
        fast = args.fast and stage != "clean"
        steps = fast_steps if fast else args.steps
        run_audit(a, key["adapter"], key.get("mode", "bitwise"), steps, args.eval_every, not fast, threads)
        status = a.verdict if not a.error else f"ERROR {a.error}"
        print(f"  [{stage:7s}] {a.label:52s} {status:5s} {a.seconds:6.1f}s  "
              f"{'' if a.first_step is None else f'step {a.first_step}: {a.first_observable}'}", flush=True)
        return item

    print(f"running {len(audits)} audits ({'--fast, ' if args.fast else ''}{args.jobs} at a time)", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(go, audits))

    # ---- judge
    clean = [a for s, a in done if s == "clean"]
    shipped = {(a.trainer, a.algo): a for s, a in done if s == "shipped"}
    alone = {(a.trainer, a.factory[len("only_"):], a.algo): a for s, a in done if s == "defect"}
    for a in clean:
        if a.error or a.verdict != "pass":
            problems.append(f"clean {a.label}: {a.verdict} {a.error or a.summary}")
    rows = []
    for stem, key in keys.items():
        crash_defects = {d["id"]: d for d in key["defects"] if d["class"] == CRASH}
        for d in key["defects"]:
            if (stem, d["id"], d["algos"][0]) not in alone:
                continue
            for algo in d["algos"]:
                a = alone[(stem, d["id"], algo)]
                detected = not a.error and a.verdict == "fail" and a.rc == 1
                if not detected:
                    problems.append(f"{d['id']} ({stem}, {algo}) NOT DETECTED: {a.verdict} rc={a.rc} {a.error}")
                missing = [g for g in d.get("expected_observables", []) if not fnmatch.filter(a.observed, g)]
                if missing:
                    problems.append(f"{d['id']} ({algo}): expected observable(s) {missing} not reported; "
                                    f"reported: {a.observed[:12]}")
                if "first_step" in d and detected and a.first_step != d["first_step"]:
                    problems.append(f"{d['id']} ({algo}): first divergence at step {a.first_step}, "
                                    f"the key says {d['first_step']}")
                if "crash_site" in d:
                    frame = (a.crash or {}).get("frame") or {}
                    site = f"{Path(frame.get('file', '?')).name}:{frame.get('line')}"
                    if not a.crash or site != d["crash_site"] or a.crash.get("phase") != d.get("crash_phase"):
                        problems.append(f"{d['id']} ({algo}): the key says a crash in {d.get('crash_phase')} at "
                                        f"{d['crash_site']}, the run reported "
                                        f"{a.crash and a.crash.get('phase')} at {site if a.crash else None}")
                rows.append((stem, d, algo, a, detected, not missing))
        # 4. hiding, from the as-shipped runs
        for algo in key["algorithms"]:
            s = shipped.get((stem, algo))
            if s is None:
                continue
            site = _crash_site(s.crash)
            hider = None
            if site:
                matches = [cid for cid, cd in crash_defects.items() if algo in cd["algos"]
                           and (stem, cid, algo) in alone and _crash_site(alone[(stem, cid, algo)].crash) == site]
                if s.crash.get("phase") == "evaluate":
                    site = None
                elif len(matches) != 1:
                    problems.append(f"{stem} [{algo}] as shipped crashes at {site} ({s.crash.get('phase')}), "
                                    f"which is no single crash defect of the key (matches: {matches})")
                else:
                    hider = matches[0]
            for d in key["defects"]:
                if algo not in d["algos"] or d["id"] == hider or (stem, d["id"], algo) not in alone:
                    continue
                first = alone[(stem, d["id"], algo)].first_step
                hidden = hider is not None and (s.crash.get("phase") == "factory"
                                                or (first is not None and first >= int(s.crash.get("step") or 0)))
                expected = (d.get("hidden_by_algo") or {}).get(algo, d.get("hidden_by"))
                if (hider if hidden else None) != expected:
                    where = "" if not s.crash else f"{s.crash.get('phase')} {s.crash.get('step') or ''}".strip()
                    problems.append(f"{d['id']} [{algo}]: the key says hidden_by {expected}, the as-shipped run "
                                    f"implies {hider if hidden else None} (it crashes in {where or 'nothing'}, the "
                                    f"defect alone first diverges at step {first})")

    # ---- report
    print()
    by_trainer: dict[str, dict[str, str]] = {}
    for a in clean:
        by_trainer.setdefault(a.trainer, {})[a.algo + (" --isolate" if a.isolate else "")] = \
            "pass" if a.verdict == "pass" and not a.error else f"FAIL ({a.verdict})"
    if by_trainer:
        print("clean trainers (every defect fixed)")
        for stem, res in by_trainer.items():
            print(f"  {stem:18s} " + "  ".join(f"{algo}: {v}" for algo, v in res.items()))
    if shipped:
        print("as shipped")
        for (stem, algo), a in shipped.items():
            what = (f"crash in {a.crash['phase']}{'' if a.crash.get('step') is None else ' ' + str(a.crash['step'])}"
                    f" ({a.crash['type']} at {a.crash.get('frame', {}).get('file')}:{a.crash.get('frame', {}).get('line')})"
                    if a.crash else f"{a.verdict}, first divergence step {a.first_step} {a.first_observable}")
            print(f"  {stem:18s} {algo:7s} {what}")
    if rows:
        print("defects alone (every other defect fixed)")
        print(f"  {'id':4s} {'class':18s} {'line':>4s} {'algo':7s} {'detected':8s} {'step':>4s}  "
              f"{'first divergence':58s} {'expected obs':12s}")
        for stem, d, algo, a, detected, obs_ok in rows:
            print(f"  {d['id']:4s} {d['class']:18s} {d['line']:4d} {algo:7s} {'yes' if detected else 'NO':8s} "
                  f"{'' if a.first_step is None else a.first_step:>4}  {str(a.first_observable)[:58]:58s} "
                  f"{'ok' if obs_ok else 'MISSING':12s}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "audits": [{"stage": s, **{k: v for k, v in vars(a).items()}} for s, a in done],
            "problems": problems}, indent=1, default=str))
    wall = time.perf_counter() - t_start
    print(f"\n{len(done)} audits in {wall:.0f} s; " + ("everything holds" if not problems else
                                                      f"{len(problems)} problem(s):"))
    for msg in problems:
        print("  -", msg)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
