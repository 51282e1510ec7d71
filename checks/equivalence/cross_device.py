"""Auditing across devices (``--reference-device cpu --candidate-device cuda``): the reference is run on both devices
with shared random draws to measure the float32 drift of every observable group, then the candidate is judged with
a per-group tolerance derived from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from checks.equivalence.lockstep import run_equivalence
from checks.equivalence.observables import OBSERVABLE_GROUPS
from checks.equivalence.options import EquivalenceOptions
from pogo_audit.core.compare import DEFAULT_ATOL, DEFAULT_RTOL
from pogo_audit.model.results import INCONCLUSIVE, PASS, CheckResult


#: the cross-device tolerance of a group is this many times the largest float32 drift measured for it
DRIFT_FACTOR = 10.0


#: observable groups whose cross-device tolerance is derived from the measured drift (digests stay exact)
DRIFT_GROUPS = tuple(g.name for g in OBSERVABLE_GROUPS if g.drift)


_MEASURE_ONLY = 1e300


def on_device(factory: Callable[..., Any], device: str, cpu_draws: bool) -> Callable[..., Any]:
    """``factory`` building its trainer on ``device`` (and, with ``cpu_draws``, drawing its global-stream random
    numbers on the CPU generator, see :func:`pogo_audit.core.harness.cpu_drawn_randomness`)."""
    from pogo_audit.core.harness import CPUDrawnTrainer

    def build(config: Any, dataset_spec: Any, seed: int) -> Any:
        trainer = factory(dataclasses.replace(config, device=device), dataset_spec, seed)
        return CPUDrawnTrainer(trainer) if cpu_draws else trainer

    return build


def cross_device_equivalence(algo: str, config: Any, dataset_spec: Any, make_buffer: Callable[[], Any],
                             reference_factory: Callable[..., Any], candidate_factory: Callable[..., Any],
                             options: EquivalenceOptions, devices: tuple[str, str],
                             progress: Callable[[int], None] | None = None,
                             labels: tuple[str, str] = ("reference", "candidate"), batch_size: int = 256
                             ) -> CheckResult:
    """Reference on ``devices[0]`` vs candidate on ``devices[1]`` (e.g. ``("cpu", "cuda")``).

    Every global-stream draw of the candidate-device trainers is made on the CPU generator, so generator differences
    cannot pass for a bug. First the reference is run on both devices (same batches, same draws) to measure the
    float32 drift of every observable group; then the candidate is judged in tolerance mode with, per group,
    ``atol = DRIFT_FACTOR × measured max |diff|`` (at least the default atol) and the default rtol. RNG digests stay
    exact: if the reference's two runs differ there, the draws could not be shared and the result is inconclusive.
    ``make_buffer()`` gives a fresh buffer that samples the same batches each time.
    """
    ref_device, cand_device = devices
    config = dataclasses.replace(config, device=cand_device)
    reference = on_device(reference_factory, ref_device, cpu_draws=False)
    calibration = dataclasses.replace(options, mode="tolerance", rtol=_MEASURE_ONLY, atol=_MEASURE_ONLY,
                                      self_check=False, chain_oracle=False, bundle_dir=None, group_tolerances=None)
    drift_run = run_equivalence(algo, config, dataset_spec, make_buffer(), reference,
                                on_device(reference_factory, cand_device, cpu_draws=True), calibration,
                                labels=(f"reference on {ref_device}", f"reference on {cand_device}"),
                                batch_size=batch_size)
    drift = {r["group"]: {"max_abs": r["max_abs"], "max_rel": r["max_rel"]} for r in drift_run.details}
    info: dict[str, Any] = {"reference_device": ref_device, "candidate_device": cand_device,
                            "drift_factor": DRIFT_FACTOR, "measured_drift": drift}
    if drift_run.verdict != PASS:
        d = drift_run.first_divergence
        where = f" ({d.observable} differs at step {d.step})" if d is not None else f" ({drift_run.summary})"
        return CheckResult(check="equivalence", subject=algo, verdict=INCONCLUSIVE,
                           steps_compared=drift_run.steps_compared, first_divergence=d,
                           summary=f"inconclusive: the reference on {ref_device} and on {cand_device} do not share "
                                   f"their random draws{where}, so no cross-device tolerance can be derived",
                           metrics={"mode": "tolerance", "cross_device": info, "reference": labels[0],
                                    "candidate": labels[1], "device": cand_device},
                           details=drift_run.details, seconds=drift_run.seconds)
    tolerances = {g: (DEFAULT_RTOL, max(DEFAULT_ATOL, DRIFT_FACTOR * drift[g]["max_abs"]))
                  for g in DRIFT_GROUPS if g in drift}
    info["tolerances"] = {g: {"rtol": r, "atol": a} for g, (r, a) in tolerances.items()}
    judged = dataclasses.replace(options, mode="tolerance", group_tolerances=tolerances, tolerance_fallback=False)
    result = run_equivalence(algo, config, dataset_spec, make_buffer(), reference,
                             on_device(candidate_factory, cand_device, cpu_draws=True), judged, progress,
                             labels, batch_size)
    result.metrics["cross_device"] = info
    widest = max(tolerances.items(), key=lambda kv: kv[1][1]) if tolerances else None
    if widest is not None:
        result.summary += (f"; {ref_device} vs {cand_device} with shared random draws, tolerance per group = "
                           f"{DRIFT_FACTOR:g} × the measured float32 drift of the reference (widest: {widest[0]} "
                           f"atol {widest[1][1]:.2g})")
    return result
