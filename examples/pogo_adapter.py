"""Adapter: the hand-written trainer in ``examples/user_pogo_td3bc.py`` seen through pogo-audit's Trainer protocol.

    pogo-audit equivalence --algo td3_bc --candidate examples.pogo_adapter:factory          # equivalent
    pogo-audit equivalence --algo td3_bc --candidate examples.pogo_adapter:broken_factory   # not equivalent

The trainer itself is left untouched; this file only translates names:

* parameters: the user's module attributes -> ``<role>/<module>/<state_dict key>`` with the reference's module
  names (``actor``, ``critic_1``, ...) and its layer naming (``net.*`` where the user wrote ``layers.*``);
* log keys: ``loss/critic`` -> ``critic/critic_loss``, ``loss/actor`` -> ``actor0/loss``, ``chain/<i>/*`` ->
  ``actor<i>/*`` (recorded; ``actor<i>/w2`` is also checked by the W2 oracle through ``policies()``).

Optional methods: ``named_tensors()`` and ``optimizers()`` (optimizer, learning-rate and consumed-gradient
observables: the user's single Adam over both critics compares per parameter with CORL's two), ``evaluate(seed,
episodes)`` (``pogo-audit equivalence --eval-every K``).

Optional hooks for the review report (``pogo-audit hooks`` / ``report --candidate``): ``make_config(**fields)``
(module level: our canonical POGO fields onto the user's ``POGOConfig``), ``log``/``read_log`` (the user's JSONL
logger, in a temporary directory) and ``save_checkpoint``/``load_checkpoint`` (the user's own).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.tensor_table import TensorTable
from examples.user_pogo_td3bc import POGOTD3BC, POGOConfig
from pogo_audit.runtime.data import recover_env

# user attribute -> canonical "<role>/<module>" (role: critic, actor0 or target; module: the reference's name)
MODULES = {
    "pi": "actor0/actor",
    "q1": "critic/critic_1",
    "q2": "critic/critic_2",
    "pi_targ": "target/actor_target",
    "q1_targ": "target/critic_1_target",
    "q2_targ": "target/critic_2_target",
}
LOG_KEYS = {"loss/critic": "critic/critic_loss", "loss/actor": "actor0/loss"}
# our ActorConfig field -> the user's ActorSpec field
ACTOR_FIELDS = {"type": "kind", "hidden_dim": "hidden"}
# TD3+BC hyper-parameters that may come from the audit config (`--set base.alpha=...`)
HPARAMS = ("alpha", "discount", "tau", "policy_noise", "noise_clip", "policy_freq")


def make_config(**fields: Any) -> POGOConfig:
    """Our canonical POGO fields on the user's config: ``actor_configs`` (every actor, actor0 first, ``{"type": ...,
    "hidden_dim": ...}``) -> ``actors`` (``ActorSpec(kind=..., hidden=...)``); ``num_actors``, ``w2_weights``,
    ``seed`` keep their names. Any other field goes to ``POGOConfig`` as given, which rejects unknown names."""
    if "actor_configs" in fields:
        actors = fields.pop("actor_configs")
        fields["actors"] = [{ACTOR_FIELDS.get(k, k): v for k, v in a.items()} if isinstance(a, Mapping) else a
                            for a in actors] if isinstance(actors, (list, tuple)) else actors
    return POGOConfig(**fields)


def canonical(module: str, key: str) -> str:
    """``("q1", "layers.0.weight")`` -> ``"critic/critic_1/net.0.weight"``."""
    return f"{MODULES[module]}/{key.replace('layers.', 'net.', 1)}"


class DeterministicView:
    """What the W2 oracle needs of an actor: ``action(obs)`` and its kind (deterministic here)."""

    stochastic = False
    gaussian = False

    def __init__(self, net: torch.nn.Module):
        self.net = net

    def action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.net(obs)


class ProtocolTrainer(TensorTable):
    def __init__(self, user: POGOTD3BC, dataset_spec):
        self.user = user
        self.spec = dataset_spec
        self.env = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    def step(self, batch) -> dict[str, float]:
        out = {}
        for key, value in self.user.train(batch).items():
            if key.startswith("chain/"):  # chain/<i>/<name> -> actor<i>/<name>
                _, i, name = key.split("/")
                key = f"actor{i}/{name}"
            out[LOG_KEYS.get(key, key)] = value
        return out

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Canonical name -> the user's live tensor (what the optimizer observables map optimizer params with)."""
        named = {canonical(m, k): t for m in MODULES
                 for k, t in getattr(self.user, m).state_dict(keep_vars=True).items()}
        for i, actor in enumerate(self.user.chain, start=1):
            named.update({f"actor{i}/{k}": t for k, t in actor.state_dict(keep_vars=True).items()})
        return named

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers of actor0 and of both critics (one Adam for the two)."""
        return {"pi_opt": self.user.pi_opt, "q_opt": self.user.q_opt}

    def evaluate(self, seed: int, episodes: int) -> dict[str, float]:
        """Mean return of actor0 over ``episodes`` episodes of the dataset's env reset from ``seed + k``; states are
        normalized as in training. Uses no global random stream (the env has its own generator)."""
        if self.env is None:
            self.env = recover_env(self.spec.dataset_id)
        mean = np.asarray(self.spec.state_mean, dtype=np.float32)
        std = np.asarray(self.spec.state_std, dtype=np.float32)
        returns = []
        with torch.no_grad():
            for k in range(episodes):
                obs, _ = self.env.reset(seed=seed + k)
                total, done = 0.0, False
                while not done:
                    state = torch.as_tensor((np.asarray(obs, dtype=np.float32) - mean) / std)
                    obs, reward, terminated, truncated, _ = self.env.step(self.user.pi(state[None])[0].numpy())
                    total += float(reward)
                    done = bool(terminated or truncated)
                returns.append(total)
        return {"eval/actor0/return_mean": float(np.mean(returns))}

    def policies(self) -> list[DeterministicView]:
        return [DeterministicView(actor) for actor in self.user.actors()]

    def log(self, metrics: Mapping[Any, Any], step: int) -> None:
        """The user's JSONL logger, writing to a temporary directory opened at the first call."""
        if self._log_dir is None:
            self._log_dir = tempfile.TemporaryDirectory(prefix="pogo-td3bc-log-")
            self.user.open_log(Path(self._log_dir.name) / "metrics.jsonl")
        self.user.log(metrics, step)

    def read_log(self) -> list[dict[str, Any]]:
        return [] if self.user.logger is None else self.user.logger.read()

    def save_checkpoint(self, path: str) -> None:
        self.user.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        self.user.load_checkpoint(path)


