"""What one equivalence run compares and how (:class:`EquivalenceOptions`), and how many steps its self-check twin
runs."""

from __future__ import annotations

from dataclasses import dataclass

from pogo_audit.core.compare import DEFAULT_ATOL, DEFAULT_RTOL


@dataclass
class EquivalenceOptions:
    steps: int = 300
    seed: int = 0
    batch_size: int | None = None
    mode: str = "bitwise"
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    full_every: int = 100
    self_check: bool = True
    #: on the CPU the self-check twin (the reference built and run a second time) runs steps 1..N (0: every step).
    #: A nondeterministic reference (thread scheduling, an unseeded draw) differs at the step the nondeterminism
    #: acts, in practice from the first steps on; past N the twin's steps — each as costly as the reference's — are
    #: not paid (its process ends). On other devices the twin runs every step: it decides the tolerance fallback.
    #: Critic and actor0 are compared with the reference every step.
    self_check_steps: int = 100
    bundle_dir: str | None = None
    chain_oracle: bool = True
    #: the W2 oracle (``chain/*``) checks steps 1..K, every K-th step and the last step (K <= 1: every step). It
    #: recomputes the extra actors' W2 with POT (tens of ms a step); the defects it exists for — a wrong scale, a
    #: dropped term, a reference actor taken after its update — are in the formula, so they show from the first
    #: steps on, and a defect that starts late is still seen within K steps. Critic and actor0 are compared every step.
    oracle_every: int = 10
    sync_init: bool = False
    #: in bitwise mode, fall back to tolerance mode when the self-check finds the reference not bitwise reproducible
    #: (instead of "inconclusive"); None: on for a CUDA device, off on the CPU (where bitwise is the promise)
    tolerance_fallback: bool | None = None
    #: tolerance mode: (rtol, atol) per observable group instead of ``rtol``/``atol`` (cross-device audits)
    group_tolerances: dict[str, tuple[float, float]] | None = None
    #: fnmatch globs of observables not compared (what a candidate does not log); listed in the result as ignored
    ignore: tuple[str, ...] = ()
    #: call both trainers' ``evaluate(seed, episodes)`` every K steps (0: never), see
    #: :mod:`checks.equivalence.evaluation`
    eval_every: int = 0
    eval_episodes: int = 1
    #: set the candidate to the reference's state before every step (:mod:`checks.equivalence.isolate`)
    isolate: bool = False
    #: replay the step where a distinct finding first shows under tracing and name its line (:mod:`checks.localise`);
    #: None: on with ``isolate``
    localise: bool | None = None
    #: run the reference and its twin in a worker process while this one runs the candidate, where the run allows
    #: it (:func:`checks.equivalence.worker.reference_pair`); None: for runs of at least
    #: :data:`~checks.equivalence.worker.MIN_CONCURRENT_STEPS` steps. The comparison and the verdicts are the same
    concurrent: bool | None = None


def twin_steps(options: EquivalenceOptions, device: str) -> int:
    """How many steps the self-check twin runs (0: every step): ``options.self_check_steps`` on the CPU, every step
    on other devices, where the twin decides whether bitwise comparison holds at all."""
    return options.self_check_steps if device == "cpu" else 0
