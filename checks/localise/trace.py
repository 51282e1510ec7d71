"""Record one training step of a trainer: every tensor operation, random draw, module call and optimizer step, each
with the user-code stack that made it.

* tensor operations: a ``TorchDispatchMode`` sees every aten op, forward and backward, with its arguments (shape,
  dtype, ``requires_grad``, scalar values, explicit generator or the global stream), the autograd mode, and a digest
  (sha256 of the bytes, shape and dtype) of every input and output tensor; random aten ops are flagged;
* ``numpy.random`` module-level functions and Python ``random`` functions (the global streams) are wrapped for the
  duration of the step and recorded as random operations of their own;
* module calls: global forward pre-/post-hooks give every ``nn.Module`` call its canonical name (see
  :func:`canonical_names`), call index, caller stack, input and output digests and the span of operations it contains;
* optimizer steps: global step pre-/post-hooks give the canonical parameters stepped, a digest of the gradients
  consumed and of the param groups' hyperparameters (the learning rate); in-place writes to ``target/*`` parameters
  outside an optimizer step are target updates;
* learning-rate schedules: every ``torch.optim.lr_scheduler`` ``step()`` is an operation of its own (a skipped or
  extra schedule step changes no tensor in the step where it happens, only the next step's learning rate).

A replay can also *repair* (:class:`Repair`): an operation aligned with one of the reference's returns the reference's
result when it computes another one, so what follows it is compared on equal inputs again and a second defect later
in the same step shows as a difference of its own instead of hiding in the first one's wake.
"""

from __future__ import annotations

import contextlib
import hashlib
import random as _random
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from checks.localise.frames import Assign, Frame, Jump, LineTracer
from pogo_audit.runtime.digest import array_digest

#: aten operations that draw from a generator (overload packet names)
RANDOM_ATEN = frozenset({
    "normal", "normal_", "uniform_", "bernoulli", "bernoulli_", "exponential_", "random_", "randn", "rand", "randint",
    "randperm", "multinomial", "randn_like", "rand_like", "randint_like", "poisson", "geometric_", "cauchy_",
    "log_normal_", "_standard_gamma", "_sample_dirichlet", "native_dropout", "_fused_dropout", "rrelu_with_noise",
    "binomial"})
