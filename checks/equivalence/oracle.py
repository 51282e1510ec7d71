"""Independent check of the W2 term of a multi-actor candidate (observable ``chain/actor<i>/w2``).

Equivalence of critic and actor0 says nothing about the actor chain itself. For a candidate that exposes
``policies()`` (actor0 first) and reports ``actor<i>/w2``, the oracle recomputes W2² between actor i and actor i-1
*as they were at the start of the step*, in float64, without the trainer's code:

* two Gaussians: the Bures-Wasserstein distance (squared), ``||m1 - m2||² + tr(C1 + C2 - 2 (C1^½ C2 C1^½)^½)``
  with matrix square roots by eigendecomposition (:func:`bures_w2`, the general formula for full covariances, not
  the trainer's diagonal shortcut; tested against POT's ``ot.gaussian.bures_wasserstein_distance``, which is not
  imported here: POT loads its torch and JAX backends on import, 2.4 s of every audit's start-up) — tight tolerance;
* two deterministic actors: ``||a - b||²`` — tight tolerance;
* a deterministic side: ``E||X - b||²``, exact for a Gaussian ``X`` (``||mu - b||² + sum std²``), otherwise a
  256-sample mean — 15 % tolerance;
* other stochastic pairs (the trainer's Sinkhorn divergence): exact OT between fresh empirical measures of the
  *same* sample size K, per state — the trainer's estimand as epsilon → 0, small-sample bias included; 15 % + 0.05
  tolerance covers the entropic term (about epsilon·log K) and sampling noise. Two uniform measures of K points
  each have an optimal plan that is a permutation (Birkhoff–von Neumann), so the exact OT cost is that of an
  optimal assignment: SciPy's ``linear_sum_assignment`` gives ``ot.emd2``'s value (to the last bits; tested)
  about 15× faster (256 states × K = 16 here: 4 ms against 63 ms), which keeps the oracle off the audit's wall.

A wrong scale, a dropped std term or a reference actor taken after its update all show up here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from multi_actor.w2 import pair_method

EXACT_TOL = (1e-4, 1e-6)
POINT_SAMPLED_TOL = (0.15, 1e-3)
SINKHORN_TOL = (0.15, 5e-2)
ORACLE_SEED = 97_531


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


@dataclass(frozen=True)
class PolicyView:
    """A policy as the oracle sees it, in float64 numpy, whatever its framework."""

    stochastic: bool
    gaussian: bool
    action: Callable[[Any], np.ndarray]
    mean_std: Callable[[Any], tuple[np.ndarray, np.ndarray]]
    sample: Callable[[Any, int], np.ndarray]


def _sqrtm(c: np.ndarray) -> np.ndarray:
    """Square roots of a batch of symmetric positive semi-definite matrices ``[B, d, d]`` (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)


