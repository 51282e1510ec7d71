"""The reference and its self-check twin in worker processes, in lock-step with the candidate in the caller's.

The equivalence check runs the reference twice (the twin shows whether the reference itself is reproducible) and
the candidate once. In one process that is three trainers in a row; here the reference and the twin each run in a
worker forked from the audit's fork server (:mod:`checks.workers`) while the calling process runs the candidate and
compares, so on two cores a step costs about half of the three trainers' steps instead of all three.

Nothing of the comparison changes. The workers build the two reference trainers exactly as the harness would (same
factory, config, dataset spec, seed; the caller's global RNG state, torch thread count and default dtype at the start
of the run), steps them on the same batches (sent by the caller, which samples them) and computes their observables
with the same code (:meth:`checks.equivalence.Side.observe`: losses, parameter sums, L2 norms and hashes
every step, full tensors on the same schedule, RNG digests, gradients, optimizer probes). The caller compares them:
bitwise verdicts, first divergences and the early stop on a nondeterministic reference are those of the serial run.

Crashes keep the serial order. Within one step the serial harness calls reference, candidate, twin; the worker's
replies say which trainer raised, and the caller raises the earliest of the three (at start-up: reference
factory, twin factory, candidate factory, reference ``parameters``, candidate ``parameters``).

One thing differs, on purpose: the self-check now compares two trainers built in two fresh processes. A reference
whose behaviour depends on what was built before it in the same process (a class-level instance counter) shows
that only in the in-process self-check (``EquivalenceOptions(concurrent=False)``), which is also what short runs,
``isolate``, localisation and the evaluation audit use.

Messages are pickled with the standard pickler (by value, never through shared memory); a batch's plain tensors
travel as numpy arrays (:class:`WireArray`), and the reference's parameters stay in its worker until a divergence
bundle asks for them (:class:`RemoteParams`): per step only the observables cross the pipe.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks.equivalence.observables import map_batch, own_copy
from checks.equivalence.options import twin_steps
from checks.equivalence.side import Side
from checks.workers import forkserver_context
from pogo_audit.model.findings import TrainerCrash
from pogo_audit.runtime.threads import share

#: serial order of the start-up calls (a crash of a lower rank is the one the serial harness would report)
REF_FACTORY, TWIN_FACTORY, CAND_FACTORY, REF_PARAMETERS, CAND_PARAMETERS = range(5)
#: serial order of the calls of one step
REF_STEP, CAND_STEP, TWIN_STEP = range(3)


class WireArray:
    """A CPU tensor of a batch on its way to a worker, as its numpy array: pickling a tensor costs ~0.15 ms each way
    (about 1.8 ms a batch here, on the audit's critical path), an array a few µs. Only a plain, contiguous, strided
    tensor with a numpy dtype travels so; the worker rebuilds the same dtype, shape and strides
    (:func:`from_wire`), and every other value travels as it is."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array


def _wire(x: Any) -> Any:
    import torch

    if type(x) is not torch.Tensor or x.device.type != "cpu" or x.layout != torch.strided or x.requires_grad:
        return x
    expected, size = [], 1
    for n in reversed(x.shape):
        expected.append(size)
        size *= n
    if x.stride() != tuple(reversed(expected)):  # as torch.from_numpy rebuilds them, size-1 dimensions included
        return x
    try:
        return WireArray(x.numpy())
    except (TypeError, RuntimeError):  # bfloat16, conjugate or negative bit: numpy cannot hold it as it is
        return x


def to_wire(batch: Any) -> Any:
    """``batch`` with its plain CPU tensors as :class:`WireArray` (see there)."""
    return None if batch is None else map_batch(batch, _wire)


def from_wire(batch: Any) -> Any:
    """The batch :func:`to_wire` sent, its tensors rebuilt."""
    import torch

    if batch is None:
        return None
    return map_batch(batch, lambda x: torch.from_numpy(x.array) if isinstance(x, WireArray) else x)


def send(conn: Any, message: Any) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Any) -> Any:
    """The next message of a pipe between this process and its own forked worker (what ``multiprocessing`` does
    internally); no user file is ever read here — checkpoints and traces keep their non-pickle loaders."""
    return pickle.loads(conn.recv_bytes())


