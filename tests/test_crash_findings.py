"""Issue 13 items 1-3: a trainer's crash is a finding (side, phase, step, its own file:line) that keeps what was
compared before it; a parameter pre-check names missing/extra/reshaped canonical parameters; absent observables are
their own verdict ("absent on candidate", "not logged"), ``--ignore`` skips them; every output renders them."""

from __future__ import annotations

import functools
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from checks.registry import export_parts
from checks.suite import SuiteOptions, run_suite
from multi_actor.config import build_config
from multi_actor.trainer import reference_factory
from pogo_audit.cli.main import main
from pogo_audit.core.loading import load_factory
from pogo_audit.model.results import CheckResult, RunResults

PARTS = export_parts()  # each check's part of the CI outputs, as the CLI passes them

HERE = "tests/test_crash_findings.py"
STEP_CRASH = 'raise TypeError("can only concatenate tuple (not \\"Tensor\\") to tuple")'
LOAD_CRASH = 'raise RuntimeError(f"cannot load {len(params)} tensors")'
FACTORY_CRASH = "raise TypeError(\"__init__() got an unexpected keyword argument 'alpha'\")"


def line_of(code: str) -> int:
    """The line of this file where ``code`` is written (so the assertions follow edits of this file)."""
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip().startswith(code))


class Candidate:
    """Our single-actor reference seen as a candidate, with the defects a test asks for."""

    def __init__(self, config, spec, seed, crash_step=None, bump_step=None, rename=None, narrow=None,
                 drop_loss=None, draws=False, load_fails=False):
        self.inner = reference_factory(config, spec, seed)
        self.t = 0
        self.crash_step, self.bump_step, self.rename, self.narrow = crash_step, bump_step, rename, narrow
        self.drop_loss, self.draws, self.load_fails = drop_loss, draws, load_fails

    def step(self, batch):
        self.t += 1
        if self.t == self.crash_step:
            raise TypeError("can only concatenate tuple (not \"Tensor\") to tuple")
        out = self.inner.step(batch)
        if self.t == self.bump_step:
            out["critic/q_loss"] += 1.0
        if self.drop_loss:
            out.pop(self.drop_loss)
        if self.draws:  # an extra draw from the global torch stream: only the RNG digest can tell
            torch.rand(1)
        return out

    def parameters(self):
        params = self.inner.parameters()
        if self.rename:
            old, new = self.rename
            params[new] = params.pop(old)
        if self.narrow:
            params[self.narrow] = params[self.narrow][:, :8]
        return params

    def load_parameters(self, params):
        if self.load_fails:
            raise RuntimeError(f"cannot load {len(params)} tensors")
        mine = self.parameters()
        assert all(np.shape(v) == np.shape(mine[k]) for k, v in params.items()), "a tensor of another shape"
        self.inner.load_parameters(params)

    def gradients(self):
        return self.inner.gradients()


def crashing_factory(config, spec, seed):
    raise TypeError("__init__() got an unexpected keyword argument 'alpha'")


def run(candidate, steps=3, **options) -> CheckResult:
    opts = EquivalenceOptions(steps=steps, self_check=False, **options)
    return equivalence_for_algo("iql", build_config(None, [], algo="iql", num_actors=3), opts,
                                candidate=("test candidate", candidate))


def rows(res: CheckResult) -> dict[str, dict]:
    return {r["group"]: r for r in res.details}


# ------------------------------------------------------------------------------------------------------ crashes


