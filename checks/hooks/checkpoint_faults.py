"""``save_checkpoint(path)`` / ``load_checkpoint(path)`` under injected faults.

A short run is checkpointed after two steps; then, with the same path:

* a full disk (``torch.save`` writes half of the bytes, then raises ``ENOSPC``) must be reported — an exception or a
  warning, never silence — and must leave the previous checkpoint loadable with the step-2 parameters;
* a crash mid-write (half the bytes, then the process "dies") must leave the previous checkpoint intact;
* a directory that cannot be created (a path below a regular file) must be reported;
* loading the step-2 checkpoint into a fresh trainer and training the next two steps on the same batches must
  reproduce the uninterrupted run bitwise (losses and parameters).

Faults are injected into ``torch.save`` (and ``torch.serialization.save``) in this process only; a candidate that
writes its checkpoint some other way gets an ``inconclusive`` result saying so.
"""

from __future__ import annotations

import errno
import io
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.model.results import FAIL, INCONCLUSIVE, PASS, CheckResult

CHECK = "hooks"


class SimulatedCrash(BaseException):
    """The process "dies" in the middle of a checkpoint write (not an Exception: nothing should catch it)."""


@contextmanager
def torch_save_fault(kind: str) -> Iterator[list[str]]:
    """``torch.save`` writes half of the serialized bytes to its destination, then fails with ``kind``
    (``"disk_full"``: OSError ENOSPC, ``"crash"``: :class:`SimulatedCrash`). Yields the destinations it hit."""
    import torch
    import torch.serialization

    original = torch.serialization.save
    hit: list[str] = []

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()[: max(1, len(buffer.getvalue()) // 2)]
        if hasattr(f, "write"):
            f.write(data)
        else:
            with open(f, "wb") as out:
                out.write(data)
        hit.append(str(getattr(f, "name", f)))
        if kind == "crash":
            raise SimulatedCrash(f"simulated crash while writing {hit[-1]}")
        raise OSError(errno.ENOSPC, "No space left on device", hit[-1])

    torch.save = torch.serialization.save = save  # type: ignore[assignment]
    try:
        yield hit
    finally:
        torch.save = torch.serialization.save = original  # type: ignore[assignment]


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first parameter that differs (name and why), or None when both are bitwise equal."""
    if set(a) != set(b):
        return f"names differ: {sorted(set(a) ^ set(b))[:3]}"
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            return k
    return None


def _same_outputs(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return f"{k}: {x!r} vs {y!r}"
    return None


def _scalars(out: Any) -> dict[str, Any]:
    return {k: float(v) for k, v in dict(out or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _result(subject: str, verdict: str, summary: str, t0: float, **metrics: Any) -> CheckResult:
    return CheckResult(CHECK, subject, verdict, summary=summary, seconds=time.perf_counter() - t0,
                       metrics={"audited": "candidate", "hook": "save_checkpoint/load_checkpoint", **metrics})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def run_checkpoint_faults(make_trainer: Callable[[], Any], batches: list[Any], work_dir: Path) -> list[CheckResult]:
    """The five checkpoint scenarios; ``make_trainer()`` gives a fresh :class:`~pogo_audit.core.harness.IsolatedTrainer`
    of the candidate (same seed every time) and ``batches`` at least four batches."""
    t0 = time.perf_counter()
    path = work_dir / "checkpoint.pt"
    trained = make_trainer()
    for batch in batches[:2]:
        trained.call("step", batch)
    trained.call("save_checkpoint", str(path))
    at_save = trained.call("parameters")
    uninterrupted = [_scalars(trained.call("step", b)) for b in batches[2:4]]
    at_end = trained.call("parameters")
    out: list[CheckResult] = []

    resumed = make_trainer()
    try:
        resumed.call("load_checkpoint", str(path))
        outputs = [_scalars(resumed.call("step", b)) for b in batches[2:4]]
        diff = next((f"step {3 + i}: {d}" for i, d in enumerate(_same_outputs(a, b) for a, b in
                                                              zip(uninterrupted, outputs)) if d), None)
        diff = diff or (None if (p := _same_params(at_end, resumed.call("parameters"))) is None
                        else f"parameter {p} after step 4")
        out.append(_result("checkpoint_resume_bitwise", PASS if diff is None else FAIL,
                           "resuming from the step-2 checkpoint reproduces steps 3-4 bitwise" if diff is None else
                           f"resuming from the step-2 checkpoint differs from the uninterrupted run: {diff}", t0))
    except Exception as exc:  # noqa: BLE001 - the candidate's load failing is the finding
        out.append(_result("checkpoint_resume_bitwise", FAIL, f"load_checkpoint raised {_describe(exc)}", t0))

    for kind, fault in (("full_disk", "disk_full"), ("crash", "crash")):
        t1 = time.perf_counter()
        raised: BaseException | None = None
        with warnings.catch_warnings(record=True) as caught, torch_save_fault(fault) as hit:
            warnings.simplefilter("always")
            try:
                trained.call("save_checkpoint", str(path))
            except (Exception, SimulatedCrash) as exc:  # noqa: BLE001 - what the candidate let through
                raised = exc
        if not hit:
            out.append(_result(f"checkpoint_{kind}_keeps_previous", INCONCLUSIVE,
                               "save_checkpoint does not write through torch.save: no fault could be injected", t1))
            continue
        if kind == "full_disk":
            said = [w for w in caught if "space" in str(w.message).lower() or hit[0] in str(w.message)]
            reported = raised is not None or bool(said)
            how = _describe(raised) if raised is not None else (f"warning: {said[0].message}" if said else "")
            out.append(_result("checkpoint_full_disk_reported", PASS if reported else FAIL,
                               f"a full disk is reported ({how})" if reported else
                               "a full disk during save_checkpoint went unreported (no exception, no warning)", t1))
        fresh = make_trainer()
        try:
            fresh.call("load_checkpoint", str(path))
            differs = _same_params(at_save, fresh.call("parameters"))
            summary = ("the previous checkpoint is intact" if differs is None else
                       f"the previous checkpoint was overwritten: {differs} differs from the step-2 parameters")
        except Exception as exc:  # noqa: BLE001
            differs, summary = "load", (f"the previous checkpoint was destroyed by the failed write to {hit[0]}: "
                                        f"load_checkpoint raised {_describe(exc)}")
        out.append(_result(f"checkpoint_{kind}_keeps_previous", PASS if differs is None else FAIL, summary, t1,
                           written_to=hit[0]))

    t2 = time.perf_counter()
    blocker = work_dir / "not-a-directory"
    blocker.write_text("a regular file where the checkpoint directory should be")
    target = blocker / "run" / "checkpoint.pt"
    try:
        trained.call("save_checkpoint", str(target))
    except Exception as exc:  # noqa: BLE001
        out.append(_result("checkpoint_unwritable_dir_reported", PASS,
                           f"an uncreatable directory is reported ({_describe(exc)})", t2))
    else:
        out.append(_result("checkpoint_unwritable_dir_reported", FAIL,
                           f"save_checkpoint({target}) returned normally although the directory cannot exist", t2))
    return out
