"""Run every check the review report draws on and collect them into one results model.

Without an external trainer the report is about our own code: docs audit, conformance of the references, equivalence
of the multi-actor trainer, the mutation catalog, fuzzing, the training loop's failure handling and the JAX profile.
With ``--reference/--candidate`` it is about the user's trainer: the equivalence section runs through their adapter
and the sections that audit our internals are left "not measured".

The stages that need torch or jax (mutants, fuzz, JAX equivalence and profile) import their check when they run, so
that importing the suite (the CLI does, to validate ``--skip``) stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checks.conformance import ALIASES, golden_sets, implemented_variants, run_variant
from checks.docs_audit import CommandParser, audit_readme
from checks.equivalence import EquivalenceOptions, equivalence
from checks.failure_handling import run_failure_handling
from multi_actor import registry
from multi_actor.config import ALGORITHMS, build_config
from pogo_audit.results import CheckResult, RunResults

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

    @property
    def external(self) -> bool:
        return self.reference is not None or self.candidate is not None or bool(self.candidates)

    def candidate_for(self, algo: str) -> tuple[str, Callable[..., Any]] | None:
        """The candidate factory audited for ``algo`` (its own, else the one for all algorithms)."""
        return self.candidates.get(algo, self.candidate)


def _docs(opts: SuiteOptions, say: Progress) -> list[CheckResult]:
    if opts.external and opts.readme is None:
        return []
    if opts.parser is None:
        raise ValueError("SuiteOptions.parser is required by the docs stage (or skip 'docs')")
    say("docs audit")
    return audit_readme(opts.parser, Path(opts.readme) if opts.readme else None)


def _conformance(opts: SuiteOptions, say: Progress) -> list[CheckResult]:
    wanted = set()
    for a in opts.algos:
        wanted.update(ALIASES.get(a, (a,)))
    out = []
    for golden in golden_sets(None, "both"):
        for v in implemented_variants():
            if v in wanted:
                say(f"conformance {v}/{golden.dtype}")
                out.append(run_variant(golden, v, steps=opts.conformance_steps))
    return out


def _equivalence(opts: SuiteOptions, say: Progress) -> list[CheckResult]:
    out = []
    for algo in opts.algos:
        say(f"equivalence {algo}")
        cfg = build_config(None, [], algo=algo, seed=opts.seed)
        options = EquivalenceOptions(steps=opts.steps, seed=opts.seed, bundle_dir=opts.bundle_dir)
        external = registry.algorithm(algo).framework == "torch"  # --reference/--candidate are PyTorch trainers
        out.append(equivalence(algo, cfg, options, opts.reference if external else None,
                               opts.candidate_for(algo) if external else None))
    return out


def _mutants(opts: SuiteOptions, say: Progress) -> list[CheckResult]:
    from checks.mutants import catalog, run_mutant  # torch

    out = []
    for m in catalog():
        if m.algo in opts.algos:
            say(f"mutant {m.name}")
            out.append(run_mutant(m, bundle_dir=str(Path(opts.bundle_dir) / "mutants"), seed=opts.seed))
    return out


def _fuzz(opts: SuiteOptions, say: Progress) -> list[CheckResult]:
    from checks.fuzz.runner import run_fuzz  # torch, hypothesis

    say("fuzz")
    return run_fuzz("all", opts.fuzz_examples, opts.seed, None, None)


def _failure_handling(opts: SuiteOptions, say: Progress) -> list[CheckResult]:
    say("failure handling")
    return run_failure_handling()


def _jax(opts: SuiteOptions, say: Progress) -> list[CheckResult]:
    from checks.jax_profile import profile_algo  # jax

    say("jax profile")
    results, _skipped = profile_algo("rebrac", steps=10, epochs=2, seed=opts.seed)
    return results


STAGES: dict[str, Callable[[SuiteOptions, Progress], list[CheckResult]]] = {
    "docs": _docs, "conformance": _conformance, "equivalence": _equivalence, "mutants": _mutants, "fuzz": _fuzz,
    "failure_handling": _failure_handling, "jax_profile": _jax,
}
#: stages that audit this project's own internals; skipped when the report is about an external trainer
INTERNAL = ("conformance", "mutants", "fuzz", "failure_handling", "jax_profile")


def run_suite(opts: SuiteOptions, progress: Progress | None = None) -> RunResults:
    """Every stage not skipped (internal ones only for our own trainer), in order, into one results model."""
    say = progress or (lambda _msg: None)
    results = RunResults(command="report")
    for name, stage in STAGES.items():
        if name in opts.skip or (opts.external and name in INTERNAL):
            continue
        results.checks.extend(stage(opts, say))
    return results


def merge(files: list[str]) -> RunResults:
    """Results files merged into one model (later files after earlier ones)."""
    merged = RunResults(command="report --from")
    for f in files:
        loaded = RunResults.load(f)
        merged.checks.extend(loaded.checks)
        merged.environment = loaded.environment or merged.environment
    return merged
