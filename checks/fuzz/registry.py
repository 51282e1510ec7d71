"""The fuzz properties by name and target (``configs``, ``logging``, ``data``, ``candidates``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis.strategies import SearchStrategy

from checks.fuzz.properties.candidates import check_broken_candidate
from checks.fuzz.properties.configs import (
    check_invalid_config_rejected,
    check_overrides,
    check_valid_config_round_trips,
    check_valid_config_trains,
)
from checks.fuzz.properties.data import check_data_layer
from checks.fuzz.properties.logger import check_logger
from checks.fuzz.strategies.candidates import candidate_cases
from checks.fuzz.strategies.config_mutations import invalid_configs
from checks.fuzz.strategies.configs import trainable_cases, valid_configs
from checks.fuzz.strategies.episodes import data_cases
from checks.fuzz.strategies.log_payloads import log_cases
from checks.fuzz.strategies.overrides import override_cases
from checks.fuzz.targets import TARGETS
from pogo_audit.runtime.errors import UsageError


@dataclass(frozen=True)
class Property:
    """A named property: a strategy of cases and a check that raises on a violation."""

    name: str
    target: str
    strategy: Callable[[], SearchStrategy[Any]]
    check: Callable[[Any], None]
    expensive: bool = False


PROPERTIES: tuple[Property, ...] = (
    Property("invalid_config_rejected", "configs", invalid_configs, check_invalid_config_rejected),
    Property("valid_config_round_trips", "configs", valid_configs, check_valid_config_round_trips),
    Property("overrides_build_or_fail_cleanly", "configs", override_cases, check_overrides),
    Property("valid_config_trains", "configs", trainable_cases, check_valid_config_trains, expensive=True),
    Property("logger_writes_scalars_once", "logging", log_cases, check_logger),
    Property("data_loads_or_names_the_problem", "data", data_cases, check_data_layer),
    Property("broken_candidate_is_a_finding", "candidates", candidate_cases, check_broken_candidate, expensive=True),
)


#: the target that fuzzes pogo-audit's own equivalence harness with broken candidates (not part of ``all``, which
#: fuzzes the trainer's inputs: configs, logging, data)
HARNESS_TARGET = "candidates"


def properties_for(target: str) -> list[Property]:
    """The properties of ``configs``, ``logging``, ``data``, ``candidates`` or ``all`` (all but ``candidates``)."""
    if target not in TARGETS:
        raise UsageError(f"--target: got {target!r}; expected one of {', '.join(TARGETS)}")
    return [p for p in PROPERTIES if target == p.target or (target == "all" and p.target != HARNESS_TARGET)]


def get_property(name: str) -> Property:
    """The property called ``name``."""
    for p in PROPERTIES:
        if p.name == name:
            return p
    raise UsageError(f"unknown fuzz property {name!r}; expected one of {', '.join(p.name for p in PROPERTIES)}")
