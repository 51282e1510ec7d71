"""Trainer-protocol adapter of ``examples/wild/pogo_cql_script.py`` (CQL).

    pogo-audit equivalence --algo cql --candidate examples.wild.cql_adapter:factory         # as shipped
    pogo-audit equivalence --algo cql --candidate examples.wild.cql_adapter:clean_factory   # every defect fixed
    pogo-audit equivalence --algo cql --candidate examples.wild.cql_adapter:only_Q5   # one defect alone

``factory_fixing(ids)`` / ``factory_only(id)`` build it with a chosen subset of defects fixed; ``:only_<ID>`` and
``:fixing_<ID>_<ID>`` name such factories on the command line.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from examples.tensor_table import TensorTable
from examples.wild._adapter_common import (
    DeterministicView,
    TanhGaussianView,
    factories,
    obs_stats,
    old_gym_env,
    rename_state,
)

LOG_KEYS = {"log_pi": "actor0/log_pi", "policy_loss": "actor0/loss"}
# reference config field -> the script's CONFIG field (``--set base.cql_alpha=...``)
HPARAMS = {"discount": "discount", "policy_lr": "policy_lr", "qf_lr": "qf_lr", "soft_target_update_rate": "tau",
           "target_update_period": "target_update_period", "alpha_multiplier": "alpha_multiplier",
           "use_automatic_entropy_tuning": "auto_alpha", "backup_entropy": "backup_entropy",
           "cql_n_actions": "n_actions", "cql_importance_sample": "importance_sample", "cql_lagrange": "lagrange",
           "cql_target_action_gap": "target_action_gap", "cql_temp": "temp", "cql_alpha": "cql_alpha",
           "cql_clip_diff_min": "clip_diff_min", "cql_clip_diff_max": "clip_diff_max",
           "orthogonal_init": "orthogonal_init", "q_n_hidden_layers": "q_n_hidden_layers", "bc_steps": "bc_steps",
           "policy_log_std_multiplier": "log_std_multiplier"}


class CQLScriptTrainer(TensorTable):
    def __init__(self, mod: Any, config: Any, spec: Any, seed: int):
        self.mod, self.spec = mod, spec
        cfg = copy.copy(mod.CONFIG)
        for ref_name, value in config.base.items():
            if ref_name in HPARAMS:
                setattr(cfg, HPARAMS[ref_name], value)
        cfg.chain_weights = list(config.w2_weights)
        self.ag = mod.build_agent(spec.state_dim, spec.action_dim, float(spec.max_action), cfg, seed=seed)
        self.env = None

    def step(self, batch) -> dict[str, float]:
        out = {}
        for key, value in self.mod.update(self.ag, batch).items():
            if key.startswith("chain_"):  # chain_<i>/<name> -> actor<i>/<name>
                head, name = key.split("/")
                out[f"actor{head[len('chain_'):]}/{name}"] = value
            else:
                name = key.removeprefix("train/")
                out[LOG_KEYS.get(name, f"critic/{name}")] = value
        return out

    def named_tensors(self) -> dict[str, torch.Tensor]:
        ag = self.ag
        named = {}
        for attr, prefix in (("critic_1", "critic/critic_1/"), ("critic_2", "critic/critic_2/"),
                             ("target_1", "target/target_critic_1/"), ("target_2", "target/target_critic_2/")):
            named.update(rename_state(getattr(ag, attr), prefix, [("net.", "network.")]))
        named.update(rename_state(ag.actor, "actor0/actor/", [("net.", "base_network."),
                                                                ("log_std_mult", "log_std_multiplier.constant"),
                                                                ("log_std_offset", "log_std_offset.constant")]))
        named["critic/log_alpha/constant"] = ag.log_alpha
        named["critic/log_alpha_prime/constant"] = ag.log_alpha_prime
        for i, net in enumerate(ag.chain, start=1):
            named.update(rename_state(net, f"actor{i}/"))
        return named

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        ag = self.ag
        return {"q": ag.q_opt, "actor": ag.actor_opt, "alpha": ag.alpha_opt, "alpha_prime": ag.alpha_prime_opt}

    def policies(self) -> list[Any]:
        m = self.ag.actor.max_action
        return [TanhGaussianView(self.ag.actor, "mean_std", m), *(DeterministicView(net, m) for net in self.ag.chain)]

    def evaluate(self, seed: int, episodes: int) -> dict[str, float]:
        if self.env is None:
            self.env = old_gym_env(self.spec)
        mean, std = obs_stats(self.spec)
        return self.mod.evaluate(self.env, self.ag.actor, episodes, seed, mean, std,
                                 self.spec.ref_min_score, self.spec.ref_max_score)


def _build(mod: Any, config: Any, dataset_spec: Any, seed: int) -> CQLScriptTrainer:
    return CQLScriptTrainer(mod, config, dataset_spec, seed)


factory, clean_factory, factory_fixing, factory_only, __getattr__ = factories("pogo_cql_script", _build)
