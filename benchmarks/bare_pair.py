"""The bare pair an audit is measured against: the reference and the multi-actor trainer trained one after the
other for ``--steps`` steps on the embedded dataset (the audit's data preparation and batch sampling), with
``--threads`` torch threads — no comparison, no worker, no oracle. Prints the seconds of the training alone.

Run: ``.venv/bin/python -m benchmarks.bare_pair --algo iql --steps 1000 --threads 1``.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="iql")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from pogo_audit.runtime import threads

    threads.pin(args.threads)
    from multi_actor.algorithms import get_algorithm
    from multi_actor.config import build_config
    from multi_actor.loop import prepare_data
    from multi_actor.trainer import multi_actor_factory, reference_factory
    from pogo_audit.runtime.data import ReplayBuffer
    from pogo_audit.runtime.seeding import BUFFER_OFFSET, derived_seed

    config = build_config(None, [], algo=args.algo)
    algorithm = get_algorithm(args.algo)
    data = prepare_data(config, algorithm)
    batch_size = algorithm.batch_size(algorithm.base_config(config.base))
    start = time.perf_counter()
    for factory in (reference_factory, multi_actor_factory):
        trainer = factory(config, data.spec, 0)
        buffer = ReplayBuffer(data.processed, derived_seed(0, BUFFER_OFFSET))
        for _ in range(args.steps):
            trainer.step(buffer.sample(batch_size))
    print(f"{time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
