"""Profile a target: warm-up, steady-state compiles and transfers, static scan, timings, probe; one CheckResult."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import jax

from checks.jax_profile.compiles import (
    EVALUATE,
    JIT_GAIN,
    OTHER_ROW,
    PROBE,
    RUNTIME,
    STEADY,
    TIMING,
    UNJITTED,
    WARMUP,
    ProfileSession,
)
from checks.jax_profile.contexts import EPOCH, STEP
from checks.jax_profile.findings import Evidence, collect_findings, jit_evidence
from checks.jax_profile.jit_gain import estimate_jit_gain
from checks.jax_profile.memory import MEMORY_STEPS, measure_growth
from checks.jax_profile.runtime import SyncProbe
from checks.jax_profile.scan import StaticScan, scan_sources
from checks.jax_profile.targets import JaxTarget, multi_actor_targets, rebrac_target
from checks.jax_profile.timing import eager_warmup, run_calls, seconds_per_call, wait
from checks.jax_profile.transfers import TransferCount, count_host_to_device, probe_host_to_device
from checks.selection import select_algorithms
from pogo_audit.runtime.errors import UsageError
from pogo_audit.model.results import ERROR, FAIL, PASS, CheckResult

CHECK = "jax-profile"


class _Phases:
    """Runs the profile's phases; a phase that raises (e.g. a generator target's ``StopIteration`` once it is
    exhausted) is recorded as a note and the results gathered so far are kept."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def run(self, name: str, fn: Callable[[], Any]) -> bool:
        try:
            fn()
        except Exception as exc:  # user code may raise anything; the profile keeps what it measured before
            self.failures.append(f"{name} stopped: {type(exc).__name__}: {exc}".rstrip(": ") +
                                 " (partial results kept)")
            return False
        return True


def _run_each(target: JaxTarget, fn: Callable[[], Any], n: int, probe: SyncProbe, path_name: str) -> None:
    """``n`` calls of ``fn``, each waited for and recorded as one measured call by ``probe``."""
    for i in range(n):
        with probe.measuring(path_name, i):
            run_calls(target, fn, 1)


def _profile_evaluation(target: JaxTarget, session: ProfileSession, probe: SyncProbe,
                        evaluations: int) -> dict[str, Any]:
    """Call ``evaluate()`` ``evaluations`` times: compiles per evaluation (names) and the explanations after the
    first; the syncs go to ``probe`` (path ``evaluate``)."""
    assert target.evaluate is not None
    per_call: list[list[str]] = []
    explained = len(session.explanations)
    for i in range(evaluations):
        before = len(session.events)
        with session.phase(EVALUATE), probe.measuring(EVALUATE, i):
            wait(target.evaluate())
        per_call.append([name for _, kind, name in session.events[before:] if kind == "compile"])
        if i == 0:
            explained = len(session.explanations)
    return {"evaluations": len(per_call), "compiles_per_evaluation": [len(c) for c in per_call],
            "names": sorted({n for c in per_call[1:] for n in c}),
            "cache_miss_explanations": [t for phase, _, t in session.explanations[explained:] if phase == EVALUATE]}


