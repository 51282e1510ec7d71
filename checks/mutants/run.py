"""Running mutants through the equivalence harness: one result per mutant (killed, by which observable, at which
step, the kill-matrix row), ``pogo-audit mutants`` and the report's mutants stage."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from checks.equivalence import GROUPS, EquivalenceOptions, equivalence, group_of
from checks.mutants.catalog import catalog, select
from checks.mutants.model import Mutant
from checks.source_patch import SourcePatchError
from pogo_audit.model.results import ERROR, FAIL, PASS, CheckResult


def _unbuildable(mutant: Mutant, exc: SourcePatchError, seconds: float) -> CheckResult:
    return CheckResult(
        check="mutants", subject=mutant.name, verdict=ERROR, steps_compared=0,
        summary=f"mutant does not build: {exc}",
        metrics={"algo": mutant.algo, "description": mutant.description, "expected": mutant.expected,
                 "killed": False, "caught_by": None, "caught_group": None, "expected_caught": False,
                 "expected_step": None, "step": None, "location": None, "bundle": None, "equivalence_verdict": None},
        seconds=seconds)


def run_mutant(mutant: Mutant, bundle_dir: str | None = None, seed: int = 0, actors: int = 3) -> CheckResult:
    """Run one mutant through the equivalence harness; killed = any observable diverged. A mutant whose patch no
    longer applies to the source is an ``error`` result (never run as a stale copy)."""
    from multi_actor.config import build_config

    t0 = time.perf_counter()
    try:
        location = mutant.location()
        mutant.resolve()
    except SourcePatchError as exc:
        return _unbuildable(mutant, exc, time.perf_counter() - t0)
    cfg = build_config(None, list(mutant.overrides), algo=mutant.algo, num_actors=actors, seed=seed)
    options = EquivalenceOptions(steps=mutant.steps, seed=seed, self_check=False, full_every=mutant.steps,
                                 bundle_dir=str(Path(bundle_dir) / mutant.name) if bundle_dir else None,
                                 eval_every=mutant.eval_every)
    with warnings.catch_warnings():
        if mutant.quiet:
            warnings.filterwarnings("ignore", message=mutant.quiet)
        res = equivalence(mutant.algo, cfg, options, candidate=(f"mutant:{mutant.name}", mutant.factory))
    row = {r["group"]: r["first_divergence_step"] for r in res.details}
    matrix = [{"group": g, "step": row.get(g)} for g in GROUPS if g in row]
    warned = [w for w in res.metrics.get("warnings", []) if w["group"] == mutant.expected]
    killed = res.verdict == FAIL or bool(warned)
    first = res.first_divergence if res.verdict == FAIL else None
    expected_step = row.get(mutant.expected)
    return CheckResult(
        check="mutants",
        subject=mutant.name,
        verdict=PASS if killed else FAIL,
        steps_compared=res.steps_compared,
        summary=(f"killed at step {first.step} by {first.observable}" if first else
                 f"caught at step {warned[0]['step']} by a warning on {warned[0]['observable']}" if warned else
                 f"survived {res.steps_compared} steps: no observable diverged ({res.summary})"),
        first_divergence=first,
        metrics={
            "algo": mutant.algo,
            "description": mutant.description,
            "expected": mutant.expected,
            "killed": killed,
            "caught_by": first.observable if first else warned[0]["observable"] if warned else None,
            "caught_group": group_of(first.observable) if first else mutant.expected if warned else None,
            "expected_caught": expected_step is not None,
            "expected_step": expected_step,
            "step": first.step if first else warned[0]["step"] if warned else None,
            "location": location,
            "bundle": res.metrics.get("bundle"),
            "equivalence_verdict": res.verdict,
        },
        details=matrix,
        seconds=time.perf_counter() - t0,
    )


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[CheckResult]:
    """``pogo-audit mutants``: each selected mutant through the harness (on ``--device`` when given)."""
    if getattr(args, "localise", False):
        from checks.mutants.accuracy import localise_command

        yield from localise_command(args, progress)
        return
    mutants = select(args)
    if args.device:
        mutants = [dataclasses.replace(m, overrides=(*m.overrides, f"device={args.device}")) for m in mutants]
    for i, m in enumerate(mutants):
        progress(f"mutant {m.name}", i, len(mutants))
        yield run_mutant(m, bundle_dir=args.bundle_dir, seed=args.seed)


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: every mutant of the audited algorithms (our own multi-actor trainer)."""
    out = []
    for m in catalog():
        if m.algo in opts.algos:
            if opts.device != "cpu" and m.framework == "torch":
                m = dataclasses.replace(m, overrides=(*m.overrides, f"device={opts.device}"))
            say(f"mutant {m.name}")
            out.append(run_mutant(m, bundle_dir=str(Path(opts.bundle_dir) / "mutants"), seed=opts.seed))
    return out
