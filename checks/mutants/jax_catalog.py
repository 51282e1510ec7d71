"""JAX mutation catalog: one-line patches of the real ReBRAC / multi-actor code, installed on one
:class:`MultiActorReBRAC` instance before compilation.

The trainer builds its jitted functions from instance attributes (``loop_body_fn``, ``flags_fn``, ``w2_fn``, part of
the compile-cache key); a mutant replaces one of them on a freshly built instance with the patched function, or —
for a bug deeper in the call chain — with a copy of ``rebrac.loop_body`` (and ``rebrac.update``) whose globals route
to the patched function (:func:`checks.source_patch.reroute`). The reference module, the files and every other
instance are untouched. Run them with :func:`checks.mutants.run.run_mutant`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from checks.mutants.model import Behaviour, Mutant, attribute
from checks.source_patch import SourceLine, SourcePatch
from multi_actor import w2_jax
from multi_actor.jax_trainer import full_update_flags, rebrac_multi_actor_factory
from reference_algos.jax import rebrac


def _sinkhorn_plan_normalized(x: jax.Array, y: jax.Array, epsilon: float, iterations: int = 200) -> jax.Array:
    """A hand-written debiased Sinkhorn whose iteration renormalises the whole plan to unit mass instead of matching
    its row and column marginals (BUG): the plan stays the normalised Gibbs kernel, a soft-min, not a coupling.

    Not a source patch: our code delegates the Sinkhorn iterations to OTT-JAX, so the solver bug this simulates has
    no line of ours to edit; it replaces the solver call of :func:`multi_actor.w2_jax._sinkhorn_one` (its location).
    """

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


def jax_catalog() -> list[Mutant]:
    """The JAX (ReBRAC) mutants; each must be killed by the equivalence harness."""
    sampled = ("actor_configs=[{type: deterministic}, {type: tanh_gaussian}, {type: tanh_gaussian}]",)
    common = dict(algo="rebrac", framework="jax", base_factory=rebrac_multi_actor_factory)
    loop_body = attribute("loop_body_fn")
    in_update = dict(via=(rebrac.loop_body, rebrac.update), install=loop_body, **common)  # critic/actor updates
    return [
        Mutant("jax_extra_key_split", description="an extra key split off the reference key chain (for the extra "
               "actors)", expected="rng",
               patch=SourcePatch(rebrac.loop_body, "key, batch_key = jax.random.split(key)",
                                 "key, _actors_key = jax.random.split(key); key, batch_key = jax.random.split(key)"),
               install=loop_body, **common),
        Mutant("jax_policy_freq_ignored", description="policy_freq ignored: actor0, targets and extra actors "
               "updated at every step", expected="actor0 params",
               patch=SourcePatch(full_update_flags, "delayed_updates(cfg.num_updates_on_epoch, cfg.policy_freq)",
                                 "delayed_updates(cfg.num_updates_on_epoch, 1)"),
               install=attribute("flags_fn"), **common),
        Mutant("jax_actor_target_post_step", description="actor target soft-updated toward the post-step actor "
               "(CORL uses the pre-step parameters)", expected="target params",
               patch=SourcePatch(rebrac.update_actor, "incremental_update(actor.params, actor.target_params",
                                 "incremental_update(new_actor.params, actor.target_params"), **in_update),
        Mutant("jax_bc_coefs_swapped", description="critic BC coefficient swapped with the actor's",
               expected="critic losses",
               patch=SourcePatch(rebrac.update, "critic_bc_coef=cfg.critic_bc_coef",
                                 "critic_bc_coef=cfg.actor_bc_coef"),
               via=(rebrac.loop_body,), install=loop_body, overrides=("base.actor_bc_coef=0.5",), **common),
        Mutant("jax_critic_target_online_actor", description="critic target's next actions from the online actor "
               "instead of the target actor", expected="critic losses",
               patch=SourcePatch(rebrac.update_critic,
                                 'actor.apply_fn(actor.target_params, batch["next_states"])',
                                 'actor.apply_fn(actor.params, batch["next_states"])'), **in_update),
        Mutant("jax_noise_args_swapped", description="target policy noise scale and clip passed in swapped order",
               expected="critic losses",
               patch=SourcePatch(rebrac.update_critic,
                                 "target_policy_noise(actions_key, next_actions.shape, policy_noise, noise_clip)",
                                 "target_policy_noise(actions_key, next_actions.shape, noise_clip, policy_noise)"),
               **in_update),
        Mutant("jax_actor_q_from_target_critic", description="actor loss evaluates Q with the target critic",
               expected="actor0 losses",
               patch=SourcePatch(rebrac.update_actor, 'critic.apply_fn(critic.params, batch["states"], actions)',
                                 'critic.apply_fn(critic.target_params, batch["states"], actions)'), **in_update),
        Mutant("jax_sinkhorn_plan_normalized", description="Sinkhorn plan renormalised to unit mass per iteration "
               "instead of matching its marginals", expected="chain (W2 oracle)",
               patch=Behaviour(w2_jax.policy_w2, partial(w2_jax.policy_w2, sinkhorn=_sinkhorn_plan_normalized),
                               SourceLine(w2_jax._sinkhorn_one, "ott_sd.sinkhorn_divergence("),
                               "the Sinkhorn iterations are OTT-JAX's, not a line of ours"),
               install=attribute("w2_fn"), overrides=sampled, **common),
    ]
