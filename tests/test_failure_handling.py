"""The training loop's failure handling (eval errors logged, checkpoint failures reported, NaN stops the run)."""

from __future__ import annotations

from unittest import mock

from checks.failure_handling import run_failure_handling


def test_all_failure_scenarios_are_handled(embedded_dataset, tmp_path):
    results = {r.subject: r for r in run_failure_handling(str(tmp_path))}
    assert set(results) == {"eval_failure_logged", "checkpoint_failure_reported", "nan_loss_stops_run"}
    for name, r in results.items():
        assert r.passed, (name, r.summary)


def test_a_loop_that_swallows_eval_errors_is_caught(embedded_dataset, tmp_path):
    from multi_actor.evaluation import Evaluator

    from checks.failure_handling import eval_failure

    with mock.patch.object(Evaluator, "evaluate", lambda self, policies: {}):
        ok, summary, _ = eval_failure(tmp_path)
    assert not ok, summary
