"""argparse value types shared by the CLI and the check registry: each rejects a bad value with one line."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _ints(text: str, minimum: int, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what} integers, got {text!r}") from None
    if not values or min(values) < minimum:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what} integers, got {text!r}")
    return values


def int_list(text: str) -> list[int]:
    """``1,2,3``: positive integers (actor counts)."""
    return _ints(text, 1, "positive")


def seed_list(text: str) -> list[int]:
    """``0,1,2``: non-negative integers (seeds)."""
    return _ints(text, 0, "non-negative")
