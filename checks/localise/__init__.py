"""Localisation of a divergent training step: the first differing operation and its line in the candidate's code.

Pure functions on traces — :mod:`.align` (where two traces part), :mod:`.rules` (which line decided it: the ladder),
:mod:`.support` (findings beside it), :mod:`.compare` (two traces → a localisation), :mod:`.result` — and the code
that runs trainers: :mod:`.trace` (recording a step), :mod:`.frames` (source frames, jumps and assignments),
:mod:`.replay` (replays of a step and of the constructions), :mod:`.jax_trace` (the JAX update's jaxpr).
"""

from checks.localise.compare import compare_traces
from checks.localise.replay import localise_construction, localise_crash, localise_step
from checks.localise.result import Localisation, merge_more

__all__ = ["Localisation", "compare_traces", "localise_construction", "localise_crash", "localise_step",
           "merge_more"]
