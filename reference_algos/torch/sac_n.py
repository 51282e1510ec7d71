"""SAC-N (SAC with an N-critic ensemble), as CORL's ``algorithms/offline/sac_n.py`` computes it.

Reads top to bottom like the CORL file: config with CORL defaults, loss formulas, networks, trainer. The loss
formulas are module-level functions so that other trainers (EDAC, the multi-actor one) call the same code instead of
re-writing it. Every step draws, in order from the global torch RNG: N[B,A] (alpha), N[B,A] (actor), N[B,A] (critic
target, post-update actor) and U[B,A] (logging-only random actions).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from reference_algos.torch.common import ReferenceTrainer, TensorBatch, build_in_dtype, copied, soft_update

LOG_SIGMA_MIN = -5.0
LOG_SIGMA_MAX = 2.0


@dataclass
class Config:
    """CORL ``TrainConfig`` defaults (training-relevant fields)."""

    hidden_dim: int = 256
    num_critics: int = 10
    gamma: float = 0.99
    tau: float = 5e-3
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    alpha_learning_rate: float = 3e-4
    max_action: float = 1.0
    buffer_size: int = 1_000_000
    batch_size: int = 256
    num_epochs: int = 3000
    num_updates_on_epoch: int = 1000
    normalize_reward: bool = False
    eval_episodes: int = 10
    eval_every: int = 5
    deterministic_torch: bool = False
    train_seed: int = 10
    eval_seed: int = 42
    log_every: int = 100


#: CORL ``train()``'s trainer constructor arguments and the config fields they come from (CORL builds the actor with
#: ``config.max_action``, which ``build`` takes as its ``max_action``)
TRAINER_ARGS = copied("gamma", "tau", "alpha_learning_rate")


# ----------------------------------------------------------------------------------------------------- formulas


def tanh_gaussian_log_prob(policy_dist: Normal, action: torch.Tensor, tanh_action: torch.Tensor) -> torch.Tensor:
    """Log-density [B] of ``tanh(u)``: ``sum_A log N(u) - sum_A log(1 - tanh(u)^2 + 1e-6)``."""
    log_prob = policy_dist.log_prob(action).sum(axis=-1)
    return log_prob - torch.log(1 - tanh_action.pow(2) + 1e-6).sum(axis=-1)


def alpha_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Temperature loss ``mean(-log_alpha * (log_pi + target_entropy))``; ``log_prob`` must be detached."""
    return (-log_alpha * (log_prob + target_entropy)).mean()


def actor_loss(alpha: torch.Tensor, log_prob: torch.Tensor, q_min: torch.Tensor) -> torch.Tensor:
    """SAC actor loss ``mean(alpha * log_pi - q_min)`` on [B] tensors."""
    if log_prob.shape != q_min.shape:
        raise RuntimeError(f"log_prob shape {tuple(log_prob.shape)} != q_min shape {tuple(q_min.shape)}")
    return (alpha * log_prob - q_min).mean()


