"""Exporters: JUnit XML, SARIF and the GitHub step summary render the results model faithfully and safely."""

from __future__ import annotations

import json
import os
import stat
import xml.etree.ElementTree as ET

import pytest

from pogo_audit import __version__
from pogo_audit.core import exporters
from pogo_audit.core.exporters import to_junit_xml, to_sarif, to_step_summary, write_outputs
from pogo_audit.runtime.io import atomic_write_text
from pogo_audit.model.results import CheckResult, Divergence, RunResults

from checks.registry import export_parts

PARTS = export_parts()  # each check's part of the CI outputs, as the CLI passes them

NASTY = 'broken <tag> & "quotes" | pipe\nsecond line'


def _eq_row(group, verdict, step=None, observable=None, max_abs=0.0, max_rel=0.0):
    return {"group": group, "observables": 3, "steps_compared": 20, "verdict": verdict,
            "first_divergence_step": step, "observable": observable, "max_abs": max_abs, "max_rel": max_rel}


def _results() -> RunResults:
    checks = [
        CheckResult("equivalence", "iql", "pass", 20, "equivalent",
                    metrics={"mode": "bitwise", "candidate": "pogo", "reference": "corl"},
                    details=[_eq_row("critic losses", "pass"), _eq_row("actor losses", "pass")], seconds=2.0),
        CheckResult("equivalence", "cql", "fail", 20, "not equivalent",
                    first_divergence=Divergence(7, "critic/q1_loss", 1.5e-3, 2.5e-4, 1e-6, 1e-8),
                    metrics={"mode": "tolerance", "rtol": 1e-6, "atol": 1e-8, "candidate": "pogo-cql",
                             "reference": "corl-cql", "max_abs": float("nan"),
                             "candidate_location": {"path": "multi_actor/algorithms.py", "line": 42}},
                    details=[_eq_row("critic losses", "fail", 7, "critic/q1_loss", 1.5e-3, 2.5e-4),
                             _eq_row("actor losses", "pass")], seconds=4.0),
        CheckResult("equivalence", "awac", "inconclusive", 5, "reference is nondeterministic",
                    metrics={"mode": "bitwise"}, details=[_eq_row("critic losses", "pass")]),
        CheckResult("equivalence", "td3_bc", "error", 0, "worker crashed: " + NASTY, metrics={"mode": "bitwise"}),
        CheckResult("conformance", "cql", "pass", 200, "ok",
                    metrics={"bitwise_pct": 100.0, "max_abs": 0.0, "max_rel": 0.0, "rtol": 1e-6, "atol": 1e-8,
                             "groups": {}}, seconds=1.5),
        CheckResult("conformance", "iql", "fail", 200, NASTY,
                    first_divergence=Divergence(12, "actor/loss", 0.5, float("inf"), 1e-6, 1e-8),
                    metrics={"bitwise_pct": 97.5, "max_abs": 0.5, "max_rel": float("inf")}),
        CheckResult("mutants", "cql_drop_alpha", "pass", 20, "killed",
                    metrics={"algo": "cql", "description": "drop alpha", "expected": "critic losses",
                             "killed": True, "caught_by": "critic/cql_loss", "caught_group": "critic losses",
                             "step": 1, "location": {"path": "reference_algos/cql.py", "line": 10,
                                                     "function": "update"}},
                    details=[{"group": "critic losses", "step": 1}]),
        CheckResult("mutants", "iql_swap_tau", "fail", 20, "survived",
                    metrics={"algo": "iql", "description": "swap tau | beta", "expected": "actor losses",
                             "killed": False, "caught_by": None, "caught_group": None, "step": None,
                             "location": {"path": "reference_algos\\iql.py", "line": 0, "function": "loss"}},
                    details=[{"group": "actor losses", "step": None}]),
        CheckResult("mutants", "iql_unlocated", "fail", 20, "survived", metrics={"algo": "iql", "killed": False}),
        CheckResult("fuzz", "replay_buffer", "pass", 0, "1000 inputs", seconds=0.25),
    ]
    return RunResults(checks=checks, command="pogo-audit test", environment={"python": "3.11"})


# ---------------------------------------------------------------------------------------------------- JUnit


def _cases(root):
    return {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}


