"""The Trainer protocol's vocabulary, shared by every check that drives a trainer: the methods a trainer must have,
the canonical parameter-name roles that are compared (critic, actor0, targets), and the loss-key prefixes that are
compared (``critic/``, ``actor0/``; ``actor<i>/`` keys of extra actors are recorded, not compared)."""

from __future__ import annotations

#: methods every trainer a factory builds must have
PROTOCOL_METHODS = ("step", "parameters", "load_parameters")
#: parameter-name roles compared with the reference (extra actors' ``actor<i>/`` names are not)
COMPARED_PARAM_ROLES = ("critic/", "actor0/", "target/")
#: loss keys compared with the reference
LOSS_PREFIXES = ("critic/", "actor0/")
