"""The reference worker (:mod:`checks.equivalence.worker`): with the reference and its twin in a worker process, a run
gives the in-process run's result field for field (but the wall time) — verdicts, first divergences, crashes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from checks.equivalence import EquivalenceOptions, equivalence_for_algo
from checks.mutants import catalog
from checks.equivalence.worker import LocalReference, ReferenceWorkers, process_plan, reference_pair
from multi_actor.config import build_config
from multi_actor.trainer import multi_actor_factory, reference_factory


@pytest.fixture(autouse=True)
def one_thread_budget(monkeypatch):
    """Worker and in-process runs at the same threads per trainer (in one process an audit takes the whole budget;
    float results of some mutants depend on the count)."""
    from pogo_audit.runtime.threads import ENV_VAR

    monkeypatch.setenv(ENV_VAR, "1")


def _fields(result) -> str:
    """Every field of a result but its wall time, as JSON (NaN compares equal as text)."""
    d = dataclasses.asdict(result)
    d.pop("seconds")
    d["metrics"].pop("threads", None)  # the process layout is what differs, on purpose
    return json.dumps(d, sort_keys=True, default=str)


def _both(algo, cfg, options, **kwargs):
    worker = equivalence_for_algo(algo, cfg, dataclasses.replace(options, concurrent=True), **kwargs)
    local = equivalence_for_algo(algo, cfg, dataclasses.replace(options, concurrent=False), **kwargs)
    return worker, local


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["iql_rewards_not_squeezed", "iql_lr_schedule_not_stepped", "w2_std_term_dropped",
                                  "actor1_extra_global_draw", "extra_actor_grad_into_critic"])
def test_a_mutant_gets_the_same_result_with_the_reference_in_a_worker(embedded_dataset, name):
    mutant = next(m for m in catalog() if m.name == name)
    cfg = build_config(None, list(mutant.overrides), algo=mutant.algo, num_actors=3)
    options = EquivalenceOptions(steps=mutant.steps, self_check=True, full_every=2)
    worker, local = _both(mutant.algo, cfg, options, candidate=(f"mutant:{name}", mutant.factory))
    caught = worker.first_divergence is not None or worker.metrics["warnings"]  # a .grad leak is a warning
    assert caught, worker.summary
    assert _fields(worker) == _fields(local)


def test_the_divergence_bundle_is_the_same_with_the_reference_in_a_worker(embedded_dataset, tmp_path):
    """The worker keeps its parameters and sends those of the divergent step and the step before only when a bundle
    needs them: the bundle (parameters before and after, gradients, history) is the in-process run's, array for
    array."""
    from pogo_audit.core.bundle import read_bundle

    cfg = build_config(None, [], algo="iql", num_actors=3)
    runs = {}
    for concurrent in (True, False):
        options = EquivalenceOptions(steps=6, concurrent=concurrent, bundle_dir=str(tmp_path / str(concurrent)))
        runs[concurrent] = equivalence_for_algo("iql", cfg, options, candidate=("late defect", LateDefect))
    worker, local = (read_bundle(runs[c].metrics["bundle"]) for c in (True, False))
    assert worker.step == local.step == 3  # "before" is then a step the worker had run, not its construction
    assert any(k.startswith("before/reference/") for k in worker.arrays)
    assert sorted(worker.arrays) == sorted(local.arrays)
    for name, array in local.arrays.items():
        assert array.dtype == worker.arrays[name].dtype and array.tobytes() == worker.arrays[name].tobytes(), name
    assert worker.header == local.header


@pytest.mark.heavy
def test_our_trainer_passes_with_the_same_result_in_a_worker(embedded_dataset):
    cfg = build_config(None, [], algo="cql", num_actors=3)
    worker, local = _both("cql", cfg, EquivalenceOptions(steps=4, full_every=2))
    assert worker.verdict == "pass", worker.summary
    assert _fields(worker) == _fields(local)


class CrashingReference:
    """The reference, raising in its third step (module level, so the worker can import it)."""

    def __init__(self, config, dataset_spec, seed):
        self.inner = reference_factory(config, dataset_spec, seed)
        self.steps = 0

    def step(self, batch):
        self.steps += 1
        if self.steps == 3:
            raise ZeroDivisionError("reference step 3")
        return self.inner.step(batch)

    def parameters(self):
        return self.inner.parameters()

    def load_parameters(self, params):
        self.inner.load_parameters(params)


class LateDefect:
    """Our multi-actor trainer, but its critic drifts by 1e-3 in its third step."""

    def __init__(self, config, dataset_spec, seed):
        self.inner = multi_actor_factory(config, dataset_spec, seed)
        self.steps = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, batch):
        out = self.inner.step(batch)
        self.steps += 1
        if self.steps == 3:
            with torch.no_grad():
                next(t for k, t in self.inner.named_tensors().items() if "critic" in k).add_(1e-3)
        return out


def test_a_reference_crash_in_the_worker_is_the_crash_the_serial_run_reports(embedded_dataset):
    cfg = build_config(None, [], algo="iql", num_actors=3)
    worker, local = _both("iql", cfg, EquivalenceOptions(steps=5),
                          reference=("tests.test_reference_worker:CrashingReference", CrashingReference))
    assert worker.verdict == "fail" and worker.metrics["crash"]["side"] == "reference"
    assert worker.metrics["crash"]["step"] == 3 and worker.metrics["crash"]["type"] == "ZeroDivisionError"
    assert _fields(worker) == _fields(local)


def test_the_worker_is_used_only_where_the_run_allows_it(embedded_dataset):
    from multi_actor.loop import prepare_data

    cfg = build_config(None, [], algo="iql", num_actors=3)
    spec = prepare_data(cfg).spec
    cases = [(EquivalenceOptions(steps=50), reference_factory, ReferenceWorkers, 2),
             (EquivalenceOptions(steps=50), reference_factory, LocalReference, 1),  # one thread: one process
             (EquivalenceOptions(steps=50, concurrent=True), reference_factory, ReferenceWorkers, 1),  # forced
             (EquivalenceOptions(steps=5), reference_factory, LocalReference, 2),  # too short to pay for the worker
             (EquivalenceOptions(steps=50, isolate=True), reference_factory, LocalReference, 2),
             (EquivalenceOptions(steps=50, eval_every=10), reference_factory, LocalReference, 2),
             (EquivalenceOptions(steps=50), lambda *a: reference_factory(*a), LocalReference, 2),  # does not pickle
             (EquivalenceOptions(steps=50, concurrent=False), reference_factory, LocalReference, 2)]
    for options, factory, kind, budget in cases:
        plan = process_plan(options, factory, cfg, spec, "cpu", "iql", budget)
        pair = reference_pair(options, factory, cfg, spec, "cpu", plan)
        try:
            assert isinstance(pair, kind), options
        finally:
            pair.close()


@pytest.mark.parametrize("budget", [2, 3])
def test_the_twin_ends_after_its_steps(embedded_dataset, budget):
    """With a thread for it the twin has a worker of its own, whose process ends after its steps; on a 2-thread
    budget it steps in the reference's worker and stops there."""
    from multi_actor.loop import prepare_data
    from pogo_audit.runtime.data import ReplayBuffer

    cfg = build_config(None, [], algo="iql", num_actors=3)
    data = prepare_data(cfg)
    buffer = ReplayBuffer(data.processed, 1)
    options = EquivalenceOptions(steps=50, self_check_steps=1)
    plan = process_plan(options, reference_factory, cfg, data.spec, "cpu", "iql", budget)
    pair = reference_pair(options, reference_factory, cfg, data.spec, "cpu", plan)
    try:
        assert isinstance(pair, ReferenceWorkers)
        assert [w.roles for w in pair.workers] == ([("reference", "twin")] if budget == 2 else
                                                   [("reference",), ("twin",)])
        pair.built()
        twin = pair.twin_worker
        seen = []
        for step in range(3):
            pair.submit(step, None if step == 0 else buffer.sample(8), False)
            seen.append(pair.collect(None)[1] is not None)
        assert seen == [True, True, False]
        assert pair.twin_worker is None and pair.workers == [pair.reference]
        if twin is not None:
            assert twin.process.exitcode is not None  # its process has ended
    finally:
        pair.close()


