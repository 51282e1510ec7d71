"""Regressions the fuzzer found in ``multi_actor/config`` and the trainer, kept as fixed examples of the properties."""

from __future__ import annotations

import pytest

from checks.fuzz.properties.configs import check_invalid_config_rejected, check_overrides, check_valid_config_trains
from checks.fuzz.strategies.config_mutations import ConfigCase
from checks.fuzz.strategies.configs import TrainCase
from checks.fuzz.strategies.overrides import OverrideCase
from multi_actor.config import ConfigError, apply_override, build_config
from pogo_audit.runtime.errors import InputError


def test_regression_advantage_energy_finite_when_critic_is_flat():
    """Found by the fuzzer: normalized_q_energy divided by mean|advantage| = 0 (a tiny AWAC critic flat in the
    action) and returned NaN; the scale is now floored."""
    check_valid_config_trains(TrainCase(
        config={"algo": "awac", "num_actors": 2, "base": {"hidden_dim": 8}, "w2_method": "auto",
                "actor_configs": [{"type": "gaussian", "hidden_dim": 4, "n_hidden": 1},
                                  {"type": "implicit", "hidden_dim": 4, "n_hidden": 1, "energy": "advantage"}]},
        state_dim=1, action_dim=1, batch_size=2, seed=14))


@pytest.mark.parametrize("data,field", [
    ({"num_actors": 2, "w2_weights": [2**1024]}, "w2_weights[0]"),
    ({"sinkhorn_epsilon": 10**400}, "sinkhorn_epsilon"),
    ({"num_actors": 1, "actor_configs": [{"type": "gaussian", "lr": -(10**400)}]}, "actor_configs[0].lr"),
])
def test_regression_int_too_large_for_a_float_is_a_config_error(data, field):
    """Was OverflowError from math.isfinite in _check_number."""
    check_invalid_config_rejected(ConfigCase(data, field, "int too large for a float"))


@pytest.mark.parametrize("base", [0, "", "0", True, [("seed", 0.0)], [["beta", 5.0]]])
def test_regression_base_that_is_not_a_mapping_is_a_config_error(base):
    """Was TypeError/ValueError from dict(base) in resolved(), or a list of pairs silently turned into a mapping."""
    check_invalid_config_rejected(ConfigCase({"algo": "iql", "base": base}, "base", "base not a mapping"))
    with pytest.raises(ConfigError, match="'base'"):
        build_config(None, ["base=[[beta, 5.0]]"])


@pytest.mark.parametrize("assignment", ["seed.a.b=1", "algo.0.=", "algo..=", "w2_weights.0..=", "base.beta.x.y=1",
                                        "w2_weights.\u00b2=1", "actor_configs.\u00b2.type=gaussian"])
def test_regression_override_through_a_scalar_or_non_ascii_index_is_an_input_error(assignment):
    """Was TypeError (indexing into a str/int/float) or ValueError (int('²')) from apply_override."""
    mapping = {"seed": 3, "algo": "iql", "w2_weights": [0.5, 1.0], "base": {"beta": 5.0},
               "actor_configs": [{"type": "gaussian"}] * 3}
    with pytest.raises(InputError, match="--set") as err:
        apply_override(mapping, assignment)
    assert not isinstance(err.value, ConfigError)
    check_overrides(OverrideCase({"algo": "iql", "w2_weights": [0.5, 1.0]}, (assignment,)))
