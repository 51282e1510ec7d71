"""Equivalence of a candidate trainer's critic and actor0 with the single-actor reference, step by step.

Both trainers are built by ``factory(config, dataset_spec, seed)`` with the same seed, each with a private copy of
the global RNG state (:class:`pogo_audit.core.harness.IsolatedTrainer`); every batch is sampled once and given to both.
At step 0 and after every step the harness compares the canonical observables (:mod:`.observables`: critic/actor0
losses, parameter digests, RNG digests, gradient leaks, the W2 chain against an independent oracle, optimizer state,
gradients used, evaluation, the batch). The reference is run twice (its twin runs the first ``self_check_steps``
steps on the CPU) so that a nondeterministic reference yields "inconclusive", never a false "not equivalent"; where
the run allows it the reference runs in a worker process (:mod:`.worker`). Modes: ``bitwise`` and ``tolerance``.

Modules, each one concept, in dependency order: :mod:`.observables` (vocabulary, groups, digests; a leaf),
:mod:`.options`, :mod:`.compare` (the comparator and the parameter pre-check), :mod:`.side` (one trainer, guarded),
:mod:`.optimizer` (optimizer probes, gradient hygiene), :mod:`.evaluation` (the evaluation audit), :mod:`.extras`
(both, per step), :mod:`.isolate`, :mod:`.oracle` (the W2 chain oracle), :mod:`.worker` (the reference in a worker
process), :mod:`.verdict` (what a run established → its result), :mod:`.lockstep` (the driver), :mod:`.cross_device`,
:mod:`.jax_audit` (ReBRAC), :mod:`.command` (the CLI command and the report stage).
"""

from checks.equivalence.command import equivalence, equivalence_for_algo, run_command, suite_stage
from checks.equivalence.compare import Comparator, parameter_check
from checks.equivalence.cross_device import cross_device_equivalence
from checks.equivalence.lockstep import Localiser, run_equivalence
from checks.equivalence.observables import GROUPS, OBSERVABLE_GROUPS, ObservableGroup, group_of
from checks.equivalence.options import EquivalenceOptions
from checks.equivalence.side import Side

__all__ = ["GROUPS", "OBSERVABLE_GROUPS", "Comparator", "EquivalenceOptions", "Localiser", "ObservableGroup", "Side",
           "cross_device_equivalence", "equivalence", "equivalence_for_algo", "group_of", "parameter_check",
           "run_command", "run_equivalence", "suite_stage"]