def test_crash_at_step_2_names_side_phase_step_and_frame_and_keeps_the_earlier_divergence(embedded_dataset):
    res = run(functools.partial(Candidate, crash_step=2, bump_step=1), steps=4)
    line = line_of(STEP_CRASH)
    assert res.verdict == "fail"
    assert res.metrics["crash"] == {
        "side": "candidate", "phase": "step", "step": 2, "type": "TypeError",
        "message": 'can only concatenate tuple (not "Tensor") to tuple',
        "frame": {"file": HERE, "line": line, "function": "step", "code": STEP_CRASH}}
    rel = res.first_divergence.max_rel
    assert res.summary == (f'candidate crashed in step 2: TypeError: can only concatenate tuple (not "Tensor") to '
                           f"tuple at {HERE}:{line} in step(); before the crash: 1 step(s) compared, first "
                           f"divergence at step 1 in critic/q_loss (max abs 1, max rel {rel:.3g})")
    assert res.steps_compared == 1
    assert (res.first_divergence.step, res.first_divergence.observable) == (1, "critic/q_loss")
    groups = rows(res)
    assert groups["critic losses"]["verdict"] == "fail" and groups["critic losses"]["first_divergence_step"] == 1
    assert groups["critic params"]["steps_compared"] == 2  # step 0 and step 1, kept
    assert res.metrics["actors"] == 3 and res.metrics["candidate_actors"] == 1  # ours vs what the candidate shows


def test_crash_in_the_candidate_factory_is_a_finding(embedded_dataset):
    res = run(crashing_factory)
    assert res.verdict == "fail" and res.details == [] and res.steps_compared == 0
    assert res.metrics["crash"] == {
        "side": "candidate", "phase": "factory", "step": None, "type": "TypeError",
        "message": "__init__() got an unexpected keyword argument 'alpha'",
        "frame": {"file": HERE, "line": line_of(FACTORY_CRASH), "function": "crashing_factory",
                  "code": FACTORY_CRASH}}
    assert res.summary.startswith("candidate crashed in factory: TypeError: __init__() got an unexpected keyword")
    assert res.summary.endswith("before the crash: nothing compared, no divergence")
    assert res.metrics["candidate_actors"] is None
    d = res.first_divergence  # nothing diverged before: the crash is where the runs part
    assert (d.step, d.observable, d.kind) == (0, "crash/candidate/factory", "crash")


@pytest.mark.heavy
def test_jax_candidate_factory_crash_is_a_finding(embedded_dataset):
    from checks.equivalence.jax_audit import equivalence_for_rebrac

    res = equivalence_for_rebrac(build_config(None, [], algo="rebrac", num_actors=2),
                                 EquivalenceOptions(steps=2, self_check=False), candidate=("bad", crashing_factory))
    assert res.verdict == "fail"
    assert res.metrics["crash"]["frame"] == {"file": HERE, "line": line_of(FACTORY_CRASH),
                                             "function": "crashing_factory", "code": FACTORY_CRASH}
    assert (res.metrics["crash"]["side"], res.metrics["crash"]["phase"]) == ("candidate", "factory")


def test_sync_init_leaves_a_tensor_of_another_shape_as_the_candidate_has_it(embedded_dataset):
    """--sync-init hands the candidate only what it can hold: the narrowed tensor is left (listed once, with both
    shapes), never passed to load_parameters, so the run reports the difference, not a crash it caused."""
    res = run(functools.partial(Candidate, narrow="actor0/actor/net.net.0.weight"), sync_init=True)
    assert res.verdict == "fail" and "crash" not in res.metrics, res.summary
    assert res.metrics["sync"]["left"] == {"actor0/actor/net.net.0.weight": "reference [256, 11] float32, candidate "
                                                                            "[256, 8] float32"}
    assert res.metrics["parameter_check"] == {
        "missing": [], "extra": [], "issues": 1,
        "shape": [{"name": "actor0/actor/net.net.0.weight", "reference": [256, 11], "candidate": [256, 8]}]}


def test_isolate_never_hands_a_tensor_or_adam_moment_of_another_shape(embedded_dataset):
    """The same under --isolate, every step: the candidate's step never sees a tensor or an optimizer moment it
    could not hold, so no crash is reported; the actor's difference is."""
    res = run(functools.partial(Candidate, narrow="actor0/actor/net.net.0.weight"), isolate=True, steps=3)
    assert "crash" not in res.metrics and not res.metrics.get("crashes"), res.summary
    assert "actor0/actor/net.net.0.weight" in res.metrics["sync"]["left"]


