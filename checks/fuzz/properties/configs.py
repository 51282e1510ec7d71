"""Properties of the config layer: invalid mappings are rejected naming the field, valid ones round-trip through
YAML and train one step, ``--set`` overrides apply or fail with an InputError naming the assignment."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from checks.fuzz.strategies.config_mutations import ConfigCase
from checks.fuzz.strategies.configs import TrainCase
from checks.fuzz.strategies.overrides import OverrideCase
from checks.fuzz.violations import fail, first_difference
from multi_actor.config import ConfigError, build_config, from_dict
from multi_actor.trainer import multi_actor_factory
from pogo_audit.runtime.data import DatasetSpec, ReplayBuffer
from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import yaml_load


def check_invalid_config_rejected(case: ConfigCase) -> None:
    """An invalid mapping raises exactly ConfigError naming the offending field, never anything else."""
    try:
        cfg = from_dict(copy.deepcopy(case.data)).resolved()
    except ConfigError as err:
        if err.field != case.field:
            fail(f"{case.mutation}: ConfigError names {err.field!r}, expected {case.field!r} ({err})")
        if f"'{case.field}'" not in str(err) or "expected" not in str(err):
            fail(f"{case.mutation}: message does not name {case.field!r} and the expectation: {err}")
        return
    fail(f"{case.mutation}: invalid field {case.field!r} silently accepted; resolved to {cfg!r}")


def check_valid_config_round_trips(data: dict[str, Any]) -> None:
    """A valid mapping resolves, keeps every given field, and survives ``to_yaml`` → ``from_dict`` exactly."""
    cfg = from_dict(copy.deepcopy(data)).resolved()
    resolved = cfg.to_dict()
    for key, value in data.items():
        if value is None:
            continue
        got = resolved[key]
        if key == "actor_configs":
            got = [{k: a[k] for k in given} for a, given in zip(got, value)]
        diff = first_difference(value, got, key)
        if diff:
            fail(f"given field changed by resolution: {diff}")
    diff = first_difference(resolved, cfg.resolved().to_dict())
    if diff:
        fail(f"resolved() is not idempotent: {diff}")
    text = cfg.to_yaml()
    again = from_dict(yaml_load(text)).resolved()
    diff = first_difference(resolved, again.to_dict())
    if diff or again != cfg:
        fail(f"YAML round trip changed the config: {diff}\n{text}")


def check_overrides(case: OverrideCase) -> None:
    """``--set`` overrides either build a config (the last plain one visibly applied) or raise InputError."""
    try:
        cfg = build_config(None, list(case.assignments), **copy.deepcopy(case.data))
    except ConfigError:
        return
    except InputError as err:
        if "--set" not in str(err):
            fail(f"override error does not name the --set assignment: {err}")
        return
    if case.expected is None:
        return
    path, value = case.expected
    node: Any = cfg.to_dict()
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    diff = first_difference(value, node, ".".join(path))
    if diff:
        fail(f"override {case.assignments[-1]!r} not applied: {diff}")


def check_valid_config_trains(case: TrainCase) -> None:
    """A valid config builds the multi-actor trainer, which runs one step with finite losses and parameters."""
    cfg = from_dict(copy.deepcopy(case.config)).resolved()
    spec = DatasetSpec("fuzz", "", case.state_dim, case.action_dim, 1.0)
    rng = np.random.default_rng(case.seed)
    n = max(case.batch_size, 8)
    buffer = ReplayBuffer({
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
        fail("step returned no losses")
    bad = {k: v for k, v in log.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
    if bad:
        fail(f"non-finite or non-scalar step outputs: {bad}")
    if due:
        missing = [f"actor{i}/loss" for i in range(1, cfg.num_actors) if f"actor{i}/loss" not in log]
        if missing:
            fail(f"actor update due but no loss for {missing}")
    bad_params = [k for k, v in params.items() if not np.all(np.isfinite(v))]
    if bad_params:
        fail(f"non-finite parameters after one step: {bad_params[:5]}")
