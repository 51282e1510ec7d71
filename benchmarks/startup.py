"""Where ``pogo-audit equivalence``'s fixed cost before its first step goes, phase by phase, in a fresh process.

Runs what the command runs before step 1, in its order, timing each phase: the interpreter and the CLI's imports,
torch, the dataset (Minari → CORL transitions), the candidate's construction (its first optimizer imports
``torch._dynamo``), and the reference worker (fork server started at the beginning, as the command does; the wait
is what remains of its start once this process is ready). Prints one JSON object.

Run: ``.venv/bin/python -m benchmarks.startup [--algo iql] [--steps 300]`` (``--steps`` decides, as in the command,
whether the reference runs in a worker).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def since_start() -> float:
    """Seconds since this process started (the interpreter's own start-up included)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def measure(algo: str, steps: int) -> dict[str, float]:
    out: dict[str, float] = {"interpreter": since_start()}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        out[name] = now - mark
        mark = now

    from pogo_audit.runtime import threads

    threads.pin(threads.budget())
    import pogo_audit.cli.main  # noqa: F401 - what the console script imports

    phase("cli imports")
    from checks.equivalence import EquivalenceOptions
    from checks.equivalence.command import warm_up_workers

    options = EquivalenceOptions(steps=steps)
    warm_up_workers(options, "cpu")
    phase("fork server started")
    from multi_actor.config import build_config

    config = build_config(None, [], algo=algo)  # imports the reference module: torch
    phase("torch and trainer imports")
    from multi_actor.algorithms import get_algorithm
    from multi_actor.loop import prepare_data

    data = prepare_data(config, get_algorithm(algo))
    phase("dataset")
    from checks.equivalence.worker import process_plan, reference_pair
    from multi_actor.trainer import multi_actor_factory, reference_factory

    plan = process_plan(options, reference_factory, config, data.spec, "cpu", algo, threads.budget())
    with threads.using(plan.threads):
        pair = reference_pair(options, reference_factory, config, data.spec, "cpu", plan)
        multi_actor_factory(config, data.spec, options.seed)
        phase("candidate construction")
        pair.built()
        phase("reference ready (wait)")
        pair.close()
    out["total before step 1"] = out["interpreter"] + sum(v for k, v in out.items() if k != "interpreter")
    out["workers"] = plan.workers
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="iql")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps({k: round(v, 3) for k, v in measure(args.algo, args.steps).items()}))


if __name__ == "__main__":
    main()
