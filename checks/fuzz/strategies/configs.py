"""Valid multi-actor configs as the YAML mappings ``from_dict`` reads, built from small composable strategies.

Every mapping drawn by :func:`valid_config_dicts` satisfies every rule of ``multi_actor.config.validate``; with
``trainable=True`` it also has tiny networks and tame hyperparameters, so that one training step is cheap
(:func:`trainable_cases`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from multi_actor import registry
from multi_actor.algorithms import reference_config_class
from multi_actor.config import (
    ACTOR0_TYPES,
    ADVANTAGE_ALGOS,
    ALGORITHMS,
    BASE_NEEDS_LOG_PROB,
    ENERGIES,
    LOG_PROB_TYPES,
    POLICY_TYPES,
    TORCH_ALGORITHMS,
    W2_METHODS,
    WANDB_MODES,
    ActorConfig,
    MultiActorConfig,
    default_actor0_type,
    default_extra_type,
)
from multi_actor.policies import POLICY_CLASSES

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(MultiActorConfig))
ACTOR_FIELDS = tuple(f.name for f in dataclasses.fields(ActorConfig))
def _range(bounds: tuple[Any, ...]) -> SearchStrategy[Any]:
    """A strategy for one ``AlgorithmSpec.trainable`` range: ``(False, True)``, ``(lo, hi)`` of ints or floats, or
    ``(None, lo, hi)`` for a field that may stay unset."""
    if bounds == (False, True):
        return st.booleans()
    if bounds[0] is None:
        return st.none() | _range(bounds[1:])
    lo, hi = bounds
    return st.integers(lo, hi) if isinstance(lo, int) and isinstance(hi, int) else st.floats(float(lo), float(hi))


def algo_of(d: dict[str, Any]) -> str:
    """The algorithm of a valid mapping (the config default when omitted)."""
    return d.get("algo", MultiActorConfig.algo)


def num_actors_of(d: dict[str, Any]) -> int:
    """The number of actors of a valid mapping (the config default when omitted)."""
    return d.get("num_actors", MultiActorConfig.num_actors)


@functools.cache
def base_class(algo: str) -> type:
    """The reference config dataclass of ``algo`` (imported once, outside of any strategy draw)."""
    return reference_config_class(algo)


def warm_base_classes() -> None:
    """Import every algorithm's config class up front, so that no strategy draw includes an import."""
    for algo in ALGORITHMS:
        base_class(algo)


