"""Near-valid configs: a valid mapping with exactly one rule broken, and the one field its ConfigError must name.

Each :class:`Mutation` breaks a valid mapping in one way (a wrong length, a value of the wrong kind or out of range, an
unknown key, an actor type the algorithm cannot use, ...); :func:`invalid_configs` draws the mutation first so that
examples spread evenly over them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from multi_actor import registry

from checks.fuzz.strategies.configs import (
    ACTOR_FIELDS,
    CONFIG_FIELDS,
    algo_of,
    base_class,
    effective_types,
    extra_actor,
    num_actors_of,
    valid_config_dicts,
    valid_weights,
    warm_base_classes,
)
from multi_actor.config import (
    ACTOR0_TYPES,
    ADVANTAGE_ALGOS,
    ALGORITHMS,
    BASE_NEEDS_LOG_PROB,
    ENERGIES,
    POLICY_TYPES,
    W2_METHODS,
    WANDB_MODES,
)

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
    return [{"type": t} for t in effective_types(d)]


Mutate = Callable[[dict[str, Any]], SearchStrategy[ConfigCase]]


@dataclass(frozen=True)
class Mutation:
    """One way to break a valid mapping, and which mappings it applies to."""

    name: str
    mutate: Mutate
    algos: tuple[str, ...] = ALGORITHMS
    min_actors: int = 1


def _weights_length_off_by_one(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    n = num_actors_of(d)
    sizes = [n] + ([n - 2] if n >= 2 else [])
    lists = st.sampled_from(sizes).flatmap(lambda k: st.lists(valid_weights(False), min_size=k, max_size=k))
    return lists.map(lambda w: ConfigCase(_with(d, w2_weights=w), "w2_weights", "w2_weights length off by one"))


def _actor_count_off_by_one(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    chain = _explicit_chain(d)
    longer = extra_actor(algo_of(d), False).map(lambda a: [*chain, a])
    return (st.just(chain[:-1]) | longer).map(
        lambda c: ConfigCase(_with(d, actor_configs=c), "actor_configs", "actor_configs length off by one"))


def _num_actors_off_by_one(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    n = num_actors_of(d)
    weights = d.get("w2_weights") or [1.0] * (n - 1)
    counts = [n + 1] + ([n - 1] if n > 1 else [])
    return st.sampled_from(counts).map(
        lambda k: ConfigCase(_with(d, num_actors=k, w2_weights=weights), "w2_weights", "num_actors off by one"))


def _bad_weight(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """NaN, ±Inf, negative, too-large-for-float and non-number weights."""
    n = num_actors_of(d)
    weights = list(d.get("w2_weights") or [1.0] * (n - 1))

    def put(i: int, value: Any) -> ConfigCase:
        w = copy.deepcopy(weights)
        w[i] = value
        return ConfigCase(_with(d, w2_weights=w), f"w2_weights[{i}]", "bad weight")

    return st.builds(put, st.integers(0, n - 2), _bad_number(strict=False))


def _bad_top_field(name: str) -> Mutate:
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


def _base_not_mapping(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    names = [f.name for f in dataclasses.fields(base_class(algo_of(d)))]
    pairs = st.lists(st.tuples(st.sampled_from(names), st.floats()), min_size=1, max_size=2)
    values = st.one_of(pairs, pairs.map(lambda p: [list(kv) for kv in p]), st.text(max_size=4), st.integers(),
                       st.booleans())
    return values.map(lambda b: ConfigCase(_with(d, base=b), "base", "base is not a mapping"))


def _unknown_base_field(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    names = {f.name for f in dataclasses.fields(base_class(algo_of(d)))}
    keys = st.one_of(st.text(max_size=8).filter(lambda k: k not in names), st.integers(), st.none())
    base = dict(d.get("base") or {})
    return keys.map(lambda k: ConfigCase(_with(d, base={**base, k: 1}), f"base.{k}", "unknown base field"))


def _base_field_of_wrong_kind(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    cls = base_class(algo_of(d))
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
    return st.integers(first, num_actors_of(d) - 1)


def _bad_actor_field(name: str) -> Mutate:
    """A wrong type or out-of-range value for field ``name`` of one actor."""
    def mutate(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
        chain = _explicit_chain(d)
        return st.builds(lambda i, v: ConfigCase(_with_actors(d, {i: {**chain[i], name: v}}),
                                            f"actor_configs[{i}].{name}", f"bad actor {name}"),
                         _actor_index(d), _BAD_ACTOR_FIELDS[name])

    return mutate


def _actor_type_missing(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    chain = _explicit_chain(d)
    return _actor_index(d).map(lambda i: ConfigCase(
        _with_actors(d, {i: {k: v for k, v in chain[i].items() if k != "type"}}), f"actor_configs[{i}].type",
        "actor type missing"))


def _unknown_actor_field(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    chain = _explicit_chain(d)
    keys = st.text(max_size=8).filter(lambda k: k not in ACTOR_FIELDS) | st.integers()
    return st.builds(lambda i, k: ConfigCase(_with_actors(d, {i: {**chain[i], k: 1}}), f"actor_configs[{i}].{k}",
                                        "unknown actor field"), _actor_index(d), keys)


def _actor_not_mapping(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    values = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.lists(st.integers(), max_size=2))
    return st.builds(lambda i, v: ConfigCase(_with_actors(d, {i: v}), f"actor_configs[{i}]",
                                             "actor entry is not a mapping"), _actor_index(d), values)


def _actor0_type_not_allowed(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """An actor0 type the algorithm does not use (IQL: one that contradicts ``base.iql_deterministic``)."""
    algo, chain = algo_of(d), _explicit_chain(d)
    allowed = {chain[0]["type"]} if algo == "iql" else set(ACTOR0_TYPES[algo])
    wrong = [t for t in POLICY_TYPES if t not in allowed]
    return st.sampled_from(wrong).map(lambda t: ConfigCase(_with_actors(d, {0: {**chain[0], "type": t}}),
                                                      "actor_configs[0].type", f"actor0 type not allowed for {algo}"))


def _base_energy_without_log_prob(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """Energy ``base`` (explicit or default) on a type without log-probs, for CQL/AWAC/SAC-N/EDAC."""
    return st.builds(lambda i, t, explicit: ConfigCase(
        _with_actors(d, {i: {"type": t, **({"energy": "base"} if explicit else {})}}), f"actor_configs[{i}].type",
        "base energy without log-probs"), _actor_index(d, 1), st.sampled_from(("deterministic", "implicit")),
        st.booleans())


def _advantage_energy_undefined(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    return st.builds(lambda i, t: ConfigCase(_with_actors(d, {i: {"type": t, "energy": "advantage"}}),
                                        f"actor_configs[{i}].energy", "advantage energy not defined"),
                     _actor_index(d, 1), st.sampled_from(POLICY_TYPES))


def _unsupported_extra_actor(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """An extra actor of a type the algorithm's framework cannot train (the registry's ``unsupported_extra_types``)."""
    kinds = registry.algorithm(algo_of(d)).unsupported_extra_types
    return st.tuples(_actor_index(d, 1), st.sampled_from(kinds)).map(lambda it: ConfigCase(
        _with_actors(d, {it[0]: {"type": it[1], "energy": "q"}}, w2_method="auto"), f"actor_configs[{it[0]}].type",
        f"{it[1]} actor for {algo_of(d)}"))


def _closed_form_on_non_gaussian_pair(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    """``closed_form`` W2 with the last two actors stochastic and not both Gaussian (needs 3+ actors)."""
    last = d["num_actors"] - 1
    unsupported = registry.algorithm(algo_of(d)).unsupported_extra_types
    kinds = tuple(t for t in ("tanh_gaussian", "implicit") if t not in unsupported)
    return st.sampled_from(kinds).map(lambda t: ConfigCase(
        _with_actors(d, {last - 1: {"type": "gaussian", "energy": "q"}, last: {"type": t, "energy": "q"}},
                     w2_method="closed_form"), "w2_method", "closed-form W2 on a non-Gaussian pair"))


def _unknown_top_field(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    keys = st.one_of(st.text(max_size=10).filter(lambda k: k not in CONFIG_FIELDS), st.integers(), st.none())
    return keys.map(lambda k: ConfigCase({**copy.deepcopy(d), k: 1}, str(k), "unknown field"))


def _root_not_mapping(d: dict[str, Any]) -> SearchStrategy[ConfigCase]:
    roots = st.one_of(st.just(list(d.items())), st.text(max_size=5), st.integers(), st.none())
    return roots.map(lambda r: ConfigCase(r, "<root>", "root is not a mapping"))


_NOT_A_LIST = st.one_of(st.dictionaries(st.text(max_size=3), st.floats(), max_size=2), st.text(max_size=4),
                        st.integers(), st.floats(), st.booleans())


def _not_a_list(name: str) -> Mutate:
    return lambda d: _NOT_A_LIST.map(lambda v: ConfigCase(_with(d, **{name: v}), name, f"{name} is not a list"))


#: every mutation, drawn first so that hypothesis spreads examples evenly over them
MUTATIONS: tuple[Mutation, ...] = (
    Mutation("w2_weights length off by one", _weights_length_off_by_one),
    Mutation("actor_configs length off by one", _actor_count_off_by_one),
    Mutation("num_actors off by one", _num_actors_off_by_one),
    Mutation("bad weight", _bad_weight, min_actors=2),
    *(Mutation(f"bad {name}", _bad_top_field(name)) for name in _BAD_SCALARS),
    Mutation("base is not a mapping", _base_not_mapping),
    Mutation("unknown base field", _unknown_base_field),
    Mutation("base field of the wrong kind", _base_field_of_wrong_kind),
    *(Mutation(f"bad actor {name}", _bad_actor_field(name)) for name in _BAD_ACTOR_FIELDS),
    Mutation("actor type missing", _actor_type_missing),
    Mutation("unknown actor field", _unknown_actor_field),
    Mutation("actor entry is not a mapping", _actor_not_mapping),
    Mutation("actor0 type not allowed", _actor0_type_not_allowed),
    Mutation("base energy without log-probs", _base_energy_without_log_prob, BASE_NEEDS_LOG_PROB, 2),
    Mutation("advantage energy not defined", _advantage_energy_undefined,
             tuple(a for a in ALGORITHMS if a not in ADVANTAGE_ALGOS), 2),
    Mutation("extra actor type the framework cannot train", _unsupported_extra_actor,
             tuple(n for n, spec in registry.ALGORITHMS.items() if spec.unsupported_extra_types), 2),
    Mutation("closed-form W2 on a non-Gaussian pair", _closed_form_on_non_gaussian_pair, min_actors=3),
    Mutation("unknown field", _unknown_top_field),
    Mutation("root is not a mapping", _root_not_mapping),
    Mutation("w2_weights is not a list", _not_a_list("w2_weights")),
    Mutation("actor_configs is not a list", _not_a_list("actor_configs")),
)


def invalid_configs() -> SearchStrategy[ConfigCase]:
    """A valid mapping with exactly one rule broken, and the field the error must name."""
    warm_base_classes()
    return st.sampled_from(MUTATIONS).flatmap(
        lambda m: valid_config_dicts(m.algos, min_actors=m.min_actors).flatmap(m.mutate))
