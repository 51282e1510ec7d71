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

#: batch size assumed for the reference comparison when the target does not declare ``batch_size``
DEFAULT_BATCH_SIZE = 256


def _seconds(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    wait(fn())
    holder = JaxTarget(name="jit-gain", step=fn)
    return seconds_per_call(holder, fn, calls, repeats)


def estimate_jit_gain(target: JaxTarget, step_seconds: float | None, calls: int = 5, repeats: int = 3,
                      reference: Callable[[int], JaxTarget] | None = None) -> dict[str, Any]:
    """{method, eager_seconds, jitted_seconds, ratio, detail}: ``pure_step`` eager vs ``jax.jit`` of it when the
    target provides it; otherwise the target's measured ``step_seconds`` vs ``reference(batch_size)``'s jitted step
    (default: the CORL-sized reference ReBRAC)."""
    if target.pure_step is not None:
        fn, args = target.pure_step()
        jitted = jax.jit(fn)
        eager = _seconds(lambda: fn(*args), calls, repeats)
        compiled = _seconds(lambda: jitted(*args), calls, repeats)
        name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "pure_step")
        return {"method": "pure_step", "eager_seconds": eager, "jitted_seconds": compiled,
                "ratio": eager / compiled if compiled else None,
                "detail": f"jax.jit({name}) of the target's pure_step vs the same function un-jitted"}
    batch_size = target.batch_size or DEFAULT_BATCH_SIZE
    make = reference or (lambda b: rebrac_target(updates_per_epoch=1, batch_size=b))
    ref = make(batch_size)
    ref_seconds = _seconds(ref.step, calls, repeats)
    assumed = "" if target.batch_size else " (assumed: the target declares no batch_size)"
    return {"method": "reference", "eager_seconds": step_seconds, "jitted_seconds": ref_seconds,
            "ratio": step_seconds / ref_seconds if step_seconds and ref_seconds else None,
            "detail": f"this step vs the reference ReBRAC's jitted update at batch size {batch_size}{assumed}; "
                      "different networks: an order of magnitude, not a measurement of jax.jit on this step"}
