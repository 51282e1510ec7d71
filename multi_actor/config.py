"""Multi-actor (POGO) configuration: dataclasses, YAML + ``key=value`` overrides, strict validation.

Validation never pads, truncates or guesses: ``num_actors`` must equal ``len(w2_weights) + 1`` and
``len(actor_configs)``, weights are finite and ≥ 0, policy types and energies are known, and algorithm constraints
hold (e.g. SAC-N/EDAC/CQL need a stochastic actor0 with log-probs). Every violation raises :class:`ConfigError`, which
names the field, the value and what was expected; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multi_actor import registry
from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import yaml_dump, yaml_load

#: every base algorithm, from the registry (declaration order)
ALGORITHMS = registry.names()
#: the PyTorch algorithms
TORCH_ALGORITHMS = registry.names("torch")
POLICY_TYPES = ("deterministic", "gaussian", "tanh_gaussian", "implicit")
ENERGIES = ("base", "q", "advantage")
W2_METHODS = ("auto", "closed_form", "sinkhorn")
WANDB_MODES = ("online", "offline", "disabled")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")

#: actor0's policy type per algorithm (IQL: chosen by ``base.iql_deterministic``)
ACTOR0_TYPES = {name: spec.actor0_types for name, spec in registry.ALGORITHMS.items()}
#: policy types whose log-probability is defined (needed by the `base` energy of CQL/AWAC/SAC-N/EDAC)
LOG_PROB_TYPES = ("gaussian", "tanh_gaussian")
#: algorithms whose `base` actor objective needs log-probs of actor i
BASE_NEEDS_LOG_PROB = tuple(n for n, spec in registry.ALGORITHMS.items() if spec.base_needs_log_prob)
ADVANTAGE_ALGOS = tuple(n for n, spec in registry.ALGORITHMS.items() if spec.advantage_energy)


class ConfigError(InputError):
    """A config field has a wrong value; the message names the field, the value and the expectation."""

    def __init__(self, field_name: str, value: Any, expected: str):
        self.field = field_name
        self.value = value
        self.expected = expected
        super().__init__(f"config field '{field_name}': got {value!r}; expected {expected}")


@dataclass
class ActorConfig:
    """One actor of the chain. For actor0 only ``type`` is meaningful (it is the base algorithm's own actor)."""

    type: str
    hidden_dim: int = 256
    n_hidden: int = 2
    energy: str = "base"
    lr: float | None = None
    noise_dim: int | None = None


@dataclass
class MultiActorConfig:
    """Everything a multi-actor run needs; ``base`` overrides fields of the reference algorithm's ``Config``."""

    algo: str = "iql"
    num_actors: int = 3
    w2_weights: list[float] | None = None
    actor_configs: list[ActorConfig] | None = None
    w2_method: str = "auto"
    w2_samples: int = 16
    sinkhorn_epsilon: float = 0.01
    base: dict[str, Any] = field(default_factory=dict)
    dataset: str = "pogo/hopper-noisy-v0"
    seed: int = 0
    steps: int = 2000
    batch_size: int | None = None
    eval_freq: int = 1000
    eval_episodes: int = 3
    eval_seed: int = 1000
    eval_stochastic: bool = True
    log_freq: int = 100
    checkpoint_freq: int = 500
    out_dir: str | None = None
    wandb_mode: str = "disabled"
    wandb_project: str = "pogo-audit"
    #: torch device of every module, optimizer state, generator and batch of the PyTorch trainers (``cpu``, ``cuda``,
    #: ``cuda:N``); the JAX trainer runs on JAX's default backend
    device: str = "cpu"

    # ------------------------------------------------------------------------------------------------ derived

    def resolved(self) -> MultiActorConfig:
        """Validated copy with defaults filled in (weights 1.0, default actor types); raises ConfigError."""
        cfg = dataclasses.replace(self, base=dict(self.base) if isinstance(self.base, dict) else self.base)
        validate(cfg)
        if cfg.w2_weights is None:
            cfg.w2_weights = [1.0] * (cfg.num_actors - 1)
        if cfg.actor_configs is None:
            cfg.actor_configs = [ActorConfig(type=default_actor0_type(cfg))] + [
                ActorConfig(type=default_extra_type(cfg.algo)) for _ in range(cfg.num_actors - 1)
            ]
        validate(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml_dump(self.to_dict(), sort_keys=False)


def default_actor0_type(cfg: MultiActorConfig) -> str:
    if cfg.algo == "iql":
        return "deterministic" if cfg.base.get("iql_deterministic", False) else "gaussian"
    return ACTOR0_TYPES[cfg.algo][0]


def default_extra_type(algo: str) -> str:
    """Actors i ≥ 1 default to actor0's kind (Gaussian for IQL/AWAC, tanh-Gaussian for SAC-style, deterministic else)."""
    return registry.algorithm(algo).extra_actor_type


# ----------------------------------------------------------------------------------------------- validation


def _check_type(name: str, value: Any, kind: type | tuple[type, ...], expected: str) -> None:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(name, value, expected)
    if not isinstance(value, kind):
        raise ConfigError(name, value, expected)


def _check_int(name: str, value: Any, minimum: int) -> None:
    _check_type(name, value, int, f"an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")


def _check_number(name: str, value: Any, minimum: float, strict: bool = False) -> None:
    cmp = ">" if strict else ">="
    _check_type(name, value, (int, float), f"a finite number {cmp} {minimum}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large to be a float
        finite = False
    if not finite or (value <= minimum if strict else value < minimum):
        raise ConfigError(name, value, f"a finite number {cmp} {minimum}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(name, value, f"one of {', '.join(choices)}")


def check_device(name: str, value: Any) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` that exists on this machine; else :class:`ConfigError` naming ``name``.

    Checked when the config is validated, so a missing GPU is a one-line usage error before anything is built.
    """
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
        raise ConfigError(name, value, "cpu, cuda or cuda:N")
    if value == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(name, value, f"cpu: CUDA is not available on this machine (torch {torch.__version__})")
    count = torch.cuda.device_count()
    index = int(value.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(name, value, f"cpu or cuda:0..cuda:{count - 1} ({count} CUDA device(s) here)")


def _base_config_class(algo: str):
    from multi_actor.algorithms import reference_config_class

    return reference_config_class(algo)


def validate(cfg: MultiActorConfig) -> None:
    """Raise :class:`ConfigError` on the first violated rule."""
    _check_choice("algo", cfg.algo, ALGORITHMS)
    _check_int("num_actors", cfg.num_actors, 1)
    if cfg.w2_weights is not None:
        if not isinstance(cfg.w2_weights, list):
            raise ConfigError("w2_weights", cfg.w2_weights, "a list of num_actors - 1 finite numbers >= 0")
        if len(cfg.w2_weights) != cfg.num_actors - 1:
            raise ConfigError("w2_weights", cfg.w2_weights,
                              f"exactly num_actors - 1 = {cfg.num_actors - 1} weights (no padding or truncation)")
        for i, w in enumerate(cfg.w2_weights):
            _check_number(f"w2_weights[{i}]", w, 0.0)
    _check_choice("w2_method", cfg.w2_method, W2_METHODS)
    _check_int("w2_samples", cfg.w2_samples, 2)
    _check_number("sinkhorn_epsilon", cfg.sinkhorn_epsilon, 0.0, strict=True)
    if not isinstance(cfg.base, dict):
        raise ConfigError("base", cfg.base, "a mapping of the reference algorithm's config fields")
    base_cls = _base_config_class(cfg.algo)
    base_fields = {f.name: f for f in dataclasses.fields(base_cls)}
    defaults = base_cls()
    for key, value in cfg.base.items():
        if key not in base_fields:
            raise ConfigError(f"base.{key}", value, f"a field of the {cfg.algo} config ({', '.join(base_fields)})")
        default = getattr(defaults, key)
        if default is not None and not _same_kind(value, default):
            raise ConfigError(f"base.{key}", value, f"a value of type {type(default).__name__}")
    _check_type("dataset", cfg.dataset, str, "a Minari dataset id")
    _check_type("seed", cfg.seed, int, "an integer")
    _check_int("steps", cfg.steps, 1)
    if cfg.batch_size is not None:
        _check_int("batch_size", cfg.batch_size, 1)
    _check_int("eval_freq", cfg.eval_freq, 0)
    _check_int("eval_episodes", cfg.eval_episodes, 1)
    _check_type("eval_seed", cfg.eval_seed, int, "an integer")
    _check_type("eval_stochastic", cfg.eval_stochastic, bool, "true or false")
    _check_int("log_freq", cfg.log_freq, 1)
    _check_int("checkpoint_freq", cfg.checkpoint_freq, 0)
    if cfg.out_dir is not None:
        _check_type("out_dir", cfg.out_dir, str, "a directory path")
    _check_choice("wandb_mode", cfg.wandb_mode, WANDB_MODES)
    _check_type("wandb_project", cfg.wandb_project, str, "a project name")
    check_device("device", cfg.device)
    if cfg.actor_configs is not None:
        _validate_actors(cfg)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _validate_actors(cfg: MultiActorConfig) -> None:
    actors = cfg.actor_configs
    if not isinstance(actors, list):
        raise ConfigError("actor_configs", actors, f"a list of num_actors = {cfg.num_actors} actor configs")
    if len(actors) != cfg.num_actors:
        raise ConfigError("actor_configs", f"{len(actors)} entries",
                          f"exactly num_actors = {cfg.num_actors} entries (actor0 first)")
    for i, a in enumerate(actors):
        if not isinstance(a, ActorConfig):
            raise ConfigError(f"actor_configs[{i}]", a, "an actor config mapping")
        _check_choice(f"actor_configs[{i}].type", a.type, POLICY_TYPES)
        _check_int(f"actor_configs[{i}].hidden_dim", a.hidden_dim, 1)
        _check_int(f"actor_configs[{i}].n_hidden", a.n_hidden, 1)
        _check_choice(f"actor_configs[{i}].energy", a.energy, ENERGIES)
        if a.lr is not None:
            _check_number(f"actor_configs[{i}].lr", a.lr, 0.0, strict=True)
        if a.noise_dim is not None:
            _check_int(f"actor_configs[{i}].noise_dim", a.noise_dim, 1)
    actor0 = actors[0].type
    allowed0 = ACTOR0_TYPES[cfg.algo]
    if actor0 not in allowed0:
        need = " (the algorithm needs a stochastic actor0 with log-probs)" if cfg.algo in BASE_NEEDS_LOG_PROB else ""
        raise ConfigError("actor_configs[0].type", actor0, f"{' or '.join(allowed0)} for {cfg.algo}{need}")
    if cfg.algo == "iql" and actor0 != default_actor0_type(cfg):
        raise ConfigError("actor_configs[0].type", actor0,
                          f"{default_actor0_type(cfg)!r} to match base.iql_deterministic="
                          f"{bool(cfg.base.get('iql_deterministic', False))}")
    for i, a in enumerate(actors[1:], start=1):
        if a.energy == "advantage" and cfg.algo not in ADVANTAGE_ALGOS:
            raise ConfigError(f"actor_configs[{i}].energy", a.energy,
                              f"base or q for {cfg.algo} (advantage is defined for {', '.join(ADVANTAGE_ALGOS)})")
        if a.energy == "base" and cfg.algo in BASE_NEEDS_LOG_PROB and a.type not in LOG_PROB_TYPES:
            raise ConfigError(f"actor_configs[{i}].type", a.type,
                              f"{' or '.join(LOG_PROB_TYPES)} with energy 'base' for {cfg.algo} (its actor objective "
                              f"needs log-probs); use energy 'q' for other types")
    if cfg.w2_method == "closed_form":
        from multi_actor.policies import POLICY_CLASSES

        for i in range(1, len(actors)):
            pair = [POLICY_CLASSES[actors[j].type] for j in (i, i - 1)]
            if all(c.stochastic for c in pair) and not all(c.gaussian for c in pair):
                raise ConfigError("w2_method", cfg.w2_method,
                                  f"auto or sinkhorn: actors {i - 1} and {i} ({actors[i - 1].type}, {actors[i].type}) "
                                  "are not both Gaussian, so W2 has no closed form")
    unsupported = registry.algorithm(cfg.algo).unsupported_extra_types
    for i, a in enumerate(actors[1:], start=1):
        if a.type in unsupported:
            raise ConfigError(f"actor_configs[{i}].type", a.type,
                              f"{' or '.join(t for t in POLICY_TYPES if t not in unsupported)} for {cfg.algo}")


# ------------------------------------------------------------------------------------------ loading / merging


def from_dict(data: Any) -> MultiActorConfig:
    """Build a config from a plain mapping (YAML); unknown or mistyped fields raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("<root>", data, "a mapping of config fields")
    known = {f.name for f in dataclasses.fields(MultiActorConfig)}
    for key in data:
        if key not in known:
            raise ConfigError(str(key), data[key], f"a known field ({', '.join(sorted(known))})")
    values = dict(data)
    if values.get("actor_configs") is not None:
        raw = values["actor_configs"]
        if not isinstance(raw, list):
            raise ConfigError("actor_configs", raw, "a list of actor config mappings")
        values["actor_configs"] = [_actor_from_dict(i, a) for i, a in enumerate(raw)]
    if isinstance(values.get("w2_weights"), tuple):
        values["w2_weights"] = list(values["w2_weights"])
    if "base" in values and values["base"] is None:
        values["base"] = {}
    return MultiActorConfig(**values)


def _actor_from_dict(i: int, raw: Any) -> ActorConfig:
    if isinstance(raw, ActorConfig):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"actor_configs[{i}]", raw, "a mapping with at least 'type'")
    known = {f.name for f in dataclasses.fields(ActorConfig)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"actor_configs[{i}].{key}", raw[key], f"a known field ({', '.join(sorted(known))})")
    if "type" not in raw:
        raise ConfigError(f"actor_configs[{i}].type", None, f"one of {', '.join(POLICY_TYPES)} (field is required)")
    return ActorConfig(**raw)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of config fields at the top level")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override (value parsed as YAML) to a config mapping, in place.

    ``actor_configs.1.type=implicit`` indexes lists; ``base.beta=5.0`` sets a base-config field.
    """
    if "=" not in assignment:
        raise InputError(f"--set {assignment!r}: expected KEY=VALUE, e.g. base.beta=5.0 or actor_configs.1.type=implicit")
    key, _, text = assignment.partition("=")
    try:
        value = yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        raise InputError(f"--set {assignment!r}: value {text!r} is not valid YAML") from None
    parts = key.strip().split(".")
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        nxt = parts[depth + 1]
        if isinstance(target, list):
            idx = _index(part, target, key)
            target = target[idx]
            continue
        if not isinstance(target, dict):
            raise InputError(f"--set {assignment!r}: {'.'.join(parts[:depth])} is not a mapping or list")
        if part not in target or target[part] is None:
            target[part] = [] if _is_index(nxt) else {}
        target = target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[_index(last, target, key)] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise InputError(f"--set {assignment!r}: {'.'.join(parts[:-1])} is not a mapping or list")


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit()


def _index(part: str, seq: list, key: str) -> int:
    if not _is_index(part) or int(part) >= len(seq):
        raise InputError(f"--set {key}: index {part!r} out of range (list has {len(seq)} entries)")
    return int(part)


def build_config(config_file: str | None = None, overrides: list[str] | None = None,
                 extra_actor_types: list[str] | None = None, **explicit: Any) -> MultiActorConfig:
    """YAML file, then explicit CLI flags (those not None), then ``--set`` overrides; validated and resolved.

    ``extra_actor_types`` (``--actor-types``) sets actors 1..N-1 (actor0 keeps the algorithm's type) and, unless
    ``num_actors`` is given explicitly, the number of actors.
    """
    data: dict[str, Any] = load_yaml(config_file) if config_file else {}
    for key, value in explicit.items():
        if value is not None:
            data[key] = value
    for assignment in overrides or []:
        apply_override(data, assignment)
    cfg = from_dict(data)
    if extra_actor_types:
        if explicit.get("num_actors") is None:
            cfg.num_actors = len(extra_actor_types) + 1
        cfg.actor_configs = [ActorConfig(type=default_actor0_type(cfg))] + [
            ActorConfig(type=t) for t in extra_actor_types]
    return cfg.resolved()
