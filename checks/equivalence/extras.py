"""What the equivalence lock-step measures beyond losses, parameters and RNG digests, behind one small hook.

* optimizer observables and consumed gradients (:mod:`checks.equivalence.optimizer`) when every trainer has
  ``named_tensors()`` and ``optimizers()``; the ``.grad`` left after a step then becomes a hygiene warning;
* the evaluation audit (:mod:`checks.equivalence.evaluation`) every ``eval_every`` steps.

:class:`LockStepExtras` is built once the trainers exist, called after each step's observations
(:meth:`after_step`) and given the result at the end (:meth:`finish`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from checks.equivalence.evaluation import EvaluationAudit, supports_evaluate
from checks.equivalence.observables import GROUPS, finding_subject
from checks.equivalence.optimizer import Hygiene, attach_probes
from pogo_audit.model.results import FAIL, CheckResult
from pogo_audit.runtime.errors import MissingHookError


class LockStepExtras:
    """Optimizer probes, gradient hygiene and the evaluation audit of one lock-step run."""

    def __init__(self, options: Any, ref: Any, twin: Any, cand: Any):
        self.ref, self.twin, self.cand = ref, twin, cand
        self.hygiene = Hygiene(options) if attach_probes([ref, twin, cand]) else None
        self.evaluation: EvaluationAudit | None = None
        if getattr(options, "eval_every", 0):
            lacking = [label for label, side in (("reference", ref), ("candidate", cand))
                       if not supports_evaluate(side.iso.trainer)]
            if lacking:
                raise MissingHookError("--eval-every", "evaluate", f"the {' and '.join(lacking)} trainer has no "
                                       "evaluate(seed, episodes) method")
            self.evaluation = EvaluationAudit(options.eval_every, options.eval_episodes, options.seed)

    def after_step(self, step: int, obs_ref: MutableMapping[str, Any], obs_cand: MutableMapping[str, Any]) -> None:
        """Compare the ``.grad`` hygiene of this step; evaluate both sides (and the twin) when due."""
        if self.hygiene is not None:
            self.hygiene.compare(step, self.ref.leak, self.cand.leak)
        if self.evaluation is not None and self.evaluation.due(step):
            obs_ref.update(self.evaluation.run("reference", self.ref, step))
            if self.twin is not None:  # the twin mirrors the reference's calls (and any RNG use in them)
                self.evaluation.run("twin", self.twin, step)
            obs_cand.update(self.evaluation.run("candidate", self.cand, step))

    def new_warnings(self, step: int) -> tuple[tuple[str, str, str], ...]:
        """The hygiene warning first seen at ``step``, as a finding key (group, entity, ``"warning"``) the lock-step
        run localises like a finding (none when the gradients the optimizers consumed differ: that is a finding)."""
        first = self.hygiene.comp.first if self.hygiene is not None else None
        if first is None or first.step != step:
            return ()
        return (("grad leak", finding_subject(first.observable), "warning"),)

    def finish(self, result: CheckResult) -> CheckResult:
        """Add the grad-leak row, ``metrics["warnings"]``, the evaluation record; an evaluation crash fails."""

        warnings: list[dict[str, Any]] = []
        if self.hygiene is not None:
            result.details = sorted([*result.details, *self.hygiene.rows(result.steps_compared)],
                                    key=lambda r: GROUPS.index(r["group"]) if r["group"] in GROUPS else len(GROUPS))
            used_ok = all(r["verdict"] == "pass" for r in result.details if r["group"] == "gradients used")
            warnings = self.hygiene.warnings() if used_ok else []
        result.metrics["warnings"] = warnings
        if self.evaluation is None:
            return result
        result.metrics["evaluation"] = self.evaluation.metrics()
        for row in result.metrics.get("findings") or []:
            frame = self.evaluation.location(row["observable"]) if row["group"] == "evaluation" else None
            if frame is not None and row.get("location") is None:
                row.setdefault("also", [])
                row["location"] = {"path": frame["file"], "line": frame["line"], "function": frame["function"],
                                   "code": frame["code"]}
        crashes = [c for c in self.evaluation.crashes if c["side"] != "twin"]
        if crashes:
            c = crashes[0]
            result.metrics.setdefault("crash", c)
            where = f" ({c['frame']['file']}:{c['frame']['line']})" if c["frame"] else ""
            crash = f"{c['side']} evaluate raised at step {c['step']}: {c['type']}: {c['message']}{where}"
            result.summary = f"{result.summary}; {crash}" if result.verdict == FAIL else f"not equivalent: {crash}"
            result.verdict = FAIL
        return result
