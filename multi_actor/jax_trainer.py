"""POGO multi-actor ReBRAC in JAX, and the Trainer-protocol view of the JAX ReBRAC reference.

:class:`MultiActorReBRAC` holds exactly the reference ReBRAC state — ``key``, ``actor`` (= actor0) and ``critic``
TrainStates built by :class:`reference_algos.jax.rebrac.ReBRAC` itself — plus actors 1..N-1. One update (the body
shared by :meth:`MultiActorReBRAC.step` and :meth:`MultiActorReBRAC.train_epoch`):

1. remember the start-of-update parameters of every actor (the reference of actor i is actor i-1 *as it was
   here*: a snapshot, hence independent of the update order and batchable);
2. run the reference's own ``rebrac.loop_body`` (split off the batch key, get the batch, ``rebrac.update``: critic,
   and on full updates actor0 + soft targets) — the same code, key splits and ``lax.cond`` as the reference, so
   actor0, critic, targets and key chain stay bitwise identical to ``reference_algos.jax.rebrac``;
3. on full updates (the same flag), each actor i >= 1 takes one Adam step on
   ``energy_i + w_i * W2^2(pi_i, snapshot_{i-1})`` where ``energy`` is ReBRAC's actor objective
   (``rebrac.actor_loss(bc_penalty, min-ensemble Q, q_lambda, actor_bc_coef)``) evaluated on actor i against the
   *updated* critic (parameters behind ``stop_gradient``), or ``q`` (``-mean Q`` normalised by a detached
   ``mean |Q|``). Actors of one (type, sizes, energy, lr, W2 pair kind) group are stacked and updated with one
   ``jax.vmap``. Their random draws come from their own key chain (``pogo_audit.runtime.seeding`` offsets of the seed),
   never from the reference key.

Compilation: the jitted step and epoch functions are built lazily, at first use, from the instance attributes
``loop_body_fn``, ``flags_fn``, ``energy_fn``, ``w2_fn`` and ``actor_update_fn`` — a mutant replaces one attribute on
one instance before the first call. The in-epoch update index is carried on device (``state.step``), so the whole
training state lives on the device and the epoch is one jitted ``lax.fori_loop`` over the shared update body, with
the buffer an argument (never closed over: new buffer contents never retrace).

One device->host transfer per epoch: the epoch function returns ``(state, metrics)``; the state is kept on the
device as ``self.state``, and :meth:`train_epoch` fetches the metrics pytree with exactly one call of
:meth:`_to_host` (``jax.device_get``), the only place where the epoch path moves data to the host. The jitted code
has no host callbacks (``tests/test_jax_trainer.py`` checks both).

ReBRAC's actor has no ``max_action`` (outputs in (-1, 1), target actions clipped to [-1, 1]); extra actors use
``max_action = 1`` so that every actor of the chain lives in the same action box.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

from multi_actor import w2_jax
from multi_actor.jax_policies import Actor0Policy, MLPPolicy, build_policy
from multi_actor.config import MultiActorConfig
from pogo_audit.runtime.data import DatasetSpec
from pogo_audit.runtime.seeding import ACTOR_INIT_OFFSET, ACTOR_SAMPLING_OFFSET, derived_seed
from reference_algos.jax import rebrac


#: ReBRAC metric key -> canonical observable
CANONICAL = {
    "critic_loss": "critic/critic_loss",
    "q_min": "critic/q_min",
    "actor_loss": "actor0/loss",
    "batch_entropy": "actor0/batch_entropy",
    "bc_mse_policy": "actor0/bc_mse_policy",
    "bc_mse_random": "actor0/bc_mse_random",
    "action_mse": "actor0/action_mse",
}
#: ReBRAC module (golden name prefix) -> canonical role
ROLES = {"actor": "actor0", "critic": "critic", "actor_target": "target", "critic_target": "target"}
EXTRA_METRICS = ("loss", "energy", "w2")


def rebrac_config(config: MultiActorConfig, seed: int) -> rebrac.Config:
    """The reference Config: CORL defaults, ``config.base`` overrides, ``train_seed = seed``, and ``batch_size`` from
    ``config.batch_size`` when set (as the training loop's batches)."""
    overrides = {**config.base, "train_seed": int(seed)}
    if config.batch_size is not None:
        overrides["batch_size"] = int(config.batch_size)
    return dataclasses.replace(rebrac.Config(), **overrides)


def key_from_seed(seed: int) -> jax.Array:
    """A legacy ``uint32[2]`` threefry key from a seed of up to 64 bits (``PRNGKey`` keeps 32 bits without x64)."""
    seed = int(seed) % 2**64
    return jnp.asarray(np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32))


