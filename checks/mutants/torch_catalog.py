"""The PyTorch mutants: one-line patches of our multi-actor trainer, its adapters and the reference loss functions
they call, each with the observable group expected to catch it."""

from __future__ import annotations

from checks.mutants.model import Mutant, attribute, method_of, on_trainer
from checks.source_patch import SourcePatch
from multi_actor.trainer import MultiActorTrainer


def _lines(*statements: str, indent: int = 8) -> str:
    """Consecutive statements at one indentation, as a multi-line fragment ("" is a blank line)."""
    return "\n".join(f"{' ' * indent}{s}" if s else "" for s in statements).lstrip(" ")


def torch_catalog() -> list[Mutant]:
    from multi_actor import policies, w2
    from reference_algos.torch import awac, cql, edac, iql, sac_n, td3_bc

    gauss = ("actor_configs=[{type: gaussian}, {type: gaussian}, {type: gaussian}]",)
    IQL, TD3, CQL, AWAC = iql.ImplicitQLearning, td3_bc.TD3BC, cql.ContinuousCQL, awac.AdvantageWeightedActorCritic
    critic_step = ("self.critic_1_optimizer.zero_grad()", "self.critic_2_optimizer.zero_grad()",
                   "qf_loss.backward(retain_graph=True)", "self.critic_1_optimizer.step()",
                   "self.critic_2_optimizer.step()")
    actor_step = ("self.actor_optimizer.zero_grad()", "policy_loss.backward()", "self.actor_optimizer.step()")
    sac_actor = "actor_loss_value, actor_batch_entropy, q_policy_std = self._update_actor(state)"
    sac_critic = "critic_loss_value = self._update_critic(state, action, reward, next_state, done)"
    return [
        # ------------------------------------------------------------------------------------------------ IQL
        Mutant("iql_next_v_after_v_update", "iql", "next-state value computed after the value update",
               "critic losses",
               SourcePatch(IQL.train_step, "self._update_q(next_v,", "self._update_q(self.vf(next_observations),")),
        Mutant("iql_adv_after_critic_update", "iql", "advantage recomputed after the critic update",
               "actor0 losses",
               SourcePatch(IQL.train_step, "self._update_policy(adv,",
                           "self._update_policy(self.q_target(observations, actions) - self.vf(observations),")),
        Mutant("iql_rewards_not_squeezed", "iql", "[B,1] rewards added to [B] values (broadcast to [B,B])",
               "critic losses",
               SourcePatch(IQL.train_step, "rewards = rewards.squeeze(dim=-1)", "rewards = rewards"),
               quiet="Using a target size"),
        Mutant("iql_v_loss_online_q", "iql", "value loss against the online Q instead of the target Q",
               "critic losses", SourcePatch(IQL._update_v, "self.q_target(observations", "self.qf(observations")),
        Mutant("iql_q_loss_sum", "iql", "twin-Q loss summed instead of averaged", "critic losses",
               SourcePatch(iql.twin_q_loss, " / len(qs)", ""), via=(IQL._update_q,)),
        Mutant("iql_lr_schedule_not_stepped", "iql", "actor LR cosine schedule not stepped", "optimizer",
               SourcePatch(IQL._update_policy, "self.actor_lr_schedule.step()", "pass"),
               overrides=("base.max_timesteps=100",)),
        # --------------------------------------------------------------------------------------------- TD3+BC
        Mutant("td3_no_grad_actor0_action", "td3_bc", "no_grad around actor0's action in its loss",
               "actor0 params", SourcePatch(TD3._update_actor, "pi = self.actor(state)",
                                            "pi = self.actor(state).detach()")),
        Mutant("td3_policy_freq_before_increment", "td3_bc", "policy_freq checked before the counter increment",
               "actor0 params", SourcePatch(TD3.train_step, "if self.total_it % self.policy_freq == 0:",
                                            "if (self.total_it - 1) % self.policy_freq == 0:")),
        Mutant("td3_bc_scaled_by_alpha", "td3_bc", "BC term scaled by alpha", "actor0 losses",
               SourcePatch(td3_bc.td3_bc_actor_loss, "+ F.mse_loss(pi, actions)",
                           "+ alpha * F.mse_loss(pi, actions)"), via=(TD3._update_actor,)),
        Mutant("td3_actor_target_updated_twice", "td3_bc", "actor target soft-updated twice", "target params",
               SourcePatch(TD3._update_targets, "soft_update(self.actor_target, self.actor, self.tau)",
                           "soft_update(self.actor_target, self.actor, self.tau); "
                           "soft_update(self.actor_target, self.actor, self.tau)")),
        Mutant("td3_total_it_incremented_twice", "td3_bc", "total_it incremented twice", "actor0 params",
               SourcePatch(TD3.train_step, "self.total_it += 1", "self.total_it += 2")),
        Mutant("td3_critic_updated_twice_on_policy_steps", "td3_bc", "critic updated twice on policy steps",
               "critic params", SourcePatch(TD3.train_step, "self._update_actor(state, action, log_dict)",
                                            "self._update_critic(state, action, target_q, {}); "
                                            "self._update_actor(state, action, log_dict)")),
        Mutant("td3_actor_grad_accumulated", "td3_bc", "actor0's gradient never zeroed: each update consumes the sum "
               "of all of them", "gradients used",
               SourcePatch(TD3._update_actor, "self.actor_optimizer.zero_grad()", "pass"), steps=4),
        Mutant("td3_target_without_min", "td3_bc", "critic target uses critic_1's target only (no min)",
               "critic losses",
               SourcePatch(TD3._critic_targets, "target_q = torch.min(target_q1, target_q2)", "target_q = target_q1")),
        Mutant("extra_actor_grad_into_critic", "td3_bc", "actor-i energy back-propagates into the critic",
               "grad leak", SourcePatch(MultiActorTrainer._freeze_base, "frozen(self._base_tensors)",
                                        "frozen(list(self.actor0.parameters()))"),
               install=on_trainer),
        # ------------------------------------------------------------------------------------------------ CQL
        Mutant("cql_policy_loss_after_critic_step", "cql", "CQL policy loss built after the critic step",
               "actor0 losses",
               SourcePatch(CQL.train_step, _lines(*actor_step, "", *critic_step),
                           _lines(*critic_step, "policy_loss = self._policy_loss(observations, actions, new_actions,"
                                  ' alpha, log_pi); log_dict["policy_loss"] = policy_loss.item()', *actor_step),
                           lines=9),
               steps=3),
        Mutant("cql_bc_logprob_zeros", "cql", "CQL BC-phase log-prob replaced by zeros", "actor0 losses",
               SourcePatch(CQL._policy_loss, "self.actor.log_prob(observations, actions)", "torch.zeros_like(log_pi)"),
               overrides=("base.bc_steps=5",), steps=3),
        # ----------------------------------------------------------------------------------------------- AWAC
        Mutant("awac_broadcast", "awac", "AWAC [B,1] x [B] broadcast in the actor loss", "actor0 losses",
               SourcePatch(AWAC._actor_loss, "self.actor.log_prob(states, actions)",
                           "self.actor.log_prob(states, actions).squeeze(-1)")),
        Mutant("awac_next_action_mean", "awac", "AWAC critic next action = mean instead of a sample",
               "critic losses", SourcePatch(AWAC._critic_loss, "next_actions, _ = self.actor(next_states)",
                                            "next_actions = self.actor._get_policy(next_states).mean")),
        Mutant("awac_missing_detach_advantage", "awac", "missing detach on the advantage weights", "grad leak",
               SourcePatch(AWAC._actor_loss, "with torch.no_grad():", "with torch.enable_grad():")),
        # ---------------------------------------------------------------------------------------- SAC-N / EDAC
        Mutant("sac_n_actor_critic_order_swapped", "sac_n", "SAC-N actor and critic updates swapped",
               "critic losses", SourcePatch(sac_n.SACN.train_step, _lines(sac_actor, sac_critic),
                                            _lines(sac_critic, sac_actor), lines=2), steps=3),
        Mutant("edac_diversity_dropped", "edac", "EDAC diversity term dropped from the critic loss",
               "critic losses", SourcePatch(edac.EDAC._critic_loss, " + self.eta * self._critic_diversity_loss("
                                            "state, action)", ""), steps=3),
        # ---------------------------------------------------------------------------------- multi-actor layer
        Mutant("actor1_extra_global_draw", "td3_bc", "actor 1 samples from the global RNG", "rng",
               SourcePatch(policies._DiagonalGaussian.action, "_normal(mean.shape, mean, generator)",
                           "torch.randn_like(mean)"), install=method_of(lambda t: t.actors[0]),
               overrides=("actor_configs=[{type: deterministic}, {type: gaussian}, {type: deterministic}]",)),
        Mutant("actors_built_before_critics", "iql", "extra actors built from the global RNG before the critics",
               "critic params", SourcePatch(MultiActorTrainer._construct, "self.base = self.algorithm.build_base(",
                                            "self.actors = self._build_extra_actors(max_action); "
                                            "self.base = self.algorithm.build_base("), at_construction=True),
        Mutant("batch_rewards_scaled_in_place", "iql", "rewards rescaled in place after the step (the caller's batch "
               "changes under it)", "batch",
               SourcePatch(MultiActorTrainer.step, "self.steps_done += 1", "self.steps_done += 1; batch[2].mul_(2.0)"),
               install=on_trainer, steps=2),
        Mutant("eval_reseeds_global_numpy", "iql", "evaluation reseeds the global numpy RNG", "rng",
               SourcePatch(MultiActorTrainer._evaluate, "return self.evaluator.evaluate(",
                           "np.random.seed(self.config.eval_seed); return self.evaluator.evaluate("),
               install=on_trainer, overrides=("eval_freq=3", "eval_episodes=1")),
        Mutant("evaluate_reseeds_global_numpy", "iql", "evaluate() reseeds the global numpy RNG", "evaluation",
               SourcePatch(MultiActorTrainer.evaluate, "return self.evaluator.evaluate([self.actor0], seed, episodes)",
                           "np.random.seed(seed); return self.evaluator.evaluate([self.actor0], seed, episodes)"),
               install=on_trainer, eval_every=2, steps=3),
        Mutant("evaluate_crashes", "iql", "evaluate() passes actor0 where a list of actors is expected (TypeError)",
               "evaluation",
               SourcePatch(MultiActorTrainer.evaluate, "return self.evaluator.evaluate([self.actor0], seed, episodes)",
                           "return self.evaluator.evaluate(self.actor0, seed, episodes)"),
               install=on_trainer, eval_every=2, steps=3),
        Mutant("w2_std_term_dropped", "iql", "closed-form W2 without the std term", "chain (W2 oracle)",
               SourcePatch(w2.w2_gaussian, " + (std_p - std_q).square().sum(-1)", ""), via=(w2.policy_w2,),
               install=attribute("w2_fn"), overrides=gauss),
        Mutant("sinkhorn_half_cost", "iql", "Sinkhorn on the 1/2 |x-y|^2 cost (GeomLoss' raw value)",
               "chain (W2 oracle)", SourcePatch(w2.sinkhorn_divergence, "value = 2.0 * loss(x, y)",
                                                "value = loss(x, y)"), via=(w2.policy_w2,),
               install=attribute("w2_fn"), overrides=(*gauss, "w2_method=sinkhorn")),
        Mutant("reference_actor_after_update", "iql", "W2 reference actor taken after its update",
               "chain (W2 oracle)",
               SourcePatch(MultiActorTrainer.__init__,
                           "self._snapshot0 = copy.deepcopy(self.actor0).requires_grad_(False) if self.actors "
                           "else None", "self._snapshot0 = self.actor0 if self.actors else None"),
               at_construction=True, overrides=gauss),
    ]