def test_junit_structure_and_counts():
    root = ET.fromstring(to_junit_xml(_results(), PARTS))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"pogo_audit.equivalence", "pogo_audit.conformance", "pogo_audit.mutants",
                           "pogo_audit.fuzz"}
    eq = suites["pogo_audit.equivalence"]
    # iql 2 rows, cql 2 rows, awac 1 row + (run), td3_bc (run)
    assert (eq.get("tests"), eq.get("failures"), eq.get("skipped"), eq.get("errors")) == ("7", "1", "1", "1")
    assert len(eq.findall("testcase")) == 7
    assert root.get("tests") == "13"
    assert (root.get("failures"), root.get("errors"), root.get("skipped")) == ("4", "1", "1")
    cases = _cases(root)
    assert ("pogo_audit.equivalence.cql", "critic losses") in cases
    assert cases[("pogo_audit.equivalence.iql", "critic losses")].get("time") == "1.000"
    assert cases[("pogo_audit.conformance", "cql")].get("time") == "1.500"
    assert float(root.get("time")) == pytest.approx(7.75)
    assert cases[("pogo_audit.fuzz", "replay_buffer")].find("failure") is None
    assert cases[("pogo_audit.equivalence.awac", "(run)")].find("skipped") is not None
    assert cases[("pogo_audit.equivalence.td3_bc", "(run)")].find("error") is not None
    assert cases[("pogo_audit.mutants.cql", "cql_drop_alpha")].find("failure") is None
    assert cases[("pogo_audit.mutants.iql", "iql_swap_tau")].find("failure") is not None


def test_junit_failure_messages_carry_first_divergence():
    cases = _cases(ET.fromstring(to_junit_xml(_results(), PARTS)))
    msg = cases[("pogo_audit.equivalence.cql", "critic losses")].find("failure").get("message")
    assert "step 7" in msg and "critic/q1_loss" in msg and "0.0015" in msg and "0.00025" in msg
    assert "rtol=1e-06" in msg and "atol=1e-08" in msg
    assert cases[("pogo_audit.equivalence.cql", "actor losses")].find("failure") is None
    conf = cases[("pogo_audit.conformance", "iql")].find("failure").get("message")
    assert "step 12" in conf and "actor/loss" in conf and "inf" in conf


def test_junit_escapes_special_characters():
    res = RunResults(checks=[CheckResult("docs", 'a<b>&"c"', "fail", summary='bad <&"> \x00 summary'),
                             CheckResult("docs", "x", "error", summary="<&\">")])
    text = to_junit_xml(res, PARTS)
    root = ET.fromstring(text)  # would raise on bad escaping or illegal characters
    cases = list(root.iter("testcase"))
    assert cases[0].get("name") == 'a<b>&"c"'
    assert cases[0].find("failure").get("message").startswith('bad <&"> ')
    assert cases[1].find("error").get("message") == "<&\">"
    assert "<&" not in text.replace("<?xml", "")


# ---------------------------------------------------------------------------------------------------- SARIF


