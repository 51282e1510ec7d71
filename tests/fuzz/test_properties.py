"""Fuzz properties: every property holds on a CI budget (and 2000 examples in the slow run); planted bugs in the config
validator and the logger are found."""

from __future__ import annotations

import pytest
from fuzz_support import CI_EXAMPLES, findings, run

from checks.fuzz.registry import PROPERTIES
from checks.fuzz.runner import run_property
from multi_actor import config

TRAINER_EXAMPLES = 15
SLOW_EXAMPLES = 2000


@pytest.mark.parametrize("name", [p.name for p in PROPERTIES if not p.expensive])
def test_property_holds_on_ci_budget(name):
    result = run(name)
    assert result.passed, findings(result)
    assert result.metrics["examples_run"] >= CI_EXAMPLES


@pytest.mark.heavy
def test_trainer_property_holds_on_ci_budget():
    result = run("valid_config_trains", TRAINER_EXAMPLES)
    assert result.passed, findings(result)
    assert result.metrics["examples_run"] >= TRAINER_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in PROPERTIES if p.target in ("configs", "logging", "data")])
def test_every_property_holds_for_2000_examples(name):
    """One test per property, so that the test workers share the long budget."""
    result = run_property(next(p for p in PROPERTIES if p.name == name), SLOW_EXAMPLES, 0, None)
    assert result.passed, findings(result)
    assert result.metrics["examples_run"] >= SLOW_EXAMPLES


@pytest.mark.usefixtures("logger_crashes_on_float16")
def test_planted_logger_crash_on_float16_is_found():
    result = run("logger_writes_scalars_once")
    assert result.verdict == "fail"
    found = findings(result)
    assert any("float16" in f["exception"] for f in found), found
    f = found[0]
    assert f["property"] == "logger_writes_scalars_once" and "float16" in f["minimal_example"]
    assert "to_scalar" in f["traceback_tail"] or "crashing" in f["traceback_tail"]


def test_planted_silent_w2_weights_truncation_is_found(monkeypatch):
    original = config.validate

    def truncating(cfg):
        if isinstance(cfg.w2_weights, list) and isinstance(cfg.num_actors, int):
            cfg.w2_weights = cfg.w2_weights[:max(cfg.num_actors - 1, 0)]
        original(cfg)

    monkeypatch.setattr(config, "validate", truncating)
    result = run("invalid_config_rejected")
    assert result.verdict == "fail"
    assert any("'w2_weights' silently accepted" in f["exception"] for f in findings(result)), findings(result)
