"""Property-based fuzzing: every property holds on a CI budget, planted bugs are found, fixed bugs stay fixed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import settings

from checks import fuzz
from multi_actor import config as macfg
from multi_actor import logger as malog
from multi_actor.config import ConfigError, apply_override
from pogo_audit import data
from pogo_audit.errors import DataError, InputError, UsageError

CI_EXAMPLES = 100
TRAINER_EXAMPLES = 15
SLOW_EXAMPLES = 2000


def run(name: str, examples: int = CI_EXAMPLES, seed: int = 0, **kw):
    return fuzz.run_property(fuzz.get_property(name), examples, seed, **kw)


def findings(result) -> list[dict]:
    return result.metrics["findings"]


# ---------------------------------------------------------------------------------------------- properties hold


@pytest.mark.parametrize("name", [p.name for p in fuzz.PROPERTIES if not p.expensive])
def test_property_holds_on_ci_budget(name):
    result = run(name)
    assert result.passed, findings(result)
    assert result.metrics["examples_run"] >= CI_EXAMPLES


def test_trainer_property_holds_on_ci_budget():
    result = run("valid_config_trains", TRAINER_EXAMPLES)
    assert result.passed, findings(result)
    assert result.metrics["examples_run"] >= TRAINER_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("target", ["configs", "logging", "data"])
def test_every_target_holds_for_2000_examples(target):
    results = fuzz.run_fuzz(target, SLOW_EXAMPLES, seed=0, database_dir=None)
    assert results and all(r.passed for r in results), [f for r in results for f in findings(r)]
    assert all(r.metrics["examples_run"] >= SLOW_EXAMPLES for r in results)


def test_regression_advantage_energy_finite_when_critic_is_flat():
    """Found by the fuzzer: normalized_q_energy divided by mean|advantage| = 0 (a tiny AWAC critic flat in the
    action) and returned NaN; the scale is now floored."""
    fuzz.check_valid_config_trains(fuzz.TrainCase(
        config={"algo": "awac", "num_actors": 2, "base": {"hidden_dim": 8}, "w2_method": "auto",
                "actor_configs": [{"type": "gaussian", "hidden_dim": 4, "n_hidden": 1},
                                  {"type": "implicit", "hidden_dim": 4, "n_hidden": 1, "energy": "advantage"}]},
        state_dim=1, action_dim=1, batch_size=2, seed=14))


# ------------------------------------------------------------------------------------------------------ runner


def test_run_fuzz_returns_one_result_per_property_with_metrics():
    calls = []
    results = fuzz.run_fuzz("logging", 10, seed=3, database_dir=None,
                            progress=lambda name, done, total: calls.append((name, done, total)))
    assert [(r.check, r.subject, r.verdict) for r in results] == [("fuzz", "logger_writes_scalars_once", "pass")]
    m = results[0].metrics
    assert m == {"examples_run": m["examples_run"], "target": "logging", "seed": 3, "findings": []}
    assert m["examples_run"] >= 10 and calls[-1] == ("logger_writes_scalars_once", 10, 10)
    assert [p.name for p in fuzz.properties_for("all")] == [p.name for p in fuzz.PROPERTIES]
    with pytest.raises(UsageError, match="--target"):
        fuzz.run_fuzz("everything", 10)
    with pytest.raises(UsageError, match="--examples"):
        fuzz.run_fuzz("data", 0)


def _crash_on_float16(monkeypatch):
    original = malog.to_scalar

    def crashing(value):
        if getattr(value, "dtype", None) == np.float16:
            raise TypeError("cannot convert float16 to a JSON scalar")
        return original(value)

    monkeypatch.setattr(malog, "to_scalar", crashing)


def test_planted_logger_crash_on_float16_is_found(monkeypatch):
    _crash_on_float16(monkeypatch)
    result = run("logger_writes_scalars_once")
    assert result.verdict == "fail"
    found = findings(result)
    assert any("float16" in f["exception"] for f in found), found
    f = found[0]
    assert f["property"] == "logger_writes_scalars_once" and "float16" in f["minimal_example"]
    assert "to_scalar" in f["traceback_tail"] or "crashing" in f["traceback_tail"]


def test_planted_silent_w2_weights_truncation_is_found(monkeypatch):
    original = macfg.validate

    def truncating(cfg):
        if isinstance(cfg.w2_weights, list) and isinstance(cfg.num_actors, int):
            cfg.w2_weights = cfg.w2_weights[:max(cfg.num_actors - 1, 0)]
        original(cfg)

    monkeypatch.setattr(macfg, "validate", truncating)
    result = run("invalid_config_rejected")
    assert result.verdict == "fail"
    assert any("'w2_weights' silently accepted" in f["exception"] for f in findings(result)), findings(result)


def test_same_seed_same_minimal_example(monkeypatch):
    _crash_on_float16(monkeypatch)
    first, second = run("logger_writes_scalars_once", seed=7), run("logger_writes_scalars_once", seed=7)
    assert findings(first) and findings(first) == findings(second)


def test_explicit_settings_win_over_the_ci_profile(monkeypatch, tmp_path):
    """Under hypothesis's ``ci`` profile (no database, derandomized) the runner still uses its own database."""
    _crash_on_float16(monkeypatch)
    previous = settings.get_current_profile_name()
    settings.load_profile("ci")
    try:
        result = run("logger_writes_scalars_once", database_dir=tmp_path / "db")
    finally:
        settings.load_profile(previous)
    assert result.verdict == "fail"
    assert any(p.is_file() for p in (tmp_path / "db").rglob("*")), "failing example not saved to the database"


