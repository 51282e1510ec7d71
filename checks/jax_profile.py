"""JAX performance profile of a training loop: compiles, retraces, host syncs, host-to-device transfers, jit gains.

A *target* is what gets profiled (:class:`JaxTarget`): ``step()`` runs one update, the optional ``epoch()`` runs
``updates_per_epoch`` updates in one jitted ``scan``/``fori_loop``. Users profile their own loop with
``--target pkg.mod:factory``, where ``factory()`` (no arguments) returns either a :class:`JaxTarget` or any object
with this protocol::

    obj.step() -> Any            # one update; return something that depends on it (loss, state) so the timer can
                                 # wait for it; None makes the profiler wait on every jax.Array attribute of obj
    obj.epoch() -> Any           # optional: updates_per_epoch updates in one call (jitted scan / fori_loop)
    obj.updates_per_epoch: int   # required with epoch()
    obj.step_fn                  # optional: the function step() runs, to check that it is jax.jit-compiled
    obj.loop: "step" | "epoch"   # optional: which path is the training loop (default: epoch if present)

What is measured, in one process:

* per jitted function name: jaxpr traces (``/jax/core/compile/jaxpr_trace_duration``) and backend compiles
  (``/jax/core/compile/backend_compile_duration``), in total and after the warm-up (must be 0), with the
  ``jax_explain_cache_misses`` explanation of every miss after the warm-up;
* host-to-device transfers during the steady-state loop (``jax.transfer_guard_host_to_device("log")``, counted
  from its log lines) and the first culprit's location (one more call under ``"disallow"``);
* a static scan (``ast``) of the source reachable from ``step``/``epoch`` for device-to-host syncs — ``float()``,
  ``.item()``, ``np.asarray()`` on device values, ``jax.device_get``, ``print``/formatting of arrays, Python ``if``
  on a traced or device value — each with file:line and whether it is inside jitted code or the Python step loop
  (on CPU ``transfer_guard_device_to_host`` never fires, hence the static scan);
* whether ``step`` runs a ``jax.jit`` function at all;
* wall-time ratios measured side by side: a Python loop of steps over one epoch with the same number of updates,
  and ``step`` under ``jax.disable_jit()`` over ``step`` jitted. Reported, never asserted.

Verdict ``fail`` on: a compile after the warm-up, a step that is not jitted, a host sync inside jitted code or in
the per-step Python loop of the training path, host-to-device transfers on every step of a step-trained loop.
Notes (reported, not failing): per-epoch transfers and syncs, and those of the per-update API of an epoch-trained
target (the reference's ``train_step`` returns host floats by design; CORL trains by epochs).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import itertools
import logging
import os
import re
import statistics
import sys
import sysconfig
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pogo_audit.errors import UsageError
from pogo_audit.results import ERROR, FAIL, PASS, CheckResult

CHECK = "jax_profile"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
OTHER_ROW = "(library jits / eager ops)"

WARMUP, STEADY, TIMING, UNJITTED, PROBE = "warmup", "steady", "timing", "unjitted", "probe"
_NOT_STEADY = frozenset({WARMUP, UNJITTED, PROBE})

JIT, TRACED, STEP, EPOCH = "jit", "traced", "step", "epoch"
_HOST = frozenset({STEP, EPOCH})
_SEVERITY_ORDER = {JIT: 0, TRACED: 1, STEP: 2, EPOCH: 3}

MULTI_ACTOR_MODULE = "multi_actor.jax_trainer"
HOPPER_DIMS = (11, 3)


# ----------------------------------------------------------------------------------------------------- targets


@dataclass
class JaxTarget:
    """One training loop to profile; ``scan_roots`` ({"step"/"epoch": callable}) default to ``step``/``epoch``."""

    name: str
    step: Callable[[], Any]
    epoch: Callable[[], Any] | None = None
    updates_per_epoch: int = 1
    loop: str | None = None
    step_fn: Callable[..., Any] | None = None
    scan_roots: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    state: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if self.loop is None:
            self.loop = EPOCH if self.epoch is not None else STEP
        if self.loop not in (STEP, EPOCH) or (self.loop == EPOCH and self.epoch is None):
            raise UsageError(f"target {self.name}: loop must be 'step' or 'epoch' (with an epoch()), got {self.loop!r}")
        if self.epoch is not None and self.updates_per_epoch < 1:
            raise UsageError(f"target {self.name}: updates_per_epoch must be >= 1 with an epoch()")
        if not self.scan_roots:
            self.scan_roots = {STEP: self.step, **({EPOCH: self.epoch} if self.epoch is not None else {})}


def as_target(obj: Any, name: str) -> JaxTarget:
    """A :class:`JaxTarget` as is, or an object with ``step()`` (see the module docstring) wrapped into one."""
    if isinstance(obj, JaxTarget):
        return obj
    step = getattr(obj, "step", None)
    if not callable(step):
        raise UsageError(f"{name}: expected a JaxTarget or an object with step(), got {type(obj).__name__}")
    epoch = getattr(obj, "epoch", None)
    epoch = epoch if callable(epoch) else None
    updates = getattr(obj, "updates_per_epoch", None)
    if epoch is not None and not isinstance(updates, int):
        raise UsageError(f"{name}: an object with epoch() must have an int updates_per_epoch")
    return JaxTarget(name=name, step=step, epoch=epoch, updates_per_epoch=updates or 1,
                     loop=getattr(obj, "loop", None), step_fn=getattr(obj, "step_fn", None),
                     state=lambda: getattr(obj, "__dict__", None))


def load_target(spec: str, option: str = "--target") -> JaxTarget:
    """``pkg.module:factory`` → ``factory()`` as a target (the current directory is importable, as with ``-m``)."""
    from pogo_audit.loading import import_callable

    factory = import_callable(spec, option, "tests.jax_pathologies:clean_loop")
    try:
        obj = factory()
    except Exception as exc:
        raise UsageError(f"{option}: {spec}() raised {type(exc).__name__}: {exc}") from None
    return as_target(obj, spec)


def synthetic_buffer(size: int = 10_000, dims: tuple[int, int] = HOPPER_DIMS, seed: int = 0) -> dict[str, np.ndarray]:
    """A Hopper-shaped CORL buffer (states, actions, rewards, next_states, next_actions, dones) of random data."""
    rng = np.random.default_rng(seed)
    s, a = dims
    return {"states": rng.normal(size=(size, s)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (size, a)).astype(np.float32),
            "rewards": rng.normal(size=size).astype(np.float32),
            "next_states": rng.normal(size=(size, s)).astype(np.float32),
            "next_actions": rng.uniform(-1, 1, (size, a)).astype(np.float32),
            "dones": (rng.random(size) < 0.01).astype(np.float32)}


def dataset_buffer(dataset: str | None, seed: int = 0) -> dict[str, np.ndarray]:
    """``None``/"synthetic" → :func:`synthetic_buffer`; "embedded" or a Minari id → its CORL transitions."""
    if dataset in (None, "synthetic"):
        return synthetic_buffer(seed=seed)
    from pogo_audit import data

    dataset_id = data.DEFAULT_DATASET_ID if dataset == "embedded" else dataset
    t = data.load_transitions(dataset_id, create_default=dataset_id == data.DEFAULT_DATASET_ID)
    return {"states": t.observations, "actions": t.actions, "rewards": t.rewards, "next_states": t.next_observations,
            "next_actions": t.next_actions, "dones": t.terminals}


def trainer_target(name: str, trainer: Any, buffer: Mapping[str, np.ndarray], batch_size: int,
                   updates_per_epoch: int) -> JaxTarget:
    """A ReBRAC-like trainer on device-resident data: ``train_epoch(buffer)`` and a per-update API, either the
    reference's ``train_step(batch, i)`` or the Trainer protocol's ``step(batch)``.

    The training loop is the epoch (CORL trains by ``fori_loop`` epochs); the per-update API is the other path.
    """
    device_buffer = {k: jnp.asarray(v, jnp.float32) for k, v in buffer.items()}
    batch = {k: v[:batch_size] for k, v in device_buffer.items()}
    counter = itertools.count()
    reference_api = callable(getattr(trainer, "train_step", None))
    per_update = trainer.train_step if reference_api else trainer.step

    def step() -> Any:
        return trainer.train_step(batch, next(counter)) if reference_api else trainer.step(batch)

    step_fn = getattr(trainer, "_step", None)
    return JaxTarget(
        name=name,
        step=step,
        epoch=lambda: trainer.train_epoch(device_buffer),
        updates_per_epoch=updates_per_epoch,
        loop=EPOCH,
        step_fn=step_fn if _is_jitted(step_fn) else None,
        scan_roots={STEP: per_update, EPOCH: trainer.train_epoch},
        state=lambda: vars(trainer),
    )


def rebrac_target(updates_per_epoch: int = 50, batch_size: int = 256, dataset: str | None = None, seed: int = 0,
                  config_overrides: Mapping[str, Any] | None = None) -> JaxTarget:
    """The CORL-faithful reference ReBRAC (``reference_algos.jax.rebrac``), step and epoch paths.

    ``config_overrides`` sets other ``Config`` fields (e.g. ``hidden_dim``); CORL defaults otherwise.
    """
    from reference_algos.jax import rebrac

    buffer = dataset_buffer(dataset, seed)
    cfg = rebrac.Config(**{**(config_overrides or {}), "batch_size": batch_size,
                           "num_updates_on_epoch": updates_per_epoch, "train_seed": seed})
    trainer = rebrac.build(cfg, buffer["states"].shape[1], buffer["actions"].shape[1])
    return trainer_target("rebrac", trainer, {k: buffer[k] for k in rebrac.BATCH_KEYS}, batch_size, updates_per_epoch)


def multi_actor_targets(actors: Sequence[int] = (3,), updates_per_epoch: int = 50, batch_size: int = 256,
                        dataset: str | None = None, seed: int = 0) -> tuple[list[JaxTarget], list[str]]:
    """Targets for ``multi_actor.jax_trainer`` when it exists, else none; returns (targets, reasons for skips).

    Recognised interfaces, in order: a hook ``jax_profile_target(num_actors=, updates_per_epoch=, batch_size=,
    seed=)`` returning a :class:`JaxTarget` or a protocol object; the Trainer-protocol factory
    ``rebrac_multi_actor_factory(MultiActorConfig, DatasetSpec, seed)`` (``base`` sets ReBRAC's ``batch_size`` and
    ``num_updates_on_epoch``) giving ``step(batch)`` / ``train_epoch(buffer)``; or ReBRAC's ``Config`` dataclass
    (fields ``batch_size``, ``num_updates_on_epoch``, optionally ``num_actors``/``train_seed``) with
    ``build(config, state_dim, action_dim)`` giving ``train_step(batch, i)`` / ``train_epoch(buffer)``.
    """
    try:
        spec = importlib.util.find_spec(MULTI_ACTOR_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return [], [f"{MULTI_ACTOR_MODULE} not found: multi-actor JAX trainer not profiled"]
    try:
        module = importlib.import_module(MULTI_ACTOR_MODULE)
    except Exception as exc:
        return [], [f"{MULTI_ACTOR_MODULE}: import failed ({type(exc).__name__}: {exc}); not profiled"]
    targets: list[JaxTarget] = []
    skipped: list[str] = []
    buffer: dict[str, np.ndarray] | None = None
    for n in actors:
        name = f"multi_actor_jax[{n} actor{'s' if n != 1 else ''}]"
        try:
            hook = getattr(module, "jax_profile_target", None)
            if callable(hook):
                target = as_target(hook(num_actors=n, updates_per_epoch=updates_per_epoch, batch_size=batch_size,
                                        seed=seed), name)
                target.name = name
                targets.append(target)
                continue
            if buffer is None:
                buffer = dataset_buffer(dataset, seed)
            factory = getattr(module, "rebrac_multi_actor_factory", None)
            if callable(factory):
                trainer = factory(_multi_actor_config(n, updates_per_epoch, batch_size, seed),
                                  _dataset_spec(dataset, buffer), seed)
                targets.append(trainer_target(name, trainer, buffer, batch_size, updates_per_epoch))
                continue
            config_cls, build = getattr(module, "Config", None), getattr(module, "build", None)
            if not (dataclasses.is_dataclass(config_cls) and callable(build)):
                skipped.append(f"{MULTI_ACTOR_MODULE}: no jax_profile_target() and no Config/build(); not profiled")
                break
            names = {f.name for f in dataclasses.fields(config_cls)}
            if not {"batch_size", "num_updates_on_epoch"} <= names:
                skipped.append(f"{MULTI_ACTOR_MODULE}.Config lacks batch_size/num_updates_on_epoch; not profiled")
                break
            if "num_actors" not in names and n != 1:
                skipped.append(f"{name}: Config has no num_actors; skipped")
                continue
            overrides: dict[str, Any] = {"batch_size": batch_size, "num_updates_on_epoch": updates_per_epoch}
            overrides.update({k: v for k, v in (("num_actors", n), ("train_seed", seed)) if k in names})
            trainer = build(config_cls(**overrides), buffer["states"].shape[1], buffer["actions"].shape[1])
            if not (callable(getattr(trainer, "train_step", None)) and callable(getattr(trainer, "train_epoch", None))):
                skipped.append(f"{name}: trainer has no train_step/train_epoch; skipped")
                continue
            targets.append(trainer_target(name, trainer, buffer, batch_size, updates_per_epoch))
        except Exception as exc:
            skipped.append(f"{name}: could not be built ({type(exc).__name__}: {exc}); skipped")
    return targets, skipped


def _multi_actor_config(num_actors: int, updates_per_epoch: int, batch_size: int, seed: int) -> Any:
    from multi_actor.config import MultiActorConfig

    return MultiActorConfig(algo="rebrac", num_actors=num_actors, seed=seed,
                            base={"batch_size": batch_size, "num_updates_on_epoch": updates_per_epoch}).resolved()


def _dataset_spec(dataset: str | None, buffer: Mapping[str, np.ndarray]) -> Any:
    from pogo_audit.data import DatasetSpec

    return DatasetSpec(dataset or "synthetic", "Hopper-v5", int(buffer["states"].shape[1]),
                       int(buffer["actions"].shape[1]), 1.0)


# ----------------------------------------------------------------------------------------------------- session


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


# ----------------------------------------------------------------------------------------------------- transfers


@dataclass
class TransferCount:
    """Host-to-device transfers seen by ``transfer_guard_host_to_device("log")`` during some calls."""

    calls: int = 0
    transfers: int | None = 0
    first: dict[str, Any] | None = None

    @property
    def per_call(self) -> float | None:
        return None if self.transfers is None or not self.calls else self.transfers / self.calls

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "transfers": self.transfers, "per_call": self.per_call, "first": self.first}


def count_host_to_device(run: Callable[[], None]) -> int:
    """Run ``run`` under ``transfer_guard_host_to_device("log")`` and count the guard's log lines.

    The guard logs from C++ to file descriptor 2, so fd 2 is redirected to a temporary file meanwhile; other
    output written there is passed on to stderr afterwards.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with jax.transfer_guard_host_to_device("log"):
                run()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    hits = [line for line in text.splitlines() if "host-to-device transfer" in line]
    rest = "\n".join(line for line in text.splitlines() if "host-to-device transfer" not in line)
    if rest.strip():
        sys.stderr.write(rest + "\n")
    return len(hits)


