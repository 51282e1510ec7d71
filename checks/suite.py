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
from pogo_audit.results import RunResults

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


def run_suite(opts: SuiteOptions, progress: Progress | None = None) -> RunResults:
    """Every registered report stage not skipped, in registry order, into one results model: stages that audit
    our own code only for our own trainer, candidate stages only with a candidate."""
    say = progress or (lambda _msg: None)
    results = RunResults(command="report")
    skip = {stage_name(s) for s in opts.skip}
    for name, stage in STAGES.items():
        wanted = {"self": not opts.external, "candidate": opts.external, "either": True}[stage.audits]
        if name in skip or not wanted:
            continue
        results.checks.extend(stage.runner()(opts, say))
    return results


def merge(files: list[str]) -> RunResults:
    """Results files merged into one model (later files after earlier ones)."""
    merged = RunResults(command="report --from")
    for f in files:
        loaded = RunResults.load(f)
        merged.checks.extend(loaded.checks)
        merged.environment = loaded.environment or merged.environment
    return merged
