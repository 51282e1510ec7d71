"""AWAC (Advantage-Weighted Actor-Critic), as CORL's ``algorithms/offline/awac.py`` computes it.

Reads top to bottom like the CORL file: config with CORL defaults, loss formulas, networks, trainer. The loss
formulas are module-level functions so that other trainers (the multi-actor one) call the same code instead of
re-writing it. Training draws two ``[B, A]`` normals per step: the actor's rsample at the next states (critic target),
then at the states (value baseline of the actor weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reference_algos.torch.common import (
    ReferenceTrainer,
    TensorBatch,
    build_in_dtype,
    copied,
    frozen_copy,
    soft_update,
)

EXP_ADV_MAX = 100.0
"""``exp_adv_max`` of CORL's trainer: a constructor default that CORL's ``train()`` never overrides."""


@dataclass
class Config:
    """CORL ``TrainConfig`` defaults (training-relevant fields)."""

    seed: int = 42
    test_seed: int = 69
    deterministic_torch: bool = False
    buffer_size: int = 2_000_000
    num_train_ops: int = 1_000_000
    batch_size: int = 256
    eval_frequency: int = 1000
    n_test_episodes: int = 10
    normalize_reward: bool = False
    hidden_dim: int = 256
    learning_rate: float = 3e-4
    gamma: float = 0.99
    tau: float = 5e-3
    awac_lambda: float = 1.0
    #: a constructor argument of CORL's trainer, not a ``TrainConfig`` field (``train()`` leaves its default)
    exp_adv_max: float = EXP_ADV_MAX


#: CORL ``train()``'s trainer constructor arguments and the config fields they come from
TRAINER_ARGS = copied("gamma", "tau", "awac_lambda", "exp_adv_max")


# ----------------------------------------------------------------------------------------------------- formulas


def td_targets(rewards: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor, discount: float) -> torch.Tensor:
    """``r + discount * (1 - d) * Q'`` on [B, 1] tensors (CORL's operand order)."""
    return rewards + discount * (1.0 - dones) * next_value


def twin_critic_loss(q1: torch.Tensor, q2: torch.Tensor, q_target: torch.Tensor) -> torch.Tensor:
    """**Sum** of the two critics' MSE to the targets."""
    return F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target)


def awac_weights(q: torch.Tensor, v: torch.Tensor, awac_lambda: float,
                 exp_adv_max: float = EXP_ADV_MAX) -> torch.Tensor:
    """Advantage weights ``min(exp((q - v) / awac_lambda), exp_adv_max)``."""
    return torch.clamp_max(torch.exp((q - v) / awac_lambda), exp_adv_max)


