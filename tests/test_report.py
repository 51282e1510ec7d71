"""Review report: scores come from results via the rubric; planted problems lower the right sections and show up
with their evidence; a missing field fails loudly."""

from __future__ import annotations

import json

import pytest

from pogo_audit.cli.main import main
from pogo_audit.model.results import CheckResult, Divergence, RunResults
from reports.render import render_json, render_markdown, render_summary, write_assets
from reports.scoring import load_rubric, score_sections, section_checks


def _eq(algo, verdict="pass", divergence=None):
    groups = ["critic losses", "actor0 losses", "critic params", "target params", "actor0 params", "rng",
              "grad leak", "chain (W2 oracle)"]
    details = [{"group": g, "observables": 2, "steps_compared": 50, "verdict": "pass", "first_divergence_step": None,
                "observable": None, "max_abs": 0.0, "max_rel": 0.0} for g in groups]
    if divergence is not None:
        details[0].update(verdict="fail", first_divergence_step=divergence.step, observable=divergence.observable,
                          max_abs=divergence.max_abs, max_rel=divergence.max_rel)
    return CheckResult("equivalence", algo, verdict, 50, "summary", divergence,
                       {"mode": "bitwise", "rtol": 0.0, "atol": 0.0, "actors": 3, "seed": 0, "bundle": None,
                        "reference": "ref", "candidate": "cand", "self_check": "pass",
                        "history": {"steps": [0, 1, 2], "reference/critic/q_loss": [1.0, 2.0, 3.0],
                                    "candidate/critic/q_loss": [1.0, 2.0, 3.5 if divergence else 3.0]}},
                       details)


def _fuzz(name, target, findings=()):
    return CheckResult("fuzz", name, "fail" if findings else "pass", 0, "summary",
                       metrics={"target": target, "examples_run": 200, "seed": 0, "findings": list(findings)})


def healthy() -> RunResults:
    checks = [CheckResult("docs", rule, "pass", summary="ok") for rule in
              ("quickstart", "architecture", "command_list", "algorithm_table", "config_fields", "terminology",
               "commands_parse")]
    checks += [_eq("iql"), _eq("td3_bc")]
    checks += [CheckResult("conformance", "iql_gaussian/float64", "pass", 200, "ok",
                           metrics={"bitwise_pct": 71.0, "max_abs": 1e-15, "max_rel": 1e-15, "mode": "tolerance",
                                    "tolerance": "|a-b| <= 1e-09*max(|a|,|b|,scale)", "first_step_past_bound": None,
                                    "fingerprint_match": False, "fingerprint_differences": ["isa: AVX512 (recorded) vs "
                                                                                            "AVX2 (here)"],
                                    "fingerprint_here_text": "AuthenticAMD AMD EPYC, AVX2"})]
    checks += [CheckResult("mutants", "m1", "pass", 6, "killed",
                           Divergence(1, "critic/q_loss", 1.0, 1.0, 0.0, 0.0),
                           {"algo": "iql", "description": "bug", "expected": "critic losses", "caught_by": "critic/q_loss",
                            "step": 1, "killed": True})]
    checks += [_fuzz("config_validation", "configs"), _fuzz("logger_never_raises", "logging")]
    checks += [CheckResult("failure-handling", s, "pass", summary="handled") for s in
               ("eval_failure_logged", "checkpoint_failure_reported", "nan_loss_stops_run")]
    return RunResults(checks=checks)


def scores(results):
    return {s.key: s.score for s in score_sections(results)}


def test_healthy_results_score_five_stars_where_measured():
    s = scores(healthy())
    assert s == {"documentation": 5, "equivalence": 5, "bug_risk": 5, "logging": 5, "jax_performance": None}


