"""``pogo-audit`` command line: argument parsing, rich rendering, exit codes.

Checks return data (the results model); only this module renders. Exit codes: 0 all checks passed, 1 a check
found a problem, 2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich_argparse import RichHelpFormatter

from pogo_audit import __version__
from pogo_audit.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, PogoAuditError, UsageError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``pogo-audit: error: ...``) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


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


# ----------------------------------------------------------------------------------------------- conformance


def _cmd_conformance(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from checks.conformance import implemented_variants, resolve_variants, run_variant
    from pogo_audit.golden import GoldenDir
    from pogo_audit.render import conformance_table
    from pogo_audit.results import RunResults

    variants = resolve_variants(args.algo, implemented_variants())
    golden = GoldenDir(args.golden)
    for v in variants:  # validate every input before spending minutes on the first variant
        g = golden.variant(v)
        _ = g.meta, g.steps, g.init_params
    _ = golden.dataset, golden.batch_idx
    console = _console()
    results = RunResults(command="conformance")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=args.quiet) as progress:
        for v in variants:
            n = golden.variant(v).n_steps if args.steps is None else min(args.steps, golden.variant(v).n_steps)
            task = progress.add_task(f"conformance {v}", total=n)
            res = run_variant(golden, v, args.steps, args.rtol, args.atol,
                              progress=lambda t, task=task: progress.update(task, completed=t))
            results.checks.append(res)
            progress.remove_task(task)
            console.print(conformance_table(res))
    if args.json:
        results.save(args.json)
    failed = [c.subject for c in results.checks if not c.passed]
    if failed:
        console.print(f"[bold red]conformance failed[/]: {', '.join(failed)}")
        return EXIT_CHECK_FAILED
    console.print(f"[bold green]conformance passed[/]: {len(results.checks)} variant(s) match the CORL golden traces")
    return EXIT_OK


def _add_conformance(sub: argparse._SubParsersAction) -> None:
    from checks.conformance import CONFORMANCE_ATOL, CONFORMANCE_RTOL

    p = sub.add_parser(
        "conformance", formatter_class=RichHelpFormatter,
        help="replay the CORL golden traces with the reference algorithms and compare every step",
        description="Replay the golden traces recorded from the original CORL code with our reference algorithms "
                    "and compare every logged scalar, every parameter digest, the RNG fingerprint and the parameter "
                    "snapshots at every step.",
    )
    p.add_argument("--algo", default="all",
                   help="variant: all, iql (both IQL variants), iql_gaussian, iql_deterministic, td3_bc, cql, awac, "
                        "sac_n, edac, rebrac (default: all)")
    p.add_argument("--golden", default=None, metavar="DIR",
                   help="golden directory (default: $POGO_AUDIT_GOLDEN_DIR, else ../shared/corl_golden)")
    p.add_argument("--steps", type=_positive_int, default=None, help="compare only the first N steps (default: all)")
    p.add_argument("--rtol", type=_nonneg_float, default=CONFORMANCE_RTOL, help="relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=_nonneg_float, default=CONFORMANCE_ATOL, help="absolute tolerance (default 1e-6)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results model as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_conformance)


# -------------------------------------------------------------------------------------------------- datasets


def _cmd_datasets_make(args: argparse.Namespace) -> int:
    from pogo_audit.data import dataset_exists, load_transitions, make_dataset

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
    from rich.table import Table

    from pogo_audit.data import datasets_root, list_datasets

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
    from pogo_audit.data import DEFAULT_DATASET_ID, DEFAULT_ENV_ID, DEFAULT_SEED, DEFAULT_STEPS

    p = sub.add_parser("datasets", formatter_class=RichHelpFormatter, help="create and list local Minari datasets",
                       description="Create the embedded default dataset (or another one) with minari.DataCollector, "
                                   "or list the local Minari datasets. Nothing is downloaded.")
    dsub = p.add_subparsers(dest="datasets_command", metavar="{make,list}", parser_class=_Parser, required=True)
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


# ------------------------------------------------------------------------------------------------------ main

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_conformance, _add_datasets]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pogo-audit",
        formatter_class=RichHelpFormatter,
        description="Machine-checked evidence that a multi-actor (POGO) offline-RL trainer still runs the original "
                    "algorithm for its critic and actor0. Exit codes: 0 ok, 1 check failed, 2 usage/input error.",
    )
    parser.add_argument("--version", action="version", version=f"pogo-audit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)
    for add in COMMANDS:
        add(sub)
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
