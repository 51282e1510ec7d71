"""``make_config(**fields)`` fuzzed: a valid POGO config is accepted as given, a broken one raises an error naming
the field — never silently padded, truncated or coerced.

The fields are the POGO core every multi-actor trainer has (``num_actors``, ``w2_weights``, ``actor_configs`` — every actor, actor0 first —,
``seed``), in our canonical names; the adapter's ``make_config`` maps them onto the candidate's own config.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from checks.fuzz.violations import fail, first_difference


@dataclass(frozen=True)
class HookConfigCase:
    """Fields given to ``make_config`` and, for a broken case, the fields an error may name."""

    fields: dict[str, Any]
    mutation: str | None = None
    names: tuple[str, ...] = ()


def _valid(actor0_type: str, extra_types: Sequence[str]) -> SearchStrategy[dict[str, Any]]:
    def build(n: int, draw_weights: list[float], types: list[str], seed: int) -> dict[str, Any]:
        return {"num_actors": n, "w2_weights": draw_weights[:n - 1],
                "actor_configs": [{"type": t} for t in [actor0_type, *types[:n - 1]]], "seed": seed}

    return st.builds(build, st.integers(1, 5),
                     st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=4, max_size=4),
                     st.lists(st.sampled_from(list(extra_types)), min_size=4, max_size=4), st.integers(0, 2**31 - 1))


_BAD_COUNT = st.sampled_from([0, -1, 2.5, "3", True, None, float("nan")])
_BAD_WEIGHT = st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, "0.1", None, [1.0]])
_BAD_SEED = st.sampled_from(["0", 1.5, None, float("nan"), [0]])


def _mutations(d: dict[str, Any]) -> SearchStrategy[HookConfigCase]:
    n = d["num_actors"]
    cases = [
        st.sampled_from([-1, 1]).map(lambda k: HookConfigCase(
            {**d, "w2_weights": d["w2_weights"] + [1.0] if k > 0 or n == 1 else d["w2_weights"][:-1]},
            "w2_weights length differs from num_actors - 1", ("w2_weights", "num_actors"))),
        _BAD_COUNT.map(lambda v: HookConfigCase({**d, "num_actors": v}, f"num_actors = {v!r}",
                                                ("num_actors", "w2_weights", "actor_configs"))),
        _BAD_SEED.map(lambda v: HookConfigCase({**d, "seed": v}, f"seed = {v!r}", ("seed",))),
        st.sampled_from(["w2_weight", "num_actor", "learning_rat"]).map(lambda k: HookConfigCase(
            {**d, k: 1}, f"unknown field {k!r}", (k,))),
    ]
    cases.append(st.sampled_from([-1, 1]).map(lambda k: HookConfigCase(
        {**d, "actor_configs": d["actor_configs"] + d["actor_configs"][-1:] if k > 0 else d["actor_configs"][:-1]},
        "actor_configs length differs from num_actors", ("actor_configs", "num_actors"))))
    if n > 1:
        cases.append(st.tuples(st.integers(0, n - 2), _BAD_WEIGHT).map(lambda iv: HookConfigCase(
            {**d, "w2_weights": [iv[1] if i == iv[0] else w for i, w in enumerate(d["w2_weights"])]},
            f"w2_weights[{iv[0]}] = {iv[1]!r}", ("w2_weights",))))
    return st.one_of(cases)


def config_cases(actor0_type: str, extra_types: Sequence[str]) -> SearchStrategy[HookConfigCase]:
    """Valid POGO core configs (half the examples) and the same with exactly one rule broken. ``actor_configs``
    lists every actor, actor0 first (our config's convention), so its length is ``num_actors``."""
    valid = _valid(actor0_type, extra_types)
    return st.one_of(valid.map(HookConfigCase), valid.flatmap(_mutations))


def _read(config: Any, name: str) -> Any:
    if isinstance(config, dict):
        return config.get(name, _ABSENT)
    return getattr(config, name, _ABSENT)


_ABSENT = object()


def _plain(value: Any) -> Any:
    """Lists/tuples, dataclass-like actor entries and numbers as plain lists/dicts/floats, for comparing what the
    config kept with what was given (a float kept as ``np.float32`` is kept)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {k: _plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    return value


def check_make_config(make_config: Callable[..., Any], case: HookConfigCase) -> None:
    """Valid fields build a config that keeps them (where readable); broken ones raise naming a field involved."""
    try:
        config = make_config(**case.fields)
    except Exception as exc:  # noqa: BLE001 - any error type is fine as long as it names the field
        if case.mutation is None:
            fail(f"valid fields rejected: {type(exc).__name__}: {exc} (fields {case.fields!r})")
        message = str(exc)
        if not any(name in message for name in case.names):
            fail(f"{case.mutation}: the error does not name {' or '.join(case.names)}: "
                 f"{type(exc).__name__}: {message[:300]}")
        return
    if case.mutation is not None:
        kept = {k: _read(config, k) for k in case.fields}
        shown = {k: v for k, v in kept.items() if v is not _ABSENT}
        fail(f"{case.mutation}: silently accepted; the config reads {shown!r}")
    for name, given in case.fields.items():
        got = _read(config, name)
        if got is _ABSENT:
            continue
        got = _plain(got)
        if name == "actor_configs" and isinstance(got, list) and len(got) == len(given):
            got = [{k: a.get(k) for k in g} if isinstance(a, dict) else a for a, g in zip(got, given)]
        diff = first_difference(_plain(given), got, name)
        if diff:
            fail(f"valid field changed by make_config: {diff}")