def probe_host_to_device(call: Callable[[], Any]) -> dict[str, Any] | None:
    """Run ``call`` once under ``transfer_guard_host_to_device("disallow")``: the first implicit transfer, or None.

    Returns {message, path, line, code} (the innermost project frame); the call is cut short at the transfer.
    """
    try:
        with jax.transfer_guard_host_to_device("disallow"):
            call()
    except Exception as exc:
        text = str(exc)
        if "host-to-device" not in text:
            raise
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_project_file(f.filename)
                  and os.path.abspath(f.filename) != os.path.abspath(__file__)]
        where = frames[-1] if frames else None
        message = re.sub(r"^\w+: ", "", text.split("\n")[0]).split(", dst_sharding")[0]
        return {"message": message[:300], "path": _display_path(where.filename) if where else None,
                "line": where.lineno if where else None, "code": (where.line or "").strip() if where else None}
    return None


# ----------------------------------------------------------------------------------------------------- static scan


_LIB_PREFIXES = tuple(os.path.abspath(p) for p in {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")})


def _is_project_file(path: str | None) -> bool:
    if not path or path.startswith("<"):
        return False
    full = os.path.abspath(path)
    return not full.startswith(_LIB_PREFIXES) and "site-packages" not in full and os.path.exists(full)


def _display_path(path: str) -> str:
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    return full if rel.startswith("..") else rel


@dataclass
class _Source:
    path: str
    lines: list[str]
    by_line: dict[tuple[int, str], ast.AST]


@dataclass(eq=False)
class _Func:
    """A Python function body (def or lambda) with what is known of its live environment."""

    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
    src: _Source
    globals: dict[str, Any]
    live: dict[str, Any]
    instance: Any = None
    self_name: str | None = None
    parent: _Func | None = None

    @property
    def qualname(self) -> str:
        name = getattr(self.node, "name", "<lambda>")
        return f"{self.parent.qualname}.{name}" if self.parent is not None else name

    def params(self) -> list[str]:
        a = self.node.args
        names = [p.arg for p in (*a.posonlyargs, *a.args)]
        return names[1:] if self.self_name is not None and names and names[0] == self.self_name else names

    def all_params(self) -> set[str]:
        a = self.node.args
        names = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
        names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
        return names - {self.self_name} if self.self_name else names


@dataclass(frozen=True)
class _Callee:
    """A resolved call: a jitted function (``jit``) or plain Python (``py``), its body when known."""

    kind: str
    func: _Func | None
    static: frozenset[str] = frozenset()
    bound_positional: int = 0


_TRANSFORMS = frozenset({"grad", "value_and_grad", "vmap", "jacfwd", "jacrev", "hessian", "checkpoint", "remat",
                         "scan", "fori_loop", "while_loop", "cond", "switch", "map", "associative_scan",
                         "custom_jvp", "custom_vjp", "pmap", "shard_map", "jvp", "vjp", "linearize"})
_FUNCTION_TRANSFORMS = frozenset({"jit", "grad", "value_and_grad", "vmap", "jacfwd", "jacrev", "hessian", "checkpoint",
                                  "remat", "custom_jvp", "custom_vjp", "pmap", "shard_map"})
_STATIC_ATTRS = frozenset({"shape", "ndim", "dtype", "size", "sharding", "weak_type"})
_HOST_RESULT = frozenset({len, isinstance, issubclass, range, type, hasattr, getattr, callable, id, print, repr,
                          str, float, int, bool, complex})
_NUMPY_CONVERT = {np.asarray: "np.asarray()", np.array: "np.array()", np.asanyarray: "np.asanyarray()",
                  np.ascontiguousarray: "np.ascontiguousarray()"}
_SCALARS = {float: "float()", int: "int()", bool: "bool()", complex: "complex()"}
_FORMATTERS = frozenset({print, str, repr, format})
_MISSING = object()


def _member(obj: Any, collection: Mapping[Any, Any] | frozenset[Any]) -> bool:
    try:
        return obj in collection
    except TypeError:
        return False


def _is_jitted(obj: Any) -> bool:
    """A ``jax.jit``-compiled callable (PjitFunction / ``jax.stages.Wrapped``)."""
    return callable(obj) and hasattr(obj, "lower") and hasattr(obj, "__wrapped__")


def _holds_device_array(value: Any) -> bool:
    try:
        return any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(value))
    except (TypeError, ValueError):
        return False


def _is_jax_object(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "jax" or module.startswith(("jax.", "jaxlib"))


def _own_nodes(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> Iterator[ast.AST]:
    """Every node of a function body, not entering nested defs, lambdas or classes."""
    for stmt in (node.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else [node.body]):
        yield from _walk_own(stmt)


def _static_names_of_jit_call(call: ast.Call) -> frozenset[str]:
    names: set[str] = set()
    for kw in call.keywords:
        if kw.arg == "static_argnames":
            for n in ast.walk(kw.value):
                if isinstance(n, ast.Constant) and isinstance(n.value, str):
                    names.add(n.value)
    return frozenset(names)


def _static_argnums_of_jit_call(call: ast.Call) -> tuple[int, ...]:
    for kw in call.keywords:
        if kw.arg == "static_argnums":
            return tuple(n.value for n in ast.walk(kw.value)
                         if isinstance(n, ast.Constant) and isinstance(n.value, int))
    return ()


@dataclass
class StaticScan:
    """Result of :func:`scan_sources`: host syncs, whether each root reaches jitted code, user function names."""

    syncs: list[dict[str, Any]]
    reaches_jit: dict[str, bool]
    user_names: set[str]
    files: list[str]
    unavailable: list[str]


class _Scanner:
    def __init__(self) -> None:
        self.sources: dict[str, _Source | None] = {}
        self.syncs: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.reaches_jit: dict[str, bool] = {}
        self.visited: set[tuple[Any, ...]] = set()
        self.unavailable: list[str] = []
        self._taint_memo: dict[tuple[Any, ...], tuple[set[str], bool]] = {}
        self._in_progress: set[tuple[Any, ...]] = set()
        self._reach_memo: dict[int, bool] = {}
        self._locals_memo: dict[int, tuple[dict[str, ast.AST], dict[str, ast.expr]]] = {}

    # ------------------------------------------------------------------------------------- sources and lookup

    def source(self, path: str) -> _Source | None:
        if path not in self.sources:
            self.sources[path] = None
            if _is_project_file(path):
                try:
                    text = open(path, encoding="utf-8").read()
                    tree = ast.parse(text, filename=path)
                except (OSError, SyntaxError, UnicodeDecodeError):
                    self.unavailable.append(path)
                    return None
                by_line: dict[tuple[int, str], ast.AST] = {}
                for n in ast.walk(tree):
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        first = min([n.lineno, *(d.lineno for d in n.decorator_list)])
                        by_line[(first, n.name)] = n
                        by_line.setdefault((n.lineno, n.name), n)
                    elif isinstance(n, ast.Lambda):
                        by_line.setdefault((n.lineno, "<lambda>"), n)
                self.sources[path] = _Source(path, text.splitlines(), by_line)
        return self.sources[path]

    def func_of(self, fn: Any, instance: Any = None) -> _Func | None:
        """The body of a live Python function (or bound method), when its source is project code."""
        if inspect.ismethod(fn):
            instance, fn = fn.__self__, fn.__func__
        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        src = self.source(code.co_filename)
        if src is None:
            return None
        node = src.by_line.get((code.co_firstlineno, code.co_name))
        if node is None:
            return None
        live = {}
        for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
            with contextlib.suppress(ValueError):
                live[name] = cell.cell_contents
        func = _Func(node, src, getattr(fn, "__globals__", {}), live)
        if instance is not None and node.args.args:
            func.instance, func.self_name = instance, node.args.args[0].arg
        return func

    def lookup(self, func: _Func, name: str) -> Any:
        """Live value of a free name in ``func``: closure cell, then globals, then builtins."""
        f: _Func | None = func
        while f is not None:
            if name in f.live:
                return f.live[name]
            if f is not func and (name in f.all_params() or self.local_assignment(f, name) is not None):
                return _MISSING
            f = f.parent
        if name in func.globals:
            return func.globals[name]
        return getattr(builtins, name, _MISSING)

    def _locals(self, node: ast.AST) -> tuple[dict[str, ast.AST], dict[str, ast.expr]]:
        """(nested defs, single-name assignments) of a function body, by name."""
        if id(node) not in self._locals_memo:
            defs: dict[str, ast.AST] = {}
            assigned: dict[str, ast.expr] = {}
            if not isinstance(node, ast.Lambda):
                for n in _own_nodes(node):
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        defs.setdefault(n.name, n)
                    elif isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                        assigned.setdefault(n.targets[0].id, n.value)
            self._locals_memo[id(node)] = (defs, assigned)
        return self._locals_memo[id(node)]

    def local_def(self, func: _Func, name: str) -> _Func | None:
        """A def nested in ``func`` (or an enclosing function) named ``name``."""
        f: _Func | None = func
        while f is not None:
            node = self._locals(f.node)[0].get(name)
            if node is not None:
                return _Func(node, f.src, f.globals, {}, f.instance, None, f)
            f = f.parent
        return None

    def local_assignment(self, func: _Func, name: str) -> ast.expr | None:
        return self._locals(func.node)[1].get(name)

    def live_value(self, func: _Func, expr: ast.expr) -> Any:
        """The live object a Name/Attribute chain denotes (module functions, ``self.attr``), else ``_MISSING``."""
        if isinstance(expr, ast.Name):
            if expr.id == func.self_name and func.instance is not None:
                return func.instance
            if expr.id in func.all_params() or self.local_assignment(func, expr.id) is not None:
                return _MISSING
            return self.lookup(func, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.live_value(func, expr.value)
            if base is _MISSING:
                return _MISSING
            try:
                return getattr(base, expr.attr)
            except Exception:  # a user property may raise anything; the scan then treats the name as unresolved
                return _MISSING
        return _MISSING

    # ------------------------------------------------------------------------------------- call resolution

    def resolve_live(self, obj: Any) -> _Callee | None:
        if obj is _MISSING or obj is None:
            return None
        if _is_jitted(obj):
            inner, static, bound = obj.__wrapped__, set(), 0
            while isinstance(inner, partial):
                static |= set(inner.keywords)
                bound += len(inner.args)
                inner = inner.func
            if _is_jax_object(inner):
                return None
            func = self.func_of(inner)
            if func is not None:
                static |= self._decorator_statics(func)
            return _Callee("jit", func, frozenset(static), bound)
        if isinstance(obj, partial):
            callee = self.resolve_live(obj.func)
            if callee is None:
                return None
            return _Callee(callee.kind, callee.func, callee.static | frozenset(obj.keywords),
                           callee.bound_positional + len(obj.args))
        if inspect.isfunction(obj) or inspect.ismethod(obj):
            func = self.func_of(obj)
            return _Callee("py", func) if func is not None else None
        return None

    def _decorator_statics(self, func: _Func) -> set[str]:
        static: set[str] = set()
        node = func.node
        if isinstance(node, ast.Lambda):
            return static
        params = [p.arg for p in (*node.args.posonlyargs, *node.args.args)]
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call):
                static |= _static_names_of_jit_call(dec)
                static |= {params[i] for i in _static_argnums_of_jit_call(dec) if i < len(params)}
        return static

    def resolve(self, func: _Func, expr: ast.expr, depth: int = 0) -> _Callee | None:
        """What calling ``expr`` inside ``func`` runs."""
        if depth > 8:
            return None
        if isinstance(expr, ast.Lambda):
            return _Callee("py", _Func(expr, func.src, func.globals, {}, func.instance, None, func))
        if isinstance(expr, ast.Call):
            target = self.live_value(func, expr.func)
            inner = expr.args[0] if expr.args else None
            if target is jax.jit and inner is not None:
                callee = self.resolve(func, inner, depth + 1)
                body = callee.func if callee else None
                static = set(_static_names_of_jit_call(expr))
                if body is not None:
                    params = body.params()
                    static |= {params[i] for i in _static_argnums_of_jit_call(expr) if i < len(params)}
                    static |= callee.static if callee else set()
                return _Callee("jit", body, frozenset(static), callee.bound_positional if callee else 0)
            if target is partial and inner is not None:
                callee = self.resolve(func, inner, depth + 1)
                if callee is None:
                    return None
                return _Callee(callee.kind, callee.func,
                               callee.static | frozenset(k.arg for k in expr.keywords if k.arg),
                               callee.bound_positional + len(expr.args) - 1)
            maker = self.resolve(func, expr.func, depth + 1)
            if maker is not None and maker.kind == "py" and maker.func is not None:
                for n in _own_nodes(maker.func.node):
                    if isinstance(n, ast.Return) and n.value is not None:
                        made = self.resolve(maker.func, n.value, depth + 1)
                        if made is not None and made.kind == "jit":
                            return made
            return None
        if isinstance(expr, ast.Subscript):
            held = self.live_value(func, expr.value)
            values = list(held.values()) if isinstance(held, dict) else held if isinstance(held, (list, tuple)) \
                else []
            return _Callee("jit", None) if values and all(_is_jitted(v) for v in values) else None
        if isinstance(expr, ast.Name):
            nested = self.local_def(func, expr.id)
            if nested is not None:
                return _Callee("py", nested)
            assigned = self.local_assignment(func, expr.id)
            if assigned is not None:
                return self.resolve(func, assigned, depth + 1)
        return self.resolve_live(self.live_value(func, expr))

    # ------------------------------------------------------------------------------------- taint

    def expr_tainted(self, func: _Func, expr: ast.AST | None, tainted: set[str]) -> bool:
        """Whether ``expr`` may hold a jax array (traced inside jit, on the device outside)."""
        if expr is None:
            return False
        if isinstance(expr, ast.Name):
            if expr.id in tainted:
                return True
            if expr.id in func.all_params() or expr.id == func.self_name:
                return False
            value = self.lookup(func, expr.id)
            return value is not _MISSING and not inspect.ismodule(value) and isinstance(value, jax.Array)
        if isinstance(expr, ast.Attribute):
            if expr.attr in _STATIC_ATTRS:
                return False
            dotted = _dotted(expr)
            if dotted is not None and dotted in tainted:
                return True
            if isinstance(expr.value, ast.Name) and expr.value.id == func.self_name and func.instance is not None:
                value = getattr(func.instance, expr.attr, None)
                return not callable(value) and _holds_device_array(value)
            return self.expr_tainted(func, expr.value, tainted)
        if isinstance(expr, ast.Call):
            return self.call_tainted(func, expr, tainted)
        if isinstance(expr, (ast.Lambda, ast.Constant)):
            return False
        if isinstance(expr, ast.Compare) and all(isinstance(op, (ast.Is, ast.IsNot, ast.In, ast.NotIn))
                                                 for op in expr.ops):
            return False
        if isinstance(expr, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return any(self.expr_tainted(func, g.iter, tainted) for g in expr.generators) or any(
                self.expr_tainted(func, e, tainted | self._comp_targets(func, expr.generators, tainted))
                for e in ((expr.key, expr.value) if isinstance(expr, ast.DictComp) else (expr.elt,)))
        return any(self.expr_tainted(func, c, tainted) for c in ast.iter_child_nodes(expr)
                   if isinstance(c, ast.expr))

    def _comp_targets(self, func: _Func, generators: list[ast.comprehension], tainted: set[str]) -> set[str]:
        out: set[str] = set()
        for g in generators:
            out |= self.iter_taint(func, g.target, g.iter, tainted | out)
        return out

    def assign_taint(self, func: _Func, target: ast.AST, value: ast.expr, tainted: set[str]) -> set[str]:
        """Names in ``target`` receiving a tainted part of ``value`` (tuples matched element by element)."""
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) and \
                len(target.elts) == len(value.elts) and not any(isinstance(e, ast.Starred) for e in target.elts):
            return set().union(*(self.assign_taint(func, t, v, tainted) for t, v in zip(target.elts, value.elts)))
        return _target_names(target) if self.expr_tainted(func, value, tainted) else set()

    def iter_taint(self, func: _Func, target: ast.AST, iterable: ast.expr, tainted: set[str]) -> set[str]:
        """Names bound by ``for target in iterable`` receiving tainted elements (``enumerate``, ``zip``, ``range``,
        ``dict.items/keys/values`` looked through)."""
        pair = isinstance(target, ast.Tuple) and len(target.elts) == 2
        if isinstance(iterable, ast.Call):
            fn = self.live_value(func, iterable.func)
            if fn is range:
                return set()
            if fn is enumerate and pair and iterable.args:
                return self.iter_taint(func, target.elts[1], iterable.args[0], tainted)
            if fn is zip and isinstance(target, ast.Tuple) and len(target.elts) == len(iterable.args):
                return set().union(*(self.iter_taint(func, t, a, tainted) for t, a in zip(target.elts, iterable.args)))
            if isinstance(iterable.func, ast.Attribute) and iterable.func.attr in ("items", "keys", "values") \
                    and not iterable.args:
                if iterable.func.attr == "keys" or not self.expr_tainted(func, iterable.func.value, tainted):
                    return set()
                if iterable.func.attr == "items" and pair:
                    return _target_names(target.elts[1])
        return _target_names(target) if self.expr_tainted(func, iterable, tainted) else set()

    def call_tainted(self, func: _Func, call: ast.Call, tainted: set[str]) -> bool:
        target = self.live_value(func, call.func)
        if target is jax.device_get or _member(target, _NUMPY_CONVERT) or _member(target, _HOST_RESULT):
            return False
        if isinstance(call.func, ast.Attribute) and call.func.attr in ("item", "tolist", "__array__"):
            return False
        callee = self.resolve(func, call.func)
        if callee is not None and callee.kind == "jit":
            return True
        if target is not _MISSING and _is_jax_object(target):
            return getattr(target, "__name__", "") not in _FUNCTION_TRANSFORMS
        if isinstance(call.func, ast.Call) and _is_jax_object(self.live_value(func, call.func.func)):
            return True
        args_tainted = any(self.expr_tainted(func, a, tainted) for a in (*call.args, *(k.value for k in call.keywords)))
        if isinstance(call.func, ast.Attribute) and target is _MISSING:
            args_tainted = args_tainted or self.expr_tainted(func, call.func.value, tainted)
        if callee is not None and callee.func is not None:
            params = self.bind(callee, call, func, tainted)
            return args_tainted or self.summary(callee.func, params)[1]
        return args_tainted

    def bind(self, callee: _Callee, call: ast.Call, caller: _Func, tainted: set[str]) -> frozenset[str]:
        """Parameters of ``callee`` receiving a tainted argument at ``call``."""
        body = callee.func
        assert body is not None
        params = body.params()[callee.bound_positional:]
        a = body.node.args
        out: set[str] = set()
        for i, arg in enumerate(call.args):
            t = self.expr_tainted(caller, arg.value if isinstance(arg, ast.Starred) else arg, tainted)
            if not t:
                continue
            if isinstance(arg, ast.Starred):
                out |= set(params[i:]) | ({a.vararg.arg} if a.vararg else set())
            elif i < len(params):
                out.add(params[i])
            elif a.vararg is not None:
                out.add(a.vararg.arg)
        for kw in call.keywords:
            if not self.expr_tainted(caller, kw.value, tainted):
                continue
            if kw.arg is None:
                out |= body.all_params()
            elif kw.arg in body.all_params():
                out.add(kw.arg)
            elif a.kwarg is not None:
                out.add(a.kwarg.arg)
        return frozenset(out - callee.static)

    def summary(self, func: _Func, params: frozenset[str],
                closure: frozenset[str] = frozenset()) -> tuple[set[str], bool]:
        """(tainted local names, whether a return value is tainted), flow-insensitive, to a fixpoint."""
        key = (id(func.node), id(func.instance), params, closure)
        if key in self._taint_memo:
            return self._taint_memo[key]
        if key in self._in_progress:
            return set(params) | set(closure), False
        self._in_progress.add(key)
        tainted = set(params) | set(closure)
        nodes = list(_own_nodes(func.node)) if not isinstance(func.node, ast.Lambda) else []
        for _ in range(6):
            before = len(tainted)
            for n in nodes:
                if isinstance(n, ast.Assign):
                    for t in n.targets:
                        tainted |= self.assign_taint(func, t, n.value, tainted)
                elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None:
                    if self.expr_tainted(func, n.value, tainted) or (
                            isinstance(n, ast.AugAssign) and self.expr_tainted(func, n.target, tainted)):
                        tainted |= _target_names(n.target)
                elif isinstance(n, (ast.For, ast.AsyncFor)):
                    tainted |= self.iter_taint(func, n.target, n.iter, tainted)
                elif isinstance(n, ast.withitem) and n.optional_vars is not None and \
                        self.expr_tainted(func, n.context_expr, tainted):
                    tainted |= _target_names(n.optional_vars)
                elif isinstance(n, ast.NamedExpr) and self.expr_tainted(func, n.value, tainted):
                    tainted |= _target_names(n.target)
            if len(tainted) == before:
                break
        if isinstance(func.node, ast.Lambda):
            returns = self.expr_tainted(func, func.node.body, tainted)
        else:
            returns = any(isinstance(n, ast.Return) and self.expr_tainted(func, n.value, tainted) for n in nodes)
        self._in_progress.discard(key)
        self._taint_memo[key] = (tainted, returns)
        return tainted, returns

    # ------------------------------------------------------------------------------------- traversal

    def reaches_jit_call(self, func: _Func, depth: int = 0) -> bool:
        """Whether ``func`` calls jitted code, directly or through project functions (bounded depth)."""
        if id(func.node) in self._reach_memo:
            return self._reach_memo[id(func.node)]
        self._reach_memo[id(func.node)] = False
        found = False
        if depth < 6:
            for n in _own_nodes(func.node):
                if isinstance(n, ast.Call):
                    callee = self.resolve(func, n.func)
                    if callee is not None and (callee.kind == "jit" or (
                            callee.func is not None and self.reaches_jit_call(callee.func, depth + 1))):
                        found = True
                        break
        self._reach_memo[id(func.node)] = found
        return found

    def visit(self, func: _Func, ctx: str, params: frozenset[str], root: str,
              closure: frozenset[str] = frozenset()) -> None:
        key = (id(func.node), id(func.instance), ctx, params, closure, root)
        if key in self.visited or len(self.visited) > 5000:
            return
        self.visited.add(key)
        tainted, _ = self.summary(func, params, closure)
        contexts = self._node_contexts(func, ctx)
        for n in _own_nodes(func.node):
            here = contexts.get(id(n), ctx)
            self._check_sink(func, n, here, root, tainted)
            if isinstance(n, ast.Call):
                self._follow_call(func, n, here, root, tainted)

    def _node_contexts(self, func: _Func, ctx: str) -> dict[int, str]:
        """Host code inside a Python ``for``/``while`` loop that drives jitted calls is per-step code."""
        out: dict[int, str] = {}
        if ctx not in _HOST or isinstance(func.node, ast.Lambda):
            return out
        for n in _own_nodes(func.node):
            if isinstance(n, (ast.For, ast.AsyncFor, ast.While)):
                inner = [m for s in n.body for m in _walk_own(s)]
                if any(isinstance(m, ast.Call) and self._call_reaches_jit(func, m) for m in inner):
                    for m in inner:
                        out[id(m)] = STEP
        return out

    def _call_reaches_jit(self, func: _Func, call: ast.Call) -> bool:
        callee = self.resolve(func, call.func)
        return callee is not None and (callee.kind == "jit" or (
            callee.func is not None and self.reaches_jit_call(callee.func)))

    def _follow_call(self, func: _Func, call: ast.Call, ctx: str, root: str, tainted: set[str]) -> None:
        callee = self.resolve(func, call.func)
        target = self.live_value(func, call.func)
        if callee is not None:
            if callee.kind == "jit":
                if ctx in _HOST:
                    self.reaches_jit[root] = True
                if callee.func is not None:
                    params = frozenset(set(callee.func.params()[callee.bound_positional:]) |
                                       {p.arg for p in callee.func.node.args.kwonlyargs}) - callee.static
                    self.visit(callee.func, JIT, params, root)
            elif callee.func is not None:
                self.visit(callee.func, ctx, self.bind(callee, call, func, tainted), root,
                           self._closure_taint(func, callee.func, tainted))
        if target is jax.jit:
            return
        if target is partial:
            bound = self.resolve(func, call)
            if bound is not None and bound.func is not None and bound.kind == "py":
                params = frozenset(bound.func.all_params()) - bound.static if ctx in (JIT, TRACED) else frozenset()
                self.visit(bound.func, ctx, params, root, self._closure_taint(func, bound.func, tainted))
            return
        # functions passed as arguments: traced by jax transforms, otherwise called in this context
        transform = target is not _MISSING and _is_jax_object(target) and getattr(target, "__name__", "") in _TRANSFORMS
        others = any(self.expr_tainted(func, a, tainted) for a in call.args)
        for arg in (*call.args, *(k.value for k in call.keywords)):
            if isinstance(arg, ast.Call) and self.live_value(func, arg.func) is not partial:
                continue
            if not isinstance(arg, (ast.Name, ast.Attribute, ast.Lambda, ast.Call)):
                continue
            passed = self.resolve(func, arg)
            if passed is None or passed.func is None and passed.kind != "jit":
                continue
            if passed.kind == "jit":
                if ctx in _HOST:
                    self.reaches_jit[root] = True
                if passed.func is not None:
                    self.visit(passed.func, JIT, frozenset(passed.func.all_params()) - passed.static, root)
                continue
            traced = transform or ctx in (JIT, TRACED)
            params = frozenset(passed.func.all_params()) - passed.static if traced or others else frozenset()
            inner = (JIT if ctx == JIT else TRACED) if transform else ctx
            self.visit(passed.func, inner, params, root, self._closure_taint(func, passed.func, tainted))

    @staticmethod
    def _closure_taint(caller: _Func, callee: _Func, tainted: set[str]) -> frozenset[str]:
        if callee.parent is not caller:
            return frozenset()
        return frozenset(t for t in tainted if "." not in t) - callee.all_params()

    def _check_sink(self, func: _Func, n: ast.AST, ctx: str, root: str, tainted: set[str]) -> None:
        kind = None
        if isinstance(n, ast.Call):
            target = self.live_value(func, n.func)
            first = n.args[0] if n.args else None
            if target is jax.device_get:
                kind = "jax.device_get()"
            elif _member(target, _SCALARS) and first is not None and self.expr_tainted(func, first, tainted):
                kind = _SCALARS[target]
            elif _member(target, _NUMPY_CONVERT) and first is not None and self.expr_tainted(func, first, tainted):
                kind = _NUMPY_CONVERT[target]
            elif _member(target, _FORMATTERS) and any(self.expr_tainted(func, a, tainted) for a in n.args):
                kind = f"{target.__name__}()"
            elif isinstance(n.func, ast.Attribute) and n.func.attr in ("item", "tolist", "__array__") and \
                    self.expr_tainted(func, n.func.value, tainted):
                kind = f".{n.func.attr}()"
        elif isinstance(n, ast.JoinedStr):
            if any(isinstance(v, ast.FormattedValue) and self.expr_tainted(func, v.value, tainted) for v in n.values):
                kind = "f-string"
        elif isinstance(n, (ast.If, ast.While, ast.IfExp, ast.Assert)):
            if self.expr_tainted(func, n.test, tainted):
                kind = "while on array" if isinstance(n, ast.While) else "if on array"
        elif isinstance(n, ast.comprehension):
            if any(self.expr_tainted(func, c, tainted | self._comp_targets(func, [n], tainted)) for c in n.ifs):
                kind = "if on array"
        if kind is None:
            return
        line = getattr(n, "lineno", 0)
        path = _display_path(func.src.path)
        key = (path, line, kind)
        if key in self.syncs and _SEVERITY_ORDER[self.syncs[key]["inside"]] <= _SEVERITY_ORDER[ctx]:
            return
        code = func.src.lines[line - 1].strip() if 0 < line <= len(func.src.lines) else ""
        self.syncs[key] = {"path": path, "line": line, "code": code, "kind": kind, "function": func.qualname,
                           "inside": ctx, "root": root}


def _walk_own(node: ast.AST) -> Iterator[ast.AST]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(n))


def _dotted(expr: ast.expr) -> str | None:
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        return ".".join([expr.id, *reversed(parts)])
    return None


def _target_names(target: ast.AST) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Attribute):
        dotted = _dotted(target)
        return {dotted} if dotted else set()
    if isinstance(target, ast.Subscript):
        return _target_names(target.value)
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(e) for e in target.elts)) if target.elts else set()
    return set()


