"""``pogo-audit`` command line: argument parsing, rich rendering, exit codes.

Checks return data (the results model); only this module prints, with renderables from :mod:`pogo_audit.render`.
Exit codes: 0 all checks passed, 1 a check found a problem, 2 usage or input error (one line on stderr, no
traceback). The checks that import torch or jax at import time (mutants, fuzz, JAX equivalence and profile, the
training loop) are imported by their command's handler, so that ``pogo-audit --help`` and light commands start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from jinja2 import UndefinedError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich_argparse import RichHelpFormatter

from checks.conformance import (
    F32_REL,
    F32_STEPS,
    F64_REL,
    PRECISION_CHOICES,
    golden_sets,
    implemented_variants,
    resolve_variants,
    run_conformance,
)
from checks.equivalence import EquivalenceOptions, equivalence, load_factory
from checks.fuzz.targets import TARGETS as FUZZ_TARGETS
from checks.suite import STAGES, SuiteOptions, merge, run_suite
from multi_actor import registry
from multi_actor.config import ALGORITHMS, TORCH_ALGORITHMS, MultiActorConfig, build_config
from pogo_audit import __version__
from pogo_audit.compare import DEFAULT_ATOL, DEFAULT_RTOL
from pogo_audit.data import (
    DEFAULT_DATASET_ID,
    DEFAULT_ENV_ID,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    dataset_exists,
    datasets_root,
    list_datasets,
    load_transitions,
    make_dataset,
    missing_dataset_error,
)
from pogo_audit.errors import EXIT_CHECK_FAILED, EXIT_OK, InputError, PogoAuditError, UsageError
from pogo_audit.exporters import write_outputs
from pogo_audit.inspect import inspect_bundle, render_inspection
from pogo_audit.io import atomic_write_json, atomic_write_text
from pogo_audit.render import conformance_table, equivalence_table, jax_profile_tables, kill_matrix_table
from pogo_audit.results import RunResults
from reports.render import MissingValue, render_json, render_markdown, render_summary, write_assets

Handler = Callable[[argparse.Namespace], int]


class PogoAuditParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``pogo-audit: error: ...``) with exit code 2.

    ``commands``: the subcommand parsers by name (set by :func:`build_parser`; the docs audit checks them).
    """

    commands: Mapping[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _console() -> Console:
    """stdout console; when output is not a terminal (CI logs, pipes) tables get 140 columns instead of 80."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, soft_wrap=False, width=140)
    return console


def _progress(console: Console, quiet: bool, *extra_columns: object) -> Progress:
    """A rich progress bar (description, bar, n/N, elapsed) that disappears when done."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra_columns, console=console, transient=True, disable=quiet)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _device(text: str) -> str:
    """``--device``: cpu, cuda or cuda:N that exists on this machine (checked before anything is built)."""
    from multi_actor.config import ConfigError, check_device

    try:
        check_device("--device", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected {exc.expected}") from None
    return text


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device, default=None, metavar="DEVICE",
                   help="torch device of the PyTorch trainers: cpu (default), cuda or cuda:N; JAX uses its default "
                        "backend")


# ----------------------------------------------------------------------------------------------- conformance


def _cmd_conformance(args: argparse.Namespace) -> int:
    variants = resolve_variants(args.algo, implemented_variants())
    sets = golden_sets(args.golden, args.precision)
    for golden in sets:  # validate every input before spending minutes on the first variant
        for v in variants:
            g = golden.variant(v)
            _ = g.meta, g.steps, g.init_params, g.protocol
        _ = golden.dataset, golden.batch_idx
    console = _console()
    results = RunResults(command="conformance")
    with _progress(console, args.quiet) as progress:
        tasks: dict[str, object] = {}

        def step(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(f"conformance {label}", total=total)
            progress.update(tasks[label], completed=done)

        for res in run_conformance(variants, sets, args.steps, step):
            results.checks.append(res)
            for task in tasks.values():
                progress.remove_task(task)
            tasks.clear()
            console.print(conformance_table(res))
    write_outputs(results, json_path=args.json, junit_path=args.junit, sarif_path=args.sarif,
                  summary_path=args.summary_md)
    failed = [c.subject for c in results.checks if not c.passed]
    if failed:
        console.print(f"[bold red]conformance failed[/]: {', '.join(failed)}")
        return EXIT_CHECK_FAILED
    console.print(f"[bold green]conformance passed[/]: {len(results.checks)} variant/precision pair(s) match the "
                  f"CORL golden traces")
    return EXIT_OK


def _add_conformance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "conformance", formatter_class=RichHelpFormatter,
        help="replay the CORL golden traces with the reference algorithms and compare every step",
        description="Replay the golden traces recorded from the original CORL code with our reference algorithms, "
                    "following the protocol each trace set records, and compare every logged scalar, every "
                    "parameter digest, the RNG fingerprint and the parameter snapshots at every step. float64: "
                    f"|a-b| <= {F64_REL:g}*max(|a|,|b|,scale) on any CPU; float32: bitwise on the recording CPU "
                    f"(fingerprints match), else a drift report enforcing {F32_REL:g} over steps 1-{F32_STEPS}.",
    )
    p.add_argument("--algo", default="all",
                   help="variant: all, iql (both IQL variants), iql_gaussian, iql_deterministic, td3_bc, cql, awac, "
                        "sac_n, edac, rebrac (default: all)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="both",
                   help="both (default: the float64 verdict plus the float32 report), float64 or float32")
    p.add_argument("--golden", default=None, metavar="DIR",
                   help="one trace set in the golden format (default: $POGO_AUDIT_GOLDEN_DIR, else the sets shipped "
                        "with pogo-audit)")
    p.add_argument("--steps", type=_positive_int, default=None, help="compare only the first N steps (default: all)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results model as JSON")
    p.add_argument("--junit", default=None, metavar="PATH", help="JUnit XML")
    p.add_argument("--sarif", default=None, metavar="PATH", help="SARIF 2.1.0")
    p.add_argument("--summary-md", default=None, metavar="PATH", help="GitHub step-summary Markdown (< 1 MiB)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_conformance)


# ---------------------------------------------------------------------------------------------------- traces


def _cmd_traces_pack(args: argparse.Namespace) -> int:
    from pogo_audit.tracepack import pack

    for flag, path in (("--float32", args.float32), ("--float64", args.float64)):
        if not (Path(path) / "manifest.json").is_file():
            raise UsageError(f"{flag}: {path} is not a golden trace set (no manifest.json)")
    sizes = pack(Path(args.float32), Path(args.float64), Path(args.out))
    console = _console()
    for name, size in sizes.items():
        console.print(f"{name}: {size / 1e6:.2f} MB")
    console.print(f"total: {sum(sizes.values()) / 1e6:.2f} MB written to {escape(str(args.out))}")
    return EXIT_OK


def _add_traces(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("traces", formatter_class=RichHelpFormatter, help="maintain the shipped golden traces",
                       description="Maintainer tools for the CORL golden traces shipped with pogo-audit.")
    tsub = p.add_subparsers(dest="traces_command", metavar="ACTION", parser_class=PogoAuditParser, required=True)
    pk = tsub.add_parser("pack", formatter_class=RichHelpFormatter,
                         help="pack the float32 and float64 trace sets into the compact shipped copy",
                         description="Copy both full trace sets byte for byte into the compact layout shipped in "
                                     "pogo_audit/traces/corl (shared data and initial parameters stored once, no "
                                     "snapshots); the destination is replaced.")
    pk.add_argument("--float32", required=True, metavar="DIR", help="the float32 set (corl_golden)")
    pk.add_argument("--float64", required=True, metavar="DIR", help="the float64 set (corl_golden_f64)")
    pk.add_argument("--out", required=True, metavar="DIR", help="destination (replaced)")
    pk.set_defaults(handler=_cmd_traces_pack)


# -------------------------------------------------------------------------------------------------- datasets


def _cmd_datasets_make(args: argparse.Namespace) -> int:
    console = _console()
    existed = dataset_exists(args.id)
    with console.status(f"collecting {args.steps} steps of {args.env} into {args.id}", spinner="dots"):
        path = make_dataset(args.id, args.env, args.steps, args.seed, overwrite=args.overwrite)
    t = load_transitions(args.id)
    verb = "exists" if existed and not args.overwrite else "created"
    console.print(f"{args.id} {verb}: {path}")
    console.print(f"  {t.info['episodes']} episodes, {t.info['raw_steps']} steps → {len(t)} transitions "
                  f"({t.info['terminals']} terminal, {t.info['timeouts_dropped']} timeouts dropped), env {t.env_id}")
    return EXIT_OK


def _cmd_datasets_list(args: argparse.Namespace) -> int:
    console = _console()
    rows = list_datasets()
    table = Table(title=f"Minari datasets in {datasets_root()}")
    for col in ("id", "env", "episodes", "steps"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["env"], str(r["episodes"]), str(r["steps"]))
    console.print(table)
    if not rows:
        console.print("no local datasets; create the default with: pogo-audit datasets make")
    return EXIT_OK


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", formatter_class=RichHelpFormatter, help="create and list local Minari datasets",
                       description="Create the embedded default dataset (or another one) with minari.DataCollector, "
                                   "or list the local Minari datasets. Nothing is downloaded.")
    dsub = p.add_subparsers(dest="datasets_command", metavar="{make,list}", parser_class=PogoAuditParser,
                            required=True)
    m = dsub.add_parser("make", formatter_class=RichHelpFormatter,
                        help="collect a dataset with a seeded noisy policy (default: the embedded Hopper dataset)")
    m.add_argument("--id", default=DEFAULT_DATASET_ID, help=f"Minari dataset id (default {DEFAULT_DATASET_ID})")
    m.add_argument("--env", default=DEFAULT_ENV_ID, help=f"gymnasium env id (default {DEFAULT_ENV_ID})")
    m.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, help=f"env steps (default {DEFAULT_STEPS})")
    m.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"collection seed (default {DEFAULT_SEED})")
    m.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the same id")
    m.set_defaults(handler=_cmd_datasets_make)
    ls = dsub.add_parser("list", formatter_class=RichHelpFormatter, help="list local Minari datasets")
    ls.set_defaults(handler=_cmd_datasets_list)


