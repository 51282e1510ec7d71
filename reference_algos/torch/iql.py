"""IQL (Implicit Q-Learning), as CORL's ``algorithms/offline/iql.py`` computes it.

Reads top to bottom like the CORL file: config with CORL defaults, loss formulas, networks, trainer. The loss
formulas are module-level functions so that other trainers (the multi-actor one) call the same code instead of
re-writing it. Training draws no torch randomness unless the deterministic actor uses dropout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal
from torch.optim.lr_scheduler import CosineAnnealingLR

from reference_algos.torch.common import (
    ReferenceTrainer,
    TensorBatch,
    TrainerArg,
    build_in_dtype,
    copied,
    frozen_copy,
    soft_update,
)

EXP_ADV_MAX = 100.0
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


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
    tau: float = 0.005
    beta: float = 3.0
    iql_tau: float = 0.7
    iql_deterministic: bool = False
    normalize: bool = True
    normalize_reward: bool = False
    vf_lr: float = 3e-4
    qf_lr: float = 3e-4
    actor_lr: float = 3e-4
    actor_dropout: float | None = None


#: CORL ``train()``'s trainer constructor arguments and where they come from (``max_steps``: the cosine schedule's
#: length, ``config.max_timesteps``)
TRAINER_ARGS = {"max_action": TrainerArg(None), **copied("discount", "tau", "beta", "iql_tau"),
                "max_steps": TrainerArg("max_timesteps")}


# ----------------------------------------------------------------------------------------------------- formulas


def asymmetric_l2_loss(u: torch.Tensor, tau: float) -> torch.Tensor:
    """Expectile loss ``mean(|tau - 1[u < 0]| * u^2)``."""
    return torch.mean(torch.abs(tau - (u < 0).float()) * u**2)


def td_targets(rewards: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor, discount: float) -> torch.Tensor:
    """``r + (1 - d) * discount * V(s')`` on [B] tensors (rewards and dones must already be squeezed)."""
    return rewards + (1.0 - dones.float()) * discount * next_value.detach()


def twin_q_loss(qs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Average of the two critics' MSE to the targets."""
    return sum(F.mse_loss(q, targets) for q in qs) / len(qs)


def exp_advantage(adv: torch.Tensor, beta: float) -> torch.Tensor:
    """Detached advantage weights ``min(exp(beta * adv), EXP_ADV_MAX)``."""
    return torch.exp(beta * adv.detach()).clamp(max=EXP_ADV_MAX)


def bc_losses(policy_out: Normal | torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Per-sample behaviour-cloning loss [B]: ``-sum log N(a)`` for a distribution, ``sum (pi - a)^2`` otherwise."""
    if isinstance(policy_out, torch.distributions.Distribution):
        return -policy_out.log_prob(actions).sum(-1, keepdim=False)
    if torch.is_tensor(policy_out):
        if policy_out.shape != actions.shape:
            raise RuntimeError("Actions shape missmatch")
        return torch.sum((policy_out - actions) ** 2, dim=1)
    raise NotImplementedError(type(policy_out))


def awr_loss(adv: torch.Tensor, bc: torch.Tensor, beta: float) -> torch.Tensor:
    """Advantage-weighted regression ``mean(exp_adv * bc)`` on per-sample BC losses [B]."""
    return torch.mean(exp_advantage(adv, beta) * bc)


def awr_policy_loss(adv: torch.Tensor, policy_out: Normal | torch.Tensor, actions: torch.Tensor,
                    beta: float) -> torch.Tensor:
    """IQL's actor loss: :func:`awr_loss` of the actor's :func:`bc_losses`."""
    return awr_loss(adv, bc_losses(policy_out, actions), beta)


# ----------------------------------------------------------------------------------------------------- networks


class Squeeze(nn.Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(dim=self.dim)


class MLP(nn.Module):
    """Linear/ReLU stack (optional dropout after each hidden ReLU), optional output activation and squeeze."""

    def __init__(
        self,
        dims: list[int],
        activation_fn: Callable[[], nn.Module] = nn.ReLU,
        output_activation_fn: Callable[[], nn.Module] | None = None,
        squeeze_output: bool = False,
        dropout: float | None = None,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError("MLP requires at least two dims (input and output)")
        layers: list[nn.Module] = []
        for i in range(len(dims) - 2):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            layers.append(activation_fn())
            if dropout is not None:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[-2], dims[-1]))
        if output_activation_fn is not None:
            layers.append(output_activation_fn())
        if squeeze_output:
            if dims[-1] != 1:
                raise ValueError("Last dim must be 1 when squeezing")
            layers.append(Squeeze(-1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GaussianPolicy(nn.Module):
    """Normal around a tanh mean with a state-independent log-std; CORL passes no dropout to this MLP."""

    def __init__(self, state_dim: int, act_dim: int, max_action: float, hidden_dim: int = 256, n_hidden: int = 2,
                 dropout: float | None = None):
        super().__init__()
        self.net = MLP([state_dim, *([hidden_dim] * n_hidden), act_dim], output_activation_fn=nn.Tanh)
        self.log_std = nn.Parameter(torch.zeros(act_dim, dtype=torch.float32))
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> Normal:
        mean = self.net(obs)
        std = torch.exp(self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
        return Normal(mean, std)

    @torch.no_grad()
    def act(self, state: np.ndarray, device: str = "cpu") -> np.ndarray:
        state_t = torch.tensor(state.reshape(1, -1), device=device, dtype=torch.float32)
        dist = self(state_t)
        action = dist.mean if not self.training else dist.sample()
        action = torch.clamp(self.max_action * action, -self.max_action, self.max_action)
        return action.cpu().data.numpy().flatten()


class DeterministicPolicy(nn.Module):
    """Tanh MLP; the only IQL actor that honours ``actor_dropout``."""

    def __init__(self, state_dim: int, act_dim: int, max_action: float, hidden_dim: int = 256, n_hidden: int = 2,
                 dropout: float | None = None):
        super().__init__()
        self.net = MLP([state_dim, *([hidden_dim] * n_hidden), act_dim], output_activation_fn=nn.Tanh,
                       dropout=dropout)
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    @torch.no_grad()
    def act(self, state: np.ndarray, device: str = "cpu") -> np.ndarray:
        state_t = torch.tensor(state.reshape(1, -1), device=device, dtype=torch.float32)
        out = torch.clamp(self(state_t) * self.max_action, -self.max_action, self.max_action)
        return out.cpu().data.numpy().flatten()


class TwinQ(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int = 256, n_hidden: int = 2):
        super().__init__()
        dims = [state_dim + action_dim, *([hidden_dim] * n_hidden), 1]
        self.q1 = MLP(dims, squeeze_output=True)
        self.q2 = MLP(dims, squeeze_output=True)

    def both(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([state, action], 1)
        return self.q1(sa), self.q2(sa)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.min(*self.both(state, action))


class ValueFunction(nn.Module):
    def __init__(self, state_dim: int, hidden_dim: int = 256, n_hidden: int = 2):
        super().__init__()
        self.v = MLP([state_dim, *([hidden_dim] * n_hidden), 1], squeeze_output=True)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.v(state)


# ----------------------------------------------------------------------------------------------------- trainer


class ImplicitQLearning(ReferenceTrainer):
    """CORL's ``ImplicitQLearning``; builds its networks in CORL's construction order from the global torch RNG."""

    targets_of = {"q_target": "qf"}

    def __init__(self, config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu"):
        self.config = config
        self.variant = "iql_deterministic" if config.iql_deterministic else "iql_gaussian"
        q_network = TwinQ(state_dim, action_dim).to(device)
        v_network = ValueFunction(state_dim).to(device)
        policy_cls = DeterministicPolicy if config.iql_deterministic else GaussianPolicy
        actor = policy_cls(state_dim, action_dim, max_action, dropout=config.actor_dropout).to(device)
        self.v_optimizer = torch.optim.Adam(v_network.parameters(), lr=config.vf_lr)
        self.q_optimizer = torch.optim.Adam(q_network.parameters(), lr=config.qf_lr)
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=config.actor_lr)

        self.max_action = max_action
        self.qf = q_network
        self.q_target = frozen_copy(self.qf).to(device)
        self.vf = v_network
        self.actor = actor
        self.actor_lr_schedule = CosineAnnealingLR(self.actor_optimizer, config.max_timesteps)
        self.iql_tau = config.iql_tau
        self.beta = config.beta
        self.discount = config.discount
        self.tau = config.tau
        self.total_it = 0
        self.device = device

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "qf": self.qf, "vf": self.vf, "q_target": self.q_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"v": self.v_optimizer, "q": self.q_optimizer, "actor": self.actor_optimizer}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        return {"actor": self.actor_lr_schedule}

    def extra_scalars(self) -> dict[str, float]:
        return {"extra/actor_lr_after_step": float(self.actor_optimizer.param_groups[0]["lr"])}

    def _update_v(self, observations: torch.Tensor, actions: torch.Tensor, log_dict: dict) -> torch.Tensor:
        with torch.no_grad():
            target_q = self.q_target(observations, actions)
        v = self.vf(observations)
        adv = target_q - v
        v_loss = asymmetric_l2_loss(adv, self.iql_tau)
        log_dict["value_loss"] = v_loss.item()
        self.v_optimizer.zero_grad()
        v_loss.backward()
        self.v_optimizer.step()
        return adv

    def _update_q(self, next_v: torch.Tensor, observations: torch.Tensor, actions: torch.Tensor,
                  rewards: torch.Tensor, terminals: torch.Tensor, log_dict: dict) -> None:
        targets = td_targets(rewards, terminals, next_v, self.discount)
        q_loss = twin_q_loss(self.qf.both(observations, actions), targets)
        log_dict["q_loss"] = q_loss.item()
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()
        soft_update(self.q_target, self.qf, self.tau)

    def _update_policy(self, adv: torch.Tensor, observations: torch.Tensor, actions: torch.Tensor,
                       log_dict: dict) -> None:
        policy_loss = awr_policy_loss(adv, self.actor(observations), actions, self.beta)
        log_dict["actor_loss"] = policy_loss.item()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()
        self.actor_lr_schedule.step()

    def train_step(self, batch: TensorBatch) -> dict[str, float]:
        self.total_it += 1
        observations, actions, rewards, next_observations, dones = batch
        log_dict: dict[str, float] = {}
        with torch.no_grad():
            next_v = self.vf(next_observations)
        adv = self._update_v(observations, actions, log_dict)
        rewards = rewards.squeeze(dim=-1)
        dones = dones.squeeze(dim=-1)
        self._update_q(next_v, observations, actions, rewards, dones, log_dict)
        self._update_policy(adv, observations, actions, log_dict)
        return log_dict


def build(config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu",
          dtype: torch.dtype = torch.float32) -> ImplicitQLearning:
    """Trainer factory with the common signature of every reference module (``dtype``: float32 as in CORL)."""
    return build_in_dtype(ImplicitQLearning, dtype, config, state_dim, action_dim, max_action, device)
