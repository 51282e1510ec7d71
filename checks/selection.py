"""One rule for ``--algo`` in every command: ``all``, one algorithm, or a comma list (``iql,td3_bc``), validated
against the algorithms the command can audit; an unknown name or a selection of nothing is a usage error naming
the option and the choices, never an empty run."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from multi_actor import registry
from pogo_audit.runtime.errors import UsageError


def select_algorithms(value: str, option: str = "--algo", framework: str | None = None) -> list[str]:
    """The algorithms ``value`` names, in registry order, among those of ``framework`` (None: every framework)."""
    choices = list(registry.names(framework))
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError(f"{option}: selects no algorithm; expected all or one or more of {', '.join(choices)}")
    if "all" in names:
        return choices
    unknown = [n for n in names if n not in choices]
    if unknown:
        other = [n for n in unknown if n in registry.names()]
        why = f" ({', '.join(other)}: not a {framework} algorithm)" if other else ""
        raise UsageError(f"{option}: unknown algorithm {', '.join(map(repr, unknown))}{why}; expected all or one or "
                         f"more of {', '.join(choices)}, comma-separated")
    return [n for n in choices if n in names]


def algo_type(framework: str | None = None) -> Callable[[str], str]:
    """An argparse ``type`` for a selecting ``--algo``: an unknown name is refused while the command line is parsed
    (one line, exit 2), as a README command the docs audit parses is."""
    def check(value: str) -> str:
        try:
            select_algorithms(value, "--algo", framework)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("--algo: ")) from None
        return value

    return check


def help_text(framework: str | None = None, default: str = "all") -> str:
    """The ``--help`` line of a selecting ``--algo``."""
    return f"all, or one or more of {', '.join(registry.names(framework))}, comma-separated (default {default})"
