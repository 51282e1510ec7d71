"""ReBRAC (TD3+BC + critic BC penalty, LayerNorm critics, Q normalisation), as CORL's ``algorithms/offline/rebrac.py``.

Reads top to bottom like the CORL file: config with CORL defaults, initialisers, networks, metrics, loss formulas,
the two update functions, the loop body and the epoch. Everything that runs under ``jit`` is a pure function of
explicit arguments, so that other trainers (the multi-actor one) call this code instead of re-writing it:

- ``update_critic`` / ``update_actor`` are CORL's functions with CORL's key-split order;
- ``update`` is the ``lax.cond`` between the full update and the critic-only update;
- ``loop_body`` is CORL's ``td3_loop_update_step`` with the batch source as a parameter, shared by ``train_epoch``
  (``lax.fori_loop``, batches drawn with ``jax.random.randint`` from a buffer passed as an argument) and
  ``train_step_on_batch`` (one update on a given batch, the key split for sampling consumed exactly as in the loop).

CORL sets ``TF_CUDNN_DETERMINISTIC=1`` at import; this module has no import-time side effects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

Batch = dict[str, jax.Array]
"""CORL batch: ``states`` [B,S], ``actions`` [B,A], ``rewards`` [B], ``next_states`` [B,S], ``next_actions`` [B,A],
``dones`` [B] (float32)."""

BATCH_KEYS = ("states", "actions", "rewards", "next_states", "next_actions", "dones")
METRIC_KEYS = ("critic_loss", "q_min", "actor_loss", "batch_entropy", "bc_mse_policy", "bc_mse_random", "action_mse")
NUM_CRITICS = 2


@dataclass
class Config:
    """CORL ``Config`` defaults (field names as in CORL, so golden hyperparameters map by name)."""

    project: str = "CORL"
    group: str = "rebrac"
    name: str = "rebrac"
    actor_learning_rate: float = 1e-3
    critic_learning_rate: float = 1e-3
    hidden_dim: int = 256
    actor_n_hiddens: int = 3
    critic_n_hiddens: int = 3
    gamma: float = 0.99
    tau: float = 5e-3
    actor_bc_coef: float = 1.0
    critic_bc_coef: float = 1.0
    actor_ln: bool = False
    critic_ln: bool = True
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2
    normalize_q: bool = True
    dataset_name: str = "halfcheetah-medium-v2"
    batch_size: int = 1024
    num_epochs: int = 1000
    num_updates_on_epoch: int = 1000
    normalize_reward: bool = False
    normalize_states: bool = False
    eval_episodes: int = 10
    eval_every: int = 5
    train_seed: int = 0
    eval_seed: int = 42


# ----------------------------------------------------------------------------------------------------- networks


def pytorch_init(fan_in: float) -> Callable:
    """``U(-sqrt(1/fan_in), sqrt(1/fan_in))``, PyTorch's default ``nn.Linear`` bound."""
    bound = math.sqrt(1 / fan_in)

    def _init(key: jax.Array, shape: tuple, dtype: Any) -> jax.Array:
        return jax.random.uniform(key, shape=shape, minval=-bound, maxval=bound, dtype=dtype)

    return _init


def uniform_init(bound: float) -> Callable:
    """``U(-bound, bound)``."""

    def _init(key: jax.Array, shape: tuple, dtype: Any) -> jax.Array:
        return jax.random.uniform(key, shape=shape, minval=-bound, maxval=bound, dtype=dtype)

    return _init


def identity(x: Any) -> Any:
    return x


def _hidden_blocks(in_dim: int, hidden_dim: int, n_hiddens: int, layernorm: bool) -> list:
    """[Dense(h) -> ReLU -> LayerNorm-or-identity] x n_hiddens; created inside the caller's ``compact`` scope."""
    layers: list = []
    for fan_in in [in_dim] + [hidden_dim] * (n_hiddens - 1):
        layers += [
            nn.Dense(hidden_dim, kernel_init=pytorch_init(fan_in), bias_init=nn.initializers.constant(0.1)),
            nn.relu,
            nn.LayerNorm() if layernorm else identity,
        ]
    return layers


class DetActor(nn.Module):
    """Tanh MLP without ``max_action`` scaling; head ``U(+-1e-3)``."""

    action_dim: int
    hidden_dim: int = 256
    layernorm: bool = True
    n_hiddens: int = 3

    @nn.compact
    def __call__(self, state: jax.Array) -> jax.Array:
        layers = _hidden_blocks(state.shape[-1], self.hidden_dim, self.n_hiddens, self.layernorm)
        layers += [nn.Dense(self.action_dim, kernel_init=uniform_init(1e-3), bias_init=uniform_init(1e-3)), nn.tanh]
        return nn.Sequential(layers)(state)