def _live_jitted(owner: Any) -> list[Callable[..., Any]]:
    """``jax.jit`` functions held by ``owner``: attributes, and values of dict/list/tuple attributes."""
    found = []
    for value in getattr(owner, "__dict__", {}).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in items if _is_jitted(v)]
    return found


def scan_sources(roots: Mapping[str, Callable[..., Any]]) -> StaticScan:
    """Static scan of the code reachable from each root ({"step": fn, "epoch": fn}) for device→host syncs.

    Follows calls into project code (never into installed libraries), resolving names against the live objects
    (module globals, closures, ``self`` of bound methods), so ``self._step = jax.jit(partial(f, cfg=...))`` is known
    to run ``f`` under jit with ``cfg`` static; jitted functions held by the roots' ``self`` (e.g. built lazily at
    the first call) are scanned as jitted code too. ``inside`` is ``jit`` (traced by ``jax.jit``), ``traced``
    (traced by another transform outside jit), ``step`` (Python code run once per update) or ``epoch`` (once per
    epoch).
    """
    scanner = _Scanner()
    for root, fn in roots.items():
        scanner.reaches_jit.setdefault(root, False)
        callee = scanner.resolve_live(fn)
        if callee is None:
            path = getattr(getattr(inspect.unwrap(fn), "__code__", None), "co_filename", repr(fn)) \
                if callable(fn) else repr(fn)
            scanner.unavailable.append(f"{root}: {path}")
            continue
        if callee.kind == "jit":
            scanner.reaches_jit[root] = True
            if callee.func is not None:
                scanner.visit(callee.func, JIT, frozenset(callee.func.all_params()) - callee.static, root)
        elif callee.func is not None:
            scanner.visit(callee.func, STEP if root == STEP else EPOCH, frozenset(), root)
    owners = {id(o): o for o in (getattr(fn, "__self__", None) for fn in roots.values()) if o is not None}
    for owner in owners.values():
        for fn in _live_jitted(owner):
            callee = scanner.resolve_live(fn)
            if callee is not None and callee.func is not None:
                scanner.visit(callee.func, JIT, frozenset(callee.func.all_params()) - callee.static, JIT)
    user_names = {"<lambda>"}
    files = []
    for path, src in scanner.sources.items():
        if src is not None:
            files.append(_display_path(path))
            user_names |= {name for _, name in src.by_line}
    syncs = sorted(scanner.syncs.values(), key=lambda s: (_SEVERITY_ORDER[s["inside"]], s["path"], s["line"]))
    return StaticScan(syncs, dict(scanner.reaches_jit), user_names, sorted(files), scanner.unavailable)


