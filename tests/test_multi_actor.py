"""Multi-actor trainer: critic and actor0 stay bitwise equal to the reference; extra actors change nothing upstream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multi_actor.config import ActorConfig, MultiActorConfig
from multi_actor.trainer import multi_actor_factory, reference_factory
from pogo_audit.data import DatasetSpec, ReplayBuffer
from pogo_audit.harness import IsolatedTrainer

ALGOS = ("iql", "td3_bc", "cql", "awac", "sac_n", "edac")
SPEC = DatasetSpec("synthetic", "Hopper-v5", 11, 3, 1.0)


@pytest.fixture(scope="module")
def buffer_data():
    rng = np.random.default_rng(0)
    n = 2000
    return {"observations": rng.normal(size=(n, 11)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32),
            "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
            "terminals": rng.random(n) < 0.05}


def lockstep(cfg, buffer_data, steps, batch_size=64):
    """Run reference and multi-actor side by side; return per-step (ref, cand) logs and final parameters."""
    torch.set_num_threads(1)
    ref = IsolatedTrainer(reference_factory, cfg, SPEC, cfg.seed)
    cand = IsolatedTrainer(multi_actor_factory, cfg, SPEC, cfg.seed)
    buf = ReplayBuffer(buffer_data, 123)
    logs = []
    for _ in range(steps):
        batch = buf.sample(batch_size)
        logs.append((ref.call("step", batch), cand.call("step", batch), ref.rng_digests(), cand.rng_digests()))
    return logs, ref, cand


def assert_upstream_bitwise(logs, ref, cand):
    for t, (lr, lc, dr, dc) in enumerate(logs, start=1):
        assert set(lr) <= set(lc), t
        for k, v in lr.items():
            assert lc[k] == v or (np.isnan(v) and np.isnan(lc[k])), (t, k, v, lc[k])
        assert dr == dc, (t, dr, dc)
    pr, pc = ref.trainer.parameters(), cand.trainer.parameters()
    for k, v in pr.items():
        assert np.array_equal(v, pc[k]), k
    gr, gc = ref.trainer.gradients(), cand.trainer.gradients()
    for k, v in gr.items():
        assert np.array_equal(v, gc[k]), f"gradient leak into {k}"


@pytest.mark.parametrize("algo,actors,steps", [("iql", 1, 100), ("iql", 3, 100), ("td3_bc", 1, 100),
                                                ("td3_bc", 3, 100), ("awac", 3, 30), ("cql", 3, 8),
                                                ("sac_n", 3, 8), ("edac", 3, 6)])
def test_critic_and_actor0_bitwise_equal_to_reference(buffer_data, algo, actors, steps):
    cfg = MultiActorConfig(algo=algo, num_actors=actors, seed=3).resolved()
    logs, ref, cand = lockstep(cfg, buffer_data, steps)
    assert_upstream_bitwise(logs, ref, cand)
    if actors > 1:
        assert any("actor2/w2" in lc for _, lc, _, _ in logs)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("actors", [1, 3])
def test_critic_and_actor0_bitwise_equal_100_steps(buffer_data, algo, actors):
    cfg = MultiActorConfig(algo=algo, num_actors=actors, seed=5).resolved()
    logs, ref, cand = lockstep(cfg, buffer_data, 100)
    assert_upstream_bitwise(logs, ref, cand)


@pytest.mark.parametrize("types", [("gaussian", "implicit", "tanh_gaussian"), ("gaussian", "deterministic",
                                                                                "gaussian")])
def test_every_actor_type_leaves_upstream_untouched(buffer_data, types):
    cfg = MultiActorConfig(algo="iql", num_actors=3, seed=1,
                           actor_configs=[ActorConfig(t) for t in types]).resolved()
    logs, ref, cand = lockstep(cfg, buffer_data, 10)
    assert_upstream_bitwise(logs, ref, cand)


def test_extra_actors_learn(buffer_data):
    cfg = MultiActorConfig(algo="td3_bc", num_actors=3, seed=2).resolved()
    cand = IsolatedTrainer(multi_actor_factory, cfg, SPEC, cfg.seed)
    before = {k: v.copy() for k, v in cand.trainer.parameters().items() if k.startswith("actor2/")}
    buf = ReplayBuffer(buffer_data, 0)
    for _ in range(4):
        cand.call("step", buf.sample(32))
    after = cand.trainer.parameters()
    assert any(not np.array_equal(v, after[k]) for k, v in before.items())


def test_candidate_detects_an_extra_global_draw(buffer_data, monkeypatch):
    """Sanity of the lockstep check itself: one extra global draw by actor 1 breaks rng/torch at step 1."""
    import multi_actor.trainer as tr

    original = tr.MultiActorTrainer._update_actors

    def noisy(self, batch):
        torch.randn(1)
        return original(self, batch)

    monkeypatch.setattr(tr.MultiActorTrainer, "_update_actors", noisy)
    cfg = MultiActorConfig(algo="iql", num_actors=2, seed=0).resolved()
    logs, _, _ = lockstep(cfg, buffer_data, 1)
    _, _, dr, dc = logs[0]
    assert dr["rng/torch"] != dc["rng/torch"]
