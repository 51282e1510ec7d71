"""Optimizer, schedule and consumed-gradient observables of a trainer, per canonical parameter.

For a trainer with the optional protocol methods ``named_tensors()`` (canonical name -> live tensor) and
``optimizers()`` (label -> ``torch.optim.Optimizer`` of critic/actor0), every optimizer parameter is mapped to its
canonical name by identity, so the observables do not depend on how parameters are grouped into optimizers (one Adam
over both critics compares with CORL's two):

* ``optim/<name>/lr``: the learning rate of the parameter's group (a schedule never stepped differs at step 1);
* ``optim/<name>/step``: the optimizer's step count for the parameter;
* ``optim/<name>/<state>/{sum,hash}``: digests of every tensor of its optimizer state (Adam: ``exp_avg``,
  ``exp_avg_sq``);
* ``grad_used/<name>/{l2,hash}``: the gradients the optimizer consumed, captured by a step pre-hook at the moment it
  steps (all of them, in order, when it steps more than once per training step).

A ``.grad`` left on a parameter after its optimizer stepped (``grad_leak/*``) that never reaches an optimizer step
is a hygiene warning, not a failure, once these are measured: :class:`Hygiene` compares it on the side.
The temperature of SAC-N/EDAC/CQL (``log_alpha``) is a parameter with its own optimizer, so it is covered as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from checks.equivalence.compare import Comparator
from checks.equivalence.observables import l2_norm, magnitude, total
from pogo_audit.runtime.digest import array_digest

#: canonical roles whose optimizers are observed (targets are not optimized)
OPTIMIZED_ROLES = ("critic/", "actor0/")


def supports_optimizers(trainer: Any) -> bool:
    """True when ``trainer`` implements both optional methods the observables need."""
    return callable(getattr(trainer, "named_tensors", None)) and callable(getattr(trainer, "optimizers", None))


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


class OptimizerProbe:
    """Per-parameter optimizer observables of one trainer; installs a step pre-hook on each of its optimizers."""

    def __init__(self, trainer: Any):
        named = trainer.named_tensors()
        self.names = {id(t): name for name, t in named.items() if name.startswith(OPTIMIZED_ROLES)}
        self.optimizers = dict(trainer.optimizers())
        self.used: dict[str, list[np.ndarray]] = {}
        self.handles = [opt.register_step_pre_hook(self._capture) for opt in self.optimizers.values()]
        self.observed = 0

    def _params(self, optimizer: Any) -> list[tuple[str, Any, Mapping[str, Any]]]:
        """``(canonical name, parameter, its group)`` of every named parameter of ``optimizer``."""
        return [(self.names[id(p)], p, group) for group in optimizer.param_groups for p in group["params"]
                if id(p) in self.names]

    def _capture(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        for name, p, _ in self._params(optimizer):
            grad = np.zeros(tuple(p.shape), np.float32) if p.grad is None else _numpy(p.grad).copy()
            self.used.setdefault(name, []).append(grad)

    def observe(self, lazy: bool = False) -> dict[str, Any]:
        """The optimizer observables now, and the gradients consumed since the last call (then forgotten). The
        first call (step 0, before any optimizer step, when there is no optimizer state) returns nothing: they are
        compared from step 1. ``lazy``: sums and norms as :class:`checks.equivalence.Deferred`."""
        self.observed += 1
        out: dict[str, Any] = {}
        if self.observed == 1:
            return out
        for optimizer in self.optimizers.values():
            for name, p, group in self._params(optimizer):
                state = optimizer.state.get(p, {})
                step = state.get("step", 0)
                tensors = {k: _numpy(v) for k, v in state.items() if k != "step" and hasattr(v, "detach")}
                out.update(state_observables(name, float(step.item() if hasattr(step, "item") else step), tensors,
                                             float(group["lr"]), lazy))
        for name, grads in self.used.items():
            flat = np.concatenate([g.ravel() for g in grads])
            out[f"grad_used/{name}/l2"] = magnitude(l2_norm, flat, f"grad_used/{name}/hash", lazy)
            out[f"grad_used/{name}/hash"] = array_digest(flat)
        self.used = {}
        return out


def state_observables(name: str, step: float, tensors: Mapping[str, np.ndarray],
                      lr: float | None = None, lazy: bool = False) -> dict[str, Any]:
    """``optim/<name>/{lr,step}`` and ``optim/<name>/<state>/{sum,hash}`` of one parameter's optimizer state
    (``lazy``: sums as :class:`checks.equivalence.Deferred`)."""
    key = f"optim/{name}"
    out: dict[str, Any] = {} if lr is None else {f"{key}/lr": lr}
    out[f"{key}/step"] = float(step)
    for k, arr in sorted(tensors.items()):
        out[f"{key}/{k}/sum"] = magnitude(total, np.asarray(arr), f"{key}/{k}/hash", lazy)
        out[f"{key}/{k}/hash"] = array_digest(np.asarray(arr))
    return out


class StateProbe:
    """Optimizer observables of a trainer that reports its optimizer state itself: ``optimizer_state()`` ->
    ``{canonical param: {"step": int, "<state>": array, ...}}`` (the JAX trainers: optax Adam's count, ``mu`` as
    ``exp_avg`` and ``nu`` as ``exp_avg_sq``). Jitted updates cannot be hooked, so no ``grad_used/*`` here; optax's
    constant learning rate is not part of its state."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.observed = 0

    def observe(self, lazy: bool = False) -> dict[str, Any]:
        self.observed += 1
        out: dict[str, Any] = {}
        if self.observed == 1:  # step 0, as OptimizerProbe
            return out
        for name, state in self.trainer.optimizer_state().items():
            out.update(state_observables(name, state["step"], {k: v for k, v in state.items() if k != "step"},
                                         lazy=lazy))
        return out


def probe_kind(trainer: Any) -> str | None:
    """The kind of probe ``trainer`` supports: "optimizers" (``named_tensors`` + ``optimizers``),
    "optimizer_state", or None."""
    if supports_optimizers(trainer):
        return "optimizers"
    return "optimizer_state" if callable(getattr(trainer, "optimizer_state", None)) else None


def make_probe(trainer: Any) -> OptimizerProbe | StateProbe | None:
    """The probe a trainer supports (see :func:`probe_kind`), None otherwise."""
    kind = probe_kind(trainer)
    return OptimizerProbe(trainer) if kind == "optimizers" else StateProbe(trainer) if kind else None


def attach_probes(sides: list[Any]) -> bool:
    """Give every side (``Side`` of the equivalence harness or its worker's proxy, None skipped) its probe when all
    of their trainers support one, of the same kind; True when they were attached. One side without would make
    every optimizer observable look absent, so then none is measured."""
    present = [s for s in sides if s is not None]
    kinds = {s.probe_kind() for s in present}
    if None in kinds or len(kinds) != 1:
        return False
    for side in present:
        side.attach_probe()
    return True


class Hygiene:
    """``grad_leak/*`` compared on the side: a difference is a warning (the optimizers consumed the same gradients,
    or the ``gradients used`` group fails on its own)."""

    def __init__(self, options: Any) -> None:
        """``options``: the run's :class:`~checks.equivalence.EquivalenceOptions` (its mode and tolerances)."""
        self.comp = Comparator(options.mode, options.rtol, options.atol, options.group_tolerances)

    def compare(self, step: int, ref: Mapping[str, Any], cand: Mapping[str, Any]) -> None:
        self.comp.compare(step, ref, cand)

    def warnings(self) -> list[dict[str, Any]]:
        """One warning for the first ``.grad`` that differs, if any."""
        d = self.comp.first
        if d is None:
            return []
        return [{"group": "grad leak", "step": d.step, "observable": d.observable,
                 "message": f"hygiene: {d.observable} differs from step {d.step} on (a .grad left after the "
                            "optimizer step); the gradients the optimizers consumed match"}]

    def rows(self, steps_total: int) -> list[dict[str, Any]]:
        """The ``grad leak`` table row, verdict ``warning`` when a ``.grad`` differs."""
        rows = self.comp.rows(steps_total)
        for row in rows:
            if row["verdict"] != "pass":
                row["verdict"] = "warning"
        return rows
