"""What ``jax.jit`` would gain for a never-jitted step: measured on the step itself when it is a pure function of
its state, else compared with the reference ReBRAC's jitted update at the same batch size.

Reported as a ratio (seconds per update un-jitted / jitted), never asserted: it tells how much a fix is worth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from checks.jax_profile.targets import JaxTarget, rebrac_target
from checks.jax_profile.timing import seconds_per_call, wait

def _seconds(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    wait(fn())
    holder = JaxTarget(name="jit-gain", step=fn)
    return seconds_per_call(holder, fn, calls, repeats)


def estimate_jit_gain(target: JaxTarget, step_seconds: float | None, calls: int = 5, repeats: int = 3,
                      reference: Callable[[int], JaxTarget] | None = None) -> dict[str, Any]:
    """{method, eager_seconds, jitted_seconds, ratio, detail}: ``pure_step`` eager vs ``jax.jit`` of it when the
    target provides it; otherwise the target's measured ``step_seconds`` vs ``reference(batch_size)``'s jitted step
    (default: the CORL-sized reference ReBRAC). Without either ``pure_step`` or ``batch_size`` it is not measured
    (``ratio`` None, the reason in ``detail``): a comparison at an assumed batch size is off by the batch ratio."""
    if target.pure_step is not None:
        fn, args = target.pure_step()
        jitted = jax.jit(fn)
        eager = _seconds(lambda: fn(*args), calls, repeats)
        compiled = _seconds(lambda: jitted(*args), calls, repeats)
        name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "pure_step")
        return {"method": "pure_step", "eager_seconds": eager, "jitted_seconds": compiled,
                "ratio": eager / compiled if compiled else None,
                "detail": f"jax.jit({name}) of the target's pure_step vs the same function un-jitted"}
    if target.batch_size is None:
        return {"method": "reference", "eager_seconds": step_seconds, "jitted_seconds": None, "ratio": None,
                "detail": "not measured: the target has no pure_step() and declares no batch_size, and the reference "
                          "comparison at an assumed batch size would be off by the ratio of the batch sizes"}
    batch_size = target.batch_size
    make = reference or (lambda b: rebrac_target(updates_per_epoch=1, batch_size=b))
    ref = make(batch_size)
    ref_seconds = _seconds(ref.step, calls, repeats)
    return {"method": "reference", "eager_seconds": step_seconds, "jitted_seconds": ref_seconds,
            "ratio": step_seconds / ref_seconds if step_seconds and ref_seconds else None,
            "detail": f"this step vs the reference ReBRAC's jitted update at batch size {batch_size}; "
                      "different networks: an order of magnitude, not a measurement of jax.jit on this step"}