# ------------------------------------------------------------------------------- regressions: multi_actor/config


@pytest.mark.parametrize("data,field", [
    ({"num_actors": 2, "w2_weights": [2**1024]}, "w2_weights[0]"),
    ({"sinkhorn_epsilon": 10**400}, "sinkhorn_epsilon"),
    ({"num_actors": 1, "actor_configs": [{"type": "gaussian", "lr": -(10**400)}]}, "actor_configs[0].lr"),
])
def test_regression_int_too_large_for_a_float_is_a_config_error(data, field):
    """Was OverflowError from math.isfinite in _check_number."""
    fuzz.check_invalid_config_rejected(fuzz.ConfigCase(data, field, "int too large for a float"))


@pytest.mark.parametrize("base", [0, "", "0", True, [("seed", 0.0)], [["beta", 5.0]]])
def test_regression_base_that_is_not_a_mapping_is_a_config_error(base):
    """Was TypeError/ValueError from dict(base) in resolved(), or a list of pairs silently turned into a mapping."""
    fuzz.check_invalid_config_rejected(fuzz.ConfigCase({"algo": "iql", "base": base}, "base", "base not a mapping"))
    with pytest.raises(ConfigError, match="'base'"):
        macfg.build_config(None, ["base=[[beta, 5.0]]"])


@pytest.mark.parametrize("assignment", ["seed.a.b=1", "algo.0.=", "algo..=", "w2_weights.0..=", "base.beta.x.y=1",
                                        "w2_weights.\u00b2=1", "actor_configs.\u00b2.type=gaussian"])
def test_regression_override_through_a_scalar_or_non_ascii_index_is_an_input_error(assignment):
    """Was TypeError (indexing into a str/int/float) or ValueError (int('²')) from apply_override."""
    mapping = {"seed": 3, "algo": "iql", "w2_weights": [0.5, 1.0], "base": {"beta": 5.0},
               "actor_configs": [{"type": "gaussian"}] * 3}
    with pytest.raises(InputError, match="--set") as err:
        apply_override(mapping, assignment)
    assert not isinstance(err.value, ConfigError)
    fuzz.check_overrides(fuzz.OverrideCase({"algo": "iql", "w2_weights": [0.5, 1.0]}, (assignment,)))


# ------------------------------------------------------------------------------------ regressions: pogo_audit/data


def episode(ep_id=7, steps=3, state_dim=2, action_dim=1, **fields):
    ep = {"id": ep_id, "observations": np.arange((steps + 1) * state_dim, dtype=np.float32).reshape(-1, state_dim),
          "actions": np.zeros((steps, action_dim), np.float32), "rewards": np.arange(steps, dtype=np.float32),
          "terminations": np.zeros(steps, bool), "truncations": np.zeros(steps, bool)}
    ep.update(fields)
    return SimpleNamespace(**{k: v for k, v in ep.items() if v is not None})


