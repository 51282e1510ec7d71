"""``pogo-audit equivalence`` and the report's equivalence stage: configs, data and factories for each algorithm, the
run in the algorithm's framework (:data:`FRAMEWORK_RUNNERS`), and a harness failure turned into a result."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

from checks.equivalence.cross_device import cross_device_equivalence
from checks.equivalence.lockstep import run_equivalence
from checks.equivalence.options import EquivalenceOptions
from checks.equivalence.verdict import harness_error
from checks.equivalence.worker import wants_worker
from checks.selection import select_algorithms
from checks.workers import warm_up
from pogo_audit.core.loading import glue_files, load_factory, resolve
from pogo_audit.model import glue
from pogo_audit.model.results import CheckResult
from pogo_audit.runtime import threads
from pogo_audit.runtime.data import ReplayBuffer
from pogo_audit.runtime.errors import MissingHookError, PogoAuditError, UsageError
from pogo_audit.runtime.seeding import BUFFER_OFFSET, derived_seed

#: the equivalence run of each framework of the algorithm registry (``multi_actor.registry.AlgorithmSpec.framework``)
FRAMEWORK_RUNNERS = {"torch": "checks.equivalence.command:equivalence_for_algo",
                     "jax": "checks.equivalence.jax_audit:equivalence_for_rebrac"}


def equivalence_for_algo(algo: str, config: Any, options: EquivalenceOptions,
                         reference: tuple[str, Callable[..., Any]] | None = None,
                         candidate: tuple[str, Callable[..., Any]] | None = None,
                         progress: Callable[[int], None] | None = None,
                         devices: tuple[str, str] | None = None) -> CheckResult:
    """Equivalence on ``config.dataset`` with the base algorithm's preprocessing; defaults compare our reference
    with our multi-actor trainer. A trainer that raises yields verdict ``fail`` with ``metrics["crash"]``; an
    exception outside any trainer call (the harness's own failure) yields verdict ``error`` (:func:`harness_error`).
    ``devices`` = (reference device, candidate device) runs :func:`cross_device_equivalence`."""
    from multi_actor.algorithms import get_algorithm
    from multi_actor.loop import prepare_data
    from multi_actor.trainer import multi_actor_factory, reference_factory

    warm_up_workers(options, str(getattr(config, "device", "cpu")))
    algorithm = get_algorithm(algo)
    data = prepare_data(config, algorithm)

    def make_buffer() -> ReplayBuffer:
        return ReplayBuffer(data.processed, derived_seed(options.seed, BUFFER_OFFSET))

    batch_size = options.batch_size or algorithm.batch_size(algorithm.base_config(config.base))
    ref_label, ref_factory = reference or ("reference_algos (CORL-faithful)", reference_factory)
    cand_label, cand_factory = candidate or ("multi_actor.MultiActorTrainer", multi_actor_factory)
    t0 = time.perf_counter()
    try:
        if devices is not None:
            return cross_device_equivalence(algo, config, data.spec, make_buffer, ref_factory, cand_factory, options,
                                            devices, progress, (ref_label, cand_label), batch_size)
        return run_equivalence(algo, config, data.spec, make_buffer(), ref_factory, cand_factory, options, progress,
                               (ref_label, cand_label), batch_size)
    except PogoAuditError:
        raise
    except Exception as exc:  # not a trainer call (those are crash findings): the harness itself failed
        return harness_error(algo, exc, (ref_label, cand_label), options.mode, time.perf_counter() - t0)


def warm_up_workers(options: EquivalenceOptions, device: str) -> None:
    """Start the reference workers' fork server now when the run will want it: it imports torch in the background
    while this process imports it, prepares the data and builds the candidate (idempotent)."""
    if wants_worker(options, device) and (threads.budget() >= 2 or options.concurrent):
        warm_up()


def equivalence(algo: str, config: Any, options: EquivalenceOptions,
                reference: tuple[str, Callable[..., Any]] | None = None,
                candidate: tuple[str, Callable[..., Any]] | None = None,
                progress: Callable[[int], None] | None = None,
                devices: tuple[str, str] | None = None) -> CheckResult:
    """Equivalence of ``algo`` in the framework the algorithm registry gives it (:data:`FRAMEWORK_RUNNERS`)."""
    from multi_actor import registry

    framework = registry.algorithm(algo).framework
    if framework != "torch":
        if devices is not None:
            raise UsageError(f"--reference-device/--candidate-device: PyTorch algorithms only, not {algo}")
        return resolve(FRAMEWORK_RUNNERS[framework])(config, options, reference, candidate, progress=progress)
    return equivalence_for_algo(algo, config, options, reference, candidate, progress=progress, devices=devices)


def command_config(args: Any, algo: str) -> Any:
    """The multi-actor config of ``algo`` from the command's ``--config``/``--set``/``--actor-types``/... options."""
    from multi_actor.config import build_config

    overrides = [*args.set, *([f"w2_method={args.w2_method}"] if args.w2_method else [])]
    types = [t.strip() for t in args.actor_types.split(",") if t.strip()] if args.actor_types else None
    return build_config(args.config, overrides, types, algo=algo, num_actors=args.actors, dataset=args.dataset,
                        seed=args.seed, device=args.device)


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[CheckResult]:
    """``pogo-audit equivalence``: every selected algorithm (configs and factories validated before the first run)."""
    from multi_actor import registry

    algos = select_algorithms(args.algo, "--algo")
    options = EquivalenceOptions(steps=args.steps, seed=args.seed if args.seed is not None else 0, mode=args.mode,
                                 rtol=args.rtol, atol=args.atol, full_every=args.full_every,
                                 self_check=not args.no_self_check, self_check_steps=args.self_check_steps,
                                 bundle_dir=args.bundle_dir,
                                 sync_init=args.sync_init, ignore=tuple(args.ignore), eval_every=args.eval_every,
                                 eval_episodes=args.eval_episodes, isolate=args.isolate,
                                 oracle_every=args.oracle_every)
    if registry.algorithm(algos[0]).framework == "torch":
        warm_up_workers(options, args.device or "cpu")  # before this process imports torch
    reference = (args.reference, load_factory(args.reference, "--reference")) if args.reference else None
    candidate = (args.candidate, load_factory(args.candidate, "--candidate")) if args.candidate else None
    configs = {a: command_config(args, a) for a in algos}
    devices = None
    if args.reference_device or args.candidate_device:
        devices = (args.reference_device or configs[algos[0]].device,
                   args.candidate_device or configs[algos[0]].device)
    with glue.declared(glue_files([args.candidate] if args.candidate else [], args.glue)):
        for algo in algos:
            yield equivalence(algo, configs[algo], options, reference, candidate,
                              progress=lambda t, algo=algo: progress(f"equivalence {algo}", t, args.steps),
                              devices=devices)


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: every audited algorithm, through the candidate's adapter where one is given (those results are
    tagged ``audited: candidate``; the JAX algorithm has no external trainer and is then not audited)."""
    from multi_actor import registry
    from multi_actor.config import build_config

    out = []
    for algo in opts.algos:
        torch_algo = registry.algorithm(algo).framework == "torch"  # --reference/--candidate are PyTorch trainers
        candidate = opts.candidate_for(algo) if torch_algo else None
        if opts.external and candidate is None:
            continue
        say(f"equivalence {algo}")
        cfg = build_config(None, [], algo=algo, seed=opts.seed, device=opts.device if torch_algo else None)
        options = EquivalenceOptions(steps=opts.steps, seed=opts.seed, bundle_dir=opts.bundle_dir,
                                     concurrent=opts.concurrent)
        if candidate is not None:  # the candidate's evaluation is part of its review: audit it halfway and at the end
            options = dataclasses.replace(options, eval_every=max(1, opts.steps // 2))
        try:
            result = equivalence(algo, cfg, options, opts.reference if torch_algo else None, candidate)
        except MissingHookError as exc:
            if exc.hook != "evaluate" or not options.eval_every:
                raise
            result = equivalence(algo, cfg, dataclasses.replace(options, eval_every=0),
                                 opts.reference if torch_algo else None, candidate)
            result.metrics.setdefault("notes", []).append("evaluation not audited: the adapter has no "
                                                          "evaluate(seed, episodes)")
        result.metrics["audited"] = "candidate" if candidate is not None else "self"
        out.append(result)
    return out
