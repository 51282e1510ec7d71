"""The checks pogo-audit runs, declared once.

A :class:`CheckSpec` names a check, declares its command-line options, and points at its ``run(args, progress)``
generator (``module:function``, imported only when the check runs, so ``pogo-audit --help`` loads neither torch nor
JAX). The CLI builds one subcommand per entry with one generic driver — progress, rendering, the JSON / JUnit /
SARIF / step-summary outputs and the exit code — so adding a check is its module plus one entry in :data:`CHECKS`;
a check without a dedicated view in the CLI gets the generic results table.

``run`` yields :class:`~pogo_audit.model.results.CheckResult` objects (and :class:`Note` lines worth showing, e.g. a
profiled target that was skipped); ``progress(label, done, total)`` reports steps. Checks return data; only the CLI
prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from checks import selection
from checks.conformance.command import PRECISION_CHOICES
from checks.conformance.judge import F32_REL, F32_STEPS, F64_REL
from multi_actor import registry as algorithms
from pogo_audit.core.argtypes import int_list, nonneg_float, nonneg_int, positive_int, seed_list
from pogo_audit.core.compare import DEFAULT_ATOL, DEFAULT_RTOL
from pogo_audit.core.exporters import ExportParts
from pogo_audit.core.loading import resolve
from pogo_audit.model.results import CheckResult, Listing, Note

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ReportStage:
    """How ``pogo-audit report`` runs a check: ``run`` is ``module:function(opts, say) -> list[CheckResult]``
    (``opts`` a :class:`checks.suite.SuiteOptions`); its results carry the check's name, which the rubric's
    selectors read. ``audits``: which code it measures — ``self`` (our own code: skipped when the report is about a
    candidate), ``candidate`` (only with a candidate) or ``either`` (it decides from ``opts``). ``per_algo``: its
    results are those of each algorithm of ``opts.algos`` in turn, so ``report --jobs`` may run it one algorithm per
    worker."""

    run: str
    audits: str = "self"
    per_algo: bool = False

    def runner(self) -> Callable[..., list[CheckResult]]:
        return resolve(self.run)


@dataclass(frozen=True)
class CheckSpec:
    """One check, declared once: its command (name — also the ``check`` of every result it yields — help, options),
    its runner, the closing line for a clean and a failing run, and where its particular parts are:

    * ``listing``: ``module:function`` returning a :class:`Listing` when ``args.list`` is set;
    * ``view``: ``module:attribute`` of the CLI's :class:`pogo_audit.cli.render.View` for it (None: the generic
      table); the CLI resolves it, the checks never import it;
    * ``export``: ``module:attribute`` of its :class:`pogo_audit.core.exporters.ExportParts` (None: one JUnit case
      and one summary row per result, one SARIF result per located finding of the results model);
    * ``report``: how the report runs it (None: not part of the report)."""

    name: str
    help: str
    description: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: str
    passed: Callable[[list[CheckResult]], str]
    failed: Callable[[list[CheckResult]], str]
    listing: str | None = None
    view: str | None = None
    export: str | None = None
    report: ReportStage | None = None

    def runner(self) -> Callable[[argparse.Namespace, Progress], Iterable[CheckResult | Note]]:
        return resolve(self.run)

    def list_table(self, args: argparse.Namespace) -> Listing | None:
        if self.listing is None or not getattr(args, "list", False):
            return None
        return resolve(self.listing)(args)

    def module_strings(self) -> list[str]:
        """Every ``module:attribute`` this entry names (``tests/test_registries.py`` resolves them all)."""
        return [s for s in (self.run, self.listing, self.view, self.export,
                            self.report.run if self.report else None) if s]


def export_parts() -> dict[str, ExportParts]:
    """Each check's part of the CI outputs, in registry order (checks without one are left out)."""
    return {name: resolve(spec.export) for name, spec in CHECKS.items() if spec.export}


