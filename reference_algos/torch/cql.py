"""CQL (Conservative Q-Learning), as CORL's ``algorithms/offline/cql.py`` (``ContinuousCQL``) computes it.

Reads top to bottom like the CORL file: config with CORL defaults, loss formulas, networks, trainer. The loss
formulas are module-level functions so that other trainers (the multi-actor one) call the same code instead of
re-writing it. Every policy sample is a reparameterized draw from the global torch RNG, as in CORL; one default
step draws N[B,A] (policy), N[B,A] (target action), U[B,n,A] (random actions), N[B,n,A] twice (current and next
observations), in that order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from reference_algos.torch.common import ReferenceTrainer, TensorBatch, build_in_dtype, copied, soft_update

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


@dataclass
class Config:
    """CORL ``TrainConfig`` defaults (training-relevant fields).

    CORL's ``TrainConfig`` declares ``reward_scale``/``reward_bias`` twice; the later 5.0 / -1.0 are the effective
    defaults. They only matter when ``normalize_reward`` is on.
    """

    seed: int = 0
    eval_freq: int = 5000
    n_episodes: int = 10
    max_timesteps: int = 1_000_000
    buffer_size: int = 2_000_000
    batch_size: int = 256
    discount: float = 0.99
    alpha_multiplier: float = 1.0
    use_automatic_entropy_tuning: bool = True
    backup_entropy: bool = False
    policy_lr: float = 3e-5
    qf_lr: float = 3e-4
    soft_target_update_rate: float = 5e-3
    target_update_period: int = 1
    cql_n_actions: int = 10
    cql_importance_sample: bool = True
    cql_lagrange: bool = False
    cql_target_action_gap: float = -1.0
    cql_temp: float = 1.0
    cql_alpha: float = 10.0
    cql_max_target_backup: bool = False
    cql_clip_diff_min: float = -np.inf
    cql_clip_diff_max: float = np.inf
    orthogonal_init: bool = True
    normalize: bool = True
    normalize_reward: bool = False
    q_n_hidden_layers: int = 3
    reward_scale: float = 5.0
    reward_bias: float = -1.0
    bc_steps: int = 0
    policy_log_std_multiplier: float = 1.0
    #: a constructor argument of CORL's trainer, not a ``TrainConfig`` field; ``None``: ``-action_dim``, what
    #: CORL's ``train()`` passes (``-prod(action_space.shape)``)
    target_entropy: float | None = None


def derived_defaults(action_dim: int) -> dict[str, float]:
    """What CORL's ``train()`` passes for the config fields declared ``None``: ``target_entropy = -action_dim``."""
    return {"target_entropy": -action_dim}


#: CORL ``train()``'s trainer constructor arguments and the config fields they come from
TRAINER_ARGS = {
    **copied("discount", "soft_target_update_rate", "target_entropy", "alpha_multiplier",
             "use_automatic_entropy_tuning", "backup_entropy", "policy_lr", "qf_lr", "bc_steps",
             "target_update_period", "cql_n_actions", "cql_importance_sample", "cql_lagrange",
             "cql_target_action_gap", "cql_temp", "cql_alpha", "cql_max_target_backup", "cql_clip_diff_min",
             "cql_clip_diff_max"),
}


# ----------------------------------------------------------------------------------------------------- formulas


