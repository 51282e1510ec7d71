"""GPU checks of pogo-audit in one script: equivalence on the GPU, step times CPU vs GPU, multi-actor ratios, JAX jit.

Run from the repository root (no Minari dataset, no network, no wandb/gymnasium/mujoco needed)::

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --out $OUT            # at most --budget-s (450 s) + start-up
    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --quick --device cpu  # the same code paths on a CPU

Each part runs in its own process, capped in time (partial results are kept); parts are run in the order below and
the ones that no longer fit the budget are reported as skipped.

Parts (each one recorded on its own: a failing part is reported and the others still run):

* ``equivalence``: reference vs multi-actor trainer (3 actors), both on the device, for the six PyTorch algorithms;
  bitwise when the reference's self-check shows the device deterministic for the run, else tolerance (stated).
* ``cross_device``: reference on the CPU vs multi-actor trainer on the device, random draws shared, verdict with a
  tolerance of ``DRIFT_FACTOR`` × the float32 drift measured between the reference on the two devices.
* ``equivalence_rebrac``: the same as ``equivalence`` for the JAX ReBRAC on JAX's default backend.
* ``step_times``: reference step time (median after warm-up, batch 256, batches already on the device) on the CPU
  and on the device, and their ratio.
* ``multi_actor``: multi-actor step ÷ reference step on the device for 1, 3 and 5 actors.
* ``jax_jit``: ReBRAC update un-jitted (``jax.disable_jit``) ÷ jitted step and ÷ jitted epoch (per update).
* ``gpu_tests``: ``pytest tests/test_device.py`` (its CUDA tests run instead of skipping).

Data: the golden ``dataset.npz`` (``--golden``, ``$POGO_AUDIT_GOLDEN_DIR``, the one shipped with the package's
traces), else a seeded synthetic Hopper-shaped dataset; the output says which.
The report is printed and written to ``--out`` as ``gpu_check.json`` and ``gpu_check.md``. Exit 0 when every part
ran and every equivalence passed, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multi_actor import registry

REPO_ROOT = Path(__file__).resolve().parent.parent
TORCH_ALGOS = registry.names("torch")
PARTS = ("equivalence", "step_times", "multi_actor", "cross_device", "equivalence_rebrac", "jax_jit", "conformance",
         "gpu_tests")
HOPPER = (11, 3)
BATCH = 256
SEED = 0


def synthetic_dataset(n: int = 20_000, dims: tuple[int, int] = HOPPER, seed: int = 0) -> dict[str, np.ndarray]:
    """jax-profile's seeded random Hopper-shaped buffer in the d4rl transition layout (step times do not depend on
    the data's content), with ReBRAC's ``next_actions`` kept."""
    from checks.jax_profile import synthetic_buffer

    b = synthetic_buffer(n, dims, seed)
    return {"observations": b["states"], "actions": b["actions"], "rewards": b["rewards"],
            "next_observations": b["next_states"], "next_actions": b["next_actions"], "terminals": b["dones"]}


# ---------------------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    """Transitions for every trainer: normalized and raw observations (SAC-N/EDAC/ReBRAC train on raw ones)."""

    source: str
    arrays: dict[str, np.ndarray]

    def torch_layout(self, normalized: bool) -> dict[str, np.ndarray]:
        a = self.arrays
        prefix = "" if normalized or "raw_observations" not in a else "raw_"
        return {"observations": a[f"{prefix}observations"], "actions": a["actions"], "rewards": a["rewards"],
                "next_observations": a[f"{prefix}next_observations"], "terminals": a["terminals"]}

    def rebrac_layout(self) -> dict[str, np.ndarray]:
        t = self.torch_layout(normalized=False)
        return {"states": t["observations"], "actions": t["actions"], "rewards": t["rewards"].reshape(-1),
                "next_states": t["next_observations"], "next_actions": self.arrays["next_actions"],
                "dones": t["terminals"].reshape(-1)}


def golden_candidates(explicit: str | None) -> Iterator[Path]:
    """Directories that may hold the golden ``dataset.npz``, in order of preference."""
    if explicit:
        yield Path(explicit)
    if os.environ.get("POGO_AUDIT_GOLDEN_DIR"):
        yield Path(os.environ["POGO_AUDIT_GOLDEN_DIR"])
    from pogo_audit.core.golden import GoldenDir

    yield GoldenDir(precision="float32").dataset_path.parent  # the traces shipped with the package


def load_data(explicit: str | None) -> Data:
    """The first usable golden ``dataset.npz``, else the synthetic dataset (never an error: the source is stated,
    with the reason a file or an explicit ``--golden`` was passed over)."""
    passed_over = []
    if explicit and not (Path(explicit) / "dataset.npz").is_file():
        passed_over.append(f"--golden {explicit} has no dataset.npz")
    required = ("observations", "actions", "rewards", "next_observations", "dones", "next_actions")
    for folder in golden_candidates(explicit):
        path = folder / "dataset.npz"
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError) as exc:
            passed_over.append(f"{path}: unreadable ({type(exc).__name__})")
            continue
        missing = [k for k in required if k not in arrays]
        if missing:
            passed_over.append(f"{path}: lacks {', '.join(missing)}")
            continue
        arrays["terminals"] = np.asarray(arrays.pop("dones"), np.float32)
        note = f"; passed over: {'; '.join(passed_over)}" if passed_over else ""
        return Data(f"golden {path} ({arrays['observations'].shape[0]} transitions){note}", arrays)
    note = f" ({'; '.join(passed_over)})" if passed_over else ""
    return Data(f"synthetic seeded Hopper-shaped dataset (obs 11, act 3, 20000 transitions): no golden dataset.npz "
                f"found{note}", synthetic_dataset())


# -------------------------------------------------------------------------------------------------- measurement


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def median_step_ms(step: Callable[[Any], Any], batches: list[Any], warmup: int, steps: int, device: str) -> float:
    """Median wall time (ms) of ``step(batch)`` over ``steps`` calls after ``warmup`` calls, synchronized."""
    for i in range(warmup):
        step(batches[i % len(batches)])
    times = []
    for i in range(steps):
        sync(device)
        t0 = time.perf_counter()
        step(batches[i % len(batches)])
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def spec_for(data: Data) -> Any:
    from pogo_audit.runtime.data import DatasetSpec

    obs, act = data.arrays["observations"].shape[1], data.arrays["actions"].shape[1]
    return DatasetSpec("gpu-check", "Hopper-v5", obs, act, 1.0)


def torch_config(algo: str, actors: int, device: str) -> Any:
    from multi_actor.config import build_config

    return build_config(None, [], algo=algo, num_actors=actors, device=device, seed=SEED)


def torch_buffer(data: Data, algo: str, seed: int = SEED) -> Any:
    from multi_actor.algorithms import get_algorithm
    from pogo_audit.runtime.data import ReplayBuffer
    from pogo_audit.runtime.seeding import BUFFER_OFFSET, derived_seed

    algorithm = get_algorithm(algo)
    normalized = algorithm.normalize_states(algorithm.base_config({}))
    return ReplayBuffer(data.torch_layout(normalized), derived_seed(seed, BUFFER_OFFSET))


def device_batches(data: Data, algo: str, device: str, n: int = 8) -> list[list[Any]]:
    buffer = torch_buffer(data, algo)
    return [[t.to(device) for t in buffer.sample(BATCH)] for _ in range(n)]


# --------------------------------------------------------------------------------------------------------- parts


@dataclass
class Context:
    device: str
    quick: bool
    algos: tuple[str, ...]
    data: Data
    out: Path
    deadline: float
    result_file: Path | None = None

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def emit(self, partial: Mapping[str, Any]) -> None:
        """Save what a part has measured so far (kept if the part is killed at its time limit)."""
        if self.result_file is not None:  # write + rename: a kill mid-write leaves the previous version
            tmp = self.result_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(partial, default=str))
            tmp.replace(self.result_file)

    def sizes(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def for_each_algo(ctx: Context, out: dict[str, Any], measure: Callable[[str, dict[str, Any]], None],
                  min_left: float = 20) -> dict[str, Any]:
    """``measure(algo, row)`` fills ``out["algorithms"][algo]`` for every algorithm; an algorithm that raises gets
    verdict ``error`` (the others still run), one started with less than ``min_left`` seconds left is skipped."""
    rows = out["algorithms"]
    for algo in ctx.algos:
        row = rows[algo] = {}
        if ctx.time_left() < min_left:
            row.update(verdict="skipped", summary="time budget spent")
        else:
            try:
                measure(algo, row)
            except Exception as exc:  # e.g. a missing optional wheel for this algorithm's W2 estimator
                first = str(exc).splitlines()[0] if str(exc) else ""
                row.update(verdict="error", summary=f"{type(exc).__name__}: {first}")
        ctx.emit(out)
    return out


def part_equivalence(ctx: Context) -> dict[str, Any]:
    """Reference vs multi-actor trainer (3 actors) on ``ctx.device`` for every PyTorch algorithm."""
    from checks.equivalence import EquivalenceOptions, run_equivalence
    from multi_actor.trainer import multi_actor_factory, reference_factory

    steps = ctx.sizes(50, 10)
    oracle = importlib.util.find_spec("ot") is not None

    def measure(algo: str, row: dict[str, Any]) -> None:
        options = EquivalenceOptions(steps=steps, seed=SEED, full_every=steps, chain_oracle=oracle,
                                     bundle_dir=str(ctx.out / "bundles"))
        res = run_equivalence(algo, torch_config(algo, 3, ctx.device), spec_for(ctx.data),
                              torch_buffer(ctx.data, algo), reference_factory, multi_actor_factory, options,
                              batch_size=BATCH)
        m = res.metrics
        row.update(verdict=res.verdict, mode=m.get("mode"), self_check=m.get("self_check"),
                   steps=res.steps_compared, summary=res.summary, seconds=round(res.seconds, 1),
                   nondeterministic_ops=m.get("determinism", {}).get("nondeterministic_ops", []))

    return for_each_algo(ctx, {"device": ctx.device, "actors": 3, "steps": steps, "batch": BATCH,
                               "chain_oracle": "on" if oracle else "off (POT not installed)", "algorithms": {}},
                         measure)


def part_cross_device(ctx: Context) -> dict[str, Any]:
    """Reference on the CPU vs multi-actor trainer (3 actors) on the device, shared draws, drift-derived tolerance."""
    from checks.equivalence import EquivalenceOptions, cross_device_equivalence
    from checks.equivalence.cross_device import DRIFT_FACTOR, DRIFT_GROUPS
    from multi_actor.trainer import multi_actor_factory, reference_factory

    steps = ctx.sizes(20, 5)
    oracle = importlib.util.find_spec("ot") is not None

    def measure(algo: str, row: dict[str, Any]) -> None:
        options = EquivalenceOptions(steps=steps, seed=SEED, full_every=steps, chain_oracle=oracle)
        res = cross_device_equivalence(algo, torch_config(algo, 3, ctx.device), spec_for(ctx.data),
                                       lambda: torch_buffer(ctx.data, algo), reference_factory, multi_actor_factory,
                                       options, ("cpu", ctx.device), batch_size=BATCH)
        info = res.metrics.get("cross_device", {})
        row.update(verdict=res.verdict, summary=res.summary, seconds=round(res.seconds, 1),
                   drift_max_abs=", ".join(f"{g} {d['max_abs']:.2g}" for g, d in
                                           info.get("measured_drift", {}).items() if g in DRIFT_GROUPS),
                   atol={g: t["atol"] for g, t in info.get("tolerances", {}).items()})

    return for_each_algo(ctx, {"reference_device": "cpu", "candidate_device": ctx.device, "actors": 3,
                               "steps": steps, "batch": BATCH, "drift_factor": DRIFT_FACTOR, "algorithms": {}},
                         measure)


def part_equivalence_rebrac(ctx: Context) -> dict[str, Any]:
    """JAX ReBRAC reference vs the JAX multi-actor trainer (3 actors) on JAX's default backend."""
    import jax

    from checks.equivalence import EquivalenceOptions, run_equivalence
    from checks.equivalence.jax_audit import DictBatchSampler, JaxChainOracle, full_precision_matmuls
    from multi_actor.config import build_config
    from multi_actor.jax_trainer import rebrac_multi_actor_factory, rebrac_reference_factory
    from pogo_audit.runtime.seeding import BUFFER_OFFSET, derived_seed

    steps = ctx.sizes(50, 10)
    oracle = importlib.util.find_spec("ot") is not None
    cfg = build_config(None, [], algo="rebrac", num_actors=3, seed=SEED)
    sampler = DictBatchSampler(ctx.data.rebrac_layout(), derived_seed(SEED, BUFFER_OFFSET))
    # like a CUDA torch run: bitwise unless the reference's self-check shows the backend is not bitwise reproducible
    options = EquivalenceOptions(steps=steps, seed=SEED, full_every=steps, chain_oracle=oracle,
                                 bundle_dir=str(ctx.out / "bundles"), tolerance_fallback=jax.default_backend() != "cpu")
    with full_precision_matmuls():  # as `pogo-audit equivalence --algo rebrac` runs it
        res = run_equivalence("rebrac", cfg, spec_for(ctx.data), sampler, rebrac_reference_factory,
                              rebrac_multi_actor_factory, options, batch_size=BATCH,
                              chain_oracle=JaxChainOracle.for_trainer)
    return {"backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
            "steps": steps, "batch": BATCH,
            "chain_oracle": "on" if oracle else "off (POT not installed)", "verdict": res.verdict,
            "mode": res.metrics.get("mode"), "self_check": res.metrics.get("self_check"), "summary": res.summary,
            "seconds": round(res.seconds, 1)}


