"""Seeding, RNG-state capture/restore and RNG digests.

Training randomness, batch sampling and evaluation never share a generator: the global torch/numpy/random streams
belong to the base algorithm (exactly as CORL uses them); batches come from the buffer's own
``numpy.random.Generator``; extra actors and evaluation use their own ``torch.Generator``s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from pogo_audit.runtime.digest import arrays_digest

#: offsets that derive the independent streams of one run from its seed
ACTOR_INIT_OFFSET = 1_000_003
ACTOR_SAMPLING_OFFSET = 2_000_003
BUFFER_OFFSET = 3_000_017
EVAL_OFFSET = 4_000_037


def seed_everything(seed: int) -> None:
    """CORL's ``set_seed`` without an env: ``np.random.seed``, ``random.seed``, ``torch.manual_seed``."""
    import torch

    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def derived_seed(seed: int, offset: int) -> int:
    """A different, deterministic seed for another stream of the same run (fits in 63 bits)."""
    return (int(seed) * 6_364_136_223 + offset) % (2**63 - 1)


@dataclass
class GlobalRNGState:
    """Snapshot of the global torch CPU, numpy legacy and Python ``random`` states, and of the global CUDA
    generators once CUDA is initialized in this process (``cuda_states``, one per device; None otherwise)."""

    torch_state: Any
    numpy_state: Any
    python_state: Any
    cuda_states: list[Any] | None = None

    @classmethod
    def capture(cls) -> GlobalRNGState:
        import torch

        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), np.random.get_state(), random.getstate(), cuda)

    def restore(self) -> None:
        """Set every captured state; CUDA states only where this machine has the same number of CUDA devices (a
        state captured on a GPU machine restores the CPU streams on a CPU-only one)."""
        import torch

        torch.set_rng_state(self.torch_state)
        np.random.set_state(self.numpy_state)
        random.setstate(self.python_state)
        if self.cuda_states is not None and torch.cuda.is_available() and \
                len(self.cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.cuda_states)

    def to_portable(self) -> dict[str, Any]:
        """Only tensors, lists, ints and strings (loadable with ``torch.load(weights_only=True)``)."""
        kind, keys, pos, has_gauss, cached = self.numpy_state
        out = {
            "torch": self.torch_state.clone(),
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [self.python_state[0], list(self.python_state[1]), self.python_state[2]],
        }
        if self.cuda_states is not None:
            out["cuda"] = [s.clone() for s in self.cuda_states]
        return out

    @classmethod
    def from_portable(cls, data: dict[str, Any]) -> GlobalRNGState:
        kind, keys, pos, has_gauss, cached = data["numpy"]
        py = data["python"]
        return cls(data["torch"], (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
                   (py[0], tuple(py[1]), py[2]), data.get("cuda"))


def torch_rng_digest(state: Any | None = None) -> str:
    """Digest (:func:`pogo_audit.runtime.digest.arrays_digest`) of a torch generator state (a CPU byte tensor, or a
    list of them for the CUDA devices); the current CPU one by default."""
    import torch

    state = torch.get_rng_state() if state is None else state
    return arrays_digest(s.cpu().numpy() for s in (state if isinstance(state, (list, tuple)) else [state]))


def _text(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def numpy_rng_digest(state: Any | None = None) -> str:
    """Digest of the legacy global numpy state."""
    kind, keys, pos, has_gauss, cached = np.random.get_state() if state is None else state
    return arrays_digest([np.asarray(keys), _text(f"{kind}:{pos}:{has_gauss}:{cached!r}")])


def python_rng_digest(state: Any | None = None) -> str:
    """Digest of a Python ``random`` state; the current one by default."""
    version, internal, gauss = random.getstate() if state is None else state
    return arrays_digest([np.asarray(internal, dtype=np.uint64), _text(f"{version}:{gauss!r}")])


def state_digests(state: GlobalRNGState) -> dict[str, str]:
    """``{"torch", "numpy", "random"[, "cuda"]}`` digests of every stream of a :class:`GlobalRNGState`."""
    out = {"torch": torch_rng_digest(state.torch_state), "numpy": numpy_rng_digest(state.numpy_state),
           "random": python_rng_digest(state.python_state)}
    if state.cuda_states is not None:
        out["cuda"] = torch_rng_digest(state.cuda_states)
    return out


def digest_as_float(hexdigest: str) -> float:
    """A digest as an exactly comparable float observable (first 13 hex digits fit a float64 mantissa)."""
    return float(int(hexdigest[:13], 16))
