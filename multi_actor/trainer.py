"""The POGO multi-actor trainer (PyTorch) and the Trainer-protocol view of a reference trainer.

One step of :class:`MultiActorTrainer`:

1. snapshot actor0 (a detached copy: the "reference actor" of actor i is actor i-1 *at the start of the step*,
   and the base step changes actor0). Actors i ≥ 1 need no copy: nothing changes them before their own update,
   which steps every extra actor only after all their losses are built, so while those are built each extra actor
   *is* its start-of-step state (its outputs are taken detached as the next actor's reference);
2. ``base.train_step(batch)`` — the reference algorithm trains its critic and actor0 with its own code, its own
   update order and the global RNG stream, untouched. Forward hooks keep (by reference, running no operation)
   the outputs its own code computes on this batch at start-of-step parameters that step 3 needs again: actor0's
   forward on the states (its snapshot's output) and the critic quantities an energy names (IQL's
   ``Q_target(s, a)`` and ``V(s)``, i.e. the advantage actor0's update used);
3. when the base algorithm updates its actor (TD3+BC: every ``policy_freq`` steps), each actor i ≥ 1 minimises
   ``energy_i + w_i · W2²(π_i, π_{i-1} at the start of the step)``. Its random draws come from the extra actors'
   own generator, and every base parameter is frozen while its loss is built and back-propagated, so no gradient
   reaches the critic or actor0. Actor i's loss depends only on actor i, the frozen base and actor i-1's
   start-of-step state, so all extra actors' losses are built first, back-propagated once and stepped together by
   one Adam (one call whatever the chain's length), each network running once per step
   (:meth:`MultiActorTrainer._update_actors`).

Both trainers here satisfy the Trainer protocol of the equivalence harness (``step``, ``parameters``,
``load_parameters``, ``gradients``) with canonical names: ``critic/<module>/<key>``, ``actor0/<module>/<key>``,
``target/<module>/<key>`` (and ``actor<i>/<key>`` for extra actors).

Device (``config.device``): every network, optimizer state and the extra actors' generator live there, batches are
moved there at the start of ``step``, and parameters are read back as CPU numpy arrays. Networks are initialized on
the CPU and then moved (as the reference modules do), so initial parameters are the same on every device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from multi_actor.algorithms import get_algorithm
from multi_actor.config import MultiActorConfig
from multi_actor.policies import Policy, StartOutput, build_policy, detached
from multi_actor.w2 import policy_w2
from pogo_audit.runtime.data import DatasetSpec
from pogo_audit.runtime.seeding import ACTOR_INIT_OFFSET, ACTOR_SAMPLING_OFFSET, derived_seed, seed_everything


def module_role(base: Any, module_name: str) -> str:
    """``actor0`` for the base actor, ``target`` for target networks, ``critic`` for everything else."""
    if module_name == base.actor_name:
        return "actor0"
    if module_name in base.targets_of:
        return "target"
    return "critic"


def _canonical_name(base: Any, golden_name: str) -> str:
    module = golden_name.split("/", 1)[0]
    return f"{module_role(base, module)}/{golden_name}"


def base_parameters(base: Any) -> dict[str, np.ndarray]:
    return {_canonical_name(base, k): v for k, v in base.export_parameters().items()}


def base_tensors(base: Any) -> dict[str, torch.Tensor]:
    """The base trainer's live tensors under canonical names (``critic/…``, ``actor0/…``, ``target/…``)."""
    return {_canonical_name(base, k): t for k, t in base.named_tensors().items()}


def base_gradients(base: Any) -> dict[str, np.ndarray]:
    """``.grad`` of every critic/actor0 parameter (zeros where no gradient was ever written)."""
    out = {}
    for canonical, t in base_tensors(base).items():
        if canonical.startswith("target/"):
            continue
        g = t.grad
        out[canonical] = np.zeros(tuple(t.shape), np.float32) if g is None else g.detach().cpu().numpy().copy()
    return out


