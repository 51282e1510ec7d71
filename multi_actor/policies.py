"""Policy types of the actor chain, with one interface for actors i ≥ 1 and for actor0.

Actors i ≥ 1 are new networks (``deterministic``, ``gaussian``, ``tanh_gaussian``, ``implicit``). Actor0 is the
reference algorithm's own actor module; :func:`actor0_view` wraps it in the same interface *without* changing it, so
the base algorithm still runs its own code on it. Every random draw here takes an explicit ``torch.Generator`` —
these paths never touch the global RNG the critic and actor0 use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
TANH_EPS = 1e-6


def _mlp(in_dim: int, out_dim: int, hidden_dim: int, n_hidden: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU()]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def _normal(shape: torch.Size | tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None):
    if generator is None:
        raise ValueError("stochastic policies here sample only from an explicit torch.Generator")
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _gaussian(mean: torch.Tensor, std: torch.Tensor) -> Normal:
    """``Normal(mean, std)`` without argument validation: each check is a host synchronisation (a device-to-host
    transfer per call on a GPU) and shows nothing the loss does not (an invalid std gives a NaN loss, logged)."""
    return Normal(mean, std, validate_args=False)


@dataclass
class _Memo:
    """The network output on one input tensor (``input`` by identity, unchanged in place since it was armed:
    ``input_version``), the parameter versions it was computed with and whether it carries the autograd graph
    (``grad``); ``output`` None until first computed. ``params``: the policy's parameters when armed (listing them
    walks the module tree, ~50 µs, on every memo access otherwise); ``derived``: what :meth:`Policy._from_net`
    computed from ``output`` (key -> (output it came from, grad mode, value))."""

    input: torch.Tensor
    output: torch.Tensor | None = None
    versions: tuple[int, ...] = ()
    grad: bool = False
    input_version: int = -1
    params: tuple[torch.Tensor, ...] = ()
    derived: dict[str, tuple[Any, bool, Any]] = field(default_factory=dict)


class Policy(nn.Module):
    """Interface of every actor in the chain.

    ``action`` gives differentiable actions (one reparameterized sample for stochastic policies); ``sample`` gives
    K samples per state ``[B, K, A]``; ``log_prob`` (where defined) scores given actions; ``mean_std`` (Gaussian
    policies) gives the closed-form parameters in action space; ``act`` is the evaluation action for one state.
    """

    kind: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False
    gaussian: ClassVar[bool] = False
    has_log_prob: ClassVar[bool] = False

    def __init__(self, action_dim: int, max_action: float):
        super().__init__()
        self.action_dim = action_dim
        self.max_action = max_action

    def action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, obs: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        """K actions per state, [B, K, A] (for deterministic policies K copies of the action)."""
        rep = obs.unsqueeze(1).expand(obs.shape[0], k, obs.shape[-1]).reshape(obs.shape[0] * k, obs.shape[-1])
        return self.action(rep, generator).reshape(obs.shape[0], k, -1)

    def sample_with_log_prob(self, obs: torch.Tensor,
                             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{self.kind} policies have no log-probability")

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.kind} policies have no log-probability")

    def mean_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{self.kind} policies are not Gaussian")

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Evaluation action (the mean / mode)."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, state: np.ndarray, deterministic: bool = True,
            generator: torch.Generator | None = None) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(state, dtype=np.float32).reshape(1, -1))
        out = self.deterministic_action(obs) if deterministic or not self.stochastic else self.action(obs, generator)
        return out[0].cpu().numpy()

    # memoized network output (actors i >= 1) ------------------------------------------------------------------
    #
    # The energy and the W2 term of an extra actor both evaluate its network on the same batch of states, and the
    # W2 term of actor i+1 evaluates actor i (not stepped yet, its start-of-step state) on the same states again.
    # The trainer arms a memo for that batch so the network runs once per step and actor; the memo is exact (same
    # input tensor unchanged in place, same parameter versions): a change since means a fresh forward.

    _memo: _Memo | None = None

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        """``self.net(x)``, computed once per armed input while the parameters are unchanged."""
        memo = self._memo
        if memo is None or memo.input is not x or x._version != memo.input_version:
            return self.net(x)
        versions, grad = tuple(p._version for p in memo.params), torch.is_grad_enabled()
        if memo.output is None or memo.versions != versions or (grad and not memo.grad):
            memo.output, memo.versions, memo.grad = self.net(x), versions, grad
        return memo.output

    def _from_net(self, x: torch.Tensor, key: str, fn: Callable[[torch.Tensor], Any]) -> Any:
        """``fn(self._net(x))``, kept beside the memoized output while it is current: the energy, the W2 term and
        the next actor's W2 reference read the same actions or ``mean_std``, whose elementwise ops (and their
        backward nodes) then run once per step. Recomputed when the output is, or when grad mode asks for a graph
        the kept value lacks."""
        out = self._net(x)
        memo = self._memo
        if memo is None or memo.output is not out:
            return fn(out)
        grad = torch.is_grad_enabled()
        kept = memo.derived.get(key)
        if kept is None or kept[0] is not out or (grad and not kept[1]):
            kept = memo.derived[key] = (out, grad, fn(out))
        return kept[2]

    def remember(self, x: torch.Tensor) -> None:
        """Arm the memo for input ``x`` (computed on first use)."""
        self._memo = _Memo(x, input_version=x._version, params=tuple(self.parameters()))

    #: parameter versions of (this policy, its source) right after :meth:`copy_from`
    _copied: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    #: (source, this policy's parameters, the source's, this policy's buffers, the source's) of the last
    #: :meth:`copy_from`: listing them walks both module trees, most of a small policy's copy time; the tensors
    #: themselves stay the same objects (loads and casts copy into them)
    _copy_plan: tuple[Any, ...] | None = None

    def copy_from(self, source: Policy) -> None:
        """Copy ``source``'s parameters and buffers into this policy, a deep copy of it (a start-of-step snapshot;
        tensor by tensor, a fifth of ``load_state_dict``'s cost), and remember both sides' versions."""
        plan = self._copy_plan
        if plan is None or plan[0] is not source:
            plan = (source, tuple(self.parameters()), tuple(source.parameters()), tuple(self.buffers()),
                    tuple(source.buffers()))
            if len(plan[1]) != len(plan[2]) or len(plan[3]) != len(plan[4]):
                raise ValueError(f"copy_from: {type(source).__name__} is not a copy of {type(self).__name__}")
            self._copy_plan = plan
        _, mine, theirs, my_buffers, their_buffers = plan
        with torch.no_grad():
            for a, b in zip((*mine, *my_buffers), (*theirs, *their_buffers)):
                a.copy_(b)
        self._copied = (tuple(p._version for p in mine), tuple(p._version for p in theirs))

    def adopt_output(self, x: torch.Tensor, output: Any, source_versions: tuple[int, ...]) -> None:
        """Take ``output`` — the network output of the policy this one copied, on ``x``, computed at parameter
        versions ``source_versions`` and carrying no graph — as this policy's memo, only when this policy still
        holds exactly those parameters (it copied that source at those versions and did not change since). The
        graph-less output stands for a grad-mode forward only when no parameter here requires grad."""
        if self._copy_plan is None:
            return
        params = self._copy_plan[1]
        if self._copied == (tuple(p._version for p in params), source_versions):
            self._memo = _Memo(x, output, self._copied[0], grad=not any(p.requires_grad for p in params),
                               input_version=x._version, params=params)

    def forget(self) -> None:
        """Drop the memo (and the autograd graph it holds)."""
        self._memo = None


def param_versions(module: nn.Module) -> tuple[int, ...]:
    """In-place version counters of ``module``'s parameters: equal tuples mean unchanged parameters."""
    return tuple(p._version for p in module.parameters())


