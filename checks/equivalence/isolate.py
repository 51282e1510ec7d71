"""Isolated steps (``equivalence --isolate``): before every step the candidate is set to the reference's state, so
each step tests the update rule on its own and a defect cannot hide behind (or be blamed on) an earlier one.

What is synchronised, through the Trainer protocol: the critic, actor0 and target tensors (``load_parameters``, given
a partial mapping), the trainer's private global RNG streams, and — when both trainers expose ``named_tensors()`` and
``optimizers()`` — the optimizer state of every critic/actor0 parameter (Adam moments, step count) and the learning
rate of its param group, matched by canonical name. Only what matches by canonical name *and* shape and dtype is
synchronised (:func:`syncable`): a tensor of another shape (an architecture difference the parameter check reports)
keeps the candidate's own value and optimizer state, so ``--isolate`` never hands a trainer something it could not
hold; what was left is listed once (:class:`SyncPlan`). Not synchronised: counters and schedules inside the trainer
(e.g. TD3's ``total_it``, an LR scheduler's ``last_epoch``); a defect there shows at every step it acts.

JAX trainers (both exposing ``jax_state()`` / ``load_jax_state(state)``, :mod:`multi_actor.jax_trainer`): the
candidate loads the reference's whole update state — PRNG key, actor0's and the critic's online and target
parameters, their optax states and step counts, and the update counter that selects full updates.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: the parameter roles set from the reference before each step (extra actors keep their own state)
SYNCED_ROLES = ("critic/", "actor0/", "target/")


def _shape_dtype(value: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of a parameter as ``parameters()`` gives it (a numpy array, or anything ``np.asarray`` takes)."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    return arr.shape, str(arr.dtype)


def syncable(reference: Mapping[str, Any], candidate: Mapping[str, Any], roles: tuple[str, ...] = SYNCED_ROLES
             ) -> tuple[list[str], dict[str, str]]:
    """The names of ``roles`` both sides hold with the same shape and dtype, and every other name of the reference's
    ``roles`` with why it is left as the candidate has it."""
    same, left = [], {}
    for name, value in reference.items():
        if not name.startswith(roles):
            continue
        if name not in candidate:
            left[name] = "the candidate has no tensor of this name"
            continue
        (rs, rd), (cs, cd) = _shape_dtype(value), _shape_dtype(candidate[name])
        if rs != cs or rd != cd:
            left[name] = f"reference {list(rs)} {rd}, candidate {list(cs)} {cd}"
            continue
        same.append(name)
    return same, left


@dataclass
class SyncPlan:
    """What ``--isolate`` sets before every step: the tensors (``names``) and optimizer states that match, and what
    it leaves (``left``: name -> why), listed once in the result."""

    names: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)
    optimizer_left: dict[str, str] = field(default_factory=dict)

    @classmethod
    def between(cls, reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> SyncPlan:
        names, left = syncable(reference, candidate)
        return cls(names, left)

    def as_dict(self) -> dict[str, Any]:
        return {"synced": len(self.names), "left": dict(self.left), "optimizer_left": dict(self.optimizer_left)}


def _optimizer_params(trainer: Any) -> dict[str, tuple[Any, dict[str, Any], Any]]:
    """Canonical name -> (optimizer, its param group, the live tensor) for every optimized parameter."""
    names = {id(t): n for n, t in trainer.named_tensors().items()}
    out: dict[str, tuple[Any, dict[str, Any], Any]] = {}
    optimizers = trainer.optimizers()
    for opt in (optimizers.values() if isinstance(optimizers, dict) else optimizers):
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) in names:
                    out[names[id(p)]] = (opt, group, p)
    return out


def _state_fits(state: Mapping[str, Any], param: Any) -> bool:
    """Whether every tensor of an optimizer state is a scalar or has ``param``'s shape and dtype."""
    for value in state.values():
        if hasattr(value, "shape") and value.numel() > 1 and (tuple(value.shape) != tuple(param.shape)
                                                               or value.dtype != param.dtype):
            return False
    return True


def sync_optimizers(reference: Any, candidate: Any, left: dict[str, str] | None = None) -> int:
    """Copy the reference's optimizer state and learning rate of every critic/actor0 parameter onto the candidate's
    (by canonical name, where the two parameters and the state's tensors have the same shape and dtype); returns how
    many parameters were synchronised (0 when a side lacks the optional methods). ``left`` collects the names left
    as the candidate has them, with why."""
    if not all(callable(getattr(t, m, None)) for t in (reference, candidate) for m in ("named_tensors", "optimizers")):
        return 0
    ref, cand = _optimizer_params(reference), _optimizer_params(candidate)
    left = {} if left is None else left
    done = 0
    for name, (c_opt, c_group, c_param) in cand.items():
        if name not in ref or not name.startswith(SYNCED_ROLES):
            continue
        r_opt, r_group, r_param = ref[name]
        state = r_opt.state.get(r_param)
        if tuple(r_param.shape) != tuple(c_param.shape) or r_param.dtype != c_param.dtype or \
                (state and not _state_fits(state, c_param)):
            left[name] = (f"optimizer state of reference {list(r_param.shape)} {r_param.dtype}, candidate "
                          f"{list(c_param.shape)} {c_param.dtype}")
            continue
        if state:
            c_opt.state[c_param] = {k: v.detach().clone() if hasattr(v, "detach") else copy.deepcopy(v)
                                    for k, v in state.items()}
        else:
            c_opt.state.pop(c_param, None)
        c_group["lr"] = r_group["lr"]
        done += 1
    return done


def isolate(reference: Any, candidate: Any, plan: SyncPlan) -> None:
    """Set the candidate side (a ``checks.equivalence.Side``) to the reference side's state before a step, as far as
    ``plan`` allows (the candidate's ``params`` then hold the reference's values for the synchronised names)."""
    params = {k: reference.params[k] for k in plan.names}
    if params:
        candidate.call("load_parameters", params)
    candidate.params = {**candidate.params, **params}
    # a shallow copy: a captured state is never changed in place (a trainer's call captures a new one), and a deep
    # copy of Python's 625-int state costs about as much as the rest of the synchronisation
    candidate.iso.rng = replace(reference.iso.rng)
    with candidate.guard("optimizers"):
        sync_optimizers(reference.iso.trainer, candidate.iso.trainer, plan.optimizer_left)
    if all(callable(getattr(t, m, None)) for t in (reference.iso.trainer, candidate.iso.trainer)
           for m in ("jax_state", "load_jax_state")):
        candidate.call("load_jax_state", reference.call("jax_state"))
