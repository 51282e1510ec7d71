"""The checks: each returns results in the common results model; none prints."""

from pathlib import Path

#: the checks' own code: a crash or a located line is never reported inside it (it is the harness, not the trainer)
HARNESS_DIRS = (Path(__file__).resolve().parent,)
