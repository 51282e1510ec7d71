"""Trainer-protocol adapter of ``examples/wild/pogo_branchy.py`` (IQL, TD3+BC, AWAC).

    pogo-audit equivalence --algo iql --candidate examples.wild.branchy_adapter:factory        # as shipped
    pogo-audit equivalence --algo iql --candidate examples.wild.branchy_adapter:clean_factory  # every defect fixed

``factory_fixing(ids)`` / ``factory_only(id)`` build it with a chosen subset of defects fixed; from the command line
``--candidate examples.wild.branchy_adapter:only_B4`` (only B4 left) or ``:fixing_B3_B8`` (B3 and B8 fixed).
"""

from __future__ import annotations

from typing import Any

import torch

from examples.tensor_table import TensorTable
from examples.wild._adapter_common import (
    DeterministicView,
    GaussianView,
    factories,
    obs_stats,
    old_gym_env,
    rename_state,
)

# our canonical names: role/module per user attribute, and the key-prefix rule of each algorithm's reference
NAMES = {
    "iql": {"pi": ("actor0/actor/", [("mu.", "net.net.")]), "q1": ("critic/qf/", [("", "q1.net.")]),
            "q2": ("critic/qf/", [("", "q2.net.")]), "v": ("critic/vf/", [("", "v.net.")]),
            "q1_t": ("target/q_target/", [("", "q1.net.")]), "q2_t": ("target/q_target/", [("", "q2.net.")])},
    "td3_bc": {"pi": ("actor0/actor/", [("", "net.")]), "q1": ("critic/critic_1/", [("", "net.")]),
               "q2": ("critic/critic_2/", [("", "net.")]), "pi_t": ("target/actor_target/", [("", "net.")]),
               "q1_t": ("target/critic_1_target/", [("", "net.")]),
               "q2_t": ("target/critic_2_target/", [("", "net.")])},
    "awac": {"pi": ("actor0/actor/", [("mu.", "_mlp."), ("log_std", "_log_std")]),
             "q1": ("critic/critic_1/", [("", "_mlp.")]), "q2": ("critic/critic_2/", [("", "_mlp.")]),
             "q1_t": ("target/target_critic_1/", [("", "_mlp.")]),
             "q2_t": ("target/target_critic_2/", [("", "_mlp.")])},
}
LOG_KEYS = {"iql/v_loss": "critic/value_loss", "iql/q_loss": "critic/q_loss", "iql/pi_loss": "actor0/loss",
            "td3/q_loss": "critic/critic_loss", "td3/pi_loss": "actor0/loss",
            "awac/q_loss": "critic/critic_loss", "awac/pi_loss": "actor0/loss"}
# reference config field -> the trainer's hyper-parameter name (``--set base.beta=...``)
HPARAMS = {"discount": "gamma", "gamma": "gamma", "tau": "tau", "beta": "beta", "iql_tau": "expectile",
           "max_timesteps": "max_steps", "alpha": "alpha", "policy_noise": "policy_noise",
           "noise_clip": "noise_clip", "policy_freq": "policy_freq", "awac_lambda": "awac_lambda"}


class BranchyTrainer(TensorTable):
    def __init__(self, mod: Any, config: Any, spec: Any, seed: int):
        self.mod, self.spec, self.algo = mod, spec, config.algo
        self.max_action = 1.0 if self.algo == "awac" else float(spec.max_action)
        hp = {HPARAMS[k]: v for k, v in config.base.items() if k in HPARAMS}
        self.S = mod.setup(self.algo, spec.state_dim, spec.action_dim, self.max_action, seed=seed,
                           w2=config.w2_weights, **hp)
        self.env = None

    def step(self, batch) -> dict[str, float]:
        out = {}
        for key, value in self.mod.train_step(self.S, batch).items():
            if key.startswith("chain/"):
                _, i, name = key.split("/")
                key = f"actor{i}/{name}"
            out[LOG_KEYS.get(key, key)] = value
        return out

    def named_tensors(self) -> dict[str, torch.Tensor]:
        named = {}
        for attr, (prefix, rules) in NAMES[self.algo].items():
            named.update(rename_state(getattr(self.S, attr), prefix, rules))
        for i, actor in enumerate(self.S.actors[1:], start=1):
            named.update(rename_state(actor, f"actor{i}/"))
        return named

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"pi_opt": self.S.pi_opt, "q_opt": self.S.q_opt}
        if self.algo == "iql":
            opts["v_opt"] = self.S.v_opt
        return opts

    def policies(self) -> list[Any]:
        if self.algo == "td3_bc":
            return [DeterministicView(net, self.S.max_action) for net in self.S.actors]
        return [GaussianView(net) for net in self.S.actors]

    def evaluate(self, seed: int, episodes: int) -> dict[str, float]:
        if self.env is None:
            self.env = old_gym_env(self.spec)
        mean, std = obs_stats(self.spec)
        return {"eval/actor0/return": self.mod.evaluate(self.S, self.env, seed, episodes, mean, std)}


def _build(mod: Any, config: Any, dataset_spec: Any, seed: int) -> BranchyTrainer:
    return BranchyTrainer(mod, config, dataset_spec, seed)


factory, clean_factory, factory_fixing, factory_only, __getattr__ = factories("pogo_branchy", _build)
