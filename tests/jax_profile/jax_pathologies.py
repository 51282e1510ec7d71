"""Tiny MLP regression training loops, each with one JAX performance pathology (and one clean loop).

Every factory returns a fresh object with the ``pogo-audit jax-profile --target`` protocol (``step()``, optionally
``epoch()`` + ``updates_per_epoch``); jitted functions are ``jax.jit(partial(...))`` per instance, so each object
compiles its own programs (two ``jax.jit`` of the same function would share JAX's caches).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

LR = 0.05
UPDATES_PER_EPOCH = 8


def init_mlp(key: jax.Array, sizes: tuple[int, ...] = (4, 16, 1)) -> dict[str, jax.Array]:
    params = {}
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        params[f"w{i}"] = jax.random.normal(sub, (m, n)) / jnp.sqrt(m)
        params[f"b{i}"] = jnp.zeros((n,))
    return params


def mlp(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["w0"] + params["b0"])
    return h @ params["w1"] + params["b1"]


def mse(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    return ((mlp(params, x) - y) ** 2).mean()


def sgd_step(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, lr: float) -> tuple[dict, jax.Array]:
    loss, grads = jax.value_and_grad(mse)(params, x, y)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss


def sgd_epoch(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, lr: float, n: int) -> tuple[dict, jax.Array]:
    def body(p: dict[str, jax.Array], _: None) -> tuple[dict, jax.Array]:
        return sgd_step(p, x, y, lr)

    return jax.lax.scan(body, params, None, length=n)


def sgd_step_accumulate(params: dict[str, jax.Array], total: jax.Array, x: jax.Array, y: jax.Array,
                        lr: float) -> tuple[dict, jax.Array]:
    params, loss = sgd_step(params, x, y, lr)
    return params, total + loss


class _Regression:
    def __init__(self) -> None:
        kx, kp = jax.random.split(jax.random.PRNGKey(0))
        self.x = jax.random.normal(kx, (64, 4))
        self.y = jnp.sin(self.x.sum(axis=1, keepdims=True))
        self.params = init_mlp(kp)


class CleanLoop(_Regression):
    """Jitted step and a jitted ``lax.scan`` epoch, device-resident data, no host round trip."""

    updates_per_epoch = UPDATES_PER_EPOCH

    def __init__(self) -> None:
        super().__init__()
        self.step_fn = jax.jit(partial(sgd_step, lr=LR))
        self._epoch = jax.jit(partial(sgd_epoch, lr=LR, n=UPDATES_PER_EPOCH))

    def step(self) -> jax.Array:
        self.params, loss = self.step_fn(self.params, self.x, self.y)
        return loss

    def epoch(self) -> jax.Array:
        self.params, losses = self._epoch(self.params, self.x, self.y)
        return losses


class UnjittedStep(_Regression):
    """The step runs op by op: no ``jax.jit`` anywhere on its path."""

    def step(self) -> jax.Array:
        self.params, loss = sgd_step(self.params, self.x, self.y, LR)
        return loss


class FreshJitPerCall(_Regression):
    """``jax.jit`` of a new lambda on every call: a new function object, so a trace and a compile per step."""

    def step(self) -> jax.Array:
        self.params, loss = jax.jit(lambda p: sgd_step(p, self.x, self.y, LR))(self.params)
        return loss


class StaticFloatArgument(_Regression):
    """A decaying learning rate passed as a static argument: a new cache key, hence a compile, every step."""

    def __init__(self) -> None:
        super().__init__()
        self._step = jax.jit(partial(sgd_step), static_argnames="lr")
        self.t = 0

    def step(self) -> jax.Array:
        self.t += 1
        self.params, loss = self._step(self.params, self.x, self.y, lr=LR / (1 + 0.1 * self.t))
        return loss


class WeakTypedAccumulator(_Regression):
    """A Python ``0.0`` carried into a jitted step comes back as a strong float32 array: one retrace at step 2."""

    def __init__(self) -> None:
        super().__init__()
        self._step = jax.jit(partial(sgd_step_accumulate, lr=LR))
        self.total = 0.0

    def step(self) -> jax.Array:
        self.params, self.total = self._step(self.params, self.total, self.x, self.y)
        return self.total


class PerStepFloatSync(_Regression):
    """Jitted step, but ``float(loss)`` every step blocks on the device and copies the loss to the host."""

    def __init__(self) -> None:
        super().__init__()
        self._step = jax.jit(partial(sgd_step, lr=LR))
        self.history: list[float] = []

    def step(self) -> jax.Array:
        self.params, loss = self._step(self.params, self.x, self.y)
        self.history.append(float(loss))
        return loss


#: the batches the inline evaluation below reads one by one (more than an epoch's updates)
EVAL_BATCHES = 16


class InlineEvaluation(_Regression):
    """Jitted updates; every ``epoch()`` ends with the evaluation ``evaluate()`` runs, which reads each of its
    ``EVAL_BATCHES`` losses with ``float()``: syncs per evaluation, not per update."""

    updates_per_epoch = UPDATES_PER_EPOCH

    def __init__(self) -> None:
        super().__init__()
        self._step = jax.jit(partial(sgd_step, lr=LR))
        self._loss = jax.jit(mse)

    def step(self) -> jax.Array:
        self.params, loss = self._step(self.params, self.x, self.y)
        return loss

    def epoch(self) -> jax.Array:
        for _ in range(self.updates_per_epoch):
            loss = self.step()
        self.evaluate()
        return loss

    def evaluate(self) -> float:
        x, y = self.x.reshape(EVAL_BATCHES, -1, 4), self.y.reshape(EVAL_BATCHES, -1, 1)
        return sum(float(self._loss(self.params, x[i], y[i])) for i in range(EVAL_BATCHES))  # marker: eval sync


def clean_loop() -> CleanLoop:
    return CleanLoop()


def unjitted_step() -> UnjittedStep:
    return UnjittedStep()


def fresh_jit_per_call() -> FreshJitPerCall:
    return FreshJitPerCall()


def static_float_argument() -> StaticFloatArgument:
    return StaticFloatArgument()


def weak_typed_accumulator() -> WeakTypedAccumulator:
    return WeakTypedAccumulator()


def per_step_float_sync() -> PerStepFloatSync:
    return PerStepFloatSync()


def inline_evaluation() -> InlineEvaluation:
    return InlineEvaluation()