# ----------------------------------------------------------------------------------------------------- profile


def _wait(value: Any) -> None:
    for leaf in jax.tree.leaves(value):
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()


def _run(target: JaxTarget, fn: Callable[[], Any], n: int) -> None:
    result = None
    for _ in range(n):
        result = fn()
    _wait(result if result is not None else (target.state() if target.state else None))


def _seconds_per_call(target: JaxTarget, fn: Callable[[], Any], n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _run(target, fn, n)
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def _eager_warmup(session: ProfileSession, target: JaxTarget, max_calls: int = 4) -> None:
    """Call ``step`` (under ``disable_jit``) until a call compiles nothing: eager mode compiles each primitive once
    per shape, and different calls may take different branches."""
    for _ in range(max_calls):
        before = len(session.events)
        _run(target, target.step, 1)
        if not any(kind == "compile" for _, kind, _ in session.events[before:]):
            return


def _jitted(target: JaxTarget, scan: StaticScan, compiled_by_step: Sequence[str]) -> tuple[bool, str]:
    """Whether ``step`` runs jitted code: ``step_fn`` if given, else the static scan or the warm-up compiles."""
    if target.step_fn is not None:
        name = getattr(target.step_fn, "__name__", "?")
        if _is_jitted(target.step_fn):
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


def _findings(target: JaxTarget, table: list[dict[str, Any]], h2d: dict[str, TransferCount], scan: StaticScan,
              jitted: tuple[bool, str]) -> list[dict[str, Any]]:
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


def profile_target(target: JaxTarget, steps: int = 20, epochs: int = 2, warmup: int = 1, unjitted_steps: int = 3,
                   repeats: int = 3, timing_steps: int = 20, fresh_caches: bool = True) -> CheckResult:
    """Profile one target; verdict ``fail`` when any pathology is found on its training path (see module doc).

    ``fresh_caches`` clears JAX's caches first (``jax.clear_caches``), so that compile counts do not depend on what
    this process compiled before (e.g. another trainer sharing a jitted function).

    ``warmup`` step (and epoch) calls come first; compiles after them are pathologies. ``steps``/``epochs`` are the
    steady-state calls counted for compiles and host-to-device transfers. Ratios: ``updates_per_epoch`` steps
    (``timing_steps`` without an epoch) per timing repeat; ``unjitted_steps`` steps under ``jax.disable_jit()``
    (0: skip) after untimed eager calls until one compiles nothing. Not timed when most steady steps recompile.
    """
    t0 = time.perf_counter()
    paths = {STEP: target.step, **({EPOCH: target.epoch} if target.epoch is not None else {})}
    calls = {STEP: steps, EPOCH: epochs}
    h2d: dict[str, TransferCount] = {}
    timing_note = ""
    seconds: dict[str, float | None] = {"step_loop": None, "epoch": None, "unjitted_step": None}
    session = ProfileSession()
    compiled_by_step: list[str] = []
    try:
        if fresh_caches:
            jax.clear_caches()
        with session:
            with session.phase(WARMUP):
                _run(target, target.step, warmup)
                step_compiled = {name for _, kind, name in session.events if kind == "compile"}
                if target.epoch is not None:
                    _run(target, target.epoch, warmup)
            scan = scan_sources(target.scan_roots)
            compiled_by_step = sorted(step_compiled & scan.user_names - {"<lambda>"})
            with session.phase(STEADY):
                for name, fn in paths.items():
                    h2d[name] = TransferCount(calls[name],
                                              count_host_to_device(partial(_run, target, fn, calls[name])))
            steady_compiles = sum(1 for phase, kind, _ in session.events if phase == STEADY and kind == "compile")
            if steady_compiles > steps // 2:
                timing_note = f"not timed: {steady_compiles} compiles in {steps} steady-state steps (timings would " \
                              "measure the compiler)"
            else:
                with session.phase(TIMING):
                    n = target.updates_per_epoch if target.epoch is not None else timing_steps
                    seconds["step_loop"] = _seconds_per_call(target, target.step, n, repeats)
                    if target.epoch is not None:
                        seconds["epoch"] = _seconds_per_call(target, target.epoch, 1, repeats) / \
                            target.updates_per_epoch
                if unjitted_steps > 0:
                    with session.phase(UNJITTED), jax.disable_jit():
                        _eager_warmup(session, target)
                        seconds["unjitted_step"] = _seconds_per_call(target, target.step, unjitted_steps, 1)
            with session.phase(PROBE):
                for name, fn in paths.items():
                    h2d[name].first = probe_host_to_device(fn)
                    if h2d[name].first is not None and not h2d[name].transfers:
                        h2d[name].transfers = None
    except Exception as exc:
        return CheckResult(check=CHECK, subject=target.name, verdict=ERROR,
                           summary=f"profiling raised {type(exc).__name__}: {exc}",
                           seconds=time.perf_counter() - t0)
    table = session.function_table(scan.user_names)
    jitted = _jitted(target, scan, compiled_by_step)
    step_s, epoch_s, unjit_s = seconds["step_loop"], seconds["epoch"], seconds["unjitted_step"]
    ratios = {"python_loop_over_scan": step_s / epoch_s if step_s and epoch_s else None,
              "unjitted_over_jitted": unjit_s / step_s if step_s and unjit_s else None}
    findings = _findings(target, table, h2d, scan, jitted)
    failed = [f for f in findings if f["severity"] == FAIL]
    if failed:
        summary = "\n".join(f["message"] if f["severity"] == FAIL else f"note: {f['message']}" for f in findings)
    else:
        clean = (f"clean: {sum(r['compiles'] for r in table if r['name'] != OTHER_ROW)} compiles, 0 after warm-up, "
                 f"jitted step, no host sync or transfer in the {target.loop} loop")
        summary = "\n".join([clean, *(f"note: {f['message']}" for f in findings)])
    metrics = {
        "target": target.name, "loop": target.loop, "warmup": warmup, "steps": steps,
        "epochs": epochs if target.epoch is not None else 0, "updates_per_epoch": target.updates_per_epoch,
        "functions": table, "host_to_device_transfers": {k: v.as_dict() for k, v in h2d.items()},
        "static_syncs": scan.syncs, "scanned_files": scan.files, "scan_unavailable": scan.unavailable,
        "jitted": jitted[0], "jitted_evidence": jitted[1], "ratios": ratios, "seconds_per_update": seconds,
        "timing_note": timing_note,
        "backend": jax.default_backend(),
    }
    return CheckResult(check=CHECK, subject=target.name, verdict=FAIL if failed else PASS,
                       steps_compared=steps, summary=summary, metrics=metrics, details=findings,
                       seconds=time.perf_counter() - t0)


def profile_algo(algo: str = "rebrac", steps: int = 20, epochs: int = 2, warmup: int = 1,
                 updates_per_epoch: int = 50, batch_size: int = 256, dataset: str | None = None,
                 actors: Sequence[int] = (3,), seed: int = 0, unjitted_steps: int = 3, repeats: int = 3,
                 config_overrides: Mapping[str, Any] | None = None) -> tuple[list[CheckResult], list[str]]:
    """Profile the reference ReBRAC and, when present, ``multi_actor.jax_trainer``; returns (results, skip notes)."""
    if algo != "rebrac":
        raise UsageError(f"--algo: only rebrac has a JAX implementation, got {algo!r}")
    options = dict(steps=steps, epochs=epochs, warmup=warmup, unjitted_steps=unjitted_steps, repeats=repeats)
    reference = rebrac_target(updates_per_epoch, batch_size, dataset, seed, config_overrides)
    results = [profile_target(reference, **options)]
    targets, skipped = multi_actor_targets(actors, updates_per_epoch, batch_size, dataset, seed)
    results += [profile_target(t, **options) for t in targets]
    return results, skipped


# ----------------------------------------------------------------------------------------------------- render


def _fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}x"


