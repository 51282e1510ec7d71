"""CLI: exit codes and one-line errors for bad input (no traceback)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pogo_audit.cli.main import main
from pogo_audit.core.golden import GoldenDir


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pogo-audit: error:")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture()
def golden_copy(tmp_path):
    """A writable float32 trace set: links to the shipped files, the iql_gaussian folder copied with its own
    ``init_params.npz`` (a variant's own file takes precedence over the shared one the layout names)."""
    src = GoldenDir(precision="float32")
    dst = tmp_path / "golden"
    dst.mkdir()
    for p in src.root.iterdir():
        if p.name != "iql_gaussian":
            (dst / p.name).symlink_to(p)
    shutil.copytree(src.root / "iql_gaussian", dst / "iql_gaussian")
    shutil.copy(src.variant("iql_gaussian").init_params_path, dst / "iql_gaussian" / "init_params.npz")
    for p in (dst / "iql_gaussian").iterdir():
        p.chmod(0o644)
    return dst


def test_unknown_algo(capsys):
    code, _, err = run_cli(capsys, "conformance", "--algo", "ppo")
    assert_one_line_error(code, err, "--algo", "'ppo'")


def test_missing_golden_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "conformance", "--algo", "td3_bc", "--golden", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "golden directory not found", str(tmp_path / "nope"))


def test_golden_missing_file(capsys, golden_copy):
    (golden_copy / "iql_gaussian" / "steps.npz").unlink()
    code, _, err = run_cli(capsys, "conformance", "--algo", "iql_gaussian", "--golden", str(golden_copy))
    assert_one_line_error(code, err, "steps.npz", "not found")


def test_golden_corrupt_file(capsys, golden_copy):
    (golden_copy / "iql_gaussian" / "init_params.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    code, _, err = run_cli(capsys, "conformance", "--algo", "iql_gaussian", "--golden", str(golden_copy))
    assert_one_line_error(code, err, "init_params.npz", "corrupt")


def test_golden_truncated_file(capsys, golden_copy):
    path = golden_copy / "iql_gaussian" / "steps.npz"
    path.write_bytes(path.read_bytes()[:5000])
    code, _, err = run_cli(capsys, "conformance", "--algo", "iql_gaussian", "--golden", str(golden_copy))
    assert_one_line_error(code, err, "steps.npz", "corrupt")


def test_golden_of_a_different_algorithm(capsys, golden_copy):
    shutil.copy(GoldenDir(precision="float32").root / "td3_bc" / "meta.json", golden_copy / "iql_gaussian" / "meta.json")
    code, _, err = run_cli(capsys, "conformance", "--algo", "iql_gaussian", "--golden", str(golden_copy))
    assert_one_line_error(code, err, "'td3_bc'", "expected 'iql_gaussian'")


def test_golden_params_of_a_different_algorithm(capsys, golden_copy):
    (golden_copy / "iql_gaussian" / "init_params.npz").unlink()
    shutil.copy(GoldenDir(precision="float32").variant("td3_bc").init_params_path,
                golden_copy / "iql_gaussian" / "init_params.npz")
    code, _, err = run_cli(capsys, "conformance", "--algo", "iql_gaussian", "--golden", str(golden_copy))
    assert_one_line_error(code, err, "init_params.npz", "does not fit iql_gaussian")


def test_golden_pickle_is_refused(capsys, golden_copy):
    import numpy as np

    path = golden_copy / "iql_gaussian" / "init_params.npz"
    np.savez(path, evil=np.array([{"a": 1}], dtype=object))
    code, _, err = run_cli(capsys, "conformance", "--algo", "iql_gaussian", "--golden", str(golden_copy))
    assert_one_line_error(code, err, "init_params.npz", "pickle")


def test_bad_option_value(capsys):
    code, _, err = run_cli(capsys, "conformance", "--steps", "zero")
    assert_one_line_error(code, err, "--steps")


def test_datasets_make_unknown_env(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    code, _, err = run_cli(capsys, "datasets", "make", "--id", "x/y-v0", "--env", "NoSuchEnv-v9")
    assert_one_line_error(code, err, "--env", "NoSuchEnv-v9")


def test_conformance_passes_and_writes_json(capsys, tmp_path):
    from pogo_audit.model.results import RunResults

    code, out, _ = run_cli(capsys, "conformance", "--algo", "td3_bc", "--steps", "4", "--json",
                           str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"), "--sarif",
                           str(tmp_path / "r.sarif"), "-q")
    assert code == 0
    assert "conformance passed" in out and "mode tolerance" in out and "this machine:" in out
    res = RunResults.load(tmp_path / "r.json")
    assert [c.subject for c in res.checks] == ["td3_bc/float64", "td3_bc/float32"]
    assert all(c.passed for c in res.checks)
    assert res.checks[0].metrics["tolerance"] == "|a-b| <= 1e-09*max(|a|,|b|,scale)"
    assert res.checks[1].metrics["mode"] in ("bitwise", "drift")
    assert 'classname="pogo_audit.conformance"' in (tmp_path / "r.xml").read_text() or \
        "pogo_audit.conformance" in (tmp_path / "r.xml").read_text()
    assert (tmp_path / "r.sarif").is_file()


def test_conformance_precision_of_a_given_set_must_match(capsys):
    f32 = GoldenDir(precision="float32").root
    code, _, err = run_cli(capsys, "conformance", "--algo", "td3_bc", "--golden", str(f32), "--precision", "float64")
    assert_one_line_error(code, err, "--precision float64", "is float32")


@pytest.mark.heavy
def test_console_script_reports_usage_error_without_traceback():
    exe = Path(sys.executable).with_name("pogo-audit")
    proc = subprocess.run([str(exe), "conformance", "--algo", "nope"], capture_output=True, text=True,
                          env={**os.environ}, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--algo" in proc.stderr


@pytest.mark.parametrize("command", ["train", "equivalence"])
def test_unknown_dataset_is_one_line_and_nothing_else(capsys, command):
    code, out, err = run_cli(capsys, command, "--algo", "iql", "--steps", "2", "--set", "dataset=someone/unknown-v3")
    assert_one_line_error(code, err, "'someone/unknown-v3'", "pogo-audit datasets make --id someone/unknown-v3")
    assert out.strip() == ""


def test_traces_pack_refuses_a_directory_that_is_not_a_trace_set(capsys, tmp_path):
    code, _, err = run_cli(capsys, "traces", "pack", "--float32", str(tmp_path), "--float64", str(tmp_path),
                           "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "--float32", "is not a golden trace set")
    assert not (tmp_path / "out").exists()


def test_an_internal_error_is_one_line_not_a_traceback(monkeypatch, capsys):
    """pogo-audit's own defect (here a planted TypeError in a check) ends with one line naming it, exit 1."""
    import checks.fuzz.runner as runner

    def broken(args, progress):
        raise TypeError("planted")

    monkeypatch.setattr(runner, "run_command", broken)
    assert main(["fuzz", "--target", "data", "--examples", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: TypeError: planted at" in err and "Traceback" not in err
