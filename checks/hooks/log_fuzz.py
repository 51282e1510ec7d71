"""``log(metrics, step)`` fuzzed with our logging payloads (Python/NumPy/torch scalars, 0-d and n-d arrays and
tensors, None, NaN/Inf, non-string keys, nested mappings): the candidate's logging path must never raise, and every
scalar under a string key must reach the sink with its value — not dropped, not mangled.

The sink is read through the adapter's ``read_log() -> list[Mapping]`` when it has one (e.g. its JSONL), else every
``wandb.Run.log`` call is captured (wandb stays real: offline or disabled mode). Nested mappings may be logged nested
or flattened with ``/``; non-scalars and non-string keys may be skipped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from checks.fuzz.strategies.log_payloads import SKIP, Branch, LogCase
from checks.fuzz.violations import fail
from multi_actor.logger import flatten


#: a top-level ``step`` key collides with the step every logger records itself (wandb's and ours): not checked
RESERVED = "step"


def _expected_scalars(branch: Branch, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, node in branch.items:
        if not isinstance(key, str) or (not prefix and key == RESERVED):
            continue
        name = f"{prefix}{key}"
        if isinstance(node, Branch):
            yield from _expected_scalars(node, f"{name}/")
        elif node.expected is not SKIP:
            yield name, node.expected


def _flat(record: Mapping[Any, Any]) -> dict[str, Any]:
    """A logged record with nested mappings flattened to ``a/b`` keys, as our own logger flattens them."""
    return dict(flatten(record))


def _same(expected: Any, got: Any) -> bool:
    """A written scalar equals the given one (NaN/Inf may be written as the strings JSON needs)."""
    if isinstance(got, str):
        return isinstance(expected, float) and not math.isfinite(expected) and got.lower() in (
            "nan" if math.isnan(expected) else ("inf", "infinity") if expected > 0 else ("-inf", "-infinity"))
    try:
        value = float(got.item() if hasattr(got, "item") else got)
    except (TypeError, ValueError, OverflowError):
        return False
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(value)
    if isinstance(expected, int) and not isinstance(expected, bool) and abs(expected) > 2**53:
        return value == float(expected) or got == expected
    return value == float(expected)


@contextmanager
def wandb_capture() -> Iterator[list[dict[str, Any]]]:
    """Every ``wandb.Run.log`` payload while the context is open (the real method still runs)."""
    records: list[dict[str, Any]] = []
    try:
        from wandb.sdk.wandb_run import Run
    except ImportError:  # wandb absent: nothing to capture
        yield records
        return
    original = Run.log

    def log(self: Any, data: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        records.append(dict(data))
        return original(self, data, *args, **kwargs)

    Run.log = log  # type: ignore[method-assign]
    try:
        yield records
    finally:
        Run.log = original  # type: ignore[method-assign]


def check_log_hook(make_trainer: Callable[[], Any], case: LogCase) -> None:
    """Log every call of ``case`` through ``make_trainer()``'s ``log``; compare each scalar with what reached the
    sink during these calls."""
    with wandb_capture() as captured, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a logger warning about a skipped value is its business, not a finding
        trainer = make_trainer()
        readable = callable(getattr(trainer, "read_log", None))
        before = len(list(trainer.read_log())) if readable else 0
        for step, payload in case.calls:
            try:
                trainer.log(payload.materialize(), step)
            except Exception as exc:  # noqa: BLE001 - the finding: the logging path raised
                fail(f"log(metrics, step={step}) raised {type(exc).__name__}: {str(exc)[:300]}")
        records = list(trainer.read_log())[before:] if readable else captured
    merged: dict[str, list[Any]] = {}
    for record in records:
        for k, v in _flat(record).items():
            merged.setdefault(k, []).append(v)
    for step, payload in case.calls:
        names = [name for name, _ in _expected_scalars(payload)]
        for name, expected in _expected_scalars(payload):
            if names.count(name) > 1:  # "a/b" given twice (flat and nested): either may win
                continue
            got = merged.get(name)
            if not got:
                fail(f"scalar {name!r} = {expected!r} (step {step}) never reached the sink")
            if not any(_same(expected, g) for g in got):
                fail(f"scalar {name!r} = {expected!r} (step {step}) written as {got[-1]!r}")


def sink_of(make_trainer: Callable[[], Any]) -> str | None:
    """Where the candidate's logged scalars can be read back: ``read_log``, ``wandb``, or None (not measurable)."""
    with wandb_capture() as captured:
        trainer = make_trainer()
        trainer.log({"pogo_audit/probe": 1.0}, 0)
        if callable(getattr(trainer, "read_log", None)):
            return "read_log" if any("pogo_audit/probe" in _flat(r) for r in trainer.read_log()) else None
    return "wandb" if any("pogo_audit/probe" in _flat(r) for r in captured) else None
