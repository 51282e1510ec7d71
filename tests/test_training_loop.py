"""`pogo-audit train`: a real run with evaluation, logging, checkpoints, bitwise resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from multi_actor.checkpoint import load_checkpoint
from pogo_audit.cli.main import main

EXE = str(Path(sys.executable).with_name("pogo-audit"))


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    out = {f"base/{k}": v.numpy() for k, v in state["trainer"]["base"]["tensors"].items()}
    for i, actor in enumerate(state["trainer"]["actors"], start=1):
        out.update({f"actor{i}/{k}": v.numpy() for k, v in actor.items()})
    return out


def train_args(out_dir: Path, steps: int) -> list[str]:
    return ["train", "--algo", "td3_bc", "--actors", "3", "--steps", str(steps), "--out-dir", str(out_dir),
            "--eval-freq", "40", "--set", "eval_episodes=1", "--set", "checkpoint_freq=20", "--set", "log_freq=10",
            "-q"]


@pytest.mark.heavy
def test_kill_and_resume_is_bitwise_identical(embedded_dataset, tmp_path):
    steps = 160
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(train_args(full, steps)) == 0

    proc = subprocess.Popen([EXE, *train_args(killed, steps)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and not ckpt.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended before its first checkpoint: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    step_at_kill = load_checkpoint(ckpt)["step"]
    assert 0 < step_at_kill < steps

    assert main([*train_args(killed, steps), "--resume"]) == 0
    a, b = final_params(full), final_params(killed)
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    full_log = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    killed_log = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    strip = [r for r in full_log if "event" not in r]
    assert strip == [r for r in killed_log if "event" not in r]
    assert any(k.startswith("eval/actor2/") for r in strip for k in r)


@pytest.mark.heavy
def test_train_logs_every_actor_and_refuses_to_overwrite(embedded_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--algo", "iql", "--actors", "3", "--steps", "30", "--out-dir", str(out), "--eval-freq",
                 "15", "--set", "eval_episodes=1", "--set", "log_freq=5", "-q"]) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    metrics = [r for r in records if "event" not in r]
    assert [r["step"] for r in metrics] == [5, 10, 15, 20, 25, 30]
    keys = set().union(*metrics)
    for k in ("critic/q_loss", "actor0/loss", "actor1/w2", "actor2/loss", "eval/actor0/deterministic/return_mean",
              "eval/actor2/stochastic/normalized_score_mean"):
        assert k in keys, k
    capsys.readouterr()
    code = main(["train", "--algo", "iql", "--actors", "3", "--steps", "30", "--out-dir", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume" in err and err.count("\n") == 1


@pytest.mark.parametrize("args,needle", [
    (["--actors", "3", "--set", "w2_weights=[1.0]"], "'w2_weights'"),
    (["--actors", "2", "--set", "w2_weights=[-1.0]"], "'w2_weights[0]'"),
    (["--actors", "2", "--set", "w2_weights=[.nan]"], "'w2_weights[0]'"),
    (["--actors", "2", "--set", "actor_configs=[{type: gaussian}, {type: mixture}]"], "'actor_configs[1].type'"),
    (["--algo", "sac_n", "--actors", "2", "--set", "actor_configs=[{type: deterministic}, {type: tanh_gaussian}]"],
     "'actor_configs[0].type'"),
    (["--actors", "3", "--set", "actor_configs=[{type: gaussian}]"], "'actor_configs'"),
    (["--dataset", "nobody/nothing-v0"], "'nobody/nothing-v0'"),
    (["--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
])
def test_bad_train_configs_exit_2_with_one_line(tmp_path, capsys, args, needle):
    code = main(["train", "--steps", "3", "--out-dir", str(tmp_path / "r"), "-q", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
