"""The mutation catalog: realistic bugs injected at run time into our own multi-actor trainer, proving that the
equivalence check can fail (``pogo-audit mutants``) and measuring how well ``--isolate`` names their lines
(``pogo-audit mutants --localise``).

Modules in dependency order: :mod:`.model` (what a mutant is, how it is installed), :mod:`.torch_catalog` and
:mod:`.jax_catalog` (the bugs), :mod:`.catalog` (all of them, selection), :mod:`.run` (through the equivalence
harness: the kill matrix), :mod:`.accuracy` (localisation accuracy, separation, cost).
"""

from checks.mutants.catalog import catalog, select
from checks.mutants.model import Behaviour, Mutant, resolve_together
from checks.mutants.run import run_command, run_mutant, suite_stage

__all__ = ["Behaviour", "Mutant", "catalog", "resolve_together", "run_command", "run_mutant", "select",
           "suite_stage"]