# ------------------------------------------------------------------------------------------------------ train


def _config_from_args(args: argparse.Namespace) -> MultiActorConfig:
    return build_config(
        args.config, args.set,
        algo=args.algo, num_actors=args.actors, steps=args.steps, dataset=args.dataset, seed=args.seed,
        out_dir=getattr(args, "out_dir", None), wandb_mode=getattr(args, "wandb_mode", None),
        eval_freq=getattr(args, "eval_freq", None), device=getattr(args, "device", None),
    )


def _add_config_options(p: argparse.ArgumentParser, algo_default: str | None = None) -> None:
    p.add_argument("--algo", default=algo_default, choices=ALGORITHMS, metavar="ALGO",
                   help=f"base algorithm: {', '.join(ALGORITHMS)}")
    p.add_argument("--actors", type=_positive_int, default=None, help="number of actors N (actor0 + N-1 extra)")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML config (fields of MultiActorConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set base.beta=5.0 --set actor_configs.1.type=implicit")
    p.add_argument("--steps", type=_positive_int, default=None, help="training steps")
    p.add_argument("--dataset", default=None, metavar="ID", help="Minari dataset id (default: the embedded one)")
    p.add_argument("--seed", type=int, default=None, help="seed of the run")


def _cmd_train(args: argparse.Namespace) -> int:
    from multi_actor.loop import train  # torch

    cfg = _config_from_args(args)
    if cfg.dataset != DEFAULT_DATASET_ID and not dataset_exists(cfg.dataset):
        raise missing_dataset_error(cfg.dataset)
    console = _console()
    console.print(f"train {cfg.algo}: {cfg.num_actors} actors "
                  f"({', '.join(a.type for a in cfg.actor_configs)}), w2 weights {cfg.w2_weights}, "
                  f"{cfg.steps} steps on {cfg.dataset} ({cfg.device})")
    with _progress(console, args.quiet, TimeRemainingColumn()) as progress:
        task = progress.add_task(f"train {cfg.algo}", total=cfg.steps)
        summary = train(cfg, resume=args.resume,
                        progress=lambda step, total: progress.update(task, completed=step),
                        on_event=lambda msg: console.print(f"[yellow]{msg}[/]"))
    if summary.last_eval:
        table = Table(title=f"last evaluation ({summary.eval_count} evaluations)", title_justify="left")
        for col in ("actor", "mode", "return", "normalized score"):
            table.add_column(col)
        for key, value in summary.last_eval.items():
            if key.endswith("/return_mean"):
                _, actor, mode, _ = key.split("/")
                score = summary.last_eval.get(key.replace("return_mean", "normalized_score_mean"))
                table.add_row(actor, mode, f"{value:.1f}", "" if score is None else f"{score:.1f}")
        console.print(table)
    resumed = f" (resumed from step {summary.resumed_from})" if summary.resumed_from else ""
    console.print(f"done: {summary.steps} steps{resumed} in {summary.seconds:.1f}s → {summary.out_dir}")
    return EXIT_OK


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", formatter_class=RichHelpFormatter, help="train the multi-actor (POGO) trainer",
                       description="Train actor0 with the base algorithm and actors 1..N-1 with energy + w_i·W2² "
                                   "to their predecessor; evaluate every actor, log to JSONL (and wandb), "
                                   "checkpoint atomically, resume bitwise.")
    _add_config_options(p)
    p.add_argument("--out-dir", default=None, metavar="DIR", help="run directory (default runs/<algo>-a<N>-s<seed>)")
    p.add_argument("--eval-freq", type=int, default=None, metavar="K", help="evaluate every K steps (0: never)")
    p.add_argument("--wandb-mode", default=None, choices=("online", "offline", "disabled"),
                   help="wandb logging (default disabled)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    _add_device(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)


# ------------------------------------------------------------------------------------------------ equivalence


def _equivalence_config(args: argparse.Namespace, algo: str) -> MultiActorConfig:
    overrides = [*args.set, *([f"w2_method={args.w2_method}"] if args.w2_method else [])]
    types = [t.strip() for t in args.actor_types.split(",") if t.strip()] if args.actor_types else None
    return build_config(args.config, overrides, types, algo=algo, num_actors=args.actors, dataset=args.dataset,
                        seed=args.seed, device=args.device)


def _cmd_equivalence(args: argparse.Namespace) -> int:
    algos = list(ALGORITHMS) if args.algo == "all" else [args.algo]
    reference = (args.reference, load_factory(args.reference, "--reference")) if args.reference else None
    candidate = (args.candidate, load_factory(args.candidate, "--candidate")) if args.candidate else None
    configs = {a: _equivalence_config(args, a) for a in algos}
    devices = None
    if args.reference_device or args.candidate_device:
        devices = (args.reference_device or configs[algos[0]].device, args.candidate_device or
                   configs[algos[0]].device)
    options = EquivalenceOptions(steps=args.steps, seed=args.seed if args.seed is not None else 0, mode=args.mode,
                                 rtol=args.rtol, atol=args.atol, full_every=args.full_every,
                                 self_check=not args.no_self_check, bundle_dir=args.bundle_dir,
                                 sync_init=args.sync_init)
    console = _console()
    results = RunResults(command="equivalence")
    with _progress(console, args.quiet) as progress:
        for algo in algos:
            task = progress.add_task(f"equivalence {algo}", total=args.steps)
            on_step = (lambda t, task=task: progress.update(task, completed=t))
            res = equivalence(algo, configs[algo], options, reference, candidate, progress=on_step, devices=devices)
            progress.remove_task(task)
            results.checks.append(res)
            console.print(equivalence_table(res, configs[algo]))
    write_outputs(results, json_path=args.json, junit_path=args.junit, sarif_path=args.sarif,
                  summary_path=args.summary_md)
    bad = [c for c in results.checks if not c.passed]
    if bad:
        for c in bad:
            console.print(f"[bold red]{c.subject}[/]: {c.summary}")
            if c.metrics.get("bundle"):
                console.print(f"  bundle: {c.metrics['bundle']} (pogo-audit inspect {c.metrics['bundle']})")
        return EXIT_CHECK_FAILED
    console.print(f"[bold green]equivalent[/]: critic and actor0 match the reference for {', '.join(algos)}")
    return EXIT_OK


def _add_ci_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="PATH", help="results model as JSON (schema-versioned)")
    p.add_argument("--junit", default=None, metavar="PATH", help="JUnit XML")
    p.add_argument("--sarif", default=None, metavar="PATH", help="SARIF 2.1.0 for findings with a code location")
    p.add_argument("--summary-md", default=None, metavar="PATH", help="GitHub step-summary Markdown (< 1 MiB)")


