"""``pogo-audit matrix``: an audit grid — algorithms × seeds × actor-type sets × W2 methods × ``--set`` overrides —
run cell by cell through an executor, merged into one resumable results file.

Every cell is one equivalence audit (:func:`checks.equivalence.equivalence`) of a fully specified config, run in a
fresh worker process with one torch thread, so a cell's result does not depend on which executor ran it or on what
ran before it: serial (``--jobs 1``, still one process per cell), a local process pool (``--jobs N``), or Ray
(``--executor ray [--address ...]``, the optional ``pogo-audit[ray]`` extra). Each finished cell is written to the
results file at once (atomically); a re-run with the same file skips every cell already there, so an interrupted
matrix finishes only its missing cells.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pogo_audit.model.results import Note
from checks.selection import select_algorithms
from checks.workers import process_pool
from pogo_audit.runtime import threads
from pogo_audit.runtime.errors import InputError, UsageError
from pogo_audit.runtime.io import yaml_load
from pogo_audit.model.results import ERROR, CheckResult, RunResults

EXECUTORS = ("process", "ray")
GRID_KEYS = ("algos", "seeds", "actor_types", "w2_methods", "sets", "steps", "device")


@dataclass(frozen=True)
class Cell:
    """One audit of the grid: everything that decides its result."""

    algo: str
    seed: int
    actor_types: tuple[str, ...]
    w2_method: str | None
    sets: tuple[str, ...]
    steps: int
    #: torch device of both trainers (cpu, cuda, cuda:N)
    device: str = "cpu"

    @property
    def key(self) -> str:
        """A stable identity (the results file is keyed by it, so a resumed run recognises finished cells)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        parts = [self.algo, f"seed {self.seed}", ",".join(self.actor_types) or "default actors"]
        if self.w2_method:
            parts.append(f"w2 {self.w2_method}")
        parts.extend(self.sets)
        if self.device != "cpu":
            parts.append(self.device)
        return " · ".join(parts)


@dataclass
class Grid:
    """The axes of the grid (a YAML file with the keys of :data:`GRID_KEYS`, or the command's flags)."""

    algos: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    actor_types: list[list[str]] = field(default_factory=lambda: [[]])
    w2_methods: list[str | None] = field(default_factory=lambda: [None])
    sets: list[list[str]] = field(default_factory=lambda: [[]])
    steps: int = 100
    device: str = "cpu"

    def cells(self) -> list[Cell]:
        return [Cell(a, int(s), tuple(t), w, tuple(o), self.steps, self.device) for a, s, t, w, o in
                itertools.product(self.algos, self.seeds, self.actor_types, self.w2_methods, self.sets)]


def load_grid(path: str) -> Grid:
    """A grid from YAML; every unknown key or wrongly typed axis is an InputError naming it."""
    import yaml

    try:
        data = yaml_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"--grid: cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"--grid: {path}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = set(data) - set(GRID_KEYS)
    if unknown:
        raise InputError(f"--grid: {path}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(GRID_KEYS)}")
    if "algos" not in data:
        raise InputError(f"--grid: {path}: 'algos' is required")
    for key in ("algos", "seeds", "actor_types", "w2_methods", "sets"):
        if key in data and not isinstance(data[key], list):
            raise InputError(f"--grid: {path}: '{key}' must be a list")
    for key in ("actor_types", "sets"):
        for i, item in enumerate(data.get(key, [])):
            if not isinstance(item, list) or not all(isinstance(x, str) for x in item):
                raise InputError(f"--grid: {path}: '{key}[{i}]' must be a list of strings")
    if not isinstance(data.get("device", "cpu"), str):
        raise InputError(f"--grid: {path}: 'device' must be a string (cpu, cuda or cuda:N)")
    if not isinstance(data.get("steps", 100), int) or data.get("steps", 100) < 1:
        raise InputError(f"--grid: {path}: 'steps' must be a positive integer")
    return Grid(**data)


def cell_config(cell: Cell) -> Any:
    """The multi-actor config of a cell (a bad axis value raises the config's own error, naming the field)."""
    from multi_actor.config import build_config

    overrides = [*cell.sets, *([f"w2_method={cell.w2_method}"] if cell.w2_method else [])]
    return build_config(None, overrides, list(cell.actor_types) or None, algo=cell.algo, seed=cell.seed,
                        device=cell.device)


def validate(cells: list[Cell]) -> None:
    """Every cell's config builds before anything runs (a bad axis value is one usage error, exit 2)."""
    for cell in cells:
        cell_config(cell)


