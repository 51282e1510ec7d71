"""One digest for arrays, used everywhere an array's bytes are compared: XXH3-128 of the raw bytes cut to 64 bits (16
hex digits). Equal bytes give equal digests and any differing bit a different one; a non-cryptographic hash is
enough against accidental differences and hashes several GB/s, so every tensor can be hashed every step at a small
fraction of a training step's cost."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import xxhash


def array_digest(arr: Any, with_meta: bool = False, meta: str | None = None) -> str:
    """Digest of the bytes of ``arr`` (``with_meta``: its dtype and shape too, so ``zeros(2)`` and ``zeros(2, 1)``
    differ; ``meta``: this text instead, e.g. a tensor's own dtype when its bytes are viewed as another one)."""
    a = np.ascontiguousarray(arr)
    h = xxhash.xxh3_128()
    if meta is not None:
        h.update(meta.encode())
    elif with_meta:
        h.update(f"{a.dtype}{list(a.shape)}|".encode())
    h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()[:16]


def arrays_digest(arrays: Iterable[Any]) -> str:
    """One digest of several arrays in order, each with its dtype and shape."""
    h = xxhash.xxh3_128()
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype}{list(a.shape)}|".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()[:16]
