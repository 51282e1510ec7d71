"""Device plumbing of the PyTorch trainers and the GPU equivalence harness.

CPU tests run everywhere: device validation (CUDA availability monkeypatched), the CLI's one-line exit-2 error,
every tensor of a trainer on its device, checkpoints that resume bitwise and hold only CPU tensors, the determinism
settings of the harness and its bitwise → tolerance fallback. Tests marked ``cuda`` need a GPU and skip without one
(``benchmarks/gpu_check.py`` runs them on a GPU machine).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from benchmarks import gpu_check
from checks.equivalence import EquivalenceOptions, cross_device_equivalence, run_equivalence
from multi_actor.checkpoint import load_checkpoint, save_checkpoint
from multi_actor.config import ConfigError, build_config, check_device, from_dict
from multi_actor.evaluation import on_cpu
from multi_actor.trainer import MultiActorTrainer, multi_actor_factory, reference_factory, to_cpu
from pogo_audit.core.compare import DEFAULT_ATOL, DEFAULT_RTOL
from pogo_audit.runtime.data import DatasetSpec, ReplayBuffer
from pogo_audit.core.harness import CUBLAS_WORKSPACE, IsolatedTrainer, cpu_drawn_randomness, torch_determinism
from pogo_audit.runtime.seeding import GlobalRNGState

SPEC = DatasetSpec("synthetic", "Hopper-v5", 11, 3, 1.0)
HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]


@pytest.fixture(scope="module")
def data():
    return gpu_check.synthetic_dataset(n=2000)


def _cfg(algo: str, device: str, actors: int = 3):
    return build_config(None, [], algo=algo, num_actors=actors, device=device)


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CPU", 0, None])
def test_device_must_be_cpu_cuda_or_cuda_n(value):
    with pytest.raises(ConfigError) as exc:
        check_device("device", value)
    assert exc.value.field == "device" and exc.value.expected == "cpu, cuda or cuda:N"


def test_cuda_without_cuda_names_the_field(monkeypatch):
    _no_cuda(monkeypatch)
    with pytest.raises(ConfigError) as exc:
        build_config(None, ["device=cuda"], algo="iql")
    assert "config field 'device'" in str(exc.value) and "CUDA is not available" in str(exc.value)


def test_cuda_index_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("device", "cuda:1")
    with pytest.raises(ConfigError, match=r"cuda:0\.\.cuda:1 \(2 CUDA device"):
        check_device("device", "cuda:2")


def test_default_device_is_cpu_and_round_trips():
    cfg = build_config(None, [], algo="td3_bc")
    assert cfg.device == "cpu"
    assert from_dict(cfg.to_dict()).resolved() == cfg


@pytest.mark.parametrize("argv", [
    ["train", "--algo", "iql", "--device", "cuda"],
    ["equivalence", "--algo", "td3_bc", "--device", "cuda:0"],
    ["mutants", "--algo", "td3_bc", "--device", "cuda"],
    ["conformance", "--algo", "td3_bc", "--device", "cuda"],
    ["equivalence", "--device", "tpu"],
])
def test_cli_device_error_is_one_line_exit_2(argv, monkeypatch, capsys):
    pytest.importorskip("rich_argparse")  # a CLI dependency; the GPU machine's minimal environment may lack it
    from pogo_audit.cli.main import main

    _no_cuda(monkeypatch)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "--device" in lines[0] and "Traceback" not in err
    assert ("CUDA is not available" in lines[0]) == (argv[-1] != "tpu")


# ---------------------------------------------------------------------------------------------------- trainer


def tensor_devices(trainer: MultiActorTrainer) -> dict[str, torch.device]:
    """Where every tensor of the trainer lives: base networks and scalars, every optimizer's state, extra actors,
    their snapshots and the extra actors' generator."""
    out = {f"base/{k}": t.device for k, t in trainer.base.named_tensors().items()}
    optimizers = {**trainer.base.optimizers(), "actors": trainer.actor_optimizer}
    for name, opt in optimizers.items():
        for p, state in opt.state.items():
            out[f"{name}/param"] = p.device
            for key, value in state.items():
                if torch.is_tensor(value) and key != "step":  # Adam keeps its step counter on the CPU
                    out[f"{name}/{key}"] = value.device
    for i, actor in enumerate(trainer.actors, 1):
        out.update({f"actor{i}/{k}": v.device for k, v in actor.state_dict().items()})
    out.update({f"snapshot0/{k}": v.device for k, v in trainer._snapshot0.state_dict().items()})
    out["generator"] = trainer.generator.device
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_every_tensor_of_the_trainer_is_on_its_device(device, data):
    """SAC-N (a bare ``log_alpha`` tensor, three optimizers) with deterministic ``q``-energy actors: actor 1's W2 to
    the tanh-Gaussian actor0 samples actor0 with the extra actors' generator (and needs no GeomLoss)."""
    actors = "[{type: tanh_gaussian}, {type: deterministic, energy: q}, {type: deterministic, energy: q}]"
    cfg = build_config(None, [f"actor_configs={actors}"], algo="sac_n", num_actors=3, device=device)
    trainer = MultiActorTrainer(cfg, SPEC, 0)
    log = trainer.step(ReplayBuffer(data, 0).sample(32))  # a CPU batch: the trainer moves it
    assert "actor2/w2" in log
    devices = tensor_devices(trainer)
    for name in ("base/log_alpha", "base/critic/", "base/target_critic/", "alpha/exp_avg", "actors/exp_avg_sq",
                 "snapshot0/", "generator"):
        assert any(k.startswith(name) for k in devices), name
    wrong = {k: str(v) for k, v in devices.items() if v.type != torch.device(device).type}
    assert not wrong


