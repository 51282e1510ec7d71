"""``checks.jax_profile.scan``: the static scan classifies host syncs by where they run, follows jit into the
reference ReBRAC's update, and treats values bound by ``partial`` as static."""

from __future__ import annotations

import importlib.util
import textwrap

from checks.jax_profile.scan import scan_sources

SNIPPET = '''
import jax
import jax.numpy as jnp
import numpy as np
from functools import partial


@jax.jit
def branchy(x):
    if x.sum() > 0:
        x = x * 2
    return x


@partial(jax.jit, static_argnames="mode")
def static_branch(x, mode):
    if mode == "double":
        return x * 2
    return x


def step(x):
    x = static_branch(branchy(x), mode="double")
    print(x)
    host = np.asarray(x)
    return x.item() if x.size == 1 else host


def epoch(x):
    losses = []
    for _ in range(3):
        x = static_branch(x, mode="double")
        losses.append(float(x.sum()))
    return jax.device_get(x), losses


def never_called(x):
    return float(x)
'''


def _load_snippet(tmp_path):
    path = tmp_path / "snippet_loop.py"
    path.write_text(textwrap.dedent(SNIPPET))
    spec = importlib.util.spec_from_file_location("snippet_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_static_scan_classifies_syncs(tmp_path):
    mod = _load_snippet(tmp_path)
    scan = scan_sources({"step": mod.step, "epoch": mod.epoch})
    found = {(s["function"], s["kind"], s["inside"]) for s in scan.syncs}
    assert found == {
        ("branchy", "if on array", "jit"),
        ("step", "print()", "step"),
        ("step", "np.asarray()", "step"),
        ("step", ".item()", "step"),
        ("epoch", "float()", "step"),
        ("epoch", "jax.device_get()", "epoch"),
    }
    assert scan.reaches_jit == {"step": True, "epoch": True}
    assert not any(s["function"] in ("static_branch", "never_called") for s in scan.syncs)
    lines = {s["kind"]: s["line"] for s in scan.syncs}
    source = (tmp_path / "snippet_loop.py").read_text().splitlines()
    assert "float(x.sum())" in source[lines["float()"] - 1]


def test_static_scan_of_reference_rebrac_follows_jit_into_the_update(small_rebrac):
    scan = scan_sources(small_rebrac.scan_roots)
    assert scan.reaches_jit == {"step": True, "epoch": True}
    assert [f.replace("\\", "/").endswith("reference_algos/jax/rebrac.py") for f in scan.files] == [True]
    # q_lambda's `if normalize_q:` is on a static config value (cfg is bound by partial), not a traced one
    assert [(s["function"], s["inside"]) for s in scan.syncs] == [("train_step", "step")]
