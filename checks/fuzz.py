"""Property-based fuzzing of the config, logging and data layers with hypothesis.

Small strategies generate valid and near-valid multi-actor configs (as the YAML mappings ``from_dict`` reads),
``--set`` overrides, logging payloads and Minari-like episodes. Each property is a plain function that raises on a
violation (an ``AssertionError`` describing it, or whatever the code under test raised), so pytest can call it
directly. :func:`run_fuzz` runs the properties of a target under explicit hypothesis settings (the same with or
without the ``ci`` profile) and returns one :class:`~pogo_audit.results.CheckResult` per property.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import re
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.extra.numpy import array_shapes, arrays, from_dtype
from hypothesis.strategies import SearchStrategy

from multi_actor import config as macfg
from multi_actor import logger as malog
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
    ConfigError,
    MultiActorConfig,
)
from pogo_audit import data as padata
from pogo_audit.errors import DataError, InputError, UsageError
from pogo_audit.results import FAIL, PASS, CheckResult

TARGETS = ("configs", "logging", "data", "all")
DEFAULT_DATABASE_DIR = Path(".pogo-audit/hypothesis")
MAX_REPR = 2000
_EXAMPLE_ATTR = "pogo_fuzz_example"

_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(MultiActorConfig))
_ACTOR_FIELDS = tuple(f.name for f in dataclasses.fields(ActorConfig))
#: (stochastic, Gaussian) per policy type, as the README defines them (closed-form W2 only for Gaussian pairs)
_POLICY_KIND = {"deterministic": (False, False), "gaussian": (True, True), "tanh_gaussian": (True, False),
                "implicit": (True, False)}
#: default type of actors i >= 1 per algorithm (README: actor0's kind)
_DEFAULT_EXTRA = {"iql": "gaussian", "awac": "gaussian", "td3_bc": "deterministic", "rebrac": "deterministic",
                  "cql": "tanh_gaussian", "sac_n": "tanh_gaussian", "edac": "tanh_gaussian"}
#: base-config overrides that keep a one-step trainer small and numerically tame
_TRAINABLE_BASE: dict[str, dict[str, SearchStrategy[Any]]] = {
    "iql": {"beta": st.floats(0.5, 5.0), "iql_tau": st.floats(0.5, 0.9),
            "actor_dropout": st.none() | st.floats(0.0, 0.5)},
    "td3_bc": {"alpha": st.floats(0.5, 5.0), "policy_freq": st.integers(1, 3), "policy_noise": st.floats(0.0, 0.5)},
    "cql": {"cql_n_actions": st.integers(2, 4), "q_n_hidden_layers": st.integers(1, 3),
            "cql_importance_sample": st.booleans(), "cql_lagrange": st.booleans(),
            "use_automatic_entropy_tuning": st.booleans(), "backup_entropy": st.booleans(),
            "cql_max_target_backup": st.booleans(), "bc_steps": st.integers(0, 2), "orthogonal_init": st.booleans()},
    "awac": {"awac_lambda": st.floats(0.1, 3.0)},
    "sac_n": {"num_critics": st.integers(2, 4)},
    "edac": {"num_critics": st.integers(2, 4), "eta": st.floats(0.0, 2.0)},
}
#: tiny critics keep the trainer property fast (and flat critics are a case it must survive)
_TRAINABLE_BASE_FORCED = {"awac": {"hidden_dim": 8}, "sac_n": {"hidden_dim": 8}, "edac": {"hidden_dim": 8}}


def _fail(message: str) -> NoReturn:
    raise AssertionError(message)


def _difference(a: Any, b: Any, path: str = "") -> str | None:
    """First place where ``a`` and ``b`` differ in value or type (NaN equals NaN), or None."""
    where = path or "<root>"
    if type(a) is not type(b):
        return f"{where}: {a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            diff = _difference(a[k], b[k], f"{path}.{k}" if path else str(k))
            if diff:
                return diff
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = _difference(x, y, f"{path}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


# ------------------------------------------------------------------------------------------ config strategies


@functools.cache
def _base_class(algo: str) -> type:
    """The reference config dataclass of ``algo`` (imported once, outside of any strategy draw)."""
    return reference_config_class(algo)


def _warm_base_classes() -> None:
    for algo in ALGORITHMS:
        _base_class(algo)


def _floats(lo: float | None = None, hi: float | None = None, **kw: Any) -> SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, **kw)


def _weights(trainable: bool) -> SearchStrategy[float | int]:
    """A valid ``w_i``: finite and >= 0 (realistic magnitudes when a trainer is built)."""
    return _floats(0.0, 10.0) if trainable else _floats(0.0) | st.integers(0, 10**6)


def _positive(trainable_range: tuple[float, float] | None = None) -> SearchStrategy[float | int]:
    if trainable_range:
        return _floats(*trainable_range)
    return _floats(0.0, exclude_min=True) | st.integers(1, 10**6)


def _actor_dict(kind: str, energies: Sequence[str], trainable: bool) -> SearchStrategy[dict[str, Any]]:
    """One actor mapping of type ``kind``; ``energy`` is omitted only when the default ``base`` is allowed."""
    if trainable:
        sized = {"hidden_dim": st.integers(4, 16), "n_hidden": st.integers(1, 2)}
        optional = {"lr": st.none() | _floats(1e-5, 1e-2), "noise_dim": st.none() | st.integers(1, 4)}
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
    return tuple(t for t in order if t in POLICY_TYPES and not (algo == "rebrac" and t == "implicit"))


def _extra_actor(algo: str, trainable: bool) -> SearchStrategy[dict[str, Any]]:
    return st.sampled_from(_extra_types(algo)).flatmap(lambda t: _actor_dict(t, _energies(algo, t), trainable))


def _actor_chain(algo: str, n: int, actor0: str, trainable: bool) -> SearchStrategy[list[dict[str, Any]]]:
    first = _actor_dict(actor0, ENERGIES, trainable)
    return st.tuples(first, *[_extra_actor(algo, trainable) for _ in range(n - 1)]).map(list)


def _base_value(default: Any) -> SearchStrategy[Any]:
    """A value the validator accepts for a base field with this default (same kind)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers()
    if isinstance(default, float):
        return st.floats(allow_nan=False) | st.integers()
    if isinstance(default, str):
        return st.text(max_size=12)
    return st.none() | _floats(0.0, 0.9)


def _base_overrides(algo: str, actor0: str, trainable: bool) -> SearchStrategy[dict[str, Any]]:
    """``base`` overrides; for IQL ``iql_deterministic`` always agrees with actor0's type."""
    forced = _TRAINABLE_BASE_FORCED.get(algo, {}) if trainable else {}
    required: dict[str, SearchStrategy[Any]] = {k: st.just(v) for k, v in forced.items()}
    if trainable:
        optional = dict(_TRAINABLE_BASE[algo])
    else:
        cls = _base_class(algo)
        defaults = cls()
        optional = {f.name: _base_value(getattr(defaults, f.name)) for f in dataclasses.fields(cls)
                    if f.name != "iql_deterministic"}
    if algo == "iql":
        if actor0 == "deterministic":
            required["iql_deterministic"] = st.just(True)
        else:
            optional["iql_deterministic"] = st.just(False)
    return st.fixed_dictionaries(required, optional=optional)


def _other_fields(trainable: bool) -> dict[str, SearchStrategy[Any]]:
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


def _effective_types(d: dict[str, Any]) -> list[str]:
    """Actor types of a valid config mapping after defaults are filled in."""
    if d.get("actor_configs"):
        return [a["type"] for a in d["actor_configs"]]
    algo, n = d.get("algo", "iql"), d.get("num_actors", 3)
    actor0 = ACTOR0_TYPES[algo][0]
    if algo == "iql":
        actor0 = "deterministic" if (d.get("base") or {}).get("iql_deterministic") else "gaussian"
    return [actor0] + [_DEFAULT_EXTRA[algo]] * (n - 1)


