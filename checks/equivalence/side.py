"""One trainer of the lock-step run (:class:`Side`): every call into it goes through a guard that turns an exception
into a crash finding naming the side, the phase and the step; the observables it produces after a step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks import HARNESS_DIRS
from checks.equivalence.observables import grad_observables, param_observables
from pogo_audit.core.harness import IsolatedTrainer
from pogo_audit.model.findings import guarded
from pogo_audit.model.protocol import COMPARED_PARAM_ROLES, LOSS_PREFIXES


@dataclass
class Side:
    """One trainer in the lock-step run plus what the harness remembers about it.

    Every call into the trainer goes through :meth:`call` / :meth:`guard`, which turn an exception into a
    :class:`~pogo_audit.model.findings.TrainerCrash` naming this side, the phase (the method) and the current step."""

    iso: IsolatedTrainer
    side: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    step: int | None = None
    #: optimizer observables (:class:`checks.equivalence.optimizer.OptimizerProbe`) when every side supports them;
    #: the ``grad_leak/*`` digests then go to ``leak`` (a hygiene warning) instead of the compared observables
    probe: Any = None
    leak: dict[str, Any] = field(default_factory=dict)
    #: how the localiser snapshots this run before a step (:func:`checks.equivalence.lockstep._snapshot`): deep
    #: copies once their independence was checked, else a forked process
    copies_checked: bool = False
    fork_snapshots: bool = False

    @classmethod
    def build(cls, side: str, factory: Callable[..., Any], config: Any, dataset_spec: Any, seed: int) -> Side:
        with guarded(side, "factory", None, HARNESS_DIRS):
            return cls(IsolatedTrainer(factory, config, dataset_spec, seed), side)

    def guard(self, phase: str) -> AbstractContextManager[None]:
        return guarded(self.side, phase, self.step, HARNESS_DIRS)

    def call(self, method: str, *args: Any) -> Any:
        with self.guard(method):
            return self.iso.call(method, *args)

    def probe_kind(self) -> str | None:
        from checks.equivalence.optimizer import probe_kind

        return probe_kind(self.iso.trainer)

    def attach_probe(self) -> None:
        from checks.equivalence.optimizer import make_probe

        self.probe = make_probe(self.iso.trainer)

    def gradients(self) -> dict[str, Any]:
        """The trainer's ``gradients()`` (a bundle keeps them), {} when it has none."""
        return self.call("gradients") if hasattr(self.iso.trainer, "gradients") else {}

    def observe(self, losses: Mapping[str, Any], full: bool, jax: bool = False, lazy: bool = False
                ) -> dict[str, Any]:
        """The observables after a step (``lazy``: magnitudes as :class:`Deferred`, see :func:`settle_deferred`)."""
        with self.iso.installed() as trainer:
            reads = self._read(trainer)
        return self._observables(losses, full, lazy, *reads)

    def step_and_observe(self, batch: Any, full: bool, lazy: bool = False, compared_only: bool = False
                         ) -> tuple[Any, dict[str, Any]]:
        """``step(batch)``'s output and the observables after it (:meth:`observe`; ``compared_only``: only the
        critic/actor0 losses among them). The trainer's RNG state is swapped in once for the step and the reads
        after it (each swap costs ~0.25 ms, numpy's state alone ~0.1 ms, and would run three times)."""
        with self.iso.installed() as trainer:
            with self.guard("step"):
                out = trainer.step(batch)
            reads = self._read(trainer)
        return out, self._observables(compared_losses(out) if compared_only else out, full, lazy, *reads)

    def _read(self, trainer: Any) -> tuple[dict[str, np.ndarray], dict[str, Any] | None, dict[str, Any] | None]:
        """``parameters()``, ``rng_digests()`` and ``gradients()`` (those the trainer has), in that order."""
        with self.guard("parameters"):
            params = trainer.parameters()
        rng = grads = None
        if hasattr(trainer, "rng_digests"):
            with self.guard("rng_digests"):
                rng = trainer.rng_digests()
        if hasattr(trainer, "gradients"):
            with self.guard("gradients"):
                grads = trainer.gradients()
        return params, rng, grads

    def _observables(self, losses: Mapping[str, Any], full: bool, lazy: bool, params: dict[str, np.ndarray],
                     rng: Mapping[str, Any] | None, grads: Mapping[str, Any] | None) -> dict[str, Any]:
        self.params = params
        obs: dict[str, Any] = {k: v for k, v in losses.items()}
        obs.update(param_observables(params, lazy))
        if full:
            obs.update({f"params/{k}/full": np.asarray(v) for k, v in params.items()
                        if k.startswith(COMPARED_PARAM_ROLES)})
        obs.update(self.iso.rng_digests())
        if rng is not None:
            obs.update(rng)
        if grads is not None:
            observed = grad_observables(grads, lazy)
            if self.probe is None:
                obs.update(observed)
            else:
                self.leak = observed
        if self.probe is not None:
            obs.update(self.probe.observe(lazy))
        return obs


def compared_losses(obs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obs.items() if k.startswith(LOSS_PREFIXES)}
