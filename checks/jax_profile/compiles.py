"""Compiles and traces per jitted function, counted by phase, with JAX's explanation of every cache miss.

:class:`ProfileSession` listens to ``/jax/core/compile/jaxpr_trace_duration`` (traces) and
``/jax/core/compile/backend_compile_duration`` (backend compiles) and captures the ``jax_explain_cache_misses``
explanations from the ``jax`` logger. Calls are labelled with a phase; compiles outside the warm-up, un-jitted and
probe phases are the steady state's (a pathology when non-zero).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax

TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
#: the function-table row that folds compiles of library jits and eager op-by-op dispatch
OTHER_ROW = "(library jits / eager ops)"

WARMUP, STEADY, TIMING, UNJITTED, PROBE = "warmup", "steady", "timing", "unjitted", "probe"
#: the runtime sync and memory probes' calls, the evaluation calls and the jit-gain estimate (their compiles are
#: counted by their own rules, not as the steady state's)
RUNTIME, EVALUATE, JIT_GAIN = "runtime", "evaluate", "jit_gain"
_NOT_STEADY = frozenset({WARMUP, UNJITTED, PROBE, RUNTIME, EVALUATE, JIT_GAIN})


def _plain_name(fun_name: str) -> str:
    """``jit(f)`` → ``f`` (compile events wrap the name, trace events do not)."""
    m = re.fullmatch(r"(?:jit|pjit|pmap)\((.*)\)", fun_name)
    return m.group(1) if m else fun_name


_MISS_NAME = (re.compile(r"never seen function:\s*\n\s*(\S+) id="), re.compile(r"\n\s*for (\S+) defined at"))


def explanation_function(text: str) -> str | None:
    """The function a ``TRACING CACHE MISS`` explanation is about."""
    for pattern in _MISS_NAME:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def explanation_gist(text: str) -> str:
    """One line: what changed (``at lr, now ... and before ...``) or why the function is new."""
    if "re-defined repeatedly" in text:
        return "new function object on every call (re-defined repeatedly, e.g. jax.jit of a fresh lambda)"
    if "never seen function" in text:
        return "never seen function (first trace of this function object)"
    bullets = [line.strip().lstrip("* ").strip() for line in text.splitlines() if line.strip().startswith("*")]
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    gist = "; ".join(bullets) if bullets else (lines[-1] if lines else text.strip())
    gist = re.sub(r"<class 'jax\._src\.tree_util\.Static'> with pytree metadata Static\(val=([^)]*)\)", r"static \1",
                  gist)
    return re.sub(r"https?://\S+", "", gist).strip()


def explanations_gist(texts: Sequence[str]) -> str:
    """The first explanation's gist, with how many more there were."""
    if not texts:
        return ""
    gists = list(dict.fromkeys(explanation_gist(t) for t in texts))
    more = f" (+{len(texts) - 1} more like it)" if len(texts) > 1 else ""
    return gists[0] + more


class _RecordHandler(logging.Handler):
    def __init__(self, sink: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(logging.WARNING)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink(record)


class ProfileSession:
    """Context manager counting jaxpr traces and backend compiles per jitted function name and phase.

    Turns ``jax_explain_cache_misses`` on and captures its explanations from the ``jax`` logger; restores the
    config value, the logger level and the listener on exit. Use :meth:`phase` to label the calls.
    """

    def __init__(self) -> None:
        self.current = WARMUP
        self.events: list[tuple[str, str, str]] = []
        self.explanations: list[tuple[str, str, str]] = []
        self._handler = _RecordHandler(self._on_record)
        self._saved: tuple[bool, int] | None = None

    def _on_duration(self, event: str, duration: float, **kwargs: Any) -> None:
        kind = "trace" if event == TRACE_EVENT else "compile" if event == COMPILE_EVENT else None
        if kind is not None:
            self.events.append((self.current, kind, _plain_name(str(kwargs.get("fun_name", "?")))))

    def _on_record(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "CACHE MISS" in text:
            self.explanations.append((self.current, explanation_function(text) or "?", text))

    def __enter__(self) -> ProfileSession:
        logger = logging.getLogger("jax")
        self._saved = (bool(jax.config.jax_explain_cache_misses), logger.level)
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
        logger.addHandler(self._handler)
        jax.config.update("jax_explain_cache_misses", True)
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        return self

    def __exit__(self, *exc: object) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        logger = logging.getLogger("jax")
        logger.removeHandler(self._handler)
        if self._saved is not None:
            jax.config.update("jax_explain_cache_misses", self._saved[0])
            logger.setLevel(self._saved[1])

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Label the events recorded inside the block."""
        previous, self.current = self.current, name
        try:
            yield
        finally:
            self.current = previous

    def function_table(self, user_names: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """One row per compiled function defined in ``user_names``; the rest folded into :data:`OTHER_ROW`.

        Columns: name, compiles, traces, compiles_after_warmup, cache_miss_explanations (after the warm-up).
        """
        rows: dict[str, dict[str, Any]] = {}
        primitives = _primitive_names()
        other: dict[str, Any] = {"name": OTHER_ROW, "compiles": 0, "traces": 0, "compiles_after_warmup": 0,
                                 "cache_miss_explanations": [], "names_after_warmup": []}
        compiled = {name for _, kind, name in self.events if kind == "compile"}
        for phase, kind, name in self.events:
            is_user = name in user_names and name in compiled and name not in primitives
            row = rows.setdefault(name, {"name": name, "compiles": 0, "traces": 0, "compiles_after_warmup": 0,
                                         "cache_miss_explanations": []}) if is_user else other
            if kind == "compile":
                row["compiles"] += 1
                if phase not in _NOT_STEADY:
                    row["compiles_after_warmup"] += 1
                    if row is other and name not in other["names_after_warmup"]:
                        other["names_after_warmup"].append(name)
            else:
                row["traces"] += 1
        for phase, name, text in self.explanations:
            if phase not in _NOT_STEADY:
                rows.get(name, other)["cache_miss_explanations"].append(text)
        out = sorted(rows.values(), key=lambda r: r["name"])
        if other["compiles"] or other["traces"]:
            out.append(other)
        return out


@functools.lru_cache(maxsize=1)
def _primitive_names() -> frozenset[str]:
    """Names of JAX primitives (eager op-by-op dispatch compiles one tiny program per primitive and shape)."""
    try:
        from jax._src.interpreters import mlir

        names = {p.name for p in mlir._lowerings}
        for table in mlir._platform_specific_lowerings.values():
            names |= {p.name for p in table}
        return frozenset(names)
    except (ImportError, AttributeError):
        return frozenset()
