"""``pogo-audit conformance`` and the report's conformance stage: which variants and trace sets, and each variant
replayed in its framework (:data:`FRAMEWORK_REPLAYS`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from multi_actor import registry
from pogo_audit.core.golden import PRECISIONS, GoldenDir
from pogo_audit.core.loading import resolve
from pogo_audit.model.results import CheckResult
from pogo_audit.runtime.errors import InputError, UsageError


PRECISION_CHOICES = ("both", *PRECISIONS)
#: the replay of each framework of the algorithm registry (imported when a variant of it is replayed: torch or jax)
FRAMEWORK_REPLAYS = {"torch": "checks.conformance.torch_replay:run_torch_variant",
                     "jax": "checks.conformance.jax_replay:run_jax_variant"}


TORCH_VARIANTS = tuple(registry.variants("torch"))
JAX_VARIANTS = tuple(registry.variants("jax"))
ALIASES = registry.variant_aliases()


def resolve_variants(algo: str, available: Iterable[str]) -> list[str]:
    """The variants ``--algo`` selects, by the one rule of every command (``all``, one name or a comma list): an
    algorithm stands for its variants (``iql`` → both IQL variants), a variant for itself."""
    available = list(available)
    known = (*TORCH_VARIANTS, *JAX_VARIANTS)
    names = [n.strip() for n in algo.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--algo: selects no variant; expected all, an algorithm or a variant ({', '.join(known)})")
    if "all" in names:
        return available
    wanted: list[str] = []
    for name in names:
        variants = list(ALIASES.get(name, (name,)))
        if any(v not in known for v in variants):
            raise UsageError(f"--algo: unknown algorithm {name!r}; expected all, or one or more of "
                             f"{', '.join((*ALIASES, *known))}, comma-separated")
        missing = [v for v in variants if v not in available]
        if missing:
            raise UsageError(f"--algo: {', '.join(missing)} has no reference implementation in this checkout")
        wanted += [v for v in variants if v not in wanted]
    return [v for v in known if v in wanted]


def golden_sets(golden: str | None, precision: str) -> list[GoldenDir]:
    """The trace sets to replay: ``--golden DIR`` (one set, its own dtype), else the shipped sets of ``precision``."""
    if precision not in PRECISION_CHOICES:
        raise UsageError(f"--precision: got {precision!r}; expected one of {', '.join(PRECISION_CHOICES)}")
    if golden is not None:
        gd = GoldenDir(golden)
        if precision != "both" and gd.dtype != precision:
            raise UsageError(f"--precision {precision}: the trace set {gd.root} is {gd.dtype}")
        return [gd]
    wanted = PRECISIONS if precision == "both" else (precision,)
    return [GoldenDir(precision=p) for p in wanted]


def run_variant(golden_dir: GoldenDir, variant: str, steps: int | None = None,
                progress: Callable[[int], None] | None = None, device: str = "cpu") -> CheckResult:
    """Replay one variant of one trace set (PyTorch or JAX, by the framework the registry gives the variant).

    ``device`` is the torch device of a PyTorch variant; the JAX variant runs on JAX's default backend (recorded in
    its fingerprint)."""
    golden_dir.variant(variant)  # a missing variant folder is an InputError before anything is built
    framework = registry.variants()[variant][0].framework
    replay = resolve(FRAMEWORK_REPLAYS[framework])
    if framework == "torch":
        return replay(golden_dir, variant, steps, progress, device)
    return replay(golden_dir, variant, steps, progress)


def run_conformance(variants: Iterable[str], sets: Iterable[GoldenDir], steps: int | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    device: str = "cpu") -> Iterator[CheckResult]:
    """Every variant in every trace set (float64 first); ``progress(label, done, total)`` after each step."""
    for gd in sets:
        for v in variants:
            if not gd.has_variant(v):
                raise InputError(f"golden traces for {v!r} not found in {gd.root}")
            total = gd.variant(v).protocol.n_steps if steps is None else \
                min(steps, gd.variant(v).protocol.n_steps)
            label = f"{v}/{gd.dtype}"
            yield run_variant(gd, v, steps, None if progress is None else
                              (lambda t, label=label, total=total: progress(label, t, total)), device)


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[CheckResult]:
    """``pogo-audit conformance``: every input validated before the first replay, then each variant and set."""
    variants = resolve_variants(args.algo, implemented_variants())
    sets = golden_sets(args.golden, args.precision)
    for golden in sets:
        for v in variants:
            g = golden.variant(v)
            _ = g.meta, g.steps, g.init_params, g.protocol
        _ = golden.dataset, golden.batch_idx
    yield from run_conformance(variants, sets, args.steps, progress, args.device or "cpu")


def implemented_variants() -> list[str]:
    """Variants whose reference module is importable in this installation (the JAX one needs jax)."""
    out = []
    for name, (spec, _) in registry.variants().items():
        try:
            spec.reference
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out


def suite_stage(opts: Any, say: Callable[[str], None]) -> list[CheckResult]:
    """Report stage: every variant of the audited algorithms against both shipped trace sets."""
    wanted = set()
    for a in opts.algos:
        wanted.update(ALIASES.get(a, (a,)))
    out = []
    for golden in golden_sets(None, "both"):
        for v in implemented_variants():
            if v in wanted:
                say(f"conformance {v}/{golden.dtype}")
                out.append(run_variant(golden, v, steps=opts.conformance_steps, device=opts.device))
    return out