def profile_target(target: JaxTarget, steps: int = 20, epochs: int = 2, warmup: int = 1, unjitted_steps: int = 3,
                   repeats: int = 3, timing_steps: int = 20, fresh_caches: bool = True, memory_steps: int | None = None,
                   evaluations: int = 3, jit_gain: bool = True,
                   reference: Callable[[int], JaxTarget] | None = None) -> CheckResult:
    """Profile one target; verdict ``fail`` when any pathology is found on its training path (see the rules in
    :mod:`checks.jax_profile`).

    ``fresh_caches`` clears JAX's caches first (``jax.clear_caches``), so that compile counts do not depend on what
    this process compiled before (e.g. another trainer sharing a jitted function).

    ``warmup`` step (and epoch) calls come first; compiles after them are pathologies. ``steps``/``epochs`` are the
    steady-state calls counted for compiles and host-to-device transfers, then run again one by one under the
    runtime sync probe. ``memory_steps`` training-loop calls (default 30 steps, or ``max(epochs, 5)`` epochs) measure
    host-memory growth; ``evaluations`` calls of the target's ``evaluate()``, when it has one. Ratios: ``updates_per_epoch`` steps
    (``timing_steps`` without an epoch) per timing repeat; ``unjitted_steps`` steps under ``jax.disable_jit()`` (0:
    skip) after untimed eager calls until one compiles nothing. Not timed when most steady steps recompile. For a
    step that is not jitted, ``jit_gain`` estimates what jax.jit would gain (``reference(batch_size)`` builds the
    comparison target when the step is not a pure function and its time was measured; default the reference
    ReBRAC).

    A phase that raises after the warm-up (a generator target running out) ends as a note; what was measured stays.
    """
    t0 = time.perf_counter()
    paths = {STEP: target.step, **({EPOCH: target.epoch} if target.epoch is not None else {})}
    calls = {STEP: steps, EPOCH: epochs}
    h2d: dict[str, TransferCount] = {}
    timing_note = ""
    seconds: dict[str, float | None] = {"step_loop": None, "epoch": None, "unjitted_step": None}
    session = ProfileSession()
    phases = _Phases()
    probe = SyncProbe()
    scan = StaticScan([], {}, set(), [], [])
    step_compiled: set[str] = set()
    memory: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gain: dict[str, Any] | None = None
    loop_fn = paths[target.loop or STEP]
    if fresh_caches:
        jax.clear_caches()
    with session:
        try:
            with session.phase(WARMUP):
                run_calls(target, target.step, warmup)
                step_compiled = {name for _, kind, name in session.events if kind == "compile"}
                if target.epoch is not None:
                    run_calls(target, target.epoch, warmup)
        except Exception as exc:
            return CheckResult(check=CHECK, subject=target.name, verdict=ERROR,
                               summary=f"profiling raised {type(exc).__name__} in the warm-up: {exc}",
                               seconds=time.perf_counter() - t0)

        def static_scan() -> None:
            nonlocal scan
            scan = scan_sources(target.scan_roots)

        phases.run("static scan", static_scan)
        compiled_by_step = sorted(step_compiled & scan.user_names - {"<lambda>"})
        with session.phase(STEADY):
            for name, fn in paths.items():
                h2d[name] = TransferCount(calls[name])
                phases.run(f"steady {name}() calls", lambda fn=fn, name=name: setattr(
                    h2d[name], "transfers", count_host_to_device(partial(run_calls, target, fn, calls[name]))))
        steady_compiles = sum(1 for phase, kind, _ in session.events if phase == STEADY and kind == "compile")
        recompiling = steady_compiles > steps // 2
        with session.phase(RUNTIME), probe:
            for name, fn in paths.items():
                phases.run(f"runtime sync probe of {name}()", partial(_run_each, target, fn, calls[name], probe, name))

        def host_memory() -> None:
            nonlocal memory
            n = memory_steps or (MEMORY_STEPS if target.loop == STEP else max(epochs, 5))
            memory = measure_growth(partial(run_calls, target, loop_fn, 1), n, target.state)

        if recompiling:
            timing_note = f"not timed: {steady_compiles} compiles in {steps} steady-state steps (timings would " \
                          "measure the compiler)"
            phases.failures.append(f"host memory not measured: {steady_compiles} compiles in {steps} steady steps")
        else:
            with session.phase(RUNTIME):
                phases.run(f"host-memory probe of {target.loop}()", host_memory)

            def timing() -> None:
                with session.phase(TIMING):
                    n = target.updates_per_epoch if target.epoch is not None else timing_steps
                    seconds["step_loop"] = seconds_per_call(target, target.step, n, repeats)
                    if target.epoch is not None:
                        seconds["epoch"] = seconds_per_call(target, target.epoch, 1, repeats) / \
                            target.updates_per_epoch

            def unjitted() -> None:
                with session.phase(UNJITTED), jax.disable_jit():
                    eager_warmup(session, target)
                    seconds["unjitted_step"] = seconds_per_call(target, target.step, unjitted_steps, 1)

            phases.run("timing", timing)
            if unjitted_steps > 0:
                phases.run("un-jitted timing", unjitted)
        with session.phase(PROBE):
            for name, fn in paths.items():
                def first_transfer(name: str = name, fn: Callable[[], Any] = fn) -> None:
                    h2d[name].first = probe_host_to_device(fn)
                    if h2d[name].first is not None and not h2d[name].transfers:
                        h2d[name].transfers = None
                phases.run(f"host-to-device probe of {name}()", first_transfer)
        if target.evaluate is not None and evaluations > 0:
            def evaluate() -> None:
                nonlocal evaluation
                with probe:
                    evaluation = _profile_evaluation(target, session, probe, evaluations)

            phases.run("evaluate() probe", evaluate)
        jitted = jit_evidence(target, scan, compiled_by_step)
        if jit_gain and not jitted[0] and (target.pure_step is not None or seconds["step_loop"]):
            def estimate() -> None:
                nonlocal gain
                with session.phase(JIT_GAIN):
                    gain = estimate_jit_gain(target, seconds["step_loop"], reference=reference)

            phases.run("jit-gain estimate", estimate)
    table = session.function_table(scan.user_names)
    step_s, epoch_s, unjit_s = seconds["step_loop"], seconds["epoch"], seconds["unjitted_step"]
    ratios = {"python_loop_over_scan": step_s / epoch_s if step_s and epoch_s else None,
              "unjitted_over_jitted": unjit_s / step_s if step_s and unjit_s else None}
    runtime = {name: probe.classify(name, target.updates_per_epoch if name == EPOCH else 1)
               for name in (*paths, EVALUATE)}
    measured = {name: probe.calls.get(name, 0) == calls.get(name, evaluations) for name in (*paths, EVALUATE)}
    findings = collect_findings(target, table, h2d, scan, jitted, Evidence(
        runtime=runtime, measured=measured, memory=memory, evaluation=evaluation, jit_gain=gain,
        failures=phases.failures))
    failed = [f for f in findings if f["severity"] == FAIL]
    if failed:
        summary = "\n".join(f["message"] if f["severity"] == FAIL else f"note: {f['message']}" for f in findings)
    else:
        clean = (f"clean: {sum(r['compiles'] for r in table if r['name'] != OTHER_ROW)} compiles, 0 after warm-up, "
                 f"jitted step, no host sync or transfer in the {target.loop} loop")
        summary = "\n".join([clean, *(f"note: {f['message']}" for f in findings)])
    metrics = {
        "target": target.name, "loop": target.loop, "warmup": warmup, "steps": steps,
        "epochs": epochs if target.epoch is not None else 0, "updates_per_epoch": target.updates_per_epoch,
        "functions": table, "host_to_device_transfers": {k: v.as_dict() for k, v in h2d.items()},
        "static_syncs": scan.syncs, "runtime_syncs": runtime, "scanned_files": scan.files,
        "scan_unavailable": scan.unavailable, "host_memory": memory, "evaluation": evaluation, "jit_gain": gain,
        "probe_failures": phases.failures,
        "jitted": jitted[0], "jitted_evidence": jitted[1], "ratios": ratios, "seconds_per_update": seconds,
        "timing_note": timing_note,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
    }
    return CheckResult(check=CHECK, subject=target.name, verdict=FAIL if failed else PASS,
                       steps_compared=steps, summary=summary, metrics=metrics, details=findings,
                       seconds=time.perf_counter() - t0)