def _fmt_seconds(x: float | None) -> str:
    return "—" if x is None else f"{x * 1e3:.3g} ms"


def _per_call(count: Mapping[str, Any]) -> str:
    if count["transfers"] is None:
        return "≥1"
    return "—" if count["per_call"] is None else f"{count['per_call']:.3g}"


def _caption(m: Mapping[str, Any]) -> str:
    h2d = ", ".join(f"{k} {_per_call(v)}/call" for k, v in m["host_to_device_transfers"].items()) or "—"
    r, s = m["ratios"], m["seconds_per_update"]
    timing = m.get("timing_note") or (
        f"per update: step loop {_fmt_seconds(s['step_loop'])}, epoch {_fmt_seconds(s['epoch'])}, un-jitted "
        f"{_fmt_seconds(s['unjitted_step'])} · python loop / scan {_fmt_ratio(r['python_loop_over_scan'])}, "
        f"un-jitted / jitted {_fmt_ratio(r['unjitted_over_jitted'])}")
    return f"host→device transfers: {h2d} · {timing}"


def render_jax_profile(result: CheckResult) -> list[Any]:
    """rich renderables for one profile: function table, findings, transfers and timing ratios."""
    from rich.markup import escape
    from rich.table import Table

    from pogo_audit.render import verdict_text

    m = result.metrics
    out: list[Any] = []
    if result.verdict == ERROR or not m:
        out.append(f"jax-profile {escape(result.subject)}: {verdict_text(result.verdict)} — {escape(result.summary)}")
        return out
    steady = f"{m['steps']} steps" + (f" / {m['epochs']} epochs of {m['updates_per_epoch']} updates"
                                      if m["epochs"] else "")
    title = (f"jax-profile {escape(result.subject)}: {verdict_text(result.verdict)} — "
             f"{'jitted' if m['jitted'] else '[bold red]not jitted[/]'} step, training loop: {m['loop']}, "
             f"warm-up {m['warmup']}, steady {steady}, backend {m.get('backend', '?')}")
    table = Table(title=title, title_justify="left")
    for col in ("jitted function", "compiles", "traces", "after warm-up", "cache-miss explanation (after warm-up)"):
        table.add_column(col, justify="right" if col in ("compiles", "traces", "after warm-up") else "left")
    for row in m["functions"]:
        gist = explanations_gist(row["cache_miss_explanations"])
        after = row["compiles_after_warmup"]
        table.add_row(escape(row["name"]), str(row["compiles"]), str(row["traces"]),
                      f"[bold red]{after}[/]" if after else "0", escape(gist) or "—")
    table.caption = escape(_caption(m))
    table.caption_justify = "left"
    out.append(table)
    if result.details:
        findings = Table(title=f"findings ({sum(f['severity'] == FAIL for f in result.details)} failing)",
                         title_justify="left")
        for col in ("severity", "finding", "where", "inside"):
            findings.add_column(col)
        for f in result.details:
            sev = "[bold red]fail[/]" if f["severity"] == FAIL else "[yellow]note[/]"
            where = f"{f['path']}:{f['line']}" if f.get("path") else "—"
            findings.add_row(sev, escape(f["message"]), escape(where), f.get("inside", "—"))
        out.append(findings)
    return out
