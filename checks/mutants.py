"""Mutation catalog: realistic bugs injected at run time into our own multi-actor trainer.

Every mutant is a one-line patch of the real code (:class:`checks.source_patch.SourcePatch`): it names a function
and an exact ``old -> new`` fragment of its source; the patched function is compiled from that source, in its own
module, with the real file's line numbers. Nothing is copied: if the code changes so that ``old`` no longer matches,
the mutant fails to build (the run reports an error) instead of running a stale copy. Its location is the mutated
line of the real file.

The patched function reaches one freshly built candidate only; files, modules and the reference trainer in the same
process are untouched. How it is installed (``install``):

- a method of an object of the candidate (the base algorithm, the trainer, one extra actor) is bound on that
  *instance* (``types.MethodType``), after checking that the instance's class really resolves the name to the
  patched function;
- a module-level function shared by reference and candidate (a loss formula, a W2 estimator) is reached through a
  copy of its caller whose globals map the function's name to the mutant (:func:`checks.source_patch.reroute`,
  chain in ``via``, outermost caller first); that copy is what gets installed, so the module keeps its function;
- construction-time bugs (``at_construction``) are methods of a one-off subclass of the trainer.

Each mutant names the observable group expected to catch it. ``pogo-audit mutants`` runs every mutant through the
equivalence harness and reports a kill matrix (mutant × observable group → first step of detection); a mutant that
no observable catches, or that no longer builds, is a failing result.
"""

from __future__ import annotations

import dataclasses
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checks.equivalence import GROUPS, EquivalenceOptions, equivalence_for_algo, group_of
from checks.source_patch import SourceLine, SourcePatch, SourcePatchError, build_together, reroute, resolves_to
from multi_actor.trainer import MultiActorTrainer, evaluator_factory_for, multi_actor_factory
from pogo_audit.results import ERROR, FAIL, PASS, CheckResult

#: how a mutant reaches the candidate: ``install(candidate, original, replacement)``
Install = Callable[[Any, Callable[..., Any], Callable[..., Any]], None]


def method_of(owner: Callable[[Any], Any]) -> Install:
    """Bind the replacement on the instance ``owner(candidate)`` under the original's name."""

    def install(candidate: Any, original: Callable[..., Any], replacement: Callable[..., Any]) -> None:
        obj = owner(candidate)
        name = original.__name__
        if not resolves_to(obj, name, original):
            raise SourcePatchError(f"{type(obj).__qualname__}.{name} is not {original.__qualname__}: the patch "
                                   "would not reach the code the candidate runs")
        setattr(obj, name, types.MethodType(replacement, obj))

    return install


def attribute(name: str) -> Install:
    """Replace the candidate's attribute ``name`` (which must hold the original function)."""

    def install(candidate: Any, original: Callable[..., Any], replacement: Callable[..., Any]) -> None:
        if getattr(candidate, name) is not original:
            raise SourcePatchError(f"candidate.{name} is not {original.__qualname__}: the patch would not reach "
                                   "the code the candidate runs")
        setattr(candidate, name, replacement)

    return install


on_base = method_of(lambda t: t.base)
on_trainer = method_of(lambda t: t)


@dataclass(frozen=True)
class Behaviour:
    """A mutant that is not a source edit of our code: ``replacement`` is installed where ``original`` was, and
    ``marks`` is the real line whose behaviour it replaces (its location). ``why`` says why no one-line patch
    expresses the bug."""

    original: Callable[..., Any]
    replacement: Callable[..., Any]
    marks: SourceLine
    why: str


