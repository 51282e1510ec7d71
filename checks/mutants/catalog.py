"""The whole mutation catalog (PyTorch and, where JAX is installed, JAX), and selecting from it."""

from __future__ import annotations

from typing import Any

from checks.mutants.model import Mutant
from checks.mutants.torch_catalog import torch_catalog
from checks.selection import select_algorithms
from pogo_audit.model.results import Listing
from pogo_audit.runtime.errors import UsageError


def catalog(algo: str | None = None) -> list[Mutant]:
    """All mutants (optionally of one algorithm), including the JAX ones when JAX is installed."""
    mutants = torch_catalog()
    try:
        from checks.mutants.jax_catalog import jax_catalog  # imports jax
    except ModuleNotFoundError:
        pass
    else:
        mutants += jax_catalog()
    return [m for m in mutants if algo in (None, "all", m.algo)]


def select(args: Any) -> list[Mutant]:
    """The mutants of ``--algo`` (the one selection rule: all, one or a comma list) and ``--only``; a selection of no
    mutant is a usage error naming the option."""
    algos = select_algorithms(args.algo, "--algo")
    mutants = [m for m in catalog() if m.algo in algos]
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {m.name for m in mutants}
        if unknown:
            raise UsageError(f"--only: unknown mutant(s) {', '.join(sorted(unknown))} for --algo {args.algo}; see "
                             "pogo-audit mutants --list")
        mutants = [m for m in mutants if m.name in wanted]
    if not mutants:
        raise UsageError(f"--algo {args.algo}: no mutant of the catalog is selected; see pogo-audit mutants --list")
    return mutants


def listing(args: Any) -> Listing:
    """``pogo-audit mutants --list``: the selected catalog as a table."""
    mutants = select(args)
    return Listing(f"{len(mutants)} mutants", ("mutant", "algo", "bug", "expected observable"),
                   [(m.name, m.algo, m.description, m.expected) for m in mutants])
