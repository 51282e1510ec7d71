"""Run properties under explicit hypothesis settings (the same with or without the ``ci`` profile) and turn what
hypothesis reports into findings: one :class:`~pogo_audit.model.results.CheckResult` per property."""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import FlakyFailure

from checks.fuzz.registry import Property, properties_for
from pogo_audit.runtime.errors import UsageError
from pogo_audit.model.findings import own_frame
from pogo_audit.model.locations import as_location
from pogo_audit.model.results import FAIL, PASS, CheckResult

DEFAULT_DATABASE_DIR = Path(".pogo-audit/hypothesis")
MAX_REPR = 2000
_EXAMPLE_ATTR = "pogo_fuzz_example"


def _truncate(text: str, limit: int = MAX_REPR) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


#: the fuzzer's own code (properties, strategies): never the location of what a property found
_FUZZ_DIR = Path(__file__).resolve().parent


def _runner_frame(frame: traceback.FrameSummary) -> bool:
    """Frames of hypothesis and of the runner's own test wrapper (not worth showing in a finding)."""
    path = Path(frame.filename).as_posix()
    return "/hypothesis/" in path or (path == Path(__file__).as_posix() and frame.name in ("body", "run_property"))


def _finding(name: str, exc: BaseException) -> dict[str, Any]:
    """A finding: property, minimal example (repr, truncated), exception and the innermost frames.

    A :class:`FlakyFailure` (the example failed, then passed when hypothesis replayed it) is reported through the
    failure it wraps, marked ``flaky``: the wrapper's own text says nothing about what failed."""
    flaky = isinstance(exc, FlakyFailure) and bool(exc.exceptions)
    if flaky:
        exc = exc.exceptions[0]
    example = getattr(exc, _EXAMPLE_ATTR, None)
    try:
        shown = None if example is None else _truncate(repr(example))
    except Exception as repr_exc:  # noqa: BLE001 - a broken __repr__ must not hide the finding
        shown = f"<repr failed: {type(repr_exc).__name__}>"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _runner_frame(f)]
    prefix = "flaky (passed when replayed): " if flaky else ""
    frame = own_frame(frames, [_FUZZ_DIR], exc)
    return {
        "location": as_location(frame) if frame else None,
        "property": name,
        "minimal_example": shown,
        "exception": _truncate(f"{prefix}{type(exc).__name__}: {exc}", 1000),
        "traceback_tail": "".join(traceback.format_list(frames[-4:])).rstrip(),
    }


def _leaves(exc: BaseException) -> list[BaseException]:
    """The distinct failures hypothesis reports (a plain exception group holds one per bug)."""
    if type(exc) in (ExceptionGroup, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def fuzz_settings(examples: int, database_dir: Path | None) -> settings:
    """Explicit settings, independent of the loaded profile (``CI`` loads hypothesis's ``ci`` profile).

    One bug per property and run (``report_multiple_bugs=False``): with several, hypothesis keeps generating after
    the first failure until 10 s of wall time have passed, so on a loaded machine the same seed gave another
    minimal example; the first bug's search and shrink are deterministic for a seed."""
    return settings(
        settings.get_profile("default"),
        max_examples=examples,
        deadline=None,
        derandomize=False,
        database=DirectoryBasedExampleDatabase(str(database_dir)) if database_dir is not None else None,
        verbosity=Verbosity.quiet,
        print_blob=False,
        phases=[p for p in Phase if p is not Phase.explain],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def run_property(prop: Property, examples: int, seed_value: int = 0, database_dir: Path | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> CheckResult:
    """Run one property for ``examples`` examples (reproducible for a seed) and return its CheckResult."""
    if examples < 1:
        raise UsageError(f"--examples: expected a positive integer, got {examples}")
    count = 0

    def body(case: Any) -> None:
        nonlocal count
        count += 1
        if progress is not None:
            progress(prop.name, min(count, examples), examples)
        try:
            prop.check(case)
        except Exception as exc:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, _EXAMPLE_ATTR, case)
            raise

    body.__name__ = body.__qualname__ = f"fuzz_{prop.name}"
    body._hypothesis_internal_add_digest = prop.name.encode()  # type: ignore[attr-defined]
    test = fuzz_settings(examples, database_dir)(seed(seed_value)(given(prop.strategy())(body)))
    start = time.perf_counter()
    findings: list[dict[str, Any]] = []
    try:
        test()
    except Exception as exc:  # noqa: BLE001 - every failure hypothesis reports is a finding
        findings = [_finding(prop.name, e) for e in _leaves(exc)]
    seconds = time.perf_counter() - start
    summary = (f"{count} examples, no findings" if not findings else
               f"{len(findings)} finding(s) after {count} examples: {findings[0]['exception'].splitlines()[0]}")
    return CheckResult(
        check="fuzz", subject=prop.name, verdict=FAIL if findings else PASS, steps_compared=count,
        summary=summary, seconds=seconds,
        metrics={"examples_run": count, "target": prop.target, "seed": seed_value, "findings": findings},
    )


def run_fuzz(target: str, examples: int, seed: int = 0, database_dir: Path | None = DEFAULT_DATABASE_DIR,
             progress: Callable[[str, int, int], None] | None = None) -> list[CheckResult]:
    """Run every property of ``target`` (``configs``, ``logging``, ``data`` or ``all``) for ``examples`` examples
    each; one ``CheckResult(check="fuzz", subject=<property>)`` per property, ``fail`` when it has findings.

    ``database_dir`` holds hypothesis's example database (failing examples are replayed first next time); None
    disables it. ``progress(property, examples_done, examples)`` is called after every example.
    """
    return [run_property(p, examples, seed, database_dir, progress) for p in properties_for(target)]


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> list[CheckResult]:
    """``pogo-audit fuzz``: every property of ``args.target``."""
    database = None if args.no_database else Path(args.database)
    return run_fuzz(args.target, args.examples, args.seed, database, progress)


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: every property of every target (our own config, logger and data layer)."""
    say("fuzz")
    return run_fuzz("all", opts.fuzz_examples, opts.seed, None, None)