def test_planted_non_equivalence_and_fuzz_finding_lower_their_sections_with_evidence(tmp_path):
    results = healthy()
    div = Divergence(7, "critic/q_loss", 0.25, 0.1, 0.0, 0.0, None, 3.0, 3.25)
    results.checks[7] = _eq("iql", "fail", div)
    finding = {"property": "config_validation", "minimal_example": "MultiActorConfig(num_actors=2, w2_weights=[])",
               "exception": "ValueError: list index out of range", "traceback_tail": "..."}
    results.checks[-5] = _fuzz("config_validation", "configs", [finding])
    s = scores(results)
    assert s["equivalence"] == 3 and s["bug_risk"] == 4
    assert s["documentation"] == 5 and s["logging"] == 5
    assets = write_assets(results, tmp_path / "assets")
    text = render_markdown(results, ["r.json"], "planted", assets, "assets")
    assert "step 7: `critic/q_loss`" in text
    assert "list index out of range" in text and "w2_weights=[]" in text
    assert "`not_equivalent`" in text and "`fuzz_finding`" in text
    assert "None" not in text
    lines = text.splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert all(lines[i - 1] == "" for i, line in enumerate(lines) if i and line.startswith(("#", "![")))
    assert "\n\n\n" not in text
    assert (tmp_path / "assets" / "divergence.png").read_bytes()[:4] == b"\x89PNG"
    recs = render_json(results, ["r.json"], "planted")["recommendations"]
    assert recs[0]["rule"] == "not_equivalent" and recs[0]["evidence"] == "equivalence/iql"
    assert len(render_summary(results, ["r.json"], "planted").encode()) < 1024 * 1024


def test_rubric_is_data_and_every_deduction_is_documented():
    rubric = load_rubric()
    assert set(rubric["sections"]) == {"documentation", "equivalence", "bug_risk", "logging", "jax_performance"}
    for spec in rubric["sections"].values():
        assert spec["five_stars"] and spec["checks"]
        for d in spec["deductions"]:
            assert d["rule"].startswith("-") and d["points"] >= 1 and d["cap"] >= d["points"]
            checks = d["match"]["check"] if isinstance(d["match"]["check"], list) else [d["match"]["check"]]
            assert set(checks) <= set(section_checks(spec)) | {"hooks"} and d["message"]


def test_every_rubric_check_is_one_the_suite_produces():
    """A rubric selector naming a check nothing produces would score "not measured" forever."""
    from checks.suite import STAGES

    produced = set(STAGES)  # a stage's results carry its check's name
    for spec in load_rubric()["sections"].values():
        assert set(section_checks(spec)) <= produced


def test_a_new_check_is_scored_from_rubric_data_alone():
    """Scoring has no per-check code: a made-up check with a per-row deduction is scored from its selectors."""
    rubric = {"scale": {"max": 5, "min": 1}, "sections": {"speed": {
        "title": "Speed", "checks": [{"check": "bench", "not": {"subject": "ignored"}}], "five_stars": "fast",
        "deductions": [
            {"id": "slow", "match": {"check": "bench", "verdict": ["fail", "error"]}, "message": "{r.subject} slow",
             "points": 2, "cap": 2, "rule": "-2 when slow"},
            {"id": "hot_row", "match": {"check": "bench"}, "each": "details", "detail": {"kind": "hot"},
             "message": "{r.subject}: {detail[where]}", "points": 1, "cap": 3, "rule": "-1 per hot row"}]}}}
    results = RunResults(checks=[
        CheckResult("bench", "a", "fail", details=[{"kind": "hot", "where": "x.py:1"}, {"kind": "cold"}]),
        CheckResult("bench", "b", "pass", details=[{"kind": "hot", "where": "y.py:2"}]),
        CheckResult("bench", "ignored", "fail", details=[{"kind": "hot", "where": "z.py:3"}]),
        CheckResult("docs", "quickstart", "fail")])
    (section,) = score_sections(results, rubric)
    assert [r.subject for r in section.results] == ["a", "b"]
    found = {a.rule_id: [f.message for f in a.findings] for a in section.applied}
    assert found == {"slow": ["a slow"], "hot_row": ["a: x.py:1", "b: y.py:2"]}
    assert section.score == 5 - 2 - 2