def finite_floats(lo: float | None = None, hi: float | None = None, **kw: Any) -> SearchStrategy[float]:
    """Floats in [lo, hi] without NaN or ±Inf."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, **kw)


def valid_weights(trainable: bool) -> SearchStrategy[float | int]:
    """A valid ``w_i``: finite and >= 0 (realistic magnitudes when a trainer is built)."""
    return finite_floats(0.0, 10.0) if trainable else finite_floats(0.0) | st.integers(0, 10**6)


def _positive(trainable_range: tuple[float, float] | None = None) -> SearchStrategy[float | int]:
    """A number > 0 (in ``trainable_range`` when given)."""
    if trainable_range:
        return finite_floats(*trainable_range)
    return finite_floats(0.0, exclude_min=True) | st.integers(1, 10**6)


@functools.cache  # strategies are immutable: built once per argument, not at every draw
def _actor_dict(kind: str, energies: Sequence[str], trainable: bool) -> SearchStrategy[dict[str, Any]]:
    """One actor mapping of type ``kind``; ``energy`` is omitted only when the default ``base`` is allowed."""
    if trainable:
        sized = {"hidden_dim": st.integers(4, 16), "n_hidden": st.integers(1, 2)}
        optional = {"lr": st.none() | finite_floats(1e-5, 1e-2), "noise_dim": st.none() | st.integers(1, 4)}
    else:
        sized = {}
        optional = {"hidden_dim": st.integers(min_value=1), "n_hidden": st.integers(min_value=1),
                    "lr": st.none() | _positive(), "noise_dim": st.none() | st.integers(min_value=1)}
    required: dict[str, SearchStrategy[Any]] = {"type": st.just(kind), **sized}
    if "base" in energies:
        optional["energy"] = st.sampled_from(energies)
    else:
        required["energy"] = st.sampled_from(energies)
    return st.fixed_dictionaries(required, optional=optional)


def _energies(algo: str, kind: str) -> tuple[str, ...]:
    """Energies allowed for an actor i >= 1 of type ``kind``."""
    allowed = ["q"]
    if algo not in BASE_NEEDS_LOG_PROB or kind in LOG_PROB_TYPES:
        allowed.append("base")
    if algo in ADVANTAGE_ALGOS:
        allowed.append("advantage")
    return tuple(allowed)


def _extra_types(algo: str) -> tuple[str, ...]:
    """Types of actors i >= 1, stochastic ones first (hypothesis favours early choices)."""
    order = ("implicit", "gaussian", "tanh_gaussian", "deterministic")
    unsupported = registry.algorithm(algo).unsupported_extra_types
    return tuple(t for t in order if t in POLICY_TYPES and t not in unsupported)


@functools.cache
def extra_actor(algo: str, trainable: bool) -> SearchStrategy[dict[str, Any]]:
    """A valid mapping of an actor i >= 1 of ``algo``."""
    return st.sampled_from(_extra_types(algo)).flatmap(lambda t: _actor_dict(t, _energies(algo, t), trainable))


@functools.cache
def _actor_chain(algo: str, n: int, actor0: str, trainable: bool) -> SearchStrategy[list[dict[str, Any]]]:
    """``n`` actor mappings, actor0 of type ``actor0`` first."""
    first = _actor_dict(actor0, ENERGIES, trainable)
    return st.tuples(first, *[extra_actor(algo, trainable) for _ in range(n - 1)]).map(list)


def base_value(default: Any) -> SearchStrategy[Any]:
    """A value the validator accepts for a base field with this default (same kind)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers()
    if isinstance(default, float):
        return st.floats(allow_nan=False) | st.integers()
    if isinstance(default, str):
        return st.text(max_size=12)
    return st.none() | finite_floats(0.0, 0.9)


@functools.cache
def _base_overrides(algo: str, actor0: str, trainable: bool) -> SearchStrategy[dict[str, Any]]:
    """``base`` overrides; for IQL ``iql_deterministic`` always agrees with actor0's type."""
    spec = registry.algorithm(algo)
    forced = dict(spec.trainable_fixed) if trainable else {}
    required: dict[str, SearchStrategy[Any]] = {k: st.just(v) for k, v in forced.items()}
    if trainable:
        optional = {name: _range(bounds) for name, bounds in spec.trainable.items()}
    else:
        cls = base_class(algo)
        defaults = cls()
        optional = {f.name: base_value(getattr(defaults, f.name)) for f in dataclasses.fields(cls)
                    if f.name != "iql_deterministic"}
    if algo == "iql":
        if actor0 == "deterministic":
            required["iql_deterministic"] = st.just(True)
        else:
            optional["iql_deterministic"] = st.just(False)
    return st.fixed_dictionaries(required, optional=optional)


@functools.cache
def _other_fields(trainable: bool) -> dict[str, SearchStrategy[Any]]:
    """Valid values of the remaining top-level fields (each optional in the mapping)."""
    return {
        "w2_samples": st.integers(2, 8) if trainable else st.integers(min_value=2),
        "sinkhorn_epsilon": _positive((0.05, 1.0) if trainable else None),
        "dataset": st.text(max_size=20),
        "seed": st.integers(),
        "steps": st.integers(min_value=1),
        "batch_size": st.none() | st.integers(min_value=1),
        "eval_freq": st.integers(min_value=0),
        "eval_episodes": st.integers(min_value=1),
        "eval_seed": st.integers(),
        "eval_stochastic": st.booleans(),
        "log_freq": st.integers(min_value=1),
        "checkpoint_freq": st.integers(min_value=0),
        "out_dir": st.none() | st.text(max_size=20),
        "wandb_mode": st.sampled_from(WANDB_MODES),
        "wandb_project": st.text(max_size=12),
    }


