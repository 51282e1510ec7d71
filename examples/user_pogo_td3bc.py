"""POGO on top of TD3+BC -- my single-file trainer.

actor0 + twin critic are plain TD3+BC as in CORL (same init order, same losses, same update order: critic every
step, actor + soft target updates every `policy_freq` steps). On every actor step, K extra deterministic actors
follow: actor i minimises TD3+BC's actor objective plus

    w_i * ||pi_i(s) - pi_{i-1}(s)||^2      (pi_{i-1} frozen as it was at the *start* of the step)

The extra actors never touch the global RNG: they are initialised under `fork_rng` from their own seed and draw
nothing afterwards, so actor0 and the critic see exactly the random stream TD3+BC alone would see.

Around the update, the plumbing of a real run:

* `POGOConfig` validates every field on construction and names the field it rejects (a `w2_weights` list that does
  not have one weight per extra actor is an error, never padded or cut);
* `JsonlLogger` writes one JSON line per `log(metrics, step)` call: every scalar (Python, NumPy, 0-d torch), nested
  dicts flattened with `/`, NaN/Inf as the strings "nan"/"inf"/"-inf"; None, strings and arrays are skipped with one
  warning per key;
* `save_checkpoint` writes networks, optimizers, the step counter and the global RNG states to a temporary file in
  the same directory and `os.replace`s it onto the path: a crash or a full disk mid-write leaves the previous
  checkpoint intact, and a resumed run continues bitwise.

Usage:
    trainer = POGOTD3BC(state_dim=17, action_dim=6, max_action=1.0, seed=0, chain_weights=[1.0, 1.0])
    log = trainer.train(batch)    # batch = [s, a, r, s', done] float32 tensors, r and done of shape [B, 1]
    trainer.open_log("runs/hopper/metrics.jsonl"); trainer.log(log, step=1)
    trainer.save_checkpoint("runs/hopper/checkpoint.pt")
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LR = 3e-4
CHAIN_SEED_OFFSET = 12_345  # the extra actors' init seed is seed + this


ACTOR_KINDS = ("deterministic", "gaussian", "tanh_gaussian", "implicit")


class ConfigError(ValueError):
    """A rejected configuration field; the message starts with the field's name."""


@dataclass
class ActorSpec:
    kind: str = "deterministic"
    hidden: int = 256


