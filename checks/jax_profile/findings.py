"""The verdict rules: whether the step is jitted, and the findings (failing or notes) of one profile."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from checks.jax_profile.compiles import EVALUATE, explanations_gist
from checks.jax_profile.contexts import EPOCH, HOST, JIT, STEP, TRACED
from checks.jax_profile.files import display_path, is_project_file
from checks.jax_profile.memory import DEFAULT_TRAINING_STEPS, projection
from checks.jax_profile.scan import StaticScan
from checks.jax_profile.scan.live import is_jitted
from checks.jax_profile.targets import JaxTarget
from checks.jax_profile.transfers import TransferCount
from pogo_audit.model.glue import is_glue
from pogo_audit.model.results import FAIL

#: where a cache-miss explanation says the function was defined
_DEFINED_AT = re.compile(r"defined at (\S+?):(\d+)")


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


#: where a cache-miss explanation says the traced call was made
_MISS_AT = re.compile(r"CACHE MISS at (\S+?):(\d+)")


def miss_site(text: str) -> tuple[str, int] | None:
    """The trainer line of the call that missed JAX's cache (its explanation's ``at file:line``), not glue."""
    m = _MISS_AT.search(text)
    if m is None or not is_project_file(m.group(1)) or is_glue(m.group(1)):
        return None
    return display_path(m.group(1)), int(m.group(2))


def jit_site(path: str, def_line: int) -> int | None:
    """The line that wraps the function defined at ``path:def_line`` in a new ``jax.jit`` (``jax.jit(f)`` in the
    same enclosing function), where a fresh function object is made on every call; None when there is none."""
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, ValueError):
        return None
    for scope in ast.walk(tree):
        body = getattr(scope, "body", None)
        if not isinstance(body, list):
            continue
        names = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
            n.lineno == def_line or any(d.lineno == def_line for d in n.decorator_list))}
        if not names:
            continue
        for node in ast.walk(scope):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name) \
                    and node.args[0].id in names and _is_jit(node.func):
                return node.lineno
    return None


def _is_jit(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "jit") or (isinstance(func, ast.Name)
                                                                         and func.id == "jit")


def _update_function(target: JaxTarget) -> tuple[tuple[str | None, int | None], str]:
    """Where the un-jitted update is defined: ``step_fn``, else the static scan's root of the training loop, else
    ``step``, the first that is the trainer's code and not the user's glue; else no location and why not."""
    candidates = [target.step_fn, target.scan_roots.get(target.loop or STEP), target.step]
    for fn in candidates:
        code = getattr(fn, "__code__", None)
        if code is not None and is_project_file(code.co_filename) and not is_glue(code.co_filename):
            return (display_path(code.co_filename), code.co_firstlineno), ""
    return (None, None), (" (not located: step() is the target's glue and no step_fn or scan_roots names the "
                          "trainer's update function)")


def _finding(kind: str, severity: str, message: str, **where: Any) -> dict[str, Any]:
    return {"kind": kind, "severity": severity, "message": message, **{k: v for k, v in where.items() if v is not None}}


@dataclass
class Evidence:
    """What the runtime probes measured: syncs per path (:meth:`SyncProbe.classify`), whether every requested call
    of each path completed, host-memory growth, the evaluation profile, the jit-gain estimate, phases that failed."""

    runtime: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    measured: dict[str, bool] = field(default_factory=dict)
    memory: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    jit_gain: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)


def _gain_text(gain: dict[str, Any] | None) -> str:
    if not gain or gain.get("ratio") is None:
        return ""
    if gain["method"] == "pure_step":
        return (f"; jax.jit would make it {gain['ratio']:.3g}× faster ({gain['eager_seconds'] * 1e3:.3g} ms → "
                f"{gain['jitted_seconds'] * 1e3:.3g} ms per update, measured on pure_step)")
    return (f"; {gain['ratio']:.3g}× the reference ReBRAC's jitted update time ({gain['eager_seconds'] * 1e3:.3g} "
            f"ms vs {gain['jitted_seconds'] * 1e3:.3g} ms; {gain['detail']})")


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def memory_finding(target: JaxTarget, memory: dict[str, Any]) -> dict[str, Any]:
    """Host memory, always reported: a failing finding at the line that grew most when the growth's lower bound is
    above the threshold, else a note with the estimate and its interval; both project it over the training run."""
    unit = "step" if target.loop == STEP else "epoch"
    steps = target.training_steps or (DEFAULT_TRAINING_STEPS if unit == "step"
                                      else max(DEFAULT_TRAINING_STEPS // target.updates_per_epoch, 1))
    proj = projection(memory, steps)
    memory["projection"] = proj
    interval = (f"{memory['bytes_per_call']:.0f} B per {unit} ({memory['confidence']:.0%} interval "
                f"{memory['low']:.0f}…{memory['high']:.0f} B, Theil–Sen over {memory['calls']} {unit}s)")
    over = f"{_bytes(proj['bytes'])} over {steps:g} {unit}s ({_bytes(proj['low'])}…{_bytes(proj['high'])})"
    top = memory["top"][0] if memory["top"] else {}
    if memory["growing"]:
        where = f"; grew most at {top['path']}:{top['line']} (+{top['bytes']} B in {top['count']} blocks)" \
            if top else ""
        return _finding("host_memory_growth", FAIL, f"host memory grows {interval}: {over}{where}",
                        path=top.get("path"), line=top.get("line"), bytes_per_call=round(memory["bytes_per_call"], 1))
    why = (f"the lower bound is under {memory['threshold']:.0f} B per {unit}" if memory["low"] < memory["threshold"]
           else "the target's state did not grow with it (jax's own bookkeeping)")
    return _finding("host_memory", "note", f"host memory {interval}: no growth established ({why}); at most {over}",
                    bytes_per_call=round(memory["bytes_per_call"], 1))


def _runtime_sync_findings(target: JaxTarget, evidence: Evidence) -> dict[tuple[str, int], dict[str, Any]]:
    """One finding per synced user line (path, line), the most severe over the paths it was seen on.

    Per-step (``fail``): seen in every measured step of a step-trained loop, or at least once per update in every
    measured epoch. A sync seen in every step of the per-update API of an epoch-trained target is a note only when
    the epoch loop was measured and did not do it; one seen in some calls only, or once per epoch or evaluation, is a
    note: it is not per-step, whatever the loop is called.
    """
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for path_name, sites in evidence.runtime.items():
        for s in sites:
            seen = f"{s['calls_seen']} of {s['calls_measured']}"
            if path_name == EVALUATE:
                severity, label = "note", f"once per evaluation ({seen} evaluate() calls)"
            elif s["in_evaluation"]:
                count = f"{s['per_evaluation']} per evaluation, " if s["per_evaluation"] else ""
                severity, label = "note", (f"inside the evaluation {path_name}() runs inline ({count}in {seen} "
                                           f"measured {path_name}() calls), not per update")
            elif not s["recurring"]:
                severity, label = "note", f"occasional: in {seen} measured {path_name}() calls, not per-step"
            elif path_name == EPOCH:
                severity, label = (FAIL, f"per update inside epoch() (≥{target.updates_per_epoch} per epoch in "
                                         f"every measured epoch)") if s["per_update"] else \
                    ("note", f"once per epoch ({seen} measured epochs)")
            elif target.loop == STEP or not evidence.measured.get(EPOCH):
                severity, label = FAIL, f"in every measured step ({seen})"
            else:
                severity, label = "note", (f"in every step() call ({seen}) of the per-update API; the epoch() "
                                           "training loop was measured without it")
            key = (s["path"], s["line"])
            previous = out.get(key)
            if previous is not None and (previous["severity"] == FAIL or severity != FAIL):
                if s["kind"] not in previous["kinds"]:
                    previous["kinds"].append(s["kind"])
                continue
            kinds = previous["kinds"] if previous else []
            out[key] = _finding("host_sync", severity, label, path=s["path"], line=s["line"], code=s["code"],
                                function=s["function"], inside=path_name, seen=["runtime"],
                                kinds=kinds + [k for k in [s["kind"]] if k not in kinds])
    for f in out.values():
        f["message"] = (f"{' + '.join(f['kinds'])} {f['message']}: {f['path']}:{f['line']} `{f['code']}` in "
                        f"{f['function']} (runtime)")
    return out


def collect_findings(target: JaxTarget, table: list[dict[str, Any]], h2d: dict[str, TransferCount],
                     scan: StaticScan, jitted: tuple[bool, str],
                     evidence: Evidence | None = None) -> list[dict[str, Any]]:
    """Every finding, ``fail`` on the training path (see :mod:`checks.jax_profile`), ``note`` elsewhere.

    Host syncs come from the runtime probe and the static scan: a line both found is one finding (``seen``: both);
    a host-side sync only the static scan found is a note when the runtime probe measured its path to the end (the
    line did not run there), as before otherwise; syncs in jitted or traced code only the static scan can see.
    """
    evidence = evidence or Evidence()
    out = []
    for row in table:
        if row["compiles_after_warmup"]:
            gist = explanations_gist(row["cache_miss_explanations"]) or "no cache-miss explanation from JAX"
            names = f" ({', '.join(row['names_after_warmup'])})" if row.get("names_after_warmup") else ""
            n = row["compiles_after_warmup"]
            site = next((w for w in map(miss_site, row["cache_miss_explanations"]) if w), None)
            why = "" if site else " (not located: JAX's explanation names no line of the trainer's code)"
            out.append(_finding("recompile", FAIL, f"{row['name']}{names}: {n} compile{'s' if n > 1 else ''} after "
                                                   f"warm-up — {gist}{why}", function=row["name"],
                                path=site[0] if site else None, line=site[1] if site else None))
    if not jitted[0]:
        where, why = _update_function(target)
        out.append(_finding("not_jitted", FAIL, f"step is not jitted: {jitted[1]}{_gain_text(evidence.jit_gain)}"
                                                f"{why}", path=where[0], line=where[1]))
    for path_name, count in h2d.items():
        if count.transfers == 0 and count.first is None:
            continue
        first = count.first or {}
        aval = re.search(r"aval=ShapedArray\((.*?)\)(?:,|$)", first.get("message", ""))
        culprit = aval.group(1) if aval else first.get("message", "")
        where = f" at {first['path']}:{first['line']} `{first['code']}`" if first.get("path") else ""
        n = "≥1" if count.transfers is None else f"{count.per_call:.3g}"
        severity = FAIL if path_name == STEP == target.loop else "note"
        suffix = "" if path_name == EPOCH or severity == FAIL else \
            f" (per-update API; the training loop is the {target.loop})"
        text = f"{n} host-to-device transfers per {path_name} call{suffix}; first: {culprit}{where}"
        entry = first.get("entry")
        if jitted[0] and entry and (entry["path"], entry["line"]) != (first.get("path"), first.get("line")):
            # a jitted step whose path also calls code that runs op by op (jit evidence is all-or-nothing): the call
            # into it is the decision, the eager op deep inside it the evidence (an un-jitted step has its own
            # finding at the update function, and this one stays at the first transfer)
            out.append(_finding("host_to_device", severity, f"un-jitted work on every {path_name} call: "
                                                            f"`{entry['callee']}` runs op by op, called at "
                                                            f"{entry['path']}:{entry['line']} `{entry['code']}` in "
                                                            f"{entry['function']} — {text}",
                                path=entry["path"], line=entry["line"], code=entry["code"],
                                function=entry["function"],
                                related=[{"path": first["path"], "line": first["line"], "code": first["code"],
                                          "why": "the first transfer"}]))
            continue
        out.append(_finding("host_to_device", severity, text, path=first.get("path"), line=first.get("line"),
                            code=first.get("code")))
    runtime = _runtime_sync_findings(target, evidence)
    for s in scan.syncs:
        found = runtime.get((s["path"], s["line"]))
        if found is not None:
            found["seen"] = ["runtime", "static"]
            found["message"] = found["message"].replace("(runtime)", "(runtime; static scan agrees)")
            continue
        severity = FAIL if s["inside"] in (JIT, TRACED) or (s["inside"] == STEP and s["root"] == target.loop) \
            else "note"
        label = {JIT: "inside jitted code", TRACED: "inside traced code", STEP: "in the per-step Python loop",
                 EPOCH: "once per epoch"}[s["inside"]]
        if severity == "note" and s["inside"] == STEP:
            label += f" (per-update API; the training loop is the {target.loop})"
        if s["inside"] in HOST and evidence.measured.get(s["root"]):
            severity, label = "note", f"{label} per the static scan, but not run in the measured {s['root']}() calls"
        out.append(_finding("host_sync", severity, f"{s['kind']} {label}: {s['path']}:{s['line']} `{s['code']}` "
                                                   f"in {s['function']} (static scan)", path=s["path"],
                            line=s["line"], code=s["code"], function=s["function"], inside=s["inside"],
                            seen=["static"]))
    out += sorted(runtime.values(), key=lambda f: (f["severity"] != FAIL, f["path"], f["line"]))
    if evidence.memory is not None:
        out.append(memory_finding(target, evidence.memory))
    evaluation = evidence.evaluation
    if evaluation is not None and any(evaluation["compiles_per_evaluation"][1:]):
        later = evaluation["compiles_per_evaluation"][1:]
        texts = evaluation["cache_miss_explanations"]
        defined = next((m for m in (_DEFINED_AT.search(t) for t in texts) if m), None)
        gist = explanations_gist(texts) or "no cache-miss explanation from JAX"
        created = jit_site(defined.group(1), int(defined.group(2))) if defined else None
        why = "" if defined else " (not located: JAX's explanation names no definition)"
        out.append(_finding("evaluation_recompile", FAIL,
                            f"evaluate() compiles on every evaluation: {sum(later)} compiles in the {len(later)} "
                            f"evaluations after the first ({', '.join(evaluation['names'])}) — {gist}{why}",
                            path=display_path(defined.group(1)) if defined else None,
                            line=created or (int(defined.group(2)) if defined else None),
                            function=", ".join(evaluation["names"])))
    out += [_finding("probe_failed", "note", text) for text in evidence.failures]
    return out
