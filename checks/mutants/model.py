"""What a mutant is: a realistic bug injected at run time into our own multi-actor trainer.

Every mutant is a one-line patch of the real code (:class:`checks.source_patch.SourcePatch`): it names a function
and an exact ``old -> new`` fragment of its source; the patched function is compiled from that source, in its own
module, with the real file's line numbers. Nothing is copied: if the code changes so that ``old`` no longer matches,
the mutant fails to build (the run reports an error) instead of running a stale copy. Its location is the mutated
line of the real file.

The patched function reaches one freshly built candidate only; files, modules and the reference trainer in the same
process are untouched. How it is installed (``install``):

- a method of an object of the candidate (the base algorithm, the trainer, one extra actor) is bound on that
  *instance* (``types.MethodType``), after checking that the instance's class really resolves the name to the
  patched function;
- a module-level function shared by reference and candidate (a loss formula, a W2 estimator) is reached through a
  copy of its caller whose globals map the function's name to the mutant (:func:`checks.source_patch.reroute`,
  chain in ``via``, outermost caller first); that copy is what gets installed, so the module keeps its function;
- construction-time bugs (``at_construction``) are methods of a one-off subclass of the trainer.

Each mutant names the observable group expected to catch it. ``pogo-audit mutants`` runs every mutant through the
equivalence harness and reports a kill matrix (mutant × observable group → first step of detection); a mutant that
no observable catches, or that no longer builds, is a failing result.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from checks.source_patch import SourceLine, SourcePatch, SourcePatchError, build_together, reroute, resolves_to
from multi_actor.trainer import MultiActorTrainer, evaluator_factory_for, multi_actor_factory


#: how a mutant reaches the candidate: ``install(candidate, original, replacement)``
Install = Callable[[Any, Callable[..., Any], Callable[..., Any]], None]


def method_of(owner: Callable[[Any], Any]) -> Install:
    """Bind the replacement on the instance ``owner(candidate)`` under the original's name."""

    def install(candidate: Any, original: Callable[..., Any], replacement: Callable[..., Any]) -> None:
        obj = owner(candidate)
        name = original.__name__
        if not resolves_to(obj, name, original):
            raise SourcePatchError(f"{type(obj).__qualname__}.{name} is not {original.__qualname__}: the patch "
                                   "would not reach the code the candidate runs")
        setattr(obj, name, types.MethodType(replacement, obj))

    return install


def attribute(name: str) -> Install:
    """Replace the candidate's attribute ``name`` (which must hold the original function)."""

    def install(candidate: Any, original: Callable[..., Any], replacement: Callable[..., Any]) -> None:
        if getattr(candidate, name) is not original:
            raise SourcePatchError(f"candidate.{name} is not {original.__qualname__}: the patch would not reach "
                                   "the code the candidate runs")
        setattr(candidate, name, replacement)

    return install


on_base = method_of(lambda t: t.base)


on_trainer = method_of(lambda t: t)


@dataclass(frozen=True)
class Behaviour:
    """A mutant that is not a source edit of our code: ``replacement`` is installed where ``original`` was, and
    ``marks`` is the real line whose behaviour it replaces (its location). ``why`` says why no one-line patch
    expresses the bug."""

    original: Callable[..., Any]
    replacement: Callable[..., Any]
    marks: SourceLine
    why: str


