"""How well ``--isolate`` names the line of a defect, measured on the mutation catalog: mutants are one-line patches
of the real code, so the line a localisation should name is known (``pogo-audit mutants --localise``).

Every measurement runs what a user runs — ``equivalence --isolate`` of the mutated candidate against the reference,
the same lock-step driver, PyTorch and JAX alike — and reads the located lines from its findings:

* accuracy: the share of mutants whose first located finding names the mutated line (mutants caught by another
  instrument, the W2 oracle or the evaluation audit, are listed, not counted:
  :attr:`checks.equivalence.ObservableGroup.step_localised`);
* separation: the share of seeded random triples of mutants, injected together, that one run names completely;
* cost: ``--isolate``'s wall time against plain ``equivalence``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from checks.equivalence import EquivalenceOptions, equivalence
from checks.equivalence.observables import BY_NAME
from checks.mutants.catalog import catalog, select
from checks.mutants.model import resolve_together
from checks.source_patch import SourcePatchError
from pogo_audit.model.results import FAIL, PASS, CheckResult, Note


def _isolated(algo: str, overrides: list[str], steps: int, factory: Any, label: str, seed: int,
              eval_every: int = 0, quiet: str | None = None) -> CheckResult:
    """``equivalence --isolate`` of ``factory``'s candidate against the reference (no self-check, no bundle)."""
    from multi_actor.config import build_config

    cfg = build_config(None, overrides, algo=algo, num_actors=3, seed=seed)
    options = EquivalenceOptions(steps=steps, seed=seed, isolate=True, self_check=False, bundle_dir=None,
                                 eval_every=eval_every)
    with warnings.catch_warnings():
        if quiet:
            warnings.filterwarnings("ignore", message=quiet)
        return equivalence(algo, cfg, options, candidate=(label, factory))


def _counted(expected: str) -> bool:
    return expected not in BY_NAME or BY_NAME[expected].step_localised


def localise_mutant(mutant: Any, seed: int = 0) -> dict[str, Any]:
    """One mutant's localisation: its first located finding, and whether that is the mutated line."""
    t0 = time.perf_counter()
    result = _isolated(mutant.algo, list(mutant.overrides), mutant.steps, mutant.factory, mutant.name, seed,
                       mutant.eval_every, mutant.quiet)
    truth = mutant.location()
    located_rows = [f for f in result.metrics.get("findings") or [] if f.get("location")]
    located_rows += [w for w in result.metrics.get("warnings") or [] if w.get("location")]  # hygiene warnings
    first = min(located_rows, key=lambda f: f.get("first_step", f.get("step", 0)), default=None)
    located = first["location"] if first else None
    localisation = (first or {}).get("localisation") or {}
    return {"mutant": mutant.name, "algo": mutant.algo, "framework": mutant.framework, "expected": mutant.expected,
            "truth": truth, "verdict": result.verdict,
            "step": first.get("first_step", first.get("step")) if first else None,
            "findings": len(result.metrics.get("findings") or []), "located": located,
            "kind": localisation.get("kind"), "rule": localisation.get("rule"), "message": localisation.get("message"),
            "exact": located is not None and (located["path"], located["line"]) == (truth["path"], truth["line"]),
            "seconds": time.perf_counter() - t0}


