"""Isolated steps (``equivalence --isolate``): before every step the candidate is set to the reference's state, so
each step tests the update rule on its own and a defect cannot hide behind (or be blamed on) an earlier one.

What is synchronised, through the Trainer protocol: the critic, actor0 and target tensors (``load_parameters``), the
trainer's private global RNG streams, and — when both trainers expose ``named_tensors()`` and ``optimizers()`` — the
optimizer state of every critic/actor0 parameter (Adam moments, step count) and the learning rate of its param group,
matched by canonical name. Not synchronised: counters and schedules inside the trainer (e.g. TD3's ``total_it``, an
LR scheduler's ``last_epoch``); a defect there shows at every step it acts.

JAX trainers (both exposing ``jax_state()`` / ``load_jax_state(state)``, :mod:`multi_actor.jax_trainer`): the
candidate loads the reference's whole update state — PRNG key, actor0's and the critic's online and target
parameters, their optax states and step counts, and the update counter that selects full updates.
"""

from __future__ import annotations

import copy
from typing import Any

#: the parameter roles set from the reference before each step (extra actors keep their own state)
SYNCED_ROLES = ("critic/", "actor0/", "target/")


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


def sync_optimizers(reference: Any, candidate: Any) -> int:
    """Copy the reference's optimizer state and learning rate of every critic/actor0 parameter onto the candidate's
    (by canonical name); returns how many parameters were synchronised (0 when a side lacks the optional methods)."""
    if not all(callable(getattr(t, m, None)) for t in (reference, candidate) for m in ("named_tensors", "optimizers")):
        return 0
    ref, cand = _optimizer_params(reference), _optimizer_params(candidate)
    done = 0
    for name, (c_opt, c_group, c_param) in cand.items():
        if name not in ref or not name.startswith(SYNCED_ROLES):
            continue
        r_opt, r_group, r_param = ref[name]
        state = r_opt.state.get(r_param)
        if state:
            c_opt.state[c_param] = {k: v.detach().clone() if hasattr(v, "detach") else copy.deepcopy(v)
                                    for k, v in state.items()}
        else:
            c_opt.state.pop(c_param, None)
        c_group["lr"] = r_group["lr"]
        done += 1
    return done


def isolate(reference: Any, candidate: Any) -> None:
    """Set the candidate side (a ``checks.equivalence.Side``) to the reference side's state before a step."""
    params = {k: v for k, v in reference.params.items() if k.startswith(SYNCED_ROLES)}
    candidate.call("load_parameters", params)
    candidate.iso.rng = copy.deepcopy(reference.iso.rng)
    with candidate.guard("optimizers"):
        sync_optimizers(reference.iso.trainer, candidate.iso.trainer)
    if all(callable(getattr(t, m, None)) for t in (reference.iso.trainer, candidate.iso.trainer)
           for m in ("jax_state", "load_jax_state")):
        candidate.call("load_jax_state", reference.call("jax_state"))
