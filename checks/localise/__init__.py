"""Localisation of a divergent training step: the first differing operation and its line in the candidate's code."""

from checks.localise.engine import Localisation, compare_traces, localise_step, merge_more

__all__ = ["Localisation", "compare_traces", "localise_step", "merge_more"]