def _add_equivalence(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "equivalence", formatter_class=RichHelpFormatter,
        help="is the critic and actor0 of the multi-actor trainer still the original algorithm?",
        description="Train the CORL-style single-actor reference and the multi-actor trainer side by side (same "
                    "seed, same initial parameters, identical batches) and compare critic/actor0 losses, parameter "
                    "digests, RNG digests, gradient leaks and the W2 chain at every step. On the first divergence a "
                    "bundle is written for `pogo-audit inspect`.")
    p.add_argument("--algo", default="iql", choices=(*ALGORITHMS, "all"), metavar="ALGO",
                   help=f"{', '.join(TORCH_ALGORITHMS)}, rebrac (JAX) or all (default iql)")
    p.add_argument("--actors", type=_positive_int, default=None, help="actors of the candidate (default 3)")
    p.add_argument("--steps", type=_positive_int, default=300, help="training steps compared (default 300)")
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
    p.add_argument("--rtol", type=_nonneg_float, default=DEFAULT_RTOL, help="tolerance mode: rtol (torch default)")
    p.add_argument("--atol", type=_nonneg_float, default=DEFAULT_ATOL, help="tolerance mode: atol (torch default)")
    p.add_argument("--full-every", type=_positive_int, default=100, metavar="K",
                   help="compare full parameter tensors every K steps and at the end (default 100)")
    p.add_argument("--no-self-check", action="store_true", help="skip running the reference twice")
    p.add_argument("--sync-init", action="store_true",
                   help="start the candidate from the reference's initial parameters and RNG state")
    p.add_argument("--bundle-dir", default=".pogo-audit/bundles", metavar="DIR",
                   help="where first-divergence bundles go (default .pogo-audit/bundles)")
    p.add_argument("--reference", default=None, metavar="MOD:FACTORY", help="external reference trainer factory")
    p.add_argument("--candidate", default=None, metavar="MOD:FACTORY", help="external candidate trainer factory")
    _add_device(p)
    p.add_argument("--reference-device", type=_device, default=None, metavar="DEVICE",
                   help="cross-device audit: the reference's device (random draws shared, tolerance from the "
                        "measured float32 drift)")
    p.add_argument("--candidate-device", type=_device, default=None, metavar="DEVICE",
                   help="cross-device audit: the candidate's device")
    _add_ci_outputs(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_equivalence)


