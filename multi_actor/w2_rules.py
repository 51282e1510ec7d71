"""Which W2 estimator a pair of policies gets — one rule for the PyTorch and the JAX trainers (no framework here).

``METHODS``: ``closed_form`` (two diagonal Gaussians), ``sinkhorn`` (other stochastic pairs), ``sample_to_point``
(one deterministic side: ``E||X - b||^2``) and ``points`` (two deterministic actions: ``||a - b||^2``).
"""

from __future__ import annotations

METHODS: tuple[str, ...] = ("closed_form", "sinkhorn", "sample_to_point", "points")


def pair_method(p_kind: tuple[bool, bool], q_kind: tuple[bool, bool], method: str) -> str:
    """Estimator for a pair given ``(stochastic, gaussian)`` of each side and the configured ``w2_method``.

    A deterministic side always gets the exact Dirac formula; two Gaussians get the closed form unless
    ``method == "sinkhorn"``; other stochastic pairs get the Sinkhorn divergence (``closed_form`` is refused).
    """
    (p_sto, p_gauss), (q_sto, q_gauss) = p_kind, q_kind
    if not p_sto and not q_sto:
        return "points"
    if not p_sto or not q_sto:
        return "sample_to_point"
    if method == "sinkhorn":
        return "sinkhorn"
    if p_gauss and q_gauss:
        return "closed_form"
    if method == "closed_form":
        raise ValueError("w2_method 'closed_form' needs two Gaussian policies")
    return "sinkhorn"