def critic_target(reward: torch.Tensor, done: torch.Tensor, q_next_min: torch.Tensor, next_log_prob: torch.Tensor,
                  alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """Soft TD target [B,1]: ``r + gamma * (1 - d) * (min_N Q'(s', a') - alpha * log_pi(a'|s'))``.

    ``reward`` and ``done`` are [B,1] (the replay-buffer layout), ``q_next_min`` and ``next_log_prob`` are [B].
    """
    q_next = q_next_min - alpha * next_log_prob
    if q_next.unsqueeze(-1).shape != done.shape or done.shape != reward.shape:
        raise RuntimeError("reward, done and q_next shapes do not match")
    return reward + gamma * (1 - done) * q_next.unsqueeze(-1)


def ensemble_mse_loss(q_values: torch.Tensor, q_target: torch.Tensor) -> torch.Tensor:
    """Sum over the N critics of each critic's MSE: ``sum_N mean_B (Q_n - y)^2`` for ``q_values`` [N,B]."""
    return ((q_values - q_target.view(1, -1)) ** 2).mean(dim=1).sum(dim=0)


def ensemble_std(q_values: torch.Tensor) -> torch.Tensor:
    """Logged ensemble spread ``mean_B(std_N Q)`` (unbiased std) for ``q_values`` [N,B]."""
    return q_values.std(0).mean()


# ----------------------------------------------------------------------------------------------------- networks


class VectorizedLinear(nn.Module):
    """N independent linear layers: weight [N, in, out], bias [N, 1, out]; ``x [N,B,in] @ W + b``."""

    def __init__(self, in_features: int, out_features: int, ensemble_size: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.ensemble_size = ensemble_size
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CORL's "default nn.Linear init": fan_in is dim 1 of an [in, out] slice, i.e. ``out_features``."""
        for layer in range(self.ensemble_size):
            nn.init.kaiming_uniform_(self.weight[layer], a=math.sqrt(5))
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight[0])
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Actor(nn.Module):
    """Tanh-squashed Gaussian with separate ``mu`` / ``log_sigma`` heads (log-sigma clipped to [-5, 2])."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, max_action: float = 1.0):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(state_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
        )
        self.mu = nn.Linear(hidden_dim, action_dim)
        self.log_sigma = nn.Linear(hidden_dim, action_dim)
        for layer in self.trunk[::2]:
            nn.init.constant_(layer.bias, 0.1)
        nn.init.uniform_(self.mu.weight, -1e-3, 1e-3)
        nn.init.uniform_(self.mu.bias, -1e-3, 1e-3)
        nn.init.uniform_(self.log_sigma.weight, -1e-3, 1e-3)
        nn.init.uniform_(self.log_sigma.bias, -1e-3, 1e-3)
        self.action_dim = action_dim
        self.max_action = max_action

    def mean_std(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh Normal parameters ``(mu, exp(clip(log_sigma, -5, 2)))``."""
        hidden = self.trunk(state)
        mu, log_sigma = self.mu(hidden), self.log_sigma(hidden)
        log_sigma = torch.clip(log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return mu, torch.exp(log_sigma)

    def forward(self, state: torch.Tensor, deterministic: bool = False,
                need_log_prob: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(max_action * tanh(u), log_prob or None)`` with ``u = mu`` or one ``rsample`` (one N[B,A] draw)."""
        mu, sigma = self.mean_std(state)
        policy_dist = Normal(mu, sigma)
        action = mu if deterministic else policy_dist.rsample()
        tanh_action, log_prob = torch.tanh(action), None
        if need_log_prob:
            log_prob = tanh_gaussian_log_prob(policy_dist, action, tanh_action)
        return tanh_action * self.max_action, log_prob

    @torch.no_grad()
    def act(self, state: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Unbatched action; deterministic (``tanh(mu)``) in eval mode, sampled in training mode."""
        state_t = torch.tensor(state, device=device, dtype=torch.float32)
        return self(state_t, deterministic=not self.training)[0].cpu().numpy()


class VectorizedCritic(nn.Module):
    """Ensemble of N Q-networks evaluated in one batched pass; returns [N,B].

    Accepts ``[B, .]`` inputs (repeated to every member, as SAC-N always calls it) or already-stacked ``[N, B, .]``
    inputs (EDAC's diversity term); for 2-D inputs this is exactly SAC-N's forward.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int, num_critics: int):
        super().__init__()
        self.critic = nn.Sequential(
            VectorizedLinear(state_dim + action_dim, hidden_dim, num_critics),
            nn.ReLU(),
            VectorizedLinear(hidden_dim, hidden_dim, num_critics),
            nn.ReLU(),
            VectorizedLinear(hidden_dim, hidden_dim, num_critics),
            nn.ReLU(),
            VectorizedLinear(hidden_dim, 1, num_critics),
        )
        for layer in self.critic[::2]:
            nn.init.constant_(layer.bias, 0.1)
        nn.init.uniform_(self.critic[-1].weight, -3e-3, 3e-3)
        nn.init.uniform_(self.critic[-1].bias, -3e-3, 3e-3)
        self.num_critics = num_critics

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        state_action = torch.cat([state, action], dim=-1)
        if state_action.dim() == 2:
            state_action = state_action.unsqueeze(0).repeat_interleave(self.num_critics, dim=0)
        if state_action.dim() != 3 or state_action.shape[0] != self.num_critics:
            raise RuntimeError(f"critic input must be [B, .] or [{self.num_critics}, B, .], "
                               f"got {tuple(state_action.shape)}")
        return self.critic(state_action).squeeze(-1)


# ----------------------------------------------------------------------------------------------------- trainer


class SACN(ReferenceTrainer):
    """CORL's ``SACN``; builds its networks in CORL's construction order from the global torch RNG.

    ``log_alpha`` is a plain [1] leaf tensor (not a module), exported under the golden name ``"log_alpha"``.
    """

    variant = "sac_n"
    targets_of = {"target_critic": "critic"}

    def __init__(self, config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu"):
        self.config = config
        self.device = device
        actor = Actor(state_dim, action_dim, config.hidden_dim, max_action).to(device)
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=config.actor_learning_rate)
        critic = VectorizedCritic(state_dim, action_dim, config.hidden_dim, config.num_critics).to(device)
        critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_learning_rate)

        self.actor = actor
        self.critic = critic
        with torch.no_grad():
            self.target_critic = copy.deepcopy(self.critic)
        self.actor_optimizer = actor_optimizer
        self.critic_optimizer = critic_optimizer
        self.tau = config.tau
        self.gamma = config.gamma

        self.target_entropy = -float(self.actor.action_dim)
        self.log_alpha = torch.tensor([0.0], dtype=torch.float32, device=device, requires_grad=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.alpha_learning_rate)
        self.alpha = self.log_alpha.exp().detach()

    def modules(self) -> dict[str, nn.Module | torch.Tensor]:
        return {"actor": self.actor, "critic": self.critic, "log_alpha": self.log_alpha,
                "target_critic": self.target_critic}

    def load_parameters(self, params: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """As the base class, then refresh the cached ``alpha = exp(log_alpha)`` the way CORL's loader does."""
        super().load_parameters(params, strict)
        self.alpha = self.log_alpha.exp().detach()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "alpha": self.alpha_optimizer}

    def _alpha_loss(self, state: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            _, action_log_prob = self.actor(state, need_log_prob=True)
        return alpha_loss(self.log_alpha, action_log_prob, self.target_entropy)

    def _actor_loss(self, state: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        action, action_log_prob = self.actor(state, need_log_prob=True)
        q_value_dist = self.critic(state, action)
        q_value_min = q_value_dist.min(0).values
        q_value_std = ensemble_std(q_value_dist).item()
        batch_entropy = -action_log_prob.mean().item()
        return actor_loss(self.alpha, action_log_prob, q_value_min), batch_entropy, q_value_std

    def _critic_loss(self, state: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                     next_state: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            next_action, next_action_log_prob = self.actor(next_state, need_log_prob=True)
            q_next_min = self.target_critic(next_state, next_action).min(0).values
            q_target = critic_target(reward, done, q_next_min, next_action_log_prob, self.alpha, self.gamma)
        return ensemble_mse_loss(self.critic(state, action), q_target)

    def _q_random_std(self, state: torch.Tensor, action: torch.Tensor) -> float:
        """Logging only: ensemble std at ``U[-max_action, max_action]`` actions (one U[B,A] draw); under no_grad."""
        max_action = self.actor.max_action
        random_actions = -max_action + 2 * max_action * torch.rand_like(action)
        return ensemble_std(self.critic(state, random_actions)).item()

    def _update_alpha(self, state: torch.Tensor) -> float:
        loss = self._alpha_loss(state)
        self.alpha_optimizer.zero_grad()
        loss.backward()
        self.alpha_optimizer.step()
        self.alpha = self.log_alpha.exp().detach()
        return loss.item()

    def _update_actor(self, state: torch.Tensor) -> tuple[float, float, float]:
        loss, batch_entropy, q_policy_std = self._actor_loss(state)
        self.actor_optimizer.zero_grad()
        loss.backward()
        self.actor_optimizer.step()
        return loss.item(), batch_entropy, q_policy_std

    def _update_critic(self, state: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                       next_state: torch.Tensor, done: torch.Tensor) -> float:
        loss = self._critic_loss(state, action, reward, next_state, done)
        self.critic_optimizer.zero_grad()
        loss.backward()
        self.critic_optimizer.step()
        return loss.item()

    def train_step(self, batch: TensorBatch) -> dict[str, float]:
        """CORL's ``update``: alpha -> actor -> critic, then target soft update and the logging draw."""
        state, action, reward, next_state, done = [arr.to(self.device) for arr in batch]
        alpha_loss_value = self._update_alpha(state)
        actor_loss_value, actor_batch_entropy, q_policy_std = self._update_actor(state)
        critic_loss_value = self._update_critic(state, action, reward, next_state, done)
        with torch.no_grad():
            soft_update(self.target_critic, self.critic, tau=self.tau)
            q_random_std = self._q_random_std(state, action)
        return {
            "alpha_loss": alpha_loss_value,
            "critic_loss": critic_loss_value,
            "actor_loss": actor_loss_value,
            "batch_entropy": actor_batch_entropy,
            "alpha": self.alpha.item(),
            "q_policy_std": q_policy_std,
            "q_random_std": q_random_std,
        }


def build(config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu",
          dtype: torch.dtype = torch.float32) -> SACN:
    """Trainer factory with the common signature of every reference module (``dtype``: float32 as in CORL).

    CORL takes ``max_action`` from ``config.max_action`` (1.0, not the env's); here the caller passes it (the golden
    replay passes 1.0, the value the recorded run used).
    """
    return build_in_dtype(SACN, dtype, config, state_dim, action_dim, max_action, device)