@dataclass(frozen=True)
class Mutant:
    """One catalogued bug: ``patch`` (the one-line edit, or a :class:`Behaviour`), reached through ``via`` and
    installed on the candidate by ``install`` (or on a subclass, ``at_construction``); ``expected`` is the
    observable group that must catch it within ``steps`` steps of the config ``overrides``; ``quiet`` is a regex of
    a warning message the bug itself raises (silenced while the mutant runs). A bug harmless to training (a ``.grad``
    left behind but zeroed before any optimizer consumes it) is caught by a hygiene warning of its expected group."""

    name: str
    algo: str
    description: str
    expected: str
    patch: SourcePatch | Behaviour
    install: Install = on_base
    via: tuple[Callable[..., Any], ...] = ()
    at_construction: bool = False
    overrides: tuple[str, ...] = ()
    steps: int = 6
    framework: str = "torch"
    base_factory: Callable[..., Any] | None = None
    quiet: str | None = None
    #: run the evaluation audit every K steps (``equivalence --eval-every K``; 0: off) for a bug in ``evaluate``
    eval_every: int = 0

    def resolve(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """``(original, replacement)``: the function the candidate runs and what replaces it. Raises
        :class:`SourcePatchError` when the patch no longer applies."""
        ((_, original, replacement),) = resolve_together([self])
        return original, replacement

    def factory(self, config: Any, dataset_spec: Any, seed: int) -> Any:
        """Build the candidate (``base_factory``, default the PyTorch multi-actor trainer) with the bug installed."""
        original, replacement = self.resolve()
        if self.at_construction:
            if not resolves_to(MultiActorTrainer, original.__name__, original):
                raise SourcePatchError(f"MultiActorTrainer.{original.__name__} is not {original.__qualname__}")
            cls = type(f"MultiActorTrainer[{self.name}]", (MultiActorTrainer,), {original.__name__: replacement})
            return cls(config, dataset_spec, seed, evaluator_factory_for(config, dataset_spec))
        trainer = (self.base_factory or multi_actor_factory)(config, dataset_spec, seed)
        self.install(trainer, original, replacement)
        return trainer

    def location(self) -> dict[str, Any]:
        """The mutated line of the real file: ``path`` (repository-relative), ``line`` (1-based), ``function``,
        ``original`` and ``mutated`` line text (``mutated`` None for a behavioural mutant)."""
        if isinstance(self.patch, Behaviour):
            return self.patch.marks.location().as_dict()
        return self.patch.build().location.as_dict()


def _lines(*statements: str, indent: int = 8) -> str:
    """Consecutive statements at one indentation, as a multi-line fragment ("" is a blank line)."""
    return "\n".join(f"{' ' * indent}{s}" if s else "" for s in statements).lstrip(" ")


def _catalog() -> list[Mutant]:
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


def resolve_together(mutants: list[Mutant]) -> list[tuple[Install, Callable[..., Any], Callable[..., Any]]]:
    """How several mutants reach one candidate together: ``(install, original, replacement)`` per distinct code
    path the candidate runs (one per outermost function reached).

    Patches of one function are compiled into one function (:func:`checks.source_patch.build_together`); every
    caller on a ``via`` chain is rerouted to the final version of its callee, so a mutant deep in the call chain and
    one in its caller both run (e.g. two bugs in ``rebrac.update`` and ``update_actor`` under one patched
    ``loop_body``). A :class:`Behaviour` replaces its function whole and cannot share it with another mutant.
    Raises :class:`SourcePatchError` when the mutants cannot be combined (overlapping lines, a shared behaviour)."""
    patches: dict[Callable[..., Any], list[SourcePatch]] = {}
    calls: dict[Callable[..., Any], list[Callable[..., Any]]] = {}
    behaviours: dict[Callable[..., Any], Callable[..., Any]] = {}
    roots: dict[Callable[..., Any], Install] = {}
    for m in mutants:
        if isinstance(m.patch, Behaviour):
            if m.patch.original in behaviours or m.patch.original in roots:
                raise SourcePatchError(f"{m.name}: replaces {m.patch.original.__qualname__} whole, which another "
                                       "mutant of the combination also changes")
            behaviours[m.patch.original] = m.patch.replacement
            roots[m.patch.original] = m.install
            continue
        chain = (*m.via, m.patch.target)
        patches.setdefault(m.patch.target, []).append(m.patch)
        for caller, callee in zip(chain, chain[1:]):
            if callee not in calls.setdefault(caller, []):
                calls[caller].append(callee)
        roots.setdefault(chain[0], m.install)
    if set(behaviours) & (set(patches) | set(calls)):
        raise SourcePatchError("a behavioural mutant replaces a function another mutant of the combination patches")
    final: dict[Callable[..., Any], Callable[..., Any]] = dict(behaviours)

    def version(fn: Callable[..., Any]) -> Callable[..., Any]:
        if fn not in final:
            built = build_together(patches[fn])[0] if fn in patches else fn
            for callee in calls.get(fn, []):
                replacement = version(callee)
                if replacement is not callee:
                    built = reroute(built, callee, replacement)
            final[fn] = built
        return final[fn]

    return [(install, root, version(root)) for root, install in roots.items()]


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


def _unbuildable(mutant: Mutant, exc: SourcePatchError, seconds: float) -> CheckResult:
    return CheckResult(
        check="mutants", subject=mutant.name, verdict=ERROR, steps_compared=0,
        summary=f"mutant does not build: {exc}",
        metrics={"algo": mutant.algo, "description": mutant.description, "expected": mutant.expected,
                 "killed": False, "caught_by": None, "caught_group": None, "expected_caught": False,
                 "expected_step": None, "step": None, "location": None, "bundle": None, "equivalence_verdict": None},
        seconds=seconds)


def run_mutant(mutant: Mutant, bundle_dir: str | None = None, seed: int = 0, actors: int = 3) -> CheckResult:
    """Run one mutant through the equivalence harness; killed = any observable diverged. A mutant whose patch no
    longer applies to the source is an ``error`` result (never run as a stale copy)."""
    from multi_actor.config import build_config

    t0 = time.perf_counter()
    try:
        location = mutant.location()
        mutant.resolve()
    except SourcePatchError as exc:
        return _unbuildable(mutant, exc, time.perf_counter() - t0)
    cfg = build_config(None, list(mutant.overrides), algo=mutant.algo, num_actors=actors, seed=seed)
    options = EquivalenceOptions(steps=mutant.steps, seed=seed, self_check=False, full_every=mutant.steps,
                                 bundle_dir=str(Path(bundle_dir) / mutant.name) if bundle_dir else None,
                                 eval_every=mutant.eval_every)
    with warnings.catch_warnings():
        if mutant.quiet:
            warnings.filterwarnings("ignore", message=mutant.quiet)
        if mutant.framework == "jax":
            from checks.equivalence_jax import equivalence_for_rebrac

            res = equivalence_for_rebrac(cfg, options, candidate=(f"mutant:{mutant.name}", mutant.factory))
        else:
            res = equivalence_for_algo(mutant.algo, cfg, options,
                                       candidate=(f"mutant:{mutant.name}", mutant.factory))
    row = {r["group"]: r["first_divergence_step"] for r in res.details}
    matrix = [{"group": g, "step": row.get(g)} for g in GROUPS if g in row]
    warned = [w for w in res.metrics.get("warnings", []) if w["group"] == mutant.expected]
    killed = res.verdict == FAIL or bool(warned)
    first = res.first_divergence if res.verdict == FAIL else None
    expected_step = row.get(mutant.expected)
    return CheckResult(
        check="mutants",
        subject=mutant.name,
        verdict=PASS if killed else FAIL,
        steps_compared=res.steps_compared,
        summary=(f"killed at step {first.step} by {first.observable}" if first else
                 f"caught at step {warned[0]['step']} by a warning on {warned[0]['observable']}" if warned else
                 f"survived {res.steps_compared} steps: no observable diverged ({res.summary})"),
        first_divergence=first,
        metrics={
            "algo": mutant.algo,
            "description": mutant.description,
            "expected": mutant.expected,
            "killed": killed,
            "caught_by": first.observable if first else warned[0]["observable"] if warned else None,
            "caught_group": group_of(first.observable) if first else mutant.expected if warned else None,
            "expected_caught": expected_step is not None,
            "expected_step": expected_step,
            "step": first.step if first else warned[0]["step"] if warned else None,
            "location": location,
            "bundle": res.metrics.get("bundle"),
            "equivalence_verdict": res.verdict,
        },
        details=matrix,
        seconds=time.perf_counter() - t0,
    )


def _selected(args: Any) -> list[Mutant]:
    from pogo_audit.errors import UsageError

    mutants = catalog(args.algo)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m.name for m in mutants}
        if unknown:
            raise UsageError(f"--only: unknown mutant(s) {', '.join(sorted(unknown))}; see pogo-audit mutants --list")
        mutants = [m for m in mutants if m.name in wanted]
    return mutants