def profile_algo(algo: str = "rebrac", steps: int = 20, epochs: int = 2, warmup: int = 1,
                 updates_per_epoch: int = 50, batch_size: int = 256, dataset: str | None = None,
                 actors: Sequence[int] = (3,), seed: int = 0, unjitted_steps: int = 3, repeats: int = 3,
                 memory_steps: int | None = None, config_overrides: Mapping[str, Any] | None = None) -> tuple[list[CheckResult], list[str]]:
    """Profile the reference ReBRAC and, when present, ``multi_actor.jax_trainer``; returns (results, skip notes)."""
    if algo != "rebrac":
        raise UsageError(f"--algo: only rebrac has a JAX implementation, got {algo!r}")
    options = dict(steps=steps, epochs=epochs, warmup=warmup, unjitted_steps=unjitted_steps, repeats=repeats,
                   memory_steps=memory_steps)
    reference = rebrac_target(updates_per_epoch, batch_size, dataset, seed, config_overrides)
    results = [profile_target(reference, **options)]
    targets, skipped = multi_actor_targets(actors, updates_per_epoch, batch_size, dataset, seed)
    results += [profile_target(t, **options) for t in targets]
    return results, skipped


def run_command(args: Any, progress: Any) -> Iterator[CheckResult | Any]:
    """``pogo-audit jax-profile``: a user's ``--target`` or the reference ReBRAC and the multi-actor trainer; a
    trainer that could not be profiled is a :class:`checks.registry.Note`."""
    from checks.jax_profile.targets import load_target
    from pogo_audit.model.results import Note

    options = dict(steps=args.steps, epochs=args.epochs, warmup=args.warmup, repeats=args.repeats,
                   unjitted_steps=0 if args.no_unjitted else args.unjitted_steps, memory_steps=args.memory_steps)
    if args.target:
        from pogo_audit.core.loading import glue_files
        from pogo_audit.model import glue

        target = load_target(args.target)
        with glue.declared(glue_files([args.target], args.glue)):
            yield profile_target(target, **options)
        return
    for algo in select_algorithms(args.algo, "--algo", "jax"):
        results, skipped = profile_algo(algo, updates_per_epoch=args.updates_per_epoch, batch_size=args.batch_size,
                                        dataset=args.dataset, actors=args.actors, seed=args.seed, **options)
        yield from results
        yield from (Note(text) for text in skipped)


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: the reference ReBRAC's JAX profile (our own code), or in candidate mode the candidate's JAX
    loop given by ``--jax-target`` (not measured without one)."""
    from checks.jax_profile.targets import load_target

    if opts.external:
        if not opts.jax_target:
            return []
        from pogo_audit.core.loading import glue_files
        from pogo_audit.model import glue

        say("jax profile (candidate)")
        target = load_target(opts.jax_target, "--jax-target")
        with glue.declared(glue_files([opts.jax_target], list(getattr(opts, "glue", None) or []))):
            result = profile_target(target, steps=10, epochs=2)
        result.metrics["audited"] = "candidate"
        return [result]
    say("jax profile")
    results, _skipped = profile_algo("rebrac", steps=10, epochs=2, seed=opts.seed)
    return results
