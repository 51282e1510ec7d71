"""Fuzz runner: one result per property with its metrics, usage errors for bad targets/budgets, reproducible minimal
examples per seed, and its own settings winning over hypothesis's ``ci`` profile."""

from __future__ import annotations

import pytest
from fuzz_support import findings, run
from hypothesis import settings

from checks.fuzz.registry import PROPERTIES, properties_for
from checks.fuzz.runner import run_fuzz
from pogo_audit.runtime.errors import UsageError


def test_run_fuzz_returns_one_result_per_property_with_metrics():
    calls = []
    results = run_fuzz("logging", 10, seed=3, database_dir=None,
                            progress=lambda name, done, total: calls.append((name, done, total)))
    assert [(r.check, r.subject, r.verdict) for r in results] == [("fuzz", "logger_writes_scalars_once", "pass")]
    m = results[0].metrics
    assert m == {"examples_run": m["examples_run"], "target": "logging", "seed": 3, "findings": []}
    assert m["examples_run"] >= 10 and calls[-1] == ("logger_writes_scalars_once", 10, 10)
    assert [p.name for p in properties_for("all")] == [p.name for p in PROPERTIES if p.target != "candidates"]
    with pytest.raises(UsageError, match="--target"):
        run_fuzz("everything", 10)
    with pytest.raises(UsageError, match="--examples"):
        run_fuzz("data", 0)


@pytest.mark.heavy
@pytest.mark.usefixtures("logger_crashes_on_float16")
def test_same_seed_same_minimal_example():
    first, second = run("logger_writes_scalars_once", seed=7), run("logger_writes_scalars_once", seed=7)
    assert findings(first) and findings(first) == findings(second)


@pytest.mark.usefixtures("logger_crashes_on_float16")
def test_explicit_settings_win_over_the_ci_profile(tmp_path):
    """Under hypothesis's ``ci`` profile (no database, derandomized) the runner still uses its own database."""
    previous = settings.get_current_profile_name()
    settings.load_profile("ci")
    try:
        result = run("logger_writes_scalars_once", database_dir=tmp_path / "db")
    finally:
        settings.load_profile(previous)
    assert result.verdict == "fail"
    assert any(p.is_file() for p in (tmp_path / "db").rglob("*")), "failing example not saved to the database"


def test_a_flaky_failure_is_reported_through_the_failure_it_wraps():
    from hypothesis import strategies as st

    from checks.fuzz.registry import Property
    from checks.fuzz.runner import run_property

    calls = {"n": 0}

    def fails_once(value: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError(f"step diverged for {value}")

    result = run_property(Property("fails_once", "configs", lambda: st.integers(0, 9), fails_once), 5, 0, None)
    assert result.verdict == "fail"
    (finding,) = result.metrics["findings"]
    assert finding["exception"].startswith("flaky (passed when replayed): ValueError: step diverged for ")
    assert finding["minimal_example"] is not None and "fails_once" in finding["traceback_tail"]