#: aten operations whose result is uninitialised memory
EMPTY_ATEN = frozenset({"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "empty_permuted"})
UNINITIALISED = "uninitialised"
NUMPY_RANDOM = ("rand", "randn", "randint", "random", "random_sample", "ranf", "sample", "normal", "uniform", "choice",
                "permutation", "shuffle", "standard_normal", "beta", "binomial", "exponential", "gamma", "poisson",
                "multivariate_normal", "laplace", "lognormal", "integers", "bytes", "dirichlet", "geometric", "seed",
                "set_state")
PYTHON_RANDOM = ("random", "uniform", "randint", "randrange", "choice", "choices", "shuffle", "sample", "gauss",
                 "normalvariate", "lognormvariate", "expovariate", "betavariate", "gammavariate", "triangular",
                 "vonmisesvariate", "paretovariate", "weibullvariate", "getrandbits", "randbytes", "seed", "setstate")


def digest(x: Any) -> str:
    """The digest of a tensor's or array's bytes, shape and dtype (:func:`pogo_audit.runtime.digest.array_digest`)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        head = f"{tuple(t.shape)}|{t.dtype}|"
        try:
            arr = t.cpu().numpy() if t.dtype != torch.bfloat16 else t.cpu().view(torch.int16).numpy()
        except (RuntimeError, TypeError, NotImplementedError):  # sparse, meta, ... : shape and dtype only
            return array_digest(np.zeros(0, np.uint8), meta=head)
        return array_digest(arr, meta=head)
    return array_digest(x, with_meta=True)


class DigestCache:
    """Digests of tensors seen before, valid while the same tensor object is alive and its version counter (bumped
    by every in-place write, through any view) is unchanged: an operation's output digested once is not hashed
    again each time an operation reads it."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Any, int, str]] = {}

    def forget(self, tensors: list[torch.Tensor]) -> None:
        """Drop what is known of ``tensors``: an in-place operation is about to write them, and their version counter
        is bumped only after the operation returns (above the dispatch level the recorder runs at)."""
        for t in tensors:
            self._known.pop(id(t), None)

    def __call__(self, t: torch.Tensor) -> str:
        try:
            version = t._version
        except (RuntimeError, AttributeError):  # inference tensors and the like keep no counter
            return digest(t)
        known = self._known.get(id(t))
        if known is not None and known[0]() is t and known[1] == version:
            return known[2]
        value = digest(t)
        try:
            self._known[id(t)] = (weakref.ref(t), version, value)
        except TypeError:
            pass
        return value


@dataclass
class Op:
    """One recorded operation. ``key`` is what alignment compares (name, argument signature, grad mode, stream);
    digests are compared once two operations are aligned."""

    index: int
    name: str
    key: tuple[Any, ...]
    random: bool
    stream: str | None
    shapes: list[list[int]]
    dtype: str | None
    inputs: list[str]
    outputs: list[str]
    grad_enabled: bool
    stack: tuple[Frame, ...]
    line_index: int
    module_call: int | None = None
    optimizer_step: int | None = None
    #: canonical parameters among the inputs, with their ``requires_grad``; the parameter written in place, if any
    params: list[tuple[str, bool]] = field(default_factory=list)
    writes: str | None = None
    #: storages read, and produced or written (data pointers): which later operations consume this one's results
    reads: frozenset[int] = frozenset()
    made: frozenset[int] = frozenset()
    #: in a repaired replay, the digests the operation computed itself when its result was replaced by the
    #: reference's (``outputs`` then holds the reference's); None when it was not repaired
    own: list[str] | None = None

    @property
    def computed(self) -> list[str]:
        """The digests of what the operation itself computed (before any repair)."""
        return self.own if self.own is not None else self.outputs

    def frame(self) -> Frame | None:
        return self.stack[-1] if self.stack else None


@dataclass
class ModuleCall:
    """One ``nn.Module`` forward: canonical ``name``, ``count`` (0-based call index of that name in the step)."""

    name: str
    count: int
    stack: tuple[Frame, ...]
    first_op: int
    last_op: int = -1
    inputs: list[tuple[str, list[int]]] = field(default_factory=list)
    outputs: list[tuple[str, list[int]]] = field(default_factory=list)
    parent: int | None = None


@dataclass
class OptimizerStep:
    """One optimizer ``step()``: the canonical modules of its parameters and a digest per consumed gradient."""

    label: str
    stack: tuple[Frame, ...]
    first_op: int
    grads: dict[str, str]
    last_op: int = -1
    #: digest of the param groups' hyperparameters (learning rate, betas, ...)
    hyper: str = ""


@dataclass
class TargetUpdate:
    """In-place writes to one target module's parameters outside an optimizer step (consecutive writes merged)."""

    label: str
    stack: tuple[Frame, ...]
    first_op: int


@dataclass
class GradFlip:
    """A ``requires_grad_(value)`` call on a canonical parameter: before operation ``op``, at line-log index
    ``line_index``, from ``stack``."""

    name: str
    value: bool
    stack: tuple[Frame, ...]
    op: int
    line_index: int


@dataclass
class Trace:
    """Everything recorded during one step of one trainer."""

    ops: list[Op] = field(default_factory=list)
    modules: list[ModuleCall] = field(default_factory=list)
    optimizer_steps: list[OptimizerStep] = field(default_factory=list)
    target_updates: list[TargetUpdate] = field(default_factory=list)
    lines: list[tuple[Frame, bool]] = field(default_factory=list)
    conditions: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: operation index -> copies of its output tensors (kept when recording with ``keep=True``: a repair's source)
    values: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    #: ``requires_grad_`` calls on named parameters, in order
    flips: list[GradFlip] = field(default_factory=list)
    #: whether the recording's intervention (:class:`checks.localise.frames.Jump` / ``Assign``) was made
    edited: bool = False
    #: how many operations a repaired recording gave the reference's result (:class:`Repair`; the trace carries it
    #: back from a replay in another process)
    repaired: int = 0

    def schedule(self) -> list[tuple[str, int]]:
        """Optimizer steps and target updates in execution order: ``(label, first op index)``."""
        events = [(f"optimizer step of {s.label}", s.first_op) for s in self.optimizer_steps]
        events += [(f"target update of {u.label}", u.first_op) for u in self.target_updates]
        return sorted(events, key=lambda e: e[1])


# ---------------------------------------------------------------------------------------------- canonical names


def _reachable_modules(root: Any, depth: int = 4) -> list[tuple[str, torch.nn.Module]]:
    """``(attribute path, module)`` for every module reachable from ``root`` through attributes, lists and dicts."""
    found: dict[int, tuple[str, torch.nn.Module]] = {}
    seen: set[int] = set()

    def walk(obj: Any, path: str, left: int) -> None:
        if id(obj) in seen or left < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            for name, sub in obj.named_modules():
                found.setdefault(id(sub), (f"{path}.{name}" if name else path, sub))
            return
        if isinstance(obj, Mapping):
            items = obj.items()
        elif isinstance(obj, (list, tuple)):
            items = enumerate(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.Tensor, torch.optim.Optimizer)) \
                and not callable(obj):
            items = vars(obj).items()
        else:
            return
        for key, value in items:
            walk(value, f"{path}.{key}" if path else str(key), left - 1)

    walk(root, "", depth)
    return list(found.values())


def _live_named_tensors(trainer: Any) -> dict[str, torch.Tensor]:
    """Canonical name -> live tensor: the protocol's ``named_tensors()``, or for our own trainers (which expose the
    base algorithm as ``base``) the base's tensors under their canonical role; empty when neither exists."""
    if callable(getattr(trainer, "named_tensors", None)):
        return dict(trainer.named_tensors())
    base = getattr(trainer, "base", None)
    if base is not None and callable(getattr(base, "named_tensors", None)) and hasattr(base, "actor_name"):
        from multi_actor.trainer import module_role

        return {f"{module_role(base, k.split('/', 1)[0])}/{k}": t for k, t in base.named_tensors().items()}
    return {}


def canonical_names(trainer: Any) -> tuple[dict[int, str], dict[int, str]]:
    """``(module id -> canonical module name, storage pointer -> canonical parameter name)`` for a trainer.

    Parameters are named by identity when the trainer gives live tensors, else by value: the trainer's
    ``parameters()`` (canonical name -> array) matched to live parameters by digest — both sides start the step with
    equal parameters, so equal values name the same thing; among equal candidates a name whose role matches the
    attribute path (``target`` or not) wins. A module's name is the longest common prefix of its parameters' module
    paths; a module without parameters keeps its attribute path.
    """
    modules = _reachable_modules(trainer)
    by_ptr: dict[int, str] = {}
    for name, t in _live_named_tensors(trainer).items():
        by_ptr[t.untyped_storage().data_ptr()] = name
    if not by_ptr and callable(getattr(trainer, "parameters", None)):
        by_value: dict[str, list[str]] = {}
        for name, arr in trainer.parameters().items():
            by_value.setdefault(digest(np.asarray(arr)), []).append(name)
        for path, module in modules:
            for pname, p in module.named_parameters(recurse=False):
                names = by_value.get(digest(p.detach().cpu().numpy()), [])
                if names:
                    targetish = "target" in f"{path}.{pname}"
                    best = [n for n in names if n.startswith("target/") == targetish] or names
                    by_ptr[p.untyped_storage().data_ptr()] = best[0]
    module_names: dict[int, str] = {}
    for path, module in modules:
        prefixes = [by_ptr[p.untyped_storage().data_ptr()].rsplit("/", 1)[0] for p in module.parameters()
                    if p.untyped_storage().data_ptr() in by_ptr]
        module_names[id(module)] = _common_prefix(prefixes) if prefixes else f"{type(module).__name__}@{path}"
    return module_names, by_ptr


def _common_prefix(names: list[str]) -> str:
    parts = [n.split("/") for n in names]
    out = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        out.append(level[0])
    return "/".join(out) or names[0]


def label_of(param_names: list[str]) -> str:
    """A readable label for a set of canonical parameters: their distinct ``role/module`` prefixes."""
    heads = sorted({"/".join(n.split("/")[:2]) for n in param_names})
    return ", ".join(heads) if heads else "unnamed parameters"


# ---------------------------------------------------------------------------------------------- the recorder


def _describe(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor):
        return ("T", tuple(leaf.shape), str(leaf.dtype), bool(leaf.requires_grad))
    if isinstance(leaf, torch.Generator):
        return ("G", "explicit")
    if isinstance(leaf, (int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format,
                         torch.layout)):
        return repr(leaf)
    return type(leaf).__name__


@dataclass
class Repair:
    """What a repaired replay substitutes. ``expected``: the operation keys of the previous replay of the same side
    (the repaired one must run the same operations; the first other one ends the repair: the replay took another
    path); ``plan``: operation index -> the reference's output digests and tensors for the operation aligned there."""

    expected: list[tuple[Any, ...]]
    plan: dict[int, tuple[list[str], list[torch.Tensor]]]
    broken: bool = False
    repaired: int = 0


class _Recorder(TorchDispatchMode):
    def __init__(self, trace: Trace, tracer: LineTracer, params: Mapping[int, str], keep: bool = False,
                 repair: Repair | None = None):
        super().__init__()
        self.trace, self.tracer, self.params = trace, tracer, params
        self.keep, self.repair = keep, repair
        self.module_stack: list[int] = []
        self.optimizer: int | None = None
        self.uninitialised: set[int] = set()
        self.paused = False
        self.digests = DigestCache()

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Operations run inside (the hooks' own digests) are not the trainer's and are not recorded."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def record(self, name: str, key: tuple[Any, ...], random: bool, stream: str | None, shapes: list[list[int]],
               dtype: str | None, inputs: list[str], outputs: list[str]) -> Op:
        op = Op(len(self.trace.ops), name, key, random, stream, shapes, dtype, inputs, outputs,
                torch.is_grad_enabled(), self.tracer.stack(), len(self.tracer.lines),
                self.module_stack[0] if self.module_stack else None, self.optimizer)
        self.trace.ops.append(op)
        return op

    def _digest(self, t: torch.Tensor) -> str:
        return UNINITIALISED if _storage(t) in self.uninitialised else self.digests(t)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.paused or func.namespace == "profiler":  # the hooks' own digests; profiler markers compute nothing
            return func(*args, **kwargs)
        leaves, _ = tree_flatten((args, kwargs))
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        inputs = [self._digest(t) for t in tensors]
        packet = func.overloadpacket.__name__
        random = packet in RANDOM_ATEN
        stream = None
        if random:
            stream = "explicit generator" if any(isinstance(x, torch.Generator) for x in leaves) else "global"
        mutable = func._schema.is_mutable
        if mutable:
            self.digests.forget(tensors)
        out = func(*args, **kwargs)
        out_tensors = [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
        shapes = [list(t.shape) for t in (out_tensors or tensors)]
        dtype = str(out_tensors[0].dtype) if out_tensors else None
        key = (str(func), tuple(_describe(x) for x in leaves), torch.is_grad_enabled(), stream)
        if packet in EMPTY_ATEN:  # uninitialised memory: its bytes mean nothing until something writes them
            self.uninitialised.update(_storage(t) for t in out_tensors)
        elif mutable and tensors:
            self.uninitialised.discard(_storage(tensors[0]))
        outputs = [self._digest(t) for t in out_tensors]
        if mutable:  # what it wrote gets a new version number only once it returns: not kept under the old one
            self.digests.forget(out_tensors)
        own = self._repaired(func, key, out_tensors, outputs) if self.repair is not None else None
        op = self.record(str(func), key, random, stream, shapes, dtype, inputs,
                         outputs if own is None else [self._digest(t) for t in out_tensors])
        op.own = own
        if self.keep:
            self.trace.values[op.index] = [t.detach().clone() for t in out_tensors]
        op.reads = frozenset(_storage(t) for t in tensors)
        # new storages (a view or a read shares its input's) and the destination of an in-place write
        op.made = frozenset(_storage(t) for t in out_tensors) - op.reads
        if func._schema.is_mutable and tensors:
            op.made |= {_storage(tensors[0])}
        for t in tensors:
            name = self.params.get(_storage(t))
            if name is not None:
                op.params.append((name, bool(t.requires_grad)))
        if func._schema.is_mutable and tensors:
            op.writes = self.params.get(tensors[0].untyped_storage().data_ptr())
            if self.optimizer is None:
                self._target_write(tensors[0], op)
        return out

    def _repaired(self, func: Any, key: tuple[Any, ...], out_tensors: list[torch.Tensor], computed: list[str]
                  ) -> list[str] | None:
        """Copy the reference's results into this operation's outputs where the plan says so and they differ
        (fresh and in-place outputs of the same shape and dtype; a view is repaired through what it views). Returns
        the digests the operation computed itself when something was replaced, else None."""
        repair = self.repair
        assert repair is not None
        index = len(self.trace.ops)
        if repair.broken or index >= len(repair.expected) or repair.expected[index] != key:
            repair.broken = True
            return None
        planned = repair.plan.get(index)
        returns = func._schema.returns
        if planned is None or len(planned[1]) != len(out_tensors) or len(returns) != len(out_tensors):
            return None
        replaced = False
        for t, ret, mine, theirs, value in zip(out_tensors, returns, computed, planned[0], planned[1]):
            alias = ret.alias_info
            if (alias is not None and not alias.is_write) or t.shape != value.shape or t.dtype != value.dtype \
                    or t.device != value.device or mine == theirs:
                continue
            with torch.no_grad():
                t.copy_(value)
            replaced = True
        if not replaced:
            return None
        repair.repaired += 1
        return list(computed)

    def _target_write(self, dest: torch.Tensor, op: Op) -> None:
        name = self.params.get(dest.untyped_storage().data_ptr())
        if name is None or not name.startswith("target/"):
            return
        label = "/".join(name.split("/")[:2])
        updates = self.trace.target_updates
        call = op.stack[-1].call if op.stack else 0
        # one update per target module and call of the updating function (a loop over its tensors is one update)
        if not updates or updates[-1].label != label or (updates[-1].stack[-1].call if updates[-1].stack else 0) \
                != call:
            updates.append(TargetUpdate(label, op.stack, op.index))


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # a tensor without storage (meta, sparse)
        return 0


def _wrap(module: Any, names: tuple[str, ...], recorder: _Recorder, stream: str) -> Iterator[tuple[str, Any]]:
    """Replace ``module.<name>`` by a recording wrapper; yields ``(name, original)`` for restoring."""
    for name in names:
        original = getattr(module, name, None)
        if original is None or not callable(original):
            continue

        def wrapper(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            result = _original(*args, **kwargs)
            shape = list(np.shape(result)) if result is not None else []
            described = tuple(_describe(a) if not isinstance(a, (list, np.ndarray)) else f"len{len(a)}"
                              for a in args) + tuple((k, _describe(v)) for k, v in sorted(kwargs.items()))
            value = digest(np.asarray(result)) if isinstance(result, (int, float, np.ndarray, np.generic)) else ""
            recorder.record(f"{module.__name__}.{_name}", (f"{module.__name__}.{_name}", described, stream),
                            True, stream, [shape], None, [], [value] if value else [])
            return result

        setattr(module, name, wrapper)
        yield name, original


#: the name of a learning-rate schedule step among the recorded operations
SCHEDULE_STEP = "lr_scheduler.step"


def _hyperparameters(optimizer: torch.optim.Optimizer) -> str:
    """Digest of every param group's scalar hyperparameters (learning rate, betas, weight decay, ...)."""
    groups = [sorted((k, repr(v)) for k, v in g.items() if k != "params" and isinstance(v, (int, float, bool, tuple,
                                                                                           str, type(None))))
              for g in optimizer.param_groups]
    return hashlib.blake2b(repr(groups).encode(), digest_size=8).hexdigest()


def _wrap_schedulers(recorder: _Recorder) -> Iterator[tuple[Any, str, Any]]:
    """Record every learning-rate schedule ``step()`` (the outermost one: a chained schedule's inner steps are part
    of it) as an operation whose output is a digest of the learning rates it set; yields what to restore."""
    from torch.optim import lr_scheduler

    depth = [0]
    for cls in vars(lr_scheduler).values():
        if not (isinstance(cls, type) and cls.__module__ == lr_scheduler.__name__ and "step" in vars(cls)):
            continue
        original = vars(cls)["step"]

        def step(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            depth[0] += 1
            try:
                result = _original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
                recorder.record(SCHEDULE_STEP, (SCHEDULE_STEP, type(self).__name__, len(lrs)), False, None,
                                [[len(lrs)]], None, [], [digest(np.asarray(lrs))])
            return result

        setattr(cls, "step", step)
        yield cls, "step", original


def _wrap_requires_grad(trace: Trace, tracer: LineTracer, params: Mapping[int, str]
                        ) -> Iterator[tuple[Any, str, Any]]:
    """Record ``Tensor.requires_grad_`` on canonical parameters (:class:`GradFlip`): which code freezes what (the
    dispatch mode sits below autograd and never sees it); yields what to restore (None: the inherited method, the
    attribute is deleted again)."""
    inherited = torch.Tensor.requires_grad_

    def requires_grad_(self: torch.Tensor, requires_grad: bool = True) -> torch.Tensor:
        name = params.get(_storage(self))
        if name is not None:
            trace.flips.append(GradFlip(name, bool(requires_grad), tracer.stack(), len(trace.ops), len(tracer.lines)))
        return inherited(self, requires_grad)

    own = vars(torch.Tensor).get("requires_grad_")
    torch.Tensor.requires_grad_ = requires_grad_  # type: ignore[method-assign]
    yield torch.Tensor, "requires_grad_", own


@contextlib.contextmanager
def recording(trainer: Any, keep: bool = False, repair: Repair | None = None, edit: Jump | Assign | None = None
              ) -> Iterator[Trace]:
    """Record everything ``trainer`` does inside the block (see the module docstring); hooks, wrappers and the line
    tracer are removed afterwards, also when the block raises. ``keep``: also keep copies of every operation's
    outputs (``Trace.values``); ``repair``: substitute the reference's results as planned (:class:`Repair`);
    ``edit``: one intervention at one line (:class:`checks.localise.frames.Jump`, ``Assign``; ``Trace.edited``
    says whether it was made)."""
    module_names, params = canonical_names(trainer)
    trace = Trace()
    tracer = LineTracer(torch.is_grad_enabled, edit)
    recorder = _Recorder(trace, tracer, params, keep, repair)
    counts: dict[str, int] = {}
    open_calls: list[int] = []

    def digests(tree: Any) -> list[tuple[str, list[int]]]:
        with recorder.pause():
            return [(recorder._digest(t), list(t.shape)) for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]

    def pre_forward(module: torch.nn.Module, args: Any) -> None:
        name = module_names.get(id(module), f"{type(module).__name__}@{id(module):x}")
        call = ModuleCall(name, counts.get(name, 0), tracer.stack(), len(trace.ops), inputs=digests(args),
                          parent=open_calls[-1] if open_calls else None)
        counts[name] = call.count + 1
        trace.modules.append(call)
        open_calls.append(len(trace.modules) - 1)
        recorder.module_stack.append(len(trace.modules) - 1)

    def post_forward(module: torch.nn.Module, args: Any, output: Any) -> None:
        if not open_calls:
            return
        call = trace.modules[open_calls.pop()]
        recorder.module_stack.pop()
        call.last_op = len(trace.ops) - 1
        call.outputs = digests(output)

    def pre_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads, names = {}, []
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = params.get(p.untyped_storage().data_ptr(), f"unnamed{list(p.shape)}")
                names.append(name)
                with recorder.pause():
                    grads[name] = "none" if p.grad is None else digest(p.grad)
        trace.optimizer_steps.append(OptimizerStep(label_of(names), tracer.stack(), len(trace.ops), grads,
                                                   hyper=_hyperparameters(optimizer)))
        recorder.optimizer = len(trace.optimizer_steps) - 1

    def post_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if recorder.optimizer is not None:
            trace.optimizer_steps[recorder.optimizer].last_op = len(trace.ops) - 1
        recorder.optimizer = None

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(pre_forward),
               torch.nn.modules.module.register_module_forward_hook(post_forward),
               register_optimizer_step_pre_hook(pre_step),
               register_optimizer_step_post_hook(post_step)]
    restore: list[tuple[Any, str, Any]] = []
    try:
        for mod, names, stream in ((np.random, NUMPY_RANDOM, "numpy global"),
                                   (_random, PYTHON_RANDOM, "python global")):
            restore += [(mod, n, o) for n, o in _wrap(mod, names, recorder, stream)]
        restore += list(_wrap_schedulers(recorder))
        restore += list(_wrap_requires_grad(trace, tracer, params))
        with tracer, recorder:
            yield trace
    finally:
        for mod, name, original in restore:
            if original is None:
                delattr(mod, name)
            else:
                setattr(mod, name, original)
        for h in handles:
            h.remove()
        trace.lines, trace.conditions, trace.edited = tracer.lines, tracer.conditions, tracer.edited
        trace.repaired = repair.repaired if repair is not None else 0


def record_step(iso: Any, batch: Any, keep: bool = False, repair: Repair | None = None,
                edit: Jump | Assign | None = None) -> tuple[Trace, Any, BaseException | None]:
    """Run ``iso.call("step", batch)`` (an :class:`pogo_audit.core.harness.IsolatedTrainer`) under :func:`recording`
    (``keep``, ``repair`` and ``edit`` as there); returns the trace, the step's output and the exception it raised,
    if any (the trace up to the raise is kept)."""
    with recording(iso.trainer, keep, repair, edit) as trace:
        try:
            out, error = iso.call("step", batch), None
        except Exception as exc:  # the audited step crashing mid-way is a finding, its trace so far is kept
            out, error = None, exc
    return trace, out, error