def test_missing_field_fails_loudly(tmp_path, capsys):
    data = healthy().to_dict()
    eq = next(c for c in data["checks"] if c["check"] == "equivalence")
    del eq["metrics"]["self_check"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    code = main(["report", "--from", str(path), "-o", str(tmp_path / "report.md")])
    err = capsys.readouterr().err
    assert code == 2 and "self_check" in err and err.count("\n") == 1
    assert not (tmp_path / "report.md").exists()


def test_none_value_is_refused(tmp_path, capsys):
    data = healthy().to_dict()
    next(c for c in data["checks"] if c["check"] == "conformance")["metrics"]["max_rel"] = None
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    assert main(["report", "--from", str(path), "-o", str(tmp_path / "report.md")]) == 2


@pytest.mark.parametrize("fmt", ["md", "summary", "json"])
def test_cli_renders_every_format_from_results(tmp_path, fmt, capsys):
    path = tmp_path / "r.json"
    healthy().save(path)
    out = tmp_path / f"report.{fmt}"
    assert main(["report", "--from", str(path), "-o", str(out), "--format", fmt]) == 0
    text = out.read_text()
    assert "Critic/actor0 equivalence" in text
    if fmt == "json":
        assert json.loads(text)["overall"] == 5.0


def test_group_table_aligns_trainers_with_different_observable_groups(tmp_path):
    """A JAX trainer has no grad-leak group: its row gets `n/a` there instead of shifting later cells left."""
    results = healthy()
    jax = _eq("rebrac")
    jax.details = [row for row in jax.details if row["group"] != "grad leak"]
    jax.details[-1]["first_divergence_step"] = 4
    results.checks.insert(9, jax)
    text = render_markdown(results, ["r.json"], "planted", write_assets(results, tmp_path / "a"), "a")
    table = text.split("Observable groups compared")[1].split("\n\n")[1].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rebrac = [c.strip() for c in next(r for r in table if r.startswith("| rebrac")).strip("|").split("|")]
    assert len(rebrac) == len(header)
    assert rebrac[header.index("grad leak")] == "n/a"
    assert rebrac[header.index("chain (W2 oracle)")] == "step 4"


# ------------------------------------------------------------------------------ candidate mode and review claims

def _candidate(result):
    result.metrics["audited"] = "candidate"
    return result


def test_candidate_mode_scores_only_the_candidates_evidence():
    """Our own trainer's results never score a candidate; evidence the mode does not produce is not deducted; an
    absent hook leaves its section not measured with the reason; our references' evidence is cited, not scored."""
    results = healthy()  # our own results: 5★ everywhere measured
    results.checks += [
        _candidate(_eq("td3_bc", "fail", Divergence(3, "critic/critic_loss", 0.5, 0.1, 0.0, 0.0))),
        _candidate(_fuzz("candidate_config_validation", "configs", [{"property": "p", "minimal_example": "x",
                                                                    "exception": "silently accepted",
                                                                    "traceback_tail": ""}])),
        CheckResult("hooks", "log", "inconclusive", summary="not measured (adapter has no `log`)",
                    metrics={"audited": "candidate", "absent_hook": "log", "section": "logging"}),
        CheckResult("hooks", "save_checkpoint", "inconclusive",
                    summary="not measured (adapter has no `save_checkpoint`/`load_checkpoint`)",
                    metrics={"audited": "candidate", "absent_hook": "save_checkpoint", "section": "logging"}),
    ]
    sections = {s.key: s for s in score_sections(results)}
    assert {k: s.score for k, s in sections.items()} == {
        "documentation": None, "equivalence": 3, "bug_risk": 4, "logging": None, "jax_performance": None}
    assert [r.subject for r in sections["equivalence"].results] == ["td3_bc"]
    assert not any(a.rule_id.startswith("missing_") and a.count for s in sections.values() for a in s.applied)
    assert sections["logging"].not_measured_reason == ("adapter has no `log`; adapter has no "
                                                       "`save_checkpoint`/`load_checkpoint`")
    assert [r.subject for r in sections["equivalence"].credentials] == ["iql_gaussian/float64", "m1"]


def test_hand_written_review_is_read_as_claims():
    from pathlib import Path

    from reports.review import parse_review

    text = (Path(__file__).parents[1] / "examples" / "review-example.md").read_text(encoding="utf-8")
    assert [(c.number, c.stars, c.says) for c in parse_review(text)] == [
        (1, 4.0, "4/5"),
        (2, None, "Critic 업데이트: ✅ 완전히 동치; Actor0 동치성: ✅ 완전히 동치 (CQL 수정 완료)"),
        (4, 3.0, "3/5"), (5, 3.0, "3/5")]


def test_compare_review_puts_each_claim_next_to_the_evidence(tmp_path, capsys):
    from pathlib import Path

    results = healthy()
    results.checks[7] = _eq("iql", "fail", Divergence(7, "critic/q_loss", 0.25, 0.1, 0.0, 0.0, None, 3.0, 3.25))
    path = tmp_path / "r.json"
    results.save(path)
    review = Path(__file__).parents[1] / "examples" / "review-example.md"
    out = tmp_path / "report.md"
    assert main(["report", "--from", str(path), "-o", str(out), "--compare-review", str(review)]) == 0
    text = out.read_text()
    assert text.index("## The hand-written review next to the evidence") < text.index("## Scores")
    assert ("| Critic/actor0 equivalence | Critic 업데이트: ✅ 완전히 동치; Actor0 동치성: ✅ 완전히 동치 (CQL 수정 "
            "완료) | 3/5 | — | -2 per algorithm whose critic/actor0 diverge from the reference × 1 (−2) |") in text
    assert "| Documentation | 4/5 | 5/5 | **no** | 5★ rule met:" in text
    assert "| Bug risk | no claim | 5/5 | — |" in text
    assert "| JAX performance | 3/5 | not measured | — | no `jax-profile` results |" in text
    assert main(["report", "--from", str(path), "-o", str(tmp_path / "r.json.out"), "--format", "json",
                 "--compare-review", str(review)]) == 0
    rows = json.loads((tmp_path / "r.json.out").read_text())["review"]
    assert [(r["review"], r["measured"], r["agrees"]) for r in rows][3:] == [("3/5", "5/5", False),
                                                                             ("3/5", "not measured", None)]
    bad = tmp_path / "bad.md"
    bad.write_text("# notes\nno sections here\n")
    assert main(["report", "--from", str(path), "-o", str(out), "--compare-review", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--compare-review" in err and "bad.md" in err


def test_jax_findings_each_cost_their_rubric_line():
    details = [{"kind": k, "severity": "fail", "message": f"{k} at t.py:1"} for k in
               ("not_jitted", "recompile", "host_sync", "host_sync", "host_to_device", "host_memory_growth",
                "evaluation_recompile")] + [{"kind": "probe_failed", "severity": "note", "message": "n"}]
    results = RunResults(checks=[CheckResult("jax-profile", "target", "fail", details=details)])
    (jax,) = [s for s in score_sections(results) if s.key == "jax_performance"]
    assert {a.rule_id: a.count for a in jax.applied} == {"not_jitted": 1, "recompiles": 1, "host_sync": 2,
                                                         "host_memory_growth": 1, "evaluation_recompile": 1,
                                                         "h2d_transfer": 1}
    assert jax.score == 1


def test_localisation_measurements_are_cited_in_the_equivalence_section(tmp_path):
    results = healthy()
    results.checks.append(CheckResult("localisation", "accuracy", "fail",
                                      summary="21/24 mutants located at their mutated line (87.5 %, goal 90 %)"))
    text = render_markdown(results, ["r.json"], "t", {}, "assets")
    assert "### Localisation (`pogo-audit mutants --localise`)" in text
    assert "| accuracy | 21/24 mutants located at their mutated line (87.5 %, goal 90 %) | fail |" in text
    assert score_sections(results)[1].score == 5  # cited, not scored


def test_jax_section_shows_host_memory_with_its_projection_and_the_jit_gain():
    memory = {"calls": 30, "bytes_per_call": 351.0, "low": 320.0, "high": 402.0, "confidence": 0.95,
              "threshold": 32.0, "growing": True, "top": [],
              "projection": {"training_steps": 1_000_000, "bytes": 351e6, "low": 320e6, "high": 402e6}}
    metrics = {"functions": [], "jitted": True, "jitted_evidence": "static scan", "loop": "step",
               "ratios": {"python_loop_over_scan": None, "unjitted_over_jitted": 4.14}, "host_memory": memory,
               "jit_gain": None}
    unmeasured = {**metrics, "jitted": False, "host_memory": None, "timing_note": "not timed: 22 compiles",
                  "jit_gain": {"ratio": None, "detail": "not measured: no pure_step() and no batch_size"}}
    results = RunResults(checks=[CheckResult("jax-profile", "grows", "fail", metrics=metrics),
                                 CheckResult("jax-profile", "recompiles", "fail", metrics=unmeasured)])
    text = render_markdown(results, ["r.json"], "t", {}, "assets")
    assert ("Host memory: 351 B per step (95% interval 320…402 B over 30 steps), 351 MB projected over 1000000 "
            "steps: growing.") in text
    assert "Jit gain: 4.14× (this step under `jax.disable_jit()` / jitted" in text
    assert "Host memory: not measured (not timed: 22 compiles)." in text
    assert "Jit gain: not measured (not measured: no pure_step() and no batch_size)." in text
