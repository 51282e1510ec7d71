"""The audit's worker processes: one fork server, started fresh and preloaded with torch and the trainers, that every
process the checks start is forked from — the matrix's and the report's pools (:func:`process_pool`) and the
equivalence check's reference worker (:mod:`checks.equivalence.worker`).

Never forked from the calling process, whose torch may already hold threads; the fork server imports
:data:`PRELOAD` once, so a worker starts in milliseconds once the server runs.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from multiprocessing.context import BaseContext

#: imported once by the fork server, so every worker starts with torch and the trainers already loaded;
#: ``torch._dynamo`` is what torch imports when a process builds its first optimizer (``Optimizer.__init__`` is
#: wrapped by dynamo's ``disable``): ~3 s of CPU here, which every worker paid before its trainer existed
PRELOAD = ["torch", "torch._dynamo", "checks.equivalence", "checks.equivalence.oracle", "multi_actor.trainer",
           "multi_actor.loop"]


def forkserver_context() -> BaseContext:
    """The multiprocessing context of every audit worker (a fork server preloading :data:`PRELOAD`)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def process_pool(jobs: int) -> concurrent.futures.Executor:
    """``jobs`` workers from the fork server, one task per worker process (a task's result cannot depend on what
    ran before it in the same process)."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=forkserver_context(),
                                                  max_tasks_per_child=1)


def warm_up() -> None:
    """Start the fork server now, without waiting for it: it imports :data:`PRELOAD` in the background, so a worker
    asked for later forks at once."""
    from multiprocessing import forkserver

    forkserver_context()
    forkserver.ensure_running()
