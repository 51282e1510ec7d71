"""Step time of the multi-actor trainer with 1, 2, 3, 5 actors relative to the reference single-actor step, and
each row's matmul FLOPs per step (``benchmarks.flops``: the floor its time ratio is read against)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.flops import torch_flops_per_step
from multi_actor.config import MultiActorConfig
from multi_actor.trainer import MultiActorTrainer, ReferenceProtocolTrainer
from pogo_audit.data import DatasetSpec, ReplayBuffer

SPEC = DatasetSpec("synthetic", "Hopper-v5", 11, 3, 1.0)
STEPS, ROUNDS = 40, 5  # interleaved rows: 40 steps (20 TD3+BC actor updates) per turn, 5 turns each


@pytest.mark.parametrize("algo", ["iql", "td3_bc"])
@pytest.mark.parametrize("actors", [0, 1, 2, 3, 5])
def test_step_time(benchmark, offline_data, algo, actors):
    torch.set_num_threads(1)
    cfg = MultiActorConfig(algo=algo, num_actors=max(actors, 1)).resolved()
    trainer = ReferenceProtocolTrainer(cfg, SPEC, 0) if actors == 0 else MultiActorTrainer(cfg, SPEC, 0)
    buf = ReplayBuffer(offline_data, 0)
    for _ in range(5):
        trainer.step(buf.sample(256))
    flops = torch_flops_per_step(trainer.step, [buf.sample(256) for _ in range(4)])  # TD3+BC: two actor updates
    benchmark.group = f"multi_actor step {algo}"
    benchmark.extra_info.update(label="reference" if actors == 0 else f"{actors} actors", baseline=actors == 0,
                                flops_per_step=flops)
    benchmark.pedantic(trainer.step, setup=lambda: ((buf.sample(256),), {}), rounds=60, warmup_rounds=5)


@pytest.mark.parametrize("algo", ["iql", "td3_bc"])
def test_step_time_interleaved(benchmark, offline_data, algo):
    """The same ratios with the trainers taking turns (reference, 3 actors, 5 actors; ``STEPS`` steps each, on the
    same batches, ``ROUNDS`` times): a noisy machine's drift then hits every row alike, which rows timed one after
    the other do not get. Ratios of total time, in ``extra_info["ratios"]`` (printed by the summary)."""
    import time

    torch.set_num_threads(1)
    rows = {0: "reference", 3: "3 actors", 5: "5 actors"}
    trainers = {}
    for actors in rows:
        cfg = MultiActorConfig(algo=algo, num_actors=max(actors, 1)).resolved()
        trainers[actors] = ReferenceProtocolTrainer(cfg, SPEC, 0) if actors == 0 else MultiActorTrainer(cfg, SPEC, 0)
    buf = ReplayBuffer(offline_data, 0)
    batches = [buf.sample(256) for _ in range(STEPS)]
    for trainer in trainers.values():
        for batch in batches[:5]:
            trainer.step(batch)
    totals = dict.fromkeys(rows, 0.0)

    def rounds():
        for _ in range(ROUNDS):
            for actors, trainer in trainers.items():
                start = time.perf_counter()
                for batch in batches:
                    trainer.step(batch)
                totals[actors] += time.perf_counter() - start

    benchmark.group = f"multi_actor step {algo}, interleaved"
    benchmark.pedantic(rounds, rounds=1)
    benchmark.extra_info.update(label="all rows", ratios={rows[a]: totals[a] / totals[0] for a in rows},
                                seconds_per_step={rows[a]: totals[a] / (ROUNDS * STEPS) for a in rows})