def test_sync_init_load_failure_names_the_phase_and_the_line(embedded_dataset):
    res = run(functools.partial(Candidate, load_fails=True), sync_init=True)
    assert res.verdict == "fail"
    crash = res.metrics["crash"]
    assert (crash["side"], crash["phase"], crash["step"], crash["type"]) == ("candidate", "load_parameters", None,
                                                                            "RuntimeError")
    assert crash["frame"]["line"] == line_of(LOAD_CRASH) and crash["frame"]["function"] == "load_parameters"
    assert "candidate crashed in load_parameters: RuntimeError: cannot load" in res.summary


# ------------------------------------------------------------------------------------- pre-check and absences


def test_renamed_parameter_is_absent_on_candidate_and_in_the_pre_check(embedded_dataset):
    res = run(functools.partial(Candidate, rename=("actor0/actor/log_std", "actor0/actor/log_sigma")), steps=2)
    assert res.verdict == "fail" and "crash" not in res.metrics
    assert res.metrics["parameter_check"] == {"missing": ["actor0/actor/log_std"],
                                              "extra": ["actor0/actor/log_sigma"], "shape": [], "issues": 2}
    assert res.metrics["absent"] == {"absent on candidate": ["params/actor0/actor/log_std"]}
    actor = rows(res)["actor0 params"]
    assert actor["verdict"] == "fail" and actor["first_divergence_step"] is None
    assert actor["absent"] == {"params/actor0/actor/log_std": "absent on candidate"}
    assert actor["max_abs"] == 0.0 and not any(math.isinf(r["max_abs"]) for r in res.details)
    assert res.first_divergence.kind == "absent on candidate" and res.first_divergence.step == 0
    assert res.summary == ("not equivalent: absent on candidate: params/actor0/actor/log_std; parameter check: "
                           "missing on candidate actor0/actor/log_std; extra on candidate actor0/actor/log_sigma")


def test_unlogged_loss_is_not_logged_and_ignore_skips_it(embedded_dataset):
    res = run(functools.partial(Candidate, drop_loss="critic/value_loss"), steps=2)
    assert res.verdict == "fail"
    assert res.metrics["absent"] == {"not logged": ["critic/value_loss"]}
    losses = rows(res)["critic losses"]
    assert losses["absent"] == {"critic/value_loss": "not logged"} and losses["first_divergence_step"] is None
    assert res.summary == "not equivalent: not logged: critic/value_loss"
    ignored = run(functools.partial(Candidate, drop_loss="critic/value_loss"), steps=2, ignore=("critic/value*",))
    assert ignored.verdict == "pass", ignored.summary
    assert ignored.metrics["ignored"] == {"patterns": ["critic/value*"], "observables": ["critic/value_loss"]}
    assert rows(ignored)["critic losses"]["observables"] == 1  # q_loss only


def test_rng_row_says_digest_differs(embedded_dataset):
    res = run(functools.partial(Candidate, draws=True), steps=2)
    rng = rows(res)["rng"]
    assert (rng["verdict"], rng["first_divergence_step"], rng["observable"], rng["difference"]) == \
        ("fail", 1, "rng/torch", "digest differs")
    assert res.summary == "not equivalent: first divergence at step 1 in rng/torch (digest differs)"


# ------------------------------------------------------------------------------------------ CLI and every output


CANDIDATES = '''\
from multi_actor.trainer import reference_factory


class CrashAtTwo:
    def __init__(self, config, spec, seed):
        self.inner, self.t = reference_factory(config, spec, seed), 0

    def step(self, batch):
        self.t += 1
        if self.t == 2:
            return (1, 2) + batch[0]
        return self.inner.step(batch)

    def parameters(self):
        return self.inner.parameters()

    def load_parameters(self, params):
        self.inner.load_parameters(params)

    def gradients(self):
        return self.inner.gradients()


def crash_at_two(config, spec, seed):
    return CrashAtTwo(config, spec, seed)


def factory_raises(config, spec, seed):
    raise TypeError("factory_cql() got an unexpected keyword argument 'alpha'")


class Half:
    def step(self, batch):
        return {}

    def parameters(self):
        return {}


def incomplete(config, spec, seed):
    return Half()
'''


