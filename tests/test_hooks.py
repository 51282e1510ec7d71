"""`pogo-audit hooks`: the candidate's make_config, log and checkpoint hooks are fuzzed / fault-injected; a correct
adapter passes, each planted defect is named, absent hooks are "not measured"."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from checks.hooks.runner import run_hooks
from multi_actor.checkpoint import load_checkpoint, save_checkpoint
from multi_actor.config import from_dict
from multi_actor.logger import RunLogger
from multi_actor.trainer import MultiActorTrainer
from pogo_audit.cli.main import main
from pogo_audit.runtime.seeding import GlobalRNGState

ALGO = "td3_bc"


class Hooked(MultiActorTrainer):
    """Our multi-actor trainer with correct hooks: atomic checkpoints with the RNG state, a JSONL logger."""

    log_dir = None

    def log(self, metrics, step):
        if not hasattr(self, "_logger"):
            self._path = self.log_dir / f"metrics-{id(self)}.jsonl"
            self._logger = RunLogger(self._path)
        self._logger.log(step, metrics)

    def read_log(self):
        return [json.loads(line) for line in self._path.read_text().splitlines()] if hasattr(self, "_path") else []

    def save_checkpoint(self, path):
        save_checkpoint(path, {"trainer": self.training_state(), "rng": GlobalRNGState.capture().to_portable()})

    def load_checkpoint(self, path):
        state = load_checkpoint(path)
        self.load_training_state(state["trainer"])
        GlobalRNGState.from_portable(state["rng"]).restore()


class Sloppy(Hooked):
    """Planted defects: a logger that calls float() on everything, a checkpoint written in place without the RNG."""

    def log(self, metrics, step):
        line = {str(k): float(v) for k, v in metrics.items()}
        self.lines = [*getattr(self, "lines", []), line]

    def read_log(self):
        return getattr(self, "lines", [])

    def save_checkpoint(self, path):
        torch.save({"trainer": self.training_state()}, path)

    def load_checkpoint(self, path):
        self.load_training_state(torch.load(path, weights_only=True)["trainer"])


def good_make_config(**fields):
    return from_dict({"algo": ALGO, **fields}).resolved()


def padding_make_config(**fields):
    """Planted defect: pads/truncates w2_weights to num_actors - 1 instead of refusing a mismatch."""
    n = fields.get("num_actors", 3)
    weights = (list(fields.get("w2_weights", [])) + [1.0] * 8)[: max(n - 1, 0)] if isinstance(n, int) else []
    return types.SimpleNamespace(**{**fields, "w2_weights": weights})


@pytest.fixture
def adapter_module(tmp_path, monkeypatch):
    """A module `hooked_adapter` with factories for the correct and the sloppy trainer."""
    Hooked.log_dir = tmp_path
    module = types.ModuleType("hooked_adapter")
    module.good = lambda config, spec, seed: Hooked(config, spec, seed)
    module.sloppy = lambda config, spec, seed: Sloppy(config, spec, seed)
    module.good.__module__ = module.sloppy.__module__ = "hooked_adapter"
    module.make_config = good_make_config
    monkeypatch.setitem(sys.modules, "hooked_adapter", module)
    return module


def _results(module, name, examples=25):
    return {r.subject: r for r in run_hooks(ALGO, f"hooked_adapter:{name}", getattr(module, name), examples)}


def test_correct_hooks_pass_every_property(adapter_module):
    results = _results(adapter_module, "good")
    assert set(results) == {"candidate_config_validation", "candidate_logging_path", "checkpoint_resume_bitwise",
                            "checkpoint_full_disk_reported", "checkpoint_full_disk_keeps_previous",
                            "checkpoint_crash_keeps_previous", "checkpoint_unwritable_dir_reported"}
    assert {s: r.verdict for s, r in results.items() if r.verdict != "pass"} == {}
    assert all(r.metrics["audited"] == "candidate" for r in results.values())
    assert results["candidate_logging_path"].metrics["examples_run"] == 25
    assert "No space left" in results["checkpoint_full_disk_reported"].summary


def test_each_planted_defect_is_named(adapter_module):
    adapter_module.make_config = padding_make_config
    results = _results(adapter_module, "sloppy")
    verdicts = {s: r.verdict for s, r in results.items()}
    assert verdicts == {"candidate_config_validation": "fail", "candidate_logging_path": "fail",
                        "checkpoint_resume_bitwise": "fail", "checkpoint_full_disk_reported": "pass",
                        "checkpoint_full_disk_keeps_previous": "fail", "checkpoint_crash_keeps_previous": "fail",
                        "checkpoint_unwritable_dir_reported": "pass"}
    config = results["candidate_config_validation"].metrics["findings"]
    assert any("silently accepted" in f["exception"] for f in config)
    assert "log(metrics, step=" in results["candidate_logging_path"].metrics["findings"][0]["exception"]
    assert "resuming from the step-2 checkpoint differs" in results["checkpoint_resume_bitwise"].summary
    assert "previous checkpoint was destroyed" in results["checkpoint_crash_keeps_previous"].summary


def test_absent_hooks_are_not_measured_with_the_reason(adapter_module):
    del adapter_module.make_config
    adapter_module.bare = lambda config, spec, seed: MultiActorTrainer(config, spec, seed)
    adapter_module.bare.__module__ = "hooked_adapter"
    results = list(run_hooks(ALGO, "hooked_adapter:bare", adapter_module.bare, 5))
    assert [(r.subject, r.verdict, r.summary) for r in results] == [
        ("make_config", "inconclusive", "not measured (adapter has no `make_config`)"),
        ("log", "inconclusive", "not measured (adapter has no `log`)"),
        ("save_checkpoint", "inconclusive", "not measured (adapter has no `save_checkpoint`/`load_checkpoint`)")]


def test_cli_exit_codes(adapter_module, capsys):
    assert main(["hooks", "--algo", ALGO, "--candidate", "hooked_adapter:sloppy", "--examples", "10"]) == 1
    out = capsys.readouterr().out
    assert "hook findings:" in out and "checkpoint_resume_bitwise" in out
    assert main(["hooks", "--algo", ALGO, "--candidate", "hooked_adapter:nope"]) == 2
    assert "--candidate" in capsys.readouterr().err