def device(text: str) -> str:
    """``--device``: cpu, cuda or cuda:N that exists on this machine (checked before anything is built)."""
    from multi_actor.config import ConfigError, check_device

    try:
        check_device("--device", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected {exc.expected}") from None
    return text


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device, default=None, metavar="DEVICE",
                   help="torch device of the PyTorch trainers: cpu (default), cuda or cuda:N; JAX uses its default "
                        "backend")


def add_glue(p: argparse.ArgumentParser) -> None:
    p.add_argument("--glue", action="append", default=[], metavar="MOD",
                   help="a module of your adapter (repeatable): like the --candidate module itself, it is context, "
                        "never the line a finding or crash points at")


# ------------------------------------------------------------------------------------------------------ options


def _conformance_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", default="all",
                   help="variant: all, " + ", ".join(f"{a} (its variants)" for a in algorithms.variant_aliases())
                        + ", " + ", ".join(algorithms.variants()) + " (default: all)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="both",
                   help="both (default: the float64 verdict plus the float32 report), float64 or float32")
    p.add_argument("--golden", default=None, metavar="DIR",
                   help="one trace set in the golden format (default: $POGO_AUDIT_GOLDEN_DIR, else the sets shipped "
                        "with pogo-audit)")
    p.add_argument("--steps", type=positive_int, default=None, help="compare only the first N steps (default: all)")
    add_device(p)


def _equivalence_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", default="iql", type=selection.algo_type(), metavar="ALGO[,ALGO]",
                   help=selection.help_text(default="iql"))
    p.add_argument("--actors", type=positive_int, default=None, help="actors of the candidate (default 3)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps compared (default 300)")
    p.add_argument("--seed", type=int, default=None, help="seed of both trainers and of the batches (default 0)")
    p.add_argument("--dataset", default=None, metavar="ID", help="Minari dataset id (default: the embedded one)")
    p.add_argument("--actor-types", default=None, metavar="T1,T2,...",
                   help="types of actors 1..N-1 (deterministic, gaussian, tanh_gaussian, implicit)")
    p.add_argument("--w2-method", default=None, choices=("auto", "closed_form", "sinkhorn"),
                   help="W2 estimator for stochastic pairs (sinkhorn forces the debiased Sinkhorn divergence)")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML multi-actor config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--mode", default="bitwise", choices=("bitwise", "tolerance"),
                   help="bitwise (default; same framework on CPU) or tolerance")
    p.add_argument("--rtol", type=nonneg_float, default=DEFAULT_RTOL, help="tolerance mode: rtol (torch default)")
    p.add_argument("--atol", type=nonneg_float, default=DEFAULT_ATOL, help="tolerance mode: atol (torch default)")
    p.add_argument("--full-every", type=positive_int, default=100, metavar="K",
                   help="compare full parameter tensors every K steps and at the end (default 100)")
    p.add_argument("--oracle-every", type=positive_int, default=10, metavar="K",
                   help="check the extra actors' W2 against the POT oracle on steps 1..K, every K-th step and the "
                        "last step (default 10; 1: every step)")
    p.add_argument("--no-self-check", action="store_true", help="skip running the reference twice")
    p.add_argument("--self-check-steps", type=nonneg_int, default=100, metavar="N",
                   help="on the CPU, run the reference's self-check twin for the first N steps only (default 100; "
                        "0: every step; other devices: every step)")
    p.add_argument("--sync-init", action="store_true",
                   help="start the candidate from the reference's initial parameters and RNG state")
    p.add_argument("--isolate", action="store_true",
                   help="set the candidate to the reference's state (critic/actor0/target tensors, optimizer state, "
                        "RNG; JAX: PRNG key, optax state, update counter) before every step, list every distinct "
                        "finding, and locate each in the candidate's code by replaying its first step under tracing "
                        "(JAX: a diff of the traced update)")
    p.add_argument("--ignore", action="append", default=[], metavar="OBSERVABLE_GLOB",
                   help="do not compare observables matching this fnmatch glob (what the candidate does not log, "
                        "e.g. 'actor0/entropy'); repeatable, listed in the output as ignored")
    p.add_argument("--bundle-dir", default=".pogo-audit/bundles", metavar="DIR",
                   help="where first-divergence bundles go (default .pogo-audit/bundles)")
    p.add_argument("--eval-every", type=positive_int, default=0, metavar="K",
                   help="call both trainers' evaluate(seed, episodes) every K steps: no crash, global RNG streams "
                        "untouched, same numbers for the same seed, training still equivalent (default: never)")
    p.add_argument("--eval-episodes", type=positive_int, default=1, metavar="N",
                   help="episodes per --eval-every evaluation (default 1)")
    p.add_argument("--reference", default=None, metavar="MOD:FACTORY", help="external reference trainer factory")
    p.add_argument("--candidate", default=None, metavar="MOD:FACTORY", help="external candidate trainer factory")
    add_glue(p)
    add_device(p)
    p.add_argument("--reference-device", type=device, default=None, metavar="DEVICE",
                   help="cross-device audit: the reference's device (random draws shared, tolerance from the "
                        "measured float32 drift)")
    p.add_argument("--candidate-device", type=device, default=None, metavar="DEVICE",
                   help="cross-device audit: the candidate's device")


