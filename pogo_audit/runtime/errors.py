"""Error types and exit codes shared by every command.

Exit codes follow ruff: 0 all checks passed, 1 a check found a problem, 2 usage or input error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


class PogoAuditError(Exception):
    """Base of the errors the CLI turns into one clear line and exit code 2."""

    exit_code = EXIT_USAGE


class UsageError(PogoAuditError):
    """A command-line argument or option is wrong."""


class InputError(PogoAuditError):
    """A file, directory or dataset given to a command is missing, corrupt or of the wrong kind."""


class MissingHookError(UsageError):
    """An option needs an optional hook of the Trainer protocol (``evaluate``, ``named_tensors``...) that a trainer
    lacks: ``option`` names the option, ``hook`` the method."""

    def __init__(self, option: str, hook: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.hook = option, hook


class DataError(InputError):
    """A dataset cannot be turned into transitions; the message names the episode and field."""