def part_step_times(ctx: Context) -> dict[str, Any]:
    """Median reference step time on the CPU and on the device (batches already there)."""
    import torch

    from multi_actor.trainer import ReferenceProtocolTrainer

    warmup, steps = ctx.sizes(10, 3), ctx.sizes(40, 10)
    devices = ["cpu"] + ([ctx.device] if ctx.device != "cpu" else [])

    def measure(algo: str, row: dict[str, Any]) -> None:
        for device in devices:
            trainer = ReferenceProtocolTrainer(torch_config(algo, 1, device), spec_for(ctx.data), SEED)
            row[f"{device}_ms"] = round(median_step_ms(trainer.step, device_batches(ctx.data, algo, device),
                                                       warmup, steps, device), 3)
        if len(devices) == 2:
            row["cpu/device"] = round(row["cpu_ms"] / row[f"{ctx.device}_ms"], 2)

    return for_each_algo(ctx, {"batch": BATCH, "warmup": warmup, "timed_steps": steps, "statistic": "median",
                               "cpu_threads": torch.get_num_threads(), "devices": devices, "algorithms": {}},
                         measure, min_left=15)


def part_multi_actor(ctx: Context) -> dict[str, Any]:
    """Multi-actor step ÷ reference step on the device, for 1, 3 and 5 actors (same batches, same device)."""
    from multi_actor.trainer import MultiActorTrainer, ReferenceProtocolTrainer

    warmup, steps = ctx.sizes(5, 2), ctx.sizes(30, 6)
    out = {"device": ctx.device, "batch": BATCH, "warmup": warmup, "timed_steps": steps, "statistic": "median",
           "algorithms": {}}

    def measure(algo: str, row: dict[str, Any]) -> None:
        batches = device_batches(ctx.data, algo, ctx.device)
        spec = spec_for(ctx.data)
        ref = ReferenceProtocolTrainer(torch_config(algo, 1, ctx.device), spec, SEED)
        ref_ms = median_step_ms(ref.step, batches, warmup, steps, ctx.device)
        row["reference_ms"] = round(ref_ms, 3)
        for n in (1, 3, 5):
            trainer = MultiActorTrainer(torch_config(algo, n, ctx.device), spec, SEED)
            ms = median_step_ms(trainer.step, batches, warmup, steps, ctx.device)
            row[f"{n}_actors_ms"] = round(ms, 3)
            row[f"{n}_actors_ratio"] = round(ms / ref_ms, 2)
            ctx.emit(out)

    return for_each_algo(ctx, out, measure, min_left=15)