@dataclass(frozen=True)
class Mutant:
    """One catalogued bug: ``patch`` (the one-line edit, or a :class:`Behaviour`), reached through ``via`` and
    installed on the candidate by ``install`` (or on a subclass, ``at_construction``); ``expected`` is the
    observable group that must catch it within ``steps`` steps of the config ``overrides``; ``quiet`` is a regex of
    a warning message the bug itself raises (silenced while the mutant runs). A bug harmless to training (a ``.grad``
    left behind but zeroed before any optimizer consumes it) is caught by a hygiene warning of its expected group."""

    name: str
    algo: str
    description: str
    expected: str
    patch: SourcePatch | Behaviour
    install: Install = on_base
    via: tuple[Callable[..., Any], ...] = ()
    at_construction: bool = False
    overrides: tuple[str, ...] = ()
    steps: int = 6
    framework: str = "torch"
    base_factory: Callable[..., Any] | None = None
    quiet: str | None = None
    #: run the evaluation audit every K steps (``equivalence --eval-every K``; 0: off) for a bug in ``evaluate``
    eval_every: int = 0

    def resolve(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """``(original, replacement)``: the function the candidate runs and what replaces it. Raises
        :class:`SourcePatchError` when the patch no longer applies."""
        ((_, original, replacement),) = resolve_together([self])
        return original, replacement

    def factory(self, config: Any, dataset_spec: Any, seed: int) -> Any:
        """Build the candidate (``base_factory``, default the PyTorch multi-actor trainer) with the bug installed."""
        original, replacement = self.resolve()
        if self.at_construction:
            if not resolves_to(MultiActorTrainer, original.__name__, original):
                raise SourcePatchError(f"MultiActorTrainer.{original.__name__} is not {original.__qualname__}")
            cls = type(f"MultiActorTrainer[{self.name}]", (MultiActorTrainer,), {original.__name__: replacement})
            return cls(config, dataset_spec, seed, evaluator_factory_for(config, dataset_spec))
        trainer = (self.base_factory or multi_actor_factory)(config, dataset_spec, seed)
        self.install(trainer, original, replacement)
        return trainer

    def location(self) -> dict[str, Any]:
        """The mutated line of the real file: ``path`` (repository-relative), ``line`` (1-based), ``function``,
        ``original`` and ``mutated`` line text (``mutated`` None for a behavioural mutant)."""
        if isinstance(self.patch, Behaviour):
            return self.patch.marks.location().as_dict()
        return self.patch.build().location.as_dict()


def resolve_together(mutants: list[Mutant]) -> list[tuple[Install, Callable[..., Any], Callable[..., Any]]]:
    """How several mutants reach one candidate together: ``(install, original, replacement)`` per distinct code
    path the candidate runs (one per outermost function reached).

    Patches of one function are compiled into one function (:func:`checks.source_patch.build_together`); every
    caller on a ``via`` chain is rerouted to the final version of its callee, so a mutant deep in the call chain and
    one in its caller both run (e.g. two bugs in ``rebrac.update`` and ``update_actor`` under one patched
    ``loop_body``). A :class:`Behaviour` replaces its function whole and cannot share it with another mutant.
    Raises :class:`SourcePatchError` when the mutants cannot be combined (overlapping lines, a shared behaviour)."""
    patches: dict[Callable[..., Any], list[SourcePatch]] = {}
    calls: dict[Callable[..., Any], list[Callable[..., Any]]] = {}
    behaviours: dict[Callable[..., Any], Callable[..., Any]] = {}
    roots: dict[Callable[..., Any], Install] = {}
    for m in mutants:
        if isinstance(m.patch, Behaviour):
            if m.patch.original in behaviours or m.patch.original in roots:
                raise SourcePatchError(f"{m.name}: replaces {m.patch.original.__qualname__} whole, which another "
                                       "mutant of the combination also changes")
            behaviours[m.patch.original] = m.patch.replacement
            roots[m.patch.original] = m.install
            continue
        chain = (*m.via, m.patch.target)
        patches.setdefault(m.patch.target, []).append(m.patch)
        for caller, callee in zip(chain, chain[1:]):
            if callee not in calls.setdefault(caller, []):
                calls[caller].append(callee)
        roots.setdefault(chain[0], m.install)
    if set(behaviours) & (set(patches) | set(calls)):
        raise SourcePatchError("a behavioural mutant replaces a function another mutant of the combination patches")
    final: dict[Callable[..., Any], Callable[..., Any]] = dict(behaviours)

    def version(fn: Callable[..., Any]) -> Callable[..., Any]:
        if fn not in final:
            built = build_together(patches[fn])[0] if fn in patches else fn
            for callee in calls.get(fn, []):
                replacement = version(callee)
                if replacement is not callee:
                    built = reroute(built, callee, replacement)
            final[fn] = built
        return final[fn]

    return [(install, root, version(root)) for root, install in roots.items()]
