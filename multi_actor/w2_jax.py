r"""Squared 2-Wasserstein estimators in JAX, on exactly the scale of :mod:`multi_actor.w2` (the PyTorch side).

Every function returns, per state, the squared 2-Wasserstein distance with ground cost ``||x - y||^2`` (no 1/2
factor) as a ``[B]`` array; :func:`policy_w2` takes the batch mean. Same names, same formulas, same estimands as the
PyTorch module, so one config gives the same number (within the Sinkhorn tolerance) in both frameworks:

- ``"closed_form"`` -> :func:`w2_gaussian`: two diagonal Gaussians, ``||mu_p - mu_q||^2 + ||std_p - std_q||^2``;
- ``"sample_to_point"`` -> :func:`w2_to_point`: samples ``[B, K, A]`` versus a Dirac ``[B, A]``, ``E||X - b||^2``;
- ``"points"`` -> :func:`w2_points`: two Diracs, ``||a - b||^2``;
- ``"sinkhorn"`` -> :func:`sinkhorn_divergence`: debiased entropic OT through OTT-JAX.

Sinkhorn: what OTT returns and why no conversion is needed. Our quantity (see :mod:`multi_actor.w2`) is

    OT_eps(x, y) = min_P <P, M> + eps * KL(P | a (x) b),     M_ij = ||x_i - y_j||^2,   a, b uniform,
    S_eps(x, y)  = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2.

``ott.tools.sinkhorn_divergence.sinkhorn_divergence(PointCloud, x, y, epsilon=eps)`` (ott-jax 0.6.0) builds three
``PointCloud`` geometries with the default cost ``costs.SqEuclidean`` — ``||x||^2 + ||y||^2 - 2<x, y>`` =
``||x - y||^2``, no 1/2 — and the default ``scale_cost=1.0`` (no rescaling); a float ``epsilon`` with
``relative_epsilon=None`` is used as is (absolute, in cost units), and ``share_epsilon=True`` gives the x/x and
y/y problems the same epsilon. It returns
``reg_ot_cost(x, y) - (reg_ot_cost(x, x) + reg_ot_cost(y, y)) / 2 + eps/2 * (sum a - sum b)^2``, the last term
being 0 for probability weights. ``reg_ot_cost`` is the Sinkhorn dual objective at the final potentials, which OTT
documents (``SinkhornOutput.kl_reg_cost``) as ``<P*, C> + eps * KL(P* | a b^T)`` — our ``OT_eps`` term for term.
So the OTT value *is* ``S_eps``: conversion factor 1, ``epsilon`` passed through unchanged (unlike GeomLoss, whose
cost is ``||x - y||^2 / 2`` and whose temperature is ``blur^2``). ``tests/test_w2_jax.py`` checks this against the
full objective rebuilt from POT's entropic plan and against the PyTorch estimator.

Solver choices: OTT's log-domain Sinkhorn run to a marginal error (L1) below ``threshold`` (default 1e-4; the value
then moves by < 1e-5 relative in our checks down to eps = 0.01), at most ``max_iterations``; gradients by OTT's
default (implicit differentiation with Danskin's theorem: the potentials are frozen, the gradient is the plan's).
Under ``jax.vmap`` over states the loop runs until every state has converged.

Nothing here draws random numbers except :func:`reference_outputs` / :func:`policy_w2`, which take explicit keys.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from multi_actor.w2_rules import METHODS, pair_method

__all__ = [
    "METHODS",
    "pair_method",
    "policy_w2",
    "reference_outputs",
    "sinkhorn_divergence",
    "w2_gaussian",
    "w2_points",
    "w2_to_point",
]

SINKHORN_THRESHOLD = 1e-4
SINKHORN_MAX_ITERATIONS = 5000


def w2_gaussian(mu_p: jax.Array, std_p: jax.Array, mu_q: jax.Array, std_q: jax.Array) -> jax.Array:
    """Exact W2^2 between diagonal Gaussians per state: ``||mu_p - mu_q||^2 + ||std_p - std_q||^2`` -> ``[...]``."""
    return jnp.square(mu_p - mu_q).sum(-1) + jnp.square(std_p - std_q).sum(-1)


def w2_to_point(samples: jax.Array, point: jax.Array) -> jax.Array:
    """W2^2 between the empirical law of ``samples [B, K, A]`` and a Dirac at ``point [B, A]``: mean_K ||x - b||^2."""
    return jnp.square(samples - point[..., None, :]).sum(-1).mean(-1)


def w2_points(a: jax.Array, b: jax.Array) -> jax.Array:
    """W2^2 between two Diracs ``a, b [B, A]``: ``||a - b||^2``."""
    return jnp.square(a - b).sum(-1)


def _sinkhorn_one(x: jax.Array, y: jax.Array, epsilon: float, threshold: float, max_iterations: int) -> jax.Array:
    """``S_eps`` between two uniform point clouds ``x [K, A]``, ``y [K', A]`` (OTT's value, no conversion)."""
    from ott.geometry import costs, pointcloud
    from ott.tools import sinkhorn_divergence as ott_sd

    value, _ = ott_sd.sinkhorn_divergence(
        pointcloud.PointCloud, x, y, cost_fn=costs.SqEuclidean(), epsilon=epsilon,
        solve_kwargs={"threshold": threshold, "max_iterations": max_iterations},
    )
    return value


def sinkhorn_divergence(x: jax.Array, y: jax.Array, epsilon: float, *, threshold: float = SINKHORN_THRESHOLD,
                        max_iterations: int = SINKHORN_MAX_ITERATIONS) -> jax.Array:
    """Debiased Sinkhorn divergence ``S_eps`` per state on the ``||x - y||^2`` scale, ``epsilon`` in cost units.

    ``x [B, K, A]`` and ``y [B, K', A]`` hold samples (uniform weights) of the two policies at each of B states;
    returns ``[B]``. ``epsilon`` must be a Python number (it is a compile-time constant of the solver).
    Gradients flow to both sides; callers stop them on the reference side.
    """
    if x.ndim != 3 or y.ndim != 3:
        raise ValueError(f"x and y must be [B, K, A], got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0] or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"batch/action dims differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if not float(epsilon) > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return _sinkhorn_batched(x, y, epsilon=float(epsilon), threshold=float(threshold),
                             max_iterations=int(max_iterations))


@partial(jax.jit, static_argnames=("epsilon", "threshold", "max_iterations"))
def _sinkhorn_batched(x: jax.Array, y: jax.Array, *, epsilon: float, threshold: float,
                      max_iterations: int) -> jax.Array:
    """``vmap`` of :func:`_sinkhorn_one` over states (jitted: eager callers compile once per shape and epsilon;
    inside another jit it is inlined)."""
    one = partial(_sinkhorn_one, epsilon=epsilon, threshold=threshold, max_iterations=max_iterations)
    return jax.vmap(one)(x, y)


def reference_outputs(kind: str, own_stochastic: bool, reference: Any, ref_params: Any, obs: jax.Array, k: int,
                      key: jax.Array) -> Any:
    """What the reference side of pair ``kind`` contributes, with gradients stopped.

    ``points``: its action ``[B, A]``; ``sample_to_point``: its action if the trained side samples, else its K
    samples ``[B, K, A]``; ``closed_form``: ``(mean, std)``; ``sinkhorn``: K samples ``[B, K, A]``.
    """
    ref_params = jax.lax.stop_gradient(ref_params)
    if kind == "points" or (kind == "sample_to_point" and own_stochastic):
        out = reference.action(ref_params, obs, key)
    elif kind == "closed_form":
        out = reference.mean_std(ref_params, obs)
    else:
        out = reference.sample(ref_params, obs, k, key)
    return jax.lax.stop_gradient(out)


def policy_w2(kind: str, policy: Any, params: Any, obs: jax.Array, reference: Any, k: int, epsilon: float,
              key: jax.Array, sinkhorn: Callable[..., jax.Array] = sinkhorn_divergence) -> jax.Array:
    """Batch-mean W2^2 between ``policy(params)`` (gradients flow) and ``reference`` (from :func:`reference_outputs`).

    Mirrors :func:`multi_actor.w2.policy_w2`; ``sinkhorn`` is the divergence used for sampled pairs.
    """
    if kind == "points":
        per_state = w2_points(policy.action(params, obs, key), reference)
    elif kind == "sample_to_point":
        if policy.stochastic:
            per_state = w2_to_point(policy.sample(params, obs, k, key), reference)
        else:
            per_state = w2_to_point(reference, policy.action(params, obs, key))
    elif kind == "closed_form":
        mu_p, std_p = policy.mean_std(params, obs)
        per_state = w2_gaussian(mu_p, std_p, *reference)
    elif kind == "sinkhorn":
        per_state = sinkhorn(policy.sample(params, obs, k, key), reference, epsilon)
    else:
        raise ValueError(f"unknown W2 pair kind {kind!r}; expected one of {', '.join(METHODS)}")
    return per_state.mean()
