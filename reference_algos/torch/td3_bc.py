"""TD3+BC, as CORL's ``algorithms/offline/td3_bc.py`` computes it.

Reads top to bottom like the CORL file: config with CORL defaults, loss formulas, networks, trainer. The loss
formulas are module-level functions so that other trainers (the multi-actor one) call the same code instead of
re-writing it. Training draws one ``randn_like(action)`` per step (target policy smoothing), also on critic-only steps.
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
    TrainerArg,
    build_in_dtype,
    copied,
    frozen_copy,
    soft_update,
)

LEARNING_RATE = 3e-4
"""CORL hard-codes every TD3+BC learning rate; there is no config field for them."""


@dataclass
class Config:
    """CORL ``TrainConfig`` defaults (training-relevant fields)."""

    seed: int = 0
    eval_freq: int = 5000
    n_episodes: int = 10
    max_timesteps: int = 1_000_000
    buffer_size: int = 2_000_000
    batch_size: int = 256
    discount: float = 0.99
    expl_noise: float = 0.1
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2
    alpha: float = 2.5
    normalize: bool = True
    normalize_reward: bool = False


#: CORL ``train()``'s trainer constructor arguments and where they come from (the target-policy noise and its clip
#: are passed multiplied by ``max_action``)
TRAINER_ARGS = {"max_action": TrainerArg(None), **copied("discount", "tau", "policy_freq", "alpha"),
                "policy_noise": TrainerArg("policy_noise", scaled=True),
                "noise_clip": TrainerArg("noise_clip", scaled=True)}


# ----------------------------------------------------------------------------------------------------- formulas


def smoothing_noise(action: torch.Tensor, policy_noise: float, noise_clip: float) -> torch.Tensor:
    """Target-policy-smoothing noise ``clamp(N(0,1) * policy_noise, +-noise_clip)``; one draw shaped like ``action``."""
    return (torch.randn_like(action) * policy_noise).clamp(-noise_clip, noise_clip)


def td_targets(rewards: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor, discount: float) -> torch.Tensor:
    """``r + (1 - d) * discount * Q'`` on [B, 1] tensors (CORL computes ``not_done = 1 - done`` first)."""
    return rewards + (1 - dones) * discount * next_value


def twin_critic_loss(current_q1: torch.Tensor, current_q2: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
    """**Sum** of the two critics' MSE to the targets."""
    return F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)


def td3_bc_actor_loss(pi: torch.Tensor, q: torch.Tensor, actions: torch.Tensor, alpha: float) -> torch.Tensor:
    """``-lambda * mean(Q(s, pi)) + mse(pi, a)`` with ``lambda = alpha / mean|Q(s, pi)|`` detached."""
    lmbda = alpha / q.abs().mean().detach()
    return -lmbda * q.mean() + F.mse_loss(pi, actions)


# ----------------------------------------------------------------------------------------------------- networks


class Actor(nn.Module):
    """Tanh MLP ``[S, 256, 256, A]`` scaled by ``max_action``."""

    def __init__(self, state_dim: int, action_dim: int, max_action: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(state_dim, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, action_dim),
            nn.Tanh(),
        )
        self.max_action = max_action

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * self.net(state)

    @torch.no_grad()
    def act(self, state: np.ndarray, device: str = "cpu") -> np.ndarray:
        state_t = torch.tensor(state.reshape(1, -1), device=device, dtype=torch.float32)
        return self(state_t).cpu().data.numpy().flatten()


class Critic(nn.Module):
    """MLP ``[S + A, 256, 256, 1]`` on ``cat([s, a], 1)``; output [B, 1] (not squeezed)."""

    def __init__(self, state_dim: int, action_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(state_dim + action_dim, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, 1),
        )

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([state, action], 1))


# ----------------------------------------------------------------------------------------------------- trainer


