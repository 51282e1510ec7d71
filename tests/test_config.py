"""Multi-actor config: strict validation (one error type naming the field), YAML + overrides, round trip."""

from __future__ import annotations

import math

import pytest

from multi_actor.config import ActorConfig, ConfigError, MultiActorConfig, build_config, from_dict


def resolved(**kw):
    return MultiActorConfig(**kw).resolved()


def test_defaults_fill_weights_and_actor_types():
    cfg = resolved(algo="iql", num_actors=3)
    assert cfg.w2_weights == [1.0, 1.0]
    assert [a.type for a in cfg.actor_configs] == ["gaussian", "gaussian", "gaussian"]
    assert resolved(algo="sac_n", num_actors=2).actor_configs[0].type == "tanh_gaussian"
    det = resolved(algo="iql", num_actors=2, base={"iql_deterministic": True})
    assert det.actor_configs[0].type == "deterministic"


@pytest.mark.parametrize("kw,field", [
    (dict(num_actors=3, w2_weights=[1.0]), "w2_weights"),
    (dict(num_actors=2, w2_weights=[1.0, 2.0]), "w2_weights"),
    (dict(num_actors=3, w2_weights=[1.0, -0.5]), "w2_weights[1]"),
    (dict(num_actors=3, w2_weights=[math.nan, 1.0]), "w2_weights[0]"),
    (dict(num_actors=3, w2_weights=[math.inf, 1.0]), "w2_weights[0]"),
    (dict(num_actors=2, actor_configs=[ActorConfig("gaussian")]), "actor_configs"),
    (dict(num_actors=2, actor_configs=[ActorConfig("gaussian"), ActorConfig("mixture")]), "actor_configs[1].type"),
    (dict(algo="sac_n", num_actors=2, actor_configs=[ActorConfig("deterministic"), ActorConfig("tanh_gaussian")]),
     "actor_configs[0].type"),
    (dict(algo="cql", num_actors=2, actor_configs=[ActorConfig("tanh_gaussian"), ActorConfig("implicit")]),
     "actor_configs[1].type"),
    (dict(algo="td3_bc", num_actors=2,
          actor_configs=[ActorConfig("deterministic"), ActorConfig("deterministic", energy="advantage")]),
     "actor_configs[1].energy"),
    (dict(algo="ppo"), "algo"),
    (dict(num_actors=0), "num_actors"),
    (dict(num_actors="3"), "num_actors"),
    (dict(base={"not_a_field": 1}), "base.not_a_field"),
    (dict(base={"beta": "high"}), "base.beta"),
    (dict(sinkhorn_epsilon=0.0), "sinkhorn_epsilon"),
    (dict(w2_method="exact"), "w2_method"),
    (dict(wandb_mode="cloud"), "wandb_mode"),
])
def test_invalid_configs_raise_config_error_naming_the_field(kw, field):
    with pytest.raises(ConfigError) as err:
        resolved(**kw)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value) and "expected" in str(err.value)


def test_unknown_and_missing_fields_from_a_mapping():
    with pytest.raises(ConfigError, match="'w2_weight'"):
        from_dict({"w2_weight": [1.0]})
    with pytest.raises(ConfigError, match=r"'actor_configs\[1\].type'"):
        from_dict({"num_actors": 2, "actor_configs": [{"type": "gaussian"}, {"energy": "q"}]})
    with pytest.raises(ConfigError, match=r"'actor_configs\[0\].hidden'"):
        from_dict({"num_actors": 1, "actor_configs": [{"type": "gaussian", "hidden": 3}]})


def test_yaml_file_then_flags_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algo: iql\nnum_actors: 3\nw2_weights: [0.5, 2.0]\nbase:\n  beta: 5.0\n")
    cfg = build_config(str(path), ["w2_weights=[0.1, 0.2]", "base.iql_tau=0.8"], steps=7)
    assert cfg.w2_weights == [0.1, 0.2]
    assert cfg.base == {"beta": 5.0, "iql_tau": 0.8}
    assert cfg.steps == 7
    cfg = build_config(str(path), ["actor_configs=[{type: gaussian}, {type: implicit}, {type: deterministic}]",
                                   "actor_configs.1.energy=q"])
    assert [a.type for a in cfg.actor_configs] == ["gaussian", "implicit", "deterministic"]
    assert cfg.actor_configs[1].energy == "q"


def test_cli_actor_count_is_never_reconciled_silently(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("num_actors: 3\nw2_weights: [0.5, 2.0]\n")
    with pytest.raises(ConfigError, match="'w2_weights'"):
        build_config(str(path), [], num_actors=4)


def test_round_trip_through_yaml_is_exact():
    cfg = resolved(algo="cql", num_actors=3, w2_weights=[0.25, 3.0], sinkhorn_epsilon=0.05,
                   actor_configs=[ActorConfig("tanh_gaussian"), ActorConfig("gaussian", lr=1e-4),
                                  ActorConfig("tanh_gaussian", hidden_dim=64, n_hidden=3)],
                   base={"cql_alpha": 5.0})
    import yaml

    again = from_dict(yaml.safe_load(cfg.to_yaml())).resolved()
    assert again == cfg