def key_digest(key: Any) -> str:
    """sha256 (hex, first 16 chars) of a key's raw data."""
    return hashlib.sha256(np.asarray(jax.device_get(key)).tobytes()).hexdigest()[:16]


def canonical_metrics(acc: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Host accumulators -> ``{canonical name: sum / count}`` for the keys written at least once."""
    return {CANONICAL.get(k, k): float(np.asarray(s / n).reshape(-1)[0]) for k, (s, n) in acc.items()
            if np.asarray(n).reshape(-1)[0] > 0}


def canonical_base_parameters(base: rebrac.ReBRAC) -> dict[str, np.ndarray]:
    """``critic/critic/params/...``, ``actor0/actor/params/...``, ``target/{actor,critic}_target/params/...``."""
    return {f"{ROLES[k.split('/', 1)[0]]}/{k}": v for k, v in base.export_parameters().items()}


def adam_state(base: rebrac.ReBRAC) -> dict[str, dict[str, Any]]:
    """Canonical parameter -> its optax Adam state (``step``: the count, ``exp_avg``: ``mu``, ``exp_avg_sq``:
    ``nu``) for actor0 and the critic ensemble: what the harness digests per parameter (``optim/*``)."""
    out: dict[str, dict[str, Any]] = {}
    for module, ts in (("actor", base.actor), ("critic", base.critic)):
        adam = next(s for s in jax.tree_util.tree_leaves(jax.device_get(ts.opt_state),
                                                          is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
                    if isinstance(s, optax.ScaleByAdamState))
        mu = traverse_util.flatten_dict(adam.mu, sep="/")
        nu = traverse_util.flatten_dict(adam.nu, sep="/")
        for k in mu:
            out[f"{ROLES[module]}/{module}/{k}"] = {"step": int(np.asarray(adam.count)), "exp_avg": np.asarray(mu[k]),
                                                    "exp_avg_sq": np.asarray(nu[k])}
    return out


def golden_from_canonical(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical base names back to the reference's golden names (other roles dropped)."""
    out = {}
    for k, v in params.items():
        role, _, rest = k.partition("/")
        if role in ("critic", "actor0", "target") and rest.split("/", 1)[0] in ROLES:
            out[rest] = v
    return out


_INTERNED: dict[tuple, Any] = {}


def interned_adam(lr: float) -> optax.GradientTransformation:
    """One ``optax.adam(lr)`` object per learning rate in the process."""
    return _INTERNED.setdefault(("adam", float(lr)), optax.adam(learning_rate=lr))


def interned_apply(module: nn.Module) -> Callable[..., Any]:
    """One bound ``module.apply`` per equal module definition in the process."""
    return _INTERNED.setdefault(("apply", module), module.apply)


def intern_static(ts: Any, lr: float) -> Any:
    """``ts`` with its static fields (``apply_fn``, ``tx``) replaced by equal, process-wide shared objects.

    The values are unchanged (same module definition, same ``optax.adam(lr)``), but jit caches compare static
    fields by identity (bound methods, optax closures): interning lets trainers with equal configs share compiled
    functions instead of compiling once per instance.
    """
    return ts.replace(apply_fn=interned_apply(ts.apply_fn.__self__), tx=interned_adam(lr))


# ------------------------------------------------------------------------------------------ update state (isolation)


def update_state(key: jax.Array, actor: rebrac.TrainState, critic: rebrac.TrainState, updates: int) -> dict[str, Any]:
    """What one ReBRAC update starts from: the key chain, actor0's and the critic's TrainStates (online and target
    parameters, optax state, step count) and the update counter (the in-epoch index is ``updates % n``)."""
    return {"key": key, "actor": actor, "critic": critic, "updates": int(updates)}


def synced_train_state(own: rebrac.TrainState, given: rebrac.TrainState) -> rebrac.TrainState:
    """``own`` with ``given``'s arrays (parameters, targets, optimizer state, step); its own ``apply_fn`` and ``tx``
    are kept, so a candidate's network or optimizer definition is never replaced by the reference's."""
    if jax.tree.structure(own.opt_state) != jax.tree.structure(given.opt_state):
        raise ValueError("optimizer states differ in structure: the reference's optax state cannot be loaded")
    return own.replace(params=given.params, target_params=given.target_params, opt_state=given.opt_state,
                       step=given.step)


def loop_body_update(loop_body: Callable[..., Any], state: Mapping[str, Any], batch: Mapping[str, Any],
                     cfg: rebrac.Config, full: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """A ReBRAC loop body as a function of traceable arguments ``(key, actor, critic, metrics, full_update)`` on
    ``batch`` (closed over), and those arguments from ``state`` (:func:`update_state`)."""
    jbatch = {k: jnp.asarray(batch[k], jnp.float32) for k in rebrac.BATCH_KEYS}

    def critic_actor0_update(key: jax.Array, actor: rebrac.TrainState, critic: rebrac.TrainState,
                             metrics: rebrac.Metrics, full_update: jax.Array) -> Any:
        return loop_body(key, actor, critic, metrics, full_update, lambda _batch_key: jbatch, cfg)

    return critic_actor0_update, (state["key"], state["actor"], state["critic"],
                                  rebrac.Metrics.create(rebrac.METRIC_KEYS), jnp.asarray(full, jnp.int32))


# ----------------------------------------------------------------------------------------------------- policies


# ----------------------------------------------------------------------------------------------------- pieces


def full_update_flags(cfg: rebrac.Config, start: jax.Array, n: int) -> jax.Array:
    """CORL's ``delayed_updates`` at the in-epoch indices ``(start + j) % num_updates_on_epoch``, j < n (int32)."""
    schedule = rebrac.delayed_updates(cfg.num_updates_on_epoch, cfg.policy_freq)
    return schedule[(start + jnp.arange(n)) % cfg.num_updates_on_epoch]


def rebrac_energy(kind: str, policy: Any, params: Any, batch: rebrac.Batch, critic: rebrac.TrainState,
                  key: jax.Array, cfg: rebrac.Config) -> jax.Array:
    """Energy of an extra actor against the (updated, frozen) critic.

    ``base``: ReBRAC's actor objective on this actor's (sampled) actions — the reference's own ``bc_penalty``,
    ``q_lambda`` and ``actor_loss``; ``q``: ``-mean(Q) / stop_gradient(mean |Q|)``.
    """
    obs = batch["states"]
    actions = policy.action(params, obs, key)
    q = critic.apply_fn(jax.lax.stop_gradient(critic.params), obs, actions).min(0)
    if kind == "base":
        bc = rebrac.bc_penalty(actions, batch["actions"])
        return rebrac.actor_loss(bc, q, rebrac.q_lambda(q, cfg.normalize_q), cfg.actor_bc_coef)
    if kind == "q":
        return -(rebrac.q_lambda(q, True) * q).mean()
    raise ValueError(f"energy {kind!r} is not defined for rebrac (base or q)")


@dataclasses.dataclass(frozen=True)
class ActorGroup:
    """Extra actors updated together by one ``vmap``: same policy (type and sizes), energy, lr and W2 pair kind."""

    policy: MLPPolicy
    energy: str
    lr: float
    kind: str
    members: tuple[int, ...]


def extra_actors_update(group: ActorGroup, state: train_state.TrainState, refs: Any, weights: jax.Array,
                        keys: jax.Array, batch: rebrac.Batch, critic: rebrac.TrainState, *, cfg: rebrac.Config,
                        energy_fn: Callable[..., jax.Array], w2_fn: Callable[..., jax.Array], w2_samples: int,
                        epsilon: float) -> tuple[train_state.TrainState, tuple[jax.Array, jax.Array, jax.Array]]:
    """One Adam step of every member of ``group`` (stacked state, leading axis = member), vmapped.

    Member j minimises ``energy + weights[j] * W2^2(pi_j, refs[j])`` with its own key ``keys[j]``; returns the new
    stacked state and ``(loss, energy, w2)``, each ``[G]``.
    """

    def one(s: train_state.TrainState, ref: Any, w: jax.Array, key: jax.Array):
        energy_key, w2_key = jax.random.split(key)

        def loss_fn(params: Any):
            energy = energy_fn(group.energy, group.policy, params, batch, critic, energy_key, cfg)
            w2 = w2_fn(group.kind, group.policy, params, batch["states"], ref, w2_samples, epsilon, w2_key)
            return energy + w * w2, (energy, w2)

        (loss, (energy, w2)), grads = jax.value_and_grad(loss_fn, has_aux=True)(s.params)
        return s.apply_gradients(grads=grads), (loss, energy, w2)

    return jax.vmap(one)(state, refs, weights, keys)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _init_group(policy: MLPPolicy, lr: float, state_dim: int, keys: jax.Array) -> train_state.TrainState:
    """Stacked TrainState of a group: member j initialised from ``keys[j]`` (one compiled program per group kind)."""
    tx, apply = interned_adam(lr), interned_apply(policy.net)
    return jax.vmap(lambda key: train_state.TrainState.create(apply_fn=apply, params=policy.init(key, state_dim),
                                                              tx=tx))(keys)


class State(NamedTuple):
    """Everything that changes during training; lives on the device."""

    key: jax.Array  # the reference key chain
    actor: rebrac.TrainState  # actor0 (+ its target)
    critic: rebrac.TrainState  # critic ensemble (+ its target)
    extras: tuple[train_state.TrainState, ...]  # one stacked TrainState per ActorGroup
    actor_key: jax.Array  # the extra actors' own key chain
    step: jax.Array  # updates done (int32); the in-epoch index is step % num_updates_on_epoch


# ----------------------------------------------------------------------------------------------------- trainer

_MULTI_ACTOR_FNS: dict[tuple, Callable[..., Any]] = {}


class MultiActorReBRAC:
    """POGO on JAX ReBRAC; see the module docstring for the update semantics."""

    def __init__(self, config: MultiActorConfig, spec: DatasetSpec, seed: int):
        cfg = config.resolved()
        if cfg.algo != "rebrac":
            raise ValueError(f"MultiActorReBRAC trains rebrac, got algo={cfg.algo!r}")
        self.config = cfg
        self.spec = spec
        self.seed = int(seed)
        self.rebrac_cfg = rebrac_config(cfg, seed)
        self.base = rebrac.ReBRAC(self.rebrac_cfg, spec.state_dim, spec.action_dim)
        self.base.actor = intern_static(self.base.actor, self.rebrac_cfg.actor_learning_rate)
        self.base.critic = intern_static(self.base.critic, self.rebrac_cfg.critic_learning_rate)
        self.actor0 = Actor0Policy(rebrac.DetActor(action_dim=spec.action_dim, hidden_dim=self.rebrac_cfg.hidden_dim,
                                                   layernorm=self.rebrac_cfg.actor_ln,
                                                   n_hiddens=self.rebrac_cfg.actor_n_hiddens))
        self.policies_: list[Any] = [self.actor0] + [
            build_policy(a.type, spec.action_dim, a.hidden_dim, a.n_hidden) for a in cfg.actor_configs[1:]]
        self.kinds = [None] + [
            w2_jax.pair_method((p.stochastic, p.gaussian), (q.stochastic, q.gaussian), cfg.w2_method)
            for p, q in zip(self.policies_[1:], self.policies_[:-1])]
        self.groups = self._make_groups()
        self.location = {i: (g, j) for g, group in enumerate(self.groups) for j, i in enumerate(group.members)}
        self.metric_keys = tuple(rebrac.METRIC_KEYS) + tuple(
            f"actor{i}/{m}" for i in range(1, cfg.num_actors) for m in EXTRA_METRICS)
        self.state = State(self.base.key, self.base.actor, self.base.critic, self._init_extras(),
                           key_from_seed(derived_seed(seed, ACTOR_SAMPLING_OFFSET)), jnp.zeros((), jnp.int32))
        self.steps_done = 0

        # the pieces the jitted functions are built from (at first use): a mutant replaces one of them
        self.loop_body_fn: Callable[..., Any] = rebrac.loop_body
        self.flags_fn: Callable[..., jax.Array] = full_update_flags
        self.energy_fn: Callable[..., jax.Array] = rebrac_energy
        self.w2_fn: Callable[..., jax.Array] = w2_jax.policy_w2
        self.actor_update_fn: Callable[..., Any] = extra_actors_update
        self._jitted: dict[str, Callable[..., Any]] = {}
        self._act_fns: dict[int, Callable[..., Any]] = {}

    # construction --------------------------------------------------------------------------------------------
    def _make_groups(self) -> list[ActorGroup]:
        default_lr = self.rebrac_cfg.actor_learning_rate
        order: dict[tuple, list[int]] = {}
        for i in range(1, self.config.num_actors):
            a = self.config.actor_configs[i]
            lr = float(a.lr if a.lr is not None else default_lr)
            order.setdefault((self.policies_[i], a.energy, lr, self.kinds[i]), []).append(i)
        return [ActorGroup(policy, energy, lr, kind, tuple(members))
                for (policy, energy, lr, kind), members in order.items()]

    def _init_extras(self) -> tuple[train_state.TrainState, ...]:
        """Actor i's parameters from its own init key (``split(init_key, num_actors)[i]``); stacked per group."""
        keys = jax.random.split(key_from_seed(derived_seed(self.seed, ACTOR_INIT_OFFSET)), self.config.num_actors)
        return tuple(_init_group(g.policy, g.lr, self.spec.state_dim, keys[np.asarray(g.members)])
                     for g in self.groups)

    # the update body shared by step and epoch -----------------------------------------------------------------
    def _build_inputs(self) -> dict[str, Any]:
        """Everything the jitted functions are built from (hashable but ``cfg``): the key of the compile cache."""
        mcfg = self.config
        return {
            "cfg": dataclasses.replace(self.rebrac_cfg, train_seed=0),
            "groups": tuple(self.groups),
            "location": tuple(sorted(self.location.items())),
            "policies": tuple(self.policies_),
            "kinds": tuple(self.kinds),
            "weights": tuple(float(w) for w in mcfg.w2_weights),
            "w2_samples": int(mcfg.w2_samples),
            "epsilon": float(mcfg.sinkhorn_epsilon),
            "metric_keys": self.metric_keys,
            "loop_body_fn": self.loop_body_fn,
            "flags_fn": self.flags_fn,
            "energy_fn": self.energy_fn,
            "w2_fn": self.w2_fn,
            "actor_update_fn": self.actor_update_fn,
        }

    @staticmethod
    def _build_update(inputs: Mapping[str, Any]) -> Callable[[State, rebrac.Metrics, Callable],
                                                                tuple[State, rebrac.Metrics]]:
        """The update body shared by the step and the epoch function (see the module docstring)."""
        cfg = inputs["cfg"]
        groups, policies, kinds = inputs["groups"], inputs["policies"], inputs["kinds"]
        location = dict(inputs["location"])
        loop_body, flags_fn = inputs["loop_body_fn"], inputs["flags_fn"]
        w2_samples = inputs["w2_samples"]
        actor_update = partial(inputs["actor_update_fn"], cfg=cfg, energy_fn=inputs["energy_fn"],
                               w2_fn=inputs["w2_fn"], w2_samples=w2_samples, epsilon=inputs["epsilon"])
        weights = [np.asarray([inputs["weights"][i - 1] for i in g.members], np.float32) for g in groups]
        n_actors = len(policies)

        def start_params(i: int, actor0_params: Any, extras: tuple) -> Any:
            if i == 0:
                return actor0_params
            g, j = location[i]
            return jax.tree.map(lambda x: x[j], extras[g].params)

        def train_extras(extras: tuple, metrics: rebrac.Metrics, actor0_start: Any, critic: rebrac.TrainState,
                         batch: rebrac.Batch, key: jax.Array) -> tuple[tuple, rebrac.Metrics]:
            member_keys = jax.random.split(key, n_actors)
            obs = batch["states"]
            new_extras, logs = [], {}
            for g, (group, gstate) in enumerate(zip(groups, extras)):
                refs, own_keys = [], []
                for i in group.members:
                    ref_key, own_key = jax.random.split(member_keys[i])
                    ref_params = start_params(i - 1, actor0_start, extras)
                    refs.append(w2_jax.reference_outputs(kinds[i], group.policy.stochastic, policies[i - 1],
                                                         ref_params, obs, w2_samples, ref_key))
                    own_keys.append(own_key)
                refs = jax.tree.map(lambda *xs: jnp.stack(xs), *refs)
                new_state, (loss, energy, w2) = actor_update(group, gstate, refs, jnp.asarray(weights[g]),
                                                             jnp.stack(own_keys), batch, critic)
                new_extras.append(new_state)
                for j, i in enumerate(group.members):
                    logs.update({f"actor{i}/loss": loss[j], f"actor{i}/energy": energy[j], f"actor{i}/w2": w2[j]})
            return tuple(new_extras), metrics.update(logs)

        def update(state: State, metrics: rebrac.Metrics,
                   get_batch: Callable[[jax.Array], rebrac.Batch]) -> tuple[State, rebrac.Metrics]:
            full = flags_fn(cfg, state.step, 1)[0]
            seen: list[rebrac.Batch] = []

            def tapped_get_batch(batch_key: jax.Array) -> rebrac.Batch:
                seen.append(get_batch(batch_key))
                return seen[-1]

            # 1-2: the reference update, untouched; the snapshots are its inputs state.actor.params / state.extras
            key, actor, critic, metrics = loop_body(state.key, state.actor, state.critic, metrics, full,
                                                    tapped_get_batch, cfg)
            extras = state.extras
            actor_key, step_key = jax.random.split(state.actor_key)
            if groups:  # 3: the extra actors, on full updates only
                batch = seen[-1]
                extras, metrics = jax.lax.cond(
                    full,
                    lambda ex, m: train_extras(ex, m, state.actor.params, critic, batch, step_key),
                    lambda ex, m: (ex, m),
                    extras, metrics)
            return State(key, actor, critic, extras, actor_key, state.step + 1), metrics

        return update

    @staticmethod
    def _build_jitted(name: str, inputs: Mapping[str, Any]) -> Callable[..., Any]:
        update = MultiActorReBRAC._build_update(inputs)
        cfg, keys = inputs["cfg"], inputs["metric_keys"]

        def multi_actor_rebrac_step(state: State, batch: rebrac.Batch) -> tuple[State, rebrac.Metrics]:
            return update(state, rebrac.Metrics.create(keys), lambda _batch_key: batch)

        def multi_actor_rebrac_epoch(state: State, buffer: rebrac.Batch) -> tuple[State, rebrac.Metrics]:
            get_batch = partial(rebrac.sample_batch, buffer, batch_size=cfg.batch_size)
            return jax.lax.fori_loop(0, cfg.num_updates_on_epoch, lambda _, c: update(c[0], c[1], get_batch),
                                     (state, rebrac.Metrics.create(keys)))

        return jax.jit({"step": multi_actor_rebrac_step, "epoch": multi_actor_rebrac_epoch}[name])

    def _compiled(self, name: str) -> Callable[..., Any]:
        """The jitted step / epoch function, built from the current attributes at first use and then reused.

        Built functions are shared (process-wide) between trainers whose build inputs are equal, so equal configs
        compile once; a patched attribute is part of the inputs, hence gets its own function.
        """
        if name not in self._jitted:
            inputs = self._build_inputs()
            key = (name, dataclasses.astuple(inputs["cfg"]), tuple((k, v) for k, v in inputs.items() if k != "cfg"))
            if key not in _MULTI_ACTOR_FNS:
                _MULTI_ACTOR_FNS[key] = self._build_jitted(name, inputs)
            self._jitted[name] = _MULTI_ACTOR_FNS[key]
        return self._jitted[name]

    def _to_host(self, tree: Any) -> Any:
        """The single device->host transfer point of the training paths (one call per step / per epoch)."""
        return jax.device_get(tree)

    # training ------------------------------------------------------------------------------------------------
    def step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One update on ``batch`` (dict of numpy arrays, CORL layout); that update's canonical observables."""
        jbatch = {k: jnp.asarray(batch[k], jnp.float32) for k in rebrac.BATCH_KEYS}
        self.state, metrics = self._compiled("step")(self.state, jbatch)
        self.steps_done += 1
        return canonical_metrics(self._to_host(metrics.accumulators))

    def train_epoch(self, buffer: Mapping[str, Any]) -> dict[str, float]:
        """``num_updates_on_epoch`` updates in one jitted call, batches sampled on device from ``buffer``.

        ``buffer``: the full dataset arrays (numpy or JAX; moved to the device once per call if needed). Returns the
        epoch means (keys written at least once). Exactly one device->host transfer: ``self._to_host(metrics)``.
        """
        jbuffer = {k: jnp.asarray(buffer[k], jnp.float32) for k in rebrac.BATCH_KEYS}
        self.state, metrics = self._compiled("epoch")(self.state, jbuffer)
        self.steps_done += self.rebrac_cfg.num_updates_on_epoch
        return canonical_metrics(self._to_host(metrics.accumulators))

    # protocol ------------------------------------------------------------------------------------------------
    def _sync_base(self) -> rebrac.ReBRAC:
        self.base.key, self.base.actor, self.base.critic = self.state.key, self.state.actor, self.state.critic
        return self.base

    def parameters(self) -> dict[str, np.ndarray]:
        out = canonical_base_parameters(self._sync_base())
        extras = jax.device_get(self.state.extras)
        for i, (g, j) in sorted(self.location.items()):
            flat = traverse_util.flatten_dict(extras[g].params, sep="/")
            out.update({f"actor{i}/{k}": np.array(v[j]) for k, v in flat.items()})
        return out

    def load_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        """Load canonical names (base roles and ``actor<i>/...``); optimizer states are left as they are."""
        golden = golden_from_canonical(params)
        if golden:
            base = self._sync_base()
            base.load_parameters(golden, strict=True)
            self.state = self.state._replace(actor=base.actor, critic=base.critic)
        extras = list(self.state.extras)
        for i, (g, j) in self.location.items():
            prefix = f"actor{i}/"
            own = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
            if not own:
                continue
            flat = traverse_util.flatten_dict(extras[g].params, sep="/")
            missing = sorted(set(flat) - set(own))
            if missing:
                raise KeyError(f"actor{i}: missing parameters {missing[:5]}")
            new = {}
            for k, stacked in flat.items():
                value = jnp.asarray(own[k], stacked.dtype)
                if value.shape != stacked.shape[1:]:
                    raise ValueError(f"actor{i}/{k}: shape {list(value.shape)} != expected {list(stacked.shape[1:])}")
                new[k] = stacked.at[j].set(value)
            extras[g] = extras[g].replace(params=traverse_util.unflatten_dict(new, sep="/"))
        self.state = self.state._replace(extras=tuple(extras))

    def rng_digests(self) -> dict[str, str]:
        """Digest of the reference key chain (the extra actors' chain is private and not compared)."""
        return {"rng/key": key_digest(self.state.key)}

    def optimizer_state(self) -> dict[str, dict[str, Any]]:
        """actor0's and the critic's optax Adam state per canonical parameter (:func:`adam_state`)."""
        return adam_state(self._sync_base())

    def jax_state(self) -> dict[str, Any]:
        """The state the critic/actor0 update starts from (:func:`update_state`); extra actors are not part of it."""
        return update_state(self.state.key, self.state.actor, self.state.critic, int(self.state.step))

    def load_jax_state(self, state: Mapping[str, Any]) -> None:
        """Set key chain, actor0, critic (arrays and optimizer state) and update counter from :meth:`jax_state`."""
        self.state = self.state._replace(key=state["key"], actor=synced_train_state(self.state.actor, state["actor"]),
                                         critic=synced_train_state(self.state.critic, state["critic"]),
                                         step=jnp.asarray(state["updates"], jnp.int32))
        self.steps_done = int(state["updates"])

    def traced_update(self, batch: Mapping[str, Any], state: Mapping[str, Any]
                      ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The critic/actor0 part of a step from ``state`` on ``batch``: this trainer's loop body and its arguments
        (:func:`loop_body_update`), the full-update flag from its own schedule; for tracing, nothing runs."""
        full = self.flags_fn(self.rebrac_cfg, jnp.asarray(state["updates"], jnp.int32), 1)[0]
        return loop_body_update(self.loop_body_fn, state, batch, self.rebrac_cfg, full)

    def chain_spec(self) -> list[dict[str, Any]]:
        """What an independent W2 oracle needs to rebuild every actor from :meth:`parameters`."""
        spec = [{"type": "deterministic", "prefix": "actor0/actor/params/", "layernorm": self.rebrac_cfg.actor_ln,
                 "max_action": 1.0}]
        for i, p in enumerate(self.policies_[1:], start=1):
            spec.append({"type": p.kind, "prefix": f"actor{i}/params/", "layernorm": False,
                         "max_action": p.max_action})
        return spec

    # evaluation ----------------------------------------------------------------------------------------------
    def _act_fn(self, i: int) -> Callable[..., Any]:
        """A jitted evaluation-action function per actor, created once and reused."""
        if i not in self._act_fns:
            if i == 0:
                fn = jax.jit(lambda params, obs: self.actor0.deterministic_action(params, obs))
            else:
                policy = self.policies_[i]
                fn = jax.jit(lambda stacked, j, obs: policy.deterministic_action(
                    jax.tree.map(lambda x: x[j], stacked), obs))
            self._act_fns[i] = fn
        return self._act_fns[i]

    def act(self, i: int, state: np.ndarray) -> np.ndarray:
        """Evaluation action of actor ``i`` (mean / mode) for one state ``[S]`` -> ``[A]``."""
        obs = jnp.asarray(np.asarray(state, np.float32).reshape(1, -1))
        if i == 0:
            out = self._act_fn(0)(self.state.actor.params, obs)
        else:
            g, j = self.location[i]
            out = self._act_fn(i)(self.state.extras[g].params, j, obs)
        return np.asarray(out)[0]


_REFERENCE_STEPS: dict[tuple, Callable[..., Any]] = {}


def shared_reference_step(cfg: rebrac.Config) -> Callable[..., Any]:
    """``jax.jit(partial(rebrac.train_step_on_batch, cfg=cfg))`` — what ``ReBRAC.__init__`` builds — shared by
    every reference with an equal config (``train_seed`` aside), so a process compiles it once per config (with the
    static fields interned, :func:`intern_static`)."""
    key = dataclasses.astuple(dataclasses.replace(cfg, train_seed=0))
    if key not in _REFERENCE_STEPS:
        _REFERENCE_STEPS[key] = jax.jit(partial(rebrac.train_step_on_batch, cfg=cfg))
    return _REFERENCE_STEPS[key]


class ReBRACReference:
    """The JAX ReBRAC reference seen through the Trainer protocol (canonical observables and names).

    ``step`` is ``ReBRAC.train_step`` with the in-epoch index ``steps_done % num_updates_on_epoch``; the jitted
    step function is the reference's own, shared between equal configs (:func:`shared_reference_step`).
    """

    def __init__(self, config: MultiActorConfig, spec: DatasetSpec, seed: int):
        self.config = config
        cfg = rebrac_config(config, seed)
        self.base = rebrac.ReBRAC(cfg, spec.state_dim, spec.action_dim)
        self.base.actor = intern_static(self.base.actor, cfg.actor_learning_rate)
        self.base.critic = intern_static(self.base.critic, cfg.critic_learning_rate)
        self.base._step = shared_reference_step(cfg)
        self.steps_done = 0

    def step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        log = self.base.train_step(batch, self.steps_done)
        self.steps_done += 1
        return {CANONICAL.get(k, k): v for k, v in log.items()}

    def parameters(self) -> dict[str, np.ndarray]:
        return canonical_base_parameters(self.base)

    def load_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        self.base.load_parameters(golden_from_canonical(params), strict=True)

    def rng_digests(self) -> dict[str, str]:
        return {"rng/key": key_digest(self.base.key)}

    def optimizer_state(self) -> dict[str, dict[str, Any]]:
        """actor0's and the critic's optax Adam state per canonical parameter (:func:`adam_state`)."""
        return adam_state(self.base)

    def jax_state(self) -> dict[str, Any]:
        """The state the next update starts from (:func:`update_state`)."""
        return update_state(self.base.key, self.base.actor, self.base.critic, self.steps_done)

    def load_jax_state(self, state: Mapping[str, Any]) -> None:
        """Set key chain, actor0, critic (arrays and optimizer state) and update counter from :meth:`jax_state`."""
        self.base.key = state["key"]
        self.base.actor = synced_train_state(self.base.actor, state["actor"])
        self.base.critic = synced_train_state(self.base.critic, state["critic"])
        self.steps_done = int(state["updates"])

    def traced_update(self, batch: Mapping[str, Any], state: Mapping[str, Any]
                      ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """What ``train_step`` runs from ``state`` on ``batch`` — ``rebrac.loop_body`` with the flag of
        ``is_full_update`` — as a function and its arguments (:func:`loop_body_update`), for tracing."""
        return loop_body_update(rebrac.loop_body, state, batch, self.base.config,
                                self.base.is_full_update(state["updates"]))


def rebrac_reference_factory(config: MultiActorConfig, dataset_spec: DatasetSpec, seed: int) -> ReBRACReference:
    """Trainer-protocol factory of the CORL-faithful JAX ReBRAC."""
    return ReBRACReference(config, dataset_spec, seed)


def rebrac_multi_actor_factory(config: MultiActorConfig, dataset_spec: DatasetSpec, seed: int) -> MultiActorReBRAC:
    """Trainer-protocol factory of the JAX multi-actor ReBRAC."""
    return MultiActorReBRAC(config, dataset_spec, seed)
