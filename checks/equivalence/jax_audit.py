"""Equivalence of the JAX multi-actor ReBRAC with the CORL-faithful JAX reference, step by step.

The harness is :func:`checks.equivalence.run_equivalence` unchanged in spirit; this module supplies what is JAX- and
ReBRAC-specific:

* the data: ``pogo_audit.runtime.data.load_transitions`` + ``preprocess`` with ReBRAC's rules (states normalised
  only with
  ``base.normalize_states``, default False; rewards ×100 for antmaze with ``base.normalize_reward``), in CORL's
  buffer layout (``states``, ``actions``, ``rewards`` [M], ``next_states``, ``next_actions``, ``dones`` [M]);
* :class:`DictBatchSampler`: dict batches of numpy arrays drawn by a ``numpy.random.Generator`` seeded with
  ``derived_seed(seed, BUFFER_OFFSET)`` (the harness only calls ``sample(batch_size)``);
* :class:`JaxChainOracle`: the ``chain/actor<i>/w2`` observables. The PyTorch oracle (:mod:`checks.equivalence.oracle`)
  needs torch policies and list batches; this one rebuilds every actor from the candidate's start-of-step
  parameters in float64 numpy (its own forward pass, not the trainer's code), draws its own samples, and computes
  W2² with POT/numpy under exactly the PyTorch oracle's rules and tolerances.

JAX trainers use no global RNG, so the harness's ``rng/torch`` / ``rng/numpy`` digests only prove they stay
untouched; the reference key chain is compared through ``rng/key`` (bitwise).

With ``--isolate`` the candidate loads the reference's update state before every step (``jax_state`` /
``load_jax_state``, :mod:`checks.equivalence.isolate`) and the step where a finding first shows is localised by
diffing both
trainers' traced critic/actor0 update (``traced_update``, :func:`checks.localise.jax_trace.localise_jax_step`).
"""

from __future__ import annotations

import contextlib

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from checks.equivalence.lockstep import Localiser, run_equivalence
from checks.equivalence.options import EquivalenceOptions
from checks.equivalence.oracle import ORACLE_SEED, PolicyView, compare_chain, oracle_w2
from checks.equivalence.verdict import harness_error
from pogo_audit.model.results import CheckResult

BATCH_KEYS = ("states", "actions", "rewards", "next_states", "next_actions", "dones")
LAYERNORM_EPS = 1e-6  # Flax's default
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


# ---------------------------------------------------------------------------------------------------------- data


