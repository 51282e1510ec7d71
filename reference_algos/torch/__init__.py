"""PyTorch reference algorithms, one readable module per algorithm (CORL single-file spirit).

``VARIANTS`` maps a golden-trace variant name to ``(module, config overrides)``. Every module exposes a config
dataclass ``Config`` with CORL's defaults and ``build(config, state_dim, action_dim, max_action, device)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "iql_gaussian": ("reference_algos.torch.iql", {"iql_deterministic": False}),
    "iql_deterministic": ("reference_algos.torch.iql", {"iql_deterministic": True}),
    "td3_bc": ("reference_algos.torch.td3_bc", {}),
    "cql": ("reference_algos.torch.cql", {}),
    "awac": ("reference_algos.torch.awac", {}),
    "sac_n": ("reference_algos.torch.sac_n", {}),
    "edac": ("reference_algos.torch.edac", {}),
}


def variant_module(variant: str) -> ModuleType:
    """Import the module implementing ``variant`` (raises KeyError for unknown names, ImportError if missing)."""
    return importlib.import_module(VARIANTS[variant][0])


def available_variants() -> list[str]:
    """Variants whose module exists in this checkout."""
    out = []
    for name in VARIANTS:
        try:
            variant_module(name)
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out
