"""The verdict rules: whether the step is jitted, and the findings (failing or notes) of one profile."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from checks.jax_profile.compiles import explanations_gist
from checks.jax_profile.contexts import EPOCH, JIT, STEP, TRACED
from checks.jax_profile.scan import StaticScan
from checks.jax_profile.scan.live import is_jitted
from checks.jax_profile.targets import JaxTarget
from checks.jax_profile.transfers import TransferCount
from pogo_audit.results import FAIL


def jit_evidence(target: JaxTarget, scan: StaticScan, compiled_by_step: Sequence[str]) -> tuple[bool, str]:
    """Whether ``step`` runs jitted code: ``step_fn`` if given, else the static scan or the warm-up compiles."""
    if target.step_fn is not None:
        name = getattr(target.step_fn, "__name__", "?")
        if is_jitted(target.step_fn):
            return True, f"step_fn {name} is a jax.jit function"
        return False, f"step_fn {name} is not a jax.jit function"
    if scan.reaches_jit.get(STEP):
        return True, "step() calls a jax.jit function (static scan)"
    if compiled_by_step:
        return True, f"the first step() compiled {', '.join(compiled_by_step)} (defined in the scanned source)"
    return False, "step() calls no jax.jit function (static scan) and its first call compiled none of the scanned " \
                  "functions"


def _finding(kind: str, severity: str, message: str, **where: Any) -> dict[str, Any]:
    return {"kind": kind, "severity": severity, "message": message, **{k: v for k, v in where.items() if v is not None}}


def collect_findings(target: JaxTarget, table: list[dict[str, Any]], h2d: dict[str, TransferCount],
                     scan: StaticScan, jitted: tuple[bool, str]) -> list[dict[str, Any]]:
    """Every finding, ``fail`` on the training path (see :mod:`checks.jax_profile`), ``note`` elsewhere."""
    out = []
    for row in table:
        if row["compiles_after_warmup"]:
            gist = explanations_gist(row["cache_miss_explanations"]) or "no cache-miss explanation from JAX"
            names = f" ({', '.join(row['names_after_warmup'])})" if row.get("names_after_warmup") else ""
            n = row["compiles_after_warmup"]
            out.append(_finding("recompile", FAIL, f"{row['name']}{names}: {n} compile{'s' if n > 1 else ''} after "
                                                   f"warm-up — {gist}", function=row["name"]))
    if not jitted[0]:
        out.append(_finding("not_jitted", FAIL, f"step is not jitted: {jitted[1]}"))
    for path_name, count in h2d.items():
        loop_path = path_name == target.loop
        if count.transfers == 0 and count.first is None:
            continue
        first = count.first or {}
        aval = re.search(r"aval=ShapedArray\((.*?)\)(?:,|$)", first.get("message", ""))
        culprit = aval.group(1) if aval else first.get("message", "")
        where = f" at {first['path']}:{first['line']} `{first['code']}`" if first.get("path") else ""
        n = "≥1" if count.transfers is None else f"{count.per_call:.3g}"
        severity = FAIL if loop_path and path_name == STEP else "note"
        suffix = "" if severity == FAIL else ("" if path_name == EPOCH else
                                              f" (per-update API; the training loop is the {target.loop})")
        out.append(_finding("host_to_device", severity, f"{n} host-to-device transfers per {path_name} call{suffix}; "
                                                        f"first: {culprit}{where}", path=first.get("path"),
                            line=first.get("line"), code=first.get("code")))
    for s in scan.syncs:
        severity = FAIL if s["inside"] in (JIT, TRACED) or (s["inside"] == STEP and s["root"] == target.loop) \
            else "note"
        label = {JIT: "inside jitted code", TRACED: "inside traced code", STEP: "in the per-step Python loop",
                 EPOCH: "once per epoch"}[s["inside"]]
        if severity == "note" and s["inside"] == STEP:
            label += f" (per-update API; the training loop is the {target.loop})"
        out.append(_finding("host_sync", severity, f"{s['kind']} {label}: {s['path']}:{s['line']} `{s['code']}` "
                                                   f"in {s['function']}", path=s["path"], line=s["line"],
                            code=s["code"], function=s["function"], inside=s["inside"]))
    return out
