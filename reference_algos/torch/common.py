"""Small shared base of the PyTorch reference algorithms.

Only what every CORL single-file script repeats verbatim lives here (soft update, target copies, the batch type)
plus the parameter import/export every trainer needs. Nothing here touches an RNG.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

TensorBatch = Sequence[torch.Tensor]
"""CORL batch layout: ``[states, actions, rewards [B,1], next_states, dones [B,1]]``."""


@dataclass(frozen=True)
class TrainerArg:
    """How CORL's ``train()`` fills one argument of the trainer's constructor: from ``Config.<field>`` (times
    ``max_action`` where ``scaled``) or, with ``field=None``, from ``build``'s argument of the same name."""

    field: str | None
    scaled: bool = False


def copied(*names: str) -> dict[str, TrainerArg]:
    """Constructor arguments that CORL's ``train()`` copies from the config field of the same name."""
    return {name: TrainerArg(name) for name in names}


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * source`` over ``parameters()``, exactly CORL's expression."""
    for target_param, source_param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """``torch.set_default_dtype(dtype)`` for the duration of the block (how a float64 CORL run is made)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_in_dtype(cls: type[ReferenceTrainer], dtype: torch.dtype, *args: Any) -> Any:
    """``cls(*args)`` constructed under default dtype ``dtype``, then every tensor cast to it (see ``cast_``).

    float32 (CORL's default) constructs exactly as before: the same modules and the same construction-time draws.
    """
    with default_dtype(dtype):
        trainer = cls(*args)
    return trainer.cast_(dtype)


def frozen_copy(module: nn.Module) -> nn.Module:
    """``deepcopy(module).requires_grad_(False)`` as CORL builds its target networks."""
    return copy.deepcopy(module).requires_grad_(False)


class ReferenceTrainer:
    """Base of the single-actor reference trainers: parameter export/import and checkpoint state for all of them.

    Subclasses implement :meth:`modules` (name -> network or bare trainable tensor: online ones in the order CORL
    constructs them, then targets), :meth:`optimizers` and :meth:`train_step`, optionally :meth:`schedulers` and
    :meth:`extra_scalars`, and set ``targets_of`` (target name -> online name). Parameter names are
    ``"<module>/<state_dict key>"`` (a bare tensor keeps its own name), the naming of the CORL golden traces.
    """

    #: golden-trace variant name, e.g. ``"iql_gaussian"``
    variant: ClassVar[str] = ""
    #: name of the actor module (the one the multi-actor trainer calls actor0)
    actor_name: ClassVar[str] = "actor"
    #: target module name -> online module name
    targets_of: ClassVar[dict[str, str]] = {}

    def modules(self) -> dict[str, nn.Module | torch.Tensor]:
        """Every network and trainable scalar, online first then targets (a bare tensor is its own entry)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        """Learning-rate schedules (IQL's cosine actor schedule); none by default."""
        return {}

    def train_step(self, batch: TensorBatch) -> dict[str, float]:
        """One call of CORL's ``train``/``update``."""
        raise NotImplementedError

    def extra_scalars(self) -> dict[str, float]:
        """Quantities outside the log dict that golden traces record (e.g. a learning rate after its schedule)."""
        return {}

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """All parameters, online and target, under golden-trace names (``<module>/<key>``, or a bare tensor's name)."""
        out: dict[str, torch.Tensor] = {}
        for mod_name, module in self.modules().items():
            if isinstance(module, torch.Tensor):
                out[mod_name] = module
                continue
            for key, value in module.state_dict(keep_vars=True).items():
                out[f"{mod_name}/{key}"] = value
        return out

    def training_state(self) -> dict[str, Any]:
        """Everything a checkpoint needs to resume this trainer bitwise (tensors are cloned)."""
        return {
            "tensors": {k: v.detach().clone() for k, v in self.named_tensors().items()},
            "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in self.optimizers().items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers().items()},
            "total_it": int(getattr(self, "total_it", 0)),
        }

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`training_state`."""
        self.load_parameters({k: v.numpy() for k, v in state["tensors"].items()})
        for k, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers().items():
            sched.load_state_dict(state["schedulers"][k])
        if hasattr(self, "total_it"):
            self.total_it = int(state["total_it"])

    def cast_(self, dtype: torch.dtype) -> ReferenceTrainer:
        """Give every parameter and bare tensor ``dtype`` in place (``.data`` swap: optimizers keep their references).

        A float64 CORL run is CORL under ``torch.set_default_dtype(torch.float64)`` whose parameters are then loaded as
        float64, which also turns CORL's explicitly-float32 tensors (IQL/AWAC ``log_std``, CQL's ``Scalar``, SAC-N's
        ``log_alpha``) into float64; this is that last part. Optimizer state is created lazily at the first step.
        """
        for tensor in self.named_tensors().values():
            if tensor.is_floating_point() and tensor.dtype != dtype:
                tensor.data = tensor.data.to(dtype)
        return self

    def export_parameters(self) -> dict[str, np.ndarray]:
        """Copy of every parameter as numpy arrays in the trainer's dtype (name -> array)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.named_tensors().items()}

    def load_parameters(self, params: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Overwrite parameters from a name -> array mapping.

        Online networks must be present when ``strict``; a target network missing from ``params`` becomes an exact
        copy of its online network (how CORL creates it).
        """
        tensors = self.named_tensors()
        target_prefixes = tuple(f"{t}/" for t in self.targets_of)
        missing = [k for k in tensors if k not in params and not k.startswith(target_prefixes)]
        unknown = [k for k in params if k not in tensors]
        if strict and (missing or unknown):
            raise KeyError(f"parameter names do not match: missing {missing[:5]}, unknown {unknown[:5]}")
        with torch.no_grad():
            for key, tensor in tensors.items():
                if key in params:
                    src = torch.as_tensor(np.asarray(params[key]), dtype=tensor.dtype)
                    if tuple(src.shape) != tuple(tensor.shape):
                        raise ValueError(f"{key}: shape {tuple(src.shape)} != expected {tuple(tensor.shape)}")
                    tensor.copy_(src)
            for target, online in self.targets_of.items():
                for key, tensor in tensors.items():
                    if key.startswith(f"{target}/") and key not in params:
                        tensor.copy_(tensors[f"{online}/{key[len(target) + 1:]}"])