def part_jax_jit(ctx: Context) -> dict[str, Any]:
    """ReBRAC on JAX's default backend: un-jitted update vs jitted step and jitted epoch (per update)."""
    import jax

    from reference_algos.jax import rebrac

    updates = ctx.sizes(100, 20)
    buffer = ctx.data.rebrac_layout()
    state_dim, action_dim = buffer["states"].shape[1], buffer["actions"].shape[1]
    cfg = rebrac.Config(batch_size=BATCH, num_updates_on_epoch=updates, train_seed=SEED)
    trainer = rebrac.build(cfg, state_dim, action_dim)
    device_buffer = {k: jax.device_put(v) for k, v in buffer.items()}
    batch = {k: v[:BATCH] for k, v in device_buffer.items()}

    def timed(fn: Callable[[], Any], repeats: int) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    counter = iter(range(10**9))
    step = (lambda: trainer.train_step(batch, next(counter)))
    timed(step, 3)  # compile + warm-up
    jit_step = timed(step, ctx.sizes(50, 10))
    timed(lambda: trainer.train_epoch(device_buffer), 1)
    jit_epoch = timed(lambda: trainer.train_epoch(device_buffer), ctx.sizes(3, 1)) / updates
    with jax.disable_jit():
        eager = timed(step, ctx.sizes(3, 1))
    return {"backend": jax.default_backend(), "jax": jax.__version__, "batch": BATCH,
            "jitted_step_ms": round(1000 * jit_step, 3), "jitted_epoch_ms_per_update": round(1000 * jit_epoch, 4),
            "unjitted_update_ms": round(1000 * eager, 1),
            "unjitted/jitted_step": round(eager / jit_step, 1), "unjitted/jitted_epoch": round(eager / jit_epoch, 1)}


