"""Property of the equivalence harness: a broken candidate always ends in a classified finding (verdict ``fail``)
or a one-line usage error — never a traceback, never "equivalent", never the harness's own ``error``, never an
"inconclusive" blamed on the reference."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from checks.fuzz.strategies.candidates import CandidateCase, Defect
from checks.fuzz.violations import fail

ALGO = "td3_bc"
STEPS = 3


@functools.lru_cache(maxsize=1)
def _setup() -> tuple[Any, Any, int]:
    """Config, prepared data and batch size of the audited algorithm (loaded once per process)."""
    from multi_actor.algorithms import get_algorithm
    from multi_actor.config import build_config
    from multi_actor.loop import prepare_data

    config = build_config(None, [], algo=ALGO, seed=0)
    algorithm = get_algorithm(ALGO)
    return config, prepare_data(config, algorithm), 64


class BrokenCandidate:
    """The reference trainer behind the protocol, with the case's defects."""

    def __init__(self, inner: Any, defects: tuple[Defect, ...]):
        self.inner = inner
        self.defects = defects
        self.steps = 0

    def _maybe_raise(self, phase: str) -> None:
        for d in self.defects:
            if d.kind == "raise" and d.phase == phase and (phase != "step" or d.step == self.steps):
                raise d.error(f"planted {d.error.__name__} in {phase}")  # type: ignore[misc]

    def step(self, batch: Any) -> dict[str, Any]:
        self.steps += 1
        self._maybe_raise("step")
        for d in self.defects:
            if d.kind == "mutate_batch" and d.step == self.steps:
                batch[1].mul_(0.5)
        out = dict(self.inner.step(batch))
        for d in self.defects:
            if d.kind == "odd_loss" and d.step == self.steps:
                out[next(iter(k for k in out if k.startswith("critic/")))] = d.value
            if d.kind == "drop_loss":
                out = {k: v for k, v in out.items() if not k.startswith("critic/")}
        return out

    def _param_defect(self, params: dict[str, Any]) -> dict[str, Any]:
        for d in self.defects:
            if not d.kind.endswith("_param"):
                continue
            index = d.value[0] if isinstance(d.value, tuple) else d.value
            names = sorted(params)
            name = names[index % len(names)]
            if d.kind == "drop_param":
                params.pop(name)
            elif d.kind == "rename_param":
                params[name + "_renamed"] = params.pop(name)
            elif d.kind == "extra_param":
                params[name.rsplit("/", 1)[0] + "/extra.weight"] = np.zeros(3, dtype=np.float32)
            elif d.kind == "reshape_param":
                params[name] = np.asarray(params[name]).reshape(-1)[:-1] if np.asarray(params[name]).size > 1 \
                    else np.zeros(2, dtype=np.float32)
            elif d.kind == "retype_param":
                params[name] = np.asarray(params[name]).astype(d.value[1])
            elif d.kind == "nan_param":
                params[name] = np.full_like(np.asarray(params[name], dtype=np.float32), np.nan)
            elif d.kind == "odd_param":
                params[name] = d.value[1]
        return params

    def parameters(self) -> dict[str, Any]:
        self._maybe_raise("parameters")
        return self._param_defect(dict(self.inner.parameters()))

    def load_parameters(self, params: Mapping[str, Any]) -> None:
        self._maybe_raise("load_parameters")
        self.inner.load_parameters(params)

    def gradients(self) -> dict[str, Any]:
        self._maybe_raise("gradients")
        return self.inner.gradients()


def broken_factory(case: CandidateCase) -> Callable[..., Any]:
    from multi_actor.trainer import reference_factory

    def factory(config: Any, spec: Any, seed: int) -> BrokenCandidate:
        for d in case.defects:
            if d.kind == "raise" and d.phase == "factory":
                raise d.error(f"planted {d.error.__name__} in factory")  # type: ignore[misc]
        return BrokenCandidate(reference_factory(config, spec, seed), case.defects)

    return factory


def harmless(case: CandidateCase) -> bool:
    """Cases whose defects cannot be observed by construction (e.g. a raise in load_parameters without
    --sync-init, which never calls it): judged by the other defects only."""
    return all(d.kind == "raise" and d.phase == "load_parameters" and not case.sync_init for d in case.defects)


def check_broken_candidate(case: CandidateCase) -> None:
    """Run the harness on the broken candidate for a few steps and classify how it ended."""
    from checks.equivalence import EquivalenceOptions, run_equivalence
    from pogo_audit.core.loading import CheckedFactory
    from multi_actor.trainer import reference_factory
    from pogo_audit.runtime.data import ReplayBuffer
    from pogo_audit.runtime.errors import PogoAuditError

    config, data, batch_size = _setup()
    options = EquivalenceOptions(steps=STEPS, seed=0, self_check=True, bundle_dir=None, chain_oracle=False,
                                 sync_init=case.sync_init, full_every=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_equivalence(ALGO, config, data.spec, ReplayBuffer(data.processed, 1), reference_factory,
                                 CheckedFactory(broken_factory(case), "fuzz:broken", "--candidate"), options,
                                 batch_size=batch_size)
    except PogoAuditError as exc:
        if "\n" in str(exc):
            fail(f"usage error over several lines: {exc}")
        return
    finally:
        torch.set_num_threads(threads)
    if harmless(case):
        if result.verdict not in ("pass", "fail"):
            fail(f"a candidate with only an unreachable defect ended {result.verdict}: {result.summary}")
        return
    if result.verdict != "fail":
        fail(f"broken candidate judged {result.verdict!r}: {result.summary}")
    if "crash" in result.metrics:
        crash = result.metrics["crash"]
        if crash["side"] != "candidate":
            fail(f"the candidate's defect was blamed on the {crash['side']}: {result.summary}")
