"""Lock-step driving of two trainers in one process.

Both trainers use the *global* RNGs exactly like CORL does, so running them side by side needs isolation: each
:class:`IsolatedTrainer` owns a private copy of the global torch / numpy / ``random`` state that is swapped in for
each of its calls and swapped out afterwards. Batches are sampled once, by the harness, from the buffer's own
generator, and the same batch object is given to both trainers.

On a CUDA device :func:`torch_determinism` makes a bitwise comparison possible: deterministic algorithms,
``CUBLAS_WORKSPACE_CONFIG`` and no TF32 for the duration of the run. Whether the device then *is* deterministic for
the run is not assumed: the equivalence check measures it by running the reference twice.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pogo_audit.runtime.seeding import GlobalRNGState, numpy_rng_digest, torch_rng_digest


class IsolatedTrainer:
    """A trainer built by ``factory(config, dataset_spec, seed)`` whose global-RNG stream is private."""

    def __init__(self, factory: Callable[..., Any], config: Any, dataset_spec: Any, seed: int):
        outside = GlobalRNGState.capture()
        try:
            self.trainer = factory(config, dataset_spec, seed)
            self.rng = GlobalRNGState.capture()
        finally:
            outside.restore()

    @contextmanager
    def installed(self) -> Iterator[Any]:
        """This trainer's RNG state in place for the calls made inside (one swap for several calls in a row, with
        nothing else running between them); yields the trainer."""
        outside = GlobalRNGState.capture()
        self.rng.restore()
        try:
            yield self.trainer
        finally:
            self.rng = GlobalRNGState.capture()
            outside.restore()

    def call(self, method: str, *args: Any) -> Any:
        """Call ``trainer.<method>(*args)`` with this trainer's RNG state in place."""
        with self.installed() as trainer:
            return getattr(trainer, method)(*args)

    def rng_digests(self) -> dict[str, str]:
        """Digests of this trainer's private global RNG state (``rng/torch``, ``rng/numpy``)."""
        out = {"rng/torch": torch_rng_digest(self.rng.torch_state),
               "rng/numpy": numpy_rng_digest(self.rng.numpy_state)}
        if self.rng.cuda_states is not None:
            out["rng/cuda"] = torch_rng_digest(self.rng.cuda_states)
        return out


#: cuBLAS's documented setting for reproducible results (must be in the environment before its first use)
CUBLAS_WORKSPACE = ":4096:8"


@contextmanager
def torch_determinism(device: str) -> Iterator[dict[str, Any]]:
    """For a CUDA ``device``: ``torch.use_deterministic_algorithms(True, warn_only=True)``, ``CUBLAS_WORKSPACE_CONFIG``
    (kept if already set), TF32 off for matmul and cuDNN; everything restored afterwards. A no-op on the CPU.

    Yields a description of the settings; operations without a deterministic CUDA kernel are listed under
    ``nondeterministic_ops`` (warn-only: the reference self-check decides what that means for the run).
    """
    if not str(device).startswith("cuda"):
        yield {}
        return
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    tf32: Any = False
    try:
        saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except RuntimeError as exc:  # a torch that refuses the legacy switch (mixed with its fp32_precision API)
        saved_tf32, tf32 = None, f"left as configured ({str(exc).splitlines()[0][:160]})"
    info: dict[str, Any] = {"deterministic_algorithms": True, "cublas_workspace_config":
                            os.environ["CUBLAS_WORKSPACE_CONFIG"], "tf32": tf32, "nondeterministic_ops": []}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield info
        ops = [w for w in caught if _nondeterminism_warning(str(w.message))]
        info["nondeterministic_ops"] = sorted({str(w.message).splitlines()[0][:200] for w in ops})
        for w in caught:  # every other warning reaches the caller as it would have
            if w not in ops:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        if saved[2] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        if saved_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


def _nondeterminism_warning(message: str) -> bool:
    return "does not have a deterministic" in message or "not deterministic" in message


# ------------------------------------------------------------------------------------------- cross-device draws