def test_a_batch_reaches_the_worker_as_it_was_sent():
    """Plain contiguous CPU tensors travel as numpy arrays and are rebuilt with the same dtype, shape, strides and
    bytes; anything numpy would change (bfloat16, a grad-requiring tensor, size-1 dimensions with other strides,
    a non-contiguous view) travels as the tensor itself."""
    import multiprocessing

    from checks.equivalence.worker import WireArray, receive, send, from_wire, to_wire

    ours, theirs = multiprocessing.Pipe()  # the worker's own pipe and messages, as the lock-step loop sends them

    plain = [torch.randn(4, 3), torch.arange(5), torch.ones(2, 1, dtype=torch.float64), torch.tensor(True),
             torch.zeros(0, 3)]
    kept = [torch.randn(3, 2).t(), torch.randn(2, 2, dtype=torch.bfloat16), torch.randn(2, requires_grad=True),
            torch.randn(1, 4).as_strided((1, 4), (7, 1))]
    for batch in (plain + kept, tuple(plain), {f"k{i}": t for i, t in enumerate(plain + kept)}):
        wire = to_wire(batch)
        items = list(wire.values()) if isinstance(wire, dict) else list(wire)
        assert [isinstance(x, WireArray) for x in items] == [True] * len(plain) + [False] * (len(items) - len(plain))
        send(ours, wire)
        back = from_wire(receive(theirs))
        assert type(back) is type(batch)
        pairs = zip(batch.values(), back.values()) if isinstance(batch, dict) else zip(batch, back)
        for sent, got in pairs:
            assert (got.dtype, got.shape, got.stride()) == (sent.dtype, sent.shape, sent.stride())
            assert torch.equal(got.detach(), sent.detach())
    assert to_wire(None) is None and from_wire(None) is None
