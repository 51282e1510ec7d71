"""One adapter per base algorithm: how the multi-actor trainer builds and reads the reference trainer.

An adapter never re-writes a loss formula: the critic and actor0 are trained by the reference trainer's own
``train_step``; the `base` energy of actor i ≥ 1 calls the reference module's actor-objective functions on actor i's
actions (drawn from the extra actors' own generator). Adapters also say which logged keys are critic-side and which
are actor0-side (the canonical observables the equivalence harness compares).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, ClassVar

import torch

from multi_actor import registry

from multi_actor.policies import (
    AWACGaussianView,
    CQLTanhGaussianView,
    DeterministicView,
    IQLGaussianView,
    Policy,
    SACNTanhGaussianView,
)


Q_SCALE_FLOOR = 1e-6


def normalized_q_energy(q: torch.Tensor) -> torch.Tensor:
    """Energy ``q``: ``-mean(Q) / mean|Q|`` with the scale detached (TD3+BC's λ normalization, no BC term).

    The scale is floored at ``Q_SCALE_FLOOR``: an all-zero Q (or advantage, e.g. a critic flat in the action)
    gives energy 0 instead of 0/0 = NaN.
    """
    return -q.mean() / q.abs().mean().detach().clamp_min(Q_SCALE_FLOOR)


def _min_q(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    return torch.min(q1, q2).reshape(-1)


class TorchAlgorithm:
    """Base adapter; subclasses fill in the algorithm specifics."""

    name: ClassVar[str] = ""
    #: logged key -> canonical observable; unlisted keys are critic-side (``critic/<key>``)
    log_roles: ClassVar[dict[str, str]] = {}
    framework: ClassVar[str] = "torch"

    @property
    def module(self) -> ModuleType:
        return registry.algorithm(self.name).reference

    def config_class(self) -> type:
        return self.module.Config

    def base_config(self, overrides: dict[str, Any]) -> Any:
        return dataclasses.replace(self.config_class()(), **overrides)

    def canonical(self, key: str) -> str:
        return self.log_roles.get(key, f"critic/{key}")

    # data ----------------------------------------------------------------------------------------------------
    def normalize_states(self, cfg: Any) -> bool:
        return bool(getattr(cfg, "normalize", True))

    def reward_rule(self, cfg: Any) -> tuple[str, dict[str, float]]:
        return ("corl", {}) if getattr(cfg, "normalize_reward", False) else ("none", {})

    def max_action(self, cfg: Any, env_max_action: float) -> float:
        return env_max_action

    def batch_size(self, cfg: Any) -> int:
        return int(cfg.batch_size)

    # trainer -------------------------------------------------------------------------------------------------
    def build_base(self, cfg: Any, state_dim: int, action_dim: int, max_action: float, device: str = "cpu"):
        """The reference trainer on ``device`` (its networks are initialized on the CPU, then moved, as in CORL)."""
        return self.module.build(cfg, state_dim, action_dim, max_action, device)

    def actor0_view(self, base: Any, action_dim: int, max_action: float) -> Policy:
        """actor0 (the reference's own module) in the Policy interface."""
        raise NotImplementedError

    def actor_lr(self, cfg: Any) -> float:
        raise NotImplementedError

    def critic_value(self, base: Any, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s, a) as the algorithm's actor objective sees it, [B]."""
        raise NotImplementedError

    def base_energy(self, base: Any, policy: Policy, obs: torch.Tensor, actions: torch.Tensor,
                    gen: torch.Generator, shared: dict[str, torch.Tensor]) -> torch.Tensor:
        """The algorithm's own actor objective evaluated on ``policy``."""
        raise NotImplementedError

    def advantage(self, base: Any, policy: Policy, obs: torch.Tensor, gen: torch.Generator,
                  shared: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"energy 'advantage' is not defined for {self.name}")

    def start_outputs(self, base: Any) -> dict[str, tuple[torch.nn.Module, int]]:
        """Base modules whose forward on this step's batch at their start-of-step parameters an energy reuses:
        name -> (module, how many leading batch tensors it takes: 1 states, 2 states and actions). The trainer
        records those forwards while the base step runs and passes them as ``shared["start/<name>"]``."""
        return {}

    def energy(self, kind: str, base: Any, policy: Policy, obs: torch.Tensor, actions: torch.Tensor,
               gen: torch.Generator, shared: dict[str, torch.Tensor]) -> torch.Tensor:
        """Energy ``kind`` of ``policy``. ``shared`` holds no-grad quantities of the frozen base on this batch that
        every extra actor of the step needs (computed by the first that asks, reused by the others) and the
        recorded start-of-step forwards of :meth:`start_outputs`."""
        if kind == "base":
            return self.base_energy(base, policy, obs, actions, gen, shared)
        if kind == "q":
            return normalized_q_energy(self.critic_value(base, obs, policy.action(obs, gen)))
        if kind == "advantage":
            return normalized_q_energy(self.advantage(base, policy, obs, gen, shared))
        raise ValueError(kind)

    def actor_update_due(self, base: Any) -> bool:
        """Whether actors i ≥ 1 update on this step (checked after the base step; actor delay where it applies)."""
        return True


class IQL(TorchAlgorithm):
    name = "iql"
    log_roles = {"value_loss": "critic/value_loss", "q_loss": "critic/q_loss", "actor_loss": "actor0/loss"}

    def actor0_view(self, base, action_dim, max_action):
        if base.config.iql_deterministic:
            return DeterministicView(base.actor, action_dim, max_action, eval_scale=max_action)
        return IQLGaussianView(base.actor, action_dim, max_action)

    def actor_lr(self, cfg):
        return cfg.actor_lr

    def critic_value(self, base, obs, actions):
        return base.qf(obs, actions)

    def start_outputs(self, base):
        return {"q_target": (base.q_target, 2), "vf": (base.vf, 1)}

    def _adv_data(self, base, obs, actions, shared):
        """The advantage actor0's AWR update used at this step, ``Q_target(s, a) - V(s)`` under the critic at the
        start of the step (CORL computes it before the value update): the forwards the base step ran, reused.
        Without them (a modified base step that made no such forward, or a fresh evaluation) it is computed from
        ``base`` as it is."""
        if "adv" not in shared:
            with torch.no_grad():
                q, v = shared.get("start/q_target"), shared.get("start/vf")
                if q is None or v is None:
                    q, v = base.q_target(obs, actions), base.vf(obs)
                shared["adv"] = q - v
        return shared["adv"]

    def base_energy(self, base, policy, obs, actions, gen, shared):
        iql = self.module
        if policy.has_log_prob:
            bc = -policy.log_prob(obs, actions)
        else:
            bc = iql.bc_losses(policy.action(obs, gen), actions)
        return iql.awr_loss(self._adv_data(base, obs, actions, shared), bc, base.beta)

    def advantage(self, base, policy, obs, gen, shared):
        if "v" not in shared:
            shared["v"] = base.vf(obs).detach()
        return base.qf(obs, policy.action(obs, gen)) - shared["v"]


class TD3BC(TorchAlgorithm):
    name = "td3_bc"
    log_roles = {"critic_loss": "critic/critic_loss", "actor_loss": "actor0/loss"}

    def actor0_view(self, base, action_dim, max_action):
        return DeterministicView(base.actor, action_dim, max_action)

    def actor_lr(self, cfg):
        return self.module.LEARNING_RATE

    def critic_value(self, base, obs, actions):
        return base.critic_1(obs, actions).reshape(-1)

    def base_energy(self, base, policy, obs, actions, gen, shared):
        pi = policy.action(obs, gen)
        return self.module.td3_bc_actor_loss(pi, base.critic_1(obs, pi), actions, base.alpha)

    def actor_update_due(self, base):
        return base.total_it % base.policy_freq == 0


class CQL(TorchAlgorithm):
    name = "cql"
    log_roles = {"log_pi": "actor0/log_pi", "policy_loss": "actor0/loss"}

    def reward_rule(self, cfg):
        if not cfg.normalize_reward:
            return "none", {}
        return "cql", {"reward_scale": cfg.reward_scale, "reward_bias": cfg.reward_bias}

    def actor0_view(self, base, action_dim, max_action):
        return CQLTanhGaussianView(base.actor, action_dim, max_action)

    def actor_lr(self, cfg):
        return cfg.policy_lr

    def critic_value(self, base, obs, actions):
        return _min_q(base.critic_1(obs, actions), base.critic_2(obs, actions))

    def _alpha(self, base):
        with torch.no_grad():
            if base.use_automatic_entropy_tuning:
                return self.module.alpha_from_log(base.log_alpha(), base.alpha_multiplier)
            return torch.tensor(base.alpha_multiplier)

    def base_energy(self, base, policy, obs, actions, gen, shared):
        a, log_pi = policy.sample_with_log_prob(obs, gen)
        return self.module.sac_policy_loss(self._alpha(base), log_pi, self.critic_value(base, obs, a))


class AWAC(TorchAlgorithm):
    name = "awac"
    log_roles = {"critic_loss": "critic/critic_loss", "actor_loss": "actor0/loss"}

    def normalize_states(self, cfg):
        return True

    def max_action(self, cfg, env_max_action):
        return 1.0

    def actor0_view(self, base, action_dim, max_action):
        return AWACGaussianView(base.actor, action_dim, 1.0)

    def actor_lr(self, cfg):
        return cfg.learning_rate

    def critic_value(self, base, obs, actions):
        return _min_q(base.critic_1(obs, actions), base.critic_2(obs, actions))

    def base_energy(self, base, policy, obs, actions, gen, shared):
        awac = self.module
        with torch.no_grad():
            v = self.critic_value(base, obs, policy.action(obs, gen)).unsqueeze(-1)
            if "q_data" not in shared:
                shared["q_data"] = self.critic_value(base, obs, actions).unsqueeze(-1)
            weights = awac.awac_weights(shared["q_data"], v, base.awac_lambda, base.exp_adv_max)
        return awac.weighted_log_prob_loss(policy.log_prob(obs, actions).unsqueeze(-1), weights)

    def advantage(self, base, policy, obs, gen, shared):
        if "v" not in shared:
            with torch.no_grad():
                shared["v"] = self.critic_value(base, obs, base.actor._get_policy(obs).mean)
        return self.critic_value(base, obs, policy.action(obs, gen)) - shared["v"]


class SACN(TorchAlgorithm):
    name = "sac_n"
    log_roles = {"actor_loss": "actor0/loss", "batch_entropy": "actor0/batch_entropy",
                 "q_policy_std": "actor0/q_policy_std"}

    def normalize_states(self, cfg):
        return False

    def max_action(self, cfg, env_max_action):
        return float(cfg.max_action)

    def actor0_view(self, base, action_dim, max_action):
        return SACNTanhGaussianView(base.actor, action_dim, max_action)

    def actor_lr(self, cfg):
        return cfg.actor_learning_rate

    def critic_value(self, base, obs, actions):
        return base.critic(obs, actions).min(0).values

    def base_energy(self, base, policy, obs, actions, gen, shared):
        from reference_algos.torch.sac_n import actor_loss  # EDAC's actor objective is SAC-N's

        a, log_pi = policy.sample_with_log_prob(obs, gen)
        return actor_loss(base.alpha, log_pi, self.critic_value(base, obs, a))


class EDAC(SACN):
    name = "edac"


_ADAPTERS: dict[str, TorchAlgorithm] = {}


def get_algorithm(name: str) -> TorchAlgorithm:
    """The multi-actor adapter the registry names for ``name`` (one instance per algorithm)."""
    if name not in _ADAPTERS:
        module, _, cls = registry.algorithm(name).adapter.partition(":")
        _ADAPTERS[name] = getattr(importlib.import_module(module), cls)()
    return _ADAPTERS[name]


def reference_config_class(algo: str) -> type:
    """The reference ``Config`` dataclass of ``algo`` (JAX ReBRAC included)."""
    return registry.algorithm(algo).reference.Config
