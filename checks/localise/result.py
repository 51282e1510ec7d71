"""What a localisation says (:class:`Localisation`): the kind of difference, a message, the located candidate frames
(the primary first), the reference's frames, excerpts of both traces around the divergence, the rule that located it
and the supporting findings, and further defects of the same step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from checks.localise.align import shape_text
from checks.localise.trace import Op, Trace


KINDS = ("rng", "numeric", "order", "gradient", "none")


#: operations shown on each side of the divergence in the excerpts
EXCERPT = 3


@dataclass
class Localisation:
    """Where the candidate's step first differs from the reference's, JSON-serialisable via :meth:`as_dict`.

    ``frames``: the located candidate frame first, then its callers (innermost to outermost), each
    ``{file, line, function, code}``; ``reference_frames``: the reference's aligned operation, same shape;
    ``events``: a few described operations of each side around the divergence; ``module`` / ``gradient`` /
    ``schedule``: the module-level, optimizer-level and step-order findings that support the message (or None)."""

    kind: str
    message: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    reference_frames: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, list[str]] = field(default_factory=dict)
    rule: str = ""
    module: dict[str, Any] | None = None
    gradient: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    #: further structural differences later in the same step (extra, missing or changed operations after the first
    #: one), each ``{"message", "frame"}``: a second defect in the same step is named too, not hidden by the first
    more: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "frames": self.frames,
                "reference_frames": self.reference_frames, "events": self.events, "rule": self.rule,
                "module": self.module, "gradient": self.gradient, "schedule": self.schedule, "errors": self.errors,
                "more": self.more}

    @property
    def location(self) -> dict[str, Any] | None:
        """The candidate's located line as ``{path, line, function, code}`` (the shape of a CheckResult's
        ``metrics["candidate_location"]``, which the SARIF exporter points at), or None."""
        if not self.frames:
            return None
        f = self.frames[0]
        return {"path": f["file"], "line": f["line"], "function": f["function"], "code": f["code"]}


def merge_more(into: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """A copy of the localisation ``into`` (as :meth:`Localisation.as_dict`) whose further differences (``more``)
    also hold the lines ``found`` (another step's localisation) names that ``into`` does not."""
    lines = {(f["file"], f["line"]) for f in (into.get("frames") or [])[:1]} | {
        (m["frame"]["file"], m["frame"]["line"]) for m in into.get("more") or []}
    merged = list(into.get("more") or [])
    frames = found.get("frames") or []
    extra = ([{"message": found["message"], "frame": frames[0]}] if frames else []) + list(found.get("more") or [])
    for m in extra:
        if (m["frame"]["file"], m["frame"]["line"]) not in lines:
            lines.add((m["frame"]["file"], m["frame"]["line"]))
            merged.append(m)
    return {**into, "more": merged}


def describe_op(op: Op) -> str:
    where = op.frame()
    return f"#{op.index} {shape_text(op)}" + (f" {op.stream}" if op.random else "") + (
        f" @ {where.file}:{where.line}" if where else "")


def excerpt(trace: Trace, at: Op | None, fallback: int) -> list[str]:
    centre = at.index if at is not None else fallback
    return [describe_op(o) for o in trace.ops[max(centre - EXCERPT, 0):centre + EXCERPT + 1]]