def detached(output: Any) -> Any:
    """A network output without its autograd graph: tensors detached, a ``Normal`` rebuilt from detached
    parameters; None for any other output type (not reusable)."""
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, Normal):
        return _gaussian(output.loc.detach(), output.scale.detach())
    return None


class StartOutput:
    """Forward hook recording what a module computed on this step's inputs at its start-of-step parameters.

    The trainer arms it at the start of a step with the batch tensors the base algorithm receives; every forward
    of the hooked module whose leading arguments are those very tensors (identity, unchanged in place) and whose
    parameters are still those of the arming time is kept — by reference, without running any operation, so the
    base algorithm's recorded work is unchanged. :meth:`take` returns the output when exactly one such forward
    ran (else None: not computed, or ambiguous) together with the parameter versions it was computed at, and
    disarms. A deep copy of the trainer copies the hook with it (it is an object, not a closure)."""

    def __init__(self) -> None:
        self._inputs: tuple[torch.Tensor, ...] | None = None
        self._input_versions: tuple[int, ...] = ()
        self._params: tuple[torch.Tensor, ...] = ()
        #: the hooked module and its parameters, listed once (a module-tree walk per step otherwise)
        self._module: nn.Module | None = None
        self._module_params: tuple[torch.Tensor, ...] = ()
        self._versions: tuple[int, ...] = ()
        self._outputs: list[Any] = []

    def arm(self, module: nn.Module, *inputs: torch.Tensor) -> None:
        if self._module is not module:
            self._module, self._module_params = module, tuple(module.parameters())
        self._inputs, self._outputs, self._params = inputs, [], self._module_params
        self._input_versions = tuple(t._version for t in inputs)
        self._versions = tuple(p._version for p in self._params)

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        inputs = self._inputs
        if inputs is None or len(args) < len(inputs) or any(a is not b for a, b in zip(args, inputs)):
            return
        if tuple(t._version for t in inputs) == self._input_versions and \
                tuple(p._version for p in self._params) == self._versions:
            self._outputs.append(output)

    def take(self) -> tuple[Any, tuple[int, ...]]:
        """``(output or None, parameter versions at arming)``; disarms and drops the references."""
        out = self._outputs[0] if len(self._outputs) == 1 else None
        self._inputs, self._outputs, self._params = None, [], ()
        return out, self._versions