@pytest.fixture
def candidates(tmp_path, monkeypatch):
    (tmp_path / "bad_candidates.py").write_text(CANDIDATES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_cli_crash_is_exit_1_with_every_output(embedded_dataset, candidates, capsys):
    out = candidates
    argv = ["equivalence", "--algo", "iql", "--steps", "3", "--no-self-check", "-q", "--candidate",
            "bad_candidates:crash_at_two", "--json", "r.json", "--junit", "r.xml", "--sarif", "r.sarif",
            "--summary-md", "s.md"]
    assert main(argv) == 1
    stdout = capsys.readouterr().out
    assert "candidate crashed in step 2" in stdout and "TypeError" in stdout
    assert "bad_candidates.py:11 in step()" in stdout and "return (1, 2) + batch[0]" in stdout
    assert "Traceback" not in stdout
    data = json.loads((out / "r.json").read_text())["checks"][0]
    assert data["verdict"] == "fail" and data["metrics"]["crash"]["step"] == 2
    assert data["metrics"]["crash"]["frame"] == {"file": "bad_candidates.py", "line": 11, "function": "step",
                                                 "code": "return (1, 2) + batch[0]"}
    assert data["steps_compared"] == 1 and len(data["details"]) == 8  # every group compared at steps 0-1 is kept
    sarif = json.loads((out / "r.sarif").read_text())["runs"][0]["results"]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
             r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in sarif] == \
        [("POGO-EQ002", "bad_candidates.py", 11)]
    failures = ET.parse(out / "r.xml").getroot().iter("failure")
    assert any(f.get("message", "").startswith("candidate crashed in step 2: TypeError") for f in failures)
    assert "candidate crashed in step 2" in (out / "s.md").read_text()

    assert main(["report", "--from", "r.json", "-o", "report.md"]) == 0
    report = (out / "report.md").read_text()
    assert "| iql | candidate | in step 2 | TypeError: can only concatenate tuple" in report
    assert "`bad_candidates.py:11 in step()` | `return (1, 2) + batch[0]` |" in report
    assert main(["report", "--from", "r.json", "-o", "report.json", "--format", "json"]) == 0
    recs = json.loads((out / "report.json").read_text())["recommendations"]
    assert [(r["rule"], r["evidence"]) for r in recs if r["rule"] in ("trainer_crash", "not_equivalent")] == \
        [("trainer_crash", "equivalence/iql")]