def _mutants_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", default="all", type=selection.algo_type(), metavar="ALGO[,ALGO]",
                   help="mutants of these algorithms: " + selection.help_text())
    p.add_argument("--only", default=None, metavar="NAME,...", help="only these mutants")
    p.add_argument("--list", action="store_true", help="list the catalog and exit")
    p.add_argument("--localise", action="store_true",
                   help="measure the localisation instead: share of mutants located at their mutated line, share of "
                        "random mutant triples fully named by one --isolate run, and --isolate's cost")
    p.add_argument("--combinations", type=positive_int, default=30, metavar="N",
                   help="--localise: mutant triples injected together (default 30)")
    p.add_argument("--cost-steps", type=positive_int, default=300, metavar="N",
                   help="--localise: steps of the --isolate cost measurement (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--bundle-dir", default=".pogo-audit/mutant-bundles", metavar="DIR",
                   help="first-divergence bundles of killed mutants (default .pogo-audit/mutant-bundles)")
    add_device(p)


def _fuzz_options(p: argparse.ArgumentParser) -> None:
    from checks.fuzz.targets import TARGETS

    p.add_argument("--target", default="all", choices=TARGETS,
                   help="configs, logging, data, all (those three; default) or candidates (the equivalence harness "
                        "against generated broken trainers)")
    p.add_argument("--examples", type=positive_int, default=200, metavar="N",
                   help="examples per property (default 200)")
    p.add_argument("--seed", type=int, default=0,
                   help="hypothesis seed; the same seed (and database) gives the same run (default 0)")
    p.add_argument("--database", default=".pogo-audit/hypothesis", metavar="DIR",
                   help="hypothesis example database: failing examples are saved and replayed first "
                        "(default .pogo-audit/hypothesis)")
    p.add_argument("--no-database", action="store_true", help="do not read or write the example database")