def effective_types(d: dict[str, Any]) -> list[str]:
    """Actor types of a valid config mapping after defaults are filled in."""
    if d.get("actor_configs"):
        return [a["type"] for a in d["actor_configs"]]
    algo = algo_of(d)
    actor0 = default_actor0_type(MultiActorConfig(algo=algo, base=d.get("base") or {}))
    return [actor0] + [default_extra_type(algo)] * (num_actors_of(d) - 1)


def _closed_form_ok(types: Sequence[str]) -> bool:
    """No consecutive pair is stochastic on both sides without being Gaussian on both sides."""
    for a, b in zip(types, types[1:]):
        pa, pb = POLICY_CLASSES[a], POLICY_CLASSES[b]
        if pa.stochastic and pb.stochastic and not (pa.gaussian and pb.gaussian):
            return False
    return True


#: fields a valid mapping may omit when they hold the default
_DEFAULT_VALUES = {name: getattr(MultiActorConfig(), name)
                   for name in ("algo", "num_actors", "w2_method", "base", "w2_weights", "actor_configs")}


@st.composite
def valid_config_dicts(draw: st.DrawFn, algos: Sequence[str] = ALGORITHMS, trainable: bool = False,
                       min_actors: int = 1) -> dict[str, Any]:
    """A config mapping that satisfies every rule of ``validate`` (explicit actors with tiny nets when trainable).

    ``num_actors`` is always present when ``min_actors`` > 1.
    """
    algo = draw(st.sampled_from(algos))
    n = draw(st.sampled_from([k for k in ((3, 2, 4, 1) if trainable else (3, 2, 4, 1, 5)) if k >= min_actors]))
    actor0 = draw(st.sampled_from(ACTOR0_TYPES[algo]))
    chain = _actor_chain(algo, n, actor0, trainable)
    d: dict[str, Any] = {
        "algo": algo,
        "num_actors": n,
        "base": draw(_base_overrides(algo, actor0, trainable)),
        "actor_configs": draw(chain if trainable else st.none() | chain),
        "w2_weights": draw(st.none() | st.lists(valid_weights(trainable), min_size=n - 1, max_size=n - 1)),
        "w2_method": draw(st.sampled_from(W2_METHODS)),
    }
    if d["w2_method"] == "closed_form" and not _closed_form_ok(effective_types(d)):
        d["w2_method"] = draw(st.sampled_from(("auto", "sinkhorn")))
    d.update(draw(st.fixed_dictionaries({}, optional=_other_fields(trainable))))
    kept = {"num_actors"} if min_actors > 1 else set()
    defaults = sorted(k for k, v in _DEFAULT_VALUES.items() if d.get(k) == v and k not in kept)
    omitted = draw(st.sets(st.sampled_from(defaults))) if defaults else set()
    return {k: v for k, v in d.items() if k not in omitted}


def valid_configs() -> SearchStrategy[dict[str, Any]]:
    """Valid mappings over every algorithm (rebrac included)."""
    warm_base_classes()
    return valid_config_dicts()


# trainer cases -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainCase:
    """A valid torch-algorithm config with tiny networks, a synthetic dataset shape, batch size and seed."""

    config: dict[str, Any]
    state_dim: int
    action_dim: int
    batch_size: int
    seed: int


def trainable_cases() -> SearchStrategy[TrainCase]:
    """Valid torch-algorithm configs (rebrac's trainer is JAX) with 1-6 state and 1-4 action dimensions."""
    warm_base_classes()
    return st.builds(TrainCase, valid_config_dicts(TORCH_ALGORITHMS, trainable=True), st.integers(1, 6),
                     st.integers(1, 4), st.integers(2, 16), st.integers(0, 2**31 - 1))