def _build(trainer_cls: type[POGOTD3BC], config, dataset_spec, seed: int) -> ProtocolTrainer:
    hparams = {k: v for k, v in config.base.items() if k in HPARAMS}
    return ProtocolTrainer(trainer_cls(dataset_spec.state_dim, dataset_spec.action_dim, dataset_spec.max_action,
                                       seed=seed, chain_weights=config.w2_weights, **hparams), dataset_spec)


def factory(config, dataset_spec, seed: int) -> ProtocolTrainer:
    """``factory(config, dataset_spec, seed)``: what ``--candidate examples.pogo_adapter:factory`` calls."""
    return _build(POGOTD3BC, config, dataset_spec, seed)


# ------------------------------------------------------------------------------------ a deliberately broken copy


class NoisyChainPOGOTD3BC(POGOTD3BC):
    """The same trainer plus one plausible edit: "a little exploration noise on the chain's states".

    ``torch.randn_like`` draws from the *global* torch RNG -- the stream TD3+BC's target-policy smoothing noise
    comes from. The chain's own loss is fine, but from the next step on the critic sees different noise. pogo-audit
    reports ``rng/torch`` at the first actor step (step 2), then the critic loss at step 3.
    """

    def chain_loss(self, i, anchor, s, a):
        return super().chain_loss(i, anchor, s + 0.01 * torch.randn_like(s), a)


def broken_factory(config, dataset_spec, seed: int) -> ProtocolTrainer:
    return _build(NoisyChainPOGOTD3BC, config, dataset_spec, seed)