# ---------------------------------------------------------------------------------------------------- mutants


def _cmd_mutants(args: argparse.Namespace) -> int:
    from checks.mutants import catalog, run_mutant  # torch

    mutants = catalog(args.algo)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.name for m in mutants}
        if unknown:
            raise UsageError(f"--only: unknown mutant(s) {', '.join(sorted(unknown))}; see pogo-audit mutants --list")
        mutants = [m for m in mutants if m.name in wanted]
    console = _console()
    if args.list:
        table = Table(title=f"{len(mutants)} mutants", title_justify="left")
        for col in ("mutant", "algo", "bug", "expected observable"):
            table.add_column(col)
        for m in mutants:
            table.add_row(m.name, m.algo, m.description, m.expected)
        console.print(table)
        return EXIT_OK
    if not mutants:
        raise UsageError(f"--algo: no mutants for {args.algo!r}")
    if args.device:
        mutants = [dataclasses.replace(m, overrides=(*m.overrides, f"device={args.device}")) for m in mutants]
    results = RunResults(command="mutants")
    with _progress(console, args.quiet) as progress:
        task = progress.add_task("mutants", total=len(mutants))
        for m in mutants:
            progress.update(task, description=f"mutant {m.name}")
            results.checks.append(run_mutant(m, bundle_dir=args.bundle_dir, seed=args.seed))
            progress.advance(task)
    console.print(kill_matrix_table(results.checks))
    write_outputs(results, json_path=args.json, junit_path=args.junit, sarif_path=args.sarif,
                  summary_path=args.summary_md)
    survivors = [r.subject for r in results.checks if not r.passed]
    if survivors:
        console.print(f"[bold red]surviving mutants[/]: {', '.join(survivors)}")
        return EXIT_CHECK_FAILED
    console.print(f"[bold green]all {len(results.checks)} mutants killed[/]")
    return EXIT_OK


