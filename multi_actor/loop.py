"""The training loop of ``pogo-audit train``: data → buffer → trainer → log / evaluate / checkpoint / resume.

A resumed run is bitwise identical to an uninterrupted one: the checkpoint holds the trainer's full state, the
global RNG states (the CUDA generators' too), the buffer generator and the step; the JSONL log drops records written
after the checkpoint. Checkpoints hold CPU tensors, so a run may resume on another device (``device`` is the one
config field allowed to differ); bitwise resumption is promised on the device that wrote the checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multi_actor.algorithms import TorchAlgorithm, get_algorithm
from multi_actor.checkpoint import load_checkpoint, save_checkpoint
from multi_actor.config import MultiActorConfig, from_dict
from multi_actor.logger import RunLogger, truncate_after
from multi_actor.trainer import multi_actor_factory
from pogo_audit.runtime.data import DatasetSpec, ReplayBuffer, env_max_action, load_transitions, preprocess
from pogo_audit.runtime.errors import EXIT_CHECK_FAILED, InputError, PogoAuditError
from pogo_audit.runtime.io import atomic_write_text
from pogo_audit.runtime.seeding import BUFFER_OFFSET, GlobalRNGState, derived_seed

LOSS_PREFIXES = ("critic/", "actor0/", "actor")


class TrainingDiverged(PogoAuditError):
    """A loss became NaN/Inf; the message names the step and the key."""

    exit_code = EXIT_CHECK_FAILED


class CheckpointError(PogoAuditError):
    """A checkpoint could not be written; the message names the file and the reason."""


@dataclass
class PreparedData:
    processed: dict[str, np.ndarray]
    spec: DatasetSpec
    state_mean: np.ndarray
    state_std: np.ndarray


def prepare_data(cfg: MultiActorConfig, algorithm: TorchAlgorithm | None = None) -> PreparedData:
    """Load the Minari dataset and apply the base algorithm's CORL preprocessing."""
    algorithm = algorithm or get_algorithm(cfg.algo)
    base_cfg = algorithm.base_config(cfg.base)
    transitions = load_transitions(cfg.dataset)
    rule, kwargs = algorithm.reward_rule(base_cfg)
    processed, pre = preprocess(transitions, algorithm.normalize_states(base_cfg), rule, **kwargs)
    spec = DatasetSpec.from_transitions(transitions, env_max_action(cfg.dataset), pre.state_mean, pre.state_std)
    return PreparedData(processed, spec, pre.state_mean, pre.state_std)


@dataclass
class RunSummary:
    out_dir: Path
    steps: int
    resumed_from: int
    seconds: float
    last_eval: dict[str, float] = field(default_factory=dict)
    eval_count: int = 0


def _run_dir(cfg: MultiActorConfig) -> Path:
    return Path(cfg.out_dir or f"runs/{cfg.algo}-a{cfg.num_actors}-s{cfg.seed}")


def _check_finite(step: int, log: dict[str, Any]) -> None:
    for key, value in log.items():
        if key.startswith(LOSS_PREFIXES) and isinstance(value, float) and not math.isfinite(value):
            raise TrainingDiverged(f"training diverged at step {step}: {key} = {value}")


def train(cfg: MultiActorConfig, resume: bool = False, progress: Callable[[int, int], None] | None = None,
          on_event: Callable[[str], None] | None = None) -> RunSummary:
    """Run (or resume) a multi-actor training run described by ``cfg``."""
    t0 = time.perf_counter()
    cfg = cfg.resolved()
    out = _run_dir(cfg)
    ckpt_path, log_path, cfg_path = out / "checkpoint.pt", out / "metrics.jsonl", out / "config.yaml"
    state = None
    if resume:
        state = load_checkpoint(ckpt_path)
        saved = from_dict({**state["config"], "device": cfg.device}).resolved()
        if saved.to_dict() != cfg.to_dict():
            diff = sorted(k for k, v in cfg.to_dict().items() if saved.to_dict().get(k) != v)
            raise InputError(f"--resume: config differs from the checkpoint's in {', '.join(diff)} ({ckpt_path})")
    elif ckpt_path.exists():
        raise InputError(f"{ckpt_path} exists; pass --resume to continue that run or choose another --out-dir")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, cfg.to_yaml())

    algorithm = get_algorithm(cfg.algo)
    data = prepare_data(cfg, algorithm)
    base_cfg = algorithm.base_config(cfg.base)
    batch_size = cfg.batch_size or algorithm.batch_size(base_cfg)
    buffer = ReplayBuffer(data.processed, derived_seed(cfg.seed, BUFFER_OFFSET))
    trainer = multi_actor_factory(cfg, data.spec, cfg.seed)
    if cfg.eval_freq:
        try:  # fail before training, not at the first evaluation
            trainer.evaluator = trainer.evaluator_factory()
        except Exception as exc:  # gymnasium / mujoco raise many types; the message is what the user needs
            raise InputError(f"evaluation env of dataset {cfg.dataset!r} cannot be created: {exc}") from None
    evaluator = trainer.evaluator

    start = 0
    if state is not None:
        trainer.load_training_state(state["trainer"])
        buffer.set_state(state["buffer_rng"])
        GlobalRNGState.from_portable(state["rng"]).restore()
        start = int(state["step"])
        truncate_after(log_path, start)

    logger = RunLogger(log_path, cfg.wandb_mode, cfg.wandb_project, cfg.to_dict(), out.name, out)
    summary = RunSummary(out, cfg.steps, start, 0.0)
    try:
        for step in range(start + 1, cfg.steps + 1):
            log = trainer.step(buffer.sample(batch_size))
            _check_finite(step, log)
            evaluated = any(k.startswith("eval/") for k in log)
            while evaluator is not None and evaluator.errors:
                message = evaluator.errors.pop(0)
                logger.event(step, "eval_error", message)
                if on_event is not None:
                    on_event(f"step {step}: evaluation failed: {message}")
            if evaluated:
                summary.eval_count += 1
                summary.last_eval = {k: v for k, v in log.items() if k.startswith("eval/")}
            if evaluated or step % cfg.log_freq == 0 or step == cfg.steps:
                logger.log(step, log)
            if (cfg.checkpoint_freq and step % cfg.checkpoint_freq == 0) or step == cfg.steps:
                try:
                    save_checkpoint(ckpt_path, {
                        "step": step,
                        "config": cfg.to_dict(),
                        "trainer": trainer.training_state(),
                        "rng": GlobalRNGState.capture().to_portable(),
                        "buffer_rng": buffer.get_state(),
                    })
                except OSError as exc:  # disk full, permissions, vanished directory: stop loudly, keep the old one
                    logger.event(step, "checkpoint_error", f"{ckpt_path}: {exc}")
                    raise CheckpointError(f"checkpoint write failed at step {step}: {ckpt_path}: {exc.strerror or exc}"
                                          f" (the previous checkpoint, if any, is intact)") from None
                logger.event(step, "checkpoint", str(ckpt_path))
            if progress is not None:
                progress(step, cfg.steps)
    finally:
        logger.close()
        if evaluator is not None:
            evaluator.close()
    summary.seconds = time.perf_counter() - t0
    return summary
