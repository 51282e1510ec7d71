"""Run every hook the candidate's adapter has; an absent hook is a "not measured" result naming it."""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from checks import HARNESS_DIRS
from checks.selection import select_algorithms
from pogo_audit.model.findings import describe
from pogo_audit.model.results import FAIL, INCONCLUSIVE, CheckResult


#: hook → the report section it evidences (a missing hook leaves that part "not measured")
HOOKS = {"make_config": "bug_risk", "log": "logging", "save_checkpoint": "logging"}


def find_hook(name: str, trainer: Any, factory: Callable[..., Any]) -> Callable[..., Any] | None:
    """``name`` on the trainer, else a module-level function of the factory's module."""
    hook = getattr(trainer, name, None)
    if callable(hook):
        return hook
    hook = getattr(sys.modules.get(getattr(factory, "__module__", ""), None), name, None)
    return hook if callable(hook) else None


def not_measured(hook: str, label: str, why: str) -> CheckResult:
    """The result that says a part of the review could not be measured on the candidate, and why."""
    return CheckResult("hooks", hook, INCONCLUSIVE, summary=f"not measured ({why})",
                       metrics={"audited": "candidate", "absent_hook": hook, "section": HOOKS[hook],
                                "candidate": label})


def _tag(result: CheckResult, label: str, hook: str) -> CheckResult:
    """A result of this check (whichever instrument measured it), with the hook and the report section it
    evidences."""
    result.check = "hooks"
    result.metrics.update(audited="candidate", hook=hook, section=HOOKS[hook], candidate=label)
    return result


def run_hooks(algo: str, label: str, factory: Callable[..., Any], examples: int = 200, seed: int = 0,
              progress: Callable[[str, int, int], None] | None = None) -> Iterator[CheckResult]:
    """Config fuzz through ``make_config``, logging fuzz through ``log``, checkpoint faults through
    ``save_checkpoint``/``load_checkpoint`` — each on the candidate built by ``factory`` for ``algo``."""
    from checks.fuzz.registry import Property
    from checks.fuzz.runner import run_property
    from checks.fuzz.strategies.log_payloads import log_cases
    from checks.hooks.checkpoint_faults import run_checkpoint_faults
    from checks.hooks.config_fuzz import check_make_config, config_cases
    from checks.hooks.log_fuzz import check_log_hook, sink_of
    from multi_actor import registry
    from multi_actor.algorithms import get_algorithm
    from multi_actor.config import POLICY_TYPES, build_config
    from multi_actor.loop import prepare_data
    from pogo_audit.runtime.data import ReplayBuffer
    from pogo_audit.core.harness import IsolatedTrainer
    from pogo_audit.runtime.seeding import BUFFER_OFFSET, derived_seed

    t0 = time.perf_counter()
    config = build_config(None, [], algo=algo, seed=seed)
    algorithm = get_algorithm(algo)
    data = prepare_data(config, algorithm)

    def build() -> Any:
        return factory(config, data.spec, seed)

    try:
        probe = IsolatedTrainer(factory, config, data.spec, seed).trainer
    except Exception as exc:  # noqa: BLE001 - the candidate's factory failing is a finding about it
        crash = describe(exc, "candidate", "factory", None, HARNESS_DIRS)
        yield CheckResult("hooks", "factory", FAIL, summary=crash.line(),
                          metrics={"audited": "candidate", "candidate": label, "crash": crash.to_dict()},
                          seconds=time.perf_counter() - t0)
        return

    make_config = find_hook("make_config", probe, factory)
    if make_config is None:
        yield not_measured("make_config", label, "adapter has no `make_config`")
    else:
        spec = registry.algorithm(algo)
        types = [t for t in POLICY_TYPES if t not in spec.unsupported_extra_types]
        prop = Property("candidate_config_validation", "configs",
                        functools.partial(config_cases, spec.actor0_types[0], types),
                        functools.partial(check_make_config, make_config))
        yield _tag(run_property(prop, examples, seed, None, progress), label, "make_config")

    if not callable(getattr(probe, "log", None)):
        yield not_measured("log", label, "adapter has no `log`")
    else:
        sink = sink_of(build)
        if sink is None:
            yield not_measured("log", label, "its logged scalars cannot be read back: add `read_log()` or log "
                                             "through wandb")
        else:
            trainer = build()
            prop = Property("candidate_logging_path", "logging", log_cases,
                            functools.partial(check_log_hook, lambda: trainer))
            yield _tag(run_property(prop, examples, seed, None, progress), label, "log")

    if not (callable(getattr(probe, "save_checkpoint", None)) and callable(getattr(probe, "load_checkpoint", None))):
        yield not_measured("save_checkpoint", label, "adapter has no `save_checkpoint`/`load_checkpoint`")
    else:
        buffer = ReplayBuffer(data.processed, derived_seed(seed, BUFFER_OFFSET))
        batches = [buffer.sample(algorithm.batch_size(algorithm.base_config(config.base))) for _ in range(4)]
        with tempfile.TemporaryDirectory(prefix="pogo-audit-ckpt-") as tmp:
            try:
                results = run_checkpoint_faults(lambda: IsolatedTrainer(factory, config, data.spec, seed), batches,
                                                Path(tmp))
            except Exception as exc:  # noqa: BLE001 - e.g. the first save raising: a finding about the candidate
                results = [CheckResult("hooks", "checkpoint_round_trip", "fail",
                                       summary=f"checkpointing a healthy run raised {type(exc).__name__}: "
                                               f"{str(exc)[:200]}")]
        for r in results:
            yield _tag(r, label, "save_checkpoint")


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[Any]:
    """``pogo-audit hooks``: every adapter hook of ``--candidate`` for ``--algo`` (absent hooks as note lines)."""
    from pogo_audit.model.results import Note
    from pogo_audit.core.loading import import_callable

    factory = import_callable(args.candidate, "--candidate", "examples.pogo_adapter:factory")
    for algo in select_algorithms(args.algo, "--algo", "torch"):
        for result in run_hooks(algo, args.candidate, factory, args.examples, args.seed, progress):
            if "absent_hook" in result.metrics:
                yield Note(f"{result.subject}: {result.summary}")
            else:
                yield result


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage (candidate mode): every hook of each algorithm's candidate adapter; absent hooks are
    not-measured results naming the hook, which the report shows as the reason."""
    from multi_actor import registry
    from pogo_audit.core.loading import import_callable

    out: list[CheckResult] = []
    for algo in opts.algos:
        candidate = opts.candidate_for(algo) if registry.algorithm(algo).framework == "torch" else None
        if candidate is None:
            continue
        say(f"hooks {algo}")
        factory = import_callable(candidate[0], "--candidate", "examples.pogo_adapter:factory")
        for r in run_hooks(algo, candidate[0], factory, opts.fuzz_examples, opts.seed):
            r.subject = f"{algo}: {r.subject}"
            out.append(r)
    return out