def _jax_profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", default="all", type=selection.algo_type("jax"), metavar="ALGO[,ALGO]",
                   help="JAX references to profile: " + selection.help_text("jax"))
    p.add_argument("--target", default=None, metavar="MOD:FACTORY",
                   help="profile your own loop instead: factory() returns an object with step() and optionally "
                        "epoch() + updates_per_epoch (see checks/jax_profile/targets.py)")
    p.add_argument("--steps", type=positive_int, default=20, help="steady-state steps after warm-up (default 20)")
    p.add_argument("--epochs", type=positive_int, default=2, help="steady-state epochs after warm-up (default 2)")
    p.add_argument("--warmup", type=positive_int, default=1, help="warm-up steps and epochs (default 1)")
    p.add_argument("--updates-per-epoch", type=positive_int, default=50,
                   help="rebrac: num_updates_on_epoch (default 50)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="rebrac: batch size (default 256)")
    p.add_argument("--dataset", default="synthetic", metavar="ID",
                   help="rebrac: synthetic (default), embedded, or a local Minari dataset id")
    p.add_argument("--actors", type=int_list, default=[3], metavar="N[,N...]",
                   help="multi-actor JAX trainer: actor counts to profile (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--unjitted-steps", type=positive_int, default=3,
                   help="timed steps under jax.disable_jit() (default 3)")
    p.add_argument("--no-unjitted", action="store_true", help="skip the un-jitted timing (eager mode compiles "
                                                                 "every primitive once: slow for big steps)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timing repeats, median kept (default 3)")
    add_glue(p)
    p.add_argument("--memory-steps", type=positive_int, default=None, metavar="N",
                   help="training-loop calls measured for host-memory growth (default 30 steps, or max(--epochs, 5) "
                        "epochs); the growth per call is a Theil-Sen slope with its 95%% interval")


def _hooks_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", default="iql", type=selection.algo_type("torch"), metavar="ALGO[,ALGO]",
                   help="the candidate's base algorithm(s): " + selection.help_text("torch", default="iql"))
    p.add_argument("--candidate", required=True, metavar="MOD:FACTORY",
                   help="the adapter's trainer factory; its hooks are looked up on the trainer, then in its module")
    p.add_argument("--examples", type=positive_int, default=200, metavar="N",
                   help="examples per fuzzed hook (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the trainer, the batches and hypothesis (default 0)")


def _matrix_options(p: argparse.ArgumentParser) -> None:
    from checks.matrix import EXECUTORS

    p.add_argument("--grid", default=None, metavar="GRID.yaml",
                   help="the grid as YAML (keys: algos, seeds, actor_types, w2_methods, sets, steps); else the flags")
    p.add_argument("--algo", default="iql", type=selection.algo_type(), metavar="ALGO[,ALGO]",
                   help=selection.help_text(default="iql"))
    p.add_argument("--seeds", type=seed_list, default=[0], metavar="S[,S...]", help="seeds (default 0)")
    p.add_argument("--actor-types", default=None, metavar="T1,T2[;T1,T2...]",
                   help="actor-type sets of actors 1..N-1, separated by ';' (default: the config's)")
    p.add_argument("--w2-method", default=None, metavar="M[,M]", help="W2 methods: auto, closed_form, sinkhorn")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every cell")
    p.add_argument("--steps", type=positive_int, default=100, help="equivalence steps per cell (default 100)")
    p.add_argument("--jobs", type=positive_int, default=1, help="cells run at once (default 1)")
    p.add_argument("--executor", default="process", choices=EXECUTORS,
                   help="process (default: a local process pool) or ray (the pogo-audit[ray] extra)")
    p.add_argument("--address", default=None, metavar="ADDR", help="ray: cluster address (default: start a local Ray)")
    p.add_argument("--out", default=".pogo-audit/matrix.json", metavar="PATH",
                   help="merged results, updated after every cell; a re-run skips the cells already in it "
                        "(default .pogo-audit/matrix.json)")
    p.add_argument("--bundle-dir", default=".pogo-audit/matrix-bundles", metavar="DIR",
                   help="first-divergence bundles, one folder per cell (default .pogo-audit/matrix-bundles)")
    add_device(p)


def _not_localise(results: list[CheckResult]) -> bool:
    return not any(r.check == "localisation" for r in results)


def _subjects(results: list[CheckResult]) -> str:
    return ", ".join(r.subject for r in results)


def _failed(results: list[CheckResult]) -> str:
    return _subjects([r for r in results if not r.passed])


def _fuzz_passed(results: list[CheckResult]) -> str:
    total = sum(r.metrics["examples_run"] for r in results)
    props = "1 property" if len(results) == 1 else f"{len(results)} properties"
    return f"fuzz passed: {total} examples over {props}, no findings"


