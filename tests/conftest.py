"""Test isolation: every tool that caches or logs writes into a per-session temporary directory, never $HOME."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="pogo-audit-tests-"))
for _var, _sub in (
    ("MINARI_DATASETS_PATH", "minari"),
    ("WANDB_DIR", "wandb"),
    ("WANDB_CACHE_DIR", "wandb-cache"),
    ("WANDB_CONFIG_DIR", "wandb-config"),
    ("WANDB_DATA_DIR", "wandb-data"),
    ("XDG_CACHE_HOME", "xdg-cache"),
    ("MPLCONFIGDIR", "mpl"),
):
    os.environ[_var] = str(_SESSION_DIR / _sub)
    (_SESSION_DIR / _sub).mkdir(parents=True, exist_ok=True)
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("MUJOCO_GL", "egl")

# one thread budget for the suite: the xdist workers share the machine's cores (pinned before torch is imported)
from pogo_audit.runtime import threads  # noqa: E402

threads.pin(threads.share(threads.budget(), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(scope="session")
def embedded_dataset():
    """The embedded default Minari dataset, created once per test session in the session's MINARI_DATASETS_PATH."""
    from pogo_audit.runtime import data

    data.make_dataset()
    return data.DEFAULT_DATASET_ID


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The full-length (``slow``) checks run first: the suite is one run on two workers fed in collection order, and
    starting the longest tests first keeps one worker from finishing minutes before the other."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
