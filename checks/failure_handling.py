"""Failure handling of the training loop, exercised for real on a short run of the embedded dataset.

``check="failure-handling"`` results (the report's logging section):

* ``eval_failure_logged`` — an evaluation that raises is logged (JSONL ``eval_error`` event and an
  ``eval/.../failed`` value) and training continues;
* ``checkpoint_failure_reported`` — a checkpoint write that fails (disk full) stops the run with one clear error
  naming the file, is logged, and leaves no partial file behind;
* ``nan_loss_stops_run`` — a NaN loss stops the run with a message naming the step and the key.

Failures are injected with ``unittest.mock`` into this process only; no file is edited.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from pogo_audit.runtime.errors import PogoAuditError
from pogo_audit.model.results import FAIL, PASS, CheckResult


def _config(out_dir: Path, **overrides):
    from multi_actor.config import build_config

    base = {"algo": "iql", "num_actors": 2, "steps": 6, "out_dir": str(out_dir)}
    base.update(overrides)
    sets = ["eval_episodes=1", "log_freq=1"]
    return build_config(None, sets, **base)


def _events(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check(name: str, fn) -> CheckResult:
    t0 = time.perf_counter()
    try:
        ok, summary, details = fn()
    except Exception as exc:  # a crash of the scenario is itself the finding
        ok, summary, details = False, f"scenario crashed: {type(exc).__name__}: {exc}", []
    return CheckResult(check="failure-handling", subject=name, verdict=PASS if ok else FAIL, summary=summary,
                       details=details, seconds=time.perf_counter() - t0)


def eval_failure(root: Path):
    from multi_actor.evaluation import Evaluator
    from multi_actor.loop import train

    out = root / "eval"
    with mock.patch.object(Evaluator, "_episode_returns", side_effect=RuntimeError("MuJoCo: simulation unstable")):
        summary = train(_config(out, eval_freq=3))
    events = _events(out)
    errors = [e for e in events if e.get("event") == "eval_error"]
    failed_keys = [k for e in events for k in e if k.endswith("/failed")]
    ok = summary.steps == 6 and len(errors) >= 2 and bool(failed_keys) and \
        all("simulation unstable" in e["message"] for e in errors)
    return ok, f"run finished {summary.steps} steps; {len(errors)} eval_error events logged, " \
               f"{len(failed_keys)} failed markers", errors[:4]


def _checkpoint_failure(root: Path):
    from multi_actor import loop

    out = root / "ckpt"
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    with mock.patch("pogo_audit.runtime.io.os.replace", side_effect=replace):
        try:
            loop.train(_config(out, eval_freq=0, checkpoint_freq=2))
        except PogoAuditError as exc:
            message = str(exc)
        else:
            return False, "a failing checkpoint write did not stop the run", []
    leftovers = [p.name for p in out.glob(".checkpoint.pt.*")]
    logged = [e for e in _events(out) if e.get("event") == "checkpoint_error"]
    ok = "checkpoint.pt" in message and "No space left" in message and "\n" not in message and not leftovers \
        and bool(logged) and not (out / "checkpoint.pt").exists()
    return ok, f"error: {message}; temp files left: {leftovers or 'none'}; logged: {bool(logged)}", \
        [{"message": message}]


def _nan_loss(root: Path):
    from multi_actor.loop import TrainingDiverged, train
    from multi_actor.trainer import MultiActorTrainer

    original = MultiActorTrainer.step

    def poisoned(self, batch):
        out = original(self, batch)
        if self.steps_done == 4:
            out["critic/q_loss"] = float("nan")
        return out

    with mock.patch.object(MultiActorTrainer, "step", poisoned):
        try:
            train(_config(root / "nan", eval_freq=0))
        except TrainingDiverged as exc:
            message = str(exc)
        else:
            return False, "a NaN loss did not stop the run", []
    ok = "step 4" in message and "critic/q_loss" in message
    return ok, message, [{"message": message}]


def run_failure_handling(work_dir: str | None = None) -> list[CheckResult]:
    """Run the three scenarios in a temporary directory (the embedded dataset is created if needed)."""
    with tempfile.TemporaryDirectory(prefix="pogo-audit-failures-", dir=work_dir) as tmp:
        root = Path(tmp)
        return [
            _check("eval_failure_logged", lambda: eval_failure(root)),
            _check("checkpoint_failure_reported", lambda: _checkpoint_failure(root)),
            _check("nan_loss_stops_run", lambda: _nan_loss(root)),
        ]


def run_command(args: object, progress: object) -> list[CheckResult]:
    """``pogo-audit failure-handling``: the three failure scenarios of the training loop."""
    return run_failure_handling()


def suite_stage(opts: object, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: the training loop's failure scenarios (our own loop)."""
    say("failure handling")
    return run_failure_handling()