def _add_mutants(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mutants", formatter_class=RichHelpFormatter,
                       help="prove the equivalence check can fail: run the mutation catalog",
                       description="Inject each catalogued bug into our own multi-actor trainer at run time (no file "
                                   "is edited), run the equivalence harness, and print the kill matrix. A mutant "
                                   "that no observable catches fails the command.")
    p.add_argument("--algo", default="all", metavar="ALGO", help="only mutants of this algorithm (default all)")
    p.add_argument("--only", default=None, metavar="NAME,...", help="only these mutants")
    p.add_argument("--list", action="store_true", help="list the catalog and exit")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--bundle-dir", default=".pogo-audit/mutant-bundles", metavar="DIR",
                   help="first-divergence bundles of killed mutants (default .pogo-audit/mutant-bundles)")
    _add_device(p)
    _add_ci_outputs(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_mutants)


# ----------------------------------------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.output)
    console = _console()
    if args.from_files:
        results = merge(args.from_files)
        sources = list(args.from_files)
    else:
        skip = tuple(s.strip() for s in (args.skip or "").split(",") if s.strip())
        unknown = set(skip) - set(STAGES)
        if unknown:
            raise UsageError(f"--skip: unknown check(s) {', '.join(sorted(unknown))}; expected {', '.join(STAGES)}")
        opts = SuiteOptions(
            algos=ALGORITHMS if args.algo == "all" else tuple(args.algo.split(",")), steps=args.steps,
            conformance_steps=args.conformance_steps, fuzz_examples=args.fuzz_examples, seed=args.seed,
            readme=args.readme, skip=skip,
            reference=(args.reference, load_factory(args.reference, "--reference")) if args.reference else None,
            candidate=(args.candidate, load_factory(args.candidate, "--candidate")) if args.candidate else None,
            parser=build_parser(),
        )
        with console.status("running checks", spinner="dots") as status:
            results = run_suite(opts, progress=lambda msg: status.update(f"running checks: {msg}"))
        results_path = out.with_suffix(".results.json")
        results.save(results_path)
        sources = [str(results_path)]
    target = f"external trainer {args.candidate or args.reference}" if (args.candidate or args.reference) \
        else "pogo-audit's own multi-actor trainer and references"
    try:
        if args.format == "json":
            atomic_write_json(out, render_json(results, sources, target))
        elif args.format == "summary":
            atomic_write_text(out, render_summary(results, sources, target))
        else:
            assets_dir = Path(args.assets) if args.assets else out.parent / f"{out.stem}-assets"
            assets = write_assets(results, assets_dir)
            rel = os.path.relpath(assets_dir, out.parent)
            atomic_write_text(out, render_markdown(results, sources, target, assets, rel))
    except (UndefinedError, MissingValue, KeyError, TypeError) as exc:
        raise InputError(f"results ({', '.join(sources)}) lack a field the report needs: {exc}") from None
    summary = render_json(results, sources, target)
    table = Table(title=f"review report → {out}", title_justify="left")
    table.add_column("section")
    table.add_column("score")
    for s in summary["sections"]:
        table.add_row(s["title"], s["stars"])
    table.caption = f"overall {summary['overall']} / 5" if summary["overall"] is not None else "nothing measured"
    console.print(table)
    if args.fail_under is not None and (summary["overall"] or 0) < args.fail_under:
        console.print(f"[bold red]overall score {summary['overall']} is below --fail-under {args.fail_under}[/]")
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", formatter_class=RichHelpFormatter,
                       help="scored review report (Markdown) in which every score comes from a check result",
                       description="Run the checks (docs audit, conformance, equivalence, mutants, fuzz, failure "
                                   "handling, JAX profile) or load saved results, score them with "
                                   "reports/rubric.yaml and render the report with its PNG assets.")
    p.add_argument("--algo", default="all", metavar="ALGO[,ALGO]", help="algorithms to audit (default all)")
    p.add_argument("--steps", type=_positive_int, default=100, help="equivalence steps per algorithm (default 100)")
    p.add_argument("--conformance-steps", type=_positive_int, default=200, help="golden steps compared (default 200)")
    p.add_argument("--fuzz-examples", type=_positive_int, default=200, help="examples per fuzz target (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--skip", default=None, metavar="CHECK,...", help="checks not to run (they show as not measured)")
    p.add_argument("--from", dest="from_files", action="append", default=[], metavar="RESULTS.json",
                   help="render from saved results instead of running checks (repeatable)")
    p.add_argument("-o", "--output", default="report.md", metavar="PATH", help="output file (default report.md)")
    p.add_argument("--assets", default=None, metavar="DIR", help="PNG assets (default <output stem>-assets/)")
    p.add_argument("--format", default="md", choices=("md", "summary", "json"),
                   help="md (default), summary (GitHub step summary, < 1 MiB) or json")
    p.add_argument("--readme", default=None, metavar="PATH", help="README to audit (default: this repository's)")
    p.add_argument("--reference", default=None, metavar="MOD:FACTORY", help="external reference trainer factory")
    p.add_argument("--candidate", default=None, metavar="MOD:FACTORY", help="external candidate trainer factory")
    p.add_argument("--fail-under", type=float, default=None, metavar="SCORE",
                   help="exit 1 when the overall score is below SCORE")
    p.set_defaults(handler=_cmd_report)


