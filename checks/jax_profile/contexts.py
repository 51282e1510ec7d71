"""Where profiled code runs: the two training paths of a target and the contexts of a host sync.

``step`` and ``epoch`` name both a target's training paths and the Python code run once per update / per epoch;
``jit`` is code traced by ``jax.jit``, ``traced`` code traced by another transform outside jit.
"""

from __future__ import annotations

JIT, TRACED, STEP, EPOCH = "jit", "traced", "step", "epoch"
#: contexts of Python code running on the host (once per update or per epoch)
HOST = frozenset({STEP, EPOCH})
#: most severe first: a sync inside jitted code outranks the same line seen from the host loop
SEVERITY_ORDER = {JIT: 0, TRACED: 1, STEP: 2, EPOCH: 3}