def picklable(*objects: Any) -> bool:
    """Whether ``objects`` (factory, config, dataset spec) can be sent to a worker process."""
    try:
        pickle.dumps(objects)
    except Exception:  # noqa: BLE001 - a closure, a lambda, an open resource: the run stays in one process
        return False
    return True


def _raisable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles (pogo-audit's own errors do), else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def serve(conn: Any, factory: Any, config: Any, dataset_spec: Any, seed: int, roles: tuple[str, ...], rng: Any,
          threads: int, dtype: Any) -> None:
    """The worker: build its trainers (``roles``: "reference", "twin", or both — the twin then steps after the
    reference in this process), then answer the caller's requests until ``stop``."""
    import torch

    from pogo_audit.runtime.threads import report, set_torch_threads

    set_torch_threads(threads)
    torch.set_default_dtype(dtype)
    rng.restore()
    sides: dict[str, Any] = {}
    try:
        try:
            for role in roles:
                rank = REF_FACTORY if role == "reference" else TWIN_FACTORY
                sides[role] = Side.build("reference", factory, config, dataset_spec, seed)
            rank = REF_PARAMETERS
            # the serial harness asks the reference only
            params = sides["reference"].call("parameters") if "reference" in sides else {}
        except TrainerCrash as exc:
            send(conn, ("crash", rank, exc.crash))
            return
        first = next(iter(sides.values()))
        send(conn, ("built", params, first.iso.rng, first.probe_kind(), hasattr(first.iso.trainer, "gradients"),
                     report()))
        kept = {0: params}  # the reference's parameters after its last two steps, sent only when asked
        while True:
            request = receive(conn)
            if request[0] == "stop":
                return
            if request[0] == "params":
                send(conn, ("params", kept.get(request[1])))
                continue
            if request[0] == "probes":
                for side in sides.values():
                    side.attach_probe()
            elif request[0] == "gradients":
                try:
                    send(conn, ("gradients", sides["reference"].gradients()))
                except TrainerCrash as exc:
                    send(conn, ("crash", REF_STEP, exc.crash))
            elif request[0] == "step":
                _, step, batch, full, twin = request
                if not twin:
                    sides.pop("twin", None)  # its steps are over
                batch = from_wire(batch)
                replies = {role: _step(side, step, batch, full) for role, side in sides.items()}
                if "reference" in sides:
                    kept = {s: p for s, p in kept.items() if s == step - 1}
                    kept[step] = sides["reference"].params
                send(conn, ("step", replies))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return
    except BaseException as exc:  # noqa: BLE001 - the harness's own failure (or a usage error) reaches the caller
        try:
            send(conn, ("raise", _raisable(exc)))
        except (BrokenPipeError, OSError):
            pass


def _step(side: Any, step: int, batch: Any, full: bool) -> tuple[Any, Any, Any]:
    """One side's (observables, ``.grad`` digests, crash) of ``step`` (``batch`` None: only observe, step 0)."""
    side.step = step
    try:
        obs = side.observe({}, full) if batch is None else \
            side.step_and_observe(own_copy(batch), full, compared_only=True)[1]
    except TrainerCrash as exc:
        return None, None, exc.crash
    return obs, side.leak, None


class RemoteParams(Mapping[str, np.ndarray]):
    """The reference's parameters after ``step``, fetched from its worker on first use. The worker keeps those of its
    last two steps, so the lock-step loop resolves them (for a bundle: the step before a divergence and the step
    itself) before it submits the next step; every other step they never cross the pipe (about 2 MB a step for IQL,
    which the worker could not write before the caller read it: the transfer sat on the audit's critical path)."""

    def __init__(self, worker: ReferenceWorker, step: int):
        self.worker, self.step = worker, step
        self._params: dict[str, np.ndarray] | None = None

    def _fetched(self) -> dict[str, np.ndarray]:
        if self._params is None:
            params = self.worker.ask(("params", self.step))[1]
            if params is None:
                raise RuntimeError(f"the reference worker no longer keeps its parameters of step {self.step}")
            self._params = params
        return self._params

    def __getitem__(self, name: str) -> np.ndarray:
        return self._fetched()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fetched())

    def __len__(self) -> int:
        return len(self._fetched())


