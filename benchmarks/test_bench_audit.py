"""Audit overhead: wall time of ``equivalence`` ÷ (bare reference + bare multi-actor trainer) over the same number of
steps, IQL and CQL measured side by side in one run. The issue's goal is ≤ 1.0x on the 2-core machine at 1000 steps
(``POGO_BENCH_AUDIT_STEPS``, default 100); the ratios are reported, never asserted.

The interleaved row (``test_audit_overhead_interleaved``) runs the bare pair and the audit in turns, ABBA over
``POGO_BENCH_AUDIT_ROUNDS`` pairs (default 2): this VM drifts over minutes (the same bare pair read 47.6 s and
54.2 s in two runs an hour apart), so one audit against one bare run moved the ratio by ±10 %; the turns share the
drift, and the median of the per-pair ratios is printed.

Two audits per algorithm: ``equivalence`` as it runs now (the reference and its self-check twin in a worker process,
the W2 oracle on its schedule) and ``equivalence in one process`` (``concurrent=False``, the oracle every step: the
audit as it ran before), so before and after come from the same run on the same load. The fork server the worker is
forked from is started once before the timings (the CLI starts it while it prepares the data).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from checks.equivalence import EquivalenceOptions, run_equivalence
from multi_actor.config import MultiActorConfig
from multi_actor.trainer import multi_actor_factory, reference_factory
from pogo_audit.runtime.data import DatasetSpec, ReplayBuffer

SPEC = DatasetSpec("synthetic", "Hopper-v5", 11, 3, 1.0)
STEPS = int(os.environ.get("POGO_BENCH_AUDIT_STEPS", "100"))
ROUNDS = int(os.environ.get("POGO_BENCH_AUDIT_ROUNDS", "2"))
AUDITS = {"audit": ("equivalence", {}),
          "audit_one_process": ("equivalence in one process", {"concurrent": False, "oracle_every": 1})}


def _bare(factory, cfg, data, steps):
    trainer = factory(cfg, SPEC, 0)
    buf = ReplayBuffer(data, 1)
    for _ in range(steps):
        trainer.step(buf.sample(256))


@pytest.fixture(scope="module")
def fork_server():
    """The fork server, started and answering (a trivial worker forked from it)."""
    from checks.workers import forkserver_context

    process = forkserver_context().Process(target=int)
    process.start()
    process.join()


def _audit(algo, cfg, data, steps, **extra):
    options = EquivalenceOptions(steps=steps, bundle_dir=None, **extra)
    result = run_equivalence(algo, cfg, SPEC, ReplayBuffer(data, 1), reference_factory, multi_actor_factory, options)
    assert result.verdict == "pass", result.summary


# pytest-timeout's 900 s would cut the 1000-step rows (CQL bare: ~20 min here) and report them as failures
@pytest.mark.timeout(max(900, 3 * STEPS))
@pytest.mark.parametrize("algo", ["iql", "cql"])
@pytest.mark.parametrize("what", ["bare", *AUDITS])
def test_audit_overhead(benchmark, offline_data, fork_server, algo, what):
    torch.set_num_threads(1)
    cfg = MultiActorConfig(algo=algo, num_actors=3).resolved()
    benchmark.group = f"audit overhead {algo} ({STEPS} steps)"
    label, extra = AUDITS.get(what, ("reference + multi-actor, bare", {}))
    benchmark.extra_info.update(label=label, baseline=what == "bare")
    if what == "bare":
        def run():
            _bare(reference_factory, cfg, offline_data, STEPS)
            _bare(multi_actor_factory, cfg, offline_data, STEPS)
    else:
        def run():
            _audit(algo, cfg, offline_data, STEPS, **extra)
    benchmark.pedantic(run, rounds=1, iterations=1)


@pytest.mark.timeout(max(900, 6 * STEPS * ROUNDS))
@pytest.mark.parametrize("algo", ["iql", "cql"])
def test_audit_overhead_interleaved(benchmark, offline_data, fork_server, algo):
    """``equivalence`` ÷ (bare reference + bare multi-actor) with the two taking turns, ABBA: the ratio of each pair
    of turns, their median in ``extra_info["ratios"]`` (printed by the summary), the seconds of every turn beside."""
    torch.set_num_threads(1)
    cfg = MultiActorConfig(algo=algo, num_actors=3).resolved()
    runs = {"bare": lambda: (_bare(reference_factory, cfg, offline_data, STEPS),
                             _bare(multi_actor_factory, cfg, offline_data, STEPS)),
            "audit": lambda: _audit(algo, cfg, offline_data, STEPS)}
    seconds: dict[str, list[float]] = {"bare": [], "audit": []}

    def turns():
        for r in range(ROUNDS):
            for what in ("bare", "audit") if r % 2 == 0 else ("audit", "bare"):
                start = time.perf_counter()
                runs[what]()
                seconds[what].append(time.perf_counter() - start)

    benchmark.group = f"audit overhead {algo} ({STEPS} steps), interleaved"
    benchmark.pedantic(turns, rounds=1, iterations=1)
    pairs = [a / b for a, b in zip(seconds["audit"], seconds["bare"])]
    benchmark.extra_info.update(label="bare and audit in turns", seconds=seconds, pair_ratios=pairs,
                                ratios={"equivalence (median of pairs)": statistics.median(pairs),
                                        "equivalence (total)": sum(seconds["audit"]) / sum(seconds["bare"])})