def localisation_accuracy(mutants: list[Any], seed: int = 0) -> dict[str, Any]:
    """Localise every mutant of ``mutants``; the share of counted ones located at their mutated line."""
    rows = [localise_mutant(m, seed) for m in mutants]
    counted = [r for r in rows if _counted(r["expected"])]
    exact = sum(r["exact"] for r in counted)
    return {"mutants": len(rows), "counted": len(counted), "exact": exact,
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
    (:func:`checks.mutants.model.resolve_together`). Raises :class:`~checks.source_patch.SourcePatchError` at once
    when they cannot be combined."""
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
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _isolated(trio[0].algo, combined_overrides(trio), max(m.steps for m in trio), combined_factory(trio),
                           "mutants", seed)
    lines = located_lines(result)
    truth = [(m.location()["path"], m.location()["line"]) for m in trio]
    return {"algo": trio[0].algo, "framework": trio[0].framework, "mutants": [m.name for m in trio],
            "named": [t in lines for t in truth], "located": sorted(f"{p}:{n}" for p, n in lines),
            "seconds": time.perf_counter() - t0}


def _pools(framework: str) -> dict[str, list[Any]]:
    pools: dict[str, list[Any]] = {}
    for m in catalog():
        if m.framework == framework and combinable(m):
            pools.setdefault(m.algo, []).append(m)
    return {a: ms for a, ms in pools.items() if len(ms) >= 3}


def _summary(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    named = sum(all(r["named"]) for r in rows)
    return {"combinations": len(rows), "all_named": named, "separation": named / len(rows) if rows else None,
            "mutants_named": sum(sum(r["named"]) for r in rows), **extra, "rows": rows}


def separation(combinations: int = 30, seed: int = 0, progress: Any = None,
               algos: set[str] | None = None) -> dict[str, Any]:
    """Seeded random combinations of 3 PyTorch mutants of one algorithm (of ``algos``, default all) injected
    together; the share of combinations where one ``--isolate`` run names all three mutated lines. Mutants of one
    function are compiled together; a draw whose patches cannot be combined (two edits of one line) is redrawn and
    counted as ``not_combinable``."""
    import random

    pools = {a: ms for a, ms in _pools("torch").items() if algos is None or a in algos}
    algos = sorted(pools)
    if not algos:
        return _summary([], framework="torch", not_combinable=0)
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
    from multi_actor.config import build_config

    cfg = build_config(None, [], algo=algo, seed=seed)
    times = {}
    for label, isolate_on in (("plain", False), ("isolate", True)):
        t0 = time.perf_counter()
        result = equivalence(algo, cfg, EquivalenceOptions(steps=steps, seed=seed, isolate=isolate_on,
                                                           bundle_dir=None))
        times[label] = time.perf_counter() - t0
        times[f"{label}_verdict"] = result.verdict
    return {"algo": algo, "steps": steps, "plain_seconds": times["plain"], "isolate_seconds": times["isolate"],
            "ratio": times["isolate"] / times["plain"], "verdicts": [times["plain_verdict"], times["isolate_verdict"]]}


#: the issue's goals for localisation accuracy and separation
ACCURACY_GOAL = SEPARATION_GOAL = 0.9


def _accuracy_result(subject: str, acc: dict[str, Any], seconds: float) -> CheckResult:
    return CheckResult("localisation", subject, PASS if (acc["accuracy"] or 0) >= ACCURACY_GOAL else FAIL,
                       summary=f"{acc['exact']}/{acc['counted']} mutants located at their mutated line "
                               f"({100 * (acc['accuracy'] or 0):.1f} %, goal {100 * ACCURACY_GOAL:.0f} %)",
                       metrics=acc, seconds=seconds)


def localise_command(args: Any, progress: Any) -> Any:
    """``pogo-audit mutants --localise``: accuracy over the selected mutants, separation of mutant triples, and the
    cost of ``--isolate``, as results (accuracy and separation fail below their 90 % goals; cost is reported); the
    JAX mutants' accuracy and separation, when any is selected, as results of their own."""
    selected = select(args)
    for framework, subject in (("torch", "accuracy"), ("jax", "accuracy (jax)")):
        mutants = [m for m in selected if m.framework == framework]
        if mutants:
            t0 = time.perf_counter()
            yield _accuracy_result(subject, localisation_accuracy(mutants, args.seed), time.perf_counter() - t0)
    algos = {m.algo for m in selected}
    if any(m.framework == "torch" for m in selected):
        t0 = time.perf_counter()
        sep = separation(args.combinations, args.seed, lambda done, total: progress("combinations", done, total),
                         algos)
        if not sep["combinations"]:
            yield Note(f"separation not measured: no algorithm of --algo {args.algo} has three mutants that combine")
        else:
            yield CheckResult("localisation", "separation",
                              PASS if (sep["separation"] or 0) >= SEPARATION_GOAL else FAIL,
                              summary=f"{sep['all_named']}/{sep['combinations']} triples of mutants fully named by "
                                      f"one --isolate run ({100 * (sep['separation'] or 0):.1f} %, goal "
                                      f"{100 * SEPARATION_GOAL:.0f} %); {sep['mutants_named']}/"
                                      f"{3 * sep['combinations']} mutants named", metrics=sep,
                              seconds=time.perf_counter() - t0)
    if any(m.framework == "jax" for m in selected):
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
