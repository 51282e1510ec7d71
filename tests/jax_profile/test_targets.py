"""``checks.jax_profile.targets``: user targets load from ``MOD:FACTORY`` with one-line usage errors; the multi-actor
JAX trainer is profiled through whichever interface it offers, or skipped with a reason."""

from __future__ import annotations

import sys

import jax_pathologies
import pytest

from checks.jax_profile import targets as jax_targets
from checks.jax_profile.scan import scan_sources
from checks.jax_profile.targets import as_target, load_target
from pogo_audit.runtime.errors import UsageError


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
    monkeypatch.setattr(jax_targets, "MULTI_ACTOR_MODULE", "multi_actor.no_such_jax_trainer")
    targets, skipped = jax_targets.multi_actor_targets()
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
    monkeypatch.setattr(jax_targets, "MULTI_ACTOR_MODULE", "fake_jax_trainer")
    targets, skipped = jax_targets.multi_actor_targets((1, 3), updates_per_epoch=4, batch_size=8)
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
    monkeypatch.setattr(jax_targets, "MULTI_ACTOR_MODULE", "hooked_jax_trainer")
    targets, skipped = jax_targets.multi_actor_targets((2,))
    assert skipped == [] and targets[0].name == "multi_actor_jax[2 actors]" and targets[0].epoch is not None