class Critic(nn.Module):
    """Q(s, a) on ``hstack([s, a])``, head ``U(+-3e-3)``, output squeezed to [B]."""

    hidden_dim: int = 256
    layernorm: bool = True
    n_hiddens: int = 3

    @nn.compact
    def __call__(self, state: jax.Array, action: jax.Array) -> jax.Array:
        layers = _hidden_blocks(state.shape[-1] + action.shape[-1], self.hidden_dim, self.n_hiddens, self.layernorm)
        layers += [nn.Dense(1, kernel_init=uniform_init(3e-3), bias_init=uniform_init(3e-3))]
        state_action = jnp.hstack([state, action])
        return nn.Sequential(layers)(state_action).squeeze(-1)


class EnsembleCritic(nn.Module):
    """``nn.vmap`` over :class:`Critic`: stacked params (leading axis ``num_critics``), output [num_critics, B]."""

    hidden_dim: int = 256
    num_critics: int = 10
    layernorm: bool = True
    n_hiddens: int = 3

    @nn.compact
    def __call__(self, state: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            target=Critic,
            in_axes=None,
            out_axes=0,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            axis_size=self.num_critics,
        )
        return ensemble(self.hidden_dim, self.layernorm, self.n_hiddens)(state, action)


class TrainState(train_state.TrainState):
    """Flax ``TrainState`` plus ``target_params`` (CORL's ``ActorTrainState`` / ``CriticTrainState``)."""

    target_params: Any


# ----------------------------------------------------------------------------------------------------- metrics


@chex.dataclass(frozen=True)
class Metrics:
    """CORL's on-device metric accumulators: key -> (sum [1], count [1]); ``compute`` gives sum / count."""

    accumulators: dict[str, tuple[jax.Array, jax.Array]]

    @staticmethod
    def create(metrics: Sequence[str] = METRIC_KEYS) -> Metrics:
        return Metrics(accumulators={key: (jnp.array([0.0]), jnp.array([0.0])) for key in metrics})

    def update(self, updates: Mapping[str, jax.Array]) -> Metrics:
        new_accumulators = dict(self.accumulators)
        for key, value in updates.items():
            acc, steps = new_accumulators[key]
            new_accumulators[key] = (acc + value, steps + 1)
        return self.replace(accumulators=new_accumulators)

    def compute(self) -> dict[str, np.ndarray]:
        """Mean per key, shape (1,); keys never updated give 0/0 = NaN (``batch_entropy`` always does)."""
        return {k: np.array(v[0] / v[1]) for k, v in self.accumulators.items()}


# ----------------------------------------------------------------------------------------------------- formulas


def bc_penalty(actions: jax.Array, data_actions: jax.Array) -> jax.Array:
    """Per-sample ``sum_A (a - a_data)^2`` -> [B]."""
    return ((actions - data_actions) ** 2).sum(-1)


def target_policy_noise(key: jax.Array, shape: tuple, policy_noise: float, noise_clip: float) -> jax.Array:
    """``clip(N(0,1) * policy_noise, -noise_clip, noise_clip)`` (absolute, not scaled by max_action)."""
    return jnp.clip(jax.random.normal(key, shape) * policy_noise, -noise_clip, noise_clip)


def critic_target(rewards: jax.Array, dones: jax.Array, next_q: jax.Array, next_bc_penalty: jax.Array,
                  gamma: float, critic_bc_coef: float) -> jax.Array:
    """``r + (1 - d) * gamma * (min_ens Q'(s', a') - critic_bc_coef * bc(a', a'_data))`` -> [B]."""
    next_q = next_q - critic_bc_coef * next_bc_penalty
    return rewards + (1 - dones) * gamma * next_q


def critic_loss(q: jax.Array, target_q: jax.Array) -> jax.Array:
    """Sum over the ensemble of the per-member MSE: ``((q [N,B] - y[None]) ** 2).mean(1).sum(0)``."""
    return ((q - target_q[None, ...]) ** 2).mean(1).sum(0)


def q_lambda(q_values: jax.Array, normalize_q: bool) -> jax.Array | int:
    """``stop_gradient(1 / mean|Q|)`` when normalising, else 1."""
    if normalize_q:
        return jax.lax.stop_gradient(1 / jax.numpy.abs(q_values).mean())
    return 1