# ---------------------------------------------------------------------------------------------------- inspect


def _cmd_inspect(args: argparse.Namespace) -> int:
    ins = inspect_bundle(args.bundle, top_k=args.top, plots_dir=args.plots)
    console = _console()
    for renderable in render_inspection(ins):
        console.print(renderable)
    return EXIT_OK


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", formatter_class=RichHelpFormatter, help="explain a first-divergence bundle",
                       description="Mismatch table per tensor (torch.testing style), the top-K worst entries, the "
                                   "step history of the diverged observable, and PNG plots. Never unpickles.")
    p.add_argument("bundle", help="bundle .npz written by `pogo-audit equivalence` or `pogo-audit mutants`")
    p.add_argument("--top", type=_positive_int, default=10, metavar="K", help="worst entries per tensor (default 10)")
    p.add_argument("--plots", default=None, metavar="DIR", help="write diff_hist.png, heatmap.png, history.png")
    p.set_defaults(handler=_cmd_inspect)


# ----------------------------------------------------------------------------------------------- jax-profile


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _cmd_jax_profile(args: argparse.Namespace) -> int:
    from checks.jax_profile import load_target, profile_algo, profile_target  # jax

    options = dict(steps=args.steps, epochs=args.epochs, warmup=args.warmup, repeats=args.repeats,
                   unjitted_steps=0 if args.no_unjitted else args.unjitted_steps)
    target = load_target(args.target) if args.target else None
    console = _console()
    results = RunResults(command="jax-profile")
    skipped: list[str] = []
    status = contextlib.nullcontext() if args.quiet else \
        console.status("profiling: compiles, transfers, host syncs, jit timings", spinner="dots")
    with status:
        if target is not None:
            results.checks.append(profile_target(target, **options))
        else:
            checks, skipped = profile_algo(args.algo, updates_per_epoch=args.updates_per_epoch,
                                           batch_size=args.batch_size, dataset=args.dataset, actors=args.actors,
                                           seed=args.seed, **options)
            results.checks.extend(checks)
    for res in results.checks:
        for renderable in jax_profile_tables(res):
            console.print(renderable)
    for note in skipped:
        console.print(f"[dim]{escape(note)}[/]")
    write_outputs(results, json_path=args.json, junit_path=args.junit, sarif_path=args.sarif,
                  summary_path=args.summary_md)
    bad = [c for c in results.checks if not c.passed]
    if bad:
        for c in bad:
            first = c.summary.splitlines()[0] if c.summary else c.verdict
            console.print(f"[bold red]{escape(c.subject)}[/]: {escape(first)}")
        return EXIT_CHECK_FAILED
    subjects = ", ".join(c.subject for c in results.checks)
    console.print(f"[bold green]no JAX performance pathology[/] in {escape(subjects)}")
    return EXIT_OK


