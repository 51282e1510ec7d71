"""Two tiny JAX trainers for ``jax-profile --target``: one with the defects a hand review of a real third-party
trainer found, one clean.

:class:`DefectiveTrainer` has exactly these defects, each on a line the tests look up by its marker comment:

* the step is never jitted (it runs op by op: ``update`` is called eagerly);
* host syncs behind a method call: ``Metrics.compute()`` on the object ``make_metrics()`` returns does
  ``if v[1] > 0`` on a device array and ``np.array(v)`` (the static scan cannot follow it; the runtime probe can);
* a growing log: every step appends a dict to ``self.history`` and nothing ever trims it;
* a per-evaluation re-jit: ``evaluate()`` wraps a new function in ``jax.jit`` on every call;
* (the un-jitted step's consequence: eager ops send Python constants such as the exponent 2 to the device on every
  step, reported as host-to-device transfers at the first one's line);
* and a non-defect: ``if l2:`` on a plain Python bool flag inside traced code (``jax.value_and_grad``), which must
  not be reported.

:class:`CleanTrainer` trains the same model with a jitted step, keeps only the last metrics on the device and builds
its jitted evaluation once.

Load with ``tests/jax_profile`` importable (``PYTHONPATH=tests/jax_profile``), e.g.
``pogo-audit jax-profile --target jax_review_trainers:defective_trainer``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax_pathologies import init_mlp, mlp

LR = 0.05
L2 = 1e-4
BATCH = 32


def loss_fn(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, l2: bool) -> jax.Array:
    loss = ((mlp(params, x) - y) ** 2).mean()  # marker: eager constant
    if l2:  # marker: bool flag
        loss = loss + L2 * sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params))
    return loss


def update(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, lr: float,
           l2: bool) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, l2)
    grad_norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss, grad_norm


class Metrics:
    """Per-step metrics as device arrays; ``compute()`` turns them into host floats."""

    def __init__(self, loss: jax.Array, grad_norm: jax.Array) -> None:
        self.loss, self.grad_norm = loss, grad_norm

    def compute(self) -> dict[str, float]:
        v = jnp.stack([self.loss, self.grad_norm])
        if v[1] > 0:  # marker: sync if
            host = np.array(v)  # marker: sync np.array
            return {"loss": host[0], "grad_norm": host[1]}
        return {"loss": 0.0, "grad_norm": 0.0}


class _Data:
    def __init__(self) -> None:
        kx, kp = jax.random.split(jax.random.PRNGKey(0))
        self.x = jax.random.normal(kx, (BATCH, 4))
        self.y = jnp.sin(self.x.sum(axis=1, keepdims=True))
        self.params = init_mlp(kp, (4, 8, 1))
        self.use_l2 = True
        self.batch_size = BATCH


class DefectiveTrainer(_Data):
    """The review's defects (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, float]] = []
        self.t = 0

    def make_metrics(self, loss: jax.Array, grad_norm: jax.Array) -> Metrics:
        return Metrics(loss, grad_norm)

    def step(self) -> jax.Array:  # marker: unjitted
        self.params, loss, grad_norm = update(self.params, self.x, self.y, LR, self.use_l2)
        self.t += 1
        self.history.append({"step": self.t, **self.make_metrics(loss, grad_norm).compute()})  # marker: log
        return loss

    def evaluate(self) -> jax.Array:
        predict = jax.jit(lambda params, x: mlp(params, x))  # marker: rejit
        return ((predict(self.params, self.x) - self.y) ** 2).mean()

    def pure_step(self) -> tuple:
        return partial(update, lr=LR, l2=self.use_l2), (self.params, self.x, self.y)


class CleanTrainer(_Data):
    """Jitted step, the bool flag bound statically, last metrics kept on the device, evaluation jitted once."""

    def __init__(self) -> None:
        super().__init__()
        self.step_fn = jax.jit(partial(update, lr=LR, l2=self.use_l2))
        self._predict = jax.jit(mlp)
        self.last: dict[str, jax.Array] = {}

    def step(self) -> jax.Array:
        self.params, loss, grad_norm = self.step_fn(self.params, self.x, self.y)
        self.last = {"loss": loss, "grad_norm": grad_norm}
        return loss

    def evaluate(self) -> jax.Array:
        return ((self._predict(self.params, self.x) - self.y) ** 2).mean()


def defective_trainer() -> DefectiveTrainer:
    return DefectiveTrainer()


def clean_trainer() -> CleanTrainer:
    return CleanTrainer()