@dataclass
class RemoteSide:
    """What the lock-step loop reads of the reference when it runs in a worker: the parameters (fetched when read,
    :class:`RemoteParams`) and ``.grad`` digests of its last observation, and the calls it may make on it (gradients
    for a bundle, optimizer probes)."""

    pair: ReferenceWorkers
    side: str = "reference"
    params: Mapping[str, np.ndarray] = field(default_factory=dict)
    leak: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    probe: Any = None

    def probe_kind(self) -> str | None:
        return self.pair.reference.probe_kind

    def attach_probe(self) -> None:
        """Probes on the reference and the twin (the twin mirrors every call the reference gets)."""
        if self.probe is None:
            self.probe = "in worker"
            for worker in self.pair.workers:
                worker.request(("probes",))

    def gradients(self) -> dict[str, Any]:
        if not self.pair.reference.has_gradients:
            return {}
        return self.pair.reference.ask(("gradients",))[1]


class ReferenceWorker:
    """One worker process (the reference, the twin, or both), from the caller's end. It is started in a thread, so
    the caller builds its candidate meanwhile."""

    def __init__(self, factory: Any, config: Any, dataset_spec: Any, seed: int, roles: tuple[str, ...],
                 threads: int):
        import torch

        from pogo_audit.runtime.seeding import GlobalRNGState

        context = forkserver_context()
        self.roles = roles
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, daemon=True, name=f"pogo-audit {'+'.join(roles)}",
                                       args=(child, factory, config, dataset_spec, seed, roles,
                                             GlobalRNGState.capture(), threads, torch.get_default_dtype()))

        self._start_error: BaseException | None = None

        def start() -> None:
            try:
                self.process.start()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by request()
                self._start_error = exc
            finally:
                child.close()  # the worker's end: with it closed here, a worker that dies is an EOF, not a hang

        self._starting = threading.Thread(target=start, daemon=True)
        self._starting.start()
        self.built: tuple[Any, ...] | None = None
        self.probe_kind: str | None = None
        self.has_gradients = False
        #: the worker's thread counts as it reported them (:func:`pogo_audit.runtime.threads.report`)
        self.threads: dict[str, Any] = {}

    def request(self, message: Any) -> None:
        self._starting.join()
        if self._start_error is not None:
            raise self._start_error
        send(self.conn, message)

    def ask(self, message: Any) -> Any:
        self.request(message)
        return self.reply()

    def reply(self) -> Any:
        """The next message; a harness failure in the worker is raised here, a crash reply too."""
        self._starting.join()
        try:
            message = receive(self.conn)
        except EOFError:
            raise RuntimeError(f"the reference worker exited (code {self.process.exitcode}) without replying") \
                from None
        if message[0] == "raise":
            raise message[1]
        if message[0] == "crash" and self.built is not None:
            raise TrainerCrash(message[2])
        return message

    def start_up(self) -> tuple[Any, ...]:
        """The worker's start-up message (read once): ("built", ...) or ("crash", rank, crash)."""
        if self.built is None:
            self.built = self.reply()
            if self.built[0] == "built":
                _, _, _, self.probe_kind, self.has_gradients, self.threads = self.built
        return self.built

    def close(self) -> None:
        """Stop the worker (it exits on ``stop`` or when the pipe closes; killed if it does not within 10 s)."""
        self._starting.join()
        try:
            send(self.conn, ("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.conn.close()
        if self.process.pid is not None:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()


@dataclass(frozen=True)
class ProcessPlan:
    """How one audit spends its thread budget: ``workers`` reference worker processes beside the caller's (0: all
    trainers in the caller's process), whether the twin shares the reference's worker, and the threads of every
    process (the same for all: the count is part of the bitwise protocol)."""

    budget: int
    workers: int
    twin_in_reference_worker: bool
    threads: int

    @property
    def processes(self) -> int:
        return 1 + self.workers


def plan_processes(budget: int, worker: bool, twin: bool, forced: bool = False) -> ProcessPlan:
    """The plan of an audit within ``budget`` threads: with ``worker`` allowed and at least two threads (or
    ``forced``), the reference in a worker, the twin in a worker of its own when a third thread is there for it,
    else in the reference's; every process gets ``budget // processes`` threads (at least one)."""
    if not worker or (budget < 2 and not forced):
        return ProcessPlan(budget, 0, False, budget)
    own_twin = twin and budget >= 3
    workers = 1 + int(own_twin)
    return ProcessPlan(budget, workers, twin and not own_twin, share(budget, 1 + workers))


class ReferenceWorkers:
    """The reference (and the twin) in worker processes, in lock-step with the candidate in the caller's. With a
    thread for each, the twin runs in its own worker: three trainers on three cores take about one step time;
    on a 2-core budget it steps after the reference in the reference's worker (:class:`ProcessPlan`). The twin runs
    the first ``twin_steps`` steps (0: all), then stops."""

    def __init__(self, factory: Any, config: Any, dataset_spec: Any, seed: int, twin: bool, twin_steps: int,
                 plan: ProcessPlan):
        roles = ("reference", "twin") if twin and plan.twin_in_reference_worker else ("reference",)
        self.reference = ReferenceWorker(factory, config, dataset_spec, seed, roles, plan.threads)
        self.twin_worker = ReferenceWorker(factory, config, dataset_spec, seed, ("twin",), plan.threads) \
            if twin and not plan.twin_in_reference_worker else None
        self.workers = [w for w in (self.reference, self.twin_worker) if w is not None]
        self.ref = RemoteSide(self)
        self.twin_steps = twin_steps
        self.twin_running = twin

    def built(self, below: int = CAND_PARAMETERS + 1) -> tuple[dict[str, np.ndarray], Any]:
        """The reference's initial parameters and global RNG state; raises a worker's start-up crash when it comes
        before ``below`` in the serial order (else the caller's own crash, being raised, stands)."""
        crashes = [m for m in (w.start_up() for w in self.workers) if m[0] == "crash"]
        if crashes:
            first = min(crashes, key=lambda m: m[1])
            if first[1] < below:
                raise TrainerCrash(first[2])
            return {}, None
        _, params, rng, _, _, _ = self.reference.start_up()
        self.ref.params = params
        return params, rng

    def threads(self) -> dict[str, Any]:
        """role -> the thread counts its worker reported."""
        return {"+".join(w.roles): w.threads for w in self.workers}

    def submit(self, step: int, batch: Any, full: bool) -> None:
        """Step (``batch`` None: only observe, step 0) the reference and the twin."""
        self.ref.step = step
        self.twin_running = self.twin_running and twin_due(step, self.twin_steps)
        if self.twin_worker is not None and not self.twin_running:
            self.twin_worker.close()  # its steps are over: its core goes to the candidate
            self.twin_worker = None
            self.workers = [self.reference]
        wire = to_wire(batch)
        for worker in self.workers:
            worker.request(("step", step, wire, full, self.twin_running))

    def collect(self, candidate_crash: TrainerCrash | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The reference's and the twin's observables of the submitted step; raises the first crash of the step in
        the serial order (reference, candidate, twin)."""
        replies = self.reference.reply()[1]
        obs_ref, leak, crash = replies["reference"]
        if crash is not None:
            raise TrainerCrash(crash)
        if candidate_crash is not None:
            raise candidate_crash
        if self.twin_worker is not None:  # still there: it got this step (it ends only in submit)
            replies = self.twin_worker.reply()[1]
        obs_twin, _, crash = replies.get("twin", (None, None, None))
        if crash is not None:
            raise TrainerCrash(crash)
        self.ref.params, self.ref.leak = RemoteParams(self.reference, self.ref.step), leak
        return obs_ref, obs_twin

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


class LocalReference:
    """The reference and the twin in the calling process (the serial harness), behind the same calls as
    :class:`ReferenceWorker`: the reference steps when its step is submitted, the twin when it is collected, so the
    calls keep the serial order reference, candidate, twin."""

    def __init__(self, factory: Any, config: Any, dataset_spec: Any, seed: int, twin: bool, twin_steps: int = 0):
    
        self.ref = Side.build("reference", factory, config, dataset_spec, seed)
        self.twin = Side.build("reference", factory, config, dataset_spec, seed) if twin else None
        self.twin_steps = twin_steps
        self._pending: tuple[Any, Any] | None = None

    def built(self, below: int = CAND_PARAMETERS + 1) -> tuple[dict[str, np.ndarray], Any]:
        if below <= REF_PARAMETERS:
            return {}, None
        return self.ref.call("parameters"), self.ref.iso.rng

    def _observe(self, side: Any, batch: Any, full: bool) -> dict[str, Any]:
        """The observables of a step (magnitudes deferred: the lock-step loop settles them with the candidate's)."""
        if batch is None:
            return side.observe({}, full)
        return side.step_and_observe(own_copy(batch), full, lazy=True, compared_only=True)[1]

    def submit(self, step: int, batch: Any, full: bool) -> None:
        if self.twin is not None and not twin_due(step, self.twin_steps):
            self.twin = None
        for side in (self.ref, self.twin):
            if side is not None:
                side.step = step
        self._pending = (self._observe(self.ref, batch, full), (batch, full))

    def collect(self, candidate_crash: TrainerCrash | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        assert self._pending is not None
        obs_ref, (batch, full) = self._pending
        self._pending = None
        if candidate_crash is not None:
            raise candidate_crash
        return obs_ref, None if self.twin is None else self._observe(self.twin, batch, full)

    def threads(self) -> dict[str, Any]:
        """Nothing runs elsewhere: the caller's own counts stand for the reference's."""
        return {}

    def close(self) -> None:
        """Nothing to stop (the worker's counterpart ends its process)."""


def twin_due(step: int, twin_steps: int) -> bool:
    """Whether the self-check twin runs ``step`` (``twin_steps`` 0: every step; step 0 is construction)."""
    return twin_steps == 0 or step <= twin_steps


#: runs shorter than this keep the reference in the calling process: starting the worker (a fork, building the
#: reference twice) costs about as much as a few steps
MIN_CONCURRENT_STEPS = 20


def wants_worker(options: Any, device: str) -> bool:
    """Whether the run's options allow the worker: ``concurrent`` (None: at least :data:`MIN_CONCURRENT_STEPS`
    steps) on the CPU, and no feature that reaches into the reference's live state every step: ``isolate`` (sets the
    candidate to the reference's state), localisation (deep-copies both trainers), the evaluation audit (drives
    the reference's RNG and ``evaluate`` between steps)."""
    localise = options.isolate if options.localise is None else options.localise
    wanted = options.concurrent if options.concurrent is not None else options.steps >= MIN_CONCURRENT_STEPS
    return bool(wanted) and device == "cpu" and not options.isolate and not localise and not options.eval_every


def _torch(algo: str) -> bool:
    """A PyTorch algorithm of the registry (a JAX run sets process-wide JAX options a worker would not have)."""
    from multi_actor import registry

    return algo in registry.names("torch")


def process_plan(options: Any, factory: Any, config: Any, dataset_spec: Any, device: str, algo: str,
                 budget: int) -> ProcessPlan:
    """The run's processes within the thread ``budget``: a worker where the run allows one (:func:`wants_worker`,
    a PyTorch algorithm, a reference factory, config and dataset spec that pickle) and the budget has a thread for
    each process (or ``concurrent`` forces it), see :func:`plan_processes`."""
    worker = wants_worker(options, device) and _torch(algo) and picklable(factory, config, dataset_spec)
    return plan_processes(budget, worker, options.self_check, forced=options.concurrent is True)


def reference_pair(options: Any, factory: Any, config: Any, dataset_spec: Any, device: str, plan: ProcessPlan
                   ) -> ReferenceWorkers | LocalReference:
    """The reference and its twin as ``plan`` places them: in worker processes, or in the calling process."""
    steps = twin_steps(options, device)
    if plan.workers:
        return ReferenceWorkers(factory, config, dataset_spec, options.seed, options.self_check, steps, plan)
    return LocalReference(factory, config, dataset_spec, options.seed, options.self_check, steps)