def batch_to(batch: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The CORL list batch on ``device`` (the same tensor objects when they are already there)."""
    return [t.to(device) for t in batch]


def to_cpu(tree: Any) -> Any:
    """``tree`` (dicts, lists, tuples) with every tensor on the CPU (CPU tensors are returned as they are); dict
    types and attributes survive (a module ``state_dict``'s ``_metadata``)."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        out = copy.copy(tree)
        for k, v in tree.items():
            out[k] = to_cpu(v)
        return out
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def load_base_parameters(base: Any, params: Mapping[str, np.ndarray]) -> None:
    """Load canonical names (``critic/…``, ``actor0/…``, ``target/…``) into the base trainer: a partial mapping (the
    protocol's ``load_parameters``) sets exactly the names given and leaves every other tensor as it is; an unknown
    name or another shape raises."""
    tensors = base.named_tensors()
    with torch.no_grad():
        for k, v in params.items():
            role, _, rest = k.partition("/")
            if role not in ("critic", "actor0", "target"):
                continue
            if rest not in tensors:
                raise KeyError(f"{k}: no such parameter")
            tensor = tensors[rest]
            src = torch.as_tensor(np.asarray(v), dtype=tensor.dtype)
            if tuple(src.shape) != tuple(tensor.shape):
                raise ValueError(f"{k}: shape {tuple(src.shape)} != expected {tuple(tensor.shape)}")
            tensor.copy_(src)


@contextmanager
def frozen(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """Temporarily ``requires_grad_(False)`` on tensors that require grad; restored afterwards."""
    flipped = [t for t in tensors if t.requires_grad]
    for t in flipped:
        t.requires_grad_(False)
    try:
        yield
    finally:
        for t in flipped:
            t.requires_grad_(True)


class _OptionalProtocol:
    """The optional Trainer-protocol methods both trainers share: ``named_tensors``, ``optimizers`` (the base
    algorithm's own, which train critic and actor0) and ``evaluate`` (actor0 in the dataset's env)."""

    base: Any
    actor0: Policy
    evaluator_factory: Callable[[], Any] | None
    evaluator: Any

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Canonical name -> live tensor (the names of ``parameters()``)."""
        return base_tensors(self.base)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer of critic, actor0 and the temperature, under the reference algorithm's labels."""
        return dict(self.base.optimizers())

    def evaluate(self, seed: int, episodes: int) -> dict[str, float]:
        """``eval/actor0/<mode>/…`` over ``episodes`` episodes reset from ``seed`` (the evaluator, and its env, are
        created on first use); no global RNG stream is used."""
        if self.evaluator_factory is None:
            raise ValueError("evaluate: the dataset spec carries no state normalization statistics")
        if self.evaluator is None:
            self.evaluator = self.evaluator_factory()
        return self.evaluator.evaluate([self.actor0], seed, episodes)


class ReferenceProtocolTrainer(_OptionalProtocol):
    """A single-actor reference trainer seen through the Trainer protocol (canonical observables and names)."""

    def __init__(self, config: MultiActorConfig, spec: DatasetSpec, seed: int):
        self.config = config
        self.algorithm = get_algorithm(config.algo)
        self.device = torch.device(getattr(config, "device", "cpu"))
        base_cfg = self.algorithm.base_config(config.base)
        max_action = self.algorithm.max_action(base_cfg, spec.max_action)
        seed_everything(seed)
        self.base = self.algorithm.build_base(base_cfg, spec.state_dim, spec.action_dim, max_action, str(self.device))
        self.actor0 = self.algorithm.actor0_view(self.base, spec.action_dim, max_action)
        self.evaluator_factory = evaluator_factory_for(config, spec)
        self.evaluator: Any = None

    def step(self, batch: Sequence[torch.Tensor]) -> dict[str, float]:
        log = self.base.train_step(batch_to(batch, self.device))
        return {self.algorithm.canonical(k): v for k, v in log.items()}

    def parameters(self) -> dict[str, np.ndarray]:
        return base_parameters(self.base)

    def load_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        load_base_parameters(self.base, params)

    def gradients(self) -> dict[str, np.ndarray]:
        return base_gradients(self.base)


class MultiActorTrainer(_OptionalProtocol):
    """POGO: the reference algorithm (critic + actor0) plus a chain of actors 1..N-1 pulled by W2 to their
    predecessor. See the module docstring for the step semantics."""

    def __init__(self, config: MultiActorConfig, spec: DatasetSpec, seed: int,
                 evaluator_factory: Callable[[], Any] | None = None):
        cfg = config.resolved()
        self.config = cfg
        self.spec = spec
        self.algorithm = get_algorithm(cfg.algo)
        self.device = torch.device(cfg.device)
        base_cfg = self.algorithm.base_config(cfg.base)
        max_action = self.algorithm.max_action(base_cfg, spec.max_action)
        self._construct(base_cfg, max_action, seed)
        self.actor_optimizer = self._actor_optimizer(self.algorithm.actor_lr(base_cfg))
        self.generator = torch.Generator(device=self.device).manual_seed(derived_seed(seed, ACTOR_SAMPLING_OFFSET))
        self._snapshot0 = copy.deepcopy(self.actor0).requires_grad_(False) if self.actors else None
        self._start_outputs = self._hook_start_outputs()
        #: every base tensor (critic, targets, actor0, temperature), listed once: the objects stay (loads copy in
        #: place) and listing them walks every module's state dict (~0.5 ms a step)
        self._base_tensors = list(self.base.named_tensors().values())
        self.w2_fn = policy_w2
        self.evaluator_factory = evaluator_factory
        self.evaluator: Any = None
        self.seed = int(seed)
        self.steps_done = 0
        self.generator_restarted = False

    def _construct(self, base_cfg: Any, max_action: float, seed: int) -> None:
        """Seed like CORL, build the base algorithm from the global RNG, then the extra actors from their own."""
        spec = self.spec
        seed_everything(seed)
        self.base = self.algorithm.build_base(base_cfg, spec.state_dim, spec.action_dim, max_action, str(self.device))
        self.actor0 = self.algorithm.actor0_view(self.base, spec.action_dim, max_action)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also reseed the global CUDA generators, which
            # fork_rng(devices=[]) does not restore, and shift the reference's CUDA stream (found on an H200)
            torch.default_generator.manual_seed(derived_seed(seed, ACTOR_INIT_OFFSET))
            self.actors = self._build_extra_actors(max_action)

    def _build_extra_actors(self, max_action: float) -> list[Policy]:
        """Actors 1..N-1, initialized on the CPU from the current torch CPU stream, then moved to the device."""
        spec = self.spec
        return [build_policy(a.type, spec.state_dim, spec.action_dim, max_action, a.hidden_dim, a.n_hidden,
                             a.noise_dim).to(self.device) for a in self.config.actor_configs[1:]]

    def _actor_optimizer(self, default_lr: float) -> torch.optim.Optimizer | None:
        """One fused Adam for every extra actor, a parameter group per learning rate. Adam is elementwise, so this
        is each actor's own Adam to the bit; one ``step`` instead of one per actor saves the optimizer's Python
        overhead (~0.5 ms a call here, more than its kernel), and fused means one kernel per group instead of a
        dozen elementwise ops per tensor (same Adam as the unfused one, other last bits)."""
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for actor, a in zip(self.actors, self.config.actor_configs[1:]):
            groups.setdefault(a.lr if a.lr is not None else default_lr, []).extend(actor.parameters())
        if not groups:
            return None
        return torch.optim.Adam([{"params": ps, "lr": lr} for lr, ps in groups.items()], fused=True)

    def _hook_start_outputs(self) -> dict[str, tuple[torch.nn.Module, int, StartOutput]]:
        """Record, during the base step, the forwards the extra actors' update can reuse: those the algorithm's
        energies name (:meth:`TorchAlgorithm.start_outputs`) and actor0's own forward on the states (the output of
        its start-of-step snapshot, for views whose training output is that forward)."""
        wanted = dict(self.algorithm.start_outputs(self.base)) if self.actors else {}
        if self.actors and getattr(self.actor0, "memo_forward", False):
            wanted["actor0"] = (self.actor0.net, 1)
        out = {}
        for name, (module, n_inputs) in wanted.items():
            hook = StartOutput()
            module.register_forward_hook(hook)
            out[name] = (module, n_inputs, hook)
        return out

    def _freeze_base(self) -> Any:
        """Context in which no base parameter (critic, targets, actor0, alpha) requires grad."""
        return frozen(self._base_tensors)

    # protocol ------------------------------------------------------------------------------------------------
    def policies(self) -> list[Policy]:
        """actor0 (a view of the reference actor) followed by actors 1..N-1."""
        return [self.actor0, *self.actors]

    def step(self, batch: Sequence[torch.Tensor]) -> dict[str, float]:
        batch = batch_to(batch, self.device)
        self._take_snapshots()
        for module, n_inputs, hook in self._start_outputs.values():
            hook.arm(module, *batch[:n_inputs])
        try:
            log = {self.algorithm.canonical(k): v for k, v in self.base.train_step(batch).items()}
        finally:
            started = {name: hook.take() for name, (_, _, hook) in self._start_outputs.items()}
        if self.actors and self.algorithm.actor_update_due(self.base):
            log.update(self._update_actors(batch, started))
        self.steps_done += 1
        if self.evaluator_factory is not None and self.config.eval_freq and \
                self.steps_done % self.config.eval_freq == 0:
            log.update(self._evaluate())
        return log

    def _evaluate(self) -> dict[str, float]:
        """Evaluate every actor (the evaluator, and its env, are created on first use)."""
        if self.evaluator is None:
            self.evaluator = self.evaluator_factory()
        return self.evaluator.evaluate(self.policies())

    def parameters(self) -> dict[str, np.ndarray]:
        out = base_parameters(self.base)
        for i, actor in enumerate(self.actors, start=1):
            for k, v in actor.state_dict().items():
                out[f"actor{i}/{k}"] = v.detach().cpu().numpy().copy()
        return out

    def load_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        load_base_parameters(self.base, params)
        for i, actor in enumerate(self.actors, start=1):
            prefix = f"actor{i}/"
            own = {k[len(prefix):]: torch.as_tensor(v) for k, v in params.items() if k.startswith(prefix)}
            if own:
                actor.load_state_dict(own)

    def gradients(self) -> dict[str, np.ndarray]:
        return base_gradients(self.base)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Canonical name -> live tensor, the extra actors' (``actor<i>/<key>``) included."""
        out = base_tensors(self.base)
        for i, actor in enumerate(self.actors, start=1):
            out.update({f"actor{i}/{k}": v for k, v in actor.state_dict(keep_vars=True).items()})
        return out

    # internals -----------------------------------------------------------------------------------------------
    def _take_snapshots(self) -> None:
        """actor0 as it is before the base step (the extra actors need no copy, see the module docstring)."""
        if self._snapshot0 is not None:
            self._snapshot0.copy_from(self.actor0)

    def _update_actors(self, batch: Sequence[torch.Tensor],
                       started: Mapping[str, tuple[Any, tuple[int, ...]]] | None = None) -> dict[str, float]:
        """One optimizer step for every extra actor, without recomputing what the chain already has.

        Actor i's loss depends only on actor i, the frozen base and snapshot i-1, so every loss is built first (in
        chain order: the generator's draws come in the same order as one actor after the other), one backward
        pass reaches every actor, then one optimizer steps them all. Each actor's network runs once on the batch's
        states (its energy and its W2 term share the output), the W2 reference of actor i+1 is actor i itself (not
        stepped yet: its start-of-step state) with its outputs detached — its memoized output, no second forward
        — and actor0's snapshot takes the output of the base step's own actor0 forward; quantities
        that depend only on the frozen base and the batch (IQL's advantage) are computed once (``shared``).
        Values equal evaluating everything afresh; gradients may differ in the last bits (a shared output sums its
        two uses before the weight gradient), and the fused Adam differs from the unfused one in the last bits."""
        obs, actions = batch[0], batch[1]
        cfg = self.config
        started = dict(started or {})
        actor0_out, actor0_versions = started.pop("actor0", (None, ()))
        shared = {f"start/{name}": out for name, (out, _) in started.items() if out is not None}
        if actor0_out is not None and (out := detached(actor0_out)) is not None:
            self._snapshot0.adopt_output(obs, out, actor0_versions)
        references = [self._snapshot0, *self.actors[:-1]]
        terms: list[torch.Tensor] = []
        try:
            with self._freeze_base():
                for i, (actor, reference) in enumerate(zip(self.actors, references), start=1):
                    actor.remember(obs)
                    energy = self.algorithm.energy(cfg.actor_configs[i].energy, self.base, actor, obs, actions,
                                                   self.generator, shared)
                    w2 = self.w2_fn(actor, reference, obs, cfg.w2_method, cfg.w2_samples, cfg.sinkhorn_epsilon,
                                    self.generator)
                    terms += [energy + cfg.w2_weights[i - 1] * w2, energy, w2]
                self.actor_optimizer.zero_grad()
                torch.stack(terms[::3]).sum().backward()
                self.actor_optimizer.step()
        finally:
            for policy in (*self.actors, self._snapshot0):
                policy.forget()
        values = torch.stack([t.detach() for t in terms]).tolist()
        return {f"actor{i}/{key}": values[3 * (i - 1) + k]
                for i in range(1, len(self.actors) + 1) for k, key in enumerate(("loss", "energy", "w2"))}

    # checkpoints ---------------------------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything needed to resume bitwise, as CPU tensors: a checkpoint loads on any device (the load methods
        copy parameters and optimizer state onto this trainer's device; generator states are CPU tensors anyway)."""
        return to_cpu({
            "base": self.base.training_state(),
            "actors": [copy.deepcopy(a.state_dict()) for a in self.actors],
            "actor_optimizer": copy.deepcopy(self.actor_optimizer.state_dict()) if self.actor_optimizer else None,
            "generator": self.generator.get_state(),
            "generator_device": self.generator.device.type,
            "steps_done": self.steps_done,
        })

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        self.base.load_training_state(state["base"])
        for actor, sd in zip(self.actors, state["actors"]):
            actor.load_state_dict(sd)
        if self.actor_optimizer is not None:
            self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.steps_done = int(state["steps_done"])
        if state.get("generator_device", self.generator.device.type) == self.generator.device.type:
            self.generator.set_state(state["generator"])
            self.generator_restarted = False
        else:
            # CPU (mt19937) and CUDA (Philox) generator states do not convert: the extra actors' sampling stream
            # restarts from a seed derived from the run seed and the step — deterministic, but not bitwise the run
            # the checkpoint came from (resume is bitwise on the same device only)
            self.generator.manual_seed(derived_seed(derived_seed(self.seed, ACTOR_SAMPLING_OFFSET), self.steps_done))
            self.generator_restarted = True


def reference_factory(config: MultiActorConfig, dataset_spec: DatasetSpec, seed: int) -> ReferenceProtocolTrainer:
    """Trainer-protocol factory of the CORL-style single-actor reference."""
    return ReferenceProtocolTrainer(config, dataset_spec, seed)


def evaluator_factory_for(config: MultiActorConfig, dataset_spec: DatasetSpec) -> Callable[[], Any] | None:
    """A lazy Evaluator factory when the dataset spec carries the normalization statistics, else None."""
    if dataset_spec.state_mean is None:
        return None
    from multi_actor.evaluation import Evaluator
    from pogo_audit.runtime.data import recover_env

    cfg = config.resolved()

    def make() -> Evaluator:
        return Evaluator(lambda: recover_env(dataset_spec.dataset_id), np.asarray(dataset_spec.state_mean),
                         np.asarray(dataset_spec.state_std), cfg.eval_episodes, cfg.eval_seed, cfg.eval_stochastic,
                         (dataset_spec.ref_min_score, dataset_spec.ref_max_score))

    return make


def multi_actor_factory(config: MultiActorConfig, dataset_spec: DatasetSpec, seed: int) -> MultiActorTrainer:
    """Trainer-protocol factory of the multi-actor trainer (evaluates every ``eval_freq`` steps when the dataset
    spec carries the normalization statistics)."""
    return MultiActorTrainer(config, dataset_spec, seed, evaluator_factory_for(config, dataset_spec))
