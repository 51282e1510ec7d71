"""Property of the run logger: it never raises, writes each scalar exactly once in strict JSON and skips the rest with
one warning per key."""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from checks.fuzz.strategies.log_payloads import SKIP, Branch, LogCase
from checks.fuzz.violations import fail, first_difference
from multi_actor.logger import RunLogger


def _strict_json(line: str) -> dict[str, Any]:
    """``json.loads`` that rejects NaN/Infinity literals and duplicate keys."""
    def no_constant(name: str) -> None:
        fail(f"non-standard JSON constant {name} in {line[:200]!r}")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(keys) != len(set(keys)):
            fail(f"duplicate keys in one JSONL record: {sorted({k for k in keys if keys.count(k) > 1})}")
        return dict(items)

    return json.loads(line, parse_constant=no_constant, object_pairs_hook=pairs)


def _json_scalar(x: bool | int | float) -> bool | int | float | str:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _flat_expectations(branch: Branch, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(flattened key, expected) in payload order; nested keys are joined with ``/`` as documented."""
    for key, node in branch.items:
        name = f"{prefix}{key}"
        if isinstance(node, Branch):
            yield from _flat_expectations(node, f"{name}/")
        else:
            yield name, node.expected


def check_logger(case: LogCase) -> None:
    """The logger never raises, writes each scalar exactly once with its value (NaN/Inf as strings) in strict
    JSON, and skips the rest with exactly one warning per key across calls."""
    with tempfile.TemporaryDirectory(prefix="pogo-fuzz-") as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = Path(tmp) / "metrics.jsonl"
        logger = RunLogger(path)
        try:
            for step, payload in case.calls:
                logger.log(step, payload.materialize())
        finally:
            logger.close()
        lines = path.read_text(encoding="utf-8").splitlines()
    warned: set[str] = set()
    expected_records = []
    for step, payload in case.calls:
        written: dict[str, Any] = {}
        for key, expected in _flat_expectations(payload):
            if expected is SKIP or key in written or key == "step":
                warned.add(key)
            else:
                written[key] = _json_scalar(expected)
        expected_records.append({"step": step, **written})
    if len(lines) != len(case.calls):
        fail(f"{len(lines)} JSONL lines for {len(case.calls)} calls")
    for i, (line, expected) in enumerate(zip(lines, expected_records)):
        diff = first_difference(expected, _strict_json(line))
        if diff:
            fail(f"record {i}: {diff}")
    messages = [str(w.message) for w in caught if str(w.message).startswith("not logging ")]
    for key in warned:
        count = sum(m.startswith(f"not logging {key!r}:") for m in messages)
        if count != 1:
            fail(f"{count} warnings for skipped key {key!r} (expected exactly one)")
    if len(messages) != len(warned):
        fail(f"{len(messages)} skip warnings for {len(warned)} skipped keys: {messages[:5]}")
