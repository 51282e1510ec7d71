"""``pogo-audit`` command line: argument parsing, rich rendering, exit codes.

Checks return data (the results model); only this module prints, with renderables from :mod:`pogo_audit.cli.render`.
Exit codes: 0 all checks passed, 1 a check found a problem, 2 usage or input error (one line on stderr, no
traceback). The checks that import torch or jax at import time (mutants, fuzz, JAX equivalence and profile, the
training loop), the report's renderer (jinja2) and the bundle inspector are imported by their command's handler, so
that ``pogo-audit --help`` and the main job start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

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

from checks.registry import CHECKS, CheckSpec, add_device, add_glue, export_parts
from checks.selection import algo_type, help_text, select_algorithms
from multi_actor.config import ALGORITHMS, MultiActorConfig, build_config
from pogo_audit import __version__
from pogo_audit.runtime import threads
from pogo_audit.core.argtypes import positive_int
from pogo_audit.runtime.data import (
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
from pogo_audit.runtime.errors import EXIT_CHECK_FAILED, EXIT_OK, InputError, PogoAuditError, UsageError
from pogo_audit.core.exporters import write_outputs
from pogo_audit.core.loading import load_factory, resolve
from pogo_audit.runtime.io import atomic_write_json, atomic_write_text
from pogo_audit.cli.render import DEFAULT_VIEW
from pogo_audit.model.results import Note, RunResults
from reports.review import Claim, ReviewFormatError, parse_review

Handler = Callable[[argparse.Namespace], int]


class PogoAuditParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``pogo-audit: error: ...``) with exit code 2.

    ``commands``: the subcommand parsers by name (set by :func:`build_parser`; the docs audit checks them).
    """

    commands: Mapping[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _console() -> Console:
    """stdout console; when output is not a terminal (CI logs, pipes) at least 140 columns, wider when ``COLUMNS``
    says so (a ``COLUMNS=80`` may come from GNU readline, which exports the size of a terminal we do not write to)."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        columns = os.environ.get("COLUMNS", "")
        console = Console(highlight=False, soft_wrap=False, width=max(140, int(columns) if columns.isdigit() else 0))
    return console


def _progress(console: Console, quiet: bool, *extra_columns: object) -> Progress:
    """A rich progress bar (description, bar, n/N, elapsed) that disappears when done."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra_columns, console=console, transient=True, disable=quiet)



# ---------------------------------------------------------------------------------------------------- traces


def _cmd_traces_pack(args: argparse.Namespace) -> int:
    from pogo_audit.core.tracepack import pack

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



# ----------------------------------------------------------------------------------------------------- checks


def _add_ci_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="PATH", help="results model as JSON (schema-versioned)")
    p.add_argument("--junit", default=None, metavar="PATH", help="JUnit XML")
    p.add_argument("--sarif", default=None, metavar="PATH", help="SARIF 2.1.0 for findings with a code location")
    p.add_argument("--summary-md", default=None, metavar="PATH", help="GitHub step-summary Markdown (< 1 MiB)")


def _run_check(spec: CheckSpec, args: argparse.Namespace) -> int:
    """The one driver of every registered check: progress, its view, the CI outputs, the exit code."""
    console = _console()
    args.cli_parser = build_parser()  # the docs audit checks that the commands a README shows parse
    listing = spec.list_table(args)
    if listing is not None:
        table = Table(title=escape(listing.title), title_justify="left")
        for col in listing.columns:
            table.add_column(col)
        for row in listing.rows:
            table.add_row(*(escape(str(c)) for c in row))
        console.print(table)
        return EXIT_OK
    view = resolve(spec.view) if spec.view else DEFAULT_VIEW
    results = RunResults(command=spec.name)
    notes: list[str] = []
    with _progress(console, args.quiet) as progress:
        tasks: dict[str, Any] = {}

        def step(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        for item in spec.runner()(args, step):
            for task in tasks.values():
                progress.remove_task(task)
            tasks.clear()
            if isinstance(item, Note):
                notes.append(item.text)
                continue
            results.checks.append(item)
            for renderable in (view.each(item) if view.each else []):
                console.print(renderable)
    for renderable in (view.summary(results.checks) if view.summary else []):
        console.print(renderable)
    for note in notes:
        console.print(f"[dim]{escape(note)}[/]")
    write_outputs(results, json_path=args.json, junit_path=args.junit, sarif_path=args.sarif,
                  summary_path=args.summary_md, parts=export_parts())
    bad = [r for r in results.checks if not r.passed]
    if bad:
        for r in bad:
            for line in (view.failure(r) if view.failure else []):
                console.print(line)
        console.print(f"[bold red]{escape(spec.failed(results.checks))}[/]")
        return EXIT_CHECK_FAILED
    console.print(f"[bold green]{escape(spec.passed(results.checks))}[/]")
    return EXIT_OK


def _check_adder(spec: CheckSpec) -> Callable[[argparse._SubParsersAction], None]:
    def add(sub: argparse._SubParsersAction) -> None:
        p = sub.add_parser(spec.name, formatter_class=RichHelpFormatter, help=spec.help, description=spec.description)
        spec.add_options(p)
        _add_ci_outputs(p)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.set_defaults(handler=lambda args: _run_check(spec, args))

    return add


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
    m.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help=f"env steps (default {DEFAULT_STEPS})")
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
    p.add_argument("--actors", type=positive_int, default=None, help="number of actors N (actor0 + N-1 extra)")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML config (fields of MultiActorConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set base.beta=5.0 --set actor_configs.1.type=implicit")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps")
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
    add_device(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)