def _step_n(trainer, buffer, n):
    return [trainer.step(buffer.sample(32)) for _ in range(n)]


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_resume_is_bitwise_and_holds_cpu_tensors(device, data, tmp_path):
    """TD3+BC draws target noise from the global stream (CUDA's on a GPU): the checkpoint must carry it."""
    cfg = _cfg("td3_bc", device)
    buffer = ReplayBuffer(data, 5)
    outside = GlobalRNGState.capture()
    a = MultiActorTrainer(cfg, SPEC, 0)
    _step_n(a, buffer, 3)
    state = {"trainer": a.training_state(), "rng": GlobalRNGState.capture().to_portable(),
             "buffer_rng": buffer.get_state()}
    leaves = []
    _collect_tensors(state, leaves)
    assert leaves and all(t.device.type == "cpu" for t in leaves)
    save_checkpoint(tmp_path / "ckpt.pt", state)
    expected = _step_n(a, buffer, 2)
    expected_params = a.parameters()

    outside.restore()
    b = MultiActorTrainer(cfg, SPEC, 0)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    b.load_training_state(loaded["trainer"])
    buffer.set_state(loaded["buffer_rng"])
    GlobalRNGState.from_portable(loaded["rng"]).restore()
    assert _step_n(b, buffer, 2) == expected
    for k, v in b.parameters().items():
        assert np.array_equal(v, expected_params[k]), k


def _collect_tensors(tree, out):
    if torch.is_tensor(tree):
        out.append(tree)
    elif isinstance(tree, dict):
        for v in tree.values():
            _collect_tensors(v, out)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            _collect_tensors(v, out)


def test_to_cpu_keeps_structure_and_cpu_tensors():
    t = torch.ones(2)
    state_dict = torch.nn.Linear(2, 3).state_dict()
    tree = {"a": [t, (t, 3)], "b": "x", "sd": state_dict}
    out = to_cpu(tree)
    assert out["a"][0] is t and out["a"][1][1] == 3 and isinstance(out["a"][1], tuple) and out["b"] == "x"
    assert type(out["sd"]) is type(state_dict) and out["sd"]._metadata == state_dict._metadata


# ------------------------------------------------------------------------------------------------- harness


def test_determinism_settings_are_a_no_op_on_cpu():
    before = torch.are_deterministic_algorithms_enabled()
    with torch_determinism("cpu") as info:
        assert info == {} and torch.are_deterministic_algorithms_enabled() == before


