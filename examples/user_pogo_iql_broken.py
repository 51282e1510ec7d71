"""POGO on top of IQL -- my single-file trainer (with the evaluation I use during training).

actor0 (a tanh-mean Gaussian), the twin Q critic and the value function are IQL as in CORL: same construction
order, expectile value loss, TD targets from V(s'), advantage-weighted actor loss, soft target updates, and a cosine
learning-rate schedule on the actor. K extra Gaussian actors follow on every step: actor i minimises

    -Q(s, mu_i(s)) / mean|Q|  +  w_i * W2^2(pi_i, pi_{i-1})      (pi_{i-1} as it was at the *start* of the step)

with the closed-form W2 between diagonal Gaussians. The extra actors are built under `fork_rng` from their own
seed and draw nothing afterwards.

Around the update, the plumbing of a run: `IQLConfig` (validated on construction), a JSONL logger
(`log(metrics, step)`) and `save_checkpoint`/`load_checkpoint`.

This file has seven defects, as found in real code (see examples/README.md, "Second example"):

(a) `evaluate` uses the old gym API: `env.reset()` returns `(obs, info)` in gymnasium, so the first call crashes;
(b) `evaluate` calls `np.random.seed(seed)` "for reproducibility" on every call, which resets the global NumPy
    stream that the rest of the program (batch sampling) draws from;
(c) the actor's `CosineAnnealingLR` is built but never stepped, so the learning rate never decays;
(d) the extra actors' Q term back-propagates into the critics (nothing freezes them); the critic optimizer zeroes
    those gradients before its own backward on the next step, so training is unaffected -- a harmless leak;
(e) `IQLConfig` pads or cuts `w2_weights` to `num_actors - 1` entries instead of rejecting the mismatch;
(f) `log` calls `float()` on every value: a None, an array or a nested dict raises and the record is lost;
(g) `save_checkpoint` is `torch.save` straight onto the path, of the weights only (no optimizer, no RNG state): a
    crash mid-write destroys the previous checkpoint, and a resumed run restarts Adam's moments.

`fixed=True` applies the fixes of (a), (b) and (c) (the leak stays: it does not change training; (e)-(g) are not
part of the training step).

Usage:
    trainer = POGOIQL(state_dim=11, action_dim=3, seed=0, chain_weights=[1.0, 1.0], env_name="Hopper-v5")
    log = trainer.train(batch)    # batch = [s, a, r, s', done] float32 tensors, r and done of shape [B, 1]
    trainer.evaluate(seed=0, episodes=5)
    trainer.log(log, step=1)          # appends to log_path (default runs/iql/metrics.jsonl)
    trainer.save_checkpoint("runs/iql/checkpoint.pt")
"""

from __future__ import annotations

import copy
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal
from torch.optim.lr_scheduler import CosineAnnealingLR

LR = 3e-4
HIDDEN = 256
CHAIN_SEED_OFFSET = 4_242  # the extra actors' init seed is seed + this


ACTOR_TYPES = ("deterministic", "gaussian", "tanh_gaussian", "implicit")


@dataclass
class IQLConfig:
    """Run settings, checked in `__post_init__` (ValueError naming the field)."""

    num_actors: int = 3
    w2_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    actor_types: list[str] | None = None  # one per actor, actor0 first; actor0 is IQL's Gaussian
    seed: int = 0
    discount: float = 0.99
    tau: float = 0.005
    beta: float = 3.0
    expectile: float = 0.7
    max_steps: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("num_actors", "seed", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.w2_weights, (list, tuple)):
            raise ValueError(f"w2_weights must be a list, got {self.w2_weights!r}")
        for i, w in enumerate(self.w2_weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"w2_weights[{i}] must be a finite number >= 0, got {w!r}")
        # (e) one weight per extra actor: pad with the default weight or drop the extra ones
        self.w2_weights = (list(self.w2_weights) + [1.0] * self.num_actors)[: self.num_actors - 1]
        types = ["gaussian"] * self.num_actors if self.actor_types is None else self.actor_types
        if not isinstance(types, (list, tuple)) or len(types) != self.num_actors:
            raise ValueError(f"actor_types needs num_actors = {self.num_actors} entries, got {types!r}")
        if any(t not in ACTOR_TYPES for t in types) or types[0] != "gaussian":
            raise ValueError(f"actor_types: actor0 must be 'gaussian' and every type one of {ACTOR_TYPES}, "
                             f"got {types!r}")
        self.actor_types = list(types)
        for name in ("discount", "tau", "beta", "expectile"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")


def set_seed(seed: int) -> None:
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def mlp(inp: int, out: int, last: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Linear(inp, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, out)]
    return nn.Sequential(*layers, *([last] if last is not None else []))


class QNet(nn.Module):
    def __init__(self, state_dim: int, action_dim: int):
        super().__init__()
        self.body = mlp(state_dim + action_dim, 1)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([s, a], 1)).squeeze(-1)


