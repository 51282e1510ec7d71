"""What gets profiled: a :class:`JaxTarget` (``step()`` runs one update, the optional ``epoch()`` runs
``updates_per_epoch`` updates in one jitted ``scan``/``fori_loop``) and the targets built for our own trainers.

Users profile their own loop with ``--target pkg.mod:factory``, where ``factory()`` (no arguments) returns either a
:class:`JaxTarget` or any object with this protocol (documented in ``examples/README.md``, "Profiling your JAX
trainer")::

    obj.step() -> Any            # one update; return something that depends on it (loss, state) so the timer can
                                 # wait for it; None makes the profiler wait on every jax.Array attribute of obj
    obj.epoch() -> Any           # optional: updates_per_epoch updates in one call (jitted scan / fori_loop)
    obj.updates_per_epoch: int   # required with epoch()
    obj.step_fn                  # optional: the function step() runs, to check that it is jax.jit-compiled
    obj.loop: "step" | "epoch"   # optional: which path is the training loop (default: epoch if present)
    obj.scan_roots: dict         # optional: {"step"/"epoch": callable} the static scan starts from
    obj.evaluate() -> Any        # optional: one evaluation (profiled for recompiles and syncs per evaluation)
    obj.pure_step() -> (fn, args)  # optional: fn(*args) is one update as a pure function (jit-gain estimate)
    obj.batch_size: int          # optional: batch size of one update (the reference comparison's batch size)
    obj.training_steps: int      # optional: calls of the loop in a full training run (host-memory projection;
                                 # default CORL's 1e6 updates, or 1e6 / updates_per_epoch epochs)
    obj.__dict__                 # the object's attributes are its state: host-memory growth counts only when they
                                 # grow too (a log list kept in a local variable is invisible; expose it)
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

from checks.jax_profile.contexts import EPOCH, STEP
from checks.jax_profile.scan.live import is_jitted
from multi_actor.config import MultiActorConfig
from pogo_audit.runtime import data
from pogo_audit.runtime.errors import UsageError
from pogo_audit.core.loading import import_callable
from reference_algos.jax import rebrac

MULTI_ACTOR_MODULE = "multi_actor.jax_trainer"
#: (state, action) dimensions of Hopper, the shape of the synthetic buffer
HOPPER_DIMS = (11, 3)


@dataclass
class JaxTarget:
    """One training loop to profile; ``scan_roots`` ({"step"/"epoch": callable}) default to ``step``/``epoch``."""

    name: str
    step: Callable[[], Any]
    epoch: Callable[[], Any] | None = None
    updates_per_epoch: int = 1
    loop: str | None = None
    step_fn: Callable[..., Any] | None = None
    scan_roots: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    state: Callable[[], Any] | None = None
    evaluate: Callable[[], Any] | None = None
    pure_step: Callable[[], tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
    batch_size: int | None = None
    training_steps: int | None = None

    def __post_init__(self) -> None:
        if self.loop is None:
            self.loop = EPOCH if self.epoch is not None else STEP
        if self.loop not in (STEP, EPOCH) or (self.loop == EPOCH and self.epoch is None):
            raise UsageError(f"target {self.name}: loop must be 'step' or 'epoch' (with an epoch()), got {self.loop!r}")
        if self.epoch is not None and self.updates_per_epoch < 1:
            raise UsageError(f"target {self.name}: updates_per_epoch must be >= 1 with an epoch()")
        if not self.scan_roots:
            self.scan_roots = {STEP: self.step, **({EPOCH: self.epoch} if self.epoch is not None else {})}


def as_target(obj: Any, name: str) -> JaxTarget:
    """A :class:`JaxTarget` as is, or an object with ``step()`` (see the module docstring) wrapped into one."""
    if isinstance(obj, JaxTarget):
        return obj
    step = getattr(obj, "step", None)
    if not callable(step):
        raise UsageError(f"{name}: expected a JaxTarget or an object with step(), got {type(obj).__name__}")
    epoch, evaluate, pure_step = (getattr(obj, n, None) for n in ("epoch", "evaluate", "pure_step"))
    updates = getattr(obj, "updates_per_epoch", None)
    if epoch is not None and not callable(epoch):
        epoch = None
    if epoch is not None and not isinstance(updates, int):
        raise UsageError(f"{name}: an object with epoch() must have an int updates_per_epoch")
    for field_name, value in (("evaluate", evaluate), ("pure_step", pure_step)):
        if value is not None and not callable(value):
            raise UsageError(f"{name}: {field_name} must be callable, got {type(value).__name__}")
    batch_size = getattr(obj, "batch_size", None)
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
        raise UsageError(f"{name}: batch_size must be a positive int, got {batch_size!r}")
    training_steps = getattr(obj, "training_steps", None)
    if training_steps is not None and not (isinstance(training_steps, int) and training_steps > 0):
        raise UsageError(f"{name}: training_steps must be a positive int, got {training_steps!r}")
    roots = getattr(obj, "scan_roots", None)
    if roots is not None and not (isinstance(roots, Mapping) and all(callable(v) for v in roots.values())):
        raise UsageError(f"{name}: scan_roots must be a dict of callables")
    return JaxTarget(name=name, step=step, epoch=epoch, updates_per_epoch=updates or 1,
                     loop=getattr(obj, "loop", None), step_fn=getattr(obj, "step_fn", None),
                     scan_roots=dict(roots or {}), state=lambda: getattr(obj, "__dict__", None),
                     evaluate=evaluate, pure_step=pure_step, batch_size=batch_size,
                     training_steps=training_steps)


def load_target(spec: str, option: str = "--target") -> JaxTarget:
    """``pkg.module:factory`` → ``factory()`` as a target (the current directory is importable, as with ``-m``)."""
    factory = import_callable(spec, option, "tests.jax_profile.jax_pathologies:clean_loop")
    try:
        obj = factory()
    except Exception as exc:
        raise UsageError(f"{option}: {spec}() raised {type(exc).__name__}: {exc}") from None
    return as_target(obj, spec)


def synthetic_buffer(size: int = 10_000, dims: tuple[int, int] = HOPPER_DIMS, seed: int = 0) -> dict[str, np.ndarray]:
    """A Hopper-shaped CORL buffer (states, actions, rewards, next_states, next_actions, dones) of random data."""
    rng = np.random.default_rng(seed)
    s, a = dims
    return {"states": rng.normal(size=(size, s)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (size, a)).astype(np.float32),
            "rewards": rng.normal(size=size).astype(np.float32),
            "next_states": rng.normal(size=(size, s)).astype(np.float32),
            "next_actions": rng.uniform(-1, 1, (size, a)).astype(np.float32),
            "dones": (rng.random(size) < 0.01).astype(np.float32)}


def dataset_buffer(dataset: str | None, seed: int = 0) -> dict[str, np.ndarray]:
    """``None``/"synthetic" → :func:`synthetic_buffer`; "embedded" or a Minari id → its CORL transitions."""
    if dataset in (None, "synthetic"):
        return synthetic_buffer(seed=seed)
    dataset_id = data.DEFAULT_DATASET_ID if dataset == "embedded" else dataset
    t = data.load_transitions(dataset_id, create_default=dataset_id == data.DEFAULT_DATASET_ID)
    return {"states": t.observations, "actions": t.actions, "rewards": t.rewards, "next_states": t.next_observations,
            "next_actions": t.next_actions, "dones": t.terminals}


def trainer_target(name: str, trainer: Any, buffer: Mapping[str, np.ndarray], batch_size: int,
                   updates_per_epoch: int) -> JaxTarget:
    """A ReBRAC-like trainer on device-resident data: ``train_epoch(buffer)`` and a per-update API, either the
    reference's ``train_step(batch, i)`` or the Trainer protocol's ``step(batch)``.

    The training loop is the epoch (CORL trains by ``fori_loop`` epochs); the per-update API is the other path.
    """
    device_buffer = {k: jnp.asarray(v, jnp.float32) for k, v in buffer.items()}
    batch = {k: v[:batch_size] for k, v in device_buffer.items()}
    counter = itertools.count()
    reference_api = callable(getattr(trainer, "train_step", None))
    per_update = trainer.train_step if reference_api else trainer.step

    def step() -> Any:
        return trainer.train_step(batch, next(counter)) if reference_api else trainer.step(batch)

    step_fn = getattr(trainer, "_step", None)
    return JaxTarget(
        name=name,
        step=step,
        epoch=lambda: trainer.train_epoch(device_buffer),
        updates_per_epoch=updates_per_epoch,
        loop=EPOCH,
        step_fn=step_fn if is_jitted(step_fn) else None,
        scan_roots={STEP: per_update, EPOCH: trainer.train_epoch},
        state=lambda: vars(trainer),
    )


def rebrac_target(updates_per_epoch: int = 50, batch_size: int = 256, dataset: str | None = None, seed: int = 0,
                  config_overrides: Mapping[str, Any] | None = None) -> JaxTarget:
    """The CORL-faithful reference ReBRAC (``reference_algos.jax.rebrac``), step and epoch paths.

    ``config_overrides`` sets other ``Config`` fields (e.g. ``hidden_dim``); CORL defaults otherwise.
    """
    buffer = dataset_buffer(dataset, seed)
    cfg = rebrac.Config(**{**(config_overrides or {}), "batch_size": batch_size,
                           "num_updates_on_epoch": updates_per_epoch, "train_seed": seed})
    trainer = rebrac.build(cfg, buffer["states"].shape[1], buffer["actions"].shape[1])
    return trainer_target("rebrac", trainer, {k: buffer[k] for k in rebrac.BATCH_KEYS}, batch_size, updates_per_epoch)


def multi_actor_targets(actors: Sequence[int] = (3,), updates_per_epoch: int = 50, batch_size: int = 256,
                        dataset: str | None = None, seed: int = 0) -> tuple[list[JaxTarget], list[str]]:
    """Targets for ``multi_actor.jax_trainer`` when it exists, else none; returns (targets, reasons for skips).

    Recognised interfaces, in order: a hook ``jax_profile_target(num_actors=, updates_per_epoch=, batch_size=,
    seed=)`` returning a :class:`JaxTarget` or a protocol object; the Trainer-protocol factory
    ``rebrac_multi_actor_factory(MultiActorConfig, DatasetSpec, seed)`` (``base`` sets ReBRAC's ``batch_size`` and
    ``num_updates_on_epoch``) giving ``step(batch)`` / ``train_epoch(buffer)``; or ReBRAC's ``Config`` dataclass
    (fields ``batch_size``, ``num_updates_on_epoch``, optionally ``num_actors``/``train_seed``) with
    ``build(config, state_dim, action_dim)`` giving ``train_step(batch, i)`` / ``train_epoch(buffer)``.
    """
    try:
        spec = importlib.util.find_spec(MULTI_ACTOR_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return [], [f"{MULTI_ACTOR_MODULE} not found: multi-actor JAX trainer not profiled"]
    try:
        module = importlib.import_module(MULTI_ACTOR_MODULE)
    except Exception as exc:
        return [], [f"{MULTI_ACTOR_MODULE}: import failed ({type(exc).__name__}: {exc}); not profiled"]
    targets: list[JaxTarget] = []
    skipped: list[str] = []
    buffer: dict[str, np.ndarray] | None = None
    for n in actors:
        name = f"multi_actor_jax[{n} actor{'s' if n != 1 else ''}]"
        try:
            hook = getattr(module, "jax_profile_target", None)
            if callable(hook):
                target = as_target(hook(num_actors=n, updates_per_epoch=updates_per_epoch, batch_size=batch_size,
                                        seed=seed), name)
                target.name = name
                targets.append(target)
                continue
            if buffer is None:
                buffer = dataset_buffer(dataset, seed)
            factory = getattr(module, "rebrac_multi_actor_factory", None)
            if callable(factory):
                trainer = factory(_multi_actor_config(n, updates_per_epoch, batch_size, seed),
                                  _dataset_spec(dataset, buffer), seed)
                targets.append(trainer_target(name, trainer, buffer, batch_size, updates_per_epoch))
                continue
            config_cls, build = getattr(module, "Config", None), getattr(module, "build", None)
            if not (dataclasses.is_dataclass(config_cls) and callable(build)):
                skipped.append(f"{MULTI_ACTOR_MODULE}: no jax_profile_target() and no Config/build(); not profiled")
                break
            names = {f.name for f in dataclasses.fields(config_cls)}
            if not {"batch_size", "num_updates_on_epoch"} <= names:
                skipped.append(f"{MULTI_ACTOR_MODULE}.Config lacks batch_size/num_updates_on_epoch; not profiled")
                break
            if "num_actors" not in names and n != 1:
                skipped.append(f"{name}: Config has no num_actors; skipped")
                continue
            overrides: dict[str, Any] = {"batch_size": batch_size, "num_updates_on_epoch": updates_per_epoch}
            overrides.update({k: v for k, v in (("num_actors", n), ("train_seed", seed)) if k in names})
            trainer = build(config_cls(**overrides), buffer["states"].shape[1], buffer["actions"].shape[1])
            if not (callable(getattr(trainer, "train_step", None)) and callable(getattr(trainer, "train_epoch", None))):
                skipped.append(f"{name}: trainer has no train_step/train_epoch; skipped")
                continue
            targets.append(trainer_target(name, trainer, buffer, batch_size, updates_per_epoch))
        except Exception as exc:
            skipped.append(f"{name}: could not be built ({type(exc).__name__}: {exc}); skipped")
    return targets, skipped


def _multi_actor_config(num_actors: int, updates_per_epoch: int, batch_size: int, seed: int) -> MultiActorConfig:
    return MultiActorConfig(algo="rebrac", num_actors=num_actors, seed=seed,
                            base={"batch_size": batch_size, "num_updates_on_epoch": updates_per_epoch}).resolved()


def _dataset_spec(dataset: str | None, buffer: Mapping[str, np.ndarray]) -> data.DatasetSpec:
    return data.DatasetSpec(dataset or "synthetic", "Hopper-v5", int(buffer["states"].shape[1]),
                            int(buffer["actions"].shape[1]), 1.0)
