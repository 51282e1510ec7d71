"""The Trainer-protocol plumbing every adapter repeats, derived from one table.

An adapter that defines ``named_tensors()`` (canonical name -> live tensor) inherits ``parameters``,
``load_parameters`` and ``gradients`` from :class:`TensorTable`, so the three can never disagree on names, and the
harness gets the optional ``named_tensors`` too (it maps optimizer params to canonical names by identity).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


class TensorTable:
    """Mixin: ``parameters``, ``load_parameters`` and ``gradients`` from the subclass's ``named_tensors()``."""

    def named_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parameters(self) -> dict[str, np.ndarray]:
        return {name: t.detach().cpu().numpy().copy() for name, t in self.named_tensors().items()}

    def load_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        """Names not given keep their value (``--sync-init`` passes critic, actor0 and target tensors)."""
        with torch.no_grad():
            for name, t in self.named_tensors().items():
                if name in params:
                    t.copy_(torch.as_tensor(np.asarray(params[name]), dtype=t.dtype))

    def gradients(self) -> dict[str, np.ndarray]:
        """``.grad`` of critic and actor0 parameters, zeros where none was written (the grad-leak observable)."""
        return {name: np.zeros(tuple(t.shape), np.float32) if t.grad is None else t.grad.detach().cpu().numpy().copy()
                for name, t in self.named_tensors().items() if name.startswith(("critic/", "actor0/"))}