class TD3BC(ReferenceTrainer):
    """CORL's ``TD3_BC``; builds its networks in CORL's construction order from the global torch RNG."""

    variant = "td3_bc"
    targets_of = {"actor_target": "actor", "critic_1_target": "critic_1", "critic_2_target": "critic_2"}

    def __init__(self, config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu"):
        self.config = config
        actor = Actor(state_dim, action_dim, max_action).to(device)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=LEARNING_RATE)
        critic_1 = Critic(state_dim, action_dim).to(device)
        critic_1_optimizer = torch.optim.Adam(critic_1.parameters(), lr=LEARNING_RATE)
        critic_2 = Critic(state_dim, action_dim).to(device)
        critic_2_optimizer = torch.optim.Adam(critic_2.parameters(), lr=LEARNING_RATE)

        self.actor = actor
        self.actor_target = frozen_copy(actor)
        self.actor_optimizer = actor_optimizer
        self.critic_1 = critic_1
        self.critic_1_target = frozen_copy(critic_1)
        self.critic_1_optimizer = critic_1_optimizer
        self.critic_2 = critic_2
        self.critic_2_target = frozen_copy(critic_2)
        self.critic_2_optimizer = critic_2_optimizer

        self.max_action = max_action
        self.discount = config.discount
        self.tau = config.tau
        self.policy_noise = config.policy_noise * max_action
        self.noise_clip = config.noise_clip * max_action
        self.policy_freq = config.policy_freq
        self.alpha = config.alpha
        self.total_it = 0
        self.device = device

    def modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor, "critic_1": self.critic_1, "critic_2": self.critic_2,
            "actor_target": self.actor_target, "critic_1_target": self.critic_1_target,
            "critic_2_target": self.critic_2_target,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic_1": self.critic_1_optimizer,
                "critic_2": self.critic_2_optimizer}

    def _critic_targets(self, action: torch.Tensor, reward: torch.Tensor, next_state: torch.Tensor,
                        done: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            noise = smoothing_noise(action, self.policy_noise, self.noise_clip)
            next_action = (self.actor_target(next_state) + noise).clamp(-self.max_action, self.max_action)
            target_q1 = self.critic_1_target(next_state, next_action)
            target_q2 = self.critic_2_target(next_state, next_action)
            target_q = torch.min(target_q1, target_q2)
            return td_targets(reward, done, target_q, self.discount)

    def _update_critic(self, state: torch.Tensor, action: torch.Tensor, target_q: torch.Tensor,
                       log_dict: dict) -> None:
        critic_loss = twin_critic_loss(self.critic_1(state, action), self.critic_2(state, action), target_q)
        log_dict["critic_loss"] = critic_loss.item()
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()

    def _update_actor(self, state: torch.Tensor, action: torch.Tensor, log_dict: dict) -> None:
        pi = self.actor(state)
        actor_loss = td3_bc_actor_loss(pi, self.critic_1(state, pi), action, self.alpha)
        log_dict["actor_loss"] = actor_loss.item()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

    def _update_targets(self) -> None:
        soft_update(self.critic_1_target, self.critic_1, self.tau)
        soft_update(self.critic_2_target, self.critic_2, self.tau)
        soft_update(self.actor_target, self.actor, self.tau)

    def train_step(self, batch: TensorBatch) -> dict[str, float]:
        log_dict: dict[str, float] = {}
        self.total_it += 1
        state, action, reward, next_state, done = batch
        target_q = self._critic_targets(action, reward, next_state, done)
        self._update_critic(state, action, target_q, log_dict)
        if self.total_it % self.policy_freq == 0:
            self._update_actor(state, action, log_dict)
            self._update_targets()
        return log_dict


def build(config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu",
          dtype: torch.dtype = torch.float32) -> TD3BC:
    """Trainer factory with the common signature of every reference module (``dtype``: float32 as in CORL)."""
    return build_in_dtype(TD3BC, dtype, config, state_dim, action_dim, max_action, device)
