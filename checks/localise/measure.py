"""Localisation accuracy on the mutation catalog: mutants are one-line patches of the real code, so the line a
localisation should name is known.

For each mutant the reference and the mutated candidate are driven in lock-step (the equivalence harness's pieces:
isolated global RNG streams, one batch for both, the same compared observables) until the first step whose
observables differ; that step is then replayed under tracing from copies of both trainers as they were before it
(:func:`checks.localise.localise_step`), and the located candidate line is compared with the mutated line.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Any

from checks.equivalence import Comparator, _compared_losses, _Side
from checks.localise.engine import Localisation, localise_step
from pogo_audit.harness import IsolatedTrainer


@dataclass
class MutantLocalisation:
    """One mutant's localisation: the step it was first seen at (None: never within its steps), what the engine
    located, and whether that is the mutated line."""

    mutant: str
    algo: str
    expected: str
    truth: dict[str, Any]
    step: int | None
    diverged: list[str]
    localisation: Localisation | None
    seconds: float

    @property
    def located(self) -> dict[str, Any] | None:
        return self.localisation.location if self.localisation is not None else None

    @property
    def exact(self) -> bool:
        """Whether the located candidate line is the mutated line (same file and line)."""
        loc = self.located
        return loc is not None and (loc["path"], loc["line"]) == (self.truth["path"], self.truth["line"])

    def as_dict(self) -> dict[str, Any]:
        return {"mutant": self.mutant, "algo": self.algo, "expected": self.expected, "truth": self.truth,
                "step": self.step, "diverged": self.diverged[:5], "located": self.located, "exact": self.exact,
                "localisation": None if self.localisation is None else self.localisation.as_dict(),
                "seconds": self.seconds}


def first_divergent_step(reference_factory: Any, candidate_factory: Any, config: Any, dataset_spec: Any,
                         buffer: Any, batch_size: int, steps: int, seed: int = 0
                         ) -> tuple[int | None, list[str], IsolatedTrainer, IsolatedTrainer, Any]:
    """Lock-step until the first step whose compared observables differ (bitwise).

    Returns ``(step, diverged observables, reference, candidate, batch)`` with both trainers in their state just
    before that step (``step`` None and the final trainers when nothing diverged within ``steps``)."""
    ref = _Side(IsolatedTrainer(reference_factory, config, dataset_spec, seed))
    cand = _Side(IsolatedTrainer(candidate_factory, config, dataset_spec, seed))
    comp = Comparator("bitwise", 0.0, 0.0)
    diverged = comp.compare(0, ref.observe({}, full=False), cand.observe({}, full=False))
    if diverged:
        return 0, diverged, ref.iso, cand.iso, None
    batch = None
    for step in range(1, steps + 1):
        batch = buffer.sample(batch_size)
        before = copy.deepcopy(ref.iso), copy.deepcopy(cand.iso)
        obs_ref = ref.observe(_compared_losses(ref.iso.call("step", batch)), full=False)
        obs_cand = cand.observe(cand.iso.call("step", batch), full=False)
        diverged = comp.compare(step, obs_ref, obs_cand)
        if diverged:
            return step, diverged, before[0], before[1], batch
    return None, [], ref.iso, cand.iso, batch


def localise_mutant(mutant: Any, seed: int = 0, actors: int = 3, batch_size: int | None = None) -> MutantLocalisation:
    """Run ``mutant`` (a :class:`checks.mutants.Mutant`, PyTorch) to its first divergence and localise that step."""
    from multi_actor.algorithms import get_algorithm
    from multi_actor.config import build_config
    from multi_actor.loop import prepare_data
    from multi_actor.trainer import reference_factory
    from pogo_audit.data import ReplayBuffer
    from pogo_audit.seeding import BUFFER_OFFSET, derived_seed

    t0 = time.perf_counter()
    cfg = build_config(None, list(mutant.overrides), algo=mutant.algo, num_actors=actors, seed=seed)
    algorithm = get_algorithm(mutant.algo)
    data = prepare_data(cfg, algorithm)
    buffer = ReplayBuffer(data.processed, derived_seed(seed, BUFFER_OFFSET))
    size = batch_size or algorithm.batch_size(algorithm.base_config(cfg.base))
    with warnings.catch_warnings():
        if mutant.quiet:
            warnings.filterwarnings("ignore", message=mutant.quiet)
        step, diverged, ref, cand, batch = first_divergent_step(reference_factory, mutant.factory, cfg, data.spec,
                                                                buffer, size, mutant.steps, seed)
        found = localise_step(ref, cand, batch) if step else None
    return MutantLocalisation(mutant.name, mutant.algo, mutant.expected, mutant.location(), step, diverged, found,
                              time.perf_counter() - t0)


def localisation_accuracy(mutants: list[Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Localise every PyTorch mutant (default: the whole catalog) and measure the share whose located line is the
    mutated line. Mutants caught only by the W2 oracle are listed but not counted: their truth is the oracle, the
    single-actor reference has no step to align them with."""
    from checks.mutants import catalog

    rows = [localise_mutant(m, **kwargs) for m in (mutants if mutants is not None else catalog())
            if m.framework == "torch"]
    counted = [r for r in rows if r.expected != "chain (W2 oracle)"]
    exact = sum(r.exact for r in counted)
    return {"mutants": len(rows), "counted": len(counted), "exact": exact,
            "accuracy": exact / len(counted) if counted else None, "rows": [r.as_dict() for r in rows]}