class VNet(nn.Module):
    def __init__(self, state_dim: int):
        super().__init__()
        self.body = mlp(state_dim, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.body(s).squeeze(-1)


class GaussianActor(nn.Module):
    """Normal(tanh-MLP(s), exp(log_std)) with a state-independent log-std."""

    def __init__(self, state_dim: int, action_dim: int):
        super().__init__()
        self.mu = mlp(state_dim, action_dim, nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(action_dim, dtype=torch.float32))

    def forward(self, s: torch.Tensor) -> Normal:
        return Normal(self.mu(s), torch.exp(self.log_std.clamp(-20.0, 2.0)))


class POGOIQL:
    def __init__(self, state_dim: int, action_dim: int, max_action: float = 1.0, seed: int = 0,
                 chain_weights: list[float] | None = None, env_name: str = "Hopper-v5",
                 state_mean: np.ndarray | None = None, state_std: np.ndarray | None = None,
                 discount: float = 0.99, tau: float = 0.005, beta: float = 3.0, expectile: float = 0.7,
                 max_steps: int = 1_000_000, fixed: bool = False, log_path: str = "runs/iql/metrics.jsonl"):
        self.config = IQLConfig(num_actors=len(chain_weights or []) + 1, w2_weights=list(chain_weights or []),
                                seed=seed, discount=discount, tau=tau, beta=beta, expectile=expectile,
                                max_steps=max_steps)
        self.log_path = Path(log_path)
        set_seed(seed)
        self.fixed = fixed
        # --- IQL, in CORL's construction order: Q (two nets), V, actor, optimizers, target, schedule
        self.q1 = QNet(state_dim, action_dim)
        self.q2 = QNet(state_dim, action_dim)
        self.v = VNet(state_dim)
        self.pi = GaussianActor(state_dim, action_dim)
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=LR)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=LR)
        self.pi_opt = torch.optim.Adam(self.pi.parameters(), lr=LR)
        self.q1_targ = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_targ = copy.deepcopy(self.q2).requires_grad_(False)
        self.pi_sched = CosineAnnealingLR(self.pi_opt, max_steps)

        # --- the POGO chain: its own seed; fork_rng puts the global stream back afterwards
        self.chain_weights = list(chain_weights or [])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + CHAIN_SEED_OFFSET)
            self.chain = nn.ModuleList(GaussianActor(state_dim, action_dim) for _ in self.chain_weights)
        self.chain_opts = [torch.optim.Adam(actor.parameters(), lr=LR) for actor in self.chain]

        self.max_action = max_action
        self.discount, self.tau, self.beta, self.expectile = discount, tau, beta, expectile
        self.env_name = env_name
        self.state_mean = torch.as_tensor(np.zeros(state_dim) if state_mean is None else state_mean,
                                          dtype=torch.float32)
        self.state_std = torch.as_tensor(np.ones(state_dim) if state_std is None else state_std, dtype=torch.float32)

    def actors(self) -> list[GaussianActor]:
        """actor0 followed by the chain."""
        return [self.pi, *self.chain]

    def q_min(self, s: torch.Tensor, a: torch.Tensor, target: bool = False) -> torch.Tensor:
        q1, q2 = (self.q1_targ, self.q2_targ) if target else (self.q1, self.q2)
        return torch.min(q1(s, a), q2(s, a))

    # ------------------------------------------------------------------------------------------------ updates
    def update_v(self, s, a, log: dict) -> torch.Tensor:
        with torch.no_grad():
            target_q = self.q_min(s, a, target=True)
        adv = target_q - self.v(s)
        loss = torch.mean(torch.abs(self.expectile - (adv < 0).float()) * adv**2)
        log["v_loss"] = loss.item()
        self.v_opt.zero_grad()
        loss.backward()
        self.v_opt.step()
        return adv

    def update_q(self, next_v, s, a, r, d, log: dict) -> None:
        y = r + (1.0 - d.float()) * self.discount * next_v.detach()
        loss = (F.mse_loss(self.q1(s, a), y) + F.mse_loss(self.q2(s, a), y)) / 2
        log["q_loss"] = loss.item()
        self.q_opt.zero_grad()
        loss.backward()
        self.q_opt.step()
        with torch.no_grad():
            for targ, net in ((self.q1_targ, self.q1), (self.q2_targ, self.q2)):
                for t, p in zip(targ.parameters(), net.parameters()):
                    t.data.copy_((1 - self.tau) * t.data + self.tau * p.data)

    def update_pi(self, adv, s, a, log: dict) -> None:
        weights = torch.exp(self.beta * adv.detach()).clamp(max=100.0)
        loss = torch.mean(weights * -self.pi(s).log_prob(a).sum(-1))
        log["pi_loss"] = loss.item()
        self.pi_opt.zero_grad()
        loss.backward()
        self.pi_opt.step()
        if self.fixed:
            self.pi_sched.step()  # (c) the schedule was built but never stepped

    def update_chain(self, anchors: list[GaussianActor], s, log: dict) -> None:
        # (d) nothing freezes q1/q2 here: the Q term writes into their .grad (q_opt.zero_grad() clears it next step)
        for i, (actor, opt) in enumerate(zip(self.chain, self.chain_opts), start=1):
            dist = actor(s)
            with torch.no_grad():
                prev = anchors[i - 1](s)
            w2 = (((dist.mean - prev.mean) ** 2).sum(-1) + ((dist.stddev - prev.stddev) ** 2).sum(-1)).mean()
            q = self.q_min(s, dist.mean)
            loss = -q.mean() / q.abs().mean().detach() + self.chain_weights[i - 1] * w2
            opt.zero_grad()
            loss.backward()
            opt.step()
            log[f"chain{i}/loss"] = loss.item()
            log[f"chain{i}/w2"] = w2.item()

    def train(self, batch) -> dict[str, float]:
        s, a, r, s2, d = batch
        anchors = [copy.deepcopy(m).requires_grad_(False) for m in self.actors()[:-1]]
        log: dict[str, float] = {}
        with torch.no_grad():
            next_v = self.v(s2)
        adv = self.update_v(s, a, log)
        self.update_q(next_v, s, a, r.squeeze(-1), d.squeeze(-1), log)
        self.update_pi(adv, s, a, log)
        self.update_chain(anchors, s, log)
        return log

    # ------------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def act(self, state: np.ndarray) -> np.ndarray:
        s = (torch.tensor(state.reshape(1, -1), dtype=torch.float32) - self.state_mean) / self.state_std
        return (self.pi(s).mean * self.max_action).clamp(-self.max_action, self.max_action).numpy().flatten()

    def evaluate(self, seed: int, episodes: int) -> dict[str, float]:
        """Mean return of actor0's mean action over `episodes` episodes of the env, seeded from `seed`."""
        if not self.fixed:
            np.random.seed(seed)  # (b) "reproducible evaluation": resets the global NumPy stream every call
        env = gym.make(self.env_name)
        self.pi.eval()
        returns = []
        for ep in range(episodes):
            if self.fixed:
                state, _ = env.reset(seed=seed + ep)
            else:
                state = env.reset(seed=seed + ep)  # (a) gym < 0.26 API: gymnasium returns (obs, info)
            total, done = 0.0, False
            while not done:
                state, reward, terminated, truncated, _ = env.step(self.act(state))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        self.pi.train()
        env.close()
        return {"return_mean": float(np.mean(returns))}

    # ------------------------------------------------------------------------------------------------ run plumbing
    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Append one JSON line to `log_path`."""
        record = {"step": step, "metrics": {str(k): float(v) for k, v in metrics.items()}}  # (f) float() of every value
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line)["metrics"] for line in self.log_path.read_text().splitlines()]

    def save_checkpoint(self, path: str) -> None:
        # (g) written in place, weights only: no optimizer state, no RNG state
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({name: getattr(self, name).state_dict() for name in ("q1", "q2", "v", "pi", "q1_targ", "q2_targ",
                                                                      "chain")}, path)

    def load_checkpoint(self, path: str) -> None:
        state = torch.load(path, weights_only=True)
        for name, weights in state.items():
            getattr(self, name).load_state_dict(weights)


if __name__ == "__main__":  # smoke test on random data
    B, S, A = 256, 11, 3
    trainer = POGOIQL(S, A, seed=0, chain_weights=[1.0, 1.0], fixed=True)
    batch = [torch.randn(B, S), torch.rand(B, A) * 2 - 1, torch.randn(B, 1), torch.randn(B, S), torch.zeros(B, 1)]
    for _ in range(3):
        print(trainer.train(batch))
    print(trainer.evaluate(seed=0, episodes=1))
