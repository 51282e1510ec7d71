"""POGO on top of TD3+BC -- my single-file trainer.

actor0 + twin critic are plain TD3+BC as in CORL (same init order, same losses, same update order: critic every
step, actor + soft target updates every `policy_freq` steps). On every actor step, K extra deterministic actors
follow: actor i minimises TD3+BC's actor objective plus

    w_i * ||pi_i(s) - pi_{i-1}(s)||^2      (pi_{i-1} frozen as it was at the *start* of the step)

The extra actors never touch the global RNG: they are initialised under `fork_rng` from their own seed and draw
nothing afterwards, so actor0 and the critic see exactly the random stream TD3+BC alone would see.

Usage:
    trainer = POGOTD3BC(state_dim=17, action_dim=6, max_action=1.0, seed=0, chain_weights=[1.0, 1.0])
    log = trainer.train(batch)    # batch = [s, a, r, s', done] float32 tensors, r and done of shape [B, 1]
"""

from __future__ import annotations

import copy
import random
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LR = 3e-4
CHAIN_SEED_OFFSET = 12_345  # the extra actors' init seed is seed + this


def set_seed(seed: int) -> None:
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


class Actor(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, max_action: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(state_dim, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, action_dim), nn.Tanh(),
        )
        self.max_action = max_action

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.max_action * self.layers(s)


class Critic(nn.Module):
    def __init__(self, state_dim: int, action_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(state_dim + action_dim, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 1),
        )

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([s, a], 1))


@contextmanager
def frozen(module: nn.Module):
    """No gradient reaches `module` inside the block (its .grad stays what the base algorithm left there)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(1 - tau).add_(tau * s)


class POGOTD3BC:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, seed: int = 0,
                 chain_weights: list[float] | None = None, alpha: float = 2.5, discount: float = 0.99,
                 tau: float = 0.005, policy_noise: float = 0.2, noise_clip: float = 0.5, policy_freq: int = 2):
        set_seed(seed)
        # --- TD3+BC, constructed in CORL's order (actor, its optimizer, critic 1, ..., critic 2, ...)
        self.pi = Actor(state_dim, action_dim, max_action)
        self.pi_opt = torch.optim.Adam(self.pi.parameters(), lr=LR)
        self.q1 = Critic(state_dim, action_dim)
        self.q2 = Critic(state_dim, action_dim)
        # one Adam over both critics: per-parameter Adam, so the same updates as CORL's two optimizers
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=LR)
        self.pi_targ = copy.deepcopy(self.pi).requires_grad_(False)
        self.q1_targ = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_targ = copy.deepcopy(self.q2).requires_grad_(False)

        # --- the POGO chain: built from its own seed; fork_rng puts the global stream back afterwards
        self.chain_weights = list(chain_weights or [])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + CHAIN_SEED_OFFSET)
            self.chain = nn.ModuleList(Actor(state_dim, action_dim, max_action) for _ in self.chain_weights)
        self.chain_opts = [torch.optim.Adam(actor.parameters(), lr=LR) for actor in self.chain]

        self.max_action = max_action
        self.alpha, self.discount, self.tau = alpha, discount, tau
        self.policy_noise = policy_noise * max_action
        self.noise_clip = noise_clip * max_action
        self.policy_freq = policy_freq
        self.it = 0

    def actors(self) -> list[nn.Module]:
        """actor0 followed by the chain."""
        return [self.pi, *self.chain]

    # ------------------------------------------------------------------------------------------------ losses
    def td3_bc_objective(self, a_pi: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        q = self.q1(s, a_pi)
        lmbda = self.alpha / q.abs().mean().detach()
        return -lmbda * q.mean() + F.mse_loss(a_pi, a)

    def chain_loss(self, i: int, anchor: nn.Module, s: torch.Tensor, a: torch.Tensor):
        """TD3+BC objective of chain actor i plus its W2 pull towards `anchor` (actor i-1 at step start)."""
        a_i = self.chain[i - 1](s)
        with torch.no_grad():
            a_prev = anchor(s)
        w2 = ((a_i - a_prev) ** 2).sum(-1).mean()  # W2^2 between two deterministic policies
        return self.td3_bc_objective(a_i, s, a) + self.chain_weights[i - 1] * w2, w2

    # ------------------------------------------------------------------------------------------------ updates
    def update_critic(self, s, a, r, s2, d, log: dict) -> None:
        with torch.no_grad():
            noise = (torch.randn_like(a) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            a2 = (self.pi_targ(s2) + noise).clamp(-self.max_action, self.max_action)
            q_next = torch.min(self.q1_targ(s2, a2), self.q2_targ(s2, a2))
            y = r + (1 - d) * self.discount * q_next
        loss = F.mse_loss(self.q1(s, a), y) + F.mse_loss(self.q2(s, a), y)
        self.q_opt.zero_grad()
        loss.backward()
        self.q_opt.step()
        log["loss/critic"] = loss.item()

    def update_actor0(self, s, a, log: dict) -> None:
        loss = self.td3_bc_objective(self.pi(s), s, a)
        self.pi_opt.zero_grad()
        loss.backward()
        self.pi_opt.step()
        log["loss/actor"] = loss.item()

    def update_targets(self) -> None:
        soft_update(self.q1_targ, self.q1, self.tau)
        soft_update(self.q2_targ, self.q2, self.tau)
        soft_update(self.pi_targ, self.pi, self.tau)

    def update_chain(self, anchors: list[nn.Module], s, a, log: dict) -> None:
        with frozen(self.q1):  # the chain's Q term must not write into the critic's .grad
            for i, opt in enumerate(self.chain_opts, start=1):
                loss, w2 = self.chain_loss(i, anchors[i - 1], s, a)
                opt.zero_grad()
                loss.backward()
                opt.step()
                log[f"chain/{i}/loss"] = loss.item()
                log[f"chain/{i}/w2"] = w2.item()

    def train(self, batch) -> dict[str, float]:
        s, a, r, s2, d = batch
        self.it += 1
        actor_step = self.it % self.policy_freq == 0
        # anchors: frozen copies of actors 0..K-1 as they are *now*, before anything is updated
        anchors = [copy.deepcopy(m).requires_grad_(False) for m in self.actors()[:-1]] if actor_step else []
        log: dict[str, float] = {}
        self.update_critic(s, a, r, s2, d, log)
        if actor_step:
            self.update_actor0(s, a, log)
            self.update_targets()
            self.update_chain(anchors, s, a, log)
        return log


if __name__ == "__main__":  # smoke test on random data
    B, S, A = 256, 11, 3
    trainer = POGOTD3BC(S, A, 1.0, seed=0, chain_weights=[1.0, 1.0])
    batch = [torch.randn(B, S), torch.rand(B, A) * 2 - 1, torch.randn(B, 1), torch.randn(B, S), torch.zeros(B, 1)]
    for _ in range(4):
        print(trainer.train(batch))
