"""Broken candidate trainers: the CORL-faithful reference behind the Trainer protocol with one or two realistic
defects drawn from small strategies — an exception in a phase, odd values in the step dict, missing / extra /
renamed parameters, wrong shapes or dtypes, NaN weights, a step that mutates the batch in place.

Every defect drawn here changes something the harness compares (a compared loss, a critic/actor0/target tensor,
the batch the reference trains on) or makes a protocol call raise, so the only right outcome is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

PHASES = ("factory", "step", "parameters", "load_parameters", "gradients")
EXCEPTIONS = (TypeError, ValueError, RuntimeError, KeyError, IndexError, ZeroDivisionError, AttributeError,
              AssertionError, NotImplementedError, OSError)


@dataclass(frozen=True)
class Defect:
    """One defect: ``kind`` and what it needs (a phase, a step, a key, a value, ...)."""

    kind: str
    phase: str | None = None
    step: int = 1
    error: type[BaseException] | None = None
    key: str | None = None
    value: Any = None

    def __repr__(self) -> str:
        fields = {k: v for k, v in self.__dict__.items() if v is not None and k != "kind"}
        shown = ", ".join(f"{k}={getattr(v, '__name__', v)!r}" for k, v in fields.items())
        return f"Defect({self.kind}{', ' + shown if shown else ''})"


@dataclass(frozen=True)
class CandidateCase:
    """A broken candidate: its defects and whether it is audited with ``--sync-init``."""

    defects: tuple[Defect, ...]
    sync_init: bool


_ODD_VALUES = st.sampled_from([float("nan"), float("inf"), -float("inf"), None, "0.5", [0.5], (0.5, 1.0), {"v": 1.0},
                               b"\x00", object()]) | st.builds(lambda n: __import__("numpy").zeros(n), st.integers(0, 3))


def _raise() -> SearchStrategy[Defect]:
    return st.builds(lambda phase, step, error: Defect("raise", phase=phase, step=step, error=error),
                     st.sampled_from(PHASES), st.integers(1, 3), st.sampled_from(EXCEPTIONS))


def _odd_loss() -> SearchStrategy[Defect]:
    return st.builds(lambda step, value: Defect("odd_loss", step=step, value=value), st.integers(1, 3), _ODD_VALUES)


def _param_defects() -> SearchStrategy[Defect]:
    return st.one_of(
        st.builds(lambda i: Defect("drop_param", value=i), st.integers(0, 50)),
        st.builds(lambda i: Defect("rename_param", value=i), st.integers(0, 50)),
        st.builds(lambda i: Defect("extra_param", value=i), st.integers(0, 50)),
        st.builds(lambda i: Defect("reshape_param", value=i), st.integers(0, 50)),
        st.builds(lambda i, dt: Defect("retype_param", value=(i, dt)), st.integers(0, 50),
                  st.sampled_from(["float64", "float16", "int64", "bool"])),
        st.builds(lambda i: Defect("nan_param", value=i), st.integers(0, 50)),
        st.builds(lambda i, v: Defect("odd_param", value=(i, v)), st.integers(0, 50),
                  st.sampled_from([None, "w", [1.0, 2.0], 3.0])),
    )


def candidate_cases() -> SearchStrategy[CandidateCase]:
    """One or two defects (drawn kind first, so every kind is exercised), with or without ``--sync-init``."""
    defect = st.one_of(_raise(), _odd_loss(), _param_defects(),
                       st.just(Defect("drop_loss")), st.builds(lambda s: Defect("mutate_batch", step=s),
                                                                st.integers(1, 3)))
    return st.builds(CandidateCase, st.lists(defect, min_size=1, max_size=2).map(tuple), st.booleans())
