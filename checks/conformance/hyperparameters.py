"""Every hyperparameter a trace set records is applied to the reference, listed as not replayed, or refused.

A set records hyperparameters in ``meta.json``: ``hyperparameters.train_config`` (CORL's ``TrainConfig``) and
``hyperparameters.trainer_kwargs`` (what CORL's ``train()`` passed to the trainer's constructor); a JAX set has one
flat dict. Each key is, in this order:

1. **not replayed** — listed in :data:`NOT_REPLAYED` with the reason it cannot change a replayed step (evaluation,
   logging, training length, seeds the protocol carries). An entry may allow only some values (``normalize_reward``
   must be off: the replay feeds the set's rewards as recorded) or check the value against the set;
2. **applied** — a field of the reference ``Config``, a constructor argument the reference module declares in its
   ``TRAINER_ARGS`` (mapped to the config field ``train()`` copies it from), or ``max_action``, which goes to
   ``build``. Where ``train_config`` and ``trainer_kwargs`` disagree, ``trainer_kwargs`` is what CORL's trainer ran
   with: it wins and a note says so;
3. otherwise the set is **refused** (:class:`InputError`, exit 2) naming the variant, the key and its value.

:func:`resolve` also lists the values that differ from CORL's defaults (the reference ``Config``'s), so a reader sees
which protocol was replayed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pogo_audit.runtime.errors import InputError
from pogo_audit.core.golden import GoldenVariant


@dataclass(frozen=True)
class NotReplayed:
    """A recorded key that cannot change a replayed step: ``reason`` says why. ``only``: the values for which that
    holds (empty: any value); ``check(value, golden)``: a refusal reason where the value contradicts the set."""

    reason: str
    only: tuple[Any, ...] = ()
    check: Callable[[Any, GoldenVariant], str | None] | None = None
    #: a run label (wandb's project/group/name), not a hyperparameter: never listed as differing from a default
    label: bool = False


def _states_match_arrays(value: Any, golden: GoldenVariant) -> str | None:
    """State normalisation is in the data: ``True`` needs the normalised arrays, ``False`` the raw ones."""
    role = "states" if golden.framework == "jax" else "observations"
    used = golden.meta.get("dataset_arrays_used", {}).get(role)
    if used is None:
        return None
    raw = str(used).startswith("raw_")
    if bool(value) == raw:
        return f"the set's dataset_arrays_used.{role} is {used!r}, which contradicts it"
    return None


_WANDB = NotReplayed("a wandb run label; nothing is logged in the replay", label=True)
_EVAL = NotReplayed("evaluation only; the replay evaluates nothing")
_LENGTH = NotReplayed("training length; the replay runs the set's recorded steps")
_ENV = NotReplayed("the environment's name; the replay's data is the set's dataset.npz and it evaluates nothing")
_SEED = NotReplayed("the replay seeds from the protocol (meta.json seeds: construction and training seed)")
_STATES = NotReplayed("states are the dataset arrays meta.json's dataset_arrays_used names (normalised or raw)",
                      check=_states_match_arrays)

#: the one table of recorded keys that do not affect the replayed steps, with the reason
NOT_REPLAYED: dict[str, NotReplayed] = {
    "project": _WANDB, "group": _WANDB, "name": _WANDB,
    "checkpoints_path": NotReplayed("where CORL writes checkpoints; the replay writes none"),
    "load_model": NotReplayed("a checkpoint CORL loads before training; the replay starts from init_params.npz",
                              only=("",)),
    "env": _ENV, "env_name": _ENV, "dataset_name": _ENV,
    "device": NotReplayed("the replay runs on --device (default cpu); the set's fingerprint says where it was "
                          "recorded, and float32 elsewhere is a drift report"),
    "seed": _SEED, "train_seed": _SEED,
    "test_seed": _EVAL, "eval_seed": _EVAL, "eval_freq": _EVAL, "eval_frequency": _EVAL, "eval_every": _EVAL,
    "n_episodes": _EVAL, "n_test_episodes": _EVAL, "eval_episodes": _EVAL,
    "log_every": NotReplayed("logging frequency; the replay records every step"),
    "buffer_size": NotReplayed("the buffer holds the set's whole dataset; batches are its batch_idx rows"),
    "batch_size": NotReplayed("the batches are the set's batch_idx rows, of the protocol's batch size (meta.json "
                              "batch_size where the recording deviated from the config)"),
    "num_train_ops": _LENGTH, "num_epochs": _LENGTH, "num_updates_on_epoch": _LENGTH,
    "normalize_reward": NotReplayed("the replay feeds the set's rewards as recorded (CORL would rescale them)",
                                    only=(False,)),
    "reward_scale": NotReplayed("CORL applies it only when normalize_reward is on (a set with it on is refused)"),
    "reward_bias": NotReplayed("CORL applies it only when normalize_reward is on (a set with it on is refused)"),
    "normalize": _STATES, "normalize_states": _STATES,
}

BUILD_ARG = "max_action"


@dataclass
class Resolved:
    """The reference's config and ``build`` arguments for one variant, with how every recorded key was used."""

    config: Any
    build: dict[str, Any] = field(default_factory=dict)
    #: recorded key (``train_config.gamma``) -> the value the reference got from it
    applied: dict[str, Any] = field(default_factory=dict)
    not_replayed: dict[str, str] = field(default_factory=dict)
    #: a ``train_config`` key -> the ``trainer_kwargs`` key that overruled it with another value
    overruled: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The JSON-able account of the hyperparameters, for the check result."""
        return {"applied": {k: _jsonable(v) for k, v in self.applied.items()}, "not_replayed": self.not_replayed,
                "overruled": self.overruled, "notes": self.notes, "differs_from_corl_defaults": self.differs,
                "build": {k: _jsonable(v) for k, v in self.build.items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _coerce(value: Any, default: Any) -> Any:
    """CORL's config dumps write ``-inf``/``inf`` as strings; a float field takes them as floats."""
    if isinstance(default, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (a bool is not the number 1; ``3`` and ``3.0`` are the same value)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _refuse(golden: GoldenVariant, where: str, key: str, value: Any, why: str) -> InputError:
    return InputError(f"{golden.folder / 'meta.json'}: variant {golden.name}: hyperparameters.{where}{key}="
                      f"{value!r}: {why}")


def resolve(golden: GoldenVariant, module: Any, overrides: Mapping[str, Any], action_dim: int) -> Resolved:
    """Apply every recorded key of ``golden`` to ``module``'s ``Config`` and ``build`` arguments, or refuse the set.

    ``overrides`` are the registry variant's own settings (``iql_deterministic`` of the IQL variants): a recorded
    value that contradicts one belongs to another variant and is refused. ``action_dim`` derives CORL's default of a
    constructor argument ``train()`` computes (CQL's ``target_entropy = -action_dim``)."""
    hp = golden.meta.get("hyperparameters", {})
    flat = "train_config" not in hp and "trainer_kwargs" not in hp
    train_config = dict(hp) if flat else dict(hp.get("train_config", {}))
    trainer_kwargs = {} if flat else dict(hp.get("trainer_kwargs", {}))
    defaults = module.Config()
    fields = {f.name for f in dataclasses.fields(defaults)}
    trainer_args = getattr(module, "TRAINER_ARGS", {})
    where_tc = "" if flat else "train_config."
    out = Resolved(config=defaults)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    for key, value in train_config.items():
        if _not_replayed(golden, out, where_tc, key, value):
            continue
        if key not in fields:
            raise _refuse(golden, where_tc, key, value, f"not a field of {module.__name__}.Config and not in the "
                          "not-replayed table (checks/conformance/hyperparameters.py)")
        values[key] = _coerce(value, getattr(defaults, key))
        sources[key] = f"{where_tc}{key}"
    max_action = values.get(BUILD_ARG)
    if BUILD_ARG in trainer_args and BUILD_ARG in trainer_kwargs:
        max_action = trainer_kwargs[BUILD_ARG]
        out.applied[f"trainer_kwargs.{BUILD_ARG}"] = max_action
    for key, value in trainer_kwargs.items():
        if _not_replayed(golden, out, "trainer_kwargs.", key, value):
            continue
        arg = trainer_args.get(key)
        if arg is None:
            raise _refuse(golden, "trainer_kwargs.", key, value, f"not a constructor argument {module.__name__} "
                          "declares in TRAINER_ARGS and not in the not-replayed table "
                          "(checks/conformance/hyperparameters.py)")
        if arg.field is None:
            continue
        value = _coerce(value, getattr(defaults, arg.field))
        if arg.scaled:
            value = _unscale(golden, key, value, 1.0 if max_action is None else float(max_action))
        if arg.field in values and not _same(values[arg.field], value):
            out.notes.append(f"{sources[arg.field]}={values[arg.field]!r} but trainer_kwargs.{key}="
                             f"{trainer_kwargs[key]!r}: the trainer ran with trainer_kwargs, so that is replayed")
            out.overruled[sources[arg.field]] = f"trainer_kwargs.{key}"
        values[arg.field] = value
        sources.setdefault(arg.field, f"trainer_kwargs.{key}")
        out.applied[f"trainer_kwargs.{key}"] = value

    for key, value in overrides.items():
        if key in values and not _same(values[key], value):
            raise _refuse(golden, sources[key].removesuffix(key), key, values[key],
                          f"variant {golden.name} runs with {key}={value!r}; these traces belong to another variant")
        values.setdefault(key, value)
        sources.setdefault(key, f"variant {golden.name}")
    out.config = dataclasses.replace(defaults, **values)
    out.applied.update({sources[k]: v for k, v in values.items() if sources[k] not in out.overruled})
    if max_action is not None:
        out.build[BUILD_ARG] = float(max_action)
    derived = getattr(module, "derived_defaults", lambda _: {})(action_dim)
    out.differs = _differs(defaults, derived, values, train_config, where_tc, out.not_replayed)
    return out


def _not_replayed(golden: GoldenVariant, out: Resolved, where: str, key: str, value: Any) -> bool:
    entry = NOT_REPLAYED.get(key)
    if entry is None:
        return False
    if entry.only and not any(_same(value, ok) for ok in entry.only):
        raise _refuse(golden, where, key, value, f"{entry.reason}; the replay cannot honour any value but "
                      f"{', '.join(repr(v) for v in entry.only)}")
    problem = entry.check(value, golden) if entry.check is not None else None
    if problem is not None:
        raise _refuse(golden, where, key, value, problem)
    out.not_replayed[f"{where}{key}"] = entry.reason
    return True


def _unscale(golden: GoldenVariant, key: str, value: float, scale: float) -> float:
    """The config value ``train()`` multiplied by ``max_action``; refused where the division does not round-trip."""
    unscaled = value / scale
    if unscaled * scale != value:
        raise _refuse(golden, "trainer_kwargs.", key, value, f"is config × max_action ({scale}) in CORL, and "
                      f"{value!r} / {scale} does not round-trip in float64")
    return unscaled


def _differs(defaults: Any, derived: Mapping[str, Any], values: Mapping[str, Any], train_config: Mapping[str, Any],
             where: str, not_replayed: Mapping[str, str]) -> list[str]:
    """``key=value (CORL default d)`` for every recorded value other than CORL's default, replayed or not
    (``derived``: the defaults ``train()`` computes from the environment, for fields declared ``None``)."""
    out = []
    for key, value in values.items():
        default = derived.get(key, getattr(defaults, key))
        if not _same(value, default):
            out.append(f"{key}={value!r} (CORL default {default!r})")
    for key, value in train_config.items():
        if key in values or not hasattr(defaults, key) or NOT_REPLAYED[key].label:
            continue
        default = getattr(defaults, key)
        if not _same(_coerce(value, default), default):
            out.append(f"{key}={value!r} (CORL default {default!r}; not replayed: {not_replayed[where + key]})")
    return out
