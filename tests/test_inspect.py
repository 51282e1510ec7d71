"""``pogo_audit.core.inspect``: mismatch summaries, top-K, history, plots, rendering and input errors of bundles."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from pogo_audit.core.bundle import Bundle, write_bundle
from pogo_audit.core.compare import DEFAULT_ATOL, DEFAULT_RTOL
from pogo_audit.runtime.errors import InputError
from pogo_audit.cli.inspect_view import render_inspection
from pogo_audit.core.inspect import inspect_bundle, top_entries

W = "critic/qf/q1.net.0.weight"
B = "critic/qf/q1.net.0.bias"
A = "actor0/actor/net.net.0.weight"
LOSS = "critic/q_loss"
RTOL, ATOL = 1e-5, 1e-6
# (index, candidate - reference) of the three entries of W that differ after step 2
W_DELTAS = {(2, 3): -5e-2, (0, 1): 1e-3, (3, 4): 1e-7}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {W: rng.standard_normal((4, 5)).astype(np.float32), B: rng.standard_normal(4).astype(np.float32),
            A: rng.standard_normal((3, 4)).astype(np.float32)}


def make_bundle(path, *, before_differs: bool = False, observable: str = LOSS, history: bool = True,
                first_divergence_tol: bool = True):
    """A 2-step run: W differs in 3 known entries after step 2, one bias grad differs, q_loss diverges at step 2."""
    rng = np.random.default_rng(0)
    before = _params(rng)
    after_ref = {k: (v - 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in before.items()}
    after_cand = {k: v.copy() for k, v in after_ref.items()}
    for idx, delta in W_DELTAS.items():
        after_cand[W][idx] = np.float32(after_ref[W][idx] + delta)
    grads_ref = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in before.items() if k != A}
    grads_cand = {k: v.copy() for k, v in grads_ref.items()}
    grads_cand[B][1] += np.float32(2e-3)
    before_cand = {k: v.copy() for k, v in before.items()}
    if before_differs:
        before_cand[A][0, 0] += np.float32(0.5)

    arrays: dict[str, np.ndarray] = {"batch/0": rng.standard_normal((8, 3)).astype(np.float32)}
    for side, b, a, g in (("reference", before, after_ref, grads_ref), ("candidate", before_cand, after_cand,
                                                                        grads_cand)):
        arrays.update({f"before/{side}/{k}": v for k, v in b.items()})
        arrays.update({f"after/{side}/{k}": v for k, v in a.items()})
        arrays.update({f"grads/{side}/{k}": v for k, v in g.items()})
    if history:
        arrays["history/steps"] = np.array([0, 1, 2], dtype=np.int64)
        arrays[f"history/reference/{LOSS}"] = np.array([1.5, 1.25, 1.0])
        arrays[f"history/candidate/{LOSS}"] = np.array([1.5, 1.25, 1.004])
        arrays["history/reference/actor0/loss"] = np.array([np.nan, -0.5, -0.75])
        arrays["history/candidate/actor0/loss"] = np.array([np.nan, -0.5, -0.75])
        wsum_ref = np.array([3.0, 2.5, float(after_ref[W].astype(np.float64).sum())])
        wsum_cand = wsum_ref.copy()
        wsum_cand[1] += 1e-9
        wsum_cand[2] = float(after_cand[W].astype(np.float64).sum())
        arrays[f"history/reference/params/{W}/sum"] = wsum_ref
        arrays[f"history/candidate/params/{W}/sum"] = wsum_cand
    fd = {"step": 2, "observable": observable, "max_abs": 4e-3, "max_rel": 4e-3, "index": None,
          "expected": 1.0, "actual": 1.004}
    if first_divergence_tol:
        fd.update(rtol=RTOL, atol=ATOL)
    header = {
        "algo": "iql", "step": 2, "first_divergence": fd,
        "observables": {"reference": {LOSS: 1.0, f"params/{W}": "aaaa"},
                        "candidate": {LOSS: 1.004, f"params/{W}": "bbbb"}},
        "divergent_observables": [observable, LOSS] if observable != LOSS else [LOSS, f"params/{W}"],
        "config": {"algo": "iql"}, "environment": {"numpy": np.__version__},
    }
    write_bundle(path, Bundle(header, arrays))
    return path, after_ref, after_cand, grads_ref, grads_cand


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "div.npz")


def test_mismatch_summary_is_exact(bundle):
    path, after_ref, after_cand, grads_ref, grads_cand = bundle
    ins = inspect_bundle(path)
    assert (ins.algo, ins.step, ins.observable, ins.rtol, ins.atol) == ("iql", 2, LOSS, RTOL, ATOL)
    assert [t.name for t in ins.tensors] == [f"after/{W}", f"grads/{B}"]
    assert ins.n_compared == 3 + 2
    w = ins.tensors[0].mismatch
    ref64, cand64 = after_ref[W].astype(np.float64), after_cand[W].astype(np.float64)
    diff = np.abs(cand64 - ref64)
    tol = ATOL + RTOL * np.abs(ref64)
    assert w.n_total == 20
    assert w.n_not_bitwise == 3
    assert w.n_mismatched == int((diff > tol).sum()) == 2  # the 1e-7 change is inside tolerance
    assert w.max_abs_index == (2, 3)
    assert w.max_abs == diff[2, 3]
    rel = diff / np.abs(ref64)
    assert w.max_rel_index == np.unravel_index(int(np.argmax(rel)), rel.shape)
    assert w.max_rel == rel.max()
    assert (w.rtol, w.atol) == (RTOL, ATOL)
    g = ins.tensors[1].mismatch
    assert (g.n_total, g.n_not_bitwise, g.max_abs_index) == (4, 1, (1,))
    assert g.max_abs == abs(float(grads_cand[B][1]) - float(grads_ref[B][1]))
    assert ins.before == [] and not ins.diverged_earlier
    assert ins.changed_params == {"reference": (3, 3), "candidate": (3, 3)}
    assert ins.observables[LOSS] == (1.0, 1.004)


def test_top_k_order_and_values(tmp_path):
    path, after_ref, after_cand, *_ = make_bundle(tmp_path / "div.npz")
    top = inspect_bundle(path, top_k=2).tensors[0].top
    assert [e.index for e in top] == [(2, 3), (0, 1)]
    for e in top:
        r, c = float(after_ref[W][e.index]), float(after_cand[W][e.index])
        assert (e.reference, e.candidate, e.abs_diff) == (r, c, abs(c - r))
        assert e.rel_diff == abs(c - r) / abs(r)
    top = inspect_bundle(path, top_k=10).tensors[0].top
    assert [e.index for e in top] == [(2, 3), (0, 1), (3, 4)]  # bitwise-equal entries are never listed


def testtop_entries_match_a_full_sort_with_ties_and_nan():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((30, 40))
    cand = ref.copy()
    picks = rng.choice(ref.size, 200, replace=False)
    cand.flat[picks] += np.round(rng.standard_normal(200), 1)  # many ties
    cand.flat[picks[0]] = np.nan
    top = top_entries(ref, cand, 25)
    diff = np.abs(cand - ref).ravel()
    diff[np.isnan(diff)] = np.inf
    diff[cand.ravel() == ref.ravel()] = 0.0
    expected = sorted(np.flatnonzero(diff), key=lambda i: (-diff[i], i))[:25]
    assert [np.ravel_multi_index(e.index, ref.shape) for e in top] == expected
    assert top[0].abs_diff == np.inf and np.isnan(top[0].candidate)


def test_history_first_diff_step(bundle):
    ins = inspect_bundle(bundle[0])
    h = ins.history
    assert (h.observable, h.key) == (LOSS, LOSS)
    assert h.steps.tolist() == [0, 1, 2]
    assert h.abs_diff[:2].tolist() == [0.0, 0.0]
    assert h.abs_diff[2] == pytest.approx(4e-3)
    assert h.first_diff_step == 2


@pytest.mark.parametrize("observable", [f"params/{W}", f"params/{W}/digest"])
def test_param_digest_observable_maps_to_its_sum_history(tmp_path, observable):
    path, *_ = make_bundle(tmp_path / "div.npz", observable=observable)
    h = inspect_bundle(path).history
    assert (h.observable, h.key) == (observable, f"params/{W}/sum")
    assert h.first_diff_step == 1  # the 1e-9 drift of the sum at step 1, inside tolerance


def test_tolerance_falls_back_to_defaults(tmp_path):
    path, *_ = make_bundle(tmp_path / "div.npz", first_divergence_tol=False)
    ins = inspect_bundle(path)
    assert (ins.rtol, ins.atol) == (DEFAULT_RTOL, DEFAULT_ATOL)
    assert ins.tensors[0].mismatch.atol == DEFAULT_ATOL


def test_before_already_different_is_reported(tmp_path):
    path, *_ = make_bundle(tmp_path / "div.npz", before_differs=True)
    ins = inspect_bundle(path)
    assert ins.diverged_earlier
    assert [t.name for t in ins.before] == [f"before/{A}"]
    assert ins.before[0].mismatch.max_abs_index == (0, 0)
    console = Console(record=True, width=120)
    for r in render_inspection(ins):
        console.print(r)
    assert "already differ" in console.export_text()


def test_plots_are_valid_pngs(bundle, tmp_path):
    import matplotlib.image

    ins = inspect_bundle(bundle[0], plots_dir=tmp_path / "plots")
    assert set(ins.plots) == {"diff_hist", "heatmap", "history"}
    for name, p in ins.plots.items():
        assert p == tmp_path / "plots" / f"{name}.png"
        data = p.read_bytes()
        assert data[:8] == PNG_SIGNATURE
        assert len(data) > 10_000
        img = matplotlib.image.imread(p)
        assert img.shape[0] >= 400 and img.shape[1] >= 700 and img.shape[2] in (3, 4)
        assert float(img[..., :3].std()) > 0.05  # not blank
    assert not [f for f in (tmp_path / "plots").iterdir() if f.suffix != ".png"]  # no temporary leftovers


def test_no_history_means_no_history_plot(tmp_path):
    path, *_ = make_bundle(tmp_path / "div.npz", history=False)
    ins = inspect_bundle(path, plots_dir=tmp_path / "plots")
    assert ins.history is None
    assert set(ins.plots) == {"diff_hist", "heatmap"}


def test_render_inspection(bundle, tmp_path):
    ins = inspect_bundle(bundle[0], top_k=3, plots_dir=tmp_path / "plots")
    console = Console(record=True, width=120)
    for r in render_inspection(ins):
        console.print(r)
    text = console.export_text()
    for needle in ("iql", LOSS, f"after/{W}", f"grads/{B}", "2/20", "@ (2, 3)", "rtol=1e-05", "atol=1e-06",
                   f"top 3 entries of after/{W}", "first step with |diff| > 0: 2", "divergence",
                   "bitwise equal", "diff_hist.png", "heatmap.png", "history.png", str(bundle[0].name)):
        assert needle in text, needle


@pytest.mark.parametrize("kind", ["truncated", "random", "no_header", "pickle", "missing"])
def test_bad_files_raise_input_error(tmp_path, kind):
    path = tmp_path / f"bad-{kind}.npz"
    if kind == "truncated":
        make_bundle(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "no_header":
        np.savez(path, a=np.arange(3))
    elif kind == "pickle":
        np.savez(path, __header__=np.frombuffer(b"{}", dtype=np.uint8), obj=np.array([{"x": 1}], dtype=object))
    with pytest.raises(InputError) as exc:
        inspect_bundle(path)
    msg = str(exc.value)
    assert path.name in msg
    assert "\n" not in msg
    if kind == "pickle":
        assert "pickle" in msg
    if kind == "random":
        assert "not a numpy .npz archive" in msg and "pickle" not in msg


def test_nan_scalar_nd_and_shape_mismatch_tensors(tmp_path):
    arrays = {
        "after/reference/a": np.array([1.0, np.nan, 3.0]), "after/candidate/a": np.array([1.0, 2.0, np.nan]),
        "after/reference/s": np.array(1.0), "after/candidate/s": np.array(2.5),
        "after/reference/t": np.ones((2, 3, 4)), "after/candidate/t": np.ones((2, 3, 4)),
        "after/reference/shape": np.ones((2, 3)), "after/candidate/shape": np.ones((3, 2)),
        "after/reference/only": np.ones(3),
        "after/reference/u": np.zeros(2), "after/candidate/u": np.array([0.0, 1e-3]),
    }
    arrays["after/candidate/t"][1, 2, 3] = 1.5
    fd = {"step": 1, "observable": "rng/torch", "max_abs": 1.0, "max_rel": 1.0, "rtol": 0.0, "atol": 0.0}
    path = write_bundle(tmp_path / "edge.npz", Bundle({"algo": "cql", "step": 1, "first_divergence": fd}, arrays))
    ins = inspect_bundle(path, plots_dir=tmp_path / "plots")
    by_name = {t.name: t for t in ins.tensors}
    assert [t.name for t in ins.tensors][:3] == ["after/shape", "after/only", "after/a"]  # inf first, then by count
    assert by_name["after/only"].mismatch.shape_mismatch == "absent on candidate side"
    assert by_name["after/a"].mismatch.n_mismatched == 2
    assert [e.index for e in by_name["after/a"].top] == [(1,), (2,)]
    assert [(e.index, e.abs_diff) for e in by_name["after/s"].top] == [((), 1.5)]
    assert [(e.index, e.abs_diff) for e in by_name["after/t"].top] == [((1, 2, 3), 0.5)]
    assert ins.history is None
    assert set(ins.plots) == {"diff_hist", "heatmap"}
    console = Console(record=True, width=120)
    for r in render_inspection(ins):
        console.print(r)
    text = console.export_text()
    assert "no per-step history for rng/torch" in text
    assert "absent on candidate side" in text
    assert "shown only for the 3 worst of 4" in text