def rebrac_buffer(processed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """d4rl-style arrays (after ``preprocess``) -> CORL ReBRAC buffer fields, float32, rewards/dones 1-D."""
    return {
        "states": np.asarray(processed["observations"], np.float32),
        "actions": np.asarray(processed["actions"], np.float32),
        "rewards": np.asarray(processed["rewards"], np.float32).reshape(-1),
        "next_states": np.asarray(processed["next_observations"], np.float32),
        "next_actions": np.asarray(processed["next_actions"], np.float32),
        "dones": np.asarray(processed["terminals"], np.float32).reshape(-1),
    }


def prepare_rebrac_data(config: Any) -> tuple[dict[str, np.ndarray], Any]:
    """``config.dataset`` with ReBRAC's CORL preprocessing -> (buffer arrays, DatasetSpec)."""
    from multi_actor.jax_trainer import rebrac_config
    from pogo_audit.runtime.data import DatasetSpec, env_max_action, load_transitions, preprocess

    cfg = rebrac_config(config, 0)
    transitions = load_transitions(config.dataset)
    processed, pre = preprocess(transitions, bool(cfg.normalize_states),
                                "rebrac" if cfg.normalize_reward else "none")
    spec = DatasetSpec.from_transitions(transitions, env_max_action(config.dataset), pre.state_mean, pre.state_std)
    return rebrac_buffer(processed), spec


class DictBatchSampler:
    """Uniform batches (with replacement) as dicts of numpy arrays; indices from its own seeded Generator only."""

    def __init__(self, data: Mapping[str, np.ndarray], seed: int):
        self.arrays = {k: np.ascontiguousarray(data[k]) for k in BATCH_KEYS}
        self.size = int(self.arrays["states"].shape[0])
        if self.size == 0:
            raise ValueError("batch sampler: the dataset has no transitions")
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return {k: v[idx] for k, v in self.arrays.items()}


# ---------------------------------------------------------------------------------------------------- W2 oracle


def _dense_forward(params: Mapping[str, np.ndarray], x: np.ndarray, layernorm: bool) -> np.ndarray:
    """Flax MLP ``Dense_0 .. Dense_n`` (ReLU, then LayerNorm_k when present, between them), float64."""
    dense = sorted({k.split("/")[0] for k in params if k.startswith("Dense_")}, key=lambda n: int(n.split("_")[1]))
    for idx, name in enumerate(dense):
        x = x @ params[f"{name}/kernel"] + params[f"{name}/bias"]
        if idx < len(dense) - 1:
            x = np.maximum(x, 0.0)
            if layernorm:
                mean = x.mean(-1, keepdims=True)
                var = ((x - mean) ** 2).mean(-1, keepdims=True)
                x = (x - mean) / np.sqrt(var + LAYERNORM_EPS) * params[f"LayerNorm_{idx}/scale"] + \
                    params[f"LayerNorm_{idx}/bias"]
    return x


class NumpyPolicy:
    """An actor rebuilt from its parameters (float64), the oracle's own forward pass and sampling."""

    def __init__(self, spec: Mapping[str, Any], params: Mapping[str, np.ndarray]):
        self.kind = spec["type"]
        self.stochastic = self.kind in ("gaussian", "tanh_gaussian")
        self.gaussian = self.kind == "gaussian"
        self.max_action = float(spec["max_action"])
        self.layernorm = bool(spec["layernorm"])
        self.params = {k: np.asarray(v, np.float64) for k, v in params.items()}

    def _out(self, obs: np.ndarray) -> np.ndarray:
        return _dense_forward(self.params, np.asarray(obs, np.float64), self.layernorm)

    def _two(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first, log_std = np.split(self._out(obs), 2, axis=-1)
        return first, np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))

    def action(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action (only asked of deterministic actors)."""
        return self.max_action * np.tanh(self._out(obs))

    def mean_std(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self._two(obs)
        return self.max_action * np.tanh(mean), std

    def sample(self, obs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        if not self.stochastic:
            a = self.action(obs)
            return np.broadcast_to(a[:, None, :], (a.shape[0], k, a.shape[1]))
        first, std = self._two(obs)
        z = rng.standard_normal((first.shape[0], k, first.shape[1]))
        if self.gaussian:
            return self.max_action * np.tanh(first)[:, None, :] + std[:, None, :] * z
        return self.max_action * np.tanh(first[:, None, :] + std[:, None, :] * z)


class JaxChainOracle:
    """``chain/actor<i>/w2``: W2² of actor i to actor i-1 *as they were at the start of the step*.

    Same estimands and tolerances as :class:`checks.equivalence.oracle.ChainOracle`: exact for Dirac and Gaussian
    pairs, ``E||X - b||²`` for a deterministic side (exact for a Gaussian X, else 256 samples), and for other
    stochastic pairs exact OT (an optimal assignment, :func:`checks.equivalence.oracle.assignment_w2`) between fresh
    empirical measures of the trainer's sample size K.
    """

    def __init__(self, trainer: Any, config: Any):
        self.trainer = trainer
        self.spec = trainer.chain_spec()
        self.method = getattr(config, "w2_method", "auto")
        self.samples = int(getattr(config, "w2_samples", 16))
        self.rng = np.random.default_rng(ORACLE_SEED)

    @classmethod
    def for_trainer(cls, trainer: Any, config: Any) -> JaxChainOracle | None:
        if not hasattr(trainer, "chain_spec") or len(trainer.chain_spec()) < 2:
            return None
        return cls(trainer, config)

    def snapshot(self) -> list[NumpyPolicy]:
        """Every actor rebuilt from the trainer's current (= start-of-step) parameters."""
        params = self.trainer.parameters()
        out = []
        for spec in self.spec:
            prefix = spec["prefix"]
            out.append(NumpyPolicy(spec, {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}))
        return out

    def view(self, policy: NumpyPolicy) -> PolicyView:
        rng = self.rng
        return PolicyView(policy.stochastic, policy.gaussian, policy.action, policy.mean_std,
                          lambda o, k: policy.sample(o, k, rng))

    def exact_w2(self, p: NumpyPolicy, q: NumpyPolicy, obs: np.ndarray) -> tuple[float, tuple[float, float]]:
        return oracle_w2(self.view(p), self.view(q), obs, self.method, self.samples)

    def check(self, pre: Sequence[NumpyPolicy], batch: Mapping[str, np.ndarray], reported: Mapping[str, Any]):
        """Oracle values (reference side), reported values (candidate side) and per-observable tolerances."""
        obs = np.asarray(batch["states"], np.float64)
        return compare_chain(pre, reported, lambda p, q: self.exact_w2(p, q, obs))


# ----------------------------------------------------------------------------------------------------- the check


@contextlib.contextmanager
def full_precision_matmuls() -> Iterator[None]:
    """float32 matmuls in full float32 on every backend for the run (JAX's GPU default is TF32, ~1e-3 relative).

    Both trainers see the same setting, so it cannot hide a difference between them; it keeps the float64 chain
    oracle meaningful: with TF32 the reported closed-form W2 parted from the oracle by 4.7e-4 relative on an H200.
    On XLA:CPU float32 matmuls are already full precision, so CPU results are unchanged.
    """
    import jax

    with jax.default_matmul_precision("highest"):
        yield


def equivalence_for_rebrac(config: Any, options: EquivalenceOptions,
                           reference: tuple[str, Callable[..., Any]] | None = None,
                           candidate: tuple[str, Callable[..., Any]] | None = None,
                           progress: Callable[[int], None] | None = None) -> CheckResult:
    """Equivalence on ``config.dataset`` with ReBRAC's preprocessing; defaults compare the JAX ReBRAC reference with
    :class:`multi_actor.jax_trainer.MultiActorReBRAC`. A trainer that raises yields verdict ``fail`` with
    ``metrics["crash"]`` (as for PyTorch, :func:`checks.equivalence.run_equivalence`); a failure of the harness
    itself yields verdict ``error``.

    Batch size: ``options.batch_size``, else ``config.batch_size``, else ReBRAC's ``batch_size`` (``config.base``).
    The chain oracle is :class:`JaxChainOracle` (the candidate must offer ``chain_spec()``; others get none).
    ``options.isolate``: see the module docstring (trainers without ``jax_state`` are not synchronised).
    """
    from checks.localise.jax_trace import jax_snapshot, localise_jax_step
    from multi_actor.jax_trainer import rebrac_config, rebrac_multi_actor_factory, rebrac_reference_factory
    from pogo_audit.runtime.errors import PogoAuditError
    from pogo_audit.runtime.seeding import BUFFER_OFFSET, derived_seed

    config = config.resolved()
    data, spec = prepare_rebrac_data(config)
    sampler = DictBatchSampler(data, derived_seed(options.seed, BUFFER_OFFSET))
    batch_size = options.batch_size or rebrac_config(config, options.seed).batch_size
    ref_label, ref_factory = reference or ("reference_algos.jax.rebrac (CORL-faithful)", rebrac_reference_factory)
    cand_label, cand_factory = candidate or ("multi_actor.jax_trainer.MultiActorReBRAC", rebrac_multi_actor_factory)
    t0 = time.perf_counter()
    try:
        with full_precision_matmuls():
            return run_equivalence("rebrac", config, spec, sampler, ref_factory, cand_factory, options, progress,
                                   (ref_label, cand_label), batch_size, chain_oracle=JaxChainOracle.for_trainer,
                                   localiser=Localiser(jax_snapshot, localise_jax_step))
    except PogoAuditError:
        raise
    except Exception as exc:  # not a trainer call (those are crash findings): the harness itself failed
        return harness_error("rebrac", exc, (ref_label, cand_label), options.mode, time.perf_counter() - t0)