def assert_rejected(eps, ep_id, field, match):
    with pytest.raises(DataError, match=match):
        data.episodes_to_raw(eps)
    fuzz.check_data_layer(fuzz.DataCase(tuple(eps), "regression", True, ep_id, (field,)))


@pytest.mark.parametrize("field", fuzz.EPISODE_FIELDS)
def test_regression_missing_episode_field_is_a_data_error(field):
    """Was AttributeError from getattr."""
    assert_rejected([episode(1), episode(**{field: None})], 7, field, f"episode 7, field '{field}': missing")


@pytest.mark.parametrize("field", fuzz.EPISODE_FIELDS)
@pytest.mark.parametrize("dtype", [np.complex128, "timedelta64[s]"])
def test_regression_complex_and_timedelta_arrays_are_rejected(field, dtype):
    """Complex values were cast to float32 dropping the imaginary part; timedelta passed as 'numeric'."""
    value = np.asarray(getattr(episode(), field)).astype(dtype)
    assert_rejected([episode(**{field: value})], 7, field, f"episode 7, field '{field}': dtype .* not numeric")


@pytest.mark.parametrize("field", ["observations", "actions", "rewards"])
def test_regression_float64_values_outside_float32_range_are_rejected(field):
    """A finite float64 like 1e300 became ±Inf after the float32 cast and slipped past the finiteness check."""
    value = np.asarray(getattr(episode(), field), dtype=np.float64).copy()
    value.flat[1] = -1e300
    assert_rejected([episode(**{field: value})], 7, field, f"episode 7, field '{field}': .*float32 range")
    zero_length = episode(steps=0, observations=np.full((1, 2), 3.5e38))
    assert_rejected([zero_length, episode(8)], 7, "observations", "float32 range")


@pytest.mark.parametrize("field", ["terminations", "truncations"])
@pytest.mark.parametrize("bad", [math.nan, 2.0, -1.0, 0.5])
def test_regression_flags_must_be_zero_or_one(field, bad):
    """NaN/2/0.5 flags were silently cast to True."""
    flags = np.zeros(3)
    flags[1] = bad
    assert_rejected([episode(**{field: flags})], 7, field, f"episode 7, field '{field}': .* at step 1 is not a 0/1")
    assert len(data.episodes_to_raw([episode(**{field: np.array([0, 1, 0], np.int8)})])["rewards"]) == 3


@pytest.mark.parametrize("field", ["observations", "actions"])
def test_regression_zero_feature_dimensions_are_rejected(field):
    """Episodes without any observation/action feature used to load into a [N, 0] dataset."""
    shape = (4, 0) if field == "observations" else (3, 0)
    assert_rejected([episode(**{field: np.zeros(shape, np.float32)})], 7, field, f"episode 7, field '{field}'")


def transitions_of(eps):
    q = data.qlearning_dataset(data.episodes_to_raw(eps))
    return data.Transitions(dataset_id="fuzz", **q)


def test_regression_preprocess_without_transitions_is_a_data_error():
    """One one-step episode has no transition; preprocess returned NaN mean/std without an error."""
    t = transitions_of([episode(steps=1)])
    assert len(t) == 0
    with pytest.raises(DataError, match="no transitions"):
        data.preprocess(t, True)
    fuzz.check_data_layer(fuzz.DataCase((episode(steps=1),), "regression"))


@pytest.mark.parametrize("value", [1e20, 3e38])
def test_regression_overflowing_normalization_names_the_field(value):
    """std (1e20) or mean (3e38) overflowing float32 gave Inf statistics or an error naming no field."""
    obs = np.zeros((6, 2), np.float32)
    obs[::2, 0] = value
    ep = episode(steps=5, observations=obs)
    with pytest.raises(DataError, match="field 'observations'"):
        data.preprocess(transitions_of([ep]), True)
    fuzz.check_data_layer(fuzz.DataCase((ep,), "regression", False, None, ("observations",)))