def part_conformance(ctx: Context) -> dict[str, Any]:
    """The CORL golden traces (float64 set) replayed by the PyTorch references on ``ctx.device``: CPU-drawn
    randomness, float64 tolerance; the measured max relative difference per variant."""
    from checks.conformance import run_variant
    from checks.conformance.command import TORCH_VARIANTS
    from pogo_audit.core.golden import GoldenDir

    steps = ctx.sizes(50, 5)
    golden = GoldenDir(precision="float64")
    out: dict[str, Any] = {"device": ctx.device, "precision": "float64", "steps": steps, "algorithms": {}}
    for variant in TORCH_VARIANTS:
        if ctx.time_left() < 10:
            out["algorithms"][variant] = {"verdict": "skipped", "summary": "time budget spent"}
            continue
        res = run_variant(golden, variant, steps=steps, device=ctx.device)
        out["algorithms"][variant] = {"verdict": res.verdict, "summary": res.summary, "mode": res.metrics["mode"],
                                    "max_rel": res.metrics["max_rel"], "seconds": round(res.seconds, 1)}
        ctx.emit(out)
    return out


def part_gpu_tests(ctx: Context) -> dict[str, Any]:
    """``tests/test_device.py`` under pytest (addopts cleared: the benchmark/xdist plugins need not be installed)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "tests/test_device.py"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=max(ctx.time_left(), 10))
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "passed": proc.returncode == 0,
            "summary": lines[-1] if lines else "", "tail": lines[-25:] if proc.returncode else []}


PART_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "equivalence": part_equivalence,
    "equivalence_rebrac": part_equivalence_rebrac,
    "step_times": part_step_times,
    "multi_actor": part_multi_actor,
    "cross_device": part_cross_device,
    "jax_jit": part_jax_jit,
    "conformance": part_conformance,
    "gpu_tests": part_gpu_tests,
}
#: the most seconds a part may take (each runs in its own process and is killed there); parts are not started with
#: less than MIN_SECONDS left of the budget
PART_CAP_S = {"equivalence": 170, "step_times": 100, "multi_actor": 120, "cross_device": 150,
              "equivalence_rebrac": 120, "jax_jit": 100, "conformance": 90, "gpu_tests": 90}
MIN_SECONDS = 30


# -------------------------------------------------------------------------------------------------------- report


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError as exc:
        info["torch"] = f"not importable: {exc}"
    for name in ("jax", "numpy", "geomloss", "ot"):
        spec = importlib.util.find_spec(name)
        if spec is None:
            info[name] = "not installed"
            continue
        try:
            info[name] = getattr(__import__(name), "__version__", "installed")
        except Exception as exc:  # a broken optional install is reported, not fatal
            info[name] = f"not importable: {type(exc).__name__}: {exc}"
    return info


def run_part_here(name: str, ctx: Context) -> int:
    """Run one part in this process and write its result (or its error) to ``ctx.result_file``."""
    try:
        result = {"status": "ok", **PART_FUNCS[name](ctx)}
    except Exception as exc:  # one failing part must not stop the others; the traceback is kept in the JSON
        result = {"status": "error", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  "traceback": traceback.format_exc(limit=8)}
    ctx.emit(result)
    return 0


def run_part(name: str, args: argparse.Namespace, device: str, deadline: float, out: Path) -> dict[str, Any]:
    """Run one part in a child process (a crash, a hang or a CUDA/JAX library clash stays inside it), at most
    ``PART_CAP_S[name]`` seconds and never past ``deadline``."""
    left = deadline - time.perf_counter()
    if left < MIN_SECONDS:
        return {"status": "skipped", "reason": f"time budget spent ({left:.0f}s left)"}
    limit = min(PART_CAP_S[name], left)
    result_file = out / f".part-{name}.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-part", name, "--part-seconds", f"{limit - 10:.0f}",
           "--device", device, "--out", str(out), "--algos", args.algos]
    if args.quick:
        cmd.append("--quick")
    if args.golden:
        cmd += ["--golden", args.golden]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        code, tail = proc.returncode, (proc.stderr or "").strip().splitlines()[-6:]
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        code, tail = None, stderr.strip().splitlines()[-6:]
    seconds = round(time.perf_counter() - t0, 1)
    try:
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    except ValueError:
        result = {}
    result_file.unlink(missing_ok=True)
    if code is None:
        return {**result, "status": "timeout", "seconds": seconds,
                "error": f"killed at its {limit:.0f}s limit; partial results kept", "stderr_tail": tail}
    if "status" not in result:
        return {**result, "status": "error", "seconds": seconds,
                "error": f"the part's process ended with code {code} before finishing", "stderr_tail": tail}
    return {**result, "seconds": seconds}


def _table(rows: Mapping[str, Mapping[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| algo | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for algo, row in rows.items():
        lines.append(f"| {algo} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown (also what is printed)."""
    env = report["environment"]
    lines = ["# pogo-audit GPU check", "",
             f"device: {report['device']} — {env.get('gpu', 'no GPU')}; torch {env.get('torch')}, "
             f"jax {env.get('jax')}; CUDA available: {env.get('cuda_available')}",
             f"data: {report['data']}", f"mode: {'quick' if report['quick'] else 'full'}; "
             f"total {report['seconds']:.0f}s", ""]
    lines += [f"note: {n}" for n in report["notes"]]
    for name, part in report["parts"].items():
        lines += ["", f"## {name} — {part['status']} ({part.get('seconds', 0)}s)", ""]
        if part["status"] != "ok":
            lines.append(part.get("error") or part.get("reason", ""))
            if part["status"] != "timeout" or "algorithms" not in part:
                continue
        if name == "equivalence":
            lines.append(f"{part['actors']} actors, {part['steps']} steps, batch {part['batch']}, device "
                         f"{part['device']}, W2 chain oracle {part['chain_oracle']}")
            lines += _table(part["algorithms"], ["verdict", "mode", "self_check", "summary"])
        elif name == "cross_device":
            lines.append(f"reference on cpu vs multi-actor trainer on {part['candidate_device']}, {part['steps']} "
                         f"steps, shared random draws, atol per group = {part['drift_factor']:g} × measured drift")
            lines += _table(part["algorithms"], ["verdict", "drift_max_abs", "summary"])
        elif name == "equivalence_rebrac":
            lines.append(f"backend {part['backend']} ({', '.join(part['jax_devices'])}), {part['steps']} steps: "
                         f"{part['verdict']} ({part['mode']}, self-check {part['self_check']}) — {part['summary']}")
        elif name == "step_times":
            lines.append(f"reference step, median of {part['timed_steps']} after {part['warmup']} warm-up steps, "
                         f"batch {part['batch']}, {part['cpu_threads']} CPU threads (ms)")
            cols = [f"{d}_ms" for d in part["devices"]] + (["cpu/device"] if len(part["devices"]) == 2 else [])
            lines += _table(part["algorithms"], [*cols, "summary"])
        elif name == "multi_actor":
            lines.append(f"multi-actor step ÷ reference step on {part['device']} (median of {part['timed_steps']})")
            lines += _table(part["algorithms"], ["reference_ms", "1_actors_ratio", "3_actors_ratio",
                                                 "5_actors_ratio", "5_actors_ms", "summary"])
        elif name == "jax_jit":
            lines.append(f"backend {part['backend']}: jitted step {part['jitted_step_ms']} ms, jitted epoch "
                         f"{part['jitted_epoch_ms_per_update']} ms/update, un-jitted {part['unjitted_update_ms']} ms"
                         f" → un-jitted ÷ jitted step {part['unjitted/jitted_step']}×, ÷ jitted epoch "
                         f"{part['unjitted/jitted_epoch']}×")
        elif name == "conformance":
            lines.append(f"CORL golden traces ({part['precision']}), {part['steps']} steps per variant on "
                         f"{part['device']}, CPU-drawn randomness")
            lines += _table(part["algorithms"], ["verdict", "mode", "max_rel", "summary"])
        elif name == "gpu_tests":
            lines.append(f"`{part['command']}`: {part['summary']}")
            lines += part["tail"]
    return "\n".join(lines) + "\n"