def test_cli_factory_crash_is_a_finding_and_usage_errors_stay_exit_2(embedded_dataset, candidates, capsys):
    assert main(["equivalence", "--steps", "2", "--no-self-check", "-q", "--candidate",
                 "bad_candidates:factory_raises"]) == 1
    stdout = capsys.readouterr().out
    assert "candidate crashed in factory" in stdout and "bad_candidates.py:29 in factory_raises()" in stdout
    assert main(["equivalence", "--steps", "2", "--candidate", "bad_candidates:incomplete"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks protocol method(s) load_parameters" in err
    assert main(["equivalence", "--steps", "2", "--ignore"]) == 2
    assert "--ignore" in capsys.readouterr().err


def test_report_suite_keeps_every_algorithm_when_the_candidate_factory_crashes(embedded_dataset, candidates):
    opts = SuiteOptions(algos=("iql", "td3_bc"), steps=2, skip=("docs",),
                        candidate=("bad_candidates:factory_raises",
                                   load_factory("bad_candidates:factory_raises", "--candidate")))
    results = run_suite(opts)
    assert [(r.check, r.subject, r.verdict, r.metrics["crash"]["phase"]) for r in results.checks] == \
        [("equivalence", "iql", "fail", "factory"), ("equivalence", "td3_bc", "fail", "factory"),
         ("hooks", "iql: factory", "fail", "factory"), ("hooks", "td3_bc: factory", "fail", "factory")]
    assert all(r.metrics["audited"] == "candidate" for r in results.checks)


def test_report_renders_errored_and_absent_results(tmp_path, capsys):
    errored = CheckResult("equivalence", "cql", "error", summary="the equivalence harness raised KeyError: 'x'",
                          metrics={"reference": "r", "candidate": "c", "mode": "bitwise"})
    absent = CheckResult(
        "equivalence", "iql", "fail", steps_compared=2, summary="not equivalent: not logged: critic/value_loss",
        first_divergence={"step": 0, "observable": "critic/value_loss", "max_abs": float("nan"),
                          "max_rel": float("nan"), "rtol": 0.0, "atol": 0.0, "kind": "not logged"},
        metrics={"mode": "bitwise", "rtol": 0.0, "atol": 0.0, "actors": 3, "candidate_actors": 1, "seed": 0,
                 "bundle": None, "reference": "r", "candidate": "c", "self_check": "off",
                 "absent": {"not logged": ["critic/value_loss"]},
                 "ignored": {"patterns": ["actor0/entropy"], "observables": []}},
        details=[{"group": "critic losses", "observables": 2, "steps_compared": 3, "verdict": "fail",
                  "first_divergence_step": None, "observable": None, "max_abs": 0.0, "max_rel": 0.0,
                  "difference": None, "absent": {"critic/value_loss": "not logged"}}])
    path = tmp_path / "r.json"
    RunResults(command="equivalence", checks=[errored, absent]).save(path)
    assert main(["report", "--from", str(path), "-o", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "| cql | error | 0 | bitwise | — | — | none | 0 | 0 | — |" in report
    assert "| iql | fail | 2 | bitwise | 3 (candidate exposes 1) | off | step 0: `critic/value_loss` | not logged |" \
        in report
    assert "- **iql**: not logged: critic/value_loss. Ignored (`--ignore`): `actor0/entropy`." in report
    assert "| iql | not logged |" in report  # the group table: the absence is the cell's verdict


def test_junit_sarif_and_step_summary_name_absences_and_digests_not_numbers():
    from pogo_audit.core.exporters import to_junit_xml, to_sarif, to_step_summary

    res = CheckResult(
        "equivalence", "iql", "fail", steps_compared=2, summary="not equivalent: ...",
        first_divergence={"step": 1, "observable": "rng/torch", "max_abs": float("nan"), "max_rel": float("nan"),
                          "rtol": 0.0, "atol": 0.0, "kind": "digest differs"},
        metrics={"mode": "bitwise", "candidate_location": {"path": "cand.py", "line": 7},
                 "absent": {"not logged": ["critic/value_loss"]}},
        details=[{"group": "critic losses", "observables": 2, "steps_compared": 3, "verdict": "fail",
                  "first_divergence_step": None, "observable": None, "max_abs": 0.0, "max_rel": 0.0,
                  "difference": None, "absent": {"critic/value_loss": "not logged"}},
                 {"group": "rng", "observables": 2, "steps_compared": 3, "verdict": "fail",
                  "first_divergence_step": 1, "observable": "rng/torch", "max_abs": 0.0, "max_rel": 0.0,
                  "difference": "digest differs", "absent": {}}])
    results = RunResults(command="equivalence", checks=[res])
    messages = [f.get("message") for f in ET.fromstring(to_junit_xml(results, PARTS)).iter("failure")]
    assert messages == ["critic losses: critic/value_loss: not logged",
                        "rng: first divergence at step 1 in rng/torch (digest differs; bitwise)"]
    summary = to_step_summary(results, parts=PARTS)
    assert "| iql | critic losses | 3 | **not logged** | — | critic/value_loss | — | — |" in summary
    assert "| iql | rng | 3 | **fail** | 1 | rng/torch | digest differs | digest differs |" in summary
    finding = to_sarif(results, parts=PARTS)["runs"][0]["results"][0]
    assert finding["ruleId"] == "POGO-EQ001"
    assert finding["message"]["text"] == ("iql: the multi-actor trainer is not equivalent to the reference: first "
                                          "divergence at step 1 in rng/torch (digest differs; bitwise).")
    assert finding["properties"]["absent"] == {"not logged": ["critic/value_loss"]}
