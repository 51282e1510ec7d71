"""Helpers of the fuzz tests: run one property by name on the CI budget, read its findings."""

from __future__ import annotations

from typing import Any

from checks.fuzz.registry import get_property
from checks.fuzz.runner import run_property
from pogo_audit.model.results import CheckResult

CI_EXAMPLES = 100


def run(name: str, examples: int = CI_EXAMPLES, seed: int = 0, **kw: Any) -> CheckResult:
    return run_property(get_property(name), examples, seed, **kw)


def findings(result: CheckResult) -> list[dict]:
    return result.metrics["findings"]