class _DiagonalGaussian:
    """Sampling and log-probs of a diagonal Normal given by ``mean_std`` (reparameterized, explicit generator)."""

    def action(self, obs, generator=None):
        mean, std = self.mean_std(obs)
        return mean + std * _normal(mean.shape, mean, generator)

    def sample_with_log_prob(self, obs, generator):
        mean, std = self.mean_std(obs)
        a = mean + std * _normal(mean.shape, mean, generator)
        return a, _gaussian(mean, std).log_prob(a).sum(-1)

    def log_prob(self, obs, actions):
        mean, std = self.mean_std(obs)
        return _gaussian(mean, std).log_prob(actions).sum(-1)


class _SquashedGaussian:
    """``max_action * tanh(u)``, ``u ~ N(pre_tanh(obs))``; log-probs with SAC-N's ``log(1 - tanh² + 1e-6)``."""

    def action(self, obs, generator=None):
        mu, std = self.pre_tanh(obs)
        return self.max_action * torch.tanh(mu + std * _normal(mu.shape, mu, generator))

    def sample_with_log_prob(self, obs, generator):
        from reference_algos.torch.sac_n import tanh_gaussian_log_prob

        mu, std = self.pre_tanh(obs)
        u = mu + std * _normal(mu.shape, mu, generator)
        tanh_u = torch.tanh(u)
        return self.max_action * tanh_u, tanh_gaussian_log_prob(_gaussian(mu, std), u, tanh_u)

    def deterministic_action(self, obs):
        return self.max_action * torch.tanh(self.pre_tanh(obs)[0])


# ------------------------------------------------------------------------------------------- actors i >= 1


