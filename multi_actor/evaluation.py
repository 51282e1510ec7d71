"""Evaluation of every actor of the chain in the gymnasium env recovered from the Minari dataset.

Like CORL, every evaluation replays the same initial states (the env is reseeded with ``eval_seed`` each time) and
observations are normalized with the training statistics. Stochastic evaluation draws from a ``torch.Generator``
seeded per evaluation. Nothing here touches the global torch / numpy / random streams of training.

Actors trained on a GPU are evaluated through CPU copies: one state per forward pass is launch-bound on a GPU, and
the CPU generator gives stochastic evaluation the same stream whatever device trained the actor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from multi_actor.policies import Policy


def on_cpu(policy: Policy) -> Policy:
    """``policy`` itself when its parameters are on the CPU, else a CPU copy (the original stays where it is)."""
    if all(p.device.type == "cpu" for p in policy.parameters()):
        return policy
    return copy.deepcopy(policy).cpu()


class Evaluator:
    """Runs ``episodes`` episodes per actor (deterministic, and stochastic for stochastic actors)."""

    def __init__(self, make_env: Callable[[], Any], state_mean: np.ndarray, state_std: np.ndarray, episodes: int,
                 seed: int, stochastic: bool = True, ref_scores: tuple[float | None, float | None] = (None, None)):
        self.env = make_env()
        self.state_mean = np.asarray(state_mean, dtype=np.float32)
        self.state_std = np.asarray(state_std, dtype=np.float32)
        self.episodes = episodes
        self.seed = seed
        self.stochastic = stochastic
        self.ref_min, self.ref_max = ref_scores
        self.errors: list[str] = []

    def normalized_score(self, returns: np.ndarray) -> np.ndarray | None:
        if self.ref_min is None or self.ref_max is None:
            return None
        return (returns - self.ref_min) / (self.ref_max - self.ref_min) * 100.0

    def _episode_returns(self, policy: Policy, deterministic: bool, seed: int, episodes: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        returns = []
        for ep in range(episodes):
            obs, _ = self.env.reset(seed=seed + ep)
            total, done = 0.0, False
            while not done:
                norm_obs = (np.asarray(obs, dtype=np.float32) - self.state_mean) / self.state_std
                action = policy.act(norm_obs, deterministic=deterministic, generator=generator)
                obs, reward, terminated, truncated, _ = self.env.step(action)
                total += float(reward)
                done = bool(terminated or truncated)
            returns.append(total)
        return np.asarray(returns, dtype=np.float64)

    def evaluate(self, policies: Sequence[Policy], seed: int | None = None,
                 episodes: int | None = None) -> dict[str, float]:
        """``eval/actor<i>/<mode>/return_mean|return_std|normalized_score_mean`` for every actor and mode, over
        ``episodes`` episodes from ``seed`` (default: the evaluator's own)."""
        seed = self.seed if seed is None else int(seed)
        episodes = self.episodes if episodes is None else int(episodes)
        out: dict[str, float] = {}
        for i, policy in enumerate(policies):
            policy = on_cpu(policy)
            modes = [("deterministic", True)]
            if self.stochastic and policy.stochastic:
                modes.append(("stochastic", False))
            was_training = policy.training
            policy.eval()
            try:
                with torch.no_grad():
                    for mode, det in modes:
                        key = f"eval/actor{i}/{mode}"
                        try:
                            returns = self._episode_returns(policy, det, seed, episodes)
                        except Exception as exc:  # an env or policy failure must be reported, not end training
                            out[f"{key}/failed"] = 1.0
                            self.errors.append(f"actor{i} {mode}: {type(exc).__name__}: {exc}")
                            continue
                        out[f"{key}/return_mean"] = float(returns.mean())
                        out[f"{key}/return_std"] = float(returns.std())
                        score = self.normalized_score(returns)
                        if score is not None:
                            out[f"{key}/normalized_score_mean"] = float(score.mean())
            finally:
                policy.train(was_training)
        return out

    def close(self) -> None:
        self.env.close()
