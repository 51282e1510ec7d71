"""equivalence --eval-every: evaluate(seed, episodes) on both sides between steps — a crash is a finding with phase
"evaluate", a global RNG stream it touches and a result that changes for the same seed are findings, a clean
evaluation passes and training is still compared after it."""

from __future__ import annotations

import random
import types

import pytest

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from checks.mutants import catalog, run_mutant
from multi_actor.config import build_config
from multi_actor.trainer import multi_actor_factory
from pogo_audit.cli.main import main
from pogo_audit.runtime.errors import UsageError


def audit(candidate, steps=3, every=2, algo="iql"):
    cfg = build_config(None, [], algo=algo, num_actors=3)
    options = EquivalenceOptions(steps=steps, seed=0, self_check=False, chain_oracle=False, bundle_dir=None,
                                 eval_every=every, eval_episodes=1)
    return equivalence_for_algo(algo, cfg, options, candidate=("test candidate", candidate))


def with_evaluate(replacement):
    """Our trainer whose evaluate is ``replacement(trainer, seed, episodes)``."""

    def factory(config, spec, seed):
        trainer = multi_actor_factory(config, spec, seed)
        trainer.evaluate = types.MethodType(replacement, trainer)
        return trainer

    return factory


def test_a_clean_deterministic_evaluation_passes(embedded_dataset):
    res = audit(multi_actor_factory, steps=2, every=1)
    assert res.verdict == "pass", res.summary
    row = next(r for r in res.details if r["group"] == "evaluation")
    # eval/ok, eval/deterministic, eval/rng_untouched/{torch,numpy,random}, after steps 1 and 2
    assert (row["observables"], row["steps_compared"], row["verdict"]) == (5, 2, "pass")
    calls = res.metrics["evaluation"]["calls"]
    assert [c["step"] for c in calls["candidate"]] == [1, 2] and all(c["rng_changed"] == [] for c in calls["candidate"])
    assert calls["candidate"][0]["returned"] == calls["reference"][0]["returned"]  # same actor0, same env seeds
    assert res.metrics["evaluation"]["crashes"] == []


def test_an_evaluation_that_reseeds_global_numpy_is_killed(embedded_dataset):
    mutant = next(m for m in catalog("iql") if m.name == "evaluate_reseeds_global_numpy")
    res = run_mutant(mutant)
    assert res.metrics["killed"] and res.metrics["expected_caught"]
    assert (res.metrics["step"], res.metrics["caught_by"]) == (2, "eval/rng_untouched/numpy")
    assert res.metrics["location"]["mutated"].strip().startswith("np.random.seed(seed);")


def test_an_evaluation_drawing_from_python_random_is_a_finding(embedded_dataset):
    def draws(self, seed, episodes):
        return {"eval/actor0/return_mean": random.random()}

    res = audit(with_evaluate(draws))
    assert res.verdict == "fail"
    first = res.first_divergence
    assert (first.step, first.observable) == (2, "eval/deterministic")  # two calls, two different numbers
    [call] = res.metrics["evaluation"]["calls"]["candidate"]
    assert call["rng_changed"] == ["random"]


def test_an_evaluation_crash_is_a_finding_and_training_is_still_compared(embedded_dataset):
    mutant = next(m for m in catalog("iql") if m.name == "evaluate_crashes")
    res = run_mutant(mutant)
    assert res.metrics["killed"] and (res.metrics["step"], res.metrics["caught_by"]) == (2, "eval/ok")

    res = audit(mutant.factory, steps=3, every=1)
    assert res.verdict == "fail"
    crash = res.metrics["crash"]
    assert {k: crash[k] for k in ("side", "phase", "step", "type")} == {
        "side": "candidate", "phase": "evaluate", "step": 1, "type": "TypeError"}
    assert crash["frame"]["file"].endswith("multi_actor/evaluation.py") and crash["frame"]["function"] == "evaluate"
    assert crash["frame"]["code"] == "for i, policy in enumerate(policies):"
    assert "candidate evaluate raised at step 1: TypeError" in res.summary
    groups = {r["group"]: r for r in res.details}
    assert groups["critic params"]["steps_compared"] == 4 and groups["critic params"]["verdict"] == "pass"
    # evaluated once: a side whose evaluation crashed is not called again
    assert [c["ok"] for c in res.metrics["evaluation"]["calls"]["candidate"]] == [False, False, False]
    assert len(res.metrics["evaluation"]["crashes"]) == 1


def test_eval_every_needs_evaluate_on_both_sides(embedded_dataset):
    def plain(config, spec, seed):
        trainer = multi_actor_factory(config, spec, seed)
        return types.SimpleNamespace(step=trainer.step, parameters=trainer.parameters,
                                     load_parameters=trainer.load_parameters)

    with pytest.raises(UsageError, match=r"^--eval-every: the candidate trainer has no evaluate\(seed, episodes\)"):
        audit(plain)


def test_cli_eval_every_on_the_example_adapter(embedded_dataset, tmp_path, capsys):
    args = ["equivalence", "--algo", "td3_bc", "--steps", "2", "--eval-every", "2", "--no-self-check", "-q",
            "--bundle-dir", str(tmp_path), "--candidate", "examples.pogo_adapter:factory"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "│ evaluation        │           5 │     1 │    pass │" in out
    assert main([*args[:-2], "--eval-episodes", "0"]) == 2