def _closed_form_ok(types: Sequence[str]) -> bool:
    """No consecutive pair is stochastic on both sides without being Gaussian on both sides."""
    for a, b in zip(types, types[1:]):
        (sa, ga), (sb, gb) = _POLICY_KIND[a], _POLICY_KIND[b]
        if sa and sb and not (ga and gb):
            return False
    return True


_DEFAULT_VALUES = {"algo": "iql", "num_actors": 3, "w2_method": "auto", "base": {}, "w2_weights": None,
                   "actor_configs": None}


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
        "w2_weights": draw(st.none() | st.lists(_weights(trainable), min_size=n - 1, max_size=n - 1)),
        "w2_method": draw(st.sampled_from(W2_METHODS)),
    }
    if d["w2_method"] == "closed_form" and not _closed_form_ok(_effective_types(d)):
        d["w2_method"] = draw(st.sampled_from(("auto", "sinkhorn")))
    d.update(draw(st.fixed_dictionaries({}, optional=_other_fields(trainable))))
    kept = {"num_actors"} if min_actors > 1 else set()
    defaults = sorted(k for k, v in _DEFAULT_VALUES.items() if d.get(k) == v and k not in kept)
    omitted = draw(st.sets(st.sampled_from(defaults))) if defaults else set()
    return {k: v for k, v in d.items() if k not in omitted}


# near-valid values -------------------------------------------------------------------------------------------

_WRONG_SHAPES = st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


def _bad_int(minimum: int | None, nullable: bool = False) -> SearchStrategy[Any]:
    """Values ``_check_int``-style validation must reject: below minimum, floats, bools, strings, containers."""
    options = [st.floats(), st.booleans(), st.text(max_size=5), _WRONG_SHAPES]
    if minimum is not None:
        options.append(st.integers(max_value=minimum - 1))
    if not nullable:
        options.append(st.none())
    return st.one_of(options)


def _bad_number(strict: bool, nullable: bool = False) -> SearchStrategy[Any]:
    """Non-numbers, NaN/±Inf, negatives (and 0 when strict), ints too large for a float."""
    below = st.floats(max_value=0.0, allow_nan=False) if strict else st.floats(max_value=-5e-324, allow_nan=False)
    options = [st.sampled_from([math.nan, math.inf, -math.inf]), below,
               st.integers(max_value=0 if strict else -1), st.integers(2**1024, 2**1100),
               st.booleans(), st.text(max_size=5), _WRONG_SHAPES]
    if not nullable:
        options.append(st.none())
    return st.one_of(options)


def _bad_choice(choices: Sequence[str]) -> SearchStrategy[Any]:
    return st.one_of(st.text(max_size=8).filter(lambda s: s not in choices),
                     st.sampled_from([c.upper() for c in choices]), st.none(), st.integers(), st.booleans(),
                     _WRONG_SHAPES)


def _bad_str(nullable: bool = False) -> SearchStrategy[Any]:
    options = [st.integers(), st.floats(), st.booleans(), st.lists(st.text(max_size=3), max_size=2)]
    return st.one_of(options if nullable else [*options, st.none()])


def _bad_bool() -> SearchStrategy[Any]:
    return st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none())


_BAD_SCALARS: dict[str, SearchStrategy[Any]] = {
    "num_actors": _bad_int(1),
    "sinkhorn_epsilon": _bad_number(strict=True),
    "w2_samples": _bad_int(2),
    "algo": _bad_choice(ALGORITHMS),
    "w2_method": _bad_choice(W2_METHODS),
    "dataset": _bad_str(),
    "seed": _bad_int(None),
    "steps": _bad_int(1),
    "batch_size": _bad_int(1, nullable=True),
    "eval_freq": _bad_int(0),
    "eval_episodes": _bad_int(1),
    "eval_seed": _bad_int(None),
    "eval_stochastic": _bad_bool(),
    "log_freq": _bad_int(1),
    "checkpoint_freq": _bad_int(0),
    "out_dir": _bad_str(nullable=True),
    "wandb_mode": _bad_choice(WANDB_MODES),
    "wandb_project": _bad_str(),
}
_BAD_ACTOR_FIELDS: dict[str, SearchStrategy[Any]] = {
    "type": _bad_choice(POLICY_TYPES),
    "hidden_dim": _bad_int(1),
    "n_hidden": _bad_int(1),
    "energy": _bad_choice(ENERGIES),
    "lr": _bad_number(strict=True, nullable=True),
    "noise_dim": _bad_int(1, nullable=True),
}


@dataclass(frozen=True)
class ConfigCase:
    """A near-valid config mapping and the one field its ConfigError must name."""

    data: Any
    field: str
    mutation: str


