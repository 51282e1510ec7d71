"""Documentation audit: what a reader of the README needs is there, consistent, and the commands shown run.

Rules (one CheckResult each, ``check="docs"``):

* ``quickstart`` — a "Quickstart" section with a code block holding the two set-up commands;
* ``architecture`` — an "Architecture" section with a diagram (a code block drawn with arrows/boxes);
* ``command_list`` — every ``pogo-audit`` subcommand of the CLI parser appears in the README's command table;
* ``algorithm_table`` — a table comparing the algorithms (every base algorithm named in one table);
* ``config_fields`` — every field of ``MultiActorConfig`` and ``ActorConfig`` is documented (as `` `field` ``);
* ``terminology`` — one spelling per term (e.g. ``actor0`` vs ``actor 0`` / ``Actor 0``);
* ``commands_parse`` — ``--help`` of every subcommand works, and every ``pogo-audit …`` line shown in a code block
  parses with the real argument parser.

The CLI is passed in (:class:`CommandParser`: the root parser and its subcommand parsers), so the audit never imports
the layer above it.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Protocol

from multi_actor.config import ALGORITHMS, ActorConfig, MultiActorConfig
from pogo_audit.model.locations import display_path
from pogo_audit.runtime.errors import PogoAuditError
from pogo_audit.model.results import FAIL, PASS, CheckResult

REPO_ROOT = Path(__file__).resolve().parent.parent
SHELL_BLOCKS = ("bash", "sh", "shell", "console", "yaml", "yml")
#: preferred spelling -> variants that must not appear
TERMS = {
    "actor0": (r"\bactor 0\b", r"\bActor 0\b", r"\bactor_0\b", r"\bActor-0\b"),
    "W2": (r"\bW_2\b", r"\bw2 distance\b"),
    "Minari": (r"\bminari dataset\b",),
}


def _sections(text: str) -> dict[str, str]:
    """Markdown heading (lower case) -> body until the next heading of the same or higher level."""
    out: dict[str, str] = {}
    matches = list(re.finditer(r"^(#{1,6})\s+(.+)$", text, flags=re.M))
    for i, m in enumerate(matches):
        level = len(m.group(1))
        end = len(text)
        for nxt in matches[i + 1:]:
            if len(nxt.group(1)) <= level:
                end = nxt.start()
                break
        out[m.group(2).strip().lower()] = text[m.end():end]
    return out


def _code_blocks(text: str, languages: tuple[str, ...] | None = None) -> list[str]:
    """Bodies of fenced code blocks (only those whose info string is in ``languages`` when given)."""
    blocks = re.findall(r"```([^\n]*)\n(.*?)```", text, flags=re.S)
    return [body for lang, body in blocks if languages is None or lang.strip().lower() in languages]


def _tables(text: str) -> list[list[str]]:
    """Markdown tables as lists of row strings."""
    tables, current = [], []
    for line in text.splitlines():
        if line.strip().startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _result(rule: str, ok: bool, summary: str, details: list[dict[str, Any]] | None = None,
            seconds: float = 0.0) -> CheckResult:
    return CheckResult(check="docs", subject=rule, verdict=PASS if ok else FAIL, summary=summary,
                       details=details or [], seconds=seconds)


class CommandParser(Protocol):
    """What the docs audit needs of the command line: parse an argv, and the subcommand parsers by name."""

    commands: Mapping[str, argparse.ArgumentParser]

    def parse_args(self, args: Sequence[str] | None = None) -> argparse.Namespace: ...


def audit_readme(parser: CommandParser, readme: Path | None = None) -> list[CheckResult]:
    """Run every rule on ``readme`` (default: the repository README) against the CLI ``parser``."""
    t0 = time.perf_counter()
    path = readme or REPO_ROOT / "README.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    sections = _sections(text)
    results = []

    quick = next((body for name, body in sections.items() if "quickstart" in name or "quick start" in name), "")
    blocks = _code_blocks(quick)
    commands = [ln for b in blocks for ln in b.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    results.append(_result("quickstart", bool(quick) and len(commands) >= 2,
                           f"Quickstart section with {len(commands)} command line(s) in code blocks"
                           if quick else "no Quickstart section", [{"command": c} for c in commands]))

    arch = next((body for name, body in sections.items() if "architecture" in name), "")
    diagram = [b for b in _code_blocks(arch) if re.search(r"[│─┌└▼▲→←|]|-->|->", b)]
    results.append(_result("architecture", bool(diagram),
                           "Architecture section with a diagram" if diagram else
                           ("Architecture section without a diagram" if arch else "no Architecture section")))

    subs = parser.commands
    documented = {name for name in subs if re.search(rf"`pogo-audit {re.escape(name)}\b", text)}
    missing = sorted(set(subs) - documented)
    results.append(_result("command_list", not missing,
                           f"{len(documented)}/{len(subs)} commands documented" +
                           (f"; missing: {', '.join(missing)}" if missing else ""),
                           [{"command": c, "documented": c in documented} for c in sorted(subs)]))

    best = max((sum(1 for a in ALGORITHMS if any(re.search(rf"\b{a}\b", row) for row in t)) for t in _tables(text)),
               default=0)
    results.append(_result("algorithm_table", best >= len(ALGORITHMS) - 1,
                           f"best table names {best}/{len(ALGORITHMS)} algorithms"))

    fields = [f.name for f in dataclasses.fields(MultiActorConfig)] + [f.name for f in dataclasses.fields(ActorConfig)]
    undocumented = [f for f in fields if f"`{f}`" not in text]
    results.append(_result("config_fields", not undocumented,
                           f"{len(fields) - len(undocumented)}/{len(fields)} config fields documented" +
                           (f"; missing: {', '.join(undocumented)}" if undocumented else ""),
                           [{"field": f, "documented": f not in undocumented} for f in fields]))

    clashes = []
    for preferred, variants in TERMS.items():
        for pattern in variants:
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                clashes.append({"term": preferred, "found": m.group(0), "path": display_path(path), "line": line,
                                "message": f"{m.group(0)!r} where the README says {preferred!r}"})
    results.append(_result("terminology", not clashes,
                           "consistent terminology" if not clashes else
                           f"{len(clashes)} inconsistent spelling(s), e.g. {clashes[0]['found']!r} for "
                           f"{clashes[0]['term']!r} at line {clashes[0]['line']}", clashes))

    results.append(_commands_parse(text, parser, display_path(path)))
    elapsed = time.perf_counter() - t0
    for r in results:
        r.seconds = elapsed / len(results)
    return results


def _commands_parse(text: str, parser: CommandParser, path: str) -> CheckResult:
    failures, checked = [], []
    for name, sub in parser.commands.items():
        buf = io.StringIO()
        try:
            with redirect_stdout(buf), redirect_stderr(buf):
                sub.parse_args(["--help"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                failures.append({"command": f"pogo-audit {name} --help", "error": buf.getvalue()[-200:]})
        checked.append(f"pogo-audit {name} --help")
    for block in _code_blocks(text, SHELL_BLOCKS):
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^(?:\$|- run:|run:)\s*", "", raw.strip())
            m = re.match(r"(?:\S*/)?pogo-audit\s+(.*)$", line)
            if not m:
                continue
            cmd = m.group(1).split("#")[0].split("|")[0].strip()
            where = {"path": path, "line": text.count("\n", 0, max(text.find(raw.strip()), 0)) + 1}
            try:
                argv = shlex.split(cmd)
            except ValueError as exc:
                failures.append({"command": f"pogo-audit {cmd}", "error": str(exc), **where})
                continue
            checked.append(f"pogo-audit {cmd}")
            try:
                parser.parse_args(argv)
            except PogoAuditError as exc:
                failures.append({"command": f"pogo-audit {cmd}", "error": str(exc), **where})
            except SystemExit as exc:
                if exc.code not in (0, None):
                    failures.append({"command": f"pogo-audit {cmd}", "error": f"exit {exc.code}", **where})
    return _result("commands_parse", not failures,
                   f"{len(checked) - len(failures)}/{len(checked)} shown commands parse",
                   [{"command": c, "ok": c not in {f['command'] for f in failures}} for c in checked] + failures)


def run_command(args: Any, progress: Any) -> list[CheckResult]:
    """``pogo-audit docs``: every documentation rule on ``--readme`` (default: this repository's README)."""
    return audit_readme(args.cli_parser, Path(args.readme) if args.readme else None)


def suite_stage(opts: Any, say: Any) -> list[CheckResult]:
    """Report stage: our README, or in candidate mode the candidate's ``--readme`` (else not measured)."""
    if opts.external and opts.readme is None:
        return []
    if opts.parser is None:
        raise ValueError("SuiteOptions.parser is required by the docs stage (or skip 'docs')")
    say("docs audit")
    results = audit_readme(opts.parser, Path(opts.readme) if opts.readme else None)
    for r in results:
        r.metrics["audited"] = "candidate" if opts.external else "self"
    return results
