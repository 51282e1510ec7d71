"""The thread budget of one command: the processes it runs together use at most ``budget`` threads.

The budget is ``--threads N``, else ``$POGO_AUDIT_THREADS``, else the cores this process may run on. A command that
runs P processes at once (the audit's candidate and reference workers, a pool of ``--jobs`` audits) gives each
``max(1, budget // P)`` threads, and plans its processes so that ``P`` never exceeds the budget where it can choose
(the audit's self-check twin shares the reference's worker on a 2-core budget). Without this, every process of an
audit ran torch's default — one intra-op thread per core each — and on two cores three processes of two threads
made a 1000-step IQL audit 3.7× slower than the same audit with one thread a process.

Pools are sized before they start: the OpenMP/MKL/OpenBLAS environment variables are read when a library loads, so
:func:`pin` sets them (and XLA's CPU flags for a single thread) and then torch's intra-op and inter-op pools; the
CLI pins its process before anything imports torch or JAX. Within one audit the reference and the candidate always
run with the same count: CORL's CQL is thread-count sensitive, so the count is part of the bitwise protocol, and
results state it (:func:`report`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

ENV_VAR = "POGO_AUDIT_THREADS"
#: the variables OpenMP, MKL and OpenBLAS read when they start their pools
POOL_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: XLA:CPU runs its Eigen pool on every core unless told otherwise (read when JAX starts its CPU backend)
XLA_SINGLE_THREAD = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def budget(requested: int | None = None) -> int:
    """``requested`` (``--threads``), else ``$POGO_AUDIT_THREADS``, else :func:`machine_cores`."""
    from pogo_audit.runtime.errors import UsageError

    if requested is not None:
        return requested
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return machine_cores()
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"${ENV_VAR}: got {value!r}; expected a positive integer (threads for one command)")
    return int(value)


def share(total: int, processes: int) -> int:
    """Threads of each of ``processes`` processes running at once within ``total`` (at least one each)."""
    return max(1, total // max(1, processes))


def pin(threads: int) -> None:
    """Size this process's pools to ``threads``: the environment its libraries read when they load (and the processes
    it starts inherit), then torch's intra-op and inter-op pools if torch is loaded. The budget itself goes to the
    environment too (``$POGO_AUDIT_THREADS``), so what this process plans divides what it was given."""
    os.environ[ENV_VAR] = str(threads)
    for var in POOL_VARS:
        os.environ[var] = str(threads)
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith(("--xla_cpu_multi_thread_eigen=", "intra_op_parallelism_threads="))]
    if threads == 1:
        flags.extend(XLA_SINGLE_THREAD)
    if flags:
        os.environ["XLA_FLAGS"] = " ".join(flags)
    else:
        os.environ.pop("XLA_FLAGS", None)
    if "torch" in sys.modules:
        set_torch_threads(threads)


@contextlib.contextmanager
def using(threads: int) -> Iterator[None]:
    """torch's intra-op pool (if torch is loaded) at ``threads`` for the block, restored after it."""
    if "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    set_torch_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_torch_threads(threads: int) -> None:
    """torch's intra-op pool now; its inter-op pool too while no inter-op work has started it (torch allows
    setting it only then, and it is idle in a trainer that never forks work)."""
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already started in this process: it stays as it is (and says so in report())
            pass


def report() -> dict[str, Any]:
    """This process's thread counts as its libraries see them (torch's pools where torch is loaded)."""
    out: dict[str, Any] = {}
    if "torch" in sys.modules:
        import torch

        out["torch_intra_op"] = torch.get_num_threads()
        out["torch_inter_op"] = torch.get_num_interop_threads()
    return out