def _with(d: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out.update(changes)
    return out


def _explicit_chain(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The actor list of a valid mapping, written out (defaults made explicit)."""
    if d.get("actor_configs"):
        return copy.deepcopy(d["actor_configs"])
    return [{"type": t} for t in _effective_types(d)]


Mutate = Callable[[dict[str, Any]], SearchStrategy[ConfigCase]]


@dataclass(frozen=True)
class Mutation:
    """One way to break a valid mapping, and which mappings it applies to."""

    name: str
    mutate: Mutate
    algos: tuple[str, ...] = ALGORITHMS
    min_actors: int = 1


def _m_weights_length(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    n = d.get("num_actors", 3)
    sizes = [n] + ([n - 2] if n >= 2 else [])
    lists = st.sampled_from(sizes).flatmap(lambda k: st.lists(_weights(False), min_size=k, max_size=k))
    return lists.map(lambda w: ConfigCase(_with(d, w2_weights=w), "w2_weights", "w2_weights length off by one"))


def _m_actor_count(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    chain = _explicit_chain(d)
    longer = _extra_actor(d.get("algo", "iql"), False).map(lambda a: [*chain, a])
    return (st.just(chain[:-1]) | longer).map(
        lambda c: ConfigCase(_with(d, actor_configs=c), "actor_configs", "actor_configs length off by one"))


def _m_num_actors(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    n = d.get("num_actors", 3)
    weights = d.get("w2_weights") or [1.0] * (n - 1)
    counts = [n + 1] + ([n - 1] if n > 1 else [])
    return st.sampled_from(counts).map(
        lambda k: ConfigCase(_with(d, num_actors=k, w2_weights=weights), "w2_weights", "num_actors off by one"))


def _m_weight_value(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """NaN, ±Inf, negative, too-large-for-float and non-number weights."""
    n = d.get("num_actors", 3)
    weights = list(d.get("w2_weights") or [1.0] * (n - 1))

    def put(i: int, value: Any) -> ConfigCase:
        w = copy.deepcopy(weights)
        w[i] = value
        return ConfigCase(_with(d, w2_weights=w), f"w2_weights[{i}]", "bad weight")

    return st.builds(put, st.integers(0, n - 2), _bad_number(strict=False))


def _m_scalar(name: str) -> Mutate:
    """A wrong type or out-of-range value for top-level field ``name``."""
    return lambda d: _BAD_SCALARS[name].map(lambda v: ConfigCase(_with(d, **{name: v}), name, f"bad {name}"))


def _wrong_kind(default: Any) -> SearchStrategy[Any]:
    """Values of another kind than a base field's default (bool for float, str for int, ...)."""
    if isinstance(default, bool):
        return st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.none())
    if isinstance(default, int):
        return st.one_of(st.floats(), st.booleans(), st.text(max_size=4), st.none())
    if isinstance(default, float):
        return st.one_of(st.booleans(), st.text(max_size=4), st.none(), _WRONG_SHAPES)
    return st.one_of(st.integers(), st.floats(), st.booleans(), st.none())


def _m_base_not_mapping(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    names = [f.name for f in dataclasses.fields(_base_class(d.get("algo", "iql")))]
    pairs = st.lists(st.tuples(st.sampled_from(names), st.floats()), min_size=1, max_size=2)
    values = st.one_of(pairs, pairs.map(lambda p: [list(kv) for kv in p]), st.text(max_size=4), st.integers(),
                       st.booleans())
    return values.map(lambda b: ConfigCase(_with(d, base=b), "base", "base is not a mapping"))


def _m_base_unknown(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    names = {f.name for f in dataclasses.fields(_base_class(d.get("algo", "iql")))}
    keys = st.one_of(st.text(max_size=8).filter(lambda k: k not in names), st.integers(), st.none())
    base = dict(d.get("base") or {})
    return keys.map(lambda k: ConfigCase(_with(d, base={**base, k: 1}), f"base.{k}", "unknown base field"))


def _m_base_kind(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    cls = _base_class(d.get("algo", "iql"))
    defaults = cls()
    typed = [f.name for f in dataclasses.fields(cls) if getattr(defaults, f.name) is not None]
    base = dict(d.get("base") or {})
    return st.sampled_from(typed).flatmap(lambda name: _wrong_kind(getattr(defaults, name)).map(
        lambda v: ConfigCase(_with(d, base={**base, name: v}), f"base.{name}", "base field of the wrong kind")))


def _with_actors(d: dict[str, Any], changes: dict[int, Any], **top: Any) -> dict[str, Any]:
    chain = _explicit_chain(d)
    for i, a in changes.items():
        chain[i] = a
    return _with(d, actor_configs=chain, **top)


def _actor_index(d: dict[str, Any], first: int = 0) -> SearchStrategy[int]:
    return st.integers(first, d.get("num_actors", 3) - 1)


def _m_actor_field(name: str) -> Mutate:
    """A wrong type or out-of-range value for field ``name`` of one actor."""
    def mutate(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
        chain = _explicit_chain(d)
        return st.builds(lambda i, v: ConfigCase(_with_actors(d, {i: {**chain[i], name: v}}),
                                            f"actor_configs[{i}].{name}", f"bad actor {name}"),
                         _actor_index(d), _BAD_ACTOR_FIELDS[name])

    return mutate


def _m_actor_type_missing(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    chain = _explicit_chain(d)
    return _actor_index(d).map(lambda i: ConfigCase(
        _with_actors(d, {i: {k: v for k, v in chain[i].items() if k != "type"}}), f"actor_configs[{i}].type",
        "actor type missing"))


def _m_actor_unknown(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    chain = _explicit_chain(d)
    keys = st.text(max_size=8).filter(lambda k: k not in _ACTOR_FIELDS) | st.integers()
    return st.builds(lambda i, k: ConfigCase(_with_actors(d, {i: {**chain[i], k: 1}}), f"actor_configs[{i}].{k}",
                                        "unknown actor field"), _actor_index(d), keys)


def _m_actor_not_mapping(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    values = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.lists(st.integers(), max_size=2))
    return st.builds(lambda i, v: ConfigCase(_with_actors(d, {i: v}), f"actor_configs[{i}]",
                                             "actor entry is not a mapping"), _actor_index(d), values)


def _m_actor0_type(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """An actor0 type the algorithm does not use (IQL: one that contradicts ``base.iql_deterministic``)."""
    algo, chain = d.get("algo", "iql"), _explicit_chain(d)
    allowed = {chain[0]["type"]} if algo == "iql" else set(ACTOR0_TYPES[algo])
    wrong = [t for t in POLICY_TYPES if t not in allowed]
    return st.sampled_from(wrong).map(lambda t: ConfigCase(_with_actors(d, {0: {**chain[0], "type": t}}),
                                                      "actor_configs[0].type", f"actor0 type not allowed for {algo}"))


def _m_log_prob(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """Energy ``base`` (explicit or default) on a type without log-probs, for CQL/AWAC/SAC-N/EDAC."""
    return st.builds(lambda i, t, explicit: ConfigCase(
        _with_actors(d, {i: {"type": t, **({"energy": "base"} if explicit else {})}}), f"actor_configs[{i}].type",
        "base energy without log-probs"), _actor_index(d, 1), st.sampled_from(("deterministic", "implicit")),
        st.booleans())


def _m_advantage(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    return st.builds(lambda i, t: ConfigCase(_with_actors(d, {i: {"type": t, "energy": "advantage"}}),
                                        f"actor_configs[{i}].energy", "advantage energy not defined"),
                     _actor_index(d, 1), st.sampled_from(POLICY_TYPES))


def _m_rebrac_implicit(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    return _actor_index(d, 1).map(lambda i: ConfigCase(
        _with_actors(d, {i: {"type": "implicit", "energy": "q"}}, w2_method="auto"), f"actor_configs[{i}].type",
        "implicit actor for rebrac"))


def _m_closed_form(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """``closed_form`` W2 with the last two actors stochastic and not both Gaussian (needs 3+ actors)."""
    last = d["num_actors"] - 1
    kinds = ("tanh_gaussian",) if d.get("algo", "iql") == "rebrac" else ("tanh_gaussian", "implicit")
    return st.sampled_from(kinds).map(lambda t: ConfigCase(
        _with_actors(d, {last - 1: {"type": "gaussian", "energy": "q"}, last: {"type": t, "energy": "q"}},
                     w2_method="closed_form"), "w2_method", "closed-form W2 on a non-Gaussian pair"))


def _m_unknown_field(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    keys = st.one_of(st.text(max_size=10).filter(lambda k: k not in _CONFIG_FIELDS), st.integers(), st.none())
    return keys.map(lambda k: ConfigCase({**copy.deepcopy(d), k: 1}, str(k), "unknown field"))


def _m_root(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    roots = st.one_of(st.just(list(d.items())), st.text(max_size=5), st.integers(), st.none())
    return roots.map(lambda r: ConfigCase(r, "<root>", "root is not a mapping"))


_NOT_A_LIST = st.one_of(st.dictionaries(st.text(max_size=3), st.floats(), max_size=2), st.text(max_size=4),
                        st.integers(), st.floats(), st.booleans())


def _m_not_a_list(name: str) -> Mutate:
    return lambda d: _NOT_A_LIST.map(lambda v: ConfigCase(_with(d, **{name: v}), name, f"{name} is not a list"))


#: every mutation, drawn first so that hypothesis spreads examples evenly over them
MUTATIONS: tuple[Mutation, ...] = (
    Mutation("w2_weights length off by one", _m_weights_length),
    Mutation("actor_configs length off by one", _m_actor_count),
    Mutation("num_actors off by one", _m_num_actors),
    Mutation("bad weight", _m_weight_value, min_actors=2),
    *(Mutation(f"bad {name}", _m_scalar(name)) for name in _BAD_SCALARS),
    Mutation("base is not a mapping", _m_base_not_mapping),
    Mutation("unknown base field", _m_base_unknown),
    Mutation("base field of the wrong kind", _m_base_kind),
    *(Mutation(f"bad actor {name}", _m_actor_field(name)) for name in _BAD_ACTOR_FIELDS),
    Mutation("actor type missing", _m_actor_type_missing),
    Mutation("unknown actor field", _m_actor_unknown),
    Mutation("actor entry is not a mapping", _m_actor_not_mapping),
    Mutation("actor0 type not allowed", _m_actor0_type),
    Mutation("base energy without log-probs", _m_log_prob, BASE_NEEDS_LOG_PROB, 2),
    Mutation("advantage energy not defined", _m_advantage, tuple(a for a in ALGORITHMS if a not in ADVANTAGE_ALGOS),
             2),
    Mutation("implicit actor for rebrac", _m_rebrac_implicit, ("rebrac",), 2),
    Mutation("closed-form W2 on a non-Gaussian pair", _m_closed_form, min_actors=3),
    Mutation("unknown field", _m_unknown_field),
    Mutation("root is not a mapping", _m_root),
    Mutation("w2_weights is not a list", _m_not_a_list("w2_weights")),
    Mutation("actor_configs is not a list", _m_not_a_list("actor_configs")),
)


def valid_configs() -> SearchStrategy[dict[str, Any]]:
    """Valid mappings over every algorithm (rebrac included)."""
    _warm_base_classes()
    return valid_config_dicts()


def invalid_configs() -> SearchStrategy[ConfigCase]:
    """A valid mapping with exactly one rule broken, and the field the error must name."""
    _warm_base_classes()
    return st.sampled_from(MUTATIONS).flatmap(
        lambda m: valid_config_dicts(m.algos, min_actors=m.min_actors).flatmap(m.mutate))


# overrides ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverrideCase:
    """A valid mapping, ``--set`` assignments, and (path, value) of the last one when it is a plain valid one."""

    data: dict[str, Any]
    assignments: tuple[str, ...]
    expected: tuple[tuple[str, ...], Any] | None = None


def _yaml_text(value: Any) -> str:
    """``value`` as the one-line YAML text of ``--set key=<text>``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9)
    return text.removesuffix("\n...\n").strip()


def _plain_assignments(d: dict[str, Any]) -> SearchStrategy[tuple[str, tuple[str, ...], Any]]:
    """(assignment, path, value) setting one known field to a valid value."""
    safe_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
    top = {"seed": st.integers(), "steps": st.integers(min_value=1), "eval_stochastic": st.booleans(),
           "wandb_mode": st.sampled_from(WANDB_MODES), "dataset": safe_text, "log_freq": st.integers(1, 10**9),
           "sinkhorn_epsilon": _floats(1e-6, 10.0), "w2_samples": st.integers(2, 64)}
    paths: list[tuple[tuple[str, ...], SearchStrategy[Any]]] = [((k,), v) for k, v in top.items()]
    cls = _base_class(d.get("algo", "iql"))
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name != "iql_deterministic" and getattr(defaults, f.name) is not None:
            paths.append((("base", f.name), _base_value(getattr(defaults, f.name))))
    for i, _ in enumerate(d.get("w2_weights") or []):
        paths.append((("w2_weights", str(i)), _floats(0.0, 1e6)))
    for i, _ in enumerate(d.get("actor_configs") or []):
        paths.append((("actor_configs", str(i), "hidden_dim"), st.integers(1, 512)))
        paths.append((("actor_configs", str(i), "lr"), _floats(1e-6, 1.0)))
    return st.sampled_from(paths).flatmap(
        lambda pv: pv[1].map(lambda v: (f"{'.'.join(pv[0])}={_yaml_text(v)}", pv[0], v)))


def _random_assignments() -> SearchStrategy[str]:
    """Assignments that are often invalid: no ``=``, bad YAML, bad indices, paths through scalars, unknown keys."""
    known = st.sampled_from(_CONFIG_FIELDS)
    bad_yaml = st.sampled_from(["[", "{", "]", "{a: [}", "'open", '"open', "!!python/object:os.system", "@x",
                                "`x", "a: b: c", "*alias", "&a [*a]", "%TAG"])
    bad_index = st.sampled_from(["9", "-1", "x", "\u00b2", "\u0663", "", "1.5", " 0", "10000000000000000000000"])
    scalar_parent = st.sampled_from(["seed", "algo", "num_actors", "w2_weights.0", "base.beta", "dataset",
                                     "actor_configs.0.type", "base"])
    deep = st.lists(st.sampled_from(["x", "0", "1", "type", "a"]), min_size=1, max_size=3).map(".".join)
    whole = st.sampled_from(["actor_configs=[]", "base=[1, 2]", "base=null", "w2_weights={}", "num_actors=4",
                             "actor_configs=[{type: gaussian}]", "w2_weights=[1.0]", "=1", ".=1", "a..b=1",
                             " seed =3", "seed", "seed=", "base.=1", "actor_configs.0=gaussian",
                             "w2_weights=[" + "9" * 400 + "]", "sinkhorn_epsilon=" + "1" * 400])
    lists = st.sampled_from(["actor_configs", "w2_weights"])
    return st.one_of(
        st.tuples(scalar_parent, deep).map(lambda t: f"{t[0]}.{t[1]}=1"),
        whole,
        st.tuples(lists, bad_index, st.sampled_from(["", ".type"])).map(lambda t: f"{t[0]}.{t[1]}{t[2]}=1"),
        st.tuples(known, bad_yaml).map(lambda t: f"{t[0]}={t[1]}"),
        st.tuples(st.text(max_size=6), st.text(max_size=6)).map(lambda t: f"{t[0]}={t[1]}"),
        st.text(max_size=6).map(lambda k: f"base.{k}=1"),
        st.text(max_size=30),
    )


def override_cases() -> SearchStrategy[OverrideCase]:
    """A valid mapping, up to three random assignments, optionally followed by a plain valid one."""

    def build(d: dict[str, Any], with_plain: bool) -> SearchStrategy[OverrideCase]:
        randoms = st.lists(_random_assignments(), max_size=3).map(tuple)
        if not with_plain:
            return randoms.map(lambda r: OverrideCase(d, r))
        return st.tuples(randoms, _plain_assignments(d)).map(
            lambda t: OverrideCase(d, (*t[0], t[1][0]), (t[1][1], t[1][2])))

    _warm_base_classes()
    return st.booleans().flatmap(lambda plain: valid_config_dicts().flatmap(lambda d: build(d, plain)))


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
    _warm_base_classes()
    return st.builds(TrainCase, valid_config_dicts(TORCH_ALGORITHMS, trainable=True), st.integers(1, 6),
                     st.integers(1, 4), st.integers(2, 16), st.integers(0, 2**31 - 1))


# ----------------------------------------------------------------------------------------- logging strategies


class _Skip:
    """Expected outcome of a value the logger must skip (with one warning per key)."""

    def __repr__(self) -> str:
        return "SKIP"


SKIP = _Skip()


@dataclass(frozen=True)
class Leaf:
    """A logged value and what must be written for it (a Python scalar, or SKIP)."""

    value: Any
    expected: Any


@dataclass(frozen=True)
class Branch:
    """A (nested) payload mapping as ordered ``(key, Leaf | Branch)`` items."""

    items: tuple[tuple[Any, Leaf | Branch], ...]

    def materialize(self) -> dict[Any, Any]:
        return {k: v.materialize() if isinstance(v, Branch) else v.value for k, v in self.items}


@dataclass(frozen=True)
class LogCase:
    """Successive ``RunLogger.log`` calls as (step, payload)."""

    calls: tuple[tuple[int, Branch], ...]


_NP_REAL = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
            np.float16, np.float32, np.float64, np.longdouble)
_NP_COMPLEX = (np.complex64, np.complex128, np.clongdouble)
_TORCH_REAL = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
               torch.bfloat16, torch.float32, torch.float64)


def _as_python(value: Any, kind: str) -> bool | int | float:
    """The Python scalar a value of numpy dtype kind ``b``/``i``/``u``/``f`` stands for."""
    return bool(value) if kind == "b" else int(value) if kind in "iu" else float(value)


def _numpy_leaves(dtype: type, zero_d: bool) -> SearchStrategy[Leaf]:
    """NumPy scalars (or 0-d arrays) of ``dtype``; complex ones are expected to be skipped."""
    dt = np.dtype(dtype)

    def leaf(x: Any) -> Leaf:
        scalar = dt.type(x)
        value = np.array(scalar, dtype=dt) if zero_d else scalar
        return Leaf(value, SKIP if dt.kind == "c" else _as_python(scalar, dt.kind))

    return from_dtype(dt).map(leaf)


def _torch_leaves(dtype: torch.dtype) -> SearchStrategy[Leaf]:
    """0-d tensors of ``dtype`` (floats possibly requiring grad; out-of-range values saturate to ±Inf)."""
    def leaf(x: Any, grad: bool) -> Leaf:
        if dtype.is_floating_point:
            t = torch.tensor(x, dtype=torch.float64).to(dtype).requires_grad_(grad)
            return Leaf(t, float(t.item()))
        t = torch.tensor(x, dtype=dtype)
        return Leaf(t, bool(t.item()) if dtype is torch.bool else int(t.item()))

    if dtype is torch.bool:
        values: SearchStrategy[Any] = st.booleans()
    elif dtype.is_floating_point:
        values = st.floats()
    else:
        info = torch.iinfo(dtype)
        values = st.integers(info.min, info.max)
    return st.builds(leaf, values, st.booleans() if dtype.is_floating_point else st.just(False))


def scalar_leaves() -> SearchStrategy[Leaf]:
    """Everything the logger must write: Python/NumPy scalars of every real dtype, 0-d arrays and tensors."""
    python = st.one_of(st.booleans().map(lambda b: Leaf(b, b)),
                       (st.integers() | st.integers(2**63, 2**200)).map(lambda i: Leaf(i, i)),
                       st.floats().map(lambda f: Leaf(f, f)))
    return st.one_of(python, *[_numpy_leaves(t, z) for t in _NP_REAL for z in (False, True)],
                     *[_torch_leaves(t) for t in _TORCH_REAL])


def skipped_leaves() -> SearchStrategy[Leaf]:
    """Everything the logger must skip: None, strings, complex numbers, n-d arrays and tensors, containers."""
    nd = arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]),
                array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))
    values = st.one_of(
        st.none(), st.text(max_size=8), st.text(max_size=4).map(np.str_), st.text(max_size=4).map(np.array),
        st.complex_numbers(), st.binary(max_size=4), st.lists(st.floats(), max_size=3),
        st.tuples(st.integers()), nd, nd.map(torch.as_tensor),
        st.builds(lambda re, im: torch.tensor(complex(re, im)), _floats(-1e3, 1e3), _floats(-1e3, 1e3)),
    )
    complex_np = [_numpy_leaves(t, z) for t in _NP_COMPLEX for z in (False, True)]
    return st.one_of(values.map(lambda v: Leaf(v, SKIP)), *complex_np)


def log_keys() -> SearchStrategy[Any]:
    """Keys of every kind: short and very long strings, ints, tuples, None, bools, and likely collisions."""
    return st.one_of(st.text(max_size=8), st.sampled_from(["a", "b", "a/b", "1", "step", "None"]),
                     st.integers(-3, 3), st.tuples(st.integers(0, 2), st.text(max_size=2)), st.none(), st.booleans(),
                     st.builds(lambda c, n: c * n, st.characters(), st.integers(1000, 5000)))


def _branches(nodes: SearchStrategy[Leaf | Branch], max_size: int) -> SearchStrategy[Branch]:
    items = st.lists(st.tuples(log_keys(), nodes), max_size=max_size, unique_by=lambda kv: kv[0])
    return items.map(lambda kv: Branch(tuple(kv)))


def log_payloads() -> SearchStrategy[Branch]:
    """A payload mapping of up to six items, nested mappings up to eight leaves deep in total."""
    leaves = scalar_leaves() | skipped_leaves()
    nodes = st.recursive(leaves, lambda inner: _branches(inner, 3), max_leaves=8)
    return _branches(nodes, 6)


def log_cases() -> SearchStrategy[LogCase]:
    """One to three payloads, the whole sequence logged once or twice (warnings must not repeat)."""
    calls = st.lists(st.tuples(st.integers(0, 2**40), log_payloads()), min_size=1, max_size=3)
    return st.builds(lambda c, repeat: LogCase(tuple(c) * repeat), calls, st.integers(1, 2))


# -------------------------------------------------------------------------------------------- data strategies

EPISODE_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


@dataclass(frozen=True)
class DataCase:
    """Episodes and the expected outcome.

    ``must_fail``: a DataError is required, naming ``episode`` (when set) and one of ``fields``. Otherwise the data
    must load, except for a dataset-level DataError: no steps/transitions at all, or (when ``fields`` is set) a
    statistics overflow naming one of ``fields``.
    """

    episodes: tuple[SimpleNamespace, ...]
    mutation: str
    must_fail: bool = False
    episode: int | None = None
    fields: tuple[str, ...] = ()


def _elements(dtype: type) -> SearchStrategy[Any]:
    if dtype is np.bool_:
        return st.booleans()
    if np.issubdtype(dtype, np.integer):
        return st.integers(-1000, 1000)
    width = {np.float16: 16, np.float32: 32}.get(dtype, 64)
    bound = 1000.0 if dtype is np.float16 else 1e6
    return st.floats(-bound, bound, width=width)


def real_arrays(shape: tuple[int, ...]) -> SearchStrategy[np.ndarray]:
    """Finite arrays of moderate magnitude in a numeric dtype (float16/32/64, int32/64, bool)."""
    dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64, np.bool_])
    return dtypes.flatmap(lambda dt: arrays(dt, shape, elements=_elements(dt)))


def flag_arrays(length: int) -> SearchStrategy[np.ndarray]:
    """Termination/truncation flags as bool, 0/1 int8 or 0.0/1.0 float32."""
    return st.one_of(arrays(np.bool_, (length,)), arrays(np.int8, (length,), elements=st.sampled_from([0, 1])),
                     arrays(np.float32, (length,), elements=st.sampled_from([0.0, 1.0])))


@st.composite
def episodes(draw: st.DrawFn, ep_id: int, state_dim: int, action_dim: int) -> SimpleNamespace:
    """One clean episode of 0 to 6 steps."""
    steps = draw(st.integers(0, 6))
    return SimpleNamespace(id=ep_id, observations=draw(real_arrays((steps + 1, state_dim))),
                           actions=draw(real_arrays((steps, action_dim))), rewards=draw(real_arrays((steps,))),
                           terminations=draw(flag_arrays(steps)), truncations=draw(flag_arrays(steps)))


@st.composite
def episode_lists(draw: st.DrawFn, min_size: int = 1) -> list[SimpleNamespace]:
    """``min_size`` to four clean episodes with shared dimensions and distinct ids."""
    n = draw(st.integers(min_size, 4))
    state_dim, action_dim = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    ids = draw(st.lists(st.integers(0, 999), min_size=n, max_size=n, unique=True))
    return [draw(episodes(i, state_dim, action_dim)) for i in ids]


def _replace(eps: Sequence[SimpleNamespace], k: int, **changes: Any) -> tuple[SimpleNamespace, ...]:
    out = list(eps)
    out[k] = SimpleNamespace(**{**vars(eps[k]), **changes})
    return tuple(out)


def _spots(eps: Sequence[SimpleNamespace], fields: Sequence[str],
           keep: Callable[[np.ndarray], bool] = lambda a: True) -> SearchStrategy[tuple[int, str]]:
    spots = [(k, f) for k, ep in enumerate(eps) for f in fields if keep(np.asarray(getattr(ep, f)))]
    return st.sampled_from(spots) if spots else st.nothing()


def _with_value(eps: Sequence[SimpleNamespace], spot: tuple[int, str], index: int, value: Any,
                dtype: type) -> tuple[SimpleNamespace, ...]:
    k, f = spot
    arr = np.array(getattr(eps[k], f), dtype=dtype)
    arr.flat[index % arr.size] = value
    return _replace(eps, k, **{f: arr})


def _bad(eps: Sequence[SimpleNamespace], mutation: str, k: int, *fields: str) -> DataCase:
    return DataCase(tuple(eps), mutation, True, eps[k].id, fields)


def _d_clean(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """The episodes as drawn (mixed dtypes, random flags, possibly empty episodes)."""
    return st.just(DataCase(tuple(eps), "clean"))


def _d_constant_feature(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One feature constant over the whole dataset (std 0 before eps)."""
    def build(j: int, c: float) -> DataCase:
        out = []
        for ep in eps:
            obs = np.array(ep.observations, dtype=np.float64)
            obs[:, j % obs.shape[1]] = c
            out.append(SimpleNamespace(**{**vars(ep), "observations": obs}))
        return DataCase(tuple(out), "constant feature")

    return st.builds(build, st.integers(0, 3), st.floats(-1e6, 1e6))


def _d_all_terminal(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Every step terminal, no truncation."""
    out = tuple(SimpleNamespace(**{**vars(ep), "terminations": np.ones(len(ep.rewards), bool),
                                   "truncations": np.zeros(len(ep.rewards), bool)}) for ep in eps)
    return st.just(DataCase(out, "all terminal"))


def _d_zero_length(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """An extra zero-length episode anywhere in the list."""
    s, a = eps[0].observations.shape[1], eps[0].actions.shape[1]
    empty = SimpleNamespace(id=1000, observations=np.zeros((1, s), np.float32), actions=np.zeros((0, a), np.float32),
                            rewards=np.zeros(0, np.float32), terminations=np.zeros(0, bool),
                            truncations=np.zeros(0, bool))
    return st.integers(0, len(eps)).map(lambda i: DataCase(tuple(eps[:i]) + (empty,) + tuple(eps[i:]),
                                                           "zero-length episode"))


def _d_non_finite(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One NaN/±Inf in observations, actions or rewards."""
    return st.builds(lambda spot, i, v, dt: _bad(_with_value(eps, spot, i, v, dt), "NaN/Inf", spot[0], spot[1]),
                     _spots(eps, ("observations", "actions", "rewards"), lambda a: a.size > 0),
                     st.integers(0, 100), st.sampled_from([math.nan, math.inf, -math.inf]),
                     st.sampled_from([np.float32, np.float64]))


def _d_float32_overflow(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Finite float64 values that become ±Inf as float32."""
    value = st.floats(3.5e38, 1e308) | st.floats(-1e308, -3.5e38)
    return st.builds(lambda spot, i, v: _bad(_with_value(eps, spot, i, v, np.float64), "float32 overflow", spot[0],
                                             spot[1]),
                     _spots(eps, ("observations", "actions", "rewards"), lambda a: a.size > 0),
                     st.integers(0, 100), value)


def _d_extreme_observations(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """A float32 feature near the float32 limit: either loads finite or the error names the observations."""
    def build(k: int, j: int, v: float) -> DataCase:
        obs = np.array(eps[k].observations, dtype=np.float32)
        obs[:, j % obs.shape[1]] = v
        return DataCase(_replace(eps, k, observations=obs), "extreme float32 observations", False, None,
                        ("observations", "next_observations"))

    lo, hi = float(np.float32(1e19)), float(np.finfo(np.float32).max)
    value = st.floats(lo, hi, width=32) | st.floats(-hi, -lo, width=32)
    return st.builds(build, st.integers(0, len(eps) - 1), st.integers(0, 3), value)


def _d_bad_dtype(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Object, string, complex, datetime and timedelta arrays."""
    def convert(a: np.ndarray, how: str) -> np.ndarray:
        if how == "object":
            out = np.empty(a.shape, dtype=object)
            out[...] = None
            return out
        if how == "str":
            return a.astype(str)
        if how in ("datetime64[s]", "timedelta64[s]"):
            return np.zeros(a.shape, dtype=how)
        return a.astype(np.complex128) + 1j

    def build(spot: tuple[int, str], how: str) -> DataCase:
        k, f = spot
        return _bad(_replace(eps, k, **{f: convert(np.asarray(getattr(eps[k], f)), how)}), f"{how} dtype", k, f)

    kinds = st.sampled_from(["object", "str", "complex", "datetime64[s]", "timedelta64[s]"])
    return st.builds(build, _spots(eps, EPISODE_FIELDS), kinds)


def _d_wrong_ndim(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One field flattened or given an extra trailing axis (e.g. rewards as [T, 1])."""
    def build(spot: tuple[int, str], flatten: bool) -> DataCase:
        k, f = spot
        a = np.asarray(getattr(eps[k], f))
        changed = a.reshape(-1) if flatten and a.ndim > 1 else a[..., None]
        return _bad(_replace(eps, k, **{f: changed}), "wrong ndim", k, f)

    return st.builds(build, _spots(eps, EPISODE_FIELDS), st.booleans())


def _d_wrong_length(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One row too few or too many (actions: the observations no longer match, either may be named)."""
    def build(spot: tuple[int, str], longer: bool) -> DataCase:
        k, f = spot
        a = np.asarray(getattr(eps[k], f))
        changed = a[:-1] if a.shape[0] and not longer else np.concatenate([a, np.zeros((1, *a.shape[1:]), a.dtype)])
        named = ("observations", "actions") if f == "actions" else (f,)
        return _bad(_replace(eps, k, **{f: changed}), "wrong length", k, *named)

    return st.builds(build, _spots(eps, EPISODE_FIELDS), st.booleans())


def _d_missing_field(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """One episode without one of its five fields."""
    def build(spot: tuple[int, str]) -> DataCase:
        k, f = spot
        out = list(eps)
        out[k] = SimpleNamespace(**{n: v for n, v in vars(eps[k]).items() if n != f})
        return _bad(out, "missing field", k, f)

    return st.builds(build, _spots(eps, EPISODE_FIELDS))


def _d_dim_mismatch(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """A later episode with one more observation or action feature (needs two episodes)."""
    def build(k: int, f: str) -> DataCase:
        a = np.asarray(getattr(eps[k], f))
        wider = np.concatenate([a, np.zeros((a.shape[0], 1), a.dtype)], axis=1)
        return _bad(_replace(eps, k, **{f: wider}), "dims differ from earlier episodes", k, f)

    return st.builds(build, st.integers(1, len(eps) - 1), st.sampled_from(["observations", "actions"]))


def _d_bad_flags(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Termination/truncation flags that are not 0/1 (NaN, Inf, 2, -1, 0.5)."""
    return st.builds(lambda spot, i, v: _bad(_with_value(eps, spot, i, v, np.float64), "flag not 0/1", spot[0],
                                             spot[1]),
                     _spots(eps, ("terminations", "truncations"), lambda a: a.size > 0), st.integers(0, 100),
                     st.sampled_from([math.nan, math.inf, 2.0, -1.0, 0.5]))


def _d_no_features(eps: list[SimpleNamespace]) -> SearchStrategy[DataCase]:
    """Every episode with zero observation (or action) features."""
    def build(f: str) -> DataCase:
        out = [SimpleNamespace(**{**vars(ep), f: np.zeros((np.asarray(getattr(ep, f)).shape[0], 0), np.float32)})
               for ep in eps]
        return _bad(out, "zero features", 0, f)

    return st.sampled_from(["observations", "actions"]).map(build)


#: (mutation, minimum number of episodes), drawn first so that examples spread evenly over them
DATA_MUTATIONS: tuple[tuple[Callable[[list[SimpleNamespace]], SearchStrategy[DataCase]], int], ...] = (
    (_d_clean, 1), (_d_constant_feature, 1), (_d_all_terminal, 1), (_d_zero_length, 1), (_d_non_finite, 1),
    (_d_float32_overflow, 1), (_d_extreme_observations, 1), (_d_bad_dtype, 1), (_d_wrong_ndim, 1),
    (_d_wrong_length, 1), (_d_missing_field, 1), (_d_dim_mismatch, 2), (_d_bad_flags, 1), (_d_no_features, 1),
)


def data_cases() -> SearchStrategy[DataCase]:
    """Clean episodes (incl. zero-length, all-terminal, constant features) or with exactly one defect."""
    return st.sampled_from(DATA_MUTATIONS).flatmap(lambda m: episode_lists(m[1]).flatmap(m[0]))


# ------------------------------------------------------------------------------------------------- properties


def check_invalid_config_rejected(case: ConfigCase) -> None:
    """An invalid mapping raises exactly ConfigError naming the offending field, never anything else."""
    try:
        cfg = macfg.from_dict(copy.deepcopy(case.data)).resolved()
    except ConfigError as err:
        if err.field != case.field:
            _fail(f"{case.mutation}: ConfigError names {err.field!r}, expected {case.field!r} ({err})")
        if f"'{case.field}'" not in str(err) or "expected" not in str(err):
            _fail(f"{case.mutation}: message does not name {case.field!r} and the expectation: {err}")
        return
    _fail(f"{case.mutation}: invalid field {case.field!r} silently accepted; resolved to {cfg!r}")


def check_valid_config_round_trips(data: dict[str, Any]) -> None:
    """A valid mapping resolves, keeps every given field, and survives ``to_yaml`` → ``from_dict`` exactly."""
    cfg = macfg.from_dict(copy.deepcopy(data)).resolved()
    resolved = cfg.to_dict()
    for key, value in data.items():
        if value is None:
            continue
        got = resolved[key]
        if key == "actor_configs":
            got = [{k: a[k] for k in given} for a, given in zip(got, value)]
        diff = _difference(value, got, key)
        if diff:
            _fail(f"given field changed by resolution: {diff}")
    diff = _difference(resolved, cfg.resolved().to_dict())
    if diff:
        _fail(f"resolved() is not idempotent: {diff}")
    text = cfg.to_yaml()
    again = macfg.from_dict(yaml.safe_load(text)).resolved()
    diff = _difference(resolved, again.to_dict())
    if diff or again != cfg:
        _fail(f"YAML round trip changed the config: {diff}\n{text}")


def check_overrides(case: OverrideCase) -> None:
    """``--set`` overrides either build a config (the last plain one visibly applied) or raise InputError."""
    try:
        cfg = macfg.build_config(None, list(case.assignments), **copy.deepcopy(case.data))
    except ConfigError:
        return
    except InputError as err:
        if "--set" not in str(err):
            _fail(f"override error does not name the --set assignment: {err}")
        return
    if case.expected is None:
        return
    path, value = case.expected
    node: Any = cfg.to_dict()
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    diff = _difference(value, node, ".".join(path))
    if diff:
        _fail(f"override {case.assignments[-1]!r} not applied: {diff}")


def check_valid_config_trains(case: TrainCase) -> None:
    """A valid config builds the multi-actor trainer, which runs one step with finite losses and parameters."""
    from multi_actor.trainer import multi_actor_factory

    cfg = macfg.from_dict(copy.deepcopy(case.config)).resolved()
    spec = padata.DatasetSpec("fuzz", "", case.state_dim, case.action_dim, 1.0)
    rng = np.random.default_rng(case.seed)
    n = max(case.batch_size, 8)
    buffer = padata.ReplayBuffer({
        "observations": rng.normal(size=(n, case.state_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, case.action_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, case.state_dim)).astype(np.float32),
        "terminals": rng.random(n) < 0.2,
    }, case.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = multi_actor_factory(cfg, spec, case.seed)
        log = trainer.step(buffer.sample(case.batch_size))
        params = trainer.parameters()
        due = trainer.algorithm.actor_update_due(trainer.base)
    finally:
        torch.set_num_threads(threads)
    if not log:
        _fail("step returned no losses")
    bad = {k: v for k, v in log.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
    if bad:
        _fail(f"non-finite or non-scalar step outputs: {bad}")
    if due:
        missing = [f"actor{i}/loss" for i in range(1, cfg.num_actors) if f"actor{i}/loss" not in log]
        if missing:
            _fail(f"actor update due but no loss for {missing}")
    bad_params = [k for k, v in params.items() if not np.all(np.isfinite(v))]
    if bad_params:
        _fail(f"non-finite parameters after one step: {bad_params[:5]}")


def _strict_json(line: str) -> dict[str, Any]:
    """``json.loads`` that rejects NaN/Infinity literals and duplicate keys."""
    def no_constant(name: str) -> None:
        _fail(f"non-standard JSON constant {name} in {line[:200]!r}")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(keys) != len(set(keys)):
            _fail(f"duplicate keys in one JSONL record: {sorted({k for k in keys if keys.count(k) > 1})}")
        return dict(items)

    return json.loads(line, parse_constant=no_constant, object_pairs_hook=pairs)


def _json_scalar(x: bool | int | float) -> bool | int | float | str:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _flat_expectations(branch: Branch, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(flattened key, expected) in payload order; nested keys are joined with ``/`` as documented."""
    for key, node in branch.items:
        name = f"{prefix}{key}"
        if isinstance(node, Branch):
            yield from _flat_expectations(node, f"{name}/")
        else:
            yield name, node.expected


def check_logger(case: LogCase) -> None:
    """The logger never raises, writes each scalar exactly once with its value (NaN/Inf as strings) in strict
    JSON, and skips the rest with exactly one warning per key across calls."""
    with tempfile.TemporaryDirectory(prefix="pogo-fuzz-") as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = Path(tmp) / "metrics.jsonl"
        logger = malog.RunLogger(path)
        try:
            for step, payload in case.calls:
                logger.log(step, payload.materialize())
        finally:
            logger.close()
        lines = path.read_text(encoding="utf-8").splitlines()
    warned: set[str] = set()
    expected_records = []
    for step, payload in case.calls:
        written: dict[str, Any] = {}
        for key, expected in _flat_expectations(payload):
            if expected is SKIP or key in written or key == "step":
                warned.add(key)
            else:
                written[key] = _json_scalar(expected)
        expected_records.append({"step": step, **written})
    if len(lines) != len(case.calls):
        _fail(f"{len(lines)} JSONL lines for {len(case.calls)} calls")
    for i, (line, expected) in enumerate(zip(lines, expected_records)):
        diff = _difference(expected, _strict_json(line))
        if diff:
            _fail(f"record {i}: {diff}")
    messages = [str(w.message) for w in caught if str(w.message).startswith("not logging ")]
    for key in warned:
        count = sum(m.startswith(f"not logging {key!r}:") for m in messages)
        if count != 1:
            _fail(f"{count} warnings for skipped key {key!r} (expected exactly one)")
    if len(messages) != len(warned):
        _fail(f"{len(messages)} skip warnings for {len(warned)} skipped keys: {messages[:5]}")


def _transition_count(episodes_: Sequence[SimpleNamespace]) -> int:
    """CORL's rule, counted independently: rows 0..N-2 of the flat layout that are not timeouts."""
    flags = [np.asarray(ep.truncations).astype(bool) for ep in episodes_ if len(ep.rewards)]
    if not flags:
        return 0
    timeouts = np.concatenate(flags)
    return int((~timeouts[:-1]).sum())


def _check_data_error(case: DataCase, message: str) -> None:
    """A DataError is legitimate for this case and names what it must name."""
    named = any(f"'{f}'" in message for f in case.fields)
    if case.must_fail:
        if case.episode is not None and not re.search(rf"\bepisode {case.episode}\b", message):
            _fail(f"{case.mutation}: DataError does not name episode {case.episode}: {message}")
        if not named:
            _fail(f"{case.mutation}: DataError does not name field {' or '.join(case.fields)}: {message}")
        return
    empty = _transition_count(case.episodes) == 0 and ("no steps" in message or "no transitions" in message)
    if not (empty or named):
        _fail(f"{case.mutation}: data rejected without naming {' or '.join(case.fields) or 'an emptiness'}: {message}")


def check_data_layer(case: DataCase) -> None:
    """Episodes load into finite normalized transitions, or DataError names the episode and the field."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            raw = padata.episodes_to_raw(case.episodes)
            q = padata.qlearning_dataset(raw)
            t = padata.Transitions(dataset_id="fuzz", **q)
            processed, pre = padata.preprocess(t, True)
    except DataError as err:
        _check_data_error(case, str(err))
        return
    if case.must_fail:
        _fail(f"{case.mutation}: episode {case.episode} field {'/'.join(case.fields)} loaded without a DataError")
    n = _transition_count(case.episodes)
    if len(processed["observations"]) != n:
        _fail(f"{len(processed['observations'])} transitions, expected {n}")
    for key in ("observations", "next_observations", "actions", "rewards"):
        arr = processed[key]
        if arr.dtype != np.float32 or not np.all(np.isfinite(arr)):
            _fail(f"{key}: dtype {arr.dtype} or non-finite values after preprocessing")
    if not (np.all(np.isfinite(pre.state_mean)) and np.all(np.isfinite(pre.state_std)) and np.all(pre.state_std > 0)):
        _fail(f"normalization statistics not finite/positive: mean {pre.state_mean}, std {pre.state_std}")
    batch = padata.ReplayBuffer(processed, 0).sample(4)
    if not all(bool(torch.isfinite(b).all()) for b in batch):
        _fail("replay buffer sampled non-finite values")


# --------------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Property:
    """A named property: a strategy of cases and a check that raises on a violation."""

    name: str
    target: str
    strategy: Callable[[], SearchStrategy[Any]]
    check: Callable[[Any], None]
    expensive: bool = False


PROPERTIES: tuple[Property, ...] = (
    Property("invalid_config_rejected", "configs", invalid_configs, check_invalid_config_rejected),
    Property("valid_config_round_trips", "configs", valid_configs, check_valid_config_round_trips),
    Property("overrides_build_or_fail_cleanly", "configs", override_cases, check_overrides),
    Property("valid_config_trains", "configs", trainable_cases, check_valid_config_trains, expensive=True),
    Property("logger_writes_scalars_once", "logging", log_cases, check_logger),
    Property("data_loads_or_names_the_problem", "data", data_cases, check_data_layer),
)


def properties_for(target: str) -> list[Property]:
    """The properties of ``configs``, ``logging``, ``data`` or ``all``."""
    if target not in TARGETS:
        raise UsageError(f"--target: got {target!r}; expected one of {', '.join(TARGETS)}")
    return [p for p in PROPERTIES if target in ("all", p.target)]


def get_property(name: str) -> Property:
    """The property called ``name``."""
    for p in PROPERTIES:
        if p.name == name:
            return p
    raise UsageError(f"unknown fuzz property {name!r}; expected one of {', '.join(p.name for p in PROPERTIES)}")


# ----------------------------------------------------------------------------------------------------- runner


def _truncate(text: str, limit: int = MAX_REPR) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def _runner_frame(frame: traceback.FrameSummary) -> bool:
    """Frames of hypothesis and of the runner's own test wrapper (not worth showing in a finding)."""
    path = Path(frame.filename).as_posix()
    return "/hypothesis/" in path or (path == Path(__file__).as_posix() and frame.name in ("body", "run_property"))


def _finding(name: str, exc: BaseException) -> dict[str, Any]:
    """A finding: property, minimal example (repr, truncated), exception and the innermost frames."""
    example = getattr(exc, _EXAMPLE_ATTR, None)
    try:
        shown = None if example is None else _truncate(repr(example))
    except Exception as repr_exc:  # noqa: BLE001 - a broken __repr__ must not hide the finding
        shown = f"<repr failed: {type(repr_exc).__name__}>"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _runner_frame(f)]
    return {
        "property": name,
        "minimal_example": shown,
        "exception": _truncate(f"{type(exc).__name__}: {exc}", 1000),
        "traceback_tail": "".join(traceback.format_list(frames[-4:])).rstrip(),
    }


def _leaves(exc: BaseException) -> list[BaseException]:
    """The distinct failures hypothesis reports (a plain exception group holds one per bug)."""
    if type(exc) in (ExceptionGroup, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def fuzz_settings(examples: int, database_dir: Path | None) -> settings:
    """Explicit settings, independent of the loaded profile (``CI`` loads hypothesis's ``ci`` profile)."""
    return settings(
        settings.get_profile("default"),
        max_examples=examples,
        deadline=None,
        derandomize=False,
        database=DirectoryBasedExampleDatabase(str(database_dir)) if database_dir is not None else None,
        verbosity=Verbosity.quiet,
        print_blob=False,
        phases=[p for p in Phase if p is not Phase.explain],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=True,
    )


def run_property(prop: Property, examples: int, seed_value: int = 0, database_dir: Path | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> CheckResult:
    """Run one property for ``examples`` examples (reproducible for a seed) and return its CheckResult."""
    if examples < 1:
        raise UsageError(f"--examples: expected a positive integer, got {examples}")
    count = 0

    def body(case: Any) -> None:
        nonlocal count
        count += 1
        if progress is not None:
            progress(prop.name, min(count, examples), examples)
        try:
            prop.check(case)
        except Exception as exc:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, _EXAMPLE_ATTR, case)
            raise

    body.__name__ = body.__qualname__ = f"fuzz_{prop.name}"
    body._hypothesis_internal_add_digest = prop.name.encode()  # type: ignore[attr-defined]
    test = fuzz_settings(examples, database_dir)(seed(seed_value)(given(prop.strategy())(body)))
    start = time.perf_counter()
    findings: list[dict[str, Any]] = []
    try:
        test()
    except Exception as exc:  # noqa: BLE001 - every failure hypothesis reports is a finding
        findings = [_finding(prop.name, e) for e in _leaves(exc)]
    seconds = time.perf_counter() - start
    summary = (f"{count} examples, no findings" if not findings else
               f"{len(findings)} finding(s) after {count} examples: {findings[0]['exception'].splitlines()[0]}")
    return CheckResult(
        check="fuzz", subject=prop.name, verdict=FAIL if findings else PASS, steps_compared=count,
        summary=summary, seconds=seconds,
        metrics={"examples_run": count, "target": prop.target, "seed": seed_value, "findings": findings},
    )


def run_fuzz(target: str, examples: int, seed: int = 0, database_dir: Path | None = DEFAULT_DATABASE_DIR,
             progress: Callable[[str, int, int], None] | None = None) -> list[CheckResult]:
    """Run every property of ``target`` (``configs``, ``logging``, ``data`` or ``all``) for ``examples`` examples
    each; one ``CheckResult(check="fuzz", subject=<property>)`` per property, ``fail`` when it has findings.

    ``database_dir`` holds hypothesis's example database (failing examples are replayed first next time); None
    disables it. ``progress(property, examples_done, examples)`` is called after every example.
    """
    return [run_property(p, examples, seed, database_dir, progress) for p in properties_for(target)]
