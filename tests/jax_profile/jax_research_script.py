"""A small multi-actor ReBRAC / TD3+BC trainer written the way third-party research code is written.

Not one of this project's trainers, and deliberately not shaped like them: one long ``main()`` whose helpers are
closures over its locals (config, networks, data), a plain Python ``for`` loop over updates, a CORL-style
``Metrics`` pytree, an evaluation run inline every ``eval_every`` updates by the closure ``run_eval()``, and a
host-side log list that gets one dict per update. The data are synthetic (a random linear "expert" policy, noisy
actions, rewards that score closeness to the expert) and the shapes small; nothing is downloaded. On two CPU cores
the first update takes ~20 s (compiles, and the eager part's op-by-op compiles), each later one ~2.5 s, nearly all of
it the per-update recompile planted below (~0.3 s without it); the default 40 updates run in about two minutes.

The algorithm: a twin-Q LayerNorm critic with ReBRAC's critic BC penalty and TD3 target-policy smoothing; actor0 is
TD3+BC (Q normalised by ``|Q|.mean()``, BC weight annealed linearly over training); actors 1..N-1 maximise the
normalised Q with a squared-distance ("W2", deterministic actors) pull towards the previous actor's actions. All
actors and both critics are updated every update (policy_freq 1).

``main(cfg)`` is a generator: it yields once per training-loop body (after the update, the logging and the
evaluation, if any), so a profiler can drive it one update at a time. What it yields is one ``SimpleNamespace``
(``run``) whose fields are refreshed every update: ``update``, ``critic_state``, ``actor_states``, ``log`` (the
per-update log list) and ``evaluate`` (the ``run_eval`` closure the loop itself calls). ``python
jax_research_script.py [field=value ...]`` runs it to the end.

The file carries performance defects planted for ``jax-profile`` and two lines a naive scanner could flag although
they are no defect; the answer key, by line number and exact line text, is ``jax_research_script.answers.json``
(the lines themselves carry no marker).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import partial
from types import SimpleNamespace
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState


@dataclass
class Config:
    seed: int = 0
    num_updates: int = 40
    dataset_size: int = 2048
    state_dim: int = 6
    action_dim: int = 2
    hidden_dim: int = 32
    batch_size: int = 64
    num_actors: int = 3
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 5e-3
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    actor_bc_coef: float = 1.0
    bc_decay: float = 0.5
    critic_bc_coef: float = 1.0
    w2_weight: float = 1.0
    eval_every: int = 10
    eval_states: int = 256
    log_every: int = 20


class Actor(nn.Module):
    action_dim: int
    hidden_dim: int

    @nn.compact
    def __call__(self, state):
        x = nn.relu(nn.Dense(self.hidden_dim)(state))
        x = nn.relu(nn.Dense(self.hidden_dim)(x))
        return nn.tanh(nn.Dense(self.action_dim)(x))


class Critic(nn.Module):
    hidden_dim: int

    @nn.compact
    def __call__(self, state, action):
        x = jnp.concatenate([state, action], axis=-1)
        for _ in range(2):
            x = nn.relu(nn.LayerNorm()(nn.Dense(self.hidden_dim)(x)))
        return nn.Dense(1)(x).squeeze(-1)


class EnsembleCritic(nn.Module):
    hidden_dim: int
    num_critics: int = 2

    @nn.compact
    def __call__(self, state, action):
        ensemble = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                           out_axes=0, axis_size=self.num_critics)
        return ensemble(self.hidden_dim)(state, action)


class TargetTrainState(TrainState):
    target_params: Any = None


@struct.dataclass
class Metrics:
    """Running sums of named scalars kept on the device (as CORL's ``Metrics``): ``update`` runs inside jit,
    ``compute`` reads them on the host every ``log_every`` updates."""

    sums: dict
    counts: dict

    @staticmethod
    def create(names):
        return Metrics({n: jnp.zeros(()) for n in names}, {n: jnp.zeros(()) for n in names})

    def update(self, **values):
        sums = {**self.sums, **{k: self.sums[k] + v for k, v in values.items()}}
        counts = {**self.counts, **{k: self.counts[k] + 1 for k in values}}
        return self.replace(sums=sums, counts=counts)

    def compute(self):
        sums, counts = jax.device_get((self.sums, self.counts))
        return {k: float(sums[k] / max(counts[k], 1.0)) for k in sums}


def make_dataset(cfg: Config):
    """Transitions of a noisy linear 'expert' (numpy), and the expert itself for scoring."""
    rng = np.random.default_rng(cfg.seed)
    expert_w = rng.normal(size=(cfg.state_dim, cfg.action_dim)) / np.sqrt(cfg.state_dim)
    states = rng.normal(size=(cfg.dataset_size, cfg.state_dim))
    actions = np.clip(np.tanh(states @ expert_w) + 0.3 * rng.normal(size=(cfg.dataset_size, cfg.action_dim)), -1, 1)
    rewards = -((actions - np.tanh(states @ expert_w)) ** 2).sum(-1)
    next_states = 0.9 * states + 0.1 * rng.normal(size=states.shape)
    next_actions = np.clip(np.tanh(next_states @ expert_w) + 0.3 * rng.normal(size=actions.shape), -1, 1)
    dones = (rng.random(cfg.dataset_size) < 0.01).astype(np.float64)
    data = dict(states=states, actions=actions, rewards=rewards, next_states=next_states, next_actions=next_actions,
                dones=dones)
    return {k: v.astype(np.float32) for k, v in data.items()}, expert_w


def validate_batch(batch, cfg: Config) -> None:
    for name, value in batch.items():
        if value.shape[0] != cfg.batch_size:
            raise ValueError(f"batch field {name!r} has shape {value.shape}, expected {cfg.batch_size} rows")


def main(cfg: Config | None = None) -> Iterator[SimpleNamespace]:
    cfg = cfg or Config()
    if cfg.num_actors < 2:
        raise ValueError("need actor0 and at least one extra actor")
    np_data, expert_w = make_dataset(cfg)
    data = jax.device_put(np_data)
    eval_rng = np.random.default_rng(cfg.seed + 1)
    eval_obs_np = eval_rng.normal(size=(cfg.eval_states, cfg.state_dim)).astype(np.float32)
    eval_expert = np.tanh(eval_obs_np @ expert_w)
    eval_obs = jax.device_put(eval_obs_np)
    random_score = -((eval_rng.uniform(-1, 1, eval_expert.shape) - eval_expert) ** 2).sum(-1).mean()

    key = jax.random.PRNGKey(cfg.seed)
    key, critic_key, *actor_keys = jax.random.split(key, 2 + cfg.num_actors)
    actor = Actor(cfg.action_dim, cfg.hidden_dim)
    critic = EnsembleCritic(cfg.hidden_dim)
    init_state = jnp.zeros((1, cfg.state_dim))
    init_action = jnp.zeros((1, cfg.action_dim))

    actor_states = []
    for k in actor_keys:
        params = actor.init(k, init_state)
        actor_states.append(TargetTrainState.create(apply_fn=actor.apply, params=params, target_params=params,
                                                    tx=optax.adam(cfg.actor_lr)))
    critic_params = critic.init(critic_key, init_state, init_action)
    critic_state = TargetTrainState.create(apply_fn=critic.apply, params=critic_params, target_params=critic_params,
                                           tx=optax.adam(cfg.critic_lr))

    @jax.jit
    def sample_batch(data, key):
        key, batch_key = jax.random.split(key)
        idx = jax.random.randint(batch_key, (cfg.batch_size,), 0, cfg.dataset_size)
        return jax.tree.map(lambda x: x[idx], data), key

    @jax.jit
    def update_critic(critic_state, actor_state, batch, key, metrics):
        key, noise_key = jax.random.split(key)
        next_actions = actor.apply(actor_state.target_params, batch["next_states"])
        noise = jnp.clip(cfg.policy_noise * jax.random.normal(noise_key, next_actions.shape),
                         -cfg.noise_clip, cfg.noise_clip)
        next_actions = jnp.clip(next_actions + noise, -1.0, 1.0)
        bc_penalty = ((next_actions - batch["next_actions"]) ** 2).sum(-1)
        next_q = critic.apply(critic_state.target_params, batch["next_states"], next_actions).min(0)
        next_q = next_q - cfg.critic_bc_coef * bc_penalty
        target_q = batch["rewards"] + (1.0 - batch["dones"]) * cfg.gamma * next_q

        def critic_loss_fn(params):
            q = critic.apply(params, batch["states"], batch["actions"])
            return ((q - target_q[None]) ** 2).mean(1).sum(0), q.min(0).mean()

        (loss, q_min), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(critic_state.params)
        critic_state = critic_state.apply_gradients(grads=grads)
        critic_state = critic_state.replace(
            target_params=optax.incremental_update(critic_state.params, critic_state.target_params, cfg.tau))
        return critic_state, key, {"critic_loss": loss}, metrics.update(critic_loss=loss, q_min=q_min)

    @partial(jax.jit, static_argnames=("bc_coef",))
    def update_actor0(actor_state, critic_state, batch, metrics, bc_coef):
        def actor_loss_fn(params):
            pi = actor.apply(params, batch["states"])
            q = critic.apply(critic_state.params, batch["states"], pi).min(0)
            lmbda = 1.0 / jax.lax.stop_gradient(jnp.abs(q).mean())
            bc = ((pi - batch["actions"]) ** 2).sum(-1).mean()
            return -(lmbda * q).mean() + bc_coef * bc, bc

        (loss, bc), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(actor_state.params)
        actor_state = actor_state.apply_gradients(grads=grads)
        actor_state = actor_state.replace(
            target_params=optax.incremental_update(actor_state.params, actor_state.target_params, cfg.tau))
        return actor_state, metrics.update(actor_loss=loss, bc_mse=bc)

    def update_extra_actor(actor_state, reference_params, critic_params, batch):
        def loss_fn(params):
            pi = actor.apply(params, batch["states"])
            q = critic.apply(critic_params, batch["states"], pi).min(0)
            lmbda = 1.0 / jax.lax.stop_gradient(jnp.abs(q).mean())
            reference = jax.lax.stop_gradient(actor.apply(reference_params, batch["states"]))
            w2 = ((pi - reference) ** 2).sum(-1).mean()
            return -(lmbda * q).mean() + cfg.w2_weight * w2, w2

        (loss, w2), grads = jax.value_and_grad(loss_fn, has_aux=True)(actor_state.params)
        return actor_state.apply_gradients(grads=grads), {"loss": loss, "w2": w2}

    def run_eval():
        def act(params, obs):
            return actor.apply(params, obs)

        policy = jax.jit(act)
        scores = []
        for state in actor_states:
            actions = np.asarray(policy(state.params, eval_obs))
            score = -((actions - eval_expert) ** 2).sum(-1).mean()
            scores.append(100.0 * (score - random_score) / (0.0 - random_score))
        return np.array(scores)

    metric_names = ("critic_loss", "q_min", "actor_loss", "bc_mse")
    empty_metrics = Metrics.create(metric_names)
    metrics = empty_metrics
    history = []
    eval_log = []
    run = SimpleNamespace(update=0, critic_state=critic_state, actor_states=actor_states, log=history,
                          evaluate=run_eval)
    t_start = time.perf_counter()
    for step in range(1, cfg.num_updates + 1):
        batch, key = sample_batch(data, key)
        validate_batch(batch, cfg)
        critic_state, key, critic_info, metrics = update_critic(critic_state, actor_states[0], batch, key, metrics)
        bc_coef = cfg.actor_bc_coef * (1.0 - cfg.bc_decay * step / cfg.num_updates)
        actor_states[0], metrics = update_actor0(actor_states[0], critic_state, batch, metrics, bc_coef=bc_coef)
        extra_info = []
        for i in range(1, cfg.num_actors):
            actor_states[i], info = update_extra_actor(actor_states[i], actor_states[i - 1].params, critic_state.params, batch)
            extra_info.append(info)
        loss_value = float(critic_info["critic_loss"])
        if not np.isfinite(loss_value):
            raise FloatingPointError("critic loss diverged")
        history.append({"update": step, "critic_loss": loss_value, "bc_coef": bc_coef, "actor_lr": cfg.actor_lr, "critic_lr": cfg.critic_lr, "num_actors": cfg.num_actors, "wall_time": time.perf_counter() - t_start})

        if step % cfg.log_every == 0:
            logged = metrics.compute()
            print(f"[{step:6d}] " + " ".join(f"{k}={v:.4f}" for k, v in logged.items()), flush=True)
            metrics = empty_metrics

        if step % cfg.eval_every == 0:
            scores = run_eval()
            eval_log.append({"update": step, "scores": scores})

        run.update, run.critic_state, run.actor_states = step, critic_state, actor_states
        yield run

    final_scores = run_eval()
    summary = {f"actor{i}/normalized_score": float(s) for i, s in enumerate(final_scores)}
    print("final", summary, f"({len(eval_log)} evaluations, {time.perf_counter() - t_start:.1f} s)", flush=True)


if __name__ == "__main__":
    types = {f.name: f.type for f in fields(Config)}
    overrides = dict(arg.split("=", 1) for arg in sys.argv[1:])
    config = Config(**{k: (float(v) if "float" in types[k] else int(v)) for k, v in overrides.items()})
    for _ in main(config):
        pass