#: threads of one cell's audit (the cells of a grid are the parallelism)
CELL_THREADS = 1


def run_cell(cell: Cell, bundle_dir: str | None) -> dict[str, Any]:
    """One cell's equivalence result as a dict: in a worker of its own, with one thread whatever the executor, so a
    cell's result does not depend on ``--jobs`` (the audit then runs its trainers in that one process)."""
    from checks.equivalence import EquivalenceOptions, equivalence

    threads.pin(CELL_THREADS)
    try:
        options = EquivalenceOptions(steps=cell.steps, seed=cell.seed,
                                     bundle_dir=str(Path(bundle_dir) / cell.key) if bundle_dir else None)
        result = equivalence(cell.algo, cell_config(cell), options)
    except Exception as exc:  # noqa: BLE001 - one cell failing must not take the grid down
        result = CheckResult("equivalence", cell.algo, ERROR, summary=f"the cell raised {type(exc).__name__}: {exc}")
    result.subject = f"{cell.algo} [{cell.key}]"
    result.metrics["cell"] = {**asdict(cell), "key": cell.key, "label": cell.label}
    result.metrics.pop("history", None)
    return asdict(result)


def _ray_results(cells: list[Cell], bundle_dir: str | None, jobs: int, address: str | None
                 ) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray: Ray is not installed (pip install 'pogo-audit[ray]')") from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": jobs}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        pending = [remote.remote(c, bundle_dir) for c in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def run_matrix(cells: list[Cell], results_path: Path, jobs: int = 1, executor: str = "process",
               address: str | None = None, bundle_dir: str | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> list[CheckResult]:
    """Run the cells not yet in ``results_path``; each finished cell is saved at once. Returns every cell's result
    in grid order (finished earlier or now). ``jobs`` cells run at once, one thread each."""
    merged = RunResults.load(results_path) if results_path.exists() else RunResults(command="matrix")
    done = {r.metrics["cell"]["key"]: r for r in merged.checks if "cell" in r.metrics}
    wanted = {c.key for c in cells}
    todo = [c for c in cells if c.key not in done]
    total, finished = len(cells), len(wanted & set(done))
    if progress is not None:
        progress("matrix cells", finished, total)

    def record(raw: dict[str, Any]) -> None:
        nonlocal finished
        result = CheckResult(**raw)
        done[result.metrics["cell"]["key"]] = result
        merged.checks = list(done.values())
        merged.save(results_path)
        finished += 1
        if progress is not None:
            progress("matrix cells", finished, total)

    if todo:
        if executor == "ray":
            for raw in _ray_results(todo, bundle_dir, jobs, address):
                record(raw)
        else:
            with process_pool(jobs) as pool:
                futures = [pool.submit(run_cell, c, bundle_dir) for c in todo]
                try:
                    for future in concurrent.futures.as_completed(futures):
                        record(future.result())
                except BaseException:  # an interrupt stops now; finished cells are already in the file
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    return [done[c.key] for c in cells]


def _grid(args: Any) -> Grid:

    if args.grid:
        return load_grid(args.grid)
    algos = select_algorithms(args.algo, "--algo")
    types = [[t.strip() for t in group.split(",") if t.strip()] for group in args.actor_types.split(";")] \
        if args.actor_types else [[]]
    methods = [m.strip() for m in args.w2_method.split(",")] if args.w2_method else [None]
    return Grid(algos=algos, seeds=args.seeds, actor_types=types, w2_methods=methods, sets=[list(args.set)],
                steps=args.steps, device=args.device or "cpu")


def run_command(args: Any, progress: Callable[[str, int, int], None]) -> Iterator[CheckResult]:
    """``pogo-audit matrix``: the grid's cells (validated first), run through the executor, in grid order."""
    cells = _grid(args).cells()
    if not cells:
        raise UsageError("matrix: the grid has no cells (an empty axis)")
    validate(cells)
    budget, jobs = threads.budget(), args.jobs
    if args.executor == "process" and jobs * CELL_THREADS > budget:
        jobs = max(1, budget // CELL_THREADS)
        yield Note(f"--jobs {args.jobs}: {jobs} cell(s) at a time, {CELL_THREADS} thread each (the thread budget is "
                   f"{budget}; --threads N to change it)")
    yield from run_matrix(cells, Path(args.out), jobs, args.executor, args.address, args.bundle_dir, progress)