def actor_loss(bc: jax.Array, q_values: jax.Array, lmbda: jax.Array | int, actor_bc_coef: float) -> jax.Array:
    """``mean(actor_bc_coef * bc - lambda * Q)``."""
    return (actor_bc_coef * bc - lmbda * q_values).mean()


# ----------------------------------------------------------------------------------------------------- updates


def update_critic(key: jax.Array, actor: TrainState, critic: TrainState, batch: Batch, metrics: Metrics, *,
                  gamma: float, critic_bc_coef: float, policy_noise: float,
                  noise_clip: float) -> tuple[jax.Array, TrainState, Metrics]:
    """One critic step against the target actor/critics; logs ``critic_loss`` and ``q_min``. No target update."""
    key, actions_key = jax.random.split(key)

    next_actions = actor.apply_fn(actor.target_params, batch["next_states"])
    noise = target_policy_noise(actions_key, next_actions.shape, policy_noise, noise_clip)
    next_actions = jax.numpy.clip(next_actions + noise, -1, 1)
    next_bc = bc_penalty(next_actions, batch["next_actions"])
    next_q = critic.apply_fn(critic.target_params, batch["next_states"], next_actions).min(0)
    target_q = critic_target(batch["rewards"], batch["dones"], next_q, next_bc, gamma, critic_bc_coef)

    def critic_loss_fn(critic_params: Any) -> tuple[jax.Array, jax.Array]:
        q = critic.apply_fn(critic_params, batch["states"], batch["actions"])
        q_min = q.min(0).mean()
        return critic_loss(q, target_q), q_min

    (loss, q_min), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(critic.params)
    new_critic = critic.apply_gradients(grads=grads)
    new_metrics = metrics.update({"critic_loss": loss, "q_min": q_min})
    return key, new_critic, new_metrics


def update_actor(key: jax.Array, actor: TrainState, critic: TrainState, batch: Batch, metrics: Metrics, *,
                 actor_bc_coef: float, tau: float,
                 normalize_q: bool) -> tuple[jax.Array, TrainState, TrainState, Metrics]:
    """Actor step against the (already updated) critic, then both soft target updates.

    CORL quirk kept: the actor target moves toward the actor parameters from *before* this actor step.
    """
    key, random_action_key = jax.random.split(key, 2)

    def actor_loss_fn(params: Any) -> tuple[jax.Array, Metrics]:
        actions = actor.apply_fn(params, batch["states"])
        bc = bc_penalty(actions, batch["actions"])
        q_values = critic.apply_fn(critic.params, batch["states"], actions).min(0)
        loss = actor_loss(bc, q_values, q_lambda(q_values, normalize_q), actor_bc_coef)

        random_actions = jax.random.uniform(random_action_key, shape=batch["actions"].shape, minval=-1.0, maxval=1.0)
        new_metrics = metrics.update({
            "actor_loss": loss,
            "bc_mse_policy": bc.mean(),
            "bc_mse_random": bc_penalty(random_actions, batch["actions"]).mean(),
            "action_mse": ((actions - batch["actions"]) ** 2).mean(),
        })
        return loss, new_metrics

    grads, new_metrics = jax.grad(actor_loss_fn, has_aux=True)(actor.params)
    new_actor = actor.apply_gradients(grads=grads)

    new_actor = new_actor.replace(target_params=optax.incremental_update(actor.params, actor.target_params, tau))
    new_critic = critic.replace(target_params=optax.incremental_update(critic.params, critic.target_params, tau))
    return key, new_actor, new_critic, new_metrics


def update(key: jax.Array, actor: TrainState, critic: TrainState, batch: Batch, metrics: Metrics,
           full_update: jax.Array, cfg: Config) -> tuple[jax.Array, TrainState, TrainState, Metrics]:
    """``lax.cond(full_update, critic + actor + targets, critic only)``; the returned key depends on the branch."""
    critic_kwargs = dict(gamma=cfg.gamma, critic_bc_coef=cfg.critic_bc_coef, policy_noise=cfg.policy_noise,
                         noise_clip=cfg.noise_clip)

    def full(key, actor, critic, batch, metrics):
        key, new_critic, new_metrics = update_critic(key, actor, critic, batch, metrics, **critic_kwargs)
        return update_actor(key, actor, new_critic, batch, new_metrics, actor_bc_coef=cfg.actor_bc_coef,
                            tau=cfg.tau, normalize_q=cfg.normalize_q)

    def critic_only(key, actor, critic, batch, metrics):
        key, new_critic, new_metrics = update_critic(key, actor, critic, batch, metrics, **critic_kwargs)
        return key, actor, new_critic, new_metrics

    return jax.lax.cond(full_update, full, critic_only, key, actor, critic, batch, metrics)


