"""The one results model every check fills and every exporter renders from.

Plain dataclasses serialised to JSON with a ``schema_version``; loading validates the version and the required
fields so a report never renders from a half-understood file.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pogo_audit import __version__
from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import atomic_write_json, load_json

SCHEMA_VERSION = 1

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
ERROR = "error"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, ERROR)


@dataclass
class Divergence:
    """Where two runs (or a run and a golden trace) first disagree beyond tolerance."""

    step: int
    observable: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    index: list[int] | None = None
    expected: float | None = None
    actual: float | None = None
    #: None for a difference in value; else what kind of finding it is: "digest differs", "shape differs",
    #: "absent on candidate", "not logged" (a reference loss the candidate never logs), "not logged by reference",
    #: "missing at this step"/"extra at this step", "crash" (observable ``crash/<side>/<phase>``, nothing diverged
    #: before the trainer raised)
    kind: str | None = None

    def __post_init__(self) -> None:
        # JSON stores non-finite floats as "nan"/"inf"/"-inf" strings; turn them back into floats
        for name in ("max_abs", "max_rel", "rtol", "atol", "expected", "actual"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, float(value))


@dataclass
class CheckResult:
    """Outcome of one check on one subject (an algorithm, a variant, a mutant, a fuzz target...)."""

    check: str
    subject: str
    verdict: str
    steps_compared: int = 0
    summary: str = ""
    first_divergence: Divergence | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} not in {VERDICTS}")
        if isinstance(self.first_divergence, dict):
            self.first_divergence = Divergence(**self.first_divergence)

    @property
    def passed(self) -> bool:
        return self.verdict == PASS


#: severities of a finding record that are not failures (reported, never a SARIF error)
NOT_FAILING = ("note", "info", PASS, "warning")


@dataclass(frozen=True)
class Located:
    """A failing finding of a result with a code location: the one shape every CI exporter reads."""

    path: str
    line: int
    message: str
    function: str | None = None
    kind: str | None = None


def located_findings(res: CheckResult) -> list[Located]:
    """Every failing finding of ``res`` that names a code location, by the results model's one convention: a dict
    in ``details`` or ``metrics["findings"]`` with ``path`` (or ``file``) and ``line``, or a ``location`` dict with
    them; ``severity`` (or ``verdict``) in :data:`NOT_FAILING` marks a note. Its text is ``message`` (else
    ``exception``, ``error``, ``summary``, or the result's summary). Empty unless the result failed."""
    if res.verdict != FAIL:
        return []
    out: list[Located] = []
    for record in [*res.details, *(res.metrics.get("findings") or [])]:
        if not isinstance(record, dict) or record.get("severity", record.get("verdict")) in NOT_FAILING:
            continue
        where = record.get("location") if isinstance(record.get("location"), dict) else record
        path, line = where.get("path", where.get("file")), where.get("line")
        if not path or not isinstance(line, int) or isinstance(line, bool):
            continue
        text = next((str(record[k]) for k in ("message", "exception", "error", "summary") if record.get(k)),
                    res.summary or res.subject)
        out.append(Located(str(path), line, text, where.get("function"), record.get("kind")))
    return out


def environment_info() -> dict[str, str]:
    """Versions that decide bitwise reproducibility."""
    info = {"pogo_audit": __version__, "python": platform.python_version(), "machine": platform.machine()}
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    import sys

    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["torch_threads"] = str(torch.get_num_threads())
    if "jax" in sys.modules:
        info["jax"] = sys.modules["jax"].__version__
    return info


@dataclass
class RunResults:
    """A set of check results from one invocation (or merged from several)."""

    checks: list[CheckResult] = field(default_factory=list)
    command: str = ""
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    environment: dict[str, str] = field(default_factory=environment_info)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    def by_check(self, check: str) -> list[CheckResult]:
        return [c for c in self.checks if c.check == check]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> RunResults:
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object with 'schema_version' and 'checks'")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        allowed = {f.name for f in fields(CheckResult)}
        checks = []
        for i, raw in enumerate(data.get("checks", [])):
            if not isinstance(raw, dict):
                raise InputError(f"{source}: checks[{i}] is not an object")
            unknown = set(raw) - allowed
            missing = {"check", "subject", "verdict"} - set(raw)
            if unknown or missing:
                raise InputError(f"{source}: checks[{i}] has unknown fields {sorted(unknown)} / missing {sorted(missing)}")
            try:
                checks.append(CheckResult(**raw))
            except (TypeError, ValueError) as exc:
                raise InputError(f"{source}: checks[{i}]: {exc}") from None
        return cls(checks=checks, command=str(data.get("command", "")), schema_version=version,
                   created=str(data.get("created", "")), environment=dict(data.get("environment", {})))

    @classmethod
    def load(cls, path: str | Path) -> RunResults:
        return cls.from_dict(load_json(path, "results file"), str(path))


def _jsonable(obj: Any) -> Any:
    """Make floats JSON-safe: NaN/Inf become strings so the file stays strict JSON."""
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return str(obj)
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


@dataclass(frozen=True)
class Note:
    """A line a check wants shown next to its results (not a result itself)."""

    text: str


@dataclass(frozen=True)
class Listing:
    """A table a check can show instead of running (``mutants --list``)."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