def listing(args: Any) -> Any:
    """``pogo-audit mutants --list``: the selected catalog as a table."""
    from checks.registry import Listing

    mutants = _selected(args)
    return Listing(f"{len(mutants)} mutants", ("mutant", "algo", "bug", "expected observable"),
                   [(m.name, m.algo, m.description, m.expected) for m in mutants])


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[CheckResult]:
    """``pogo-audit mutants``: each selected mutant through the harness (on ``--device`` when given)."""
    from pogo_audit.errors import UsageError

    if getattr(args, "localise", False):
        from checks.localise.measure import localise_command

        yield from localise_command(args, progress)
        return
    mutants = _selected(args)
    if not mutants:
        raise UsageError(f"--algo: no mutants for {args.algo!r}")
    if args.device:
        mutants = [dataclasses.replace(m, overrides=(*m.overrides, f"device={args.device}")) for m in mutants]
    for i, m in enumerate(mutants):
        progress(f"mutant {m.name}", i, len(mutants))
        yield run_mutant(m, bundle_dir=args.bundle_dir, seed=args.seed)


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: every mutant of the audited algorithms (our own multi-actor trainer)."""
    out = []
    for m in catalog():
        if m.algo in opts.algos:
            if opts.device != "cpu" and m.framework == "torch":
                m = dataclasses.replace(m, overrides=(*m.overrides, f"device={opts.device}"))
            say(f"mutant {m.name}")
            out.append(run_mutant(m, bundle_dir=str(Path(opts.bundle_dir) / "mutants"), seed=opts.seed))
    return out