def delayed_updates(num_updates_on_epoch: int, policy_freq: int) -> jax.Array:
    """In-epoch full-update flags: 1 at i = 0, policy_freq, 2 * policy_freq, ... (int32, as CORL)."""
    return jax.numpy.equal(jax.numpy.arange(num_updates_on_epoch) % policy_freq, 0).astype(int)


def sample_batch(buffer: Batch, key: jax.Array, batch_size: int) -> Batch:
    """CORL ``ReplayBuffer.sample_batch``: uniform indices with ``randint``, gathered from every field."""
    size = buffer["states"].shape[0]
    indices = jax.random.randint(key, shape=(batch_size,), minval=0, maxval=size)
    return jax.tree.map(lambda arr: arr[indices], buffer)


def loop_body(key: jax.Array, actor: TrainState, critic: TrainState, metrics: Metrics, full_update: jax.Array,
              get_batch: Callable[[jax.Array], Batch],
              cfg: Config) -> tuple[jax.Array, TrainState, TrainState, Metrics]:
    """CORL ``td3_loop_update_step``: split off the batch key, get the batch, run :func:`update`."""
    key, batch_key = jax.random.split(key)
    batch = get_batch(batch_key)
    return update(key, actor, critic, batch, metrics, full_update, cfg)


def train_epoch(key: jax.Array, actor: TrainState, critic: TrainState, buffer: Batch, metrics: Metrics,
                cfg: Config) -> tuple[jax.Array, TrainState, TrainState, Metrics]:
    """``lax.fori_loop`` over ``num_updates_on_epoch`` loop bodies, batches sampled from ``buffer`` (an argument).

    ``cfg`` must be static under ``jit`` (it fixes shapes, the schedule and compile-time constants).
    """
    flags = delayed_updates(cfg.num_updates_on_epoch, cfg.policy_freq)
    get_batch = partial(sample_batch, buffer, batch_size=cfg.batch_size)

    def body(i: jax.Array, carry: tuple) -> tuple:
        key, actor, critic, metrics = carry
        return loop_body(key, actor, critic, metrics, flags[i], get_batch, cfg)

    return jax.lax.fori_loop(0, cfg.num_updates_on_epoch, body, (key, actor, critic, metrics))


def train_step_on_batch(key: jax.Array, actor: TrainState, critic: TrainState, batch: Batch, metrics: Metrics,
                        full_update: jax.Array, cfg: Config) -> tuple[jax.Array, TrainState, TrainState, Metrics]:
    """One loop body on a given batch (the batch key is still split off and unused, so the key chain matches)."""
    return loop_body(key, actor, critic, metrics, full_update, lambda _batch_key: batch, cfg)


# ----------------------------------------------------------------------------------------------------- trainer


def _flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
    return {f"{prefix}/{k}": np.array(v) for k, v in flat.items()}


def _unflatten(prefix: str, like: Any, params: Mapping[str, np.ndarray]) -> Any:
    flat = traverse_util.flatten_dict(like, sep="/")
    out = {}
    for k, ref in flat.items():
        value = np.asarray(params[f"{prefix}/{k}"])
        if value.shape != ref.shape:
            raise ValueError(f"{prefix}/{k}: shape {list(value.shape)} != expected {list(ref.shape)}")
        out[k] = jnp.asarray(value, dtype=ref.dtype)
    return traverse_util.unflatten_dict(out, sep="/")


