"""``checks.jax_profile.profile``: every pathology of ``jax_pathologies`` is found with the right finding, the clean
loop and the reference ReBRAC come out without recompiles; the CLI's renderer shows the profiles."""

from __future__ import annotations

import math

import jax_pathologies
import pytest
from rich.console import Console

from checks.jax_profile.compiles import OTHER_ROW
from checks.jax_profile.profile import profile_target
from checks.jax_profile.targets import as_target
from pogo_audit.cli.render import jax_profile_tables

STEPS = 4
FAST = dict(steps=STEPS, epochs=2, warmup=1, unjitted_steps=1, repeats=1, timing_steps=5, fresh_caches=False,
            memory_steps=8, jit_gain=False)


@pytest.fixture(scope="module")
def profiles():
    """Each fixture profiled once per module (keyed by factory name)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = profile_target(as_target(getattr(jax_pathologies, name)(), name), **FAST)
        return cache[name]

    return get


def _row(result, name):
    rows = [r for r in result.metrics["functions"] if r["name"] == name]
    assert len(rows) == 1, [r["name"] for r in result.metrics["functions"]]
    return rows[0]


def _kinds(result, severity="fail"):
    return [f["kind"] for f in result.details if f["severity"] == severity]


@pytest.mark.heavy
def test_clean_loop_is_clean(profiles):
    res = profiles("clean_loop")
    m = res.metrics
    assert res.verdict == "pass", res.summary
    assert [(f["kind"], f["severity"]) for f in res.details] == [("host_memory", "note")]  # always reported
    assert "no growth established" in res.details[0]["message"]
    for name in ("sgd_step", "sgd_epoch"):
        row = _row(res, name)
        assert (row["compiles"], row["compiles_after_warmup"], row["cache_miss_explanations"]) == (1, 0, [])
    assert m["static_syncs"] == []
    assert m["jitted"] is True
    assert m["loop"] == "epoch"
    assert {k: v["transfers"] for k, v in m["host_to_device_transfers"].items()} == {"step": 0, "epoch": 0}
    for ratio in m["ratios"].values():
        assert ratio is not None and ratio > 0 and math.isfinite(ratio)


@pytest.mark.heavy
def test_unjitted_step_is_reported(profiles):
    res = profiles("unjitted_step")
    m = res.metrics
    assert res.verdict == "fail"
    assert m["jitted"] is False
    assert "not_jitted" in _kinds(res)
    # eager ops turn Python scalars (lr, the exponent 2) into device arrays on every step
    h2d = m["host_to_device_transfers"]["step"]
    assert h2d["transfers"] >= STEPS and h2d["first"]["path"].endswith("jax_pathologies.py")
    assert "host_to_device" in _kinds(res)
    assert all(r["name"] == OTHER_ROW for r in m["functions"])


@pytest.mark.heavy
def test_fresh_jit_per_call_recompiles_every_step(profiles):
    res = profiles("fresh_jit_per_call")
    row = _row(res, "<lambda>")
    assert res.verdict == "fail"
    assert row["compiles_after_warmup"] == STEPS
    assert len(row["cache_miss_explanations"]) == STEPS
    assert "re-defined repeatedly" in row["cache_miss_explanations"][-1]
    assert res.metrics["jitted"] is True
    assert "recompile" in _kinds(res)
    assert res.metrics["ratios"] == {"python_loop_over_scan": None, "unjitted_over_jitted": None}
    assert "not timed" in res.metrics["timing_note"]


@pytest.mark.heavy
def test_static_float_argument_recompiles_every_step(profiles):
    res = profiles("static_float_argument")
    row = _row(res, "sgd_step")
    assert res.verdict == "fail"
    assert row["compiles_after_warmup"] == STEPS
    explanation = row["cache_miss_explanations"][0]
    assert "['lr']" in explanation and "Static" in explanation
    finding = next(f for f in res.details if f["kind"] == "recompile")
    assert "static" in finding["message"] and "lr" in finding["message"]


def test_weak_typed_accumulator_retraces_once(profiles):
    res = profiles("weak_typed_accumulator")
    row = _row(res, "sgd_step_accumulate")
    assert res.verdict == "fail"
    assert (row["compiles"], row["compiles_after_warmup"]) == (2, 1)
    (explanation,) = row["cache_miss_explanations"]
    assert "total" in explanation and "weak_type=True" in explanation and "weak_type=False" in explanation
    assert "recompile" in _kinds(res)


def test_per_step_float_is_a_host_sync_in_the_step_loop(profiles):
    res = profiles("per_step_float_sync")
    m = res.metrics
    assert res.verdict == "fail"
    (sync,) = m["static_syncs"]
    assert sync["kind"] == "float()" and sync["inside"] == "step" and "float(loss)" in sync["code"]
    assert sync["path"].endswith("jax_pathologies.py") and sync["function"] == "step"
    assert _row(res, "sgd_step")["compiles_after_warmup"] == 0
    assert _kinds(res) == ["host_sync"]


@pytest.mark.heavy
def test_reference_rebrac_compiles_once_and_reports_ratios(small_rebrac):
    res = profile_target(small_rebrac, steps=3, epochs=1, warmup=1, unjitted_steps=1, repeats=1)
    m = res.metrics
    names = {r["name"]: r for r in m["functions"]}
    assert names["train_step_on_batch"]["compiles"] == 1 and names["train_epoch"]["compiles"] == 1
    assert all(r["compiles_after_warmup"] == 0 for r in m["functions"]), m["functions"]
    assert m["jitted"] is True and m["loop"] == "epoch"
    for ratio in m["ratios"].values():
        assert ratio is not None and ratio > 0 and math.isfinite(ratio)
    # the per-update API syncs (device_get) and transfers scalars each step: reported as notes, the epoch is clean
    assert [s["kind"] for s in m["static_syncs"]] == ["jax.device_get()"]
    assert res.verdict == "pass", res.summary
    assert {f["kind"] for f in res.details if f["severity"] == "note"} == {"host_sync", "host_to_device",
                                                                         "host_memory"}
    memory = res.metrics["host_memory"]
    # the reference ReBRAC does not grow: what tracemalloc sees is jax's own bookkeeping, its state stays flat
    assert not memory["growing"] and memory["state_bytes_per_call"] < memory["threshold"]


def test_render_tables(profiles):
    console = Console(width=160, record=True)
    for name in ("clean_loop", "weak_typed_accumulator"):
        for renderable in jax_profile_tables(profiles(name)):
            console.print(renderable)
    text = console.export_text()
    assert "sgd_step_accumulate" in text and "weak_type" in text and "python loop / scan" in text


@pytest.mark.heavy
def test_syncs_of_an_evaluation_the_epoch_runs_inline_count_per_evaluation(profiles):
    """``epoch()`` runs the same evaluation as ``evaluate()`` after its updates, and that evaluation syncs more
    often than an epoch has updates: those syncs are per evaluation (a note), not "per update inside epoch()"."""
    import inspect

    res = profiles("inline_evaluation")
    source, start = inspect.getsourcelines(jax_pathologies.InlineEvaluation.evaluate)
    line = start + next(i for i, text in enumerate(source) if "marker: eval sync" in text)
    syncs = [f for f in res.details if f["kind"] == "host_sync" and f.get("line") == line]
    assert [f["severity"] for f in syncs] == ["note"], [f["message"] for f in syncs]
    assert f"inside the evaluation epoch() runs inline ({jax_pathologies.EVAL_BATCHES} per evaluation" in \
        syncs[0]["message"]
    assert "host_sync" not in _kinds(res)
