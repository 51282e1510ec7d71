"""Lock-step driving of two trainers in one process.

Both trainers use the *global* RNGs exactly like CORL does, so running them side by side needs isolation: each
:class:`IsolatedTrainer` owns a private copy of the global torch / numpy / ``random`` state that is swapped in for
each of its calls and swapped out afterwards. Batches are sampled once, by the harness, from the buffer's own
generator, and the same batch object is given to both trainers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pogo_audit.seeding import GlobalRNGState, numpy_rng_digest, torch_rng_digest


class IsolatedTrainer:
    """A trainer built by ``factory(config, dataset_spec, seed)`` whose global-RNG stream is private."""

    def __init__(self, factory: Callable[..., Any], config: Any, dataset_spec: Any, seed: int):
        outside = GlobalRNGState.capture()
        try:
            self.trainer = factory(config, dataset_spec, seed)
            self.rng = GlobalRNGState.capture()
        finally:
            outside.restore()

    def call(self, method: str, *args: Any) -> Any:
        """Call ``trainer.<method>(*args)`` with this trainer's RNG state in place."""
        outside = GlobalRNGState.capture()
        self.rng.restore()
        try:
            return getattr(self.trainer, method)(*args)
        finally:
            self.rng = GlobalRNGState.capture()
            outside.restore()

    def rng_digests(self) -> dict[str, str]:
        """Digests of this trainer's private global RNG state (``rng/torch``, ``rng/numpy``)."""
        return {"rng/torch": torch_rng_digest(self.rng.torch_state),
                "rng/numpy": numpy_rng_digest(self.rng.numpy_state)}
