"""The lock-step driver: the reference (twice, for the self-check) and the candidate stepped on the same batches and
compared after every step, with the chain oracle, the lock-step extras (optimizer probes, gradient hygiene, the
evaluation audit), ``--isolate`` and the localisation of each new finding. The only module of the package that
imports the reference worker, the extras, the oracle and the localiser."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from checks.equivalence.compare import Comparator, candidate_actors, parameter_check
from checks.equivalence.extras import LockStepExtras
from checks.equivalence.isolate import SyncPlan, isolate, syncable
from checks.equivalence.observables import (
    BATCH_OBSERVABLE,
    MUTATED,
    UNCHANGED,
    batch_digest,
    localised,
    own_copy,
    settle_deferred,
)
from checks.equivalence.options import EquivalenceOptions
from checks.equivalence.side import Side
from checks.equivalence.snapshots import TORCH_LOCALISER, Localiser, Snapshots, traced
from checks.equivalence.verdict import Judge, RunState, result_of
from checks.equivalence.worker import CAND_FACTORY, process_plan, reference_pair
from pogo_audit.core.bundle import write_divergence_bundle
from pogo_audit.core.harness import torch_determinism
from pogo_audit.model.findings import TrainerCrash
from pogo_audit.model.protocol import COMPARED_PARAM_ROLES
from pogo_audit.model.results import CheckResult
from pogo_audit.runtime import threads


def run_equivalence(
    algo: str,
    config: Any,
    dataset_spec: Any,
    buffer: Any,
    reference_factory: Callable[..., Any],
    candidate_factory: Callable[..., Any],
    options: EquivalenceOptions,
    progress: Callable[[int], None] | None = None,
    labels: tuple[str, str] = ("reference", "candidate"),
    batch_size: int = 256,
    chain_oracle: Callable[[Any, Any], Any] | None = None,
    localiser: Localiser | None = None,
) -> CheckResult:
    """Drive reference (twice, for the self-check) and candidate in lock-step; return one CheckResult.

    A trainer that raises (in its factory, ``load_parameters``, a step, ...) ends the run with verdict ``fail`` and
    ``metrics["crash"]`` (:class:`pogo_audit.model.findings.Crash`); what was compared before the crash is kept.
    ``chain_oracle(trainer, config)`` builds the W2 oracle (default :meth:`ChainOracle.for_trainer`); ``localiser``
    replays a divergent step under tracing (default :data:`TORCH_LOCALISER`)."""
    device = str(getattr(config, "device", "cpu"))
    plan = process_plan(options, reference_factory, config, dataset_spec, device, algo, threads.budget())
    run = RunState(t0=time.perf_counter(), plan=plan)
    with torch_determinism(device) as determinism, threads.using(plan.threads):
        try:
            _run_lock_step(algo, config, dataset_spec, buffer, reference_factory, candidate_factory, options,
                           progress, batch_size, chain_oracle, device, run, localiser or TORCH_LOCALISER)
        except TrainerCrash as exc:
            run.crash = exc.crash
        finally:
            if run.snapshots is not None:
                run.snapshots.drop()
                run.not_localised = run.snapshots.failed
            if run.pair is not None:
                run.pair.close()
    result = result_of(algo, config, options, labels, device, run)
    result.metrics["device"] = device
    if determinism:
        result.metrics["determinism"] = determinism
    return result


#: at most this many steps are replayed under tracing in one run (each a few seconds)
MAX_LOCALISED = 8


def _localise_construction(run: RunState, comp: Comparator, factories: tuple[Callable[..., Any], Callable[..., Any]],
                           config: Any, dataset_spec: Any, seed: int) -> None:
    """Findings present right after construction (step 0) are located by replaying both constructions under
    tracing (:func:`checks.localise.replay.localise_construction`)."""
    from checks.localise import localise_construction

    new = [k for k, f in comp.findings.items() if f["first_step"] == 0 and localised(k[0])]
    if new:
        run.replays += 1
        found = traced(localise_construction, *factories, config, dataset_spec, seed)
        for key in new:
            run.located[key] = found


def _localise_new(run: RunState, comp: Comparator, step: int, snapshots: Snapshots, batch: Any,
                  localise: Callable[..., Any], expected: tuple[Mapping[str, Any], Mapping[str, Any]],
                  also: tuple[tuple[str, str, str], ...] = ()) -> None:
    """Replay ``step`` from the snapshot under tracing when a finding showed for the first time at it, or the set of
    findings at it was not seen at a replayed step (a defect acting only at some steps, e.g. inside a delayed actor
    update, hides behind the findings of another one), and attach the located lines to the findings of this step
    (and to ``also``: hygiene warnings first seen at it). ``expected``: both sides' parameters before the step."""
    from checks.localise import merge_more

    here = frozenset(k for k, f in comp.findings.items() if step in f["steps"] and localised(k[0]))
    new = [k for k in here if comp.findings[k]["first_step"] == step and k not in run.located]
    new += [k for k in also if k not in run.located]
    # which losses only one side logged belongs to the step's signature: a block one side runs on other steps
    # than the other (an actor update due on other steps) leaves the same set of differing observables
    signature = here | frozenset(comp.lacking_at_step)
    if not new and (not here or signature in run.signatures):
        return
    run.replays += 1
    run.signatures.add(signature)
    found = snapshots.replay(localise, batch, expected)
    for key in new:
        run.located[key] = found
    for key in here - set(new):
        if key in run.located:
            run.located[key] = merge_more(run.located[key], found)