def alpha_loss_fn(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC temperature loss ``-mean(log_alpha * (log_pi + target_entropy).detach())``."""
    return -(log_alpha * (log_pi + target_entropy).detach()).mean()


def alpha_from_log(log_alpha: torch.Tensor, alpha_multiplier: float) -> torch.Tensor:
    """``exp(log_alpha) * alpha_multiplier``, not detached (as CORL)."""
    return log_alpha.exp() * alpha_multiplier


def sac_policy_loss(alpha: torch.Tensor, log_pi: torch.Tensor, q_new: torch.Tensor) -> torch.Tensor:
    """``mean(alpha * log_pi - q_new)``; ``q_new`` is the log-prob of a fresh sample on BC steps."""
    return (alpha * log_pi - q_new).mean()


def td_target(rewards: torch.Tensor, dones: torch.Tensor, target_q: torch.Tensor, discount: float) -> torch.Tensor:
    """``r + (1 - d) * discount * Q'`` formed at [B,1] (rewards/dones as [B,1], ``target_q`` [B]), squeezed to [B]."""
    target_q = target_q.unsqueeze(-1)
    return (rewards + (1.0 - dones) * discount * target_q.detach()).squeeze(-1)


def cql_cat_q(q_rand: torch.Tensor, q_pred: torch.Tensor, q_next: torch.Tensor, q_current: torch.Tensor,
              next_log_pis: torch.Tensor, current_log_pis: torch.Tensor, action_dim: int,
              importance_sample: bool) -> torch.Tensor:
    """The [B, k] Q values entering the logsumexp.

    With importance sampling: ``[Q_rand - log(0.5^A), Q_next - logpi_next, Q_cur - logpi_cur]`` (no data Q);
    otherwise ``[Q_rand, Q_data, Q_next, Q_cur]``. ``log(0.5^A)`` stays a float64 numpy scalar as in CORL.
    """
    if importance_sample:
        random_density = np.log(0.5**action_dim)
        return torch.cat(
            [q_rand - random_density, q_next - next_log_pis.detach(), q_current - current_log_pis.detach()], dim=1
        )
    return torch.cat([q_rand, torch.unsqueeze(q_pred, 1), q_next, q_current], dim=1)


def cql_ood(cat_q: torch.Tensor, temp: float) -> torch.Tensor:
    """Soft maximum over sampled actions ``logsumexp(cat_q / temp, dim=1) * temp`` → [B]."""
    return torch.logsumexp(cat_q / temp, dim=1) * temp


def cql_qf_diff(ood: torch.Tensor, q_pred: torch.Tensor, clip_min: float, clip_max: float) -> torch.Tensor:
    """Conservative gap ``mean(clamp(ood - Q_data, clip_min, clip_max))``."""
    return torch.clamp(ood - q_pred, clip_min, clip_max).mean()


# ----------------------------------------------------------------------------------------------------- networks


def extend_and_repeat(tensor: torch.Tensor, dim: int, repeat: int) -> torch.Tensor:
    """Insert ``dim`` and repeat each element ``repeat`` times along it."""
    return tensor.unsqueeze(dim).repeat_interleave(repeat, dim=dim)


def init_module_weights(module: nn.Sequential, orthogonal_init: bool = False) -> None:
    """CORL init: orthogonal (gain sqrt 2, bias 0) hidden layers if asked; last layer orthogonal or xavier gain 1e-2."""
    if orthogonal_init:
        for submodule in module[:-1]:
            if isinstance(submodule, nn.Linear):
                nn.init.orthogonal_(submodule.weight, gain=np.sqrt(2))
                nn.init.constant_(submodule.bias, 0.0)
    if orthogonal_init:
        nn.init.orthogonal_(module[-1].weight, gain=1e-2)
    else:
        nn.init.xavier_uniform_(module[-1].weight, gain=1e-2)
    nn.init.constant_(module[-1].bias, 0.0)


class Scalar(nn.Module):
    """A trainable 0-d float32 parameter named ``constant``."""

    def __init__(self, init_value: float):
        super().__init__()
        self.constant = nn.Parameter(torch.tensor(init_value, dtype=torch.float32))

    def forward(self) -> nn.Parameter:
        return self.constant


class ReparameterizedTanhGaussian(nn.Module):
    """Tanh-squashed Normal with clamped log-std; log-probs via TanhTransform's cached pre-tanh sample."""

    def __init__(self, log_std_min: float = LOG_STD_MIN, log_std_max: float = LOG_STD_MAX, no_tanh: bool = False):
        super().__init__()
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.no_tanh = no_tanh

    def _distribution(self, mean: torch.Tensor, log_std: torch.Tensor) -> Normal | TransformedDistribution:
        std = torch.exp(torch.clamp(log_std, self.log_std_min, self.log_std_max))
        if self.no_tanh:
            return Normal(mean, std)
        return TransformedDistribution(Normal(mean, std), TanhTransform(cache_size=1))

    def log_prob(self, mean: torch.Tensor, log_std: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        return torch.sum(self._distribution(mean, log_std).log_prob(sample), dim=-1)

    def forward(self, mean: torch.Tensor, log_std: torch.Tensor,
                deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self._distribution(mean, log_std)
        action_sample = torch.tanh(mean) if deterministic else dist.rsample()
        return action_sample, torch.sum(dist.log_prob(action_sample), dim=-1)


class TanhGaussianPolicy(nn.Module):
    """CORL's CQL actor: 3x256 ReLU MLP to [mean, raw log-std]; only the last layer is re-initialized."""

    def __init__(self, state_dim: int, action_dim: int, max_action: float, log_std_multiplier: float = 1.0,
                 log_std_offset: float = -1.0, orthogonal_init: bool = False, no_tanh: bool = False):
        super().__init__()
        self.observation_dim = state_dim
        self.action_dim = action_dim
        self.max_action = max_action
        self.orthogonal_init = orthogonal_init
        self.no_tanh = no_tanh
        self.base_network = nn.Sequential(
            nn.Linear(state_dim, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 2 * action_dim),
        )
        init_module_weights(self.base_network)
        self.log_std_multiplier = Scalar(log_std_multiplier)
        self.log_std_offset = Scalar(log_std_offset)
        self.tanh_gaussian = ReparameterizedTanhGaussian(no_tanh=no_tanh)

    def _mean_log_std(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = torch.split(self.base_network(observations), self.action_dim, dim=-1)
        return mean, self.log_std_multiplier() * log_std + self.log_std_offset()

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """CORL quirk: log-prob of a FRESH sample (one RNG draw); ``actions`` only sets the repeat."""
        if actions.ndim == 3:
            observations = extend_and_repeat(observations, 1, actions.shape[1])
        _, log_probs = self.tanh_gaussian(*self._mean_log_std(observations), False)
        return log_probs

    def forward(self, observations: torch.Tensor, deterministic: bool = False,
                repeat: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if repeat is not None:
            observations = extend_and_repeat(observations, 1, repeat)
        actions, log_probs = self.tanh_gaussian(*self._mean_log_std(observations), deterministic)
        return self.max_action * actions, log_probs

    @torch.no_grad()
    def act(self, state: np.ndarray, device: str = "cpu") -> np.ndarray:
        state_t = torch.tensor(state.reshape(1, -1), device=device, dtype=torch.float32)
        actions, _ = self(state_t, not self.training)
        return actions.cpu().data.numpy().flatten()


class FullyConnectedQFunction(nn.Module):
    """Q(s, a): ReLU MLP with ``n_hidden_layers`` 256-wide layers; accepts [B,k,A] actions for [B] observations."""

    def __init__(self, observation_dim: int, action_dim: int, orthogonal_init: bool = False,
                 n_hidden_layers: int = 3):
        super().__init__()
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.orthogonal_init = orthogonal_init
        layers: list[nn.Module] = [nn.Linear(observation_dim + action_dim, 256), nn.ReLU()]
        for _ in range(n_hidden_layers - 1):
            layers.append(nn.Linear(256, 256))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(256, 1))
        self.network = nn.Sequential(*layers)
        init_module_weights(self.network, orthogonal_init)

    def forward(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        multiple_actions = False
        batch_size = observations.shape[0]
        if actions.ndim == 3 and observations.ndim == 2:
            multiple_actions = True
            observations = extend_and_repeat(observations, 1, actions.shape[1]).reshape(-1, observations.shape[-1])
            actions = actions.reshape(-1, actions.shape[-1])
        q_values = torch.squeeze(self.network(torch.cat([observations, actions], dim=-1)), dim=-1)
        if multiple_actions:
            q_values = q_values.reshape(batch_size, -1)
        return q_values


# ----------------------------------------------------------------------------------------------------- trainer


class ContinuousCQL(ReferenceTrainer):
    """CORL's ``ContinuousCQL`` together with the network/optimizer construction of CORL's ``train()``.

    Builds in CORL's order from the global torch RNG: critic_1, critic_2, their Adams, actor, actor Adam, then
    targets (deepcopies), log_alpha + Adam(policy_lr), log_alpha_prime + Adam(qf_lr).
    """

    variant = "cql"
    targets_of = {"target_critic_1": "critic_1", "target_critic_2": "critic_2"}

    def __init__(self, config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu"):
        self.config = config
        critic_1 = FullyConnectedQFunction(state_dim, action_dim, config.orthogonal_init,
                                           config.q_n_hidden_layers).to(device)
        critic_2 = FullyConnectedQFunction(state_dim, action_dim, config.orthogonal_init).to(device)
        self.critic_1_optimizer = torch.optim.Adam(list(critic_1.parameters()), config.qf_lr)
        self.critic_2_optimizer = torch.optim.Adam(list(critic_2.parameters()), config.qf_lr)
        actor = TanhGaussianPolicy(state_dim, action_dim, max_action,
                                   log_std_multiplier=config.policy_log_std_multiplier,
                                   orthogonal_init=config.orthogonal_init).to(device)
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), config.policy_lr)

        self.discount = config.discount
        self.target_entropy = -action_dim if config.target_entropy is None else config.target_entropy
        self.alpha_multiplier = config.alpha_multiplier
        self.use_automatic_entropy_tuning = config.use_automatic_entropy_tuning
        self.backup_entropy = config.backup_entropy
        self.policy_lr = config.policy_lr
        self.qf_lr = config.qf_lr
        self.soft_target_update_rate = config.soft_target_update_rate
        self.bc_steps = config.bc_steps
        self.target_update_period = config.target_update_period
        self.cql_n_actions = config.cql_n_actions
        self.cql_importance_sample = config.cql_importance_sample
        self.cql_lagrange = config.cql_lagrange
        self.cql_target_action_gap = config.cql_target_action_gap
        self.cql_temp = config.cql_temp
        self.cql_alpha = config.cql_alpha
        self.cql_max_target_backup = config.cql_max_target_backup
        self.cql_clip_diff_min = config.cql_clip_diff_min
        self.cql_clip_diff_max = config.cql_clip_diff_max
        self.device = device

        self.critic_1 = critic_1
        self.critic_2 = critic_2
        self.target_critic_1 = copy.deepcopy(self.critic_1).to(device)
        self.target_critic_2 = copy.deepcopy(self.critic_2).to(device)
        self.actor = actor

        self.log_alpha: Scalar | None = None
        self.alpha_optimizer: torch.optim.Optimizer | None = None
        if self.use_automatic_entropy_tuning:
            self.log_alpha = Scalar(0.0)
            self.alpha_optimizer = torch.optim.Adam(self.log_alpha.parameters(), lr=self.policy_lr)
        self.log_alpha_prime = Scalar(1.0)
        self.alpha_prime_optimizer = torch.optim.Adam(self.log_alpha_prime.parameters(), lr=self.qf_lr)
        self.total_it = 0

    def modules(self) -> dict[str, nn.Module]:
        online: dict[str, nn.Module] = {"critic_1": self.critic_1, "critic_2": self.critic_2, "actor": self.actor}
        if self.log_alpha is not None:
            online["log_alpha"] = self.log_alpha
        online["log_alpha_prime"] = self.log_alpha_prime
        return {**online, "target_critic_1": self.target_critic_1, "target_critic_2": self.target_critic_2}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        out: dict[str, torch.optim.Optimizer] = {"critic_1": self.critic_1_optimizer,
                                                 "critic_2": self.critic_2_optimizer, "actor": self.actor_optimizer}
        if self.alpha_optimizer is not None:
            out["alpha"] = self.alpha_optimizer
        out["alpha_prime"] = self.alpha_prime_optimizer
        return out

    def update_target_network(self, soft_target_update_rate: float) -> None:
        soft_update(self.target_critic_1, self.critic_1, soft_target_update_rate)
        soft_update(self.target_critic_2, self.critic_2, soft_target_update_rate)

    def _alpha_and_alpha_loss(self, observations: torch.Tensor,
                              log_pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_automatic_entropy_tuning:
            alpha_loss = alpha_loss_fn(self.log_alpha(), log_pi, self.target_entropy)
            alpha = alpha_from_log(self.log_alpha(), self.alpha_multiplier)
        else:
            alpha_loss = observations.new_tensor(0.0)
            alpha = observations.new_tensor(self.alpha_multiplier)
        return alpha, alpha_loss

    def _policy_loss(self, observations: torch.Tensor, actions: torch.Tensor, new_actions: torch.Tensor,
                     alpha: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
        if self.total_it <= self.bc_steps:
            return sac_policy_loss(alpha, log_pi, self.actor.log_prob(observations, actions))
        q_new_actions = torch.min(self.critic_1(observations, new_actions), self.critic_2(observations, new_actions))
        return sac_policy_loss(alpha, log_pi, q_new_actions)

    def _target_q(self, next_observations: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """min of the target critics at a fresh next action (max over n samples with max-backup), [B]."""
        if self.cql_max_target_backup:
            new_next_actions, next_log_pi = self.actor(next_observations, repeat=self.cql_n_actions)
            target_q_values, max_target_indices = torch.max(
                torch.min(self.target_critic_1(next_observations, new_next_actions),
                          self.target_critic_2(next_observations, new_next_actions)),
                dim=-1,
            )
            next_log_pi = torch.gather(next_log_pi, -1, max_target_indices.unsqueeze(-1)).squeeze(-1)
        else:
            new_next_actions, next_log_pi = self.actor(next_observations)
            target_q_values = torch.min(self.target_critic_1(next_observations, new_next_actions),
                                        self.target_critic_2(next_observations, new_next_actions))
        if self.backup_entropy:
            target_q_values = target_q_values - alpha * next_log_pi
        return target_q_values

    def _q_loss(self, observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor,
                rewards: torch.Tensor, dones: torch.Tensor, alpha: torch.Tensor,
                log_dict: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q1_predicted = self.critic_1(observations, actions)
        q2_predicted = self.critic_2(observations, actions)
        target_q_values = self._target_q(next_observations, alpha)
        target = td_target(rewards, dones, target_q_values, self.discount)
        qf1_loss = F.mse_loss(q1_predicted, target.detach())
        qf2_loss = F.mse_loss(q2_predicted, target.detach())

        batch_size = actions.shape[0]
        action_dim = actions.shape[-1]
        cql_random_actions = actions.new_empty((batch_size, self.cql_n_actions, action_dim),
                                               requires_grad=False).uniform_(-1, 1)
        cql_current_actions, cql_current_log_pis = self.actor(observations, repeat=self.cql_n_actions)
        cql_next_actions, cql_next_log_pis = self.actor(next_observations, repeat=self.cql_n_actions)
        cql_current_actions, cql_current_log_pis = cql_current_actions.detach(), cql_current_log_pis.detach()
        cql_next_actions, cql_next_log_pis = cql_next_actions.detach(), cql_next_log_pis.detach()

        cql_q1_rand = self.critic_1(observations, cql_random_actions)
        cql_q2_rand = self.critic_2(observations, cql_random_actions)
        cql_q1_current_actions = self.critic_1(observations, cql_current_actions)
        cql_q2_current_actions = self.critic_2(observations, cql_current_actions)
        cql_q1_next_actions = self.critic_1(observations, cql_next_actions)
        cql_q2_next_actions = self.critic_2(observations, cql_next_actions)

        cql_std_q1 = torch.std(cql_cat_q(cql_q1_rand, q1_predicted, cql_q1_next_actions, cql_q1_current_actions,
                                         cql_next_log_pis, cql_current_log_pis, action_dim, False), dim=1)
        cql_std_q2 = torch.std(cql_cat_q(cql_q2_rand, q2_predicted, cql_q2_next_actions, cql_q2_current_actions,
                                         cql_next_log_pis, cql_current_log_pis, action_dim, False), dim=1)
        cql_cat_q1 = cql_cat_q(cql_q1_rand, q1_predicted, cql_q1_next_actions, cql_q1_current_actions,
                               cql_next_log_pis, cql_current_log_pis, action_dim, self.cql_importance_sample)
        cql_cat_q2 = cql_cat_q(cql_q2_rand, q2_predicted, cql_q2_next_actions, cql_q2_current_actions,
                               cql_next_log_pis, cql_current_log_pis, action_dim, self.cql_importance_sample)
        cql_qf1_ood = cql_ood(cql_cat_q1, self.cql_temp)
        cql_qf2_ood = cql_ood(cql_cat_q2, self.cql_temp)
        cql_qf1_diff = cql_qf_diff(cql_qf1_ood, q1_predicted, self.cql_clip_diff_min, self.cql_clip_diff_max)
        cql_qf2_diff = cql_qf_diff(cql_qf2_ood, q2_predicted, self.cql_clip_diff_min, self.cql_clip_diff_max)

        if self.cql_lagrange:
            alpha_prime = torch.clamp(torch.exp(self.log_alpha_prime()), min=0.0, max=1000000.0)
            cql_min_qf1_loss = alpha_prime * self.cql_alpha * (cql_qf1_diff - self.cql_target_action_gap)
            cql_min_qf2_loss = alpha_prime * self.cql_alpha * (cql_qf2_diff - self.cql_target_action_gap)
            self.alpha_prime_optimizer.zero_grad()
            alpha_prime_loss = (-cql_min_qf1_loss - cql_min_qf2_loss) * 0.5
            alpha_prime_loss.backward(retain_graph=True)
            self.alpha_prime_optimizer.step()
        else:
            cql_min_qf1_loss = cql_qf1_diff * self.cql_alpha
            cql_min_qf2_loss = cql_qf2_diff * self.cql_alpha
            alpha_prime_loss = observations.new_tensor(0.0)
            alpha_prime = observations.new_tensor(0.0)

        qf_loss = qf1_loss + qf2_loss + cql_min_qf1_loss + cql_min_qf2_loss

        log_dict.update(
            qf1_loss=qf1_loss.item(),
            qf2_loss=qf2_loss.item(),
            alpha=alpha.item(),
            average_qf1=q1_predicted.mean().item(),
            average_qf2=q2_predicted.mean().item(),
            average_target_q=target_q_values.mean().item(),
            cql_std_q1=cql_std_q1.mean().item(),
            cql_std_q2=cql_std_q2.mean().item(),
            cql_q1_rand=cql_q1_rand.mean().item(),
            cql_q2_rand=cql_q2_rand.mean().item(),
            cql_min_qf1_loss=cql_min_qf1_loss.mean().item(),
            cql_min_qf2_loss=cql_min_qf2_loss.mean().item(),
            cql_qf1_diff=cql_qf1_diff.mean().item(),
            cql_qf2_diff=cql_qf2_diff.mean().item(),
            cql_q1_current_actions=cql_q1_current_actions.mean().item(),
            cql_q2_current_actions=cql_q2_current_actions.mean().item(),
            cql_q1_next_actions=cql_q1_next_actions.mean().item(),
            cql_q2_next_actions=cql_q2_next_actions.mean().item(),
            alpha_prime_loss=alpha_prime_loss.item(),
            alpha_prime=alpha_prime.item(),
        )
        return qf_loss, alpha_prime, alpha_prime_loss

    def train_step(self, batch: TensorBatch) -> dict[str, float]:
        observations, actions, rewards, next_observations, dones = batch
        self.total_it += 1

        new_actions, log_pi = self.actor(observations)
        alpha, alpha_loss = self._alpha_and_alpha_loss(observations, log_pi)
        policy_loss = self._policy_loss(observations, actions, new_actions, alpha, log_pi)
        log_dict: dict[str, float] = {
            "log_pi": log_pi.mean().item(),
            "policy_loss": policy_loss.item(),
            "alpha_loss": alpha_loss.item(),
            "alpha": alpha.item(),
        }
        qf_loss, _, _ = self._q_loss(observations, actions, next_observations, rewards, dones, alpha, log_dict)

        if self.use_automatic_entropy_tuning:
            self.alpha_optimizer.zero_grad()
            alpha_loss.backward()
            self.alpha_optimizer.step()

        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()

        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        qf_loss.backward(retain_graph=True)
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()

        if self.total_it % self.target_update_period == 0:
            self.update_target_network(self.soft_target_update_rate)
        return log_dict


def build(config: Config, state_dim: int, action_dim: int, max_action: float, device: str = "cpu",
          dtype: torch.dtype = torch.float32) -> ContinuousCQL:
    """Trainer factory with the common signature of every reference module (``dtype``: float32 as in CORL)."""
    return build_in_dtype(ContinuousCQL, dtype, config, state_dim, action_dim, max_action, device)
