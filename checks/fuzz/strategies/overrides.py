"""``--set key=value`` overrides: plain valid assignments whose effect is known, and often-invalid ones (no ``=``,
bad YAML, bad indices, paths through scalars, unknown keys)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from checks.fuzz.strategies.configs import (
    CONFIG_FIELDS,
    algo_of,
    base_class,
    base_value,
    finite_floats,
    valid_config_dicts,
    warm_base_classes,
)
from multi_actor.config import WANDB_MODES
from pogo_audit.runtime.io import yaml_dump


@dataclass(frozen=True)
class OverrideCase:
    """A valid mapping, ``--set`` assignments, and (path, value) of the last one when it is a plain valid one."""

    data: dict[str, Any]
    assignments: tuple[str, ...]
    expected: tuple[tuple[str, ...], Any] | None = None


def _yaml_text(value: Any) -> str:
    """``value`` as the one-line YAML text of ``--set key=<text>``."""
    text = yaml_dump(value, default_flow_style=True, width=10**9)
    return text.removesuffix("\n...\n").strip()


def _plain_assignments(d: dict[str, Any]) -> SearchStrategy[tuple[str, tuple[str, ...], Any]]:
    """(assignment, path, value) setting one known field to a valid value."""
    safe_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
    top = {"seed": st.integers(), "steps": st.integers(min_value=1), "eval_stochastic": st.booleans(),
           "wandb_mode": st.sampled_from(WANDB_MODES), "dataset": safe_text, "log_freq": st.integers(1, 10**9),
           "sinkhorn_epsilon": finite_floats(1e-6, 10.0), "w2_samples": st.integers(2, 64)}
    paths: list[tuple[tuple[str, ...], SearchStrategy[Any]]] = [((k,), v) for k, v in top.items()]
    cls = base_class(algo_of(d))
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name != "iql_deterministic" and getattr(defaults, f.name) is not None:
            paths.append((("base", f.name), base_value(getattr(defaults, f.name))))
    for i, _ in enumerate(d.get("w2_weights") or []):
        paths.append((("w2_weights", str(i)), finite_floats(0.0, 1e6)))
    for i, _ in enumerate(d.get("actor_configs") or []):
        paths.append((("actor_configs", str(i), "hidden_dim"), st.integers(1, 512)))
        paths.append((("actor_configs", str(i), "lr"), finite_floats(1e-6, 1.0)))
    return st.sampled_from(paths).flatmap(
        lambda pv: pv[1].map(lambda v: (f"{'.'.join(pv[0])}={_yaml_text(v)}", pv[0], v)))


def _random_assignments() -> SearchStrategy[str]:
    """Assignments that are often invalid: no ``=``, bad YAML, bad indices, paths through scalars, unknown keys."""
    known = st.sampled_from(CONFIG_FIELDS)
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

    warm_base_classes()
    return st.booleans().flatmap(lambda plain: valid_config_dicts().flatmap(lambda d: build(d, plain)))
