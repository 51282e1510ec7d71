"""Benchmark helpers: every group has one baseline; the summary reports ratios of mean times measured in this run.

Means, not medians: a TD3+BC step alternates between steps with and without an actor update (``policy_freq`` 2), so
its median jumps between the two kinds while the mean is the cost per step that training pays.

Run: ``.venv/bin/python -m pytest benchmarks --benchmark-enable`` (timings are noisy on 2 cores; only ratios of
benchmarks measured side by side in the same run are meaningful).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

_DIR = Path(tempfile.mkdtemp(prefix="pogo-audit-bench-"))
for _var in ("MINARI_DATASETS_PATH", "WANDB_DIR", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
    os.environ.setdefault(_var, str(_DIR / _var.lower()))
os.environ.setdefault("WANDB_MODE", "disabled")

RATIOS_FILE = Path(".benchmarks") / "ratios.json"


@pytest.fixture(scope="session")
def offline_data():
    """A fixed synthetic Hopper-shaped dataset (the step time does not depend on the data's content)."""
    from benchmarks.gpu_check import synthetic_dataset

    return synthetic_dataset()


def _flop_ratios(base, benches) -> dict[str, float]:
    """Each row's matmul FLOPs (per step, or per update) over the baseline's, for rows that recorded them."""
    for key in ("flops_per_step", "flops_per_update"):
        if base.extra_info.get(key):
            return {b.extra_info.get("label", b.name): b.extra_info[key] / base.extra_info[key]
                    for b in benches if b.extra_info.get(key)}
    return {}


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or "", []).append(bench)
    out = {}
    tr = terminalreporter
    tr.write_sep("-", "ratios to each group's baseline (mean step time, same run)")
    for group, benches in sorted(groups.items()):
        for bench in benches:
            if bench.extra_info.get("ratios"):  # measured within one benchmark (rows taking turns)
                out[group] = {"ratios": bench.extra_info["ratios"]}
                tr.write_line(f"{group}: " + ", ".join(f"{k} {v:.2f}x" for k, v in bench.extra_info["ratios"].items()))
        base = [b for b in benches if b.extra_info.get("baseline")]
        if len(base) != 1:
            continue
        ref = base[0].stats.mean
        rows = {b.extra_info.get("label", b.name): b.stats.mean / ref for b in benches}
        out[group] = {"baseline": base[0].extra_info.get("label", base[0].name), "baseline_mean_s": ref,
                      "ratios": rows}
        tr.write_line(f"{group}: " + ", ".join(f"{k} {v:.2f}x" for k, v in rows.items()))
        flops = _flop_ratios(base[0], benches)
        if flops:
            out[group]["matmul_flop_ratios"] = flops
            tr.write_line(f"{group} (matmul FLOPs, the floor): " + ", ".join(f"{k} {v:.2f}x" for k, v in flops.items()))
    RATIOS_FILE.parent.mkdir(exist_ok=True)
    RATIOS_FILE.write_text(json.dumps(out, indent=2) + "\n")
