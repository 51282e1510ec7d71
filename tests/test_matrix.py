"""`pogo-audit matrix`: every cell of the grid is audited in its own process; results are identical whichever
executor runs them (serial, a process pool, a local Ray); an interrupted matrix re-runs only its missing cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checks.matrix import Grid, load_grid, run_matrix
from pogo_audit.cli.main import main

GRID = Grid(algos=["td3_bc", "iql"], seeds=[0, 1], actor_types=[["deterministic"], ["deterministic", "gaussian"]],
            steps=3)
#: the executor tests run a quarter of it (each cell is its own process: ~10 s apiece on the 2-core machine)
SMALL = Grid(algos=["td3_bc"], seeds=[0, 1], actor_types=[["deterministic"], ["deterministic", "gaussian"]], steps=3)


def _comparable(results):
    """Everything a cell's result says except how long it took."""
    out = {}
    for r in results:
        d = r.to_dict() if hasattr(r, "to_dict") else json.loads(json.dumps(r.__dict__, default=str))
        d.pop("seconds", None)
        out[r.metrics["cell"]["key"]] = json.dumps(d, sort_keys=True, default=str)
    return out


def test_grid_cells_and_yaml(tmp_path):
    cells = GRID.cells()
    assert len(cells) == 8 and len({c.key for c in cells}) == 8
    assert cells[0].label == "td3_bc · seed 0 · deterministic"
    path = tmp_path / "grid.yaml"
    path.write_text("algos: [td3_bc]\nseeds: [0, 1]\nactor_types: [[deterministic]]\nsteps: 3\n")
    assert [c.key for c in load_grid(str(path)).cells()] == [c.key for c in cells if c.algo == "td3_bc"
                                                              and c.actor_types == ("deterministic",)]
    path.write_text("algos: [td3_bc]\nseed: [0]\n")
    with pytest.raises(Exception, match="unknown key\\(s\\) seed"):
        load_grid(str(path))


@pytest.mark.slow
def test_process_pool_and_ray_match_serial(tmp_path):
    """2 seeds x 2 actor-type sets with --jobs 2, with a local Ray (2 CPUs) and serially: identical results."""
    cells = SMALL.cells()
    serial = run_matrix(cells, tmp_path / "serial.json", jobs=1)
    pooled = run_matrix(cells, tmp_path / "pool.json", jobs=2)
    assert [r.verdict for r in serial] == ["pass"] * 4
    assert _comparable(pooled) == _comparable(serial)
    pytest.importorskip("ray")
    on_ray = run_matrix(cells, tmp_path / "ray.json", jobs=2, executor="ray")
    assert _comparable(on_ray) == _comparable(serial)


@pytest.mark.slow
def test_interrupted_matrix_finishes_only_the_missing_cells(tmp_path):
    out = tmp_path / "m.json"
    cmd = [sys.executable, "-m", "pogo_audit.cli.main", "matrix", "--algo", "td3_bc", "--seeds", "0,1,2,3",
           "--steps", "3", "--out", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out.exists() and json.loads(out.read_text())["checks"]):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["metrics"]["cell"]["key"]: r for r in json.loads(out.read_text())["checks"]}
    assert 1 <= len(before) < 4
    assert main(["matrix", "--algo", "td3_bc", "--seeds", "0,1,2,3", "--steps", "3", "--out", str(out), "-q"]) == 0
    after = {r["metrics"]["cell"]["key"]: r for r in json.loads(out.read_text())["checks"]}
    assert len(after) == 4
    assert all(after[k] == v for k, v in before.items())  # finished cells were not run again


def test_bad_axis_is_a_usage_error(tmp_path, capsys):
    assert main(["matrix", "--algo", "td3_bc", "--actor-types", "deterministic,banana", "--out",
                 str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "banana" in err