def bures_w2(m1: np.ndarray, m2: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Squared W2 between Gaussians ``N(m1[i], c1[i])`` and ``N(m2[i], c2[i])`` per row ``i`` (means ``[B, d]``,
    covariances ``[B, d, d]``)."""
    s1 = _sqrtm(c1)
    cross = _sqrtm(s1 @ c2 @ s1)
    trace = np.trace(c1 + c2 - 2.0 * cross, axis1=-2, axis2=-1)
    return ((m1 - m2) ** 2).sum(-1) + np.clip(trace, 0.0, None)


def oracle_w2(p: PolicyView, q: PolicyView, obs: Any, method: str, samples: int) -> tuple[float, tuple[float, float]]:
    """Oracle W2² (batch mean) of ``p`` to ``q`` and the tolerance that applies to the trainer's estimate."""
    kind = pair_method((p.stochastic, p.gaussian), (q.stochastic, q.gaussian), method)
    if kind == "points":
        return float(((p.action(obs) - q.action(obs)) ** 2).sum(-1).mean()), EXACT_TOL
    if kind == "sample_to_point":
        sto, det = (p, q) if p.stochastic else (q, p)
        b = det.action(obs)
        if sto.gaussian:
            mu, std = sto.mean_std(obs)
            return float((((mu - b) ** 2).sum(-1) + (std**2).sum(-1)).mean()), POINT_SAMPLED_TOL
        x = sto.sample(obs, 256)
        return float(((x - b[:, None, :]) ** 2).sum(-1).mean()), POINT_SAMPLED_TOL
    if kind == "closed_form":
        (mp, sp), (mq, sq) = p.mean_std(obs), q.mean_std(obs)
        eye = np.eye(sp.shape[1])
        return float(bures_w2(mp, mq, sp[:, :, None] ** 2 * eye, sq[:, :, None] ** 2 * eye).mean()), EXACT_TOL
    return float(np.mean(assignment_w2(p.sample(obs, samples), q.sample(obs, samples)))), SINKHORN_TOL


def assignment_w2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact W2² between the uniform empirical measures ``x[i]`` and ``y[i]`` (``[B, K, d]`` each, the same K), per
    row ``i``: the cost of an optimal assignment of the squared Euclidean cost (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    cost = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    out = np.empty(cost.shape[0])
    for i, c in enumerate(cost):
        rows, cols = linear_sum_assignment(c)
        out[i] = c[rows, cols].mean()
    return out


def compare_chain(pre: Sequence[Any], reported: Mapping[str, Any],
                  w2: Callable[[Any, Any], tuple[float, tuple[float, float]]]):
    """Oracle values (reference side), reported values (candidate side) and per-observable tolerances of
    ``chain/actor<i>/w2`` for every i the trainer reported; ``w2(p, q)`` is the oracle for actor i vs i-1."""
    oracle, cand, tolerances = {}, {}, {}
    for i in range(1, len(pre)):
        key = f"actor{i}/w2"
        if key not in reported:
            continue
        name = f"chain/{key}"
        oracle[name], tolerances[name] = w2(pre[i], pre[i - 1])
        cand[name] = float(reported[key])
    return oracle, cand, tolerances


class ChainOracle:
    def __init__(self, trainer: Any, config: Any):
        self.trainer = trainer
        self.method = getattr(config, "w2_method", "auto")
        self.samples = int(getattr(config, "w2_samples", 16))
        self.generator = torch.Generator().manual_seed(ORACLE_SEED)

    @classmethod
    def for_trainer(cls, trainer: Any, config: Any) -> ChainOracle | None:
        if not hasattr(trainer, "policies") or len(trainer.policies()) < 2:
            return None
        return cls(trainer, config)

    def snapshot(self) -> list[Any]:
        """Deep copies of the actors before the step, on the CPU where they are modules (the oracle's generator and
        the batch are there); a user's policy object that is not a module is copied as it is."""
        copies = [copy.deepcopy(p) for p in self.trainer.policies()]
        return [c.cpu() if callable(getattr(c, "cpu", None)) else c for c in copies]

    def view(self, policy: Any) -> PolicyView:
        gen = self.generator
        return PolicyView(policy.stochastic, policy.gaussian, lambda o: _f64(policy.action(o)),
                          lambda o: tuple(_f64(t) for t in policy.mean_std(o)),
                          lambda o, k: _f64(policy.sample(o, k, gen)))

    @torch.no_grad()
    def exact_w2(self, p: Any, q: Any, obs: torch.Tensor) -> tuple[float, tuple[float, float]]:
        """Oracle W2² (batch mean) of ``p`` to ``q`` and the tolerance that applies to the trainer's estimate."""
        return oracle_w2(self.view(p), self.view(q), obs, self.method, self.samples)

    def check(self, pre: Sequence[Any], batch: Sequence[Any], reported: Mapping[str, Any]):
        """Oracle values (reference side), reported values (candidate side) and per-observable tolerances."""
        obs = batch[0]
        return compare_chain(pre, reported, lambda p, q: self.exact_w2(p, q, obs))