def weighted_log_prob_loss(log_prob: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """AWAC actor loss ``mean(-log_prob * weights)`` on [B, 1] tensors."""
    return (-log_prob * weights).mean()


# ----------------------------------------------------------------------------------------------------- networks


class Actor(nn.Module):
    """Normal around an unsquashed MLP mean with a state-independent, clamped log-std; samples clamped to [-1, 1]."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, min_log_std: float = -20.0,
                 max_log_std: float = 2.0, min_action: float = -1.0, max_action: float = 1.0):
        super().__init__()
        self._mlp = nn.Sequential(
            nn.Linear(state_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, action_dim),
        )
        self._log_std = nn.Parameter(torch.zeros(action_dim, dtype=torch.float32))
        self._min_log_std = min_log_std
        self._max_log_std = max_log_std
        self._min_action = min_action
        self._max_action = max_action

    def _get_policy(self, state: torch.Tensor) -> torch.distributions.Distribution:
        mean = self._mlp(state)
        log_std = self._log_std.clamp(self._min_log_std, self._max_log_std)
        return torch.distributions.Normal(mean, log_std.exp())

    def log_prob(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``sum_A log N(action)`` → [B, 1]."""
        return self._get_policy(state).log_prob(action).sum(-1, keepdim=True)

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        policy = self._get_policy(state)
        action = policy.rsample()
        action.clamp_(self._min_action, self._max_action)
        log_prob = policy.log_prob(action).sum(-1, keepdim=True)
        return action, log_prob

    def act(self, state: np.ndarray, device: str) -> np.ndarray:
        state_t = torch.tensor(state[None], dtype=torch.float32, device=device)
        policy = self._get_policy(state_t)
        action_t = policy.sample() if self._mlp.training else policy.mean
        return action_t[0].cpu().numpy()


class Critic(nn.Module):
    """MLP ``[S + A, h, h, h, 1]`` on ``cat([s, a], -1)``; output [B, 1]."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self._mlp = nn.Sequential(
            nn.Linear(state_dim + action_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self._mlp(torch.cat([state, action], dim=-1))


# ----------------------------------------------------------------------------------------------------- trainer


class AdvantageWeightedActorCritic(ReferenceTrainer):
    """CORL's ``AdvantageWeightedActorCritic``; builds its networks in CORL's construction order from the global
    torch RNG. Like CORL's trainer it keeps no step counter."""

    variant = "awac"
    targets_of = {"target_critic_1": "critic_1", "target_critic_2": "critic_2"}

    def __init__(self, config: Config, state_dim: int, action_dim: int, max_action: float = 1.0,
                 device: str = "cpu"):
        self.config = config
        actor = Actor(state_dim, action_dim, config.hidden_dim).to(device)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=config.learning_rate)
        critic_1 = Critic(state_dim, action_dim, config.hidden_dim)
        critic_2 = Critic(state_dim, action_dim, config.hidden_dim)
        critic_1.to(device)
        critic_2.to(device)
        critic_1_optimizer = torch.optim.Adam(critic_1.parameters(), lr=config.learning_rate)
        critic_2_optimizer = torch.optim.Adam(critic_2.parameters(), lr=config.learning_rate)

        self.actor = actor
        self.actor_optimizer = actor_optimizer
        self.critic_1 = critic_1
        self.critic_1_optimizer = critic_1_optimizer
        self.target_critic_1 = frozen_copy(critic_1)
        self.critic_2 = critic_2
        self.critic_2_optimizer = critic_2_optimizer
        self.target_critic_2 = frozen_copy(critic_2)

        self.gamma = config.gamma
        self.tau = config.tau
        self.awac_lambda = config.awac_lambda
        self.exp_adv_max = config.exp_adv_max
        self.device = device

    def modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor, "critic_1": self.critic_1, "critic_2": self.critic_2,
            "target_critic_1": self.target_critic_1, "target_critic_2": self.target_critic_2,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic_1": self.critic_1_optimizer,
                "critic_2": self.critic_2_optimizer}

    def _actor_loss(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pi_action, _ = self.actor(states)
            v = torch.min(self.critic_1(states, pi_action), self.critic_2(states, pi_action))
            q = torch.min(self.critic_1(states, actions), self.critic_2(states, actions))
            weights = awac_weights(q, v, self.awac_lambda, self.exp_adv_max)
        return weighted_log_prob_loss(self.actor.log_prob(states, actions), weights)

    def _critic_loss(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
                     next_states: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            next_actions, _ = self.actor(next_states)
            q_next = torch.min(self.target_critic_1(next_states, next_actions),
                               self.target_critic_2(next_states, next_actions))
            q_target = td_targets(rewards, dones, q_next, self.gamma)
        return twin_critic_loss(self.critic_1(states, actions), self.critic_2(states, actions), q_target)

    def _update_critic(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
                       dones: torch.Tensor, next_states: torch.Tensor) -> float:
        loss = self._critic_loss(states, actions, rewards, dones, next_states)
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        loss.backward()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        return loss.item()

    def _update_actor(self, states: torch.Tensor, actions: torch.Tensor) -> float:
        loss = self._actor_loss(states, actions)
        self.actor_optimizer.zero_grad()
        loss.backward()
        self.actor_optimizer.step()
        return loss.item()

    def _update_targets(self) -> None:
        soft_update(self.target_critic_1, self.critic_1, self.tau)
        soft_update(self.target_critic_2, self.critic_2, self.tau)

    def train_step(self, batch: TensorBatch) -> dict[str, float]:
        states, actions, rewards, next_states, dones = batch
        critic_loss = self._update_critic(states, actions, rewards, dones, next_states)
        actor_loss = self._update_actor(states, actions)
        self._update_targets()
        return {"critic_loss": critic_loss, "actor_loss": actor_loss}


def build(config: Config, state_dim: int, action_dim: int, max_action: float = 1.0,
          device: str = "cpu", dtype: torch.dtype = torch.float32) -> AdvantageWeightedActorCritic:
    """Trainer factory with the common signature of every reference module (AWAC's action bounds are fixed at
    [-1, 1], so ``max_action`` is unused, as in CORL; ``dtype``: float32 as in CORL)."""
    return build_in_dtype(AdvantageWeightedActorCritic, dtype, config, state_dim, action_dim, max_action, device)