class DeterministicPolicy(Policy):
    """``max_action * tanh(MLP(s))``."""

    kind = "deterministic"

    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden_dim: int = 256, n_hidden: int = 2):
        super().__init__(action_dim, max_action)
        self.net = _mlp(state_dim, action_dim, hidden_dim, n_hidden)

    def action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._from_net(obs, "action", self._squash)

    def _squash(self, out: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(out)

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action(obs)


class GaussianPolicy(_DiagonalGaussian, Policy):
    """Diagonal Normal with bounded mean ``max_action * tanh(.)`` and state-dependent std (log-std in [-5, 2])."""

    kind = "gaussian"
    stochastic = True
    gaussian = True
    has_log_prob = True

    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden_dim: int = 256, n_hidden: int = 2):
        super().__init__(action_dim, max_action)
        self.net = _mlp(state_dim, 2 * action_dim, hidden_dim, n_hidden)

    def mean_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._from_net(obs, "mean_std", self._mean_std)

    def _mean_std(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = out.split(self.action_dim, dim=-1)
        return self.max_action * torch.tanh(mean), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_std(obs)[0]


class TanhGaussianPolicy(_SquashedGaussian, Policy):
    """Sample a diagonal Normal, then squash: ``max_action * tanh(u)``; log-prob with SAC-N's tanh correction."""

    kind = "tanh_gaussian"
    stochastic = True
    has_log_prob = True

    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden_dim: int = 256, n_hidden: int = 2):
        super().__init__(action_dim, max_action)
        self.net = _mlp(state_dim, 2 * action_dim, hidden_dim, n_hidden)

    def pre_tanh(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._from_net(obs, "pre_tanh", self._pre_tanh)

    def _pre_tanh(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = out.split(self.action_dim, dim=-1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        from reference_algos.torch.sac_n import tanh_gaussian_log_prob

        mu, std = self.pre_tanh(obs)
        y = (actions / self.max_action).clamp(-1 + TANH_EPS, 1 - TANH_EPS)
        return tanh_gaussian_log_prob(_gaussian(mu, std), torch.atanh(y), y)


class ImplicitPolicy(Policy):
    """Implicit stochastic policy: ``max_action * tanh(MLP([s, z]))`` with ``z ~ N(0, I)``; no log-probability."""

    kind = "implicit"
    stochastic = True

    def __init__(self, state_dim: int, action_dim: int, max_action: float, hidden_dim: int = 256, n_hidden: int = 2,
                 noise_dim: int | None = None):
        super().__init__(action_dim, max_action)
        self.noise_dim = noise_dim or action_dim
        self.net = _mlp(state_dim + self.noise_dim, action_dim, hidden_dim, n_hidden)

    def action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = _normal((*obs.shape[:-1], self.noise_dim), obs, generator)
        return self.max_action * torch.tanh(self.net(torch.cat([obs, z], dim=-1)))

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        z = obs.new_zeros((*obs.shape[:-1], self.noise_dim))
        return self.max_action * torch.tanh(self.net(torch.cat([obs, z], dim=-1)))


POLICY_CLASSES: dict[str, type[Policy]] = {
    cls.kind: cls for cls in (DeterministicPolicy, GaussianPolicy, TanhGaussianPolicy, ImplicitPolicy)
}


def build_policy(kind: str, state_dim: int, action_dim: int, max_action: float, hidden_dim: int = 256,
                 n_hidden: int = 2, noise_dim: int | None = None) -> Policy:
    cls = POLICY_CLASSES[kind]
    if cls is ImplicitPolicy:
        return ImplicitPolicy(state_dim, action_dim, max_action, hidden_dim, n_hidden, noise_dim)
    return cls(state_dim, action_dim, max_action, hidden_dim, n_hidden)


# ----------------------------------------------------------------------------------------------- actor0 views


class Actor0View(Policy):
    """Wraps a reference actor module (registered as a submodule, so snapshots copy it) in the Policy interface."""

    #: the training-time quantities come from the module's own forward on the states (so a start-of-step snapshot
    #: can take the output the base algorithm's actor update computed, :meth:`Policy.adopt_output`)
    memo_forward: ClassVar[bool] = False

    def __init__(self, module: nn.Module, action_dim: int, max_action: float):
        super().__init__(action_dim, max_action)
        self.module = module

    @property
    def net(self) -> nn.Module:
        """The wrapped module (what :meth:`Policy._net` memoizes for views whose training output is its forward)."""
        return self.module


class IQLGaussianView(_DiagonalGaussian, Actor0View):
    """IQL's Normal(tanh-MLP mean, state-independent std); training-time distribution, unscaled."""

    memo_forward = True
    kind = "gaussian"
    stochastic = True
    gaussian = True
    has_log_prob = True

    def mean_std(self, obs):
        dist = self._net(obs)
        return dist.mean, dist.stddev.expand_as(dist.mean)

    def deterministic_action(self, obs):
        return torch.clamp(self.max_action * self.module(obs).mean, -self.max_action, self.max_action)


class DeterministicView(Actor0View):
    """A deterministic reference actor whose forward returns the training-time action (IQL det., TD3+BC)."""

    memo_forward = True
    kind = "deterministic"

    def __init__(self, module: nn.Module, action_dim: int, max_action: float, eval_scale: float = 1.0):
        super().__init__(module, action_dim, max_action)
        self.eval_scale = eval_scale

    def action(self, obs, generator=None):
        return self._net(obs)

    def deterministic_action(self, obs):
        out = self.module(obs) * self.eval_scale
        return torch.clamp(out, -self.max_action, self.max_action)


class CQLTanhGaussianView(_SquashedGaussian, Actor0View):
    """CQL's tanh-Gaussian actor (mean and raw log-std from one head); log-probs with CQL's own TanhTransform."""

    kind = "tanh_gaussian"
    stochastic = True
    has_log_prob = True

    def pre_tanh(self, obs):
        mean, log_std = self.module._mean_log_std(obs)
        t = self.module.tanh_gaussian
        return mean, torch.exp(torch.clamp(log_std, t.log_std_min, t.log_std_max))

    def sample_with_log_prob(self, obs, generator):
        mu, std = self.pre_tanh(obs)
        u = mu + std * _normal(mu.shape, mu, generator)
        y = torch.tanh(u)
        # TanhTransform's own log|det J| evaluated at the pre-tanh sample (CORL's cached path, no atanh)
        log_prob = (_gaussian(mu, std).log_prob(u) - TanhTransform().log_abs_det_jacobian(u, y)).sum(-1)
        return self.max_action * y, log_prob


class AWACGaussianView(Actor0View):
    """AWAC's unsquashed Normal; samples clamped to [-1, 1] as AWAC's forward does; evaluation returns the mean."""

    kind = "gaussian"
    stochastic = True
    gaussian = True
    has_log_prob = True

    def mean_std(self, obs):
        dist = self.module._get_policy(obs)
        return dist.mean, dist.stddev.expand_as(dist.mean)

    def action(self, obs, generator=None):
        mean, std = self.mean_std(obs)
        return (mean + std * _normal(mean.shape, mean, generator)).clamp(-1.0, 1.0)

    def sample_with_log_prob(self, obs, generator):
        a = self.action(obs, generator)
        return a, self.module.log_prob(obs, a).squeeze(-1)

    def log_prob(self, obs, actions):
        return self.module.log_prob(obs, actions).squeeze(-1)

    def deterministic_action(self, obs):
        return self.mean_std(obs)[0]


class SACNTanhGaussianView(_SquashedGaussian, Actor0View):
    """SAC-N/EDAC actor: separate mu / log-sigma heads, tanh squash, ``log(1 - tanh^2 + 1e-6)`` correction."""

    kind = "tanh_gaussian"
    stochastic = True
    has_log_prob = True

    def pre_tanh(self, obs):
        return self.module.mean_std(obs)
