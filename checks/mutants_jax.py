"""JAX mutation catalog: realistic bugs injected into one :class:`MultiActorReBRAC` instance before compilation.

Each mutant replaces one of the attributes the trainer builds its jitted functions from (``loop_body_fn``,
``flags_fn``, ``w2_fn``) on a freshly built instance; the reference, the files and every other instance are
untouched. The mutant bodies are small modified copies of the reference code they break (that is what a mutant is);
``target`` names the function whose bug they simulate (SARIF location) and ``expected`` the observable group that
must catch it. Run them with :func:`checks.mutants.run_mutant`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax

from checks.mutants import Mutant
from multi_actor import w2_jax
from multi_actor.jax_trainer import MultiActorReBRAC, full_update_flags, rebrac_multi_actor_factory
from reference_algos.jax import rebrac


def _set(name: str, value: Any) -> Callable[[MultiActorReBRAC], None]:
    def patch(trainer: MultiActorReBRAC) -> None:
        setattr(trainer, name, value)

    return patch


# ------------------------------------------------------------------------------------------ reference chain


def _loop_body_extra_split(key, actor, critic, metrics, full_update, get_batch, cfg):
    key, _actors_key = jax.random.split(key)  # BUG: a key for the extra actors split off the reference chain
    return rebrac.loop_body(key, actor, critic, metrics, full_update, get_batch, cfg)


def _loop_body_with(update_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``rebrac.loop_body`` with ``update`` replaced."""

    def loop_body(key, actor, critic, metrics, full_update, get_batch, cfg):
        key, batch_key = jax.random.split(key)
        batch = get_batch(batch_key)
        return update_fn(key, actor, critic, batch, metrics, full_update, cfg)

    return loop_body


def _update_with(update_actor_fn: Callable[..., Any], swap_bc_coefs: bool = False) -> Callable[..., Any]:
    """``rebrac.update`` with ``update_actor`` replaced, or with the two BC coefficients swapped."""

    def update(key, actor, critic, batch, metrics, full_update, cfg):
        critic_bc, actor_bc = cfg.critic_bc_coef, cfg.actor_bc_coef
        if swap_bc_coefs:
            critic_bc, actor_bc = actor_bc, critic_bc  # BUG: critic target penalised with the actor's coefficient
        critic_kwargs = dict(gamma=cfg.gamma, critic_bc_coef=critic_bc, policy_noise=cfg.policy_noise,
                             noise_clip=cfg.noise_clip)

        def full(key, actor, critic, batch, metrics):
            key, new_critic, new_metrics = rebrac.update_critic(key, actor, critic, batch, metrics, **critic_kwargs)
            return update_actor_fn(key, actor, new_critic, batch, new_metrics, actor_bc_coef=actor_bc, tau=cfg.tau,
                                   normalize_q=cfg.normalize_q)

        def critic_only(key, actor, critic, batch, metrics):
            key, new_critic, new_metrics = rebrac.update_critic(key, actor, critic, batch, metrics, **critic_kwargs)
            return key, actor, new_critic, new_metrics

        return jax.lax.cond(full_update, full, critic_only, key, actor, critic, batch, metrics)

    return update


def _update_actor_post_step_target(key, actor, critic, batch, metrics, *, actor_bc_coef, tau, normalize_q):
    key, new_actor, new_critic, new_metrics = rebrac.update_actor(key, actor, critic, batch, metrics,
                                                                  actor_bc_coef=actor_bc_coef, tau=tau,
                                                                  normalize_q=normalize_q)
    # BUG: the actor target moves toward the post-step actor (CORL uses the parameters from before the step)
    new_actor = new_actor.replace(target_params=optax.incremental_update(new_actor.params, actor.target_params, tau))
    return key, new_actor, new_critic, new_metrics


def _flags_every_step(cfg, start, n):
    return jnp.ones((n,), jnp.int32)  # BUG: policy_freq ignored, every update is a full update


# ------------------------------------------------------------------------------------------------ actor chain


def _sinkhorn_plan_normalized(x: jax.Array, y: jax.Array, epsilon: float, iterations: int = 200) -> jax.Array:
    """A hand-written debiased Sinkhorn whose iteration renormalises the whole plan to unit mass instead of matching
    its row and column marginals (BUG): the plan stays the normalised Gibbs kernel, a soft-min, not a coupling."""

    def ot_eps(p: jax.Array, q: jax.Array) -> jax.Array:
        cost = jnp.square(p[:, None, :] - q[None, :, :]).sum(-1)
        log_ab = -jnp.log(p.shape[0]) - jnp.log(q.shape[0])
        log_plan = -cost / epsilon + log_ab

        def body(_, lp):
            return lp - jax.scipy.special.logsumexp(lp)  # BUG: global normalisation, marginals never enforced

        log_plan = jax.lax.fori_loop(0, iterations, body, log_plan)
        plan = jnp.exp(log_plan)
        return (plan * cost).sum() + epsilon * (plan * (log_plan - log_ab)).sum()

    def one(p: jax.Array, q: jax.Array) -> jax.Array:
        return ot_eps(p, q) - 0.5 * (ot_eps(p, p) + ot_eps(q, q))

    return jax.vmap(one)(x, y)


# ----------------------------------------------------------------------------------------------------- catalog


def jax_catalog() -> list[Mutant]:
    """The JAX (ReBRAC) mutants; each must be killed by the equivalence harness."""
    sampled = ("actor_configs=[{type: deterministic}, {type: tanh_gaussian}, {type: tanh_gaussian}]",)
    common = dict(algo="rebrac", framework="jax", base_factory=rebrac_multi_actor_factory)
    return [
        Mutant("jax_extra_key_split", description="an extra key split off the reference key chain (for the extra "
               "actors)", expected="rng", patch=_set("loop_body_fn", _loop_body_extra_split),
               target=MultiActorReBRAC._build_update, **common),
        Mutant("jax_policy_freq_ignored", description="policy_freq ignored: actor0, targets and extra actors "
               "updated at every step", expected="actor0 params", patch=_set("flags_fn", _flags_every_step),
               target=full_update_flags, **common),
        Mutant("jax_actor_target_post_step", description="actor target soft-updated toward the post-step actor "
               "(CORL uses the pre-step parameters)", expected="target params",
               patch=_set("loop_body_fn", _loop_body_with(_update_with(_update_actor_post_step_target))),
               target=rebrac.update_actor, **common),
        Mutant("jax_bc_coefs_swapped", description="critic BC coefficient swapped with the actor's",
               expected="critic losses",
               patch=_set("loop_body_fn", _loop_body_with(_update_with(rebrac.update_actor, swap_bc_coefs=True))),
               overrides=("base.actor_bc_coef=0.5",), target=rebrac.update, **common),
        Mutant("jax_sinkhorn_plan_normalized", description="Sinkhorn plan renormalised to unit mass per iteration "
               "instead of matching its marginals", expected="chain (W2 oracle)",
               patch=_set("w2_fn", partial(w2_jax.policy_w2, sinkhorn=_sinkhorn_plan_normalized)),
               overrides=sampled, target=w2_jax.sinkhorn_divergence, **common),
    ]
