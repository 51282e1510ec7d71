"""Run every check the review report draws on and collect them into one results model.

Without an external trainer the report is about our own code: docs audit, conformance of the references, equivalence
of the multi-actor trainer, the mutation catalog, fuzzing, the training loop's failure handling and the JAX profile.
With ``--reference/--candidate`` it is about the user's trainer: every instrument the adapter allows runs on it
(docs with ``--readme``, equivalence, the adapter's hooks) and the stages that audit our own code do not run.

The stages are the check registry's (:data:`checks.registry.CHECKS`, each ``CheckSpec.report``): a new check joins
the report with one ``ReportStage`` and rubric lines, no code here. A stage's module is imported only when it runs,
so importing the suite (the CLI does, to validate ``--skip``) stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from checks.docs_audit import CommandParser
from checks.registry import CHECKS
from multi_actor.config import ALGORITHMS
from pogo_audit.model.results import CheckResult, RunResults

Progress = Callable[[str], None]


@dataclass
class SuiteOptions:
    """What the suite runs; ``parser`` is the CLI's (the docs audit checks the commands the README shows)."""

    algos: tuple[str, ...] = ALGORITHMS
    steps: int = 100
    conformance_steps: int = 200
    fuzz_examples: int = 200
    seed: int = 0
    bundle_dir: str = ".pogo-audit/report-bundles"
    readme: str | None = None
    skip: tuple[str, ...] = ()
    reference: tuple[str, Callable[..., Any]] | None = None
    candidate: tuple[str, Callable[..., Any]] | None = None
    #: per-algorithm candidates (``--candidate ALGO=MOD:FACTORY``); ``candidate`` serves the algorithms not listed
    candidates: dict[str, tuple[str, Callable[..., Any]]] = field(default_factory=dict)
    parser: CommandParser | None = None
    #: torch device of the PyTorch trainers in the equivalence and mutant stages
    device: str = "cpu"
    #: candidate mode: the candidate's JAX loop to profile (``MOD:FACTORY``, the ``jax-profile --target`` contract)
    jax_target: str | None = None
    #: ``MOD:CALLABLE`` returning ``parser``: how a ``--jobs`` worker rebuilds it (a parser does not pickle)
    parser_spec: str | None = None
    #: the equivalence stage's reference worker (``EquivalenceOptions.concurrent``; off in ``--jobs`` workers, whose
    #: pool already has the cores)
    concurrent: bool | None = None

    @property
    def external(self) -> bool:
        return (self.reference is not None or self.candidate is not None or bool(self.candidates)
                or self.jax_target is not None)

    def candidate_for(self, algo: str) -> tuple[str, Callable[..., Any]] | None:
        """The candidate factory audited for ``algo`` (its own, else the one for all algorithms)."""
        return self.candidates.get(algo, self.candidate)


#: the report's stages, in registry order: check name → its :class:`~checks.registry.ReportStage`
STAGES = {name: spec.report for name, spec in CHECKS.items() if spec.report is not None}


def stage_name(text: str) -> str:
    """A ``--skip`` name as the registry spells it (``jax_profile`` → ``jax-profile``)."""
    return text.strip().replace("_", "-")


def _stages(opts: SuiteOptions) -> list[str]:
    """The stages to run, in registry order: not skipped, ours only for our own trainer, candidate ones only with
    a candidate."""
    skip = {stage_name(s) for s in opts.skip}
    return [name for name, stage in STAGES.items() if name not in skip and
            {"self": not opts.external, "candidate": opts.external, "either": True}[stage.audits]]


def stage_tasks(opts: SuiteOptions) -> list[tuple[str, tuple[str, ...]]]:
    """(stage, algorithms) of every stage to run, in order: one per algorithm for a ``per_algo`` stage."""
    return [task for name in _stages(opts) for task in
            ([(name, (a,)) for a in opts.algos] if STAGES[name].per_algo else [(name, opts.algos)])]


def run_task(name: str, opts: SuiteOptions, algos: tuple[str, ...], budget: int) -> list[CheckResult]:
    """One stage on ``algos`` in a ``--jobs`` worker: the parser rebuilt from its spec, within its share ``budget``
    of the command's threads (:mod:`pogo_audit.runtime.threads`)."""
    import dataclasses

    from pogo_audit.runtime import threads
    from pogo_audit.core.loading import import_callable

    threads.pin(budget)
    if opts.parser is None and opts.parser_spec:
        opts = dataclasses.replace(opts, parser=import_callable(opts.parser_spec, "parser", "pogo_audit.cli.main:"
                                                                                          "build_parser")())
    return STAGES[name].runner()(dataclasses.replace(opts, algos=algos), lambda _msg: None)


def run_suite(opts: SuiteOptions, progress: Progress | None = None, jobs: int = 1) -> RunResults:
    """Every registered report stage not skipped, in registry order, into one results model: stages that audit
    our own code only for our own trainer, candidate stages only with a candidate.

    ``jobs`` > 1: the stages — a ``per_algo`` stage one algorithm at a time — run in a pool of that many worker
    processes (:func:`checks.workers.process_pool`; at most one per thread of the budget, each within its share);
    the results are collected in the serial order, so the model is the serial one but for wall times."""
    import concurrent.futures
    import dataclasses

    say = progress or (lambda _msg: None)
    results = RunResults(command="report")
    if jobs <= 1:
        for name in _stages(opts):
            results.checks.extend(STAGES[name].runner()(opts, say))
        return results
    from checks.workers import process_pool
    from pogo_audit.runtime import threads

    tasks = stage_tasks(opts)
    portable = dataclasses.replace(opts, parser=None, concurrent=False)
    jobs = min(jobs, threads.budget())
    budget = threads.share(threads.budget(), jobs)
    done: dict[int, list[CheckResult]] = {}
    with process_pool(jobs) as pool:
        futures = {pool.submit(run_task, name, portable, algos, budget): i for i, (name, algos) in enumerate(tasks)}
        try:
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                done[i] = future.result()
                name, algos = tasks[i]
                label = f"{name} {algos[0]}" if STAGES[name].per_algo else name
                say(f"{label} done ({len(done)}/{len(tasks)})")
        except BaseException:  # a usage error or an interrupt ends the report now, not after every queued stage
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    for i in range(len(tasks)):
        results.checks.extend(done[i])
    return results


def merge(files: list[str]) -> RunResults:
    """Results files merged into one model (later files after earlier ones)."""
    merged = RunResults(command="report --from")
    for f in files:
        loaded = RunResults.load(f)
        merged.checks.extend(loaded.checks)
        merged.environment = loaded.environment or merged.environment
    return merged