class ReBRAC:
    """CORL's ReBRAC state (key, actor, critic) with a step-on-a-batch and an epoch entry point.

    Built as CORL builds it: ``PRNGKey(train_seed)`` split into (key, actor_key, critic_key); online and target
    parameters are two ``init`` calls with the same key, hence identical.
    """

    targets_of = {"actor_target": "actor", "critic_target": "critic"}

    def __init__(self, config: Config, state_dim: int, action_dim: int, dtype: Any = jnp.float32):
        self.config = config
        self.dtype = jnp.dtype(dtype)
        key = jax.random.PRNGKey(seed=config.train_seed)
        key, actor_key, critic_key = jax.random.split(key, 3)
        init_state = jnp.zeros((1, state_dim), self.dtype)
        init_action = jnp.zeros((1, action_dim), self.dtype)

        actor_module = DetActor(action_dim=action_dim, hidden_dim=config.hidden_dim, layernorm=config.actor_ln,
                                n_hiddens=config.actor_n_hiddens)
        critic_module = EnsembleCritic(hidden_dim=config.hidden_dim, num_critics=NUM_CRITICS,
                                       layernorm=config.critic_ln, n_hiddens=config.critic_n_hiddens)
        self.key = key
        self.actor = TrainState.create(
            apply_fn=actor_module.apply,
            params=self._cast(actor_module.init(actor_key, init_state)),
            target_params=self._cast(actor_module.init(actor_key, init_state)),
            tx=optax.adam(learning_rate=config.actor_learning_rate),
        )
        self.critic = TrainState.create(
            apply_fn=critic_module.apply,
            params=self._cast(critic_module.init(critic_key, init_state, init_action)),
            target_params=self._cast(critic_module.init(critic_key, init_state, init_action)),
            tx=optax.adam(learning_rate=config.critic_learning_rate),
        )
        self._step = jax.jit(partial(train_step_on_batch, cfg=config))
        self._epoch = jax.jit(partial(train_epoch, cfg=config))

    def _cast(self, params: Any) -> Any:
        """Parameters in the trainer's dtype before ``TrainState.create`` (so Adam's moments get it too).

        float32 is CORL's run (flax initializes in float32: a no-op); float64 is CORL under ``jax_enable_x64`` with
        the parameters cast by a tree map after ``init``, as the float64 golden traces were recorded.
        """
        return jax.tree_util.tree_map(lambda a: a.astype(self.dtype), params)

    def is_full_update(self, i: int) -> bool:
        """Whether in-epoch update ``i`` also updates the actor and the targets (CORL's ``delayed_updates[i]``)."""
        return (i % self.config.num_updates_on_epoch) % self.config.policy_freq == 0

    def train_step(self, batch: Mapping[str, Any], i: int) -> dict[str, float]:
        """One update (in-epoch index ``i``) on ``batch``; returns that update's metrics (keys it wrote)."""
        jbatch = {k: jnp.asarray(batch[k], self.dtype) for k in BATCH_KEYS}
        full = jnp.asarray(int(self.is_full_update(i)), jnp.int32)
        self.key, self.actor, self.critic, metrics = self._step(self.key, self.actor, self.critic, jbatch,
                                                                Metrics.create(), full)
        acc = jax.device_get(metrics.accumulators)
        return {k: float(np.asarray(s / n)[0]) for k, (s, n) in acc.items() if n[0] > 0}

    def train_epoch(self, buffer: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One CORL epoch on ``buffer`` (dict of full dataset arrays); returns the epoch means (``Metrics.compute``)."""
        jbuffer = {k: jnp.asarray(buffer[k], self.dtype) for k in BATCH_KEYS}
        self.key, self.actor, self.critic, metrics = self._epoch(self.key, self.actor, self.critic, jbuffer,
                                                                 Metrics.create())
        return metrics.compute()

    def export_parameters(self) -> dict[str, np.ndarray]:
        """Every online and target parameter as numpy arrays (trainer dtype) under golden names (``actor/params/...``)."""
        return {
            **_flatten("actor", self.actor.params),
            **_flatten("actor_target", self.actor.target_params),
            **_flatten("critic", self.critic.params),
            **_flatten("critic_target", self.critic.target_params),
        }

    def load_parameters(self, params: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Overwrite parameters from golden names; a target absent from ``params`` becomes a copy of its online net.

        Optimizer state is left as is.
        """
        expected = self.export_parameters()
        unknown = [k for k in params if k not in expected]
        missing = [k for k in expected if k not in params and not k.startswith(("actor_target/", "critic_target/"))]
        if strict and (missing or unknown):
            raise KeyError(f"parameter names do not match: missing {missing[:5]}, unknown {unknown[:5]}")
        merged = dict(expected)
        merged.update({k: v for k, v in params.items() if k in expected})
        for target, online in self.targets_of.items():
            for k in expected:
                if k.startswith(f"{target}/") and k not in params:
                    merged[k] = merged[f"{online}/{k[len(target) + 1:]}"]
        self.actor = self.actor.replace(params=_unflatten("actor", self.actor.params, merged),
                                        target_params=_unflatten("actor_target", self.actor.target_params, merged))
        self.critic = self.critic.replace(params=_unflatten("critic", self.critic.params, merged),
                                          target_params=_unflatten("critic_target", self.critic.target_params, merged))


def build(config: Config, state_dim: int, action_dim: int, dtype: Any = jnp.float32) -> ReBRAC:
    """Trainer factory (the actor has no ``max_action``: outputs lie in (-1, 1)); float64 needs ``jax_enable_x64``."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("a float64 ReBRAC needs jax_enable_x64 (use `with jax.enable_x64(True):`)")
    return ReBRAC(config, state_dim, action_dim, dtype)