def _crashed_step(run: RunState, step: int, crash: Any, snapshots: Snapshots | None, batch: Any,
                  localiser: Localiser, expected: tuple[Mapping[str, Any], Mapping[str, Any]]) -> None:
    """A candidate step that raised under ``--isolate``: one finding per crash site (side, phase, exception, line),
    counting the steps it repeats at; the first time, the step is replayed under tracing and what the candidate
    computed before raising is compared with the reference's same step (:func:`checks.localise.localise_crash`)."""
    record = run.crash_site(crash)
    record["steps"].append(step)
    if len(record["steps"]) > 1 or snapshots is None or localiser.localise_crash is None or \
            run.replays >= MAX_LOCALISED:
        return
    run.replays += 1
    record["localisation"] = snapshots.replay(localiser.localise_crash, batch, expected)


def _run_lock_step(algo: str, config: Any, dataset_spec: Any, buffer: Any, reference_factory: Callable[..., Any],
                   candidate_factory: Callable[..., Any], options: EquivalenceOptions,
                   progress: Callable[[int], None] | None, batch_size: int,
                   chain_oracle: Callable[[Any, Any], Any] | None, device: str, run: RunState,
                   localiser: Localiser) -> None:

    from checks.equivalence.oracle import ChainOracle  # torch and the multi-actor W2 module: not at import time

    seed = options.seed
    fallback = options.tolerance_fallback
    if fallback is None:
        fallback = device.startswith("cuda")
    run.fallback = fallback = bool(fallback) and options.mode == "bitwise" and options.self_check
    judges = run.judges
    judges.append(Judge(options.mode, Comparator(options.mode, options.rtol, options.atol, options.group_tolerances,
                                                  options.ignore)))
    run.self_comp = self_comp = Comparator("bitwise", 0.0, 0.0)
    # with the fallback, only a twin that differs beyond the tolerance makes the run inconclusive
    stop_comp = self_comp
    if fallback:
        judges.append(Judge("tolerance", Comparator("tolerance", options.rtol, options.atol, ignore=options.ignore)))
        stop_comp = Comparator("tolerance", options.rtol, options.atol)
    run.stop_comp = stop_comp

    run.pair = pair = reference_pair(options, reference_factory, config, dataset_spec, device, run.plan)
    ref, twin = pair.ref, getattr(pair, "twin", None)
    try:
        cand = Side.build("candidate", candidate_factory, config, dataset_spec, seed)
    except TrainerCrash:
        pair.built(below=CAND_FACTORY)
        raise
    ref_params, ref_rng = pair.built()
    run.thread_counts = {"candidate" if pair.threads() else "candidate+reference": threads.report(),
                         **pair.threads()}
    cand_params = cand.call("parameters")
    run.parameter_check = parameter_check(ref_params, cand_params, options.ignore)
    run.candidate_actors = candidate_actors(cand_params)
    run.sync = SyncPlan.between(ref_params, cand_params)
    if options.sync_init:
        names, _ = syncable(ref_params, cand_params, COMPARED_PARAM_ROLES)
        if names:
            cand.call("load_parameters", {k: ref_params[k] for k in names})
        cand.iso.rng = copy.deepcopy(ref_rng)
    oracle = None
    if options.chain_oracle:
        with cand.guard("policies"):
            oracle = (chain_oracle or ChainOracle.for_trainer)(cand.iso.trainer, config)
    run.extras = extras = LockStepExtras(options, ref, twin, cand)

    def self_check(step: int, obs_ref: Mapping[str, Any], obs_twin: Mapping[str, Any]) -> bool:
        """Compare the twin; True when the run is inconclusive from this step on."""
        diverged = self_comp.compare(step, obs_ref, obs_twin)
        if stop_comp is not self_comp:
            diverged = stop_comp.compare(step, obs_ref, obs_twin)
        return bool(diverged)

    pair.submit(0, None, True)
    crash = None
    try:
        obs_cand = cand.observe({}, full=True)
    except TrainerCrash as exc:
        crash = exc
    obs_ref, obs_twin = pair.collect(crash)  # raises the first crash in the serial order
    if obs_twin is not None and self_check(0, obs_ref, obs_twin):
        run.inconclusive_step = 0
    for judge in judges:
        diverged = judge.comp.compare(0, obs_ref, obs_cand)
        if diverged:
            judge.bundle_info = {"step": 0, "batch": [], "before": ({}, {}), "obs": (obs_ref, obs_cand),
                                 "after": (dict(ref.params), dict(cand.params)), "diverged": diverged}
    run.remember(0, obs_ref, obs_cand)

    localise = options.isolate if options.localise is None else options.localise
    if localise and localiser.construction:
        _localise_construction(run, judges[0].comp, (reference_factory, candidate_factory), config, dataset_spec,
                               seed)
    run.snapshots = snapshots = Snapshots(localiser, run.sync if options.isolate else None) if localise else None
    for step in range(1, options.steps + 1):
        if run.inconclusive_step is not None:
            break
        cand.step = step
        if options.isolate:
            isolate(ref, cand, run.sync)
        windowed = False
        if snapshots is not None:
            if run.replays < MAX_LOCALISED:
                windowed = snapshots.before(step, ref, cand)
            else:
                snapshots.drop()
        batch = buffer.sample(batch_size)
        before = (ref.params, cand.params)  # every observation binds a new dict: these stay the pre-step ones
        pre_policies = None
        every = options.oracle_every
        oracle_due = oracle is not None and (every <= 1 or step <= every or step % every == 0 or step == options.steps)
        if oracle_due:
            with cand.guard("policies"):
                pre_policies = oracle.snapshot()
        full = step % options.full_every == 0 or step == options.steps
        given = batch_digest(batch)
        pair.submit(step, batch, full)
        cand_batch = own_copy(batch)
        crash = None
        try:
            cand_out, obs_cand = cand.step_and_observe(cand_batch, full, lazy=True)
        except TrainerCrash as exc:
            crash = exc
        if crash is not None and options.isolate and crash.crash.phase == "step":
            # with --isolate the next step starts from the reference's state again: the crash is one finding
            obs_ref, obs_twin = pair.collect(None)
            settle_deferred(obs_ref, *([] if obs_twin is None else [obs_twin]))
            if obs_twin is not None and self_check(step, obs_ref, obs_twin):
                run.inconclusive_step = step
            _crashed_step(run, step, crash.crash, snapshots if windowed else None, batch, localiser, before)
            if windowed:
                snapshots.ran(step, batch)
            if progress is not None:
                progress(step)
            continue
        obs_ref, obs_twin = pair.collect(crash)
        settle_deferred(obs_ref, obs_cand, *([] if obs_twin is None else [obs_twin]))
        settle_deferred(ref.leak or {}, cand.leak)
        if obs_twin is None:
            extras.twin = None  # no twin (any more): the evaluation audit no longer drives it
        obs_ref[BATCH_OBSERVABLE] = UNCHANGED
        obs_cand[BATCH_OBSERVABLE] = UNCHANGED if batch_digest(cand_batch) == given else MUTATED
        if obs_twin is not None and self_check(step, obs_ref, obs_twin):
            run.inconclusive_step = step
        tolerances = {}
        if oracle_due:
            with cand.guard("policies"):
                chain_ref, chain_cand, tolerances = oracle.check(pre_policies, batch, cand_out)
            obs_ref.update(chain_ref)
            obs_cand.update(chain_cand)
        extras.after_step(step, obs_ref, obs_cand)
        warned = extras.new_warnings(step)
        diverged_by = [judge.comp.compare(step, obs_ref, obs_cand, tolerances) for judge in judges]
        run.remember(step, obs_ref, obs_cand)
        if windowed and (diverged_by[0] or warned):
            _localise_new(run, judges[0].comp, step, snapshots, batch, localiser.localise, before, warned)
        if windowed:
            snapshots.ran(step, batch)
        for judge, diverged in zip(judges, diverged_by):
            if diverged and judge.bundle_info is None:
                judge.bundle_info = {
                    "step": step, "batch": batch, "before": tuple(dict(p) for p in before),
                    "after": (dict(ref.params), dict(cand.params)), "obs": (obs_ref, obs_cand), "diverged": diverged,
                    "grads": (ref.gradients(), cand.gradients())}
                if options.bundle_dir and not fallback:  # with the fallback the mode is known only at the end
                    run.bundle_path = write_divergence_bundle(options.bundle_dir, algo, config, judge.bundle_info,
                                                              run.history(), run.steps_done, judge.comp.first,
                                                              judge.mode)
        if progress is not None:
            progress(step)

    judge = run.judge()
    if judge.bundle_info is not None and options.bundle_dir:
        run.bundle_path = write_divergence_bundle(options.bundle_dir, algo, config, judge.bundle_info,
                                                  run.history(), run.steps_done, judge.comp.first, judge.mode)
