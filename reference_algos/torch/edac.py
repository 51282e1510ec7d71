"""EDAC (Ensemble-Diversified Actor-Critic), as CORL's ``algorithms/offline/edac.py`` computes it.

EDAC is SAC-N plus an ensemble gradient-diversity term in the critic loss; everything else (config defaults,
networks, init, update order, RNG draws) is SAC-N's and is imported from :mod:`reference_algos.torch.sac_n`. The
diversity term draws no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference_algos.torch import sac_n
from reference_algos.torch.common import build_in_dtype, copied
from reference_algos.torch.sac_n import SACN, VectorizedCritic


@dataclass
class Config(sac_n.Config):
    """CORL ``TrainConfig`` defaults: SAC-N's plus the diversity weight ``eta``."""

    eta: float = 1.0


#: CORL ``train()``'s trainer constructor arguments and the config fields they come from
TRAINER_ARGS = copied("gamma", "tau", "alpha_learning_rate", "eta")


# ----------------------------------------------------------------------------------------------------- formulas


def diversity_loss(critic: VectorizedCritic, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity of the members' action-gradients at the dataset actions.

    ``g_n = dQ_n/da`` (``create_graph=True``, so the loss is differentiable w.r.t. the critic), normalized as
    ``g / (||g||_2 + 1e-10)`` per (member, sample); ``mean_B(sum_{i != j} <g_i, g_j>) / (N - 1)``.
    """
    num_critics = critic.num_critics
    state = state.unsqueeze(0).repeat_interleave(num_critics, dim=0)
    action = action.unsqueeze(0).repeat_interleave(num_critics, dim=0).requires_grad_(True)
    q_ensemble = critic(state, action)
    q_action_grad = torch.autograd.grad(q_ensemble.sum(), action, retain_graph=True, create_graph=True)[0]
    q_action_grad = q_action_grad / (torch.norm(q_action_grad, p=2, dim=2).unsqueeze(-1) + 1e-10)
    q_action_grad = q_action_grad.transpose(0, 1)
    masks = torch.eye(num_critics, device=q_action_grad.device).unsqueeze(0).repeat(q_action_grad.shape[0], 1, 1)
    q_action_grad = q_action_grad @ q_action_grad.permute(0, 2, 1)
    q_action_grad = (1 - masks) * q_action_grad
    grad_loss = q_action_grad.sum(dim=(1, 2)).mean()
    return grad_loss / (num_critics - 1)


# ----------------------------------------------------------------------------------------------------- trainer


class EDAC(SACN):
    """CORL's ``EDAC``: :class:`SACN` whose critic loss adds ``eta * diversity_loss``."""

    variant = "edac"

    def __init__(self, config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu"):
        super().__init__(config, state_dim, action_dim, max_action, device)
        self.eta = config.eta

    def _critic_diversity_loss(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return diversity_loss(self.critic, state, action)

    def _critic_loss(self, state: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                     next_state: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """SAC-N's ensemble TD loss plus ``eta * diversity``; the logged ``critic_loss`` is this total."""
        critic_loss = super()._critic_loss(state, action, reward, next_state, done)
        return critic_loss + self.eta * self._critic_diversity_loss(state, action)


def build(config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu",
          dtype: torch.dtype = torch.float32) -> EDAC:
    """Trainer factory with the common signature of every reference module (``max_action`` as in SAC-N's)."""
    return build_in_dtype(EDAC, dtype, config, state_dim, action_dim, max_action, device)