def failed(report: Mapping[str, Any]) -> bool:
    """A part errored, or an equivalence that ran did not pass."""
    for name, part in report["parts"].items():
        if part["status"] in ("error", "timeout"):
            return True
        rows = part.get("algorithms", {}).values() if part["status"] == "ok" else []
        if any(r.get("verdict") == "error" for r in rows):
            return True
        if name in ("equivalence", "cross_device", "conformance") and any(r["verdict"] not in ("pass", "skipped") for r in rows):
            return True
        if name == "equivalence_rebrac" and part["status"] == "ok" and part["verdict"] != "pass":
            return True
        if name == "gpu_tests" and part["status"] == "ok" and not part["passed"]:
            return True
    return False


# ---------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", metavar="DIR",
                   help="output folder for gpu_check.json / gpu_check.md (default $OUT, else ./gpu_check_out)")
    p.add_argument("--quick", action="store_true", help="fewer steps everywhere (about a third of the time)")
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="cuda, cuda:N or cpu (default: cuda when available, else cpu with a 'no CUDA' note)")
    p.add_argument("--golden", default=None, metavar="DIR", help="folder holding the golden dataset.npz")
    p.add_argument("--algos", default=",".join(TORCH_ALGOS), metavar="A,B",
                   help=f"PyTorch algorithms (default {','.join(TORCH_ALGOS)})")
    p.add_argument("--parts", default=",".join(PARTS), metavar="P,Q", help=f"parts to run (default {','.join(PARTS)})")
    p.add_argument("--budget-s", type=float, default=450.0, metavar="S",
                   help="start no part after S seconds, stop every part by then (default 450)")
    p.add_argument("--run-part", default=None, choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--part-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, value, known in (("--algos", args.algos, TORCH_ALGOS), ("--parts", args.parts, PARTS)):
        unknown = [v for v in value.split(",") if v not in known]
        if unknown:
            p.error(f"{name}: unknown {', '.join(unknown)}; expected some of {', '.join(known)}")
    return args


def set_environment() -> None:
    """Before the first cuBLAS call and JAX backend start (inherited by every part's process): reproducible cuBLAS
    workspaces, and JAX allocating on demand instead of taking 75 % of the GPU up front. No XLA determinism flag:
    XLA aborts on a flag its version does not know, and the self-check measures determinism anyway."""
    from pogo_audit.core.harness import CUBLAS_WORKSPACE

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    args = parse_args(argv)
    set_environment()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.run_part:
        ctx = Context(args.device, args.quick, tuple(args.algos.split(",")),
                      load_data(args.golden), out, t0 + (args.part_seconds or args.budget_s),
                      out / f".part-{args.run_part}.json")
        return run_part_here(args.run_part, ctx)

    import torch

    notes = []
    cuda = torch.cuda.is_available()
    device = args.device or ("cuda" if cuda else "cpu")
    if not cuda:
        notes.append("no CUDA on this machine: the GPU parts run on the CPU (code paths only, no GPU numbers)")
    from multi_actor.config import ConfigError, check_device

    try:
        check_device("--device", device)
    except ConfigError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"device": device, "quick": args.quick, "data": load_data(args.golden).source,
                              "environment": environment(), "notes": notes, "parts": {}}
    deadline = t0 + args.budget_s
    for name in args.parts.split(","):
        print(f"[gpu_check] {name} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
        report["parts"][name] = run_part(name, args, device, deadline, out)
        report["seconds"] = time.perf_counter() - t0
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    report["seconds"] = time.perf_counter() - t0
    text = markdown(report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
