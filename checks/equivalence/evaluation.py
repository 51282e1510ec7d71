"""Evaluation audit: the trainers' own ``evaluate(seed, episodes)`` run between lock-step training steps.

Every ``eval_every`` steps :class:`EvaluationAudit` calls ``evaluate`` twice with the same seed on each side, inside
that side's private global-RNG state, and records, as observables of group ``evaluation``:

* ``eval/ok``: 1 when both calls returned, 0 when one raised (a crash is also a finding, phase ``evaluate``, and that
  side's evaluation is not called again; training goes on);
* ``eval/rng_untouched/{torch,numpy,random}``: 1 when the global stream's state after the two calls equals the
  state before them (an evaluation that reseeds or draws from a global stream corrupts the next batches and noises);
* ``eval/deterministic``: 1 when the two calls returned the same numbers.

The reference's evaluation is clean, so any candidate defect differs from it; whether training stays equivalent
afterwards is what the following steps of the lock-step compare. The returned numbers themselves are kept in
``metrics["evaluation"]`` (the two sides may evaluate differently, so they are not compared).
"""

from __future__ import annotations

import contextlib
import math
import random
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from checks import HARNESS_DIRS
from pogo_audit.model.findings import decision_frame, describe
from pogo_audit.runtime.seeding import EVAL_OFFSET, derived_seed, state_digests

#: global streams an evaluation must leave untouched
STREAMS = ("torch", "numpy", "random")


def supports_evaluate(trainer: Any) -> bool:
    return callable(getattr(trainer, "evaluate", None))


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal keys and values (NaN equal to NaN)."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


@contextlib.contextmanager
def reseeds_recorded(found: list[dict[str, Any]]) -> Iterator[None]:
    """Record every call of a global-stream seeding function (``torch.manual_seed``, ``np.random.seed``,
    ``random.seed``) made from the trainer's own code while inside: ``{"stream", "call", "frame"}`` appended to
    ``found``. The call still runs (the audit observes, it does not change what the trainer does)."""
    import numpy as np
    import torch

    targets = ((torch, "manual_seed", "torch"), (np.random, "seed", "numpy"), (random, "seed", "random"))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]

    def recording(original: Any, stream: str, call: str) -> Any:
        def seed(*args: Any, **kwargs: Any) -> Any:
            decided = decision_frame(traceback.extract_stack()[:-1], HARNESS_DIRS)
            if decided is not None:
                found.append({"stream": stream, "call": call, "frame": decided[0], "via": decided[1]})
            return original(*args, **kwargs)
        return seed

    for (owner, name, stream), (_, _, original) in zip(targets, saved):
        setattr(owner, name, recording(original, stream, f"{owner.__name__}.{name}"))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


class EvaluationAudit:
    """Calls ``evaluate`` on every side every ``every`` steps; keeps the crashes and the returned numbers."""

    def __init__(self, every: int, episodes: int, run_seed: int):
        #: the evaluation seed is derived from the run's: evaluation never shares a stream with training
        self.every, self.episodes = int(every), int(episodes)
        self.seed = derived_seed(run_seed, EVAL_OFFSET) % 2**31
        self.crashes: list[dict[str, Any]] = []
        self.results: dict[str, list[dict[str, Any]]] = {"reference": [], "candidate": []}
        self._broken: set[str] = set()

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def run(self, label: str, side: Any, step: int) -> dict[str, float]:
        """Audit one side's evaluation (``side.iso`` an :class:`~pogo_audit.core.harness.IsolatedTrainer`)."""
        before = state_digests(side.iso.rng)
        first: Mapping[str, Any] | None = None
        second: Mapping[str, Any] | None = None
        ok = label not in self._broken
        reseeds: list[dict[str, Any]] = []
        if ok:
            try:
                with reseeds_recorded(reseeds):
                    first = dict(side.iso.call("evaluate", self.seed, self.episodes))
                    second = dict(side.iso.call("evaluate", self.seed, self.episodes))
            except Exception as exc:  # the trainer's evaluation: a finding, not the end of the audit
                ok = False
                self._broken.add(label)
                side_name = "reference" if label == "twin" else label
                crash = describe(exc, side_name, "evaluate", step, HARNESS_DIRS).to_dict()
                self.crashes.append({**crash, "side": label})
        after = state_digests(side.iso.rng)
        out = {"eval/ok": float(ok),
               "eval/deterministic": float(first is not None and second is not None and _same(first, second))}
        out.update({f"eval/rng_untouched/{s}": float(before[s] == after[s]) for s in STREAMS})
        if label in self.results:
            self.results[label].append({"step": step, "ok": ok, "returned": first,
                                        "rng_changed": [s for s in STREAMS if before[s] != after[s]],
                                        "reseeded": reseeds})
        return out

    def location(self, observable: str, side: str = "candidate") -> dict[str, Any] | None:
        """The trainer line behind an evaluation finding of ``side``: the crash frame for ``eval/ok`` and
        ``eval/deterministic`` (a crashed evaluation returns nothing to compare), the first seeding call of that
        stream for ``eval/rng_untouched/<stream>``; None when nothing was recorded."""
        if observable in ("eval/ok", "eval/deterministic"):
            return next((c["frame"] for c in self.crashes if c["side"] == side and c["frame"]), None)
        stream = observable.rsplit("/", 1)[-1]
        return next((r["frame"] for call in self.results.get(side, []) for r in call["reseeded"]
                     if r["stream"] == stream), None)

    def metrics(self) -> dict[str, Any]:
        return {"every": self.every, "episodes": self.episodes, "seed": self.seed, "crashes": self.crashes,
                "calls": self.results}
