"""Plumbing the wild-corpus adapters share (never part of a trainer, never a place for a defect).

* :class:`OldGymAPI` -- the gym<0.26 API (``seed``, ``reset() -> obs``, ``step() -> (obs, r, done, info)``) around
  the dataset's gymnasium evaluation env, which the corpus trainers' evaluations are written against;
* policy views for the W2 oracle (``stochastic``/``gaussian`` flags, ``action``, ``mean_std``, ``sample``);
* :func:`factories` -- ``factory`` / ``clean_factory`` / ``factory_fixing(ids)`` for a trainer of the corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from examples.wild.corpus import build_module


class OldGymAPI:
    """gym<0.26 view of a gymnasium env: ``seed(s)`` seeds the next ``reset()``; ``done = terminated or truncated``."""

    def __init__(self, env: Any):
        self.env = env
        self._next_seed: int | None = None
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    def seed(self, seed: int | None = None) -> list[int | None]:
        self._next_seed = seed
        return [seed]

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self._next_seed)
        self._next_seed = None
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward), bool(terminated or truncated), info


def old_gym_env(dataset_spec: Any) -> OldGymAPI:
    from pogo_audit.runtime.data import recover_env

    return OldGymAPI(recover_env(dataset_spec.dataset_id))


def obs_stats(dataset_spec: Any, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if not normalize or dataset_spec.state_mean is None:
        return np.zeros(dataset_spec.state_dim, np.float32), np.ones(dataset_spec.state_dim, np.float32)
    return (np.asarray(dataset_spec.state_mean, np.float32), np.asarray(dataset_spec.state_std, np.float32))


class DeterministicView:
    """``action(obs) = scale * net(obs)``. Views hold modules, never closures: the oracle deep-copies a view to keep
    the actor as it was at the start of the step, and a copied closure would still call the live network."""

    stochastic = False
    gaussian = False

    def __init__(self, net: torch.nn.Module, scale: float = 1.0):
        self.net, self.scale = net, scale

    def action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.net(obs) * self.scale


class GaussianView:
    """A diagonal Gaussian: ``getattr(net, method)(obs) -> (mean [B, A], std [A] or [B, A])``."""

    stochastic = True
    gaussian = True

    def __init__(self, net: torch.nn.Module, method: str = "forward"):
        self.net, self.method = net, method

    def mean_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = getattr(self.net, self.method)(obs)
        return mean, std.expand_as(mean)

    def action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean_std(obs)[0]

    def sample(self, obs: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        mean, std = self.mean_std(obs)
        eps = torch.randn((obs.shape[0], k, mean.shape[-1]), generator=generator, dtype=mean.dtype)
        return mean[:, None, :] + std[:, None, :] * eps


class TanhGaussianView:
    """``max_action * tanh(u)``, ``u ~ N(mean, std)`` with ``getattr(net, method)(obs) -> (mean, std)``."""

    stochastic = True
    gaussian = False

    def __init__(self, net: torch.nn.Module, method: str, max_action: float):
        self.net, self.method, self.max_action = net, method, max_action

    def _pre_tanh(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self.net, self.method)(obs)

    def action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.max_action * torch.tanh(self._pre_tanh(obs)[0])

    def sample(self, obs: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        mean, std = self._pre_tanh(obs)
        eps = torch.randn((obs.shape[0], k, mean.shape[-1]), generator=generator, dtype=mean.dtype)
        return self.max_action * torch.tanh(mean[:, None, :] + std[:, None, :] * eps)


def rename_state(module: torch.nn.Module, prefix: str, rules: Iterable[tuple[str, str]] = ()) -> dict[str, torch.Tensor]:
    """``prefix + key`` -> live tensor for every state-dict key, the first matching ``(old, new)`` key-prefix rule
    applied (e.g. ``("mu.", "net.net.")``)."""
    out = {}
    for key, t in module.state_dict(keep_vars=True).items():
        for old, new in rules:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[prefix + key] = t
    return out


def factories(stem: str, build: Callable[[Any, Any, Any, int], Any]):
    """``(factory, clean_factory, factory_fixing, factory_only, module_getattr)`` for corpus trainer ``stem``: ``build(module, config,
    dataset_spec, seed)`` makes the protocol object from a built trainer module."""

    def factory(config: Any, dataset_spec: Any, seed: int) -> Any:
        """The trainer as shipped: every planted defect in place."""
        return build(build_module(stem), config, dataset_spec, seed)

    def clean_factory(config: Any, dataset_spec: Any, seed: int) -> Any:
        """Every planted defect fixed (must be equivalent to the reference)."""
        return build(build_module(stem, "all"), config, dataset_spec, seed)

    def factory_fixing(ids: Iterable[str] | str) -> Callable[[Any, Any, int], Any]:
        """A factory of the trainer with the defects ``ids`` (or ``"all"``) fixed, the others in place."""
        fixed = ids if ids == "all" else tuple(ids)

        def fixing(config: Any, dataset_spec: Any, seed: int) -> Any:
            return build(build_module(stem, fixed), config, dataset_spec, seed)

        fixing.__qualname__ = fixing.__name__ = f"factory_fixing_{'all' if fixed == 'all' else '_'.join(fixed)}"
        return fixing

    def factory_only(ident: str) -> Callable[[Any, Any, int], Any]:
        """A factory of the trainer with only defect ``ident`` left in place (every other one fixed)."""
        from examples.wild.corpus import defect_ids

        others = [d for d in defect_ids(stem) if d != ident]
        if len(others) == len(defect_ids(stem)):
            raise AttributeError(f"{stem}: no defect {ident!r}")
        return factory_fixing(others)

    def module_getattr(name: str) -> Callable[[Any, Any, int], Any]:
        """Module-level ``__getattr__`` of an adapter: ``only_<ID>`` and ``fixing_<ID>_<ID>...`` are factories too,
        so ``--candidate examples.wild.<adapter>:only_B4`` audits one defect alone from the command line."""
        if name.startswith("only_"):
            return factory_only(name[len("only_"):])
        if name.startswith("fixing_"):
            from examples.wild.corpus import defect_ids

            ids = name[len("fixing_"):].split("_")
            unknown = set(ids) - set(defect_ids(stem))
            if unknown:
                raise AttributeError(f"{stem}: no defect(s) {sorted(unknown)}")
            return factory_fixing(ids)
        raise AttributeError(name)

    return factory, clean_factory, factory_fixing, factory_only, module_getattr