def test_sarif_emits_only_located_failures():
    sarif = to_sarif(_results(), parts=PARTS)
    assert sarif["version"] == "2.1.0"
    assert sarif["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "pogo-audit" and driver["version"] == __version__
    results = run["results"]
    assert sorted(r["ruleId"] for r in results) == ["POGO-EQ001", "POGO-MUT001"]
    rule_ids = [r["id"] for r in driver["rules"]]
    for r in results:
        assert r["ruleId"] in rule_ids
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["level"] == "error"
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uriBaseId"] == "SRCROOT"
        assert not loc["artifactLocation"]["uri"].startswith("/") and "\\" not in loc["artifactLocation"]["uri"]
        assert loc["region"]["startLine"] >= 1
        assert r["partialFingerprints"]
    by_rule = {r["ruleId"]: r for r in results}
    eq = by_rule["POGO-EQ001"]
    assert eq["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "multi_actor/algorithms.py"
    assert eq["locations"][0]["physicalLocation"]["region"]["startLine"] == 42
    assert "step 7" in eq["message"]["text"] and "critic/q1_loss" in eq["message"]["text"]
    mut = by_rule["POGO-MUT001"]
    assert mut["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "reference_algos/iql.py"
    assert mut["locations"][0]["physicalLocation"]["region"]["startLine"] == 1
    assert "iql_swap_tau" in mut["message"]["text"]
    json.dumps(sarif, allow_nan=False)


def test_sarif_is_strict_json_and_fingerprints_stable():
    res = _results()
    res.checks[1].first_divergence = Divergence(7, "critic/q1_loss", float("nan"), float("inf"), 1e-6, 1e-8)
    res.checks[7].metrics["step"] = float("nan")
    text = json.dumps(to_sarif(res, parts=PARTS), allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    moved = _results()
    moved.checks[7].metrics["location"]["line"] = 99
    fp = [r["partialFingerprints"] for r in to_sarif(_results(), parts=PARTS)["runs"][0]["results"]]
    assert fp == [r["partialFingerprints"] for r in to_sarif(moved, parts=PARTS)["runs"][0]["results"]]


def test_sarif_relativises_absolute_paths(tmp_path):
    res = RunResults(checks=[CheckResult("mutants", "m", "fail", metrics={"location": {
        "path": str(tmp_path / "pkg dir" / "mod.py"), "line": 3, "function": "f"}}),
        CheckResult("mutants", "outside", "fail", metrics={"location": {"path": "/elsewhere/x.py", "line": 3}}),
        CheckResult("mutants", "escape", "fail", metrics={"location": {"path": "../x.py", "line": 3}})])
    run = to_sarif(res, repo_root=tmp_path, parts=PARTS)["runs"][0]
    assert [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]] == \
        ["pkg%20dir/mod.py"]
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"].endswith("/")


# ---------------------------------------------------------------------------------------------- step summary


def test_step_summary_tables_and_escaping():
    md = to_step_summary(_results(), parts=PARTS)
    assert md.startswith("## pogo-audit: ❌ 6 problems in 10 checks")
    assert "| algorithm | group | steps | verdict | first divergence step | observable | max abs | max rel |" in md
    assert "| variant | steps | bitwise % | max rel | verdict |" in md
    assert "| mutant | algo | expected observable | caught by | step | killed |" in md
    assert "| cql | critic losses | 20 | **fail** | 7 | critic/q1_loss | 0.0015 | 0.00025 |" in md
    assert "| iql | 200 | 97.50 | inf | **fail** |" in md
    assert "| iql_swap_tau | iql | actor losses | — | — | **no** |" in md
    assert "### fuzz" in md
    for line in md.splitlines():
        if line.startswith("| td3_bc"):
            assert "\\|" not in line  # error row: summary is not a column of the equivalence table
    generic = to_step_summary(RunResults(checks=[CheckResult("docs", "a|b", "fail", summary=NASTY)]))
    row = next(line for line in generic.splitlines() if line.startswith("| a"))
    assert row.startswith("| a\\|b |")
    assert "pipe<br>second line" in row and "\\| pipe" in row and "&lt;tag&gt; &amp;" in row
    assert len(row.split(" | ")) == 4  # subject, steps, verdict, summary: no unescaped pipe splits a cell


def test_step_summary_all_passed():
    res = RunResults(checks=[c for c in _results().checks if c.verdict == "pass"])
    assert to_step_summary(res, parts=PARTS).startswith("## pogo-audit: all 4 checks passed")


def test_step_summary_truncates_below_limit_keeping_failures():
    rows = [_eq_row(f"group {i}", "pass") for i in range(50_000)]
    rows[31_337] = _eq_row("the failing group", "fail", 5, "critic/loss", 1.0, 1.0)
    checks = [CheckResult("equivalence", "iql", "fail", 20, "not equivalent", details=rows),
              CheckResult("mutants", "survivor", "fail", metrics={"algo": "iql", "killed": False})]
    checks += [CheckResult("conformance", f"v{i}", "pass", 200) for i in range(1000)]
    limit = 20_000
    md = to_step_summary(RunResults(checks=checks), limit_bytes=limit, parts=PARTS)
    assert len(md.encode("utf-8")) < limit
    assert "the failing group" in md and "| survivor |" in md
    assert "rows were omitted" in md
    omitted = int(md.split("**Note:** ")[1].split(" ")[0])
    headers = ("| ---", "| algorithm", "| variant", "| mutant")
    shown = sum(1 for line in md.splitlines() if line.startswith("| ") and not line.startswith(headers))
    assert omitted + shown == 51_001
    assert shown > 50  # filled the budget rather than dropping everything
    tiny = to_step_summary(RunResults(checks=checks), limit_bytes=40, parts=PARTS)
    assert len(tiny.encode("utf-8")) < 40


# --------------------------------------------------------------------------------------------------- writing


def test_write_outputs_writes_every_format(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    res = _results()
    paths = {k: tmp_path / "out" / f"r.{k}" for k in ("json", "junit", "sarif", "summary")}
    paths["summary"].parent.mkdir()
    paths["summary"].write_text("old content\n")
    written = write_outputs(res, json_path=paths["json"], junit_path=paths["junit"], sarif_path=paths["sarif"],
                            summary_path=paths["summary"], parts=PARTS)
    assert written == paths
    assert RunResults.load(paths["json"]).checks[1].subject == "cql"
    ET.parse(paths["junit"])
    json.loads(paths["sarif"].read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert paths["summary"].read_text() == to_step_summary(res, parts=PARTS)  # a plain path is replaced
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())


def test_write_outputs_appends_to_github_step_summary(tmp_path, monkeypatch):
    summary = tmp_path / "step_summary.md"
    summary.write_text("# earlier step")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    res = _results()
    write_outputs(res, summary_path=str(summary), parts=PARTS)
    text = summary.read_text()
    assert text.startswith("# earlier step\n## pogo-audit")
    assert text.endswith(to_step_summary(res, parts=PARTS))
    assert [p.name for p in tmp_path.iterdir()] == ["step_summary.md"]  # no temporary files left behind


def test_write_outputs_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.xml"
    target.write_text("previous")
    # a lone surrogate makes the UTF-8 write fail part-way: the old file must survive, no temp file may remain
    monkeypatch.setattr(exporters, "to_junit_xml", lambda *_args: "x" * 100_000 + "\ud800")
    with pytest.raises(UnicodeEncodeError):
        write_outputs(_results(), junit_path=target, parts=PARTS)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["r.xml"]


def test_atomic_writes_get_the_usual_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.md", "# r\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644


def _valid_sarif(sarif: dict) -> None:
    """Validated against the SARIF 2.1.0 schema (pydantic-sarif's models are generated from the OASIS schema)."""
    from pydantic_sarif.model import StaticAnalysisResultsFormatSarifVersion210JsonSchema as Sarif

    Sarif.model_validate(json.loads(json.dumps(sarif, allow_nan=False)))


@pytest.mark.parametrize("check", sorted(__import__("checks.registry", fromlist=["CHECKS"]).CHECKS))
def test_every_check_has_a_sarif_result_per_located_finding(check):
    """Walks the registry: a failing result of any check with located findings in the results model's convention
    (a ``details`` row with path/line, a ``metrics.findings`` record with a ``location``) gets one SARIF result per
    finding, whatever the check's own exporter does; a note and a finding outside the repository get none."""
    res = CheckResult(check, "subject", "fail", summary="failed",
                      details=[{"path": "pkg/decided.py", "line": 7, "message": "decided here", "severity": "fail"},
                               {"path": "pkg/noted.py", "line": 3, "message": "only a note", "severity": "note"},
                               {"path": "/outside/repo.py", "line": 1, "message": "elsewhere"}],
                      metrics={"findings": [{"location": {"path": "pkg/other.py", "line": 12, "function": "f"},
                                             "message": "and here"}]})
    sarif = to_sarif(RunResults(checks=[res]), parts=PARTS)
    _valid_sarif(sarif)
    where = {(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
              r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in sarif["runs"][0]["results"]}
    assert {("pkg/decided.py", 7), ("pkg/other.py", 12)} <= where
    assert ("pkg/noted.py", 3) not in where and not any(uri.startswith("/") for uri, _ in where)
    passing = CheckResult(check, "subject", "pass", details=res.details)
    assert to_sarif(RunResults(checks=[passing]), parts=PARTS)["runs"][0]["results"] == []


def test_sarif_of_the_shipped_fixture_results_is_valid():
    sarif = to_sarif(_results(), parts=PARTS)
    _valid_sarif(sarif)  # raises on a schema violation
    assert sarif["runs"][0]["results"], "the fixture has located failures: the validated log must hold them"
