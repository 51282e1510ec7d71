"""Adapter: the IQL trainer in ``examples/user_pogo_iql_broken.py`` (four planted defects) through the Trainer
protocol, with every optional method the harness uses (``named_tensors``, ``optimizers``, ``evaluate``,
``gradients``, ``policies``).

    pogo-audit equivalence --algo iql --candidate examples.broken_adapter:factory --eval-every 10   # the defects
    pogo-audit equivalence --algo iql --candidate examples.broken_adapter:fixed_factory             # (a)-(c) fixed
    pogo-audit adapt --algo iql --candidate examples.broken_adapter:raw_factory                     # the tables below

``PARAMETERS`` is what ``pogo-audit adapt`` proposed for the user's object (module by module; IQL's ``TwinQ`` is
two networks ``q1``/``q2`` here, and its target two networks ``q1_targ``/``q2_targ``).

Optional hooks for the review report: ``make_config(**fields)`` (module level, onto the user's ``IQLConfig``),
``log``/``read_log`` (the user's JSONL, in a temporary directory) and ``save_checkpoint``/``load_checkpoint``. Each
exposes one planted defect: (e) ``w2_weights`` padded/cut, (f) ``float()`` of every logged value, (g) a checkpoint
written in place with the weights only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.tensor_table import TensorTable
from examples.user_pogo_iql_broken import POGOIQL, IQLConfig

# user module -> (canonical "<role>/<module>", the reference's key prefix replacing the user's first key component)
MODULES = {
    "pi": ("actor0/actor", "net.net"),
    "q1": ("critic/qf", "q1.net"),
    "q2": ("critic/qf", "q2.net"),
    "v": ("critic/vf", "v.net"),
    "q1_targ": ("target/q_target", "q1.net"),
    "q2_targ": ("target/q_target", "q2.net"),
}
LOG_KEYS = {"v_loss": "critic/value_loss", "q_loss": "critic/q_loss", "pi_loss": "actor0/loss"}
# IQL hyper-parameters that may come from the audit config (`--set base.beta=...`): reference name -> user name
HPARAMS = {"discount": "discount", "tau": "tau", "beta": "beta", "iql_tau": "expectile", "max_timesteps": "max_steps"}


def make_config(**fields: Any) -> IQLConfig:
    """Our canonical POGO fields on the user's config: ``actor_configs`` (every actor, actor0 first) ->
    ``actor_types``; ``num_actors``, ``w2_weights``, ``seed`` keep their names; other fields go to ``IQLConfig``."""
    if "actor_configs" in fields:
        actors = fields.pop("actor_configs")
        fields["actor_types"] = [a.get("type") if isinstance(a, Mapping) else a for a in actors] \
            if isinstance(actors, (list, tuple)) else actors
    return IQLConfig(**fields)


def canonical(module: str, key: str) -> str:
    """``("q2", "body.4.bias")`` -> ``"critic/qf/q2.net.4.bias"``; ``("pi", "log_std")`` -> ``"actor0/actor/log_std"``."""
    prefix, rest = MODULES[module]
    head, dot, tail = key.partition(".")
    return f"{prefix}/{rest}.{tail}" if dot else f"{prefix}/{key}"


class GaussianView:
    """What the W2 oracle needs of a Gaussian actor (see examples/README.md, "Optional methods")."""

    stochastic = True
    gaussian = True

    def __init__(self, net: torch.nn.Module):
        self.net = net

    def mean_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.net(obs)
        return dist.mean, dist.stddev.expand_as(dist.mean)

    def action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).mean

    def sample(self, obs: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        mean, std = self.mean_std(obs)
        noise = torch.randn((obs.shape[0], k, mean.shape[-1]), generator=generator, dtype=mean.dtype)
        return mean[:, None, :] + std[:, None, :] * noise


class ProtocolTrainer(TensorTable):
    def __init__(self, user: POGOIQL):
        self.user = user
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    def step(self, batch) -> dict[str, float]:
        out = {}
        for key, value in self.user.train(batch).items():
            if key.startswith("chain"):  # chain<i>/<name> -> actor<i>/<name>
                head, name = key.split("/")
                key = f"actor{head[len('chain'):]}/{name}"
            out[LOG_KEYS.get(key, key)] = value
        return out

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Canonical name -> live tensor (one table for parameters, loading, gradients and optimizers)."""
        named = {canonical(m, k): t for m in MODULES
                 for k, t in getattr(self.user, m).state_dict(keep_vars=True).items()}
        for i, actor in enumerate(self.user.chain, start=1):
            named.update({f"actor{i}/{k}": t for k, t in actor.state_dict(keep_vars=True).items()})
        return named

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"v": self.user.v_opt, "q": self.user.q_opt, "pi": self.user.pi_opt}

    def evaluate(self, seed: int, episodes: int) -> dict[str, float]:
        return self.user.evaluate(seed, episodes)

    def policies(self) -> list[GaussianView]:
        return [GaussianView(actor) for actor in self.user.actors()]

    def log(self, metrics: Mapping[Any, Any], step: int) -> None:
        """The user's logger, pointed at a temporary directory at the first call."""
        if self._log_dir is None:
            self._log_dir = tempfile.TemporaryDirectory(prefix="pogo-iql-log-")
            self.user.log_path = Path(self._log_dir.name) / "metrics.jsonl"
        self.user.log(dict(metrics), step)

    def read_log(self) -> list[dict[str, Any]]:
        return self.user.read_log() if self._log_dir is not None else []

    def save_checkpoint(self, path: str) -> None:
        self.user.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        self.user.load_checkpoint(path)


def _build(config, dataset_spec, seed: int, fixed: bool) -> POGOIQL:
    hparams = {user: config.base[ref] for ref, user in HPARAMS.items() if ref in config.base}
    return POGOIQL(dataset_spec.state_dim, dataset_spec.action_dim, dataset_spec.max_action, seed=seed,
                   chain_weights=config.w2_weights, env_name=dataset_spec.env_id,
                   state_mean=None if dataset_spec.state_mean is None else np.asarray(dataset_spec.state_mean),
                   state_std=None if dataset_spec.state_std is None else np.asarray(dataset_spec.state_std),
                   fixed=fixed, **hparams)


def factory(config, dataset_spec, seed: int) -> ProtocolTrainer:
    """The trainer as written: seven defects."""
    return ProtocolTrainer(_build(config, dataset_spec, seed, fixed=False))


def fixed_factory(config, dataset_spec, seed: int) -> ProtocolTrainer:
    """The trainer with (a), (b) and (c) fixed; the harmless gradient leak (d) stays."""
    return ProtocolTrainer(_build(config, dataset_spec, seed, fixed=True))


def raw_factory(config, dataset_spec, seed: int) -> POGOIQL:
    """The user's object itself, no adapter: what ``pogo-audit adapt`` starts from."""
    return _build(config, dataset_spec, seed, fixed=False)