def test_determinism_settings_for_cuda_are_set_and_restored(monkeypatch):
    """The settings themselves need no GPU: set inside, restored after, other warnings still reach the caller."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    with pytest.warns(UserWarning, match="unrelated"):
        with torch_determinism("cuda:0") as info:
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
            assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
            warnings.warn("foo_cuda does not have a deterministic implementation, but you set ...")
            warnings.warn("unrelated")
    assert info["nondeterministic_ops"] == ["foo_cuda does not have a deterministic implementation, but you set ..."]
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.backends.cuda.matmul.allow_tf32 == tf32


class _Scalars:
    """A minimal Trainer-protocol trainer; instance ``nth`` of the factory adds ``drift(nth)`` to its update."""

    built = 0
    drift = staticmethod(lambda nth: 0.0)

    def __init__(self, config, spec, seed):
        type(self).built += 1
        self.nth = type(self).built
        self.w = np.full(4, 0.5, np.float32)

    def step(self, batch):
        self.w = (self.w * np.float32(0.9) + np.float32(batch[0].mean()) +
                  np.float32(type(self).drift(self.nth))).astype(np.float32)
        return {"critic/loss": float(self.w.sum())}

    def parameters(self):
        return {"critic/q/w": self.w.copy()}

    def load_parameters(self, params):
        self.w = np.asarray(params["critic/q/w"], np.float32).copy()


class _Batches:
    def __init__(self):
        self.rng = np.random.default_rng(0)

    def sample(self, n):
        return [self.rng.normal(size=(n, 3)).astype(np.float32)]


def _run_scalars(drift, fallback, steps=5):
    _Scalars.built, _Scalars.drift = 0, staticmethod(drift)
    options = EquivalenceOptions(steps=steps, chain_oracle=False, tolerance_fallback=fallback)
    return run_equivalence("fake", build_config(None, [], algo="td3_bc"), SPEC, _Batches(), _Scalars, _Scalars,
                           options, batch_size=8)


def test_nondeterministic_device_falls_back_to_tolerance_and_says_why():
    twin_drifts = (lambda nth: 1e-7 if nth == 2 else 0.0)  # instances: reference, twin, candidate
    res = _run_scalars(twin_drifts, fallback=True)
    assert res.verdict == "pass" and res.metrics["mode"] == "tolerance"
    assert "not bitwise reproducible" in res.summary and "step 1" in res.summary
    assert res.metrics["self_check"] == "pass (within tolerance, not bitwise)"
    strict = _run_scalars(twin_drifts, fallback=False)
    assert strict.verdict == "inconclusive" and strict.metrics["mode"] == "bitwise"


def test_tolerance_fallback_still_fails_a_real_divergence_and_stops_on_a_wild_twin():
    bad = _run_scalars(lambda nth: {2: 1e-7, 3: 1e-2}.get(nth, 0.0), fallback=True)
    assert bad.verdict == "fail" and bad.metrics["mode"] == "tolerance" and bad.first_divergence.step == 1
    wild = _run_scalars(lambda nth: 1e-2 if nth == 2 else 0.0, fallback=True)
    assert wild.verdict == "inconclusive" and "beyond the tolerance" in wild.summary


def test_deterministic_device_stays_bitwise():
    res = _run_scalars(lambda nth: 0.0, fallback=True)
    assert res.verdict == "pass" and res.metrics["mode"] == "bitwise" and res.metrics["self_check"] == "pass"


def test_cpu_rng_digests_have_no_cuda_entry_until_cuda_is_used():
    iso = IsolatedTrainer(reference_factory, _cfg("iql", "cpu"), SPEC, 0)
    expected = {"rng/torch", "rng/numpy"} | ({"rng/cuda"} if torch.cuda.is_initialized() else set())
    assert set(iso.rng_digests()) == expected


# ------------------------------------------------------------------------------------------------ cross-device

META_DRAWS = {  # a draw for a non-CPU (meta) tensor and the CPU draw it must consume the CPU stream like
    "Tensor.normal_ (rsample)": (lambda d: torch.empty(4, 5, device=d).normal_()),
    "Tensor.uniform_": (lambda d: torch.empty(6, 2, device=d).uniform_(-1, 1)),
    "randn_like": (lambda d: torch.randn_like(torch.empty(3, 7, device=d))),
    "rand_like": (lambda d: torch.rand_like(torch.empty(33, device=d))),
    "randn": (lambda d: torch.randn((17, 3), device=d)),
    "rand": (lambda d: torch.rand(3, 2, device=d)),
    "normal(Tensor, Tensor)": (lambda d: torch.normal(torch.zeros(20, 3, device=d), torch.ones(20, 3, device=d))),
}


@pytest.mark.parametrize("name", sorted(META_DRAWS))
def test_device_draws_are_made_by_the_cpu_generator(name):
    """The meta device stands in for CUDA: a draw for it must advance the CPU stream exactly like the CPU draw."""
    draw = META_DRAWS[name]

    def state_after(device):
        torch.manual_seed(3)
        out = draw(device)
        return torch.get_rng_state(), out

    originals = (torch.randn, torch.normal, torch.Tensor.normal_)
    with cpu_drawn_randomness():
        cpu_state, cpu_out = state_after("cpu")
        meta_state, meta_out = state_after("meta")
    assert torch.equal(cpu_state, meta_state) and meta_out.device.type == "meta"
    assert meta_out.shape == cpu_out.shape and not torch.equal(cpu_state, torch.manual_seed(3).get_state())
    assert (torch.randn, torch.normal, torch.Tensor.normal_) == originals


def test_draws_with_an_explicit_generator_are_left_alone():
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with cpu_drawn_randomness():
        torch.randn(4, generator=g)
        torch.empty(4, device="meta").normal_(generator=g)
    assert torch.equal(torch.get_rng_state(), before)


def test_cross_device_audit_runs_calibration_then_judges(data):
    """cpu → cpu exercises the whole path: zero drift gives the default tolerances, and the candidate passes."""
    options = EquivalenceOptions(steps=3, full_every=3, chain_oracle=False)
    res = cross_device_equivalence("td3_bc", _cfg("td3_bc", "cpu"), SPEC, lambda: ReplayBuffer(data, 0),
                                   reference_factory, multi_actor_factory, options, ("cpu", "cpu"), batch_size=32)
    assert res.verdict == "pass", res.summary
    info = res.metrics["cross_device"]
    assert info["measured_drift"]["critic params"]["max_abs"] == 0.0
    assert info["tolerances"]["critic params"] == {"rtol": DEFAULT_RTOL, "atol": DEFAULT_ATOL}
    assert res.metrics["mode"] == "tolerance" and "measured float32 drift" in res.summary


# ----------------------------------------------------------------------------------------------- conformance


def test_conformance_on_cpu_is_unchanged_by_the_device_argument():
    from checks.conformance import run_variant
    from pogo_audit.core.golden import GoldenDir

    golden = GoldenDir(precision="float32")
    plain, on_cpu_ = run_variant(golden, "td3_bc", steps=3), run_variant(golden, "td3_bc", steps=3, device="cpu")
    assert on_cpu_.metrics["device"] == "cpu" and plain.metrics["mode"] == on_cpu_.metrics["mode"]
    assert plain.metrics["groups"] == on_cpu_.metrics["groups"] and plain.verdict == on_cpu_.verdict


@pytest.mark.parametrize(("precision", "mode"), [("float32", "drift"), ("float64", "tolerance")])
def test_conformance_off_the_cpu_is_never_held_to_the_recording_cpus_bits(precision, mode, monkeypatch):
    """The golden traces were recorded on a CPU: on a GPU float32 gets the drift bound even where this machine's CPU
    fingerprint matches the recording, float64 keeps its tolerance."""
    from checks.conformance.replay import Replay
    from pogo_audit.core.fingerprint import machine_fingerprint
    from pogo_audit.core.golden import GoldenDir

    monkeypatch.setattr(GoldenDir, "fingerprint", machine_fingerprint("torch", 1))
    golden = GoldenDir(precision=precision)
    assert Replay.open(golden, "td3_bc", 3).comparison.rule.mode == ("bitwise" if precision == "float32" else mode)
    replay = Replay.open(golden, "td3_bc", 3, device="cuda")
    assert replay.comparison.rule.mode == mode and not replay.fingerprint_match
    assert replay.fingerprint_reasons[-1] == "replayed on cuda, recorded on the CPU"


@cuda
@pytest.mark.parametrize("variant", ["td3_bc", "iql", "cql"])
def test_conformance_float64_on_cuda_within_the_portable_tolerance(variant):
    from checks.conformance import F64_REL, run_variant
    from pogo_audit.core.golden import GoldenDir

    res = run_variant(GoldenDir(precision="float64"), variant, steps=20, device="cuda")
    assert res.verdict == "pass", res.summary
    assert res.metrics["device"] == "cuda" and res.metrics["max_rel"] < F64_REL


# ------------------------------------------------------------------------------------------------- gpu_check


@pytest.mark.heavy
def test_gpu_check_part_records_results_and_errors(data, tmp_path, monkeypatch):
    ctx = gpu_check.Context("cpu", True, ("td3_bc",), gpu_check.Data("synthetic", data), tmp_path,
                            float("inf"), tmp_path / "part.json")
    assert gpu_check.run_part_here("step_times", ctx) == 0
    result = json.loads((tmp_path / "part.json").read_text())
    assert result["status"] == "ok" and result["algorithms"]["td3_bc"]["cpu_ms"] > 0
    assert gpu_check.run_part_here("conformance", ctx) == 0
    result = json.loads((tmp_path / "part.json").read_text())
    rows = result["algorithms"]
    assert result["status"] == "ok" and result["steps"] == 5 and {"td3_bc", "cql"} <= set(rows)
    assert all(r["verdict"] == "pass" and r["mode"] == "tolerance" for r in rows.values()), rows

    def broken(ctx):
        raise RuntimeError("no kernel image is available\nsecond line")

    monkeypatch.setitem(gpu_check.PART_FUNCS, "jax_jit", broken)
    gpu_check.run_part_here("jax_jit", ctx)
    result = json.loads((tmp_path / "part.json").read_text())
    assert result["status"] == "error" and result["error"] == "RuntimeError: no kernel image is available"
    report = {"parts": {"jax_jit": result}, "environment": {}, "device": "cpu", "quick": True, "data": "d",
              "notes": [], "seconds": 1.0}
    assert gpu_check.failed(report) and "no kernel image" in gpu_check.markdown(report)


def test_gpu_check_one_failing_algorithm_does_not_stop_the_others(data, tmp_path):
    ctx = gpu_check.Context("cpu", True, ("iql", "cql", "awac"), gpu_check.Data("synthetic", data), tmp_path,
                            float("inf"), None)

    def measure(algo, row):
        if algo == "cql":
            raise ModuleNotFoundError("No module named 'geomloss'")
        row.update(verdict="pass", summary="ok")

    out = gpu_check.for_each_algo(ctx, {"algorithms": {}}, measure)
    assert [r["verdict"] for r in out["algorithms"].values()] == ["pass", "error", "pass"]
    assert out["algorithms"]["cql"]["summary"] == "ModuleNotFoundError: No module named 'geomloss'"
    assert gpu_check.failed({"parts": {"equivalence": {"status": "ok", **out}}})


def test_gpu_check_passes_over_an_incomplete_golden_dataset(tmp_path):
    np.savez(tmp_path / "dataset.npz", observations=np.zeros((4, 11), np.float32))
    data = gpu_check.load_data(str(tmp_path))
    assert f"{tmp_path / 'dataset.npz'}: lacks actions" in data.source
    assert data.arrays["terminals"].dtype == np.float32 and data.arrays["observations"].shape[1] == 11
    assert "has no dataset.npz" in gpu_check.load_data(str(tmp_path / "nope")).source


def test_gpu_check_refuses_a_missing_device(monkeypatch, tmp_path, capsys):
    _no_cuda(monkeypatch)
    for var in ("CUBLAS_WORKSPACE_CONFIG", "XLA_PYTHON_CLIENT_PREALLOCATE"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "device" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- CUDA


@cuda
def test_global_rng_state_covers_the_cuda_generator():
    torch.zeros(1, device="cuda")
    state = GlobalRNGState.capture()
    assert state.cuda_states is not None
    first = torch.randn(8, device="cuda")
    GlobalRNGState.from_portable(state.to_portable()).restore()
    assert torch.equal(torch.randn(8, device="cuda"), first)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_uses_cpu_copies_of_gpu_actors(device):
    trainer = MultiActorTrainer(_cfg("iql", device), SPEC, 0)
    for policy in trainer.policies():
        evaluated = on_cpu(policy)
        assert all(p.device.type == "cpu" for p in evaluated.parameters())
        assert (evaluated is policy) == (device == "cpu")
        assert all(p.device.type == device for p in policy.parameters())
        obs = np.zeros(SPEC.state_dim, np.float32)
        assert np.array_equal(evaluated.act(obs), on_cpu(policy).act(obs))


@cuda
def test_cuda_checkpoint_loads_on_the_cpu(data, tmp_path):
    a = MultiActorTrainer(_cfg("iql", "cuda"), SPEC, 0)
    _step_n(a, ReplayBuffer(data, 0), 2)
    save_checkpoint(tmp_path / "ckpt.pt", {"trainer": a.training_state()})
    b = MultiActorTrainer(_cfg("iql", "cpu"), SPEC, 0)
    b.load_training_state(load_checkpoint(tmp_path / "ckpt.pt")["trainer"])
    for k, v in a.parameters().items():
        assert np.array_equal(v, b.parameters()[k]), k
    assert b.steps_done == 2 and b.generator_restarted


@cuda
@pytest.mark.parametrize("algo", ["td3_bc", "cql"])
def test_cross_device_audit_cpu_reference_cuda_candidate(algo, data):
    options = EquivalenceOptions(steps=4, full_every=4, chain_oracle=False)
    res = cross_device_equivalence(algo, _cfg(algo, "cuda"), SPEC, lambda: ReplayBuffer(data, 0), reference_factory,
                                   multi_actor_factory, options, ("cpu", "cuda"), batch_size=64)
    assert res.verdict == "pass", res.summary
    assert res.metrics["cross_device"]["measured_drift"]["critic params"]["max_abs"] > 0  # real float32 drift


@cuda
@pytest.mark.parametrize("algo", ["td3_bc", "sac_n"])
def test_equivalence_on_cuda_is_bitwise_with_the_cuda_rng_observable(algo, data):
    options = EquivalenceOptions(steps=4, full_every=4, chain_oracle=False)
    res = run_equivalence(algo, _cfg(algo, "cuda"), SPEC, ReplayBuffer(data, 0), reference_factory,
                          multi_actor_factory, options, batch_size=64)
    assert res.verdict == "pass", res.summary
    assert res.metrics["device"] == "cuda" and res.metrics["mode"] == "bitwise", res.summary
    rng = next(r for r in res.details if r["group"] == "rng")
    assert rng["observables"] == 3  # rng/torch, rng/numpy, rng/cuda


def test_extra_actors_never_reseed_the_cuda_generators(monkeypatch):
    """Building the chain seeds CUDA once, as CORL's set_seed does (the reference does the same); the extra actors'
    own seed goes to the CPU generator only. ``torch.manual_seed`` there reseeded CUDA and shifted the reference's
    CUDA stream: the H200 equivalence run caught it as ``rng/cuda`` differing at step 0 for every algorithm."""
    seeds: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeds.append(int(s)))
    cfg = _cfg("td3_bc", "cpu")
    reference_factory(cfg, SPEC, 7)
    reference_seeds, seeds[:] = list(seeds), []
    multi_actor_factory(cfg, SPEC, 7)
    assert seeds == reference_seeds == [7]


def test_a_generator_state_of_another_device_kind_restarts_the_stream_deterministically(data, tmp_path):
    """A CUDA checkpoint on a CPU trainer (simulated: a Philox-sized state tagged ``cuda``): parameters load, the
    extra actors' generator restarts from (seed, step) instead of failing on a state it cannot read."""
    a = MultiActorTrainer(_cfg("iql", "cpu"), SPEC, 0)
    _step_n(a, ReplayBuffer(data, 0), 2)
    state = a.training_state()
    assert state["generator_device"] == "cpu"
    foreign = {**state, "generator": torch.zeros(16, dtype=torch.uint8), "generator_device": "cuda"}
    b, c = MultiActorTrainer(_cfg("iql", "cpu"), SPEC, 0), MultiActorTrainer(_cfg("iql", "cpu"), SPEC, 0)
    b.load_training_state(foreign)
    c.load_training_state(foreign)
    assert b.generator_restarted and torch.equal(b.generator.get_state(), c.generator.get_state())
    assert not torch.equal(b.generator.get_state(), a.generator.get_state())
    same = MultiActorTrainer(_cfg("iql", "cpu"), SPEC, 0)
    same.load_training_state(state)
    assert not same.generator_restarted and torch.equal(same.generator.get_state(), a.generator.get_state())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the one-line error for a missing CUDA device")
def test_report_and_matrix_take_device_and_refuse_a_missing_one(tmp_path, capsys):
    from pogo_audit.cli.main import main

    for argv in (["report", "--device", "cuda", "-o", str(tmp_path / "r.md")],
                 ["matrix", "--device", "cuda", "--out", str(tmp_path / "m.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--device" in err and "cuda" in err
