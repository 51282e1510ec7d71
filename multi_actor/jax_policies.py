"""The policies of the JAX multi-actor trainer's extra actors (and actor0's view for the W2 oracle): MLP bodies with
PyTorch's initialisation, deterministic, Gaussian and tanh-Gaussian heads, each a frozen dataclass so that it is a
static, hashable argument of the jitted update."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from reference_algos.jax import rebrac

LOG_STD_MIN = -5.0


LOG_STD_MAX = 2.0


MAX_ACTION = 1.0


class MLP(nn.Module):
    """``[Linear -> ReLU] x n_hidden -> Linear`` with PyTorch's default ``nn.Linear`` init (weights and biases)."""

    out_dim: int
    hidden_dim: int = 256
    n_hidden: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        for _ in range(self.n_hidden):
            init = rebrac.pytorch_init(fan_in)
            x = nn.relu(nn.Dense(self.hidden_dim, kernel_init=init, bias_init=init)(x))
            fan_in = self.hidden_dim
        init = rebrac.pytorch_init(fan_in)
        return nn.Dense(self.out_dim, kernel_init=init, bias_init=init)(x)


@dataclasses.dataclass(frozen=True)
class MLPPolicy:
    """Base of the extra actors (static, hashable); methods are pure functions of explicit params and keys.

    ``action`` is one reparameterized sample ``[B, A]``, ``sample`` K of them ``[B, K, A]``, ``deterministic_action``
    the evaluation action. Same definitions as :mod:`multi_actor.policies`.
    """

    kind: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False
    gaussian: ClassVar[bool] = False
    out_factor: ClassVar[int] = 1

    action_dim: int
    hidden_dim: int = 256
    n_hidden: int = 2
    max_action: float = MAX_ACTION

    @property
    def net(self) -> MLP:
        return MLP(self.out_factor * self.action_dim, self.hidden_dim, self.n_hidden)

    def init(self, key: jax.Array, state_dim: int) -> Any:
        return self.net.init(key, jnp.zeros((1, state_dim), jnp.float32))

    def _split(self, params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        first, log_std = jnp.split(self.net.apply(params, obs), 2, axis=-1)
        return first, jnp.exp(jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))

    def sample(self, params: Any, obs: jax.Array, k: int, key: jax.Array) -> jax.Array:
        a = self.action(params, obs, key)
        return jnp.broadcast_to(a[:, None, :], (a.shape[0], k, a.shape[-1]))


@dataclasses.dataclass(frozen=True)
class DeterministicPolicy(MLPPolicy):
    """``max_action * tanh(MLP(s))``."""

    kind: ClassVar[str] = "deterministic"

    def action(self, params: Any, obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return self.max_action * jnp.tanh(self.net.apply(params, obs))

    def deterministic_action(self, params: Any, obs: jax.Array) -> jax.Array:
        return self.action(params, obs)


@dataclasses.dataclass(frozen=True)
class GaussianPolicy(MLPPolicy):
    """Diagonal Normal, mean ``max_action * tanh(.)``, state-dependent std (log-std clipped to [-5, 2])."""

    kind: ClassVar[str] = "gaussian"
    stochastic: ClassVar[bool] = True
    gaussian: ClassVar[bool] = True
    out_factor: ClassVar[int] = 2

    def mean_std(self, params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, std = self._split(params, obs)
        return self.max_action * jnp.tanh(mean), std

    def action(self, params: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
        mean, std = self.mean_std(params, obs)
        return mean + std * jax.random.normal(key, mean.shape, mean.dtype)

    def sample(self, params: Any, obs: jax.Array, k: int, key: jax.Array) -> jax.Array:
        mean, std = self.mean_std(params, obs)
        z = jax.random.normal(key, (mean.shape[0], k, mean.shape[-1]), mean.dtype)
        return mean[:, None, :] + std[:, None, :] * z

    def deterministic_action(self, params: Any, obs: jax.Array) -> jax.Array:
        return self.mean_std(params, obs)[0]


@dataclasses.dataclass(frozen=True)
class TanhGaussianPolicy(MLPPolicy):
    """Sample a diagonal Normal (log-std clipped to [-5, 2]), then squash: ``max_action * tanh(u)``."""

    kind: ClassVar[str] = "tanh_gaussian"
    stochastic: ClassVar[bool] = True
    out_factor: ClassVar[int] = 2

    def action(self, params: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
        mu, std = self._split(params, obs)
        return self.max_action * jnp.tanh(mu + std * jax.random.normal(key, mu.shape, mu.dtype))

    def sample(self, params: Any, obs: jax.Array, k: int, key: jax.Array) -> jax.Array:
        mu, std = self._split(params, obs)
        z = jax.random.normal(key, (mu.shape[0], k, mu.shape[-1]), mu.dtype)
        return self.max_action * jnp.tanh(mu[:, None, :] + std[:, None, :] * z)

    def deterministic_action(self, params: Any, obs: jax.Array) -> jax.Array:
        return self.max_action * jnp.tanh(self._split(params, obs)[0])


@dataclasses.dataclass(frozen=True)
class Actor0Policy:
    """actor0 — the reference ``DetActor`` — in the policy interface (deterministic, outputs in (-1, 1))."""

    kind: ClassVar[str] = "deterministic"
    stochastic: ClassVar[bool] = False
    gaussian: ClassVar[bool] = False

    module: rebrac.DetActor

    def action(self, params: Any, obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return self.module.apply(params, obs)

    def sample(self, params: Any, obs: jax.Array, k: int, key: jax.Array | None = None) -> jax.Array:
        a = self.action(params, obs)
        return jnp.broadcast_to(a[:, None, :], (a.shape[0], k, a.shape[-1]))

    def deterministic_action(self, params: Any, obs: jax.Array) -> jax.Array:
        return self.action(params, obs)


POLICY_CLASSES: dict[str, type[MLPPolicy]] = {
    c.kind: c for c in (DeterministicPolicy, GaussianPolicy, TanhGaussianPolicy)
}


def build_policy(kind: str, action_dim: int, hidden_dim: int, n_hidden: int) -> MLPPolicy:
    if kind not in POLICY_CLASSES:
        raise ValueError(f"actor type {kind!r} is not available for rebrac (deterministic, gaussian, tanh_gaussian)")
    return POLICY_CLASSES[kind](action_dim, hidden_dim, n_hidden, MAX_ACTION)
