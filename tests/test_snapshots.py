"""Snapshots every few steps (:mod:`checks.equivalence.snapshots`): a finding first seen several steps after the last
snapshot is located as from a snapshot of its own step, by replaying the steps since; a replay that does not
reproduce the live run's state says so instead of locating on a wrong state."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from checks.equivalence import lockstep
from checks.equivalence.snapshots import REPLAY_MISMATCH, TORCH_SNAPSHOT_EVERY
from multi_actor.config import build_config
from multi_actor.trainer import multi_actor_factory

#: the step the defects below first act at: neither the first step nor a snapshot's
LATE = 7
#: steps this process's candidates have run (a state outside the trainer, which a replay cannot rewind)
STEPS_IN_PROCESS = [0]


class _Wrapped:
    """Our multi-actor trainer behind a user's wrapper; every other protocol method is the trainer's."""

    def __init__(self, inner):
        self.inner = inner
        self.steps = 0

    def __getattr__(self, name):
        if name == "inner":  # not set yet (a copy being built)
            raise AttributeError(name)
        return getattr(self.inner, name)


class LateDefect(_Wrapped):
    """From its LATE-th step on, every network learns from doubled observations."""

    def step(self, batch):
        self.steps += 1
        if self.steps >= LATE:
            batch = [batch[0] * 2.0, *batch[1:]]
        return self.inner.step(batch)


class ProcessCountedDefect(_Wrapped):
    """The same defect, decided by a count kept outside the trainer (a module-level list)."""

    def step(self, batch):
        STEPS_IN_PROCESS[0] += 1
        if STEPS_IN_PROCESS[0] >= LATE:
            batch = [batch[0] * 2.0, *batch[1:]]
        return self.inner.step(batch)


def _late(*args):
    return LateDefect(multi_actor_factory(*args))


def _counted(*args):
    return ProcessCountedDefect(multi_actor_factory(*args))


def _line(cls, text):
    source, start = inspect.getsourcelines(cls.step)
    return start + next(i for i, line in enumerate(source) if text in line)


def _run(factory, steps):
    return equivalence_for_algo("iql", build_config(None, [], algo="iql"),
                                EquivalenceOptions(steps=steps, isolate=True, self_check=False, bundle_dir=None),
                                candidate=("wrapped", factory))


def _located(res):
    return [(f["observable"], f["first_step"], f["location"], f["localisation"]) for f in res.metrics["findings"]]


@pytest.mark.heavy
def test_a_finding_seen_steps_after_the_snapshot_is_located_as_from_its_own_step(embedded_dataset, monkeypatch):
    """The snapshot before step 1 serves step LATE (LATE - 1 steps replayed first): every finding is located
    exactly as with a snapshot before every step."""
    assert 1 < LATE <= TORCH_SNAPSHOT_EVERY
    windowed = _run(_late, LATE + 1)
    monkeypatch.setattr(lockstep, "TORCH_LOCALISER", dataclasses.replace(lockstep.TORCH_LOCALISER, every=1))
    every_step = _run(_late, LATE + 1)
    assert windowed.verdict == every_step.verdict == "fail"
    assert _located(windowed) == _located(every_step)
    critic = next(f for f in windowed.metrics["findings"] if f["observable"].startswith("critic/"))
    assert critic["first_step"] == LATE
    assert critic["location"]["path"].endswith("test_snapshots.py"), critic["localisation"]
    assert critic["location"]["line"] in (_line(LateDefect, "batch[0] * 2.0"), _line(LateDefect, "inner.step"))


@pytest.mark.heavy
def test_a_replay_that_does_not_reproduce_the_run_says_so(embedded_dataset):
    """Replaying steps 1..LATE-1 advances the module-level count again, so the doubled observations act inside the
    replay too and the extra actors (which ``--isolate`` does not synchronise) end elsewhere: no line is named on
    that state, and the message says why."""
    STEPS_IN_PROCESS[0] = 0
    res = _run(_counted, LATE)
    assert res.verdict == "fail"
    critic = next(f for f in res.metrics["findings"] if f["observable"].startswith("critic/"))
    assert critic["first_step"] == LATE
    assert critic["location"] is None
    assert critic["localisation"]["rule"] == REPLAY_MISMATCH
    assert "did not reproduce the candidate's actor" in critic["localisation"]["message"]
