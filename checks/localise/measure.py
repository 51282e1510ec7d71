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
from checks.localise.engine import Localisation, localise_construction, localise_step
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
    ref = _Side(IsolatedTrainer(reference_factory, config, dataset_spec, seed), "reference")
    cand = _Side(IsolatedTrainer(candidate_factory, config, dataset_spec, seed), "candidate")
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
        if step:
            found = localise_step(ref, cand, batch)
        else:
            found = localise_construction(reference_factory, mutant.factory, cfg, data.spec, seed) \
                if step == 0 else None
    return MutantLocalisation(mutant.name, mutant.algo, mutant.expected, mutant.location(), step, diverged, found,
                              time.perf_counter() - t0)


#: mutants whose truth is another instrument's (the W2 oracle; the evaluation audit, which locates an evaluation
#: crash by its frame): replaying a training step cannot and need not locate them, so they are listed, not counted
NOT_STEP_LOCALISED = ("chain (W2 oracle)", "evaluation")


def localisation_accuracy(mutants: list[Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Localise every PyTorch mutant (default: the whole catalog) and measure the share whose located line is the
    mutated line. Mutants caught only by the W2 oracle or the evaluation audit are listed but not counted
    (:data:`NOT_STEP_LOCALISED`)."""
    from checks.mutants import catalog

    rows = [localise_mutant(m, **kwargs) for m in (mutants if mutants is not None else catalog())
            if m.framework == "torch"]
    counted = [r for r in rows if r.expected not in NOT_STEP_LOCALISED]
    exact = sum(r.exact for r in counted)
    return {"mutants": len(rows), "counted": len(counted), "exact": exact,
            "accuracy": exact / len(counted) if counted else None, "rows": [r.as_dict() for r in rows]}


def jax_localisation_accuracy(mutants: list[Any] | None = None, seed: int = 0, actors: int = 3) -> dict[str, Any]:
    """Localisation accuracy of the JAX mutants (default: every JAX mutant of the catalog), measured through the
    path a user runs: ``equivalence --isolate`` of the mutant candidate against the JAX reference, each mutant over
    its own ``steps``. A mutant is exact when the first located finding names its mutated line; mutants judged by
    another instrument (:data:`NOT_STEP_LOCALISED`) are listed, not counted. Reported apart from the PyTorch one."""
    from checks.equivalence import EquivalenceOptions
    from checks.equivalence_jax import equivalence_for_rebrac
    from checks.mutants import catalog
    from multi_actor.config import build_config

    rows = []
    for m in (mutants if mutants is not None else catalog()):
        if m.framework != "jax":
            continue
        t0 = time.perf_counter()
        cfg = build_config(None, list(m.overrides), algo=m.algo, num_actors=actors, seed=seed)
        options = EquivalenceOptions(steps=m.steps, seed=seed, isolate=True, self_check=False, bundle_dir=None)
        result = equivalence_for_rebrac(cfg, options, candidate=(m.name, m.factory))
        truth = m.location()
        first = next((f for f in result.metrics.get("findings") or [] if f.get("location")), None)
        located = first["location"] if first else None
        rows.append({"mutant": m.name, "algo": m.algo, "expected": m.expected, "truth": truth,
                     "verdict": result.verdict, "findings": len(result.metrics.get("findings") or []),
                     "located": located, "message": (first or {}).get("localisation", {}).get("message"),
                     "exact": located is not None and (located["path"], located["line"]) == (truth["path"],
                                                                                              truth["line"]),
                     "seconds": time.perf_counter() - t0})
    counted = [r for r in rows if r["expected"] not in NOT_STEP_LOCALISED]
    exact = sum(r["exact"] for r in counted)
    return {"framework": "jax", "mutants": len(rows), "counted": len(counted), "exact": exact,
            "accuracy": exact / len(counted) if counted else None, "rows": rows}


# ------------------------------------------------------------------------------------ separation and cost


def combinable(mutant: Any) -> bool:
    """Mutants that can be injected together into one multi-actor trainer: installed on the built trainer, judged by
    the compared observables (not the W2 oracle, the evaluation audit or the gradient-hygiene warning). PyTorch
    mutants also keep the default config; a JAX mutant may carry config overrides (a combination takes their union,
    see :func:`combined_overrides`)."""
    return (not mutant.at_construction and not mutant.eval_every
            and mutant.expected not in ("chain (W2 oracle)", "grad leak")
            and (mutant.framework == "jax" or (mutant.base_factory is None and not mutant.overrides)))


def combined_overrides(mutants: list[Any]) -> list[str]:
    """The union of the mutants' config overrides; two that set one key to different values cannot be combined."""
    from checks.source_patch import SourcePatchError

    chosen: dict[str, str] = {}
    for m in mutants:
        for assignment in m.overrides:
            key = assignment.split("=", 1)[0].strip()
            if chosen.setdefault(key, assignment) != assignment:
                raise SourcePatchError(f"{m.name}: override {assignment!r} conflicts with {chosen[key]!r}")
    return list(chosen.values())


def combined_factory(mutants: list[Any]) -> Any:
    """A trainer factory with every mutant of ``mutants`` installed (their common ``base_factory``, default the
    PyTorch multi-actor trainer), patches of one function compiled together
    (:func:`checks.mutants.resolve_together`). Raises :class:`~checks.source_patch.SourcePatchError` at once when
    they cannot be combined."""
    from checks.mutants import resolve_together
    from checks.source_patch import SourcePatchError
    from multi_actor.trainer import multi_actor_factory

    bases = {m.base_factory for m in mutants}
    if len(bases) > 1:
        raise SourcePatchError("mutants built on different trainer factories cannot be combined")
    base = bases.pop() or multi_actor_factory
    resolve_together(mutants)

    def factory(config: Any, dataset_spec: Any, seed: int) -> Any:
        trainer = base(config, dataset_spec, seed)
        for install, original, replacement in resolve_together(mutants):
            install(trainer, original, replacement)
        return trainer

    return factory


def located_lines(result: Any) -> set[tuple[str, int]]:
    """Every (file, line) an ``--isolate`` equivalence result names."""
    out = set()
    for f in result.metrics.get("findings") or []:
        for loc in ([f["location"]] if f.get("location") else []) + list(f.get("also") or []):
            out.add((loc["path"], loc["line"]))
    return out


def run_combination(trio: list[Any], seed: int = 0) -> dict[str, Any]:
    """Inject ``trio`` together into one candidate, run ``equivalence --isolate`` once and say which mutated lines
    it names (every mutant's own number of steps: the longest)."""
    from checks.equivalence import EquivalenceOptions, equivalence_for_algo
    from multi_actor.config import build_config

    t0 = time.perf_counter()
    algo, framework = trio[0].algo, trio[0].framework
    cfg = build_config(None, combined_overrides(trio), algo=algo, num_actors=3, seed=seed)
    options = EquivalenceOptions(steps=max(m.steps for m in trio), seed=seed, isolate=True, self_check=False,
                                 bundle_dir=None)
    candidate = ("mutants", combined_factory(trio))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if framework == "jax":
            from checks.equivalence_jax import equivalence_for_rebrac

            result = equivalence_for_rebrac(cfg, options, candidate=candidate)
        else:
            result = equivalence_for_algo(algo, cfg, options, candidate=candidate)
    lines = located_lines(result)
    truth = [(m.location()["path"], m.location()["line"]) for m in trio]
    return {"algo": algo, "framework": framework, "mutants": [m.name for m in trio],
            "named": [t in lines for t in truth], "located": sorted(f"{p}:{n}" for p, n in lines),
            "seconds": time.perf_counter() - t0}


def _pools(framework: str) -> dict[str, list[Any]]:
    from checks.mutants import catalog

    pools: dict[str, list[Any]] = {}
    for m in catalog():
        if m.framework == framework and combinable(m):
            pools.setdefault(m.algo, []).append(m)
    return {a: ms for a, ms in pools.items() if len(ms) >= 3}


def _summary(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    named = sum(all(r["named"]) for r in rows)
    return {"combinations": len(rows), "all_named": named, "separation": named / len(rows) if rows else None,
            "mutants_named": sum(sum(r["named"]) for r in rows), **extra, "rows": rows}


def separation(combinations: int = 30, seed: int = 0, progress: Any = None) -> dict[str, Any]:
    """Seeded random combinations of 3 PyTorch mutants of one algorithm injected together; the share of
    combinations where one ``--isolate`` run names all three mutated lines. Mutants of one function are compiled
    together; a draw whose patches cannot be combined (two edits of one line) is redrawn and counted as
    ``not_combinable``."""
    import random

    from checks.source_patch import SourcePatchError

    pools = _pools("torch")
    algos = sorted(pools)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    refused = 0
    while len(rows) < combinations:
        trio = rng.sample(pools[rng.choice(algos)], 3)
        try:
            combined_factory(trio)
            combined_overrides(trio)
        except SourcePatchError:
            refused += 1
            continue
        rows.append(run_combination(trio, seed))
        if progress is not None:
            progress(len(rows), combinations)
    return _summary(rows, framework="torch", not_combinable=refused)


def jax_separation(combinations: int = 30, seed: int = 0, progress: Any = None) -> dict[str, Any]:
    """Seeded random *distinct* combinations of 3 countable JAX mutants of one algorithm (all of them when there are
    fewer: the JAX catalog is small, so draws with repetition would count one triple several times), injected
    together; the share where one ``--isolate`` run names all three mutated lines."""
    import itertools
    import random

    combos = [list(t) for _, ms in sorted(_pools("jax").items()) for t in itertools.combinations(ms, 3)]
    chosen = combos if len(combos) <= combinations else random.Random(seed).sample(combos, combinations)
    rows = []
    for i, trio in enumerate(chosen, 1):
        rows.append(run_combination(trio, seed))
        if progress is not None:
            progress(i, len(chosen))
    return _summary(rows, framework="jax", not_combinable=0, distinct_triples=len(combos))


def isolate_cost(algo: str = "iql", steps: int = 300, seed: int = 0) -> dict[str, Any]:
    """Wall time of ``equivalence --isolate`` ÷ plain ``equivalence`` on our (equivalent) trainer, side by side."""
    from checks.equivalence import EquivalenceOptions, equivalence_for_algo
    from multi_actor.config import build_config

    cfg = build_config(None, [], algo=algo, seed=seed)
    times = {}
    for label, isolate_on in (("plain", False), ("isolate", True)):
        t0 = time.perf_counter()
        result = equivalence_for_algo(algo, cfg, EquivalenceOptions(steps=steps, seed=seed, isolate=isolate_on,
                                                                    bundle_dir=None))
        times[label] = time.perf_counter() - t0
        times[f"{label}_verdict"] = result.verdict
    return {"algo": algo, "steps": steps, "plain_seconds": times["plain"], "isolate_seconds": times["isolate"],
            "ratio": times["isolate"] / times["plain"], "verdicts": [times["plain_verdict"], times["isolate_verdict"]]}


#: the issue's goals for localisation accuracy and separation
ACCURACY_GOAL = SEPARATION_GOAL = 0.9


def localise_command(args: Any, progress: Any) -> Any:
    """``pogo-audit mutants --localise``: accuracy over the catalog, separation of mutant triples, and the cost of
    ``--isolate``, as three results (accuracy and separation fail below their 90 % goals; cost is reported); the JAX
    mutants' accuracy, when any is selected, as a fourth result of its own."""
    from checks.mutants import _selected
    from pogo_audit.results import FAIL, PASS, CheckResult

    mutants = [m for m in _selected(args) if m.framework == "torch"]
    t0 = time.perf_counter()
    acc = localisation_accuracy(mutants)
    yield CheckResult("localisation", "accuracy", PASS if (acc["accuracy"] or 0) >= ACCURACY_GOAL else FAIL,
                      summary=f"{acc['exact']}/{acc['counted']} mutants located at their mutated line "
                              f"({100 * (acc['accuracy'] or 0):.1f} %, goal {100 * ACCURACY_GOAL:.0f} %)",
                      metrics=acc, seconds=time.perf_counter() - t0)
    jax_mutants = [m for m in _selected(args) if m.framework == "jax"]
    if jax_mutants:
        t0 = time.perf_counter()
        jacc = jax_localisation_accuracy(jax_mutants, seed=args.seed)
        yield CheckResult("localisation", "accuracy (jax)",
                          PASS if (jacc["accuracy"] or 0) >= ACCURACY_GOAL else FAIL,
                          summary=f"{jacc['exact']}/{jacc['counted']} JAX mutants located at their mutated line "
                                  f"({100 * (jacc['accuracy'] or 0):.1f} %, goal {100 * ACCURACY_GOAL:.0f} %)",
                          metrics=jacc, seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    sep = separation(args.combinations, args.seed, lambda done, total: progress("combinations", done, total))
    yield CheckResult("localisation", "separation", PASS if (sep["separation"] or 0) >= SEPARATION_GOAL else FAIL,
                      summary=f"{sep['all_named']}/{sep['combinations']} triples of mutants fully named by one "
                              f"--isolate run ({100 * (sep['separation'] or 0):.1f} %, goal "
                              f"{100 * SEPARATION_GOAL:.0f} %); {sep['mutants_named']}/{3 * sep['combinations']} "
                              "mutants named", metrics=sep, seconds=time.perf_counter() - t0)
    if jax_mutants:
        t0 = time.perf_counter()
        jsep = jax_separation(args.combinations, args.seed,
                              lambda done, total: progress("jax combinations", done, total))
        yield CheckResult("localisation", "separation (jax)",
                          PASS if (jsep["separation"] or 0) >= SEPARATION_GOAL else FAIL,
                          summary=f"{jsep['all_named']}/{jsep['combinations']} triples of JAX mutants (of "
                                  f"{jsep['distinct_triples']} distinct) fully named by one --isolate run "
                                  f"({100 * (jsep['separation'] or 0):.1f} %, goal {100 * SEPARATION_GOAL:.0f} %); "
                                  f"{jsep['mutants_named']}/{3 * jsep['combinations']} mutants named",
                          metrics=jsep, seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    cost = isolate_cost(steps=args.cost_steps, seed=args.seed)
    yield CheckResult("localisation", "cost", PASS,
                      summary=f"--isolate takes {cost['ratio']:.2f}x the wall time of plain equivalence "
                              f"({cost['algo']}, {cost['steps']} steps: {cost['isolate_seconds']:.1f} s vs "
                              f"{cost['plain_seconds']:.1f} s)", metrics=cost, seconds=time.perf_counter() - t0)
