r"""Squared 2-Wasserstein estimators for the POGO actor chain, all on one scale.

POGO pulls actor ``i >= 1`` toward actor ``i-1`` with ``w_i * W2^2(pi_i, pi_{i-1})``.
Estimators that silently live on different scales (half cost, dropped std term,
entropic bias) change the effective ``w_i``, so every function here returns the
same quantity: for each state, the squared 2-Wasserstein distance with ground
cost ``||x - y||^2`` (no 1/2 factor), as a ``[B]`` tensor; the trainer takes the
mean over the batch of states.

Methods (names in :data:`METHODS`):

- ``"closed_form"`` -> :func:`w2_gaussian`: two diagonal Gaussians,
  ``||mu_p - mu_q||^2 + ||std_p - std_q||^2`` (exact).
- ``"sample_to_point"`` -> :func:`w2_to_point`: a sampled policy versus a
  deterministic one; ``W2^2(mu, delta_b) = E||X - b||^2`` exactly (the product
  coupling is the only coupling), estimated by the sample mean (unbiased).
- ``"points"`` -> :func:`w2_points`: two deterministic policies, ``||a - b||^2``.
- ``"sinkhorn"`` -> :func:`sinkhorn_divergence`: two sampled policies, debiased
  entropic OT through GeomLoss.

Sinkhorn scale conversion (derivation). Our entropic OT with uniform weights
``a, b`` and temperature ``epsilon`` is

    OT_eps(x, y) = min_P <P, M> + epsilon * KL(P | a (x) b),   M_ij = ||x_i - y_j||^2,

and the returned Sinkhorn divergence is
``S_eps(x, y) = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2``, i.e. the full
entropic objective (transport term plus ``epsilon * KL``), debiased. GeomLoss
``SamplesLoss("sinkhorn", p=2, blur=s, debias=True)`` computes the same
functional with cost ``C = M / 2`` and temperature ``s**2`` (its balanced value
``<a, f> + <b, g>`` at the optimal potentials is the primal objective above).
Since ``min_P <P, M/2> + s^2 KL = (1/2) * min_P <P, M> + 2 s^2 KL``:

    epsilon = 2 * blur**2   <=>   blur = sqrt(epsilon / 2),
    S_eps (ours) = 2 * (GeomLoss value).

POT's ``ot.sinkhorn2(a, b, M, reg)`` uses the same optimal plan for ``reg = epsilon``
(its entropy ``sum P log P`` differs from ``KL(P | a (x) b)`` by a constant under
fixed marginals) but returns only ``<P*, M>``; the tests rebuild the full
objective from POT's plan and check the conversion above. ``S_eps -> W2^2`` as
``epsilon -> 0``; for ``epsilon > 0`` it was below the exact OT value in all our
checks (about 1e-3 relative at epsilon = 0.01), the price of a smooth estimator.

Choices: uniform sample weights; GeomLoss ``backend="tensorized"`` batched over
states (memory ``O(B K K')``); ``scaling`` (blur ratio between annealing steps)
defaults to 0.9: GeomLoss stops after a fixed annealing schedule, and its value was
up to 0.4 % below the converged divergence for epsilon in [0.03, 1] and up to 2.6 %
at epsilon = 0.01 with K = 16 (0.5: up to 2.4 % at epsilon >= 0.03; 0.99: at most
3.1e-4 at about 10x the iterations). The JAX twin (OTT-JAX, run to convergence) is
compared with this function at ``scaling=0.99``.
No function uses randomness or detaches its inputs while grad mode is on:
gradients reach whichever side the caller leaves attached.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from multi_actor.w2_rules import METHODS, pair_method

__all__ = [
    "METHODS",
    "epsilon_to_blur",
    "pair_method",
    "policy_w2",
    "sinkhorn_divergence",
    "w2_gaussian",
    "w2_points",
    "w2_to_point",
]



def w2_gaussian(mu_p: Tensor, std_p: Tensor, mu_q: Tensor, std_q: Tensor) -> Tensor:
    """Exact W2^2 between diagonal Gaussians per state; inputs broadcast over ``[..., A]``.

    Diagonal covariances commute, so the Bures term reduces to ``||std_p - std_q||^2``;
    dropping it would make actors with equal means but different spreads look identical.
    """
    return (mu_p - mu_q).square().sum(-1) + (std_p - std_q).square().sum(-1)


def w2_to_point(samples: Tensor, point: Tensor) -> Tensor:
    """W2^2 between the empirical law of ``samples [B, K, A]`` and a Dirac at ``point [B, A]``.

    The only coupling with a Dirac is the product one, so W2^2 = E||X - b||^2; the sample
    mean is its unbiased estimate (and the exact W2^2 of the K-sample empirical measure).
    """
    return (samples - point.unsqueeze(-2)).square().sum(-1).mean(-1)


def w2_points(a: Tensor, b: Tensor) -> Tensor:
    """W2^2 between two Diracs ``a, b [B, A]`` (two deterministic actions): ``||a - b||^2``."""
    return (a - b).square().sum(-1)


def epsilon_to_blur(epsilon: float) -> float:
    """GeomLoss ``blur`` for temperature ``epsilon`` in our cost units: ``sqrt(epsilon / 2)``."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return math.sqrt(epsilon / 2.0)


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    epsilon: float,
    *,
    scaling: float = 0.9,
    diameter: float | None = None,
) -> Tensor:
    """Debiased Sinkhorn divergence ``S_eps`` per state on the ``||x - y||^2`` scale.

    ``x [B, K, A]`` and ``y [B, K', A]`` hold samples (uniform weights) of the two
    policies at each of B states; returns ``[B]`` (see the module docstring for the exact
    quantity and the GeomLoss conversion). ``scaling`` trades accuracy for iterations;
    ``diameter`` (an upper bound on ``||x_i - y_j||``) skips the on-the-fly estimate, which
    is clamped to at least ``blur`` so identical point clouds stay well defined.

    GeomLoss toggles autograd globally inside its loop; the caller's grad mode is
    restored on return, and under ``torch.no_grad()`` the result carries no graph.
    GeomLoss is imported here, not at module level: the other estimators (and the
    trainers that only use them) do not need it installed.
    """
    from geomloss import SamplesLoss

    if x.dim() != 3 or y.dim() != 3:
        raise ValueError(f"x and y must be [B, K, A], got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"batch/action dims differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if not 0.0 < scaling < 1.0:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")
    blur = epsilon_to_blur(epsilon)
    if diameter is None:
        with torch.no_grad():
            pts = torch.cat((x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])))
            diameter = float((pts.amax(0) - pts.amin(0)).norm())
    diameter = max(diameter, blur)
    loss = SamplesLoss(
        "sinkhorn",
        p=2,
        blur=blur,
        debias=True,
        scaling=scaling,
        diameter=diameter,
        backend="tensorized",
    )
    grad_enabled = torch.is_grad_enabled()
    with torch.set_grad_enabled(grad_enabled):
        value = 2.0 * loss(x, y)
    return value if grad_enabled else value.detach()


