"""One variant's replay context, shared by the PyTorch and JAX replays: the protocol the set records, the CPU
fingerprints (which decide the float32 rule), the running comparison, and the check result it ends in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from checks.conformance.judge import Comparison, rule_for
from pogo_audit.core.fingerprint import describe, fingerprints_match, machine_fingerprint
from pogo_audit.core.golden import GoldenDir, GoldenVariant
from pogo_audit.model.results import FAIL, PASS, CheckResult
from pogo_audit.runtime.errors import UsageError


@dataclass
class Replay:
    """One variant's protocol and fingerprint context, shared by the torch and JAX replays."""

    golden_dir: GoldenDir
    golden: GoldenVariant
    n_steps: int
    comparison: Comparison
    fingerprint_here: dict[str, Any]
    fingerprint_match: bool
    fingerprint_reasons: list[str]

    #: torch device of the replay; off the CPU the float32 rule is the drift bound (another kernel library)
    device: str = "cpu"
    #: how every recorded hyperparameter was used (:meth:`checks.conformance.hyperparameters.Resolved.metrics`)
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, golden_dir: GoldenDir, variant: str, steps: int | None, device: str = "cpu") -> Replay:
        golden = golden_dir.variant(variant)
        proto = golden.protocol
        n_steps = proto.n_steps if steps is None else min(steps, proto.n_steps)
        if n_steps < 1:
            raise UsageError(f"--steps: must be >= 1, got {steps}")
        here = machine_fingerprint(proto.framework, proto.threads)
        match, reasons = fingerprints_match(golden_dir.fingerprint, here)
        if device != "cpu":
            match, reasons = False, [*reasons, f"replayed on {device}, recorded on the CPU"]
        return cls(golden_dir, golden, n_steps, Comparison(rule_for(proto.dtype, match)), here, match, reasons,
                   device)

    def result(self, seconds: float) -> CheckResult:
        """The check result: verdict by the rule, with mode, tolerance, both fingerprints and the drift per step."""
        cmp, proto = self.comparison, self.golden.protocol
        compared = sum(g.compared for g in cmp.groups.values())
        bitwise = sum(g.bitwise for g in cmp.groups.values())
        pct = 100.0 * bitwise / max(compared, 1)
        max_abs = max((g.max_abs for g in cmp.groups.values()), default=0.0)
        max_rel = max((g.max_rel for g in cmp.groups.values()), default=0.0)
        verdict = PASS if cmp.first is None else FAIL
        mode = {"bitwise": "bitwise", "tolerance": "float64 tolerance", "drift": "float32 drift report"}[cmp.rule.mode]
        past = cmp.first_past
        if verdict == FAIL:
            summary = (f"{mode}: step {cmp.first.step}: {cmp.first.observable} outside "
                       f"{cmp.rule.describe()} (rel {cmp.first.max_rel:.3g})")
        else:
            summary = f"{mode}: {self.n_steps} steps, {pct:.2f}% bitwise-equal, max rel diff {max_rel:.3g}"
            if past is not None:
                summary += f"; past {cmp.rule.rel:g} from step {past.step} (reported, not enforced)"
        if cmp.rule.mode == "drift":
            summary += (f"; not a verdict on the hyperparameters beyond step {cmp.rule.steps} — the float64 "
                        "replay of the same variant is")
        return CheckResult(
            check="conformance",
            subject=f"{self.golden.name}/{proto.dtype}",
            verdict=verdict,
            steps_compared=self.n_steps,
            summary=summary,
            first_divergence=cmp.first,
            metrics={
                "variant": self.golden.name,
                "precision": proto.dtype,
                "mode": cmp.rule.mode,
                "tolerance": cmp.rule.describe(),
                "rel": cmp.rule.rel,
                "enforced_steps": cmp.rule.steps if cmp.rule.mode == "drift" else self.n_steps,
                "values_compared": compared,
                "bitwise_equal": bitwise,
                "bitwise_pct": pct,
                "max_abs": max_abs,
                "max_rel": max_rel,
                "first_step_past_bound": None if past is None else past.step,
                "first_observable_past_bound": None if past is None else past.observable,
                "max_rel_by_step": [cmp.max_rel_by_step.get(t, 0.0) for t in range(1, self.n_steps + 1)],
                "fingerprint_here": self.fingerprint_here,
                "fingerprint_recorded": self.golden_dir.fingerprint,
                "fingerprint_match": self.fingerprint_match,
                "fingerprint_differences": self.fingerprint_reasons,
                "fingerprint_here_text": describe(self.fingerprint_here),
                "fingerprint_recorded_text": describe(self.golden_dir.fingerprint),
                "golden": str(self.golden_dir.root),
                "seeds": {"construction": proto.construction_seed, "training": proto.training_seed},
                "threads": proto.threads,
                "batch_size": proto.batch_size,
                "device": self.device,
                "groups": {k: dataclasses.asdict(v) for k, v in cmp.groups.items()},
                "hyperparameters": self.hyperparameters,
            },
            seconds=seconds,
        )
