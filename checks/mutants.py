"""Mutation catalog: realistic bugs injected at run time into our own multi-actor trainer.

A mutant patches one freshly built candidate *instance* (``types.MethodType`` on the instance, a replaced attribute,
or a construction-order subclass) — files are never edited and the reference in the same process is untouched. Each
mutant names the observable group expected to catch it. ``pogo-audit mutants`` runs every mutant through the
equivalence harness and reports a kill matrix (mutant × observable group → first step of detection); a mutant that
no observable catches is a failing result.

The mutant bodies are deliberately small modified copies of the code they break — that is what a mutant is.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from checks.equivalence import GROUPS, EquivalenceOptions, equivalence_for_algo, group_of
from multi_actor.trainer import MultiActorTrainer, evaluator_factory_for, multi_actor_factory
from multi_actor.w2 import pair_method, policy_w2, sinkhorn_divergence
from pogo_audit.results import FAIL, PASS, CheckResult

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    algo: str
    description: str
    expected: str
    patch: Callable[[MultiActorTrainer], None] | None = None
    trainer_cls: type[MultiActorTrainer] | None = None
    overrides: tuple[str, ...] = ()
    steps: int = 6
    target: Callable[..., Any] | None = None
    framework: str = "torch"
    base_factory: Callable[..., Any] | None = None

    def factory(self, config: Any, dataset_spec: Any, seed: int) -> Any:
        """Build the candidate (``base_factory``, default the PyTorch multi-actor trainer) and inject the bug."""
        if self.trainer_cls is not None:
            return self.trainer_cls(config, dataset_spec, seed, evaluator_factory_for(config, dataset_spec))
        trainer = (self.base_factory or multi_actor_factory)(config, dataset_spec, seed)
        self.patch(trainer)
        return trainer

    def location(self) -> dict[str, Any] | None:
        if self.target is None:
            return None
        fn = inspect.unwrap(self.target)
        try:
            path = Path(inspect.getsourcefile(fn)).resolve()
            line = inspect.getsourcelines(fn)[1]
        except (TypeError, OSError):
            return None
        try:
            rel = path.relative_to(REPO_ROOT)
        except ValueError:
            rel = path
        return {"path": rel.as_posix(), "line": int(line), "function": fn.__qualname__}


def _bind(obj: Any, name: str, fn: Callable[..., Any]) -> None:
    setattr(obj, name, types.MethodType(fn, obj))


# --------------------------------------------------------------------------------------------------------- IQL


def _iql_next_v_after_v_update(t: MultiActorTrainer) -> None:
    def train_step(self, batch):
        self.total_it += 1
        obs, act, rew, next_obs, done = batch
        log: dict[str, float] = {}
        adv = self._update_v(obs, act, log)
        with torch.no_grad():
            next_v = self.vf(next_obs)  # BUG: V(s') read after the V step
        self._update_q(next_v, obs, act, rew.squeeze(-1), done.squeeze(-1), log)
        self._update_policy(adv, obs, act, log)
        return log

    _bind(t.base, "train_step", train_step)


def _iql_adv_after_critic_update(t: MultiActorTrainer) -> None:
    def train_step(self, batch):
        self.total_it += 1
        obs, act, rew, next_obs, done = batch
        log: dict[str, float] = {}
        with torch.no_grad():
            next_v = self.vf(next_obs)
        self._update_v(obs, act, log)
        self._update_q(next_v, obs, act, rew.squeeze(-1), done.squeeze(-1), log)
        with torch.no_grad():
            adv = self.q_target(obs, act) - self.vf(obs)  # BUG: advantage recomputed after the critic updates
        self._update_policy(adv, obs, act, log)
        return log

    _bind(t.base, "train_step", train_step)


def _iql_rewards_not_squeezed(t: MultiActorTrainer) -> None:
    def train_step(self, batch):
        self.total_it += 1
        obs, act, rew, next_obs, done = batch
        log: dict[str, float] = {}
        with torch.no_grad():
            next_v = self.vf(next_obs)
        adv = self._update_v(obs, act, log)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._update_q(next_v, obs, act, rew, done, log)  # BUG: [B,1] rewards + [B] values -> [B,B]
        self._update_policy(adv, obs, act, log)
        return log

    _bind(t.base, "train_step", train_step)


def _iql_v_loss_online_q(t: MultiActorTrainer) -> None:
    from reference_algos.torch.iql import asymmetric_l2_loss

    def _update_v(self, observations, actions, log_dict):
        with torch.no_grad():
            target_q = self.qf(observations, actions)  # BUG: online Q instead of the target Q
        v = self.vf(observations)
        adv = target_q - v
        v_loss = asymmetric_l2_loss(adv, self.iql_tau)
        log_dict["value_loss"] = v_loss.item()
        self.v_optimizer.zero_grad()
        v_loss.backward()
        self.v_optimizer.step()
        return adv

    _bind(t.base, "_update_v", _update_v)


def _iql_q_loss_sum(t: MultiActorTrainer) -> None:
    from reference_algos.torch.common import soft_update
    from reference_algos.torch.iql import td_targets

    def _update_q(self, next_v, observations, actions, rewards, terminals, log_dict):
        targets = td_targets(rewards, terminals, next_v, self.discount)
        q1, q2 = self.qf.both(observations, actions)
        q_loss = F.mse_loss(q1, targets) + F.mse_loss(q2, targets)  # BUG: sum, CORL averages the two
        log_dict["q_loss"] = q_loss.item()
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()
        soft_update(self.q_target, self.qf, self.tau)

    _bind(t.base, "_update_q", _update_q)


def _iql_schedule_not_stepped(t: MultiActorTrainer) -> None:
    t.base.actor_lr_schedule.step = lambda *a, **k: None  # BUG: cosine schedule never advances


# ----------------------------------------------------------------------------------------------------- TD3+BC


def _td3_no_grad_actor_action(t: MultiActorTrainer) -> None:
    from reference_algos.torch.td3_bc import td3_bc_actor_loss

    def _update_actor(self, state, action, log_dict):
        with torch.no_grad():
            pi = self.actor(state)  # BUG: actor0's action without a graph
        actor_loss = td3_bc_actor_loss(pi, self.critic_1(state, pi), action, self.alpha)
        log_dict["actor_loss"] = actor_loss.item()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

    _bind(t.base, "_update_actor", _update_actor)


def _td3_step(self, batch, due_before_increment=False, extra_critic_step=False):
    log_dict: dict[str, float] = {}
    due = self.total_it % self.policy_freq == 0
    self.total_it += 1
    if not due_before_increment:
        due = self.total_it % self.policy_freq == 0
    state, action, reward, next_state, done = batch
    target_q = self._critic_targets(action, reward, next_state, done)
    self._update_critic(state, action, target_q, log_dict)
    if due:
        if extra_critic_step:
            self._update_critic(state, action, target_q, {})
        self._update_actor(state, action, log_dict)
        self._update_targets()
    return log_dict


def _td3_policy_freq_before_increment(t: MultiActorTrainer) -> None:
    _bind(t.base, "train_step", lambda self, batch: _td3_step(self, batch, due_before_increment=True))


def _td3_critic_twice(t: MultiActorTrainer) -> None:
    _bind(t.base, "train_step", lambda self, batch: _td3_step(self, batch, extra_critic_step=True))


def _td3_bc_scaled_by_alpha(t: MultiActorTrainer) -> None:
    def _update_actor(self, state, action, log_dict):
        pi = self.actor(state)
        q = self.critic_1(state, pi)
        lmbda = self.alpha / q.abs().mean().detach()
        actor_loss = -lmbda * q.mean() + self.alpha * F.mse_loss(pi, action)  # BUG: BC term scaled by alpha
        log_dict["actor_loss"] = actor_loss.item()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

    _bind(t.base, "_update_actor", _update_actor)


def _td3_actor_target_twice(t: MultiActorTrainer) -> None:
    from reference_algos.torch.common import soft_update

    original = t.base._update_targets

    def _update_targets(self):
        original()
        soft_update(self.actor_target, self.actor, self.tau)  # BUG: actor target moved twice

    _bind(t.base, "_update_targets", _update_targets)


def _td3_total_it_twice(t: MultiActorTrainer) -> None:
    original = t.base.train_step

    def train_step(self, batch):
        self.total_it += 1  # BUG: counter incremented here and in train_step
        return original(batch)

    _bind(t.base, "train_step", train_step)


def _td3_target_critic1_only(t: MultiActorTrainer) -> None:
    from reference_algos.torch.td3_bc import smoothing_noise, td_targets

    def _critic_targets(self, action, reward, next_state, done):
        with torch.no_grad():
            noise = smoothing_noise(action, self.policy_noise, self.noise_clip)
            next_action = (self.actor_target(next_state) + noise).clamp(-self.max_action, self.max_action)
            target_q = self.critic_1_target(next_state, next_action)  # BUG: no clipped double-Q minimum
            return td_targets(reward, done, target_q, self.discount)

    _bind(t.base, "_critic_targets", _critic_targets)


def _extra_actor_grad_into_critic(t: MultiActorTrainer) -> None:
    t._freeze_base = lambda: contextlib.nullcontext()  # BUG: actor-i energies back-propagate into the critic


# --------------------------------------------------------------------------------------------------------- CQL


def _cql_policy_loss_after_critic_step(t: MultiActorTrainer) -> None:
    def train_step(self, batch):
        observations, actions, rewards, next_observations, dones = batch
        self.total_it += 1
        new_actions, log_pi = self.actor(observations)
        alpha, alpha_loss = self._alpha_and_alpha_loss(observations, log_pi)
        log_dict: dict[str, float] = {"log_pi": log_pi.mean().item(), "alpha_loss": alpha_loss.item(),
                                      "alpha": alpha.item()}
        qf_loss, _, _ = self._q_loss(observations, actions, next_observations, rewards, dones, alpha, log_dict)
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        qf_loss.backward(retain_graph=True)
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        # BUG: the policy loss is built after the critic step, from the updated critics
        policy_loss = self._policy_loss(observations, actions, new_actions, alpha, log_pi)
        log_dict["policy_loss"] = policy_loss.item()
        if self.use_automatic_entropy_tuning:
            self.alpha_optimizer.zero_grad()
            alpha_loss.backward()
            self.alpha_optimizer.step()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()
        if self.total_it % self.target_update_period == 0:
            self.update_target_network(self.soft_target_update_rate)
        return log_dict

    _bind(t.base, "train_step", train_step)


def _cql_bc_logprob_zeros(t: MultiActorTrainer) -> None:
    from reference_algos.torch.cql import sac_policy_loss

    original = t.base._policy_loss

    def _policy_loss(self, observations, actions, new_actions, alpha, log_pi):
        if self.total_it <= self.bc_steps:
            return sac_policy_loss(alpha, log_pi, torch.zeros_like(log_pi))  # BUG: BC log-prob replaced by zeros
        return original(observations, actions, new_actions, alpha, log_pi)

    _bind(t.base, "_policy_loss", _policy_loss)


# -------------------------------------------------------------------------------------------------------- AWAC


def _awac_broadcast(t: MultiActorTrainer) -> None:
    from reference_algos.torch.awac import awac_weights, weighted_log_prob_loss

    def _actor_loss(self, states, actions):
        with torch.no_grad():
            pi_action, _ = self.actor(states)
            v = torch.min(self.critic_1(states, pi_action), self.critic_2(states, pi_action))
            q = torch.min(self.critic_1(states, actions), self.critic_2(states, actions))
            weights = awac_weights(q, v, self.awac_lambda, self.exp_adv_max)
        log_prob = self.actor.log_prob(states, actions).squeeze(-1)  # BUG: [B] x [B,1] broadcasts to [B,B]
        return weighted_log_prob_loss(log_prob, weights)

    _bind(t.base, "_actor_loss", _actor_loss)


def _awac_next_action_mean(t: MultiActorTrainer) -> None:
    from reference_algos.torch.awac import td_targets, twin_critic_loss

    def _critic_loss(self, states, actions, rewards, dones, next_states):
        with torch.no_grad():
            next_actions = self.actor._get_policy(next_states).mean  # BUG: the mean, CORL samples
            q_next = torch.min(self.target_critic_1(next_states, next_actions),
                               self.target_critic_2(next_states, next_actions))
            q_target = td_targets(rewards, dones, q_next, self.gamma)
        return twin_critic_loss(self.critic_1(states, actions), self.critic_2(states, actions), q_target)

    _bind(t.base, "_critic_loss", _critic_loss)


def _awac_missing_detach_advantage(t: MultiActorTrainer) -> None:
    from reference_algos.torch.awac import awac_weights, weighted_log_prob_loss

    def _actor_loss(self, states, actions):
        with torch.no_grad():
            pi_action, _ = self.actor(states)
        # BUG: the advantage weights keep their graph (no no_grad / detach)
        v = torch.min(self.critic_1(states, pi_action), self.critic_2(states, pi_action))
        q = torch.min(self.critic_1(states, actions), self.critic_2(states, actions))
        weights = awac_weights(q, v, self.awac_lambda, self.exp_adv_max)
        return weighted_log_prob_loss(self.actor.log_prob(states, actions), weights)

    _bind(t.base, "_actor_loss", _actor_loss)


# ------------------------------------------------------------------------------------------------ SAC-N / EDAC


def _sac_n_order_swapped(t: MultiActorTrainer) -> None:
    from reference_algos.torch.common import soft_update

    def train_step(self, batch):
        state, action, reward, next_state, done = batch
        alpha_loss = self._update_alpha(state)
        critic_loss = self._update_critic(state, action, reward, next_state, done)  # BUG: critic before actor
        actor_loss, batch_entropy, q_policy_std = self._update_actor(state)
        with torch.no_grad():
            soft_update(self.target_critic, self.critic, tau=self.tau)
            q_random_std = self._q_random_std(state, action)
        return {"alpha_loss": alpha_loss, "critic_loss": critic_loss, "actor_loss": actor_loss,
                "batch_entropy": batch_entropy, "alpha": self.alpha.item(), "q_policy_std": q_policy_std,
                "q_random_std": q_random_std}

    _bind(t.base, "train_step", train_step)


def _edac_diversity_dropped(t: MultiActorTrainer) -> None:
    _bind(t.base, "_critic_diversity_loss", lambda self, state, action: state.new_zeros(()))  # BUG: eta term lost


# ------------------------------------------------------------------------------------------ multi-actor layer


def _actor1_global_draw(t: MultiActorTrainer) -> None:
    actor = t.actors[0]

    def action(self, obs, generator=None):
        mean, std = self.mean_std(obs)
        return mean + std * torch.randn_like(mean)  # BUG: global RNG instead of the actors' generator

    _bind(actor, "action", action)


class ActorsBeforeCritics(MultiActorTrainer):
    """BUG: extra actors built from the global RNG right after seeding, before the base algorithm."""

    def _construct(self, base_cfg: Any, max_action: float, seed: int) -> None:
        from pogo_audit.seeding import seed_everything

        spec = self.spec
        seed_everything(seed)
        self.actors = self._build_extra_actors(max_action)
        self.base = self.algorithm.build_base(base_cfg, spec.state_dim, spec.action_dim, max_action)
        self.actor0 = self.algorithm.actor0_view(self.base, spec.action_dim, max_action)


def _eval_reseeds_numpy(t: MultiActorTrainer) -> None:
    original = t._evaluate

    def _evaluate(self):
        np.random.seed(self.config.eval_seed)  # BUG: evaluation reseeds the global numpy RNG
        return original()

    _bind(t, "_evaluate", _evaluate)


def _w2_no_std(policy, reference, obs, method, k, epsilon, generator):
    kind = pair_method((policy.stochastic, policy.gaussian), (reference.stochastic, reference.gaussian), method)
    if kind == "closed_form":
        mu_p, _ = policy.mean_std(obs)
        mu_q, _ = reference.mean_std(obs)
        return (mu_p - mu_q.detach()).square().sum(-1).mean()  # BUG: the std term is dropped
    return policy_w2(policy, reference, obs, method, k, epsilon, generator)


def _w2_half_cost(policy, reference, obs, method, k, epsilon, generator):
    kind = pair_method((policy.stochastic, policy.gaussian), (reference.stochastic, reference.gaussian), method)
    if kind == "sinkhorn":
        x = policy.sample(obs, k, generator)
        y = reference.sample(obs, k, generator).detach()
        return (sinkhorn_divergence(x, y, epsilon) / 2).mean()  # BUG: GeomLoss' 1/2 |x-y|^2 cost kept
    return policy_w2(policy, reference, obs, method, k, epsilon, generator)


def _set_w2(fn: Callable[..., Any]) -> Callable[[MultiActorTrainer], None]:
    def patch(t: MultiActorTrainer) -> None:
        t.w2_fn = fn

    return patch


def _reference_after_update(t: MultiActorTrainer) -> None:
    def _take_snapshots(self):
        self._snapshots = self.policies()[:-1]  # BUG: live actors, i.e. already updated this step

    _bind(t, "_take_snapshots", _take_snapshots)


def _catalog() -> list[Mutant]:
    from reference_algos.torch import awac, cql, edac, iql, sac_n, td3_bc

    gauss = ("actor_configs=[{type: gaussian}, {type: gaussian}, {type: gaussian}]",)
    return [
        Mutant("iql_next_v_after_v_update", "iql", "next-state value computed after the value update",
               "critic losses", _iql_next_v_after_v_update, target=iql.ImplicitQLearning.train_step),
        Mutant("iql_adv_after_critic_update", "iql", "advantage recomputed after the critic update",
               "actor0 losses", _iql_adv_after_critic_update, target=iql.ImplicitQLearning.train_step),
        Mutant("iql_rewards_not_squeezed", "iql", "[B,1] rewards added to [B] values (broadcast to [B,B])",
               "critic losses", _iql_rewards_not_squeezed, target=iql.ImplicitQLearning.train_step),
        Mutant("iql_v_loss_online_q", "iql", "value loss against the online Q instead of the target Q",
               "critic losses", _iql_v_loss_online_q, target=iql.ImplicitQLearning._update_v),
        Mutant("iql_q_loss_sum", "iql", "twin-Q loss summed instead of averaged", "critic losses",
               _iql_q_loss_sum, target=iql.ImplicitQLearning._update_q),
        Mutant("iql_lr_schedule_not_stepped", "iql", "actor LR cosine schedule not stepped", "actor0 params",
               _iql_schedule_not_stepped, overrides=("base.max_timesteps=100",),
               target=iql.ImplicitQLearning._update_policy),
        Mutant("td3_no_grad_actor0_action", "td3_bc", "no_grad around actor0's action in its loss",
               "actor0 params", _td3_no_grad_actor_action, target=td3_bc.TD3BC._update_actor),
        Mutant("td3_policy_freq_before_increment", "td3_bc", "policy_freq checked before the counter increment",
               "actor0 params", _td3_policy_freq_before_increment, target=td3_bc.TD3BC.train_step),
        Mutant("td3_bc_scaled_by_alpha", "td3_bc", "BC term scaled by alpha", "actor0 losses",
               _td3_bc_scaled_by_alpha, target=td3_bc.TD3BC._update_actor),
        Mutant("td3_actor_target_updated_twice", "td3_bc", "actor target soft-updated twice", "target params",
               _td3_actor_target_twice, target=td3_bc.TD3BC._update_targets),
        Mutant("td3_total_it_incremented_twice", "td3_bc", "total_it incremented twice", "actor0 params",
               _td3_total_it_twice, target=td3_bc.TD3BC.train_step),
        Mutant("td3_critic_updated_twice_on_policy_steps", "td3_bc", "critic updated twice on policy steps",
               "critic params", _td3_critic_twice, target=td3_bc.TD3BC.train_step),
        Mutant("td3_target_without_min", "td3_bc", "critic target uses critic_1's target only (no min)",
               "critic losses", _td3_target_critic1_only, target=td3_bc.TD3BC._critic_targets),
        Mutant("extra_actor_grad_into_critic", "td3_bc", "actor-i energy back-propagates into the critic",
               "grad leak", _extra_actor_grad_into_critic, target=MultiActorTrainer._freeze_base),
        Mutant("cql_policy_loss_after_critic_step", "cql", "CQL policy loss built after the critic step",
               "actor0 losses", _cql_policy_loss_after_critic_step, steps=3, target=cql.ContinuousCQL.train_step),
        Mutant("cql_bc_logprob_zeros", "cql", "CQL BC-phase log-prob replaced by zeros", "actor0 losses",
               _cql_bc_logprob_zeros, overrides=("base.bc_steps=5",), steps=3,
               target=cql.ContinuousCQL._policy_loss),
        Mutant("awac_broadcast", "awac", "AWAC [B,1] x [B] broadcast in the actor loss", "actor0 losses",
               _awac_broadcast, target=awac.AdvantageWeightedActorCritic._actor_loss),
        Mutant("awac_next_action_mean", "awac", "AWAC critic next action = mean instead of a sample",
               "critic losses", _awac_next_action_mean, target=awac.AdvantageWeightedActorCritic._critic_loss),
        Mutant("awac_missing_detach_advantage", "awac", "missing detach on the advantage weights",
               "grad leak", _awac_missing_detach_advantage, target=awac.AdvantageWeightedActorCritic._actor_loss),
        Mutant("sac_n_actor_critic_order_swapped", "sac_n", "SAC-N actor and critic updates swapped",
               "critic losses", _sac_n_order_swapped, steps=3, target=sac_n.SACN.train_step),
        Mutant("edac_diversity_dropped", "edac", "EDAC diversity term dropped from the critic loss",
               "critic losses", _edac_diversity_dropped, steps=3, target=edac.EDAC._critic_loss),
        Mutant("actor1_extra_global_draw", "td3_bc", "actor 1 samples from the global RNG", "rng",
               _actor1_global_draw,
               overrides=("actor_configs=[{type: deterministic}, {type: gaussian}, {type: deterministic}]",),
               target=MultiActorTrainer._update_actors),
        Mutant("actors_built_before_critics", "iql", "extra actors built from the global RNG before the critics",
               "critic params", trainer_cls=ActorsBeforeCritics, target=MultiActorTrainer._construct),
        Mutant("eval_reseeds_global_numpy", "iql", "evaluation reseeds the global numpy RNG", "rng",
               _eval_reseeds_numpy, overrides=("eval_freq=3", "eval_episodes=1"),
               target=MultiActorTrainer._evaluate),
        Mutant("w2_std_term_dropped", "iql", "closed-form W2 without the std term", "chain (W2 oracle)",
               _set_w2(_w2_no_std), overrides=gauss, target=policy_w2),
        Mutant("sinkhorn_half_cost", "iql", "Sinkhorn on the 1/2 |x-y|^2 cost (GeomLoss' raw value)",
               "chain (W2 oracle)", _set_w2(_w2_half_cost), overrides=(*gauss, "w2_method=sinkhorn"),
               target=sinkhorn_divergence),
        Mutant("reference_actor_after_update", "iql", "W2 reference actor taken after its update",
               "chain (W2 oracle)", _reference_after_update, overrides=gauss,
               target=MultiActorTrainer._take_snapshots),
    ]


def catalog(algo: str | None = None) -> list[Mutant]:
    """All mutants (optionally of one algorithm), including the JAX ones when JAX support is present."""
    mutants = _catalog()
    try:
        from checks.mutants_jax import jax_catalog
    except ModuleNotFoundError:
        jax_mutants: list[Mutant] = []
    else:
        jax_mutants = jax_catalog()
    mutants += jax_mutants
    return [m for m in mutants if algo in (None, "all", m.algo)]


def run_mutant(mutant: Mutant, bundle_dir: str | None = None, seed: int = 0, actors: int = 3) -> CheckResult:
    """Run one mutant through the equivalence harness; killed = any observable diverged."""
    from multi_actor.config import build_config

    t0 = time.perf_counter()
    cfg = build_config(None, list(mutant.overrides), algo=mutant.algo, num_actors=actors, seed=seed)
    options = EquivalenceOptions(steps=mutant.steps, seed=seed, self_check=False, full_every=mutant.steps,
                                 bundle_dir=str(Path(bundle_dir) / mutant.name) if bundle_dir else None)
    if mutant.framework == "jax":
        from checks.equivalence_jax import equivalence_for_rebrac

        res = equivalence_for_rebrac(cfg, options, candidate=(f"mutant:{mutant.name}", mutant.factory))
    else:
        res = equivalence_for_algo(mutant.algo, cfg, options, candidate=(f"mutant:{mutant.name}", mutant.factory))
    row = {r["group"]: r["first_divergence_step"] for r in res.details}
    matrix = [{"group": g, "step": row.get(g)} for g in GROUPS if g in row]
    killed = res.verdict == FAIL
    first = res.first_divergence if killed else None
    expected_step = row.get(mutant.expected)
    return CheckResult(
        check="mutants",
        subject=mutant.name,
        verdict=PASS if killed else FAIL,
        steps_compared=res.steps_compared,
        summary=(f"killed at step {first.step} by {first.observable}" if killed else
                 f"survived {res.steps_compared} steps: no observable diverged ({res.summary})"),
        first_divergence=first,
        metrics={
            "algo": mutant.algo,
            "description": mutant.description,
            "expected": mutant.expected,
            "killed": killed,
            "caught_by": first.observable if first else None,
            "caught_group": None if first is None else group_of(first.observable),
            "expected_caught": expected_step is not None,
            "expected_step": expected_step,
            "step": first.step if first else None,
            "location": mutant.location(),
            "bundle": res.metrics.get("bundle"),
            "equivalence_verdict": res.verdict,
        },
        details=matrix,
        seconds=time.perf_counter() - t0,
    )