def _add_jax_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "jax-profile", formatter_class=RichHelpFormatter,
        help="find JAX performance pathologies: recompiles, un-jitted steps, host syncs and transfers",
        description="Profile a JAX training loop: compiles and traces per jitted function (0 allowed after the "
                    "warm-up, with JAX's cache-miss explanation), host-to-device transfers in the steady-state loop, "
                    "a static scan for device-to-host syncs (float(), .item(), np.asarray, jax.device_get, if on "
                    "arrays) in the per-step loop and jitted code, whether the step is jitted, and the measured "
                    "speed of a Python step loop vs one jitted epoch and of the un-jitted step (reported, never "
                    "asserted). Default: the reference ReBRAC, and multi_actor.jax_trainer when it exists.")
    p.add_argument("--algo", default="rebrac", choices=registry.names("jax"),
                   help="JAX reference to profile (default rebrac)")
    p.add_argument("--target", default=None, metavar="MOD:FACTORY",
                   help="profile your own loop instead: factory() returns an object with step() and optionally "
                        "epoch() + updates_per_epoch (see checks/jax_profile/targets.py)")
    p.add_argument("--steps", type=_positive_int, default=20, help="steady-state steps after warm-up (default 20)")
    p.add_argument("--epochs", type=_positive_int, default=2, help="steady-state epochs after warm-up (default 2)")
    p.add_argument("--warmup", type=_positive_int, default=1, help="warm-up steps and epochs (default 1)")
    p.add_argument("--updates-per-epoch", type=_positive_int, default=50,
                   help="rebrac: num_updates_on_epoch (default 50)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="rebrac: batch size (default 256)")
    p.add_argument("--dataset", default="synthetic", metavar="ID",
                   help="rebrac: synthetic (default), embedded, or a local Minari dataset id")
    p.add_argument("--actors", type=_int_list, default=[3], metavar="N[,N...]",
                   help="multi-actor JAX trainer: actor counts to profile (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--unjitted-steps", type=_positive_int, default=3,
                   help="timed steps under jax.disable_jit() (default 3)")
    p.add_argument("--no-unjitted", action="store_true", help="skip the un-jitted timing (eager mode compiles "
                                                                 "every primitive once: slow for big steps)")
    p.add_argument("--repeats", type=_positive_int, default=3, help="timing repeats, median kept (default 3)")
    _add_ci_outputs(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no spinner")
    p.set_defaults(handler=_cmd_jax_profile)


# ------------------------------------------------------------------------------------------------------- fuzz


def _cmd_fuzz(args: argparse.Namespace) -> int:
    from checks.fuzz.registry import properties_for  # torch, hypothesis
    from checks.fuzz.runner import run_fuzz

    props = properties_for(args.target)
    database = None if args.no_database else Path(args.database)
    console = _console()
    results = RunResults(command="fuzz")
    with _progress(console, args.quiet) as progress:
        tasks = {p.name: progress.add_task(f"fuzz {p.name}", total=args.examples) for p in props}
        results.checks.extend(run_fuzz(
            args.target, args.examples, args.seed, database,
            progress=lambda name, done, total: progress.update(tasks[name], completed=done)))
    table = Table(title=f"fuzz {args.target}: {args.examples} examples per property, seed {args.seed}",
                  title_justify="left")
    for col in ("property", "target", "examples", "findings", "seconds", "verdict"):
        table.add_column(col)
    for r in results.checks:
        m = r.metrics
        table.add_row(r.subject, m["target"], str(m["examples_run"]), str(len(m["findings"])), f"{r.seconds:.1f}",
                      "[green]pass[/]" if r.passed else "[bold red]fail[/]")
    console.print(table)
    write_outputs(results, json_path=args.json, junit_path=args.junit, sarif_path=args.sarif,
                  summary_path=args.summary_md)
    bad = [r for r in results.checks if not r.passed]
    if bad:
        for r in bad:
            for f in r.metrics["findings"]:
                console.print(f"[bold red]{f['property']}[/]: {escape(f['exception'])}")
                console.print(f"  minimal example: {escape(f['minimal_example'] or '?')}")
                for line in f["traceback_tail"].splitlines():
                    console.print(f"  {escape(line)}")
        saved = f" (failing examples saved in {database}, replayed first next time)" if database else ""
        console.print(f"[bold red]fuzz found problems[/]: {', '.join(r.subject for r in bad)}{saved}")
        return EXIT_CHECK_FAILED
    total = sum(r.metrics["examples_run"] for r in results.checks)
    props_text = "1 property" if len(results.checks) == 1 else f"{len(results.checks)} properties"
    console.print(f"[bold green]fuzz passed[/]: {total} examples over {props_text}, no findings")
    return EXIT_OK


def _add_fuzz(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuzz", formatter_class=RichHelpFormatter,
                       help="property-based fuzzing of configs, --set overrides, the run logger and the data layer",
                       description="Generate valid and near-valid multi-actor configs, --set overrides, logging "
                                   "payloads and datasets with hypothesis and check their properties: invalid configs "
                                   "raise a ConfigError naming the field, valid ones round-trip through YAML and train "
                                   "one step, the logger writes every scalar once as strict JSON, bad episodes raise a "
                                   "DataError naming the episode and field. Failing examples are shrunk and saved.")
    p.add_argument("--target", default="all", choices=FUZZ_TARGETS, help="configs, logging, data or all (default all)")
    p.add_argument("--examples", type=_positive_int, default=200, metavar="N",
                   help="examples per property (default 200)")
    p.add_argument("--seed", type=int, default=0,
                   help="hypothesis seed; the same seed (and database) gives the same run (default 0)")
    p.add_argument("--database", default=".pogo-audit/hypothesis", metavar="DIR",
                   help="hypothesis example database: failing examples are saved and replayed first "
                        "(default .pogo-audit/hypothesis)")
    p.add_argument("--no-database", action="store_true", help="do not read or write the example database")
    _add_ci_outputs(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_fuzz)


# ------------------------------------------------------------------------------------------------------ main

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_equivalence, _add_inspect, _add_mutants, _add_fuzz, _add_report, _add_jax_profile, _add_conformance,
    _add_train, _add_datasets, _add_traces,
]


def build_parser() -> PogoAuditParser:
    """The ``pogo-audit`` argument parser, with its subcommand parsers in ``commands``."""
    parser = PogoAuditParser(
        prog="pogo-audit",
        formatter_class=RichHelpFormatter,
        description="Machine-checked evidence that a multi-actor (POGO) offline-RL trainer still runs the original "
                    "algorithm for its critic and actor0. Exit codes: 0 ok, 1 check failed, 2 usage/input error.",
    )
    parser.add_argument("--version", action="version", version=f"pogo-audit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=PogoAuditParser, required=True)
    for add in COMMANDS:
        add(sub)
    parser.commands = dict(sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pogo-audit`` console script."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args))
    except PogoAuditError as exc:
        err.print(f"pogo-audit: error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("pogo-audit: interrupted", markup=False)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
