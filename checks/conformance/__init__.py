"""Conformance of the reference algorithms with traces recorded from the original CORL code
(``pogo-audit conformance``).

Modules in dependency order: :mod:`.hyperparameters` (every recorded hyperparameter applied, listed or refused),
:mod:`.judge` (the rule per precision and fingerprint, the running comparison), :mod:`.replay` (one variant's context
and result), :mod:`.torch_replay` and :mod:`.jax_replay` (the replays), :mod:`.command` (variants, sets, the CLI
command and the report stage).
"""

from checks.conformance.command import golden_sets, resolve_variants, run_command, run_variant, suite_stage
from checks.conformance.judge import F32_REL, F32_STEPS, F64_REL

__all__ = ["F32_REL", "F32_STEPS", "F64_REL", "golden_sets", "resolve_variants", "run_command", "run_variant",
           "suite_stage"]