def _int_field(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise ConfigError(f"{name}: expected an int in [{low}, {high if high is not None else 'inf'}], got {value!r}")


def _number_field(name: str, value: Any, low: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ConfigError(f"{name}: expected a finite number >= {low}, got {value!r}")
    return float(value)


def _actor_spec(i: int, entry: Any) -> ActorSpec:
    if isinstance(entry, ActorSpec):
        return entry
    try:
        return ActorSpec(**entry)
    except TypeError as exc:
        raise ConfigError(f"actors[{i}]: expected an ActorSpec or a mapping of its fields, got {entry!r} ({exc})") \
            from None


@dataclass
class POGOConfig:
    """One run's settings. Checked on construction: a bad field raises ConfigError naming it."""

    num_actors: int = 3
    w2_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # one per extra actor
    actors: list[ActorSpec] | None = None  # one per actor, actor0 first (default: all deterministic)
    seed: int = 0
    alpha: float = 2.5
    discount: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2

    def __post_init__(self) -> None:
        _int_field("num_actors", self.num_actors, 1)
        _int_field("seed", self.seed, 0, 2**32 - 1)
        _int_field("policy_freq", self.policy_freq, 1)
        if not isinstance(self.w2_weights, (list, tuple)):
            raise ConfigError(f"w2_weights: expected a list of num_actors - 1 weights, got {self.w2_weights!r}")
        if len(self.w2_weights) != self.num_actors - 1:
            raise ConfigError(f"w2_weights: {len(self.w2_weights)} weights for num_actors = {self.num_actors} "
                              f"(one per extra actor: {self.num_actors - 1})")
        self.w2_weights = [_number_field(f"w2_weights[{i}]", w, 0.0) for i, w in enumerate(self.w2_weights)]
        actors = [ActorSpec() for _ in range(self.num_actors)] if self.actors is None else self.actors
        if not isinstance(actors, (list, tuple)) or len(actors) != self.num_actors:
            raise ConfigError(f"actors: expected num_actors = {self.num_actors} entries (actor0 first), got {actors!r}")
        self.actors = [_actor_spec(i, a) for i, a in enumerate(actors)]
        for i, a in enumerate(self.actors):
            if a.kind not in ACTOR_KINDS:
                raise ConfigError(f"actors[{i}].kind: expected one of {ACTOR_KINDS}, got {a.kind!r}")
            _int_field(f"actors[{i}].hidden", a.hidden, 1)
        if self.actors[0].kind != "deterministic":
            raise ConfigError(f"actors[0].kind: TD3+BC's actor0 is deterministic, got {self.actors[0].kind!r}")
        for name in ("alpha", "discount", "tau", "policy_noise", "noise_clip"):
            setattr(self, name, _number_field(name, getattr(self, name), 0.0))


# ---------------------------------------------------------------------------------------------------- logging


def _scalar(value: Any) -> bool | int | float | None:
    """A Python scalar for a loggable value (Python/NumPy scalar, 0-d array or tensor), else None."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 and not value.is_complex() else None
    if isinstance(value, (np.ndarray, np.generic)):
        if value.ndim != 0 or value.dtype.kind not in "biuf":
            return None
        return bool(value) if value.dtype.kind == "b" else int(value) if value.dtype.kind in "iu" else float(value)
    if isinstance(value, (bool, int, float)):
        return value
    return None


def _json_number(x: bool | int | float) -> bool | int | float | str:
    """JSON has no NaN/Inf: they are written as the strings "nan", "inf", "-inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


class JsonlLogger:
    """``{"step": N, "metrics": {...}}`` per line; every scalar under a string key is written, nothing else."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._warned: set[str] = set()

    def _flat(self, metrics: Mapping[Any, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
        out: dict[str, bool | int | float | str] = {}
        for key, value in metrics.items():
            if not isinstance(key, str):
                self._skip(repr(key), "not a string key")
                continue
            name = prefix + key
            if isinstance(value, Mapping):
                out.update(self._flat(value, name + "/"))
                continue
            x = _scalar(value)
            if x is None:
                self._skip(name, f"{type(value).__name__} is not a scalar")
            else:
                out[name] = _json_number(x)
        return out

    def _skip(self, name: str, why: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"not logging {name[:80]!r}: {why}", RuntimeWarning, stacklevel=4)

    def log(self, metrics: Mapping[Any, Any], step: int) -> None:
        line = json.dumps({"step": int(step), "metrics": self._flat(metrics)}, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        """The logged metrics, one dict per call."""
        if not self.path.exists():
            return []
        return [json.loads(line)["metrics"] for line in self.path.read_text(encoding="utf-8").splitlines()]


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
        weights = list(chain_weights or [])
        self.config = POGOConfig(num_actors=len(weights) + 1, w2_weights=weights, seed=seed, alpha=alpha,
                                 discount=discount, tau=tau, policy_noise=policy_noise, noise_clip=noise_clip,
                                 policy_freq=policy_freq)
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
        self.logger: JsonlLogger | None = None

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

    # ------------------------------------------------------------------------------------------------ run plumbing
    def open_log(self, path: str | os.PathLike) -> None:
        self.logger = JsonlLogger(path)

    def log(self, metrics: Mapping[Any, Any], step: int) -> None:
        if self.logger is None:
            raise RuntimeError("log: call open_log(path) first")
        self.logger.log(metrics, step)

    def _modules(self) -> dict[str, Any]:
        return {"pi": self.pi, "q1": self.q1, "q2": self.q2, "pi_targ": self.pi_targ, "q1_targ": self.q1_targ,
                "q2_targ": self.q2_targ, "chain": self.chain, "pi_opt": self.pi_opt, "q_opt": self.q_opt,
                **{f"chain_opt{i}": opt for i, opt in enumerate(self.chain_opts)}}

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Everything a bitwise resume needs, written atomically: a temporary file in the same directory, fsynced,
        then ``os.replace`` (the old checkpoint stays until the new one is complete). Errors propagate."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np_state = np.random.get_state()
        state = {"it": self.it, **{k: m.state_dict() for k, m in self._modules().items()},
                 "rng": {"torch": torch.get_rng_state(), "random": random.getstate(),
                         "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}}
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before it replaces the old checkpoint
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = torch.load(path, weights_only=True)
        for key, module in self._modules().items():
            module.load_state_dict(state[key])
        self.it = state["it"]
        name, keys, *rest = state["rng"]["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        random.setstate(state["rng"]["random"])
        torch.set_rng_state(state["rng"]["torch"])


if __name__ == "__main__":  # smoke test on random data
    B, S, A = 256, 11, 3
    trainer = POGOTD3BC(S, A, 1.0, seed=0, chain_weights=[1.0, 1.0])
    batch = [torch.randn(B, S), torch.rand(B, A) * 2 - 1, torch.randn(B, 1), torch.randn(B, S), torch.zeros(B, 1)]
    for _ in range(4):
        print(trainer.train(batch))