@contextmanager
def cpu_drawn_randomness() -> Iterator[None]:
    """Global-stream random draws for a non-CPU tensor are made by the CPU generator and copied to the device.

    CUDA and CPU generators give different streams from the same seed, so a trainer on a GPU and one on the CPU
    would differ from their first draw. Inside this context every draw a CORL-style trainer makes from the global
    stream (``Tensor.normal_``/``uniform_`` — which ``rsample`` and ``new_empty(...).uniform_`` use —,
    ``torch.randn``/``rand``, ``randn_like``/``rand_like``, ``torch.normal`` with tensor arguments) is made on the
    CPU with the same shape, so both sides consume the CPU stream identically and get the same numbers. Draws with
    an explicit ``generator`` are left alone. A draw this does not cover still uses the device's generator: the ``rng/*`` observables then
    differ, which is how an incomplete sharing shows up.
    """
    import torch

    saved = {name: getattr(torch, name) for name in ("randn", "rand", "randn_like", "rand_like", "normal")}
    tensor_normal_, tensor_uniform_ = torch.Tensor.normal_, torch.Tensor.uniform_

    def off_cpu(device: Any) -> bool:
        return device is not None and torch.device(device).type != "cpu"

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        if generator is not None or not off_cpu(self.device):
            return tensor_normal_(self, mean, std, generator=generator)
        return self.copy_(tensor_normal_(torch.empty(self.shape, dtype=self.dtype), mean, std))

    def uniform_(self, a=0.0, b=1.0, *, generator=None):
        if generator is not None or not off_cpu(self.device):
            return tensor_uniform_(self, a, b, generator=generator)
        return self.copy_(tensor_uniform_(torch.empty(self.shape, dtype=self.dtype), a, b))

    def factory(name: str) -> Callable[..., Any]:
        original = saved[name]

        def draw(*size, generator=None, dtype=None, device=None, requires_grad=False, **kwargs):
            if generator is not None or kwargs or not off_cpu(device):
                return original(*size, generator=generator, dtype=dtype, device=device, requires_grad=requires_grad,
                                **kwargs)
            return original(*size, dtype=dtype).to(device).requires_grad_(requires_grad)

        return draw

    def like(name: str) -> Callable[..., Any]:
        original, plain = saved[name], saved[name[:-len("_like")]]

        def draw(input, *, dtype=None, device=None, requires_grad=False, **kwargs):
            target = input.device if device is None else device
            if kwargs or not off_cpu(target):
                return original(input, dtype=dtype, device=device, requires_grad=requires_grad, **kwargs)
            out = plain(tuple(input.shape), dtype=dtype or input.dtype).to(target)
            return out.requires_grad_(requires_grad)

        return draw

    def normal(mean, std=1.0, *args, generator=None, **kwargs):
        """``mean + std * eps``, eps drawn like the CPU kernel draws it (standard normals, then scale and shift)."""
        tensors = [x for x in (mean, std) if torch.is_tensor(x)]
        if generator is not None or args or kwargs or not tensors or not off_cpu(tensors[0].device):
            return saved["normal"](mean, std, *args, generator=generator, **kwargs)
        shape = torch.broadcast_shapes(*(x.shape for x in tensors))
        eps = tensor_normal_(torch.empty(shape, dtype=tensors[0].dtype), 0.0, 1.0)
        return eps.to(tensors[0].device) * std + mean

    patched = {"randn": factory("randn"), "rand": factory("rand"), "randn_like": like("randn_like"),
               "rand_like": like("rand_like"), "normal": normal}
    for name, fn in patched.items():
        setattr(torch, name, fn)
    torch.Tensor.normal_, torch.Tensor.uniform_ = normal_, uniform_
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)
        torch.Tensor.normal_, torch.Tensor.uniform_ = tensor_normal_, tensor_uniform_


class CPUDrawnTrainer:
    """A trainer whose every method call runs inside :func:`cpu_drawn_randomness` (attributes pass through)."""

    def __init__(self, trainer: Any):
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._trainer, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with cpu_drawn_randomness():
                return attr(*args, **kwargs)

        return call
