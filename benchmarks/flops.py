"""Matrix-multiply FLOPs per training step, counted from the operations themselves, beside the measured times.

On one CPU core these networks are matmul-bound: a step that multiplies twice as many matrices cannot take much less
than twice as long, whatever is batched. The benchmarks record the FLOPs next to each wall time so a ratio can be
read against its floor (``flops_per_step`` / ``flops_per_update`` in ``extra_info``; the summary prints both).

- PyTorch: ``torch.utils.flop_counter.FlopCounterMode`` over real steps (mm, addmm, bmm, baddbmm, …).
- JAX: the ``dot_general`` equations of the function's jaxpr, shapes from their abstract values, recursing into
  nested jaxprs. A ``lax.fori_loop`` body is counted once (the per-update cost); every ``lax.cond`` is resolved to
  one branch (``branch``: ReBRAC's delayed actor update is such a cond), so full and critic-only updates are counted
  separately and averaged over CORL's ``policy_freq`` schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def torch_flops_per_step(step: Callable[[Any], Any], batches: Iterable[Any]) -> float:
    """Mean matmul FLOPs of ``step(batch)`` over ``batches`` (the steps really run)."""
    from torch.utils.flop_counter import FlopCounterMode

    n = 0
    with FlopCounterMode(display=False) as counter:
        for batch in batches:
            step(batch)
            n += 1
    return counter.get_total_flops() / max(n, 1)


def _dot_flops(eqn: Any) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    contracted = 1
    for axis in lhs_contract:
        contracted *= int(lhs[axis])
    out = 1
    for size in eqn.outvars[0].aval.shape:
        out *= int(size)
    return 2 * out * contracted


def jaxpr_flops(jaxpr: Any, branch: int) -> int:
    """``dot_general`` FLOPs of ``jaxpr`` (a ``Jaxpr``), nested jaxprs included, each ``cond`` taken at ``branch``
    (clamped to its number of branches)."""
    from jax.extend import core

    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_flops(eqn)
        elif eqn.primitive.name == "cond":
            branches = eqn.params["branches"]
            total += jaxpr_flops(branches[min(branch, len(branches) - 1)].jaxpr, branch)
        else:
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(sub, core.ClosedJaxpr):
                        total += jaxpr_flops(sub.jaxpr, branch)
                    elif isinstance(sub, core.Jaxpr):
                        total += jaxpr_flops(sub, branch)
    return total


def jax_flops_per_update(fn: Callable[..., Any], args: tuple[Any, ...], policy_freq: int) -> float:
    """Matmul FLOPs of one update of ``fn`` (a step, or an epoch whose ``fori_loop`` body is one update), averaged
    over the delayed-update schedule: one full update (actor and critic, cond branch 1) per ``policy_freq``
    updates, the others critic-only (branch 0)."""
    import jax

    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    full, partial = jaxpr_flops(jaxpr, 1), jaxpr_flops(jaxpr, 0)
    return (full + (policy_freq - 1) * partial) / policy_freq
