"""Regressions the fuzzer found in ``pogo_audit/data``, kept as fixed examples of the data-layer property."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from checks.fuzz.properties.data import check_data_layer
from checks.fuzz.strategies.episodes import EPISODE_FIELDS, DataCase
from pogo_audit.runtime import data
from pogo_audit.runtime.errors import DataError


def episode(ep_id=7, steps=3, state_dim=2, action_dim=1, **fields):
    ep = {"id": ep_id, "observations": np.arange((steps + 1) * state_dim, dtype=np.float32).reshape(-1, state_dim),
          "actions": np.zeros((steps, action_dim), np.float32), "rewards": np.arange(steps, dtype=np.float32),
          "terminations": np.zeros(steps, bool), "truncations": np.zeros(steps, bool)}
    ep.update(fields)
    return SimpleNamespace(**{k: v for k, v in ep.items() if v is not None})


def assert_rejected(eps, ep_id, field, match):
    with pytest.raises(DataError, match=match):
        data.episodes_to_raw(eps)
    check_data_layer(DataCase(tuple(eps), "regression", True, ep_id, (field,)))


@pytest.mark.parametrize("field", EPISODE_FIELDS)
def test_regression_missing_episode_field_is_a_data_error(field):
    """Was AttributeError from getattr."""
    assert_rejected([episode(1), episode(**{field: None})], 7, field, f"episode 7, field '{field}': missing")


@pytest.mark.parametrize("field", EPISODE_FIELDS)
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
    check_data_layer(DataCase((episode(steps=1),), "regression"))


@pytest.mark.parametrize("value", [1e20, 3e38])
def test_regression_overflowing_normalization_names_the_field(value):
    """std (1e20) or mean (3e38) overflowing float32 gave Inf statistics or an error naming no field."""
    obs = np.zeros((6, 2), np.float32)
    obs[::2, 0] = value
    ep = episode(steps=5, observations=obs)
    with pytest.raises(DataError, match="field 'observations'"):
        data.preprocess(transitions_of([ep]), True)
    check_data_layer(DataCase((ep,), "regression", False, None, ("observations",)))
