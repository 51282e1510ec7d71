"""The commands as a user types them: wall time of ``pogo-audit ...`` in a fresh process with default settings (the
thread budget the tool plans itself, start-up included), each next to the bare trainers timed in the same run.

Rows, all in one run (``POGO_BENCH_CMD_STEPS``, default 1000; ``POGO_BENCH_CMD_ALGOS``, default ``iql,cql``):

* ``equivalence --algo A --steps N`` against the bare pair — the reference and the multi-actor trainer trained
  one after the other for N steps with the threads the audit gave each of its trainers (``bare_pair`` below) — and
  the start-up cost (``benchmarks.startup``, phase by phase). The goal: audit ≤ 1.1 × bare + start-up;
* ``equivalence --algo iql --steps 300 --isolate`` ÷ ``equivalence --algo iql --steps 300`` (goal ≤ 1.3×);
* ``report --algo iql`` and ``matrix`` (4 cells, ``--jobs 2``), reported beside the bare pair of their steps.

Timings on this 2-core VM drift by ±10 % over minutes: every ratio is of rows measured in this run, and the pair a
ratio compares is timed in turns (bare, audit, audit, bare) with the ratio of the sums reported. Never asserted.
Run: ``.venv/bin/python -m pytest benchmarks/test_bench_commands.py --benchmark-enable -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = int(os.environ.get("POGO_BENCH_CMD_STEPS", "1000"))
ALGOS = [a for a in os.environ.get("POGO_BENCH_CMD_ALGOS", "iql,cql").split(",") if a]
CLI = [str(Path(sys.executable).with_name("pogo-audit"))]


def _env() -> dict[str, str]:
    """The user's environment: nothing pinned (no thread variables, no budget), only the temp directories."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POGO_AUDIT_THREADS",
                        "XLA_FLAGS")}
    env.setdefault("MUJOCO_GL", "egl")
    return env


def _timed(argv: list[str], expect: int = 0) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - start
    assert proc.returncode == expect, (argv, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return seconds


def _bare_pair(algo: str, steps: int, threads: int) -> float:
    return _timed([sys.executable, "-m", "benchmarks.bare_pair", "--algo", algo, "--steps", str(steps),
                   "--threads", str(threads)])


def _per_trainer_threads(algo: str, steps: int, tmp: Path) -> int:
    """The threads per trainer the audit plans for ``steps`` (read from a 20-step run's result)."""
    out = tmp / f"{algo}-threads.json"
    _timed([*CLI, "equivalence", "--algo", algo, "--steps", str(min(steps, 20)), "-q", "--json", str(out)])
    return json.loads(out.read_text())["checks"][0]["metrics"]["threads"]["per_process"]


def _turns(first, second) -> tuple[list[float], list[float]]:
    """ABBA: first, second, second, first."""
    a, b = [first()], [second()]
    b.append(second())
    a.append(first())
    return a, b


@pytest.fixture(scope="module")
def dataset():
    from pogo_audit.runtime.data import make_dataset

    make_dataset()


@pytest.mark.timeout(0)
@pytest.mark.parametrize("algo", ALGOS)
def test_equivalence_as_typed(benchmark, dataset, tmp_path, algo):
    threads = _per_trainer_threads(algo, STEPS, tmp_path)
    startup = json.loads(subprocess.run([sys.executable, "-m", "benchmarks.startup", "--algo", algo, "--steps",
                                         str(STEPS)], env=_env(), capture_output=True, text=True,
                                        check=True).stdout)
    audit = [*CLI, "equivalence", "--algo", algo, "--steps", str(STEPS), "-q"]
    seconds: dict[str, list[float]] = {}

    def run():
        seconds["bare"], seconds["audit"] = _turns(lambda: _bare_pair(algo, STEPS, threads), lambda: _timed(audit))

    benchmark.group = f"equivalence {algo} as typed ({STEPS} steps)"
    benchmark.pedantic(run, rounds=1, iterations=1)
    bare, audit_s = sum(seconds["bare"]) / 2, sum(seconds["audit"]) / 2
    budget = 1.1 * bare + startup["total before step 1"]
    benchmark.extra_info.update(label="bare pair and audit in turns", seconds=seconds, startup=startup,
                                threads_per_trainer=threads,
                                ratios={"audit / bare": audit_s / bare,
                                        "audit / (1.1 bare + start-up)": audit_s / budget})
    print(f"\n{algo}: audit {audit_s:.1f}s, bare pair {bare:.1f}s ({threads} thread/trainer), start-up "
          f"{startup['total before step 1']:.2f}s {startup} -> audit/(1.1*bare+start-up) {audit_s / budget:.2f}")


@pytest.mark.timeout(0)
def test_isolate_against_plain(benchmark, dataset):
    plain = [*CLI, "equivalence", "--algo", "iql", "--steps", "300", "-q"]
    isolate = [*plain, "--isolate"]
    seconds: dict[str, list[float]] = {}

    def run():
        seconds["plain"], seconds["isolate"] = _turns(lambda: _timed(plain), lambda: _timed(isolate))

    benchmark.group = "equivalence iql --isolate as typed (300 steps)"
    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = sum(seconds["isolate"]) / sum(seconds["plain"])
    benchmark.extra_info.update(label="plain and --isolate in turns", seconds=seconds,
                                ratios={"isolate / plain": ratio})
    print(f"\n--isolate / plain (300 steps): {ratio:.2f} {seconds}")


@pytest.mark.timeout(0)
def test_report_and_matrix(benchmark, dataset, tmp_path):
    rows: dict[str, float] = {}

    def run():
        rows["bare pair iql (300 steps, 1 thread)"] = _bare_pair("iql", 300, 1)
        rows["report --algo iql"] = _timed([*CLI, "report", "--algo", "iql", "-o", str(tmp_path / "r.md"), "-q"])
        rows["matrix 4 cells --jobs 2 (td3_bc, 2 seeds x 2 actor sets, 300 steps)"] = _timed(
            [*CLI, "matrix", "--algo", "td3_bc", "--seeds", "0,1", "--actor-types",
             "deterministic;deterministic,gaussian", "--steps", "300", "--jobs", "2", "--out",
             str(tmp_path / "m.json"), "-q"])

    benchmark.group = "report and matrix as typed"
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(label="report and matrix", seconds=rows)
    print("\n" + "\n".join(f"{k}: {v:.1f}s" for k, v in rows.items()))
