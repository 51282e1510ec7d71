"""Snapshots for the replays that locate a finding: taken every few steps, caught up by replaying the steps since.

A localisation replays one step of both trainers, under tracing, from the state they had just before it. Keeping
that state for every step costs a deep copy (or a fork) of both trainers per step, about as much as the step itself
on a small network. Instead a :class:`Window` keeps the trainers as they were before one step (the first of the
window) and the batches of the steps run since; when step ``t`` needs a replay, :class:`CatchUp` runs the window's
steps on the snapshot exactly as the lock-step loop ran them (the same batches, ``--isolate``'s synchronisation
before every step), then checks that the replayed trainers hold, bitwise, the parameters the live run had before
``t``. A replay that does not reproduce them (a trainer whose step depends on something outside itself) is not
located on a wrong state: the finding says why, and from then on the run snapshots every step.

PyTorch snapshots are deep copies when they are independent of the live trainers (no shared tensor storage,
checked on the first one), else a forked copy of the process (:class:`checks.localise.fork.FrozenState`); the
catch-up then runs in that process.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from checks.equivalence.isolate import SyncPlan, isolate
from checks.equivalence.observables import own_copy
from checks.equivalence.side import Side
from pogo_audit.core.compare import parameter_differences
from pogo_audit.model.findings import TrainerCrash

#: a PyTorch snapshot is taken before every this many steps (and before the step after each localisation)
TORCH_SNAPSHOT_EVERY = 20


class ReplayMismatch(RuntimeError):
    """Replaying a window's steps on its snapshot did not reproduce the live run's state."""


@dataclass(frozen=True)
class Localiser:
    """How a run replays a divergent step under tracing: ``snapshot(reference, candidate)`` takes what the replay
    needs from both sides (:class:`Side`) before a step (raises when it cannot), ``localise(snapshot, batch[,
    catch_up])`` returns a :class:`checks.localise.Localisation`, ``localise_crash(snapshot, batch[, catch_up])`` the
    same for a step the candidate raised in (None: not supported), ``release(snapshot)`` frees a snapshot once it is
    not needed; ``every``: a snapshot before every this many steps (above 1, the localise functions take the
    :class:`CatchUp` of a snapshot older than the step); ``construction`` says whether a difference present right
    after construction can be located by replaying both factories under tracing (PyTorch)."""

    snapshot: Callable[[Any, Any], Any]
    localise: Callable[..., Any]
    construction: bool = False
    release: Callable[[Any], None] = lambda snapshot: None
    localise_crash: Callable[..., Any] | None = None
    every: int = 1


@dataclass
class Window:
    """A snapshot of both trainers taken before step ``first`` (after that step's ``--isolate`` synchronisation),
    the parameters both sides had then (``params``), and (step, batch) of every step run since."""

    state: Any
    first: int
    params: tuple[Mapping[str, Any], Mapping[str, Any]]
    steps: list[tuple[int, Any]] = field(default_factory=list)

    def catch_up(self, plan: SyncPlan | None, expected: tuple[Mapping[str, Any], Mapping[str, Any]]
                 ) -> CatchUp | None:
        """What a replay of the step after :attr:`steps` has to run first (None: the snapshot stands before it)."""
        if not self.steps:
            return None
        return CatchUp(list(self.steps), plan, self.params, expected)


@dataclass
class CatchUp:
    """The steps a snapshot replays before the localised one, the synchronisation the live run made before each
    (``plan``; None without ``--isolate``), and the parameters (reference, candidate) of both sides when the snapshot
    was taken and before the localised step in the live run."""

    steps: list[tuple[int, Any]]
    plan: SyncPlan | None
    params: tuple[Mapping[str, Any], Mapping[str, Any]]
    expected: tuple[Mapping[str, Any], Mapping[str, Any]]

    def replay(self, reference: Any, candidate: Any) -> None:
        """Run the steps on the snapshot's trainers (``IsolatedTrainer`` copies) as the live run did; raises
        :class:`ReplayMismatch` when their parameters then differ from the live run's."""
        ref = Side(reference, "reference", params=dict(self.params[0]))
        cand = Side(candidate, "candidate", params=dict(self.params[1]))
        plan = None if self.plan is None else SyncPlan(list(self.plan.names))
        for i, (step, batch) in enumerate(self.steps):
            if i and plan is not None:
                isolate(ref, cand, plan)
            ref.step = cand.step = step
            ref.step_and_observe(own_copy(batch), False, compared_only=True)
            try:
                cand.step_and_observe(own_copy(batch), False)
            except TrainerCrash:
                if plan is None:
                    raise
                # --isolate went on from the reference's state after this crash; so does the replay
        if plan is not None:
            isolate(ref, cand, plan)
        for side, replayed, live in (("reference", ref.params, self.expected[0]),
                                     ("candidate", cand.params, self.expected[1])):
            differences = parameter_differences(replayed, live)
            if differences:
                name = next(iter(differences))
                raise ReplayMismatch(
                    f"replaying steps {self.steps[0][0]}-{self.steps[-1][0]} from the snapshot taken before step "
                    f"{self.steps[0][0]} did not reproduce the {side}'s {name} of the live run (its step depends "
                    "on something outside the trainer); from here on every step is snapshotted")


class Snapshots:
    """The run's current :class:`Window`: a snapshot is taken before a step when the window is older than
    ``localiser.every`` steps (or was used), and each localisation uses it once (``replay``). ``plan``: what
    ``--isolate`` synchronises before every step (None: nothing). ``failed``: why no snapshot could be taken (the run
    then is not localised)."""

    def __init__(self, localiser: Localiser, plan: SyncPlan | None):
        self.localiser, self.plan = localiser, plan
        self.every = localiser.every
        self.window: Window | None = None
        self.failed: str | None = None

    def before(self, step: int, ref: Side, cand: Side) -> bool:
        """Before ``step`` (after its synchronisation): keep the window, or take a new snapshot; whether a window
        now stands before the step."""
        if self.window is not None and step - self.window.first < self.every:
            return True
        self.drop()
        if self.failed is not None:
            return False
        try:
            state = self.localiser.snapshot(ref, cand)
        except Exception as exc:  # noqa: BLE001 - whatever the copy raised is the reason
            text = str(exc).strip().splitlines()
            self.failed = (f"the trainers could not be copied for a replay ({type(exc).__name__}: "
                           f"{text[0] if text else ''}); no step was replayed under tracing")
            return False
        if state is None:  # the localiser cannot replay these trainers
            return False
        self.window = Window(state, step, (ref.params, cand.params))
        return True

    def ran(self, step: int, batch: Any) -> None:
        """``step`` ran on ``batch`` (and was not localised): a replay of a later step runs it first."""
        if self.window is not None:
            self.window.steps.append((step, batch))

    def replay(self, localise: Callable[..., Any], batch: Any,
               expected: tuple[Mapping[str, Any], Mapping[str, Any]]) -> dict[str, Any]:
        """``localise(snapshot, batch[, catch_up])`` on the window (used up by it) as a dict (:func:`traced`);
        ``expected``: both sides' parameters before the step in the live run, which a catch-up must reproduce."""
        window, self.window = self.window, None
        assert window is not None
        catch_up = window.catch_up(self.plan, expected)
        found = traced(localise, window.state, own_copy(batch), *(() if catch_up is None else (catch_up,)))
        self.localiser.release(window.state)
        if found.get("rule") == REPLAY_MISMATCH:
            self.every = 1
        return found

    def drop(self) -> None:
        """Release the window's snapshot (a forked copy of the process exits)."""
        if self.window is not None:
            self.localiser.release(self.window.state)
            self.window = None


def traced(localise: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``localise(*args).as_dict()``, or a localisation saying why it failed (tracing failing must not cost the run
    its verdict)."""
    try:
        return localise(*args).as_dict()
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return {"kind": "none", "message": f"localisation failed: {type(exc).__name__}: {exc}", "frames": []}


def _copied(ref: Side, cand: Side) -> tuple[Any, Any]:
    """Deep copies of both trainers before a step (raises when a trainer cannot be copied)."""
    return copy.deepcopy(ref.iso), copy.deepcopy(cand.iso)


def _snapshot(ref: Side, cand: Side) -> Any:
    """Both trainers as they are before a step, for a replay: deep copies when they are independent of the live
    trainers (:func:`checks.localise.fork.independent_copy`: no tensor storage shared, checked on the first
    snapshot), else a forked copy of the process (:class:`checks.localise.fork.FrozenState`: needs no copy at all)
    where fork is available."""
    from checks.localise import fork

    if not cand.fork_snapshots:
        try:
            if cand.copies_checked:
                return _copied(ref, cand)
            copies = fork.independent_copy(ref.iso), fork.independent_copy(cand.iso)
            cand.copies_checked = True
            return copies
        except Exception:  # noqa: BLE001 - a user's object may raise anything when copied: fork instead
            if not fork.available():
                raise  # no fork here: the lock-step loop records why the run is not localised
            cand.fork_snapshots = True
    return fork.FrozenState(ref.iso, cand.iso)


#: the ``rule`` of a localisation that did not run because the catch-up did not reproduce the live run
REPLAY_MISMATCH = "replay mismatch"


def _localise_torch(snapshot: Any, batch: Any, catch_up: CatchUp | None = None) -> Any:
    return _on_snapshot(snapshot, "step", batch, catch_up)


def _localise_crash_torch(snapshot: Any, batch: Any, catch_up: CatchUp | None = None) -> Any:
    return _on_snapshot(snapshot, "crash", batch, catch_up)


def _on_snapshot(snapshot: Any, what: str, batch: Any, catch_up: CatchUp | None) -> Any:
    """Localise a step (``what``: "step", or "crash" for a step the candidate raised in) from ``snapshot``: on the
    deep copies here, or in the frozen copy of the process (whose every replay of the step then runs in a child of
    its own)."""
    from checks.localise import fork

    if isinstance(snapshot, fork.FrozenState):
        return snapshot.run(_replay_here, what, batch, catch_up, True)
    return _replay_here(*snapshot, what, batch, catch_up, False)


def _replay_here(reference: Any, candidate: Any, what: str, batch: Any, catch_up: CatchUp | None,
                 forked: bool) -> Any:
    from checks.localise import Localisation, localise_crash, localise_step
    from checks.localise.replay import copied_replay, forked_replay

    if catch_up is not None:
        try:
            catch_up.replay(reference, candidate)
        except ReplayMismatch as exc:
            return Localisation("none", str(exc), rule=REPLAY_MISMATCH)
    localise = localise_step if what == "step" else localise_crash
    return localise(reference, candidate, batch, replay=forked_replay if forked else copied_replay)


def _release(snapshot: Any) -> None:
    discard = getattr(snapshot, "discard", None)
    if discard is not None:
        discard()


#: PyTorch: both trainers deep-copied (or frozen in a forked process) every :data:`TORCH_SNAPSHOT_EVERY` steps,
#: replayed by :func:`checks.localise.localise_step`
TORCH_LOCALISER = Localiser(_snapshot, _localise_torch, construction=True, release=_release,
                            localise_crash=_localise_crash_torch, every=TORCH_SNAPSHOT_EVERY)