def _docs_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--readme", default=None, metavar="PATH", help="README to audit (default: this repository's)")


CHECKS: dict[str, CheckSpec] = {spec.name: spec for spec in (
    CheckSpec(
        "docs", "audit a README: quickstart, architecture, commands, algorithms, config fields, terminology",
        "Check a README against the documentation rules of the review's first section: a quickstart, an "
        "architecture diagram, every command listed, the algorithm table, every config field documented, consistent "
        "terminology, and every pogo-audit command it shows parses.",
        _docs_options, "checks.docs_audit:run_command",
        passed=lambda rs: f"documentation: all {len(rs)} rules pass",
        failed=lambda rs: f"documentation rules failing: {_failed(rs)}",
        report=ReportStage("checks.docs_audit:suite_stage", audits="either")),
    CheckSpec(
        "equivalence", "is the critic and actor0 of the multi-actor trainer still the original algorithm?",
        "Train the CORL-style single-actor reference and the multi-actor trainer side by side (same seed, same "
        "initial parameters, identical batches) and compare critic/actor0 losses, parameter digests, RNG digests, "
        "gradient leaks at every step and the W2 chain against the POT oracle on a schedule (--oracle-every). On the first divergence a bundle is written for "
        "`pogo-audit inspect`.",
        _equivalence_options, "checks.equivalence.command:run_command",
        view="pogo_audit.cli.render:EQUIVALENCE_VIEW", export="checks.equivalence.export:PARTS",
        report=ReportStage("checks.equivalence.command:suite_stage", audits="either", per_algo=True),
        passed=lambda rs: f"equivalent: critic and actor0 match the reference for {_subjects(rs)}",
        failed=lambda rs: f"not equivalent: {_failed(rs)}"),
    CheckSpec(
        "mutants", "prove the equivalence check can fail: run the mutation catalog",
        "Inject each catalogued bug into our own multi-actor trainer at run time (no file is edited), run the "
        "equivalence harness, and print the kill matrix. A mutant that no observable catches fails the command.",
        _mutants_options, "checks.mutants.run:run_command",
        passed=lambda rs: f"all {len(rs)} mutants killed" if _not_localise(rs) else
        "localisation: accuracy and separation meet their goals",
        failed=lambda rs: f"surviving mutants: {_failed(rs)}" if _not_localise(rs) else
        f"localisation below its goal: {_failed(rs)}",
        listing="checks.mutants.catalog:listing", view="pogo_audit.cli.render:MUTANTS_VIEW",
        export="checks.mutants.export:PARTS", report=ReportStage("checks.mutants.run:suite_stage")),
    CheckSpec(
        "fuzz", "property-based fuzzing of configs, --set overrides, the run logger and the data layer",
        "Generate valid and near-valid multi-actor configs, --set overrides, logging payloads and datasets with "
        "hypothesis and check their properties: invalid configs raise a ConfigError naming the field, valid ones "
        "round-trip through YAML and train one step, the logger writes every scalar once as strict JSON, bad episodes "
        "raise a DataError naming the episode and field. Failing examples are shrunk and saved.",
        _fuzz_options, "checks.fuzz.runner:run_command",
        view="pogo_audit.cli.render:FUZZ_VIEW", report=ReportStage("checks.fuzz.runner:suite_stage"),
        passed=_fuzz_passed, failed=lambda rs: f"fuzz found problems: {_failed(rs)}"),
    CheckSpec(
        "jax-profile", "find JAX performance pathologies: recompiles, un-jitted steps, host syncs and transfers",
        "Profile a JAX training loop: compiles and traces per jitted function (0 allowed after the warm-up, with "
        "JAX's cache-miss explanation), host-to-device transfers in the steady-state loop, a static scan for "
        "device-to-host syncs (float(), .item(), np.asarray, jax.device_get, if on arrays) in the per-step loop and "
        "jitted code, whether the step is jitted, and the measured speed of a Python step loop vs one jitted epoch and "
        "of the un-jitted step (reported, never asserted). Default: the reference ReBRAC, and "
        "multi_actor.jax_trainer when it exists.",
        _jax_profile_options, "checks.jax_profile.profile:run_command",
        view="pogo_audit.cli.render:JAX_PROFILE_VIEW",
        report=ReportStage("checks.jax_profile.profile:suite_stage", audits="either"),
        passed=lambda rs: f"no JAX performance pathology in {_subjects(rs)}",
        failed=lambda rs: f"JAX performance pathology: {_failed(rs)}"),
    CheckSpec(
        "conformance", "replay the CORL golden traces with the reference algorithms and compare every step",
        "Replay the golden traces recorded from the original CORL code with our reference algorithms, following the "
        "protocol each trace set records, and compare every logged scalar, every parameter digest, the RNG "
        f"fingerprint and the parameter snapshots at every step. float64: |a-b| <= {F64_REL:g}*max(|a|,|b|,scale) on "
        f"any CPU; float32: bitwise on the recording CPU (fingerprints match), else a drift report enforcing "
        f"{F32_REL:g} over steps 1-{F32_STEPS}.",
        _conformance_options, "checks.conformance.command:run_command",
        view="pogo_audit.cli.render:CONFORMANCE_VIEW", export="checks.conformance.export:PARTS",
        report=ReportStage("checks.conformance.command:suite_stage"),
        passed=lambda rs: f"conformance passed: {len(rs)} variant/precision pair(s) match the CORL golden traces",
        failed=lambda rs: f"conformance failed: {_failed(rs)}"),
    CheckSpec(
        "failure-handling", "exercise the training loop's failure handling: eval error, checkpoint failure, NaN loss",
        "Run short trainings of our multi-actor loop with injected failures: an evaluation that raises must be "
        "logged while training continues, a checkpoint write on a full disk must stop the run with one error naming "
        "the file and leave no partial file, and a NaN loss must stop the run naming the step and the key.",
        lambda p: None, "checks.failure_handling:run_command",
        passed=lambda rs: f"every failure scenario is handled ({len(rs)})",
        failed=lambda rs: f"failure scenarios not handled: {_failed(rs)}",
        report=ReportStage("checks.failure_handling:suite_stage")),
    CheckSpec(
        "hooks", "exercise your adapter's hooks: config validation, logging path, checkpoint faults",
        "Point the bug-risk and logging instruments at your trainer through the adapter's optional hooks: "
        "make_config(**fields) is fuzzed with near-valid POGO configs (a bad one must raise naming the field, a valid "
        "one must keep every field); log(metrics, step) is fuzzed with every kind of scalar, array, tensor, None, "
        "NaN/Inf and odd key (no exception, no scalar dropped or mangled; read back through read_log() or wandb); "
        "save_checkpoint/load_checkpoint run under a full disk, a crash mid-write and an uncreatable directory (the "
        "failure is reported, the previous checkpoint stays loadable) and must resume bitwise. A hook the adapter "
        "lacks is reported as not measured.",
        _hooks_options, "checks.hooks.runner:run_command",
        report=ReportStage("checks.hooks.runner:suite_stage", audits="candidate",
                           per_algo=True),
        passed=lambda rs: "every hook the adapter has behaves (see the not-measured lines for absent ones)",
        failed=lambda rs: f"hook findings: {_failed(rs)}"),
    CheckSpec(
        "matrix", "run an audit grid (algorithms x seeds x actor types x W2 methods x overrides) in parallel",
        "Every cell of the grid is one equivalence audit of a fully specified config, run in its own worker process "
        "with one torch thread (a local process pool with --jobs N, or Ray with --executor ray). Finished cells are "
        "saved to --out at once; re-running with the same --out runs only the missing cells. The results are "
        "identical whichever executor ran them.",
        _matrix_options, "checks.matrix:run_command", view="pogo_audit.cli.render:MATRIX_VIEW",
        passed=lambda rs: f"matrix: all {len(rs)} cells equivalent",
        failed=lambda rs: f"matrix: {sum(not r.passed for r in rs)} of {len(rs)} cells not equivalent: "
                          f"{_failed(rs)}"),
)}
