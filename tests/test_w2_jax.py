"""JAX W2^2 estimators: the same numbers as the PyTorch ones (:mod:`multi_actor.w2`) on the same inputs.

The closed forms agree to float32 precision. The Sinkhorn divergence (OTT-JAX) is compared with the PyTorch
estimator run close to convergence (GeomLoss ``scaling=0.99``, whose own annealing residual is ~5e-4) and with the
full entropic objective rebuilt from POT's plan (the definition itself), at several epsilons.
"""

from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import torch

from multi_actor import w2 as tw
from multi_actor import w2_jax as jw

F64 = torch.float64
EPSILONS = (1.0, 0.1, 0.01)


def _j(a) -> jax.Array:
    return jnp.asarray(np.asarray(a), jnp.float32)


def _t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float32), dtype=F64)


def _clouds(seed: int, b: int = 3, k: int = 16, a: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 0.6 * rng.standard_normal((b, k, a))
    y = 0.5 * rng.standard_normal((b, k, a)) + 0.3
    return x.astype(np.float32), y.astype(np.float32)


def pot_full_objective(x: np.ndarray, y: np.ndarray, eps: float) -> float:
    """``<P, M> + eps * KL(P | a (x) b)`` at POT's entropic plan (same optimal plan as the KL form), float64."""
    a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    m = ot.dist(x, y, metric="sqeuclidean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plan = ot.sinkhorn(a, b, m, eps, method="sinkhorn_stabilized", numItermax=20000, stopThr=1e-10)
    return float(np.sum(plan * m) + eps * np.sum(plan * np.log(np.maximum(plan, 1e-300) / np.outer(a, b))))


def pot_sinkhorn_divergence(x: np.ndarray, y: np.ndarray, eps: float) -> float:
    """``S_eps = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2`` from POT's plans, float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return pot_full_objective(x, y, eps) - 0.5 * (pot_full_objective(x, x, eps) + pot_full_objective(y, y, eps))


def test_pair_method_is_one_rule_for_both_frameworks():
    det, gauss, squashed = (False, False), (True, True), (True, False)
    assert jw.pair_method is tw.pair_method and jw.METHODS == tw.METHODS
    table = {
        (det, det, "auto"): "points", (det, gauss, "sinkhorn"): "sample_to_point",
        (squashed, det, "auto"): "sample_to_point", (gauss, gauss, "auto"): "closed_form",
        (gauss, gauss, "sinkhorn"): "sinkhorn", (gauss, squashed, "auto"): "sinkhorn",
        (gauss, gauss, "closed_form"): "closed_form",
    }
    for (p, q, method), expected in table.items():
        assert jw.pair_method(p, q, method) == expected, (p, q, method)
    with pytest.raises(ValueError, match="closed_form"):
        jw.pair_method(gauss, squashed, "closed_form")


def test_closed_forms_match_torch():
    rng = np.random.default_rng(0)
    mu_p, mu_q = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    std_p, std_q = rng.uniform(0.1, 2.0, (5, 3)), rng.uniform(0.1, 2.0, (5, 3))
    ours = np.asarray(jw.w2_gaussian(_j(mu_p), _j(std_p), _j(mu_q), _j(std_q)))
    ref = tw.w2_gaussian(_t(mu_p), _t(std_p), _t(mu_q), _t(std_q)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-6)
    assert not np.allclose(ours, ((mu_p - mu_q) ** 2).sum(-1), rtol=1e-3)  # the std term is there

    x, _ = _clouds(1, b=4, k=32)
    point = rng.normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jw.w2_to_point(_j(x), _j(point))),
                               tw.w2_to_point(_t(x), _t(point)).numpy(), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jw.w2_points(_j(x[:, 0]), _j(point))),
                               tw.w2_points(_t(x[:, 0]), _t(point)).numpy(), rtol=2e-6, atol=1e-6)


@pytest.mark.heavy
@pytest.mark.parametrize("eps", EPSILONS)
def test_sinkhorn_matches_torch_and_the_entropic_objective(eps):
    x, y = _clouds(2)
    ours = np.asarray(jw.sinkhorn_divergence(_j(x), _j(y), eps), dtype=np.float64)
    full = np.array([pot_sinkhorn_divergence(x[i], y[i], eps) for i in range(len(x))])
    # OTT's value is S_eps itself (no factor, eps in cost units); measured max rel. error 2.6e-5 (float32)
    np.testing.assert_allclose(ours, full, rtol=2e-4)
    assert not np.allclose(ours / 2, full, rtol=1e-2)  # GeomLoss' half-cost scale would be far off
    torch_value = tw.sinkhorn_divergence(_t(x), _t(y), eps, scaling=0.99).numpy()
    # measured max rel. difference 1.2e-5 (eps 1), 1.2e-3 (0.1), 2.3e-5 (0.01): GeomLoss' annealing residual at
    # scaling 0.99 (its default scaling 0.9 is up to 2.6 % away from the converged value on these clouds)
    np.testing.assert_allclose(ours, torch_value, rtol=2e-3)


def test_sinkhorn_zero_on_identical_clouds_and_exact_on_diracs():
    x, _ = _clouds(3)
    same = np.asarray(jw.sinkhorn_divergence(_j(x), _j(x), 0.1))
    np.testing.assert_allclose(same, 0.0, atol=1e-5)
    a = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [0.2, 0.1, 0.0]], np.float32)
    b = np.array([[3.0, 4.0, 0.0], [1.0, -2.0, 0.5], [0.2, 0.1, 1.0]], np.float32)
    xs, ys = np.repeat(a[:, None], 16, 1), np.repeat(b[:, None], 16, 1)
    np.testing.assert_allclose(np.asarray(jw.sinkhorn_divergence(_j(xs), _j(ys), 0.1)), [25.0, 0.0, 1.0], atol=1e-4)


@pytest.mark.heavy
def test_sinkhorn_is_jittable_and_differentiable_in_x():
    x, y = _clouds(4)
    eager = jw.sinkhorn_divergence(_j(x), _j(y), 0.1)
    jitted = jax.jit(partial(jw.sinkhorn_divergence, epsilon=0.1))(_j(x), _j(y))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-7)

    grad = np.asarray(jax.jit(jax.grad(lambda p: jw.sinkhorn_divergence(p, _j(y), 0.1).sum()))(_j(x)))
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    xt = _t(x).requires_grad_()
    tw.sinkhorn_divergence(xt, _t(y), 0.1, scaling=0.99).sum().backward()
    x64 = x.astype(np.float64)
    rng = np.random.default_rng(5)
    for _ in range(2):
        v = rng.standard_normal(x.shape)
        h = 1e-5
        fd = sum(pot_sinkhorn_divergence(x64[i] + h * v[i], y[i], 0.1) - pot_sinkhorn_divergence(x64[i] - h * v[i],
                                                                                             y[i], 0.1)
                 for i in range(len(x))) / (2 * h)
        # directional derivative vs central differences of the exact objective (measured rel. error < 1e-4)
        assert float((grad * v).sum()) == pytest.approx(fd, rel=2e-3)
    # GeomLoss' gradient (annealed, scaling 0.99) is close but not exact: measured ||g_torch - g|| / ||g|| = 1.0e-2
    assert np.linalg.norm(xt.grad.numpy() - grad) / np.linalg.norm(grad) < 0.05


@pytest.mark.heavy
def test_policy_w2_gradient_reaches_trained_side_only():
    from multi_actor.jax_policies import GaussianPolicy

    policy = GaussianPolicy(action_dim=2, hidden_dim=8, n_hidden=1)
    params = policy.init(jax.random.PRNGKey(0), 3)
    ref_params = policy.init(jax.random.PRNGKey(1), 3)
    obs = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    key = jax.random.PRNGKey(3)

    def loss(p, rp):
        ref = jw.reference_outputs("closed_form", True, policy, rp, obs, 4, key)
        return jw.policy_w2("closed_form", policy, p, obs, ref, 4, 0.1, key)

    g_own, g_ref = jax.grad(loss, argnums=(0, 1))(params, ref_params)
    assert sum(float(jnp.abs(v).sum()) for v in jax.tree.leaves(g_own)) > 0
    assert all(float(jnp.abs(v).sum()) == 0.0 for v in jax.tree.leaves(g_ref))
    mu_p, std_p = policy.mean_std(params, obs)
    mu_q, std_q = policy.mean_std(ref_params, obs)
    expected = tw.w2_gaussian(*(_t(v) for v in (mu_p, std_p, mu_q, std_q))).mean().item()
    assert float(loss(params, ref_params)) == pytest.approx(expected, rel=1e-5)


def test_input_validation():
    with pytest.raises(ValueError):
        jw.sinkhorn_divergence(jnp.zeros((4, 2)), jnp.zeros((4, 2)), 0.1)
    with pytest.raises(ValueError):
        jw.sinkhorn_divergence(jnp.zeros((2, 4, 2)), jnp.zeros((3, 4, 2)), 0.1)
    with pytest.raises(ValueError):
        jw.sinkhorn_divergence(jnp.zeros((2, 4, 2)), jnp.zeros((2, 4, 2)), 0.0)
    with pytest.raises(ValueError):
        jw.policy_w2("bogus", None, None, jnp.zeros((1, 1)), None, 2, 0.1, jax.random.PRNGKey(0))
