"""``jax-profile`` on the review's fixture trainers (``jax_review_trainers``): the defective trainer gets exactly its
planted findings (kinds and lines) and nothing for its bool flag, the clean one none; a generator target that runs
out keeps its partial results; an epoch loop that syncs every update fails; the runtime probes' own rules."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import jax_review_trainers as review
import numpy as np
import pytest

from checks.jax_profile.memory import GROWTH_BYTES_PER_CALL, measure_growth
from checks.jax_profile.profile import profile_target
from checks.jax_profile.runtime import ARRAY_METHODS, SyncProbe
from checks.jax_profile.scan import scan_sources
from checks.jax_profile.targets import JaxTarget, as_target
from pogo_audit.runtime.errors import UsageError

FAST = dict(steps=3, epochs=2, warmup=1, unjitted_steps=0, repeats=1, timing_steps=3, fresh_caches=False,
            memory_steps=12, evaluations=3)
FIXTURE = Path(review.__file__)


def _line(marker: str) -> int:
    (line,) = [i for i, text in enumerate(FIXTURE.read_text().splitlines(), 1) if f"# marker: {marker}" in text]
    return line


@pytest.fixture(scope="module")
def defective():
    return profile_target(as_target(review.defective_trainer(), "defective"), **FAST)


@pytest.mark.heavy
def test_defective_trainer_gets_exactly_its_defects(defective):
    found = sorted((f["kind"], f["severity"], f.get("line")) for f in defective.details)
    assert found == sorted([
        ("not_jitted", "fail", _line("unjitted")),
        ("host_to_device", "fail", _line("eager constant")),
        ("host_sync", "fail", _line("sync if")),
        ("host_sync", "fail", _line("sync np.array")),
        ("host_memory_growth", "fail", _line("log")),
        ("evaluation_recompile", "fail", _line("rejit")),
    ]), defective.summary
    assert defective.verdict == "fail"
    assert all(f["path"].endswith("jax_review_trainers.py") for f in defective.details)


def test_syncs_behind_a_method_call_are_found_at_runtime_only(defective):
    syncs = {f["line"]: f for f in defective.details if f["kind"] == "host_sync"}
    assert syncs[_line("sync if")]["kinds"] == ["bool() / if"]
    assert syncs[_line("sync np.array")]["kinds"] == ["np.array()"]
    assert {f["function"] for f in syncs.values()} == {"Metrics.compute"}
    assert all(f["seen"] == ["runtime"] and "every measured step (3 of 3)" in f["message"] for f in syncs.values())
    # the static scan, the second opinion, cannot follow make_metrics(...).compute() — nor flags the bool flag
    assert defective.metrics["static_syncs"] == []
    assert all(f.get("line") != _line("bool flag") for f in defective.details)


def test_defective_trainer_numbers(defective):
    m = defective.metrics
    assert m["host_memory"]["growing"] and m["host_memory"]["bytes_per_call"] >= GROWTH_BYTES_PER_CALL
    assert m["host_memory"]["top"][0]["line"] == _line("log")
    assert m["evaluation"]["evaluations"] == 3 and all(n >= 1 for n in m["evaluation"]["compiles_per_evaluation"])
    assert m["evaluation"]["names"] == ["<lambda>"]
    gain = m["jit_gain"]
    assert gain["method"] == "pure_step" and gain["ratio"] > 0 and gain["jitted_seconds"] > 0
    not_jitted = next(f for f in defective.details if f["kind"] == "not_jitted")
    assert "jax.jit would make it" in not_jitted["message"]
    assert m["probe_failures"] == []


def test_clean_trainer_has_no_findings():
    res = profile_target(as_target(review.clean_trainer(), "clean"), **FAST)
    assert res.verdict == "pass", res.summary
    (memory,) = res.details  # host memory is always reported: here a note with its interval
    assert (memory["kind"], memory["severity"]) == ("host_memory", "note")
    assert "no growth established" in memory["message"] and "95% interval" in memory["message"]
    m = res.metrics
    assert m["jitted"] is True and m["jit_gain"] is None
    assert m["host_memory"]["growing"] is False
    assert m["evaluation"]["compiles_per_evaluation"][1:] == [0, 0]
    assert m["runtime_syncs"] == {"step": [], "evaluate": []} and m["static_syncs"] == []


def test_generator_target_that_runs_out_keeps_partial_results():
    trainer = review.clean_trainer()

    def updates():
        for _ in range(6):
            yield trainer.step()

    gen = updates()
    res = profile_target(JaxTarget(name="generator", step=lambda: next(gen), step_fn=trainer.step_fn), **FAST)
    assert res.verdict == "pass", res.summary
    failures = res.metrics["probe_failures"]
    assert failures and all("StopIteration" in text for text in failures)
    assert failures[0].startswith("runtime sync probe of step() stopped")
    assert [f["kind"] for f in res.details] == ["probe_failed"] * len(failures)
    assert res.metrics["host_to_device_transfers"]["step"]["transfers"] == 0
    assert res.metrics["jitted"] is True


class EpochOfSyncingSteps(review.CleanTrainer):
    """loop="epoch", but the epoch is a Python loop whose every update syncs through Metrics.compute()."""

    updates_per_epoch = 3
    loop = "epoch"

    def epoch(self) -> None:
        for _ in range(self.updates_per_epoch):
            self.step()
            self.logged = review.Metrics(self.last["loss"], self.last["grad_norm"]).compute()


def test_epoch_loop_never_downgrades_a_per_update_sync():
    res = profile_target(as_target(EpochOfSyncingSteps(), "epoch-of-steps"), **{**FAST, "evaluations": 0})
    assert res.verdict == "fail"
    syncs = [f for f in res.details if f["kind"] == "host_sync"]
    assert {(f["severity"], f["inside"], f["line"]) for f in syncs} == {
        ("fail", "epoch", _line("sync if")), ("fail", "epoch", _line("sync np.array"))}
    assert all("per update inside epoch()" in f["message"] for f in syncs)


def test_jit_gain_falls_back_to_the_reference_update():
    target = as_target(review.defective_trainer(), "no-pure-step")
    target.pure_step = None
    target.evaluate = None
    res = profile_target(target, **{**FAST, "memory_steps": 3},
                         reference=lambda batch: as_target(review.clean_trainer(), f"reference@{batch}"))
    gain = res.metrics["jit_gain"]
    assert gain["method"] == "reference" and gain["ratio"] > 0
    assert f"batch size {review.BATCH}" in gain["detail"]


def test_jit_gain_is_not_measured_without_a_batch_size():
    """No pure_step and no batch_size: the comparison with the reference at a guessed batch size is refused."""
    from checks.jax_profile.jit_gain import estimate_jit_gain

    target = as_target(review.defective_trainer(), "no-batch")
    target.pure_step, target.batch_size = None, None
    gain = estimate_jit_gain(target, 0.01, reference=lambda batch: pytest.fail("must not build a reference"))
    assert gain["ratio"] is None and gain["detail"].startswith("not measured")


SNIPPET = '''
import jax
import jax.numpy as jnp
import numpy as np


def body(x):
    v = jnp.stack([x.sum(), x.max()])
    if v[1] > 0:
        host = np.asarray(v)
    total = float(v[0])
    y = x[jnp.array(1)] + jnp.zeros(int(x.shape[0]))
    return y, jax.device_get(v), v.tolist()


def once(x, i):
    if i == 0:
        return x.item()
    return None
'''


def _module(tmp_path, name: str, text: str):
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sync_probe_records_user_lines_per_call_and_restores(tmp_path):
    mod = _module(tmp_path, "probe_snippet", SNIPPET)
    array_type = type(jnp.zeros(()))
    before = {name: array_type.__dict__[name] for name in ARRAY_METHODS if name in array_type.__dict__}
    saved = (np.asarray, np.array, jax.device_get)
    x = jnp.arange(4.0)
    with SyncProbe() as probe:
        mod.body(x)  # outside measuring(): not recorded
        for i in range(3):
            with probe.measuring("step", i):
                mod.body(x)
                mod.once(jnp.ones(()), i)
    assert {n: array_type.__dict__[n] for n in before} == before
    assert (np.asarray, np.array, jax.device_get) == saved
    sites = {(s["kind"], s["code"]): s for s in probe.classify("step")}
    returned = "return y, jax.device_get(v), v.tolist()"
    assert set(sites) == {("bool() / if", "if v[1] > 0:"), ("np.asarray()", "host = np.asarray(v)"),
                          ("float()", "total = float(v[0])"), ("jax.device_get()", returned),
                          (".tolist()", returned), (".item()", "return x.item()")}
    assert all(s["recurring"] and s["per_call"] == {"step": [1, 1, 1]} for k, s in sites.items() if k[0] != ".item()")
    item = sites[(".item()", "return x.item()")]
    assert not item["recurring"] and item["calls_seen"] == 1 and item["function"] == "once"


def test_memory_growth_flags_a_growing_list_only():
    kept: list[dict[str, float]] = []
    growing = measure_growth(lambda: kept.append({"loss": 1.0, "step": float(len(kept))}), 15)
    steady = measure_growth(lambda: {"loss": 1.0, "step": 2.0}, 15)
    assert growing["growing"] and growing["low"] >= GROWTH_BYTES_PER_CALL
    assert growing["low"] <= growing["bytes_per_call"] <= growing["high"]
    assert growing["top"][0]["path"].endswith("test_review_trainers.py")
    assert not steady["growing"] and abs(steady["bytes_per_call"]) < GROWTH_BYTES_PER_CALL


def test_memory_growth_in_steps_is_still_established():
    """A log record per call plus a big one-off allocation every 10th call (an evaluation that compiles): the step
    pattern that a correlation threshold dropped; the robust slope still establishes the growth."""
    kept: list[object] = []

    def call() -> None:
        kept.append({"loss": 1.0, "step": float(len(kept))})
        if len(kept) % 10 == 0:
            kept.append(bytearray(20_000))

    grown = measure_growth(call, 40)
    assert grown["growing"] and grown["low"] >= GROWTH_BYTES_PER_CALL


BOOL_FLAG = '''
import jax
import jax.numpy as jnp


def loss(p, x, flag):
    out = (p * x).sum()
    if flag:
        out = out * 2
    if p.sum() > 0:
        out = out + 1
    return out


def step(p, x):
    return jax.value_and_grad(loss)(p, x, True)


@jax.jit
def annotated(x, mode: str = "double", clip: bool = False):
    if clip:
        x = jnp.clip(x, -1, 1)
    return x * 2 if mode == "double" else x
'''


def test_static_scan_keeps_a_python_flag_passed_through_grad_untainted(tmp_path):
    mod = _module(tmp_path, "bool_flag_snippet", BOOL_FLAG)
    scan = scan_sources({"step": mod.step, "epoch": mod.annotated})
    assert [(s["code"], s["inside"]) for s in scan.syncs] == [("if p.sum() > 0:", "traced")]


def test_target_contract_errors():
    class Bad:
        def step(self):
            return None

    for attr, value, message in (("evaluate", 3, "evaluate must be callable"),
                                 ("pure_step", "x", "pure_step must be callable"),
                                 ("batch_size", 0, "batch_size must be a positive int"),
                                 ("scan_roots", {"step": 1}, "scan_roots must be a dict of callables")):
        obj = Bad()
        setattr(obj, attr, value)
        with pytest.raises(UsageError, match=message):
            as_target(obj, "bad")


@pytest.mark.heavy
def test_report_reviews_a_jax_candidate_through_jax_target(tmp_path):
    """Section 5 measured on the candidate's own JAX loop: only its profile is scored, tagged as the candidate's."""
    import json

    from pogo_audit.cli.main import main

    out = tmp_path / "r.json"
    assert main(["report", "--jax-target", "jax_review_trainers:clean_trainer", "--format", "json",
                 "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    sections = {s["key"]: s for s in report["sections"]}
    assert sections["jax_performance"]["score"] == 5
    assert sections["jax_performance"]["evidence"] == ["jax-profile/jax_review_trainers:clean_trainer"]
    assert [s["score"] for k, s in sections.items() if k != "jax_performance"] == [None, None, None, None]
    checks = json.loads(out.with_suffix(".results.json").read_text())["checks"]
    assert [(c["check"], c["metrics"]["audited"]) for c in checks] == [("jax-profile", "candidate")]
    assert report["target"] == "external trainer jax_review_trainers:clean_trainer"
