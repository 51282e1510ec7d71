"""Step time of the multi-actor trainer with 1, 2, 3, 5 actors relative to the reference single-actor step, and
each row's matmul FLOPs per step (``benchmarks.flops``: the floor its time ratio is read against)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.flops import torch_flops_per_step
from multi_actor.config import MultiActorConfig
from multi_actor.trainer import MultiActorTrainer, ReferenceProtocolTrainer
from pogo_audit.runtime.data import DatasetSpec, ReplayBuffer

SPEC = DatasetSpec("synthetic", "Hopper-v5", 11, 3, 1.0)
INTERLEAVED_STEPS = 300  # interleaved rows: 300 steps each (150 TD3+BC actor updates), in turns step by step


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
    """The same ratios with the trainers taking turns step by step: on each batch the reference, the 3-actor and the
    5-actor trainer step one after the other, so a noisy machine's drift (rows timed one after the other here
    drifted by up to 40 %; turns of 40 steps by ±5–10 %) hits the three alike. A ratio per pair of steps (TD3+BC
    updates its actors every second step), their median in ``extra_info["ratios"]`` (printed by the summary), the
    ratio of total times beside it."""
    import statistics
    import time

    torch.set_num_threads(1)
    rows = {0: "reference", 3: "3 actors", 5: "5 actors"}
    trainers = {}
    for actors in rows:
        cfg = MultiActorConfig(algo=algo, num_actors=max(actors, 1)).resolved()
        trainers[actors] = ReferenceProtocolTrainer(cfg, SPEC, 0) if actors == 0 else MultiActorTrainer(cfg, SPEC, 0)
    buf = ReplayBuffer(offline_data, 0)
    batches = [buf.sample(256) for _ in range(INTERLEAVED_STEPS)]
    for trainer in trainers.values():
        for batch in batches[:10]:
            trainer.step(batch)
    times: dict[int, list[float]] = {a: [] for a in rows}

    def turns():
        for batch in batches:
            for actors, trainer in trainers.items():
                start = time.perf_counter()
                trainer.step(batch)
                times[actors].append(time.perf_counter() - start)

    benchmark.group = f"multi_actor step {algo}, interleaved"
    benchmark.pedantic(turns, rounds=1)

    def pairs(a: int) -> list[float]:
        return [x + y for x, y in zip(times[a][::2], times[a][1::2])]

    benchmark.extra_info.update(
        label="all rows",
        ratios={rows[a]: statistics.median(x / y for x, y in zip(pairs(a), pairs(0))) for a in rows},
        total_time_ratios={rows[a]: sum(times[a]) / sum(times[0]) for a in rows},
        seconds_per_step={rows[a]: statistics.median(times[a]) for a in rows})
