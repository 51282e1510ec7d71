"""The thread budget (:mod:`pogo_audit.runtime.threads`): the processes of one audit together never use more threads
than the
budget, the reference and the candidate always run with the same count, and the result states it."""

from __future__ import annotations

import pytest

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from checks.equivalence.worker import plan_processes
from multi_actor.config import build_config
from pogo_audit.runtime import threads
from pogo_audit.runtime.errors import UsageError


@pytest.mark.parametrize("budget, worker, twin, expected", [
    (1, True, True, (0, False, 1)),    # one thread: everything in the calling process
    (2, True, True, (1, True, 1)),     # two: the reference's worker also steps the twin
    (2, True, False, (1, False, 1)),
    (3, True, True, (2, False, 1)),    # three: the twin in a worker of its own
    (8, True, True, (2, False, 2)),
    (4, False, True, (0, False, 4)),   # no worker allowed (isolate, localisation, ...): all threads in one process
])
def test_a_plan_never_spends_more_than_the_budget(budget, worker, twin, expected):
    plan = plan_processes(budget, worker, twin)
    assert (plan.workers, plan.twin_in_reference_worker, plan.threads) == expected
    assert plan.processes * plan.threads <= budget


def test_the_budget_comes_from_the_option_then_the_environment(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.budget(5) == 5 and threads.budget() == 3
    monkeypatch.delenv(threads.ENV_VAR)
    assert threads.budget() == threads.machine_cores()
    monkeypatch.setenv(threads.ENV_VAR, "two")
    with pytest.raises(UsageError, match=r"\$POGO_AUDIT_THREADS: got 'two'"):
        threads.budget()


@pytest.mark.parametrize("budget", [2, 3])
def test_the_processes_of_one_audit_stay_within_the_budget(embedded_dataset, monkeypatch, budget):
    """Read from the thread counts each process reported once its trainers were built: the candidate's process and
    the reference's worker(s) add up to at most the budget, all with the same count."""
    monkeypatch.setenv(threads.ENV_VAR, str(budget))
    cfg = build_config(None, [], algo="iql", num_actors=2)
    result = equivalence_for_algo("iql", cfg, EquivalenceOptions(steps=20, self_check_steps=3))
    assert result.verdict == "pass", result.summary
    t = result.metrics["threads"]
    reported = t["reported"]
    assert set(reported) == ({"candidate", "reference+twin"} if budget == 2 else {"candidate", "reference", "twin"})
    counts = [r["torch_intra_op"] for r in reported.values()]
    assert sum(counts) <= budget and len(set(counts)) == 1 and counts[0] == t["per_process"]
    assert all(r["torch_inter_op"] <= t["per_process"] for r in reported.values())


def test_a_matrix_never_runs_more_cells_than_the_budget(tmp_path, capsys):
    from pogo_audit.cli.main import main

    code = main(["matrix", "--algo", "td3_bc", "--seeds", "0", "--steps", "2", "--jobs", "3", "--threads", "1",
                 "--out", str(tmp_path / "m.json"), "-q"])
    assert code == 0
    assert "--jobs 3: 1 cell(s) at a time, 1 thread each (the thread budget is 1" in capsys.readouterr().out
