"""Trainer-protocol adapter of ``examples/wild/pogo_closures.py`` (SAC-N, EDAC).

    pogo-audit equivalence --algo sac_n --candidate examples.wild.closures_adapter:factory        # as shipped
    pogo-audit equivalence --algo edac --candidate examples.wild.closures_adapter:clean_factory    # every defect fixed
    pogo-audit equivalence --algo sac_n --candidate examples.wild.closures_adapter:only_C6   # one defect alone

The trainer is a handle of closures holding a lock: ``copy.deepcopy`` of it raises, so nothing here copies it.

``factory_fixing(ids)`` / ``factory_only(id)`` build it with a chosen subset of defects fixed; ``:only_<ID>`` and
``:fixing_<ID>_<ID>`` name such factories on the command line.
"""

from __future__ import annotations

from typing import Any

import torch

from examples.tensor_table import TensorTable
from examples.wild._adapter_common import (
    DeterministicView,
    TanhGaussianView,
    factories,
    old_gym_env,
    rename_state,
)

ACTOR_RULES = [("body.", "trunk."), ("mean.", "mu."), ("log_std.", "log_sigma.")]
LOG_KEYS = {"actor_loss": "actor0/loss", "batch_entropy": "actor0/batch_entropy",
            "q_policy_std": "actor0/q_policy_std"}
# reference config field -> make_trainer keyword (``--set base.eta=...``)
HPARAMS = {"num_critics": "n_critics", "gamma": "gamma", "tau": "tau", "hidden_dim": "hidden", "max_action": "max_action",
           "actor_learning_rate": "lr"}


def ensemble_names(q: Any, prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    for i, (w, b) in enumerate(zip(q.W, q.b)):
        out[f"{prefix}critic.{2 * i}.weight"] = w
        out[f"{prefix}critic.{2 * i}.bias"] = b
    return out


class ClosuresTrainer(TensorTable):
    def __init__(self, mod: Any, config: Any, spec: Any, seed: int):
        self.spec = spec
        hp = {HPARAMS[k]: v for k, v in config.base.items() if k in HPARAMS}
        eta = float(config.base.get("eta", 1.0)) if config.algo == "edac" else 0.0
        self.max_action = float(hp.pop("max_action", 1.0))
        self.t = mod.make_trainer(spec.state_dim, spec.action_dim, seed=seed, eta=eta,
                                  chain_weights=config.w2_weights, max_action=self.max_action, **hp)
        self.env = None

    def step(self, batch) -> dict[str, float]:
        out = {}
        for key, value in self.t.step(batch).items():
            if key.startswith("chain"):  # chain<i>/<name> -> actor<i>/<name>
                head, name = key.split("/")
                key = f"actor{head[len('chain'):]}/{name}"
            else:
                key = LOG_KEYS.get(key, f"critic/{key}")
            out[key] = value
        return out

    def named_tensors(self) -> dict[str, torch.Tensor]:
        named = rename_state(self.t.actor, "actor0/actor/", ACTOR_RULES)
        named.update(ensemble_names(self.t.critic, "critic/critic/"))
        named["critic/log_alpha"] = self.t.log_alpha
        named.update(ensemble_names(self.t.target, "target/target_critic/"))
        for i, net in enumerate(self.t.chain, start=1):
            named.update(rename_state(net, f"actor{i}/"))
        return named

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.t.actor_opt, "critic": self.t.critic_opt, "alpha": self.t.alpha_opt}

    def policies(self) -> list[Any]:
        return [TanhGaussianView(self.t.actor, "dist_params", self.max_action),
                *(DeterministicView(net, self.max_action) for net in self.t.chain)]

    def evaluate(self, seed: int, episodes: int) -> dict[str, float]:
        if self.env is None:
            self.env = old_gym_env(self.spec)
        return {"eval/actor0/return": self.t.evaluate(self.env, seed, episodes)}


def _build(mod: Any, config: Any, dataset_spec: Any, seed: int) -> ClosuresTrainer:
    return ClosuresTrainer(mod, config, dataset_spec, seed)


factory, clean_factory, factory_fixing, factory_only, __getattr__ = factories("pogo_closures", _build)