# ----------------------------------------------------------------------------------------------------- report


def _review(path: str) -> list[Claim]:
    """``--compare-review``: the claims of a hand-written review (exit 2 naming the file when unreadable)."""
    try:
        return parse_review(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--compare-review: cannot read {path}: {exc}") from None
    except ReviewFormatError as exc:
        raise InputError(f"--compare-review: {path}: {exc}") from None


def _report_candidates(values: Sequence[str], algos: Sequence[str], explicit: bool) -> tuple[
        tuple[str, Callable[..., Any]] | None, dict[str, tuple[str, Callable[..., Any]]]]:
    """``--candidate`` values: ``MOD:FACTORY`` for every algorithm, ``ALGO=MOD:FACTORY`` for one (repeatable).

    Returns the all-algorithms candidate (or None) and the per-algorithm ones; a repeated algorithm or catch-all,
    an unknown or non-PyTorch algorithm, one outside an explicit ``--algo``, or (with per-algorithm candidates only)
    an ``--algo`` algorithm left without one is a usage error."""
    from multi_actor import registry

    torch_algos = registry.names("torch")
    every: tuple[str, Callable[..., Any]] | None = None
    per_algo: dict[str, tuple[str, Callable[..., Any]]] = {}
    for value in values:
        algo, sep, spec = value.partition("=")
        if not sep:
            if every is not None:
                raise UsageError(f"--candidate: {value!r}: a candidate for all algorithms was already given "
                                 f"({every[0]}); use ALGO=MOD:FACTORY for the others")
            every = (value, load_factory(value, "--candidate"))
            continue
        if algo not in torch_algos:
            raise UsageError(f"--candidate: {value!r}: expected ALGO=MOD:FACTORY with ALGO one of "
                             f"{', '.join(torch_algos)}")
        if algo in per_algo:
            raise UsageError(f"--candidate: {algo} was given twice")
        if explicit and algo not in algos:
            raise UsageError(f"--candidate: {algo} is not among --algo {','.join(algos)}")
        per_algo[algo] = (spec, load_factory(spec, f"--candidate {algo}"))
    if per_algo and every is None and explicit:
        missing = [a for a in algos if a not in per_algo and a in torch_algos]
        if missing:
            raise UsageError(f"--candidate: no candidate for {', '.join(missing)} (give ALGO=MOD:FACTORY for each, "
                             "or one MOD:FACTORY for all)")
    return every, per_algo


def _cmd_report(args: argparse.Namespace) -> int:
    from jinja2 import UndefinedError

    from checks.suite import STAGES, SuiteOptions, merge, run_suite, stage_name
    from reports.render import MissingValue, render_json, render_markdown, render_summary, write_assets

    out = Path(args.output)
    console = _console()
    if args.from_files:
        results = merge(args.from_files)
        sources = list(args.from_files)
    else:
        skip = tuple(stage_name(s) for s in (args.skip or "").split(",") if s.strip())
        unknown = set(skip) - set(STAGES)
        if unknown:
            raise UsageError(f"--skip: unknown check(s) {', '.join(sorted(unknown))}; expected {', '.join(STAGES)}")
        algos = tuple(select_algorithms(args.algo, "--algo"))
        every, per_algo = _report_candidates(args.candidate, algos, explicit=args.algo != "all")
        if per_algo and every is None and args.algo == "all":
            algos = tuple(per_algo)  # only the algorithms a candidate was given for
        opts = SuiteOptions(
            algos=algos, steps=args.steps,
            conformance_steps=args.conformance_steps, fuzz_examples=args.fuzz_examples, seed=args.seed,
            readme=args.readme, skip=skip,
            reference=(args.reference, load_factory(args.reference, "--reference")) if args.reference else None,
            candidate=every, candidates=per_algo,
            parser=build_parser(), parser_spec="pogo_audit.cli.main:build_parser", device=args.device or "cpu",
            jax_target=args.jax_target,
        )
        with console.status("running checks", spinner="dots") as status:
            results = run_suite(opts, progress=lambda msg: status.update(f"running checks: {msg}"), jobs=args.jobs)
        results_path = out.with_suffix(".results.json")
        results.save(results_path)
        sources = [str(results_path)]
    external = ", ".join([*args.candidate, *([args.jax_target] if args.jax_target else [])]) or args.reference
    target = f"external trainer {external}" if external else "pogo-audit's own multi-actor trainer and references"
    review = _review(args.compare_review) if args.compare_review else None
    try:
        if args.format == "json":
            atomic_write_json(out, render_json(results, sources, target, review))
        elif args.format == "summary":
            atomic_write_text(out, render_summary(results, sources, target))
        else:
            assets_dir = Path(args.assets) if args.assets else out.parent / f"{out.stem}-assets"
            assets = write_assets(results, assets_dir)
            rel = os.path.relpath(assets_dir, out.parent)
            atomic_write_text(out, render_markdown(results, sources, target, assets, rel, review))
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
    p.add_argument("--algo", default="all", type=algo_type(), metavar="ALGO[,ALGO]",
                   help="algorithms to audit: " + help_text())
    p.add_argument("--steps", type=positive_int, default=100, help="equivalence steps per algorithm (default 100)")
    p.add_argument("--conformance-steps", type=positive_int, default=200, help="golden steps compared (default 200)")
    p.add_argument("--fuzz-examples", type=positive_int, default=200, help="examples per fuzz target (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--skip", default=None, metavar="CHECK,...", help="checks not to run (they show as not measured)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="run the checks (equivalence and hooks one algorithm at a time) in N worker processes; the "
                        "results are those of a serial run (default 1: serial)")
    p.add_argument("--from", dest="from_files", action="append", default=[], metavar="RESULTS.json",
                   help="render from saved results instead of running checks (repeatable)")
    p.add_argument("-o", "--output", default="report.md", metavar="PATH", help="output file (default report.md)")
    p.add_argument("--assets", default=None, metavar="DIR", help="PNG assets (default <output stem>-assets/)")
    p.add_argument("--format", default="md", choices=("md", "summary", "json"),
                   help="md (default), summary (GitHub step summary, < 1 MiB) or json")
    p.add_argument("--readme", default=None, metavar="PATH", help="README to audit (default: this repository's)")
    p.add_argument("--reference", default=None, metavar="MOD:FACTORY", help="external reference trainer factory")
    p.add_argument("--candidate", action="append", default=[], metavar="[ALGO=]MOD:FACTORY",
                   help="external candidate trainer factory: MOD:FACTORY for every algorithm, ALGO=MOD:FACTORY for "
                        "one (repeatable; then --algo defaults to the algorithms given)")
    add_glue(p)
    add_device(p)
    p.add_argument("--jax-target", default=None, metavar="MOD:FACTORY",
                   help="review a JAX trainer: its loop is profiled as by jax-profile --target (section 5 on your "
                        "code)")
    p.add_argument("--compare-review", default=None, metavar="REVIEW.md",
                   help="a hand-written review (five numbered sections with star scores): its claims are set next "
                        "to the measured scores in the report's first table")
    p.add_argument("--fail-under", type=float, default=None, metavar="SCORE",
                   help="exit 1 when the overall score is below SCORE")
    p.set_defaults(handler=_cmd_report)


# ------------------------------------------------------------------------------------------------------ adapt


def _cmd_adapt(args: argparse.Namespace) -> int:
    from checks.adapt import crash_line, propose, python_tables  # torch
    from pogo_audit.runtime.data import DatasetSpec
    from pogo_audit.core.loading import import_callable

    factory = import_callable(args.candidate, "--candidate", "examples.pogo_adapter:factory")
    config = build_config(None, args.set, algo=args.algo, num_actors=args.actors, seed=args.seed)
    spec = DatasetSpec(DEFAULT_DATASET_ID, DEFAULT_ENV_ID, args.state_dim, args.action_dim, 1.0)
    console = _console()
    try:
        proposal = propose(args.algo, config, spec, args.candidate, factory, seed=args.seed)
    except Exception as exc:  # the user's factory (or what it built) failed: a finding about the candidate
        console.print(f"[bold red]candidate factory {escape(args.candidate)} raised {escape(crash_line(exc))}[/]")
        return EXIT_CHECK_FAILED
    table = Table(title=f"adapt {args.algo}: reference module → candidate module", title_justify="left")
    for col in ("reference", "candidate", "tensors", "initial values", "note"):
        table.add_column(col)
    for m in proposal.modules:
        table.add_row(escape(m.reference), escape(" + ".join(m.candidates)), str(m.tensors),
                      "equal" if m.values_equal else "differ",
                      escape("; ".join(part for part in ("AMBIGUOUS, check" if m.ambiguous else "", m.tie,
                                                          f"{len(m.candidates)} modules in order" if m.composite
                                                          else "") if part)))
    console.print(table)
    for name, actor in proposal.extra_actors.items():
        console.print(f"extra actor: {escape(name)} → {actor}")
    for name in proposal.unmatched_candidate:
        console.print(f"[yellow]candidate tensor not matched: {escape(name)}[/]")
    for note in proposal.notes:
        console.print(f"[dim]{escape(note)}[/]")
    text = python_tables(proposal)
    if args.output:
        atomic_write_text(Path(args.output), text + "\n")
        console.print(f"adapter tables written to {escape(args.output)}")
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if not proposal.complete:
        for name in proposal.unmatched_reference:
            console.print(f"[bold red]reference tensor not matched: {escape(name)}[/]")
        console.print(f"[bold red]{len(proposal.unmatched_reference)} reference tensor(s) have no candidate match[/]")
        return EXIT_CHECK_FAILED
    console.print(f"[bold green]every reference tensor of {args.algo} has a candidate match "
                  f"({len(proposal.mapping)} tensors)[/]")
    return EXIT_OK


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    from multi_actor import registry

    names = registry.names("torch")
    p = sub.add_parser("adapt", formatter_class=RichHelpFormatter,
                       help="propose the adapter tables (canonical parameter names, log keys) of your trainer",
                       description="Build the reference trainer of --algo and your candidate object from the same "
                                   "seed, match every reference module to one of your modules by its parameter "
                                   "shapes in registration order (ties: equal initial values, then names, then "
                                   "order; all reported), match log keys by equal values on a synthetic batch when "
                                   "the candidate has step(batch), and print Python tables to paste into your "
                                   "adapter. Exit 0: every reference tensor matched; 1: some did not.")
    p.add_argument("--algo", required=True, choices=names, metavar="ALGO", help=", ".join(names))
    p.add_argument("--candidate", required=True, metavar="MOD:FACTORY",
                   help="factory(config, dataset_spec, seed) returning your trainer or its adapter (any object: its "
                        "torch modules are found through its attributes)")
    p.add_argument("--actors", type=positive_int, default=None, help="actors in the config passed on (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of both sides (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--state-dim", type=positive_int, default=11, help="state dimension (default 11, Hopper)")
    p.add_argument("--action-dim", type=positive_int, default=3, help="action dimension (default 3, Hopper)")
    p.add_argument("-o", "--output", default=None, metavar="PATH", help="also write the Python tables there")
    p.set_defaults(handler=_cmd_adapt)


# ---------------------------------------------------------------------------------------------------- inspect


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pogo_audit.cli.inspect_view import render_inspection
    from pogo_audit.core.inspect import inspect_bundle

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
    p.add_argument("--top", type=positive_int, default=10, metavar="K", help="worst entries per tensor (default 10)")
    p.add_argument("--plots", default=None, metavar="DIR", help="write diff_hist.png, heatmap.png, history.png")
    p.set_defaults(handler=_cmd_inspect)




# ------------------------------------------------------------------------------------------------------ main

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    *(_check_adder(spec) for spec in CHECKS.values()), _add_adapt, _add_inspect, _add_report, _add_train, _add_datasets,
    _add_traces,
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
    for command in sub.choices.values():
        command.add_argument("--threads", type=positive_int, default=None, metavar="N",
                             help=f"threads all processes of this command use together (default ${threads.ENV_VAR}, "
                                  "else every core this process may run on)")
    parser.commands = dict(sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pogo-audit`` console script."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        args = build_parser().parse_args(argv)
        threads.pin(threads.budget(args.threads))  # before anything starts a thread pool
        return int(args.handler(args))
    except PogoAuditError as exc:
        err.print(f"pogo-audit: error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("pogo-audit: interrupted", markup=False)
        return 130
    except Exception as exc:  # pogo-audit's own defect: one line naming where, never a traceback
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        text = str(exc).splitlines()[0] if str(exc) else ""
        err.print(f"pogo-audit: internal error: {type(exc).__name__}: {text} at {frame.filename}:{frame.lineno} "
                  "(a defect of pogo-audit itself; please report it with this line)", markup=False)
        return EXIT_CHECK_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
