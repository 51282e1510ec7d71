"""The algorithms pogo-audit knows, declared once.

One :class:`AlgorithmSpec` per base algorithm says which framework runs it, where its reference lives, which
multi-actor trainer and adapter wrap it, which actor types it allows and which golden-trace variants prove its reference.
Everything else derives from here: config validation (:mod:`multi_actor.config`), the CLI's ``--algo`` choices,
the docs audit, the fuzz strategies, the conformance variant list and the suite. Adding an algorithm = its
reference file, its adapter, one entry in :data:`ALGORITHMS`.

Module paths are strings so that listing algorithms imports neither torch nor JAX.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Variant:
    """One golden-trace variant of an algorithm: the reference config overrides its recording used."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlgorithmSpec:
    """Everything about one base algorithm that more than one part of pogo-audit needs."""

    name: str
    framework: str
    reference_module: str
    actor0_types: tuple[str, ...]
    extra_actor_type: str
    variants: tuple[Variant, ...]
    #: the per-algorithm multi-actor adapter (``module:Class``; PyTorch algorithms)
    adapter: str = ""
    #: its `base` actor objective needs log-probs of the actor (so actor0 and `base`-energy actors are stochastic)
    base_needs_log_prob: bool = False
    #: the `advantage` energy is defined (a state-value baseline exists)
    advantage_energy: bool = False
    #: extra-actor types this framework cannot train
    unsupported_extra_types: tuple[str, ...] = ()
    #: the reference config fields a fuzzed one-step training varies, each ``(low, high)`` (ints or floats, with
    #: ``None`` first for a field that may be unset) or ``(False, True)``: tame values, so one step stays cheap
    trainable: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: reference config fields a fuzzed one-step training fixes (tiny networks)
    trainable_fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> ModuleType:
        """The reference module (imported on first use)."""
        return importlib.import_module(self.reference_module)


ALGORITHMS: dict[str, AlgorithmSpec] = {spec.name: spec for spec in (
    AlgorithmSpec("iql", "torch", "reference_algos.torch.iql",
                  adapter="multi_actor.algorithms:IQL",
                  actor0_types=("gaussian", "deterministic"), extra_actor_type="gaussian",
                  variants=(Variant("iql_gaussian", {"iql_deterministic": False}),
                            Variant("iql_deterministic", {"iql_deterministic": True})),
                  advantage_energy=True,
                  trainable={"beta": (0.5, 5.0), "iql_tau": (0.5, 0.9), "actor_dropout": (None, 0.0, 0.5)}),
    AlgorithmSpec("td3_bc", "torch", "reference_algos.torch.td3_bc",
                  adapter="multi_actor.algorithms:TD3BC",
                  actor0_types=("deterministic",), extra_actor_type="deterministic", variants=(Variant("td3_bc"),),
                  trainable={"alpha": (0.5, 5.0), "policy_freq": (1, 3), "policy_noise": (0.0, 0.5)}),
    AlgorithmSpec("cql", "torch", "reference_algos.torch.cql",
                  adapter="multi_actor.algorithms:CQL",
                  actor0_types=("tanh_gaussian",), extra_actor_type="tanh_gaussian", variants=(Variant("cql"),),
                  base_needs_log_prob=True,
                  trainable={"cql_n_actions": (2, 4), "q_n_hidden_layers": (1, 3),
                             "cql_importance_sample": (False, True), "cql_lagrange": (False, True),
                             "use_automatic_entropy_tuning": (False, True),
                             "backup_entropy": (False, True), "cql_max_target_backup": (False, True),
                             "bc_steps": (0, 2), "orthogonal_init": (False, True)}),
    AlgorithmSpec("awac", "torch", "reference_algos.torch.awac",
                  adapter="multi_actor.algorithms:AWAC",
                  actor0_types=("gaussian",), extra_actor_type="gaussian", variants=(Variant("awac"),),
                  base_needs_log_prob=True, advantage_energy=True,
                  trainable={"awac_lambda": (0.1, 3.0)}, trainable_fixed={"hidden_dim": 8}),
    AlgorithmSpec("sac_n", "torch", "reference_algos.torch.sac_n",
                  adapter="multi_actor.algorithms:SACN",
                  actor0_types=("tanh_gaussian",), extra_actor_type="tanh_gaussian", variants=(Variant("sac_n"),),
                  base_needs_log_prob=True,
                  trainable={"num_critics": (2, 4)}, trainable_fixed={"hidden_dim": 8}),
    AlgorithmSpec("edac", "torch", "reference_algos.torch.edac",
                  adapter="multi_actor.algorithms:EDAC",
                  actor0_types=("tanh_gaussian",), extra_actor_type="tanh_gaussian", variants=(Variant("edac"),),
                  base_needs_log_prob=True,
                  trainable={"num_critics": (2, 4), "eta": (0.0, 2.0)}, trainable_fixed={"hidden_dim": 8}),
    AlgorithmSpec("rebrac", "jax", "reference_algos.jax.rebrac",
                  actor0_types=("deterministic",), extra_actor_type="deterministic", variants=(Variant("rebrac"),),
                  unsupported_extra_types=("implicit",)),
)}


def algorithm(name: str) -> AlgorithmSpec:
    """The spec of ``name`` (KeyError for an unknown algorithm)."""
    return ALGORITHMS[name]


def names(framework: str | None = None) -> tuple[str, ...]:
    """Algorithm names in declaration order, optionally of one framework (``torch`` / ``jax``)."""
    return tuple(n for n, s in ALGORITHMS.items() if framework is None or s.framework == framework)


def variants(framework: str | None = None) -> dict[str, tuple[AlgorithmSpec, Variant]]:
    """Golden-trace variant name → (its algorithm, the variant), optionally of one framework."""
    return {v.name: (s, v) for s in ALGORITHMS.values() if framework is None or s.framework == framework
            for v in s.variants}


def variant_aliases() -> dict[str, tuple[str, ...]]:
    """Algorithm name → its variants, for algorithms with more than one (``iql`` → both IQL variants)."""
    return {s.name: tuple(v.name for v in s.variants) for s in ALGORITHMS.values() if len(s.variants) > 1}
