"""``checks.jax_profile``: every pathology of ``jax_pathologies`` is found with the right finding, the clean loop and
the reference ReBRAC come out without recompiles, the static scan classifies host syncs, the session cleans up."""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import textwrap

import jax
import jax_pathologies
import pytest
from rich.console import Console

from checks import jax_profile
from checks.jax_profile import (
    OTHER_ROW,
    ProfileSession,
    as_target,
    load_target,
    profile_target,
    rebrac_target,
    render_jax_profile,
    scan_sources,
)
from pogo_audit.errors import UsageError

STEPS = 4
FAST = dict(steps=STEPS, epochs=2, warmup=1, unjitted_steps=1, repeats=1, timing_steps=5, fresh_caches=False)


@pytest.fixture(scope="module")
def profiles():
    """Each fixture profiled once per module (keyed by factory name)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = profile_target(as_target(getattr(jax_pathologies, name)(), name), **FAST)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def small_rebrac():
    """The reference ReBRAC, small (compile and eager time dominate); policy_freq=1: eager warm-up on one branch."""
    return rebrac_target(updates_per_epoch=10, batch_size=64, config_overrides=dict(
        hidden_dim=32, actor_n_hiddens=1, critic_n_hiddens=1, policy_freq=1))


def _row(result, name):
    rows = [r for r in result.metrics["functions"] if r["name"] == name]
    assert len(rows) == 1, [r["name"] for r in result.metrics["functions"]]
    return rows[0]


def _kinds(result, severity="fail"):
    return [f["kind"] for f in result.details if f["severity"] == severity]


def test_clean_loop_is_clean(profiles):
    res = profiles("clean_loop")
    m = res.metrics
    assert res.verdict == "pass", res.summary
    assert res.details == []
    for name in ("sgd_step", "sgd_epoch"):
        row = _row(res, name)
        assert (row["compiles"], row["compiles_after_warmup"], row["cache_miss_explanations"]) == (1, 0, [])
    assert m["static_syncs"] == []
    assert m["jitted"] is True
    assert m["loop"] == "epoch"
    assert {k: v["transfers"] for k, v in m["host_to_device_transfers"].items()} == {"step": 0, "epoch": 0}
    for ratio in m["ratios"].values():
        assert ratio is not None and ratio > 0 and math.isfinite(ratio)


def test_unjitted_step_is_reported(profiles):
    res = profiles("unjitted_step")
    m = res.metrics
    assert res.verdict == "fail"
    assert m["jitted"] is False
    assert "not_jitted" in _kinds(res)
    # eager ops turn Python scalars (lr, the exponent 2) into device arrays on every step
    h2d = m["host_to_device_transfers"]["step"]
    assert h2d["transfers"] >= STEPS and h2d["first"]["path"].endswith("jax_pathologies.py")
    assert "host_to_device" in _kinds(res)
    assert all(r["name"] == OTHER_ROW for r in m["functions"])


def test_fresh_jit_per_call_recompiles_every_step(profiles):
    res = profiles("fresh_jit_per_call")
    row = _row(res, "<lambda>")
    assert res.verdict == "fail"
    assert row["compiles_after_warmup"] == STEPS
    assert len(row["cache_miss_explanations"]) == STEPS
    assert "re-defined repeatedly" in row["cache_miss_explanations"][-1]
    assert res.metrics["jitted"] is True
    assert "recompile" in _kinds(res)
    assert res.metrics["ratios"] == {"python_loop_over_scan": None, "unjitted_over_jitted": None}
    assert "not timed" in res.metrics["timing_note"]


def test_static_float_argument_recompiles_every_step(profiles):
    res = profiles("static_float_argument")
    row = _row(res, "sgd_step")
    assert res.verdict == "fail"
    assert row["compiles_after_warmup"] == STEPS
    explanation = row["cache_miss_explanations"][0]
    assert "['lr']" in explanation and "Static" in explanation
    finding = next(f for f in res.details if f["kind"] == "recompile")
    assert "static" in finding["message"] and "lr" in finding["message"]


def test_weak_typed_accumulator_retraces_once(profiles):
    res = profiles("weak_typed_accumulator")
    row = _row(res, "sgd_step_accumulate")
    assert res.verdict == "fail"
    assert (row["compiles"], row["compiles_after_warmup"]) == (2, 1)
    (explanation,) = row["cache_miss_explanations"]
    assert "total" in explanation and "weak_type=True" in explanation and "weak_type=False" in explanation
    assert "recompile" in _kinds(res)


def test_per_step_float_is_a_host_sync_in_the_step_loop(profiles):
    res = profiles("per_step_float_sync")
    m = res.metrics
    assert res.verdict == "fail"
    (sync,) = m["static_syncs"]
    assert sync["kind"] == "float()" and sync["inside"] == "step" and "float(loss)" in sync["code"]
    assert sync["path"].endswith("jax_pathologies.py") and sync["function"] == "step"
    assert _row(res, "sgd_step")["compiles_after_warmup"] == 0
    assert _kinds(res) == ["host_sync"]


def test_reference_rebrac_compiles_once_and_reports_ratios(small_rebrac):
    res = profile_target(small_rebrac, steps=3, epochs=1, warmup=1, unjitted_steps=1, repeats=1)
    m = res.metrics
    names = {r["name"]: r for r in m["functions"]}
    assert names["train_step_on_batch"]["compiles"] == 1 and names["train_epoch"]["compiles"] == 1
    assert all(r["compiles_after_warmup"] == 0 for r in m["functions"]), m["functions"]
    assert m["jitted"] is True and m["loop"] == "epoch"
    for ratio in m["ratios"].values():
        assert ratio is not None and ratio > 0 and math.isfinite(ratio)
    # the per-update API syncs (device_get) and transfers scalars each step: reported as notes, the epoch is clean
    assert [s["kind"] for s in m["static_syncs"]] == ["jax.device_get()"]
    assert res.verdict == "pass", res.summary
    assert {f["kind"] for f in res.details if f["severity"] == "note"} == {"host_sync", "host_to_device"}


SNIPPET = '''
import jax
import jax.numpy as jnp
import numpy as np
from functools import partial


@jax.jit
def branchy(x):
    if x.sum() > 0:
        x = x * 2
    return x


@partial(jax.jit, static_argnames="mode")
def static_branch(x, mode):
    if mode == "double":
        return x * 2
    return x


def step(x):
    x = static_branch(branchy(x), mode="double")
    print(x)
    host = np.asarray(x)
    return x.item() if x.size == 1 else host


def epoch(x):
    losses = []
    for _ in range(3):
        x = static_branch(x, mode="double")
        losses.append(float(x.sum()))
    return jax.device_get(x), losses


def never_called(x):
    return float(x)
'''


def _load_snippet(tmp_path):
    path = tmp_path / "snippet_loop.py"
    path.write_text(textwrap.dedent(SNIPPET))
    spec = importlib.util.spec_from_file_location("snippet_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_static_scan_classifies_syncs(tmp_path):
    mod = _load_snippet(tmp_path)
    scan = scan_sources({"step": mod.step, "epoch": mod.epoch})
    found = {(s["function"], s["kind"], s["inside"]) for s in scan.syncs}
    assert found == {
        ("branchy", "if on array", "jit"),
        ("step", "print()", "step"),
        ("step", "np.asarray()", "step"),
        ("step", ".item()", "step"),
        ("epoch", "float()", "step"),
        ("epoch", "jax.device_get()", "epoch"),
    }
    assert scan.reaches_jit == {"step": True, "epoch": True}
    assert not any(s["function"] in ("static_branch", "never_called") for s in scan.syncs)
    lines = {s["kind"]: s["line"] for s in scan.syncs}
    source = (tmp_path / "snippet_loop.py").read_text().splitlines()
    assert "float(x.sum())" in source[lines["float()"] - 1]


def test_static_scan_of_reference_rebrac_follows_jit_into_the_update(small_rebrac):
    scan = scan_sources(small_rebrac.scan_roots)
    assert scan.reaches_jit == {"step": True, "epoch": True}
    assert [f.replace("\\", "/").endswith("reference_algos/jax/rebrac.py") for f in scan.files] == [True]
    # q_lambda's `if normalize_q:` is on a static config value (cfg is bound by partial), not a traced one
    assert [(s["function"], s["inside"]) for s in scan.syncs] == [("train_step", "step")]


def test_session_restores_config_and_logger():
    logger = logging.getLogger("jax")
    handlers, level = list(logger.handlers), logger.level
    before = jax.config.jax_explain_cache_misses
    with ProfileSession() as session:
        assert jax.config.jax_explain_cache_misses is True

        @jax.jit
        def twice(x):
            return 2 * x

        with session.phase("steady"):
            twice(jax.numpy.ones(2))
            twice(jax.numpy.ones(3))
    assert jax.config.jax_explain_cache_misses == before
    assert logger.handlers == handlers and logger.level == level
    row = next(r for r in session.function_table({"twice"}) if r["name"] == "twice")
    assert row["compiles"] == 2 and row["compiles_after_warmup"] == 2
    assert any("f32[3]" in t or "float32[3]" in t for t in row["cache_miss_explanations"])


def test_load_target_and_errors(monkeypatch):
    monkeypatch.syspath_prepend(str(jax_pathologies.__file__).rsplit("/", 1)[0])
    target = load_target("jax_pathologies:clean_loop")
    assert target.epoch is not None and target.updates_per_epoch == jax_pathologies.UPDATES_PER_EPOCH
    with pytest.raises(UsageError, match="MODULE:FACTORY"):
        load_target("jax_pathologies")
    with pytest.raises(UsageError, match="cannot import"):
        load_target("no_such_module_xyz:factory")
    with pytest.raises(UsageError, match="no callable"):
        load_target("jax_pathologies:nothing_here")
    with pytest.raises(UsageError, match="step"):
        as_target(object(), "bad")


def test_multi_actor_absent_is_skipped_cleanly(monkeypatch):
    monkeypatch.setattr(jax_profile, "MULTI_ACTOR_MODULE", "multi_actor.no_such_jax_trainer")
    targets, skipped = jax_profile.multi_actor_targets()
    assert targets == [] and len(skipped) == 1 and "not found" in skipped[0]
    assert "multi_actor.no_such_jax_trainer" not in sys.modules


FAKE_MULTI_ACTOR = '''
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass
class Config:
    batch_size: int = 8
    num_updates_on_epoch: int = 4
    num_actors: int = 1


class Trainer:
    def __init__(self, config):
        self.config = config
        self.w = jnp.zeros((config.num_actors,))
        self._step = jax.jit(lambda w, x: w + x.mean())

    def train_step(self, batch, i):
        self.w = self._step(self.w, batch["states"])
        return {}

    def train_epoch(self, buffer):
        self.w = self._step(self.w, buffer["states"])
        return {}


def build(config, state_dim, action_dim):
    return Trainer(config)
'''


def test_multi_actor_trainer_with_rebrac_interface_is_wrapped(tmp_path, monkeypatch):
    (tmp_path / "fake_jax_trainer.py").write_text(FAKE_MULTI_ACTOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(jax_profile, "MULTI_ACTOR_MODULE", "fake_jax_trainer")
    targets, skipped = jax_profile.multi_actor_targets((1, 3), updates_per_epoch=4, batch_size=8)
    assert skipped == []
    assert [t.name for t in targets] == ["multi_actor_jax[1 actor]", "multi_actor_jax[3 actors]"]
    t = targets[1]
    assert t.loop == "epoch" and t.updates_per_epoch == 4 and t.step_fn is not None
    assert t.scan_roots["step"].__self__.w.shape == (3,)
    assert scan_sources(t.scan_roots).reaches_jit == {"step": True, "epoch": True}


def test_multi_actor_hook_is_used(tmp_path, monkeypatch):
    (tmp_path / "hooked_jax_trainer.py").write_text(
        "import jax_pathologies\n\n\ndef jax_profile_target(num_actors, updates_per_epoch, batch_size, seed):\n"
        "    return jax_pathologies.clean_loop()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(jax_profile, "MULTI_ACTOR_MODULE", "hooked_jax_trainer")
    targets, skipped = jax_profile.multi_actor_targets((2,))
    assert skipped == [] and targets[0].name == "multi_actor_jax[2 actors]" and targets[0].epoch is not None


def test_render_tables(profiles):
    console = Console(width=160, record=True)
    for name in ("clean_loop", "weak_typed_accumulator"):
        for renderable in render_jax_profile(profiles(name)):
            console.print(renderable)
    text = console.export_text()
    assert "sgd_step_accumulate" in text and "weak_type" in text and "python loop / scan" in text