def policy_w2(policy: torch.nn.Module, reference: torch.nn.Module, obs: Tensor, method: str, k: int,
              epsilon: float, generator: torch.Generator) -> Tensor:
    """Batch-mean W2^2 between ``policy`` (trained side, gradients flow) and ``reference`` (detached; evaluated
    without a graph, so a reference that is a live network — the trainer's actor i-1 before its step — costs no
    more than a frozen copy would, and its output memo, when current, is read as it is).

    ``policy``/``reference`` follow :class:`multi_actor.policies.Policy`; samples come from ``generator`` only, in
    the same order as before (policy side and reference side as listed per method).
    """
    kind = pair_method((policy.stochastic, policy.gaussian), (reference.stochastic, reference.gaussian), method)

    def ref(fn, *args):
        with torch.no_grad():
            out = fn(*args)
        return tuple(t.detach() for t in out) if isinstance(out, tuple) else out.detach()

    if kind == "points":
        per_state = w2_points(policy.action(obs), ref(reference.action, obs))
    elif kind == "sample_to_point":
        if policy.stochastic:
            per_state = w2_to_point(policy.sample(obs, k, generator), ref(reference.action, obs))
        else:
            per_state = w2_to_point(ref(reference.sample, obs, k, generator), policy.action(obs))
    elif kind == "closed_form":
        mu_p, std_p = policy.mean_std(obs)
        mu_q, std_q = ref(reference.mean_std, obs)
        per_state = w2_gaussian(mu_p, std_p, mu_q, std_q)
    else:
        x = policy.sample(obs, k, generator)
        y = ref(reference.sample, obs, k, generator)
        per_state = sinkhorn_divergence(x, y, epsilon)
    return per_state.mean()
