"""Inspect a first-divergence bundle: which tensors differ, where, by how much, and since when.

:func:`inspect_bundle` reads a bundle (never unpickling) and returns an :class:`Inspection` (data only);
:func:`pogo_audit.cli.inspect_view.render_inspection` turns it into rich renderables. With ``plots_dir`` three
PNGs are written atomically:
``diff_hist.png`` (candidate − reference of the worst tensor), ``heatmap.png`` (|diff| of the worst matrix) and
``history.png`` (per-step |diff| of the diverged observable).
"""

from __future__ import annotations

import io
import math
import os
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pogo_audit.core.bundle import SIDES, Bundle, read_bundle
from pogo_audit.core.compare import DEFAULT_ATOL, DEFAULT_RTOL, Mismatch, compare_arrays
from pogo_audit.runtime.errors import InputError
from pogo_audit.runtime.io import atomic_write_bytes

REFERENCE, CANDIDATE = SIDES


def index_text(index: tuple[int, ...]) -> str:
    """``(i, j)`` of a tensor index."""
    return "(" + ", ".join(str(i) for i in index) + ")"
COMPARED_SECTIONS = ("after", "grads")
ALSO_SHOWN = 8
TOPK_TABLES = 3
HISTORY_BEFORE = 3
HISTORY_AFTER = 5

_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_DIGEST_PREFIXES = ("params", "param", "params_digest", "param_digest", "digest", "hash", "after")
_DIGEST_SUFFIXES = ("digest", "hash", "sha", "sha256", "crc", "sum")


@dataclass(frozen=True)
class TopEntry:
    """One of the worst elements of a tensor pair."""

    index: tuple[int, ...]
    reference: float
    candidate: float
    abs_diff: float
    rel_diff: float


@dataclass(frozen=True)
class TensorDiff:
    """A tensor pair (``<section>/reference/<param>`` vs ``<section>/candidate/<param>``) that is not bitwise equal."""

    section: str
    param: str
    shape: tuple[int, ...]
    mismatch: Mismatch
    top: list[TopEntry] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.section}/{self.param}"


@dataclass(frozen=True)
class History:
    """Per-step values of one observable for both trainers (NaN where absent)."""

    observable: str
    key: str
    steps: np.ndarray
    reference: np.ndarray
    candidate: np.ndarray
    abs_diff: np.ndarray
    first_diff_step: int | None


@dataclass
class Inspection:
    """Everything :func:`inspect_bundle` found; rendering and plotting only read it."""

    path: Path
    algo: str
    step: int
    observable: str
    first_divergence: dict[str, Any]
    rtol: float
    atol: float
    divergent_observables: list[str]
    observables: dict[str, tuple[Any, Any]]
    tensors: list[TensorDiff]
    n_compared: int
    before: list[TensorDiff]
    n_before_compared: int
    changed_params: dict[str, tuple[int, int]]
    history: History | None
    top_k: int
    plots: dict[str, Path] = field(default_factory=dict)

    @property
    def worst(self) -> TensorDiff | None:
        return self.tensors[0] if self.tensors else None

    @property
    def diverged_earlier(self) -> bool:
        """True when the parameters already differed before the step: the real divergence is earlier."""
        return bool(self.before)


# ------------------------------------------------------------------------------------------------ analysis


def _load(path: Path) -> Bundle:
    if path.is_file():
        with path.open("rb") as fh:
            head = fh.read(4)
        if head not in _ZIP_SIGNATURES:
            raise InputError(f"{path}: not a numpy .npz archive (bad file signature); expected a divergence bundle")
    try:
        bundle = read_bundle(path)
    except InputError:
        raise
    except (AttributeError, TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: corrupt divergence bundle ({type(exc).__name__}: {exc})") from None
    bad = sorted(k for k, v in bundle.arrays.items() if not isinstance(v, np.ndarray))
    if bad:
        raise InputError(f"{path}: corrupt divergence bundle (member {bad[0]!r} is not a numpy array)")
    if not isinstance(bundle.header.get("first_divergence"), dict):
        raise InputError(f"{path}: corrupt bundle header (first_divergence is not an object)")
    try:
        int(bundle.header["step"])
    except (TypeError, ValueError):
        raise InputError(f"{path}: corrupt bundle header (step {bundle.header['step']!r} is not an integer)") from None
    return bundle


def _tolerance(fd: dict[str, Any], key: str, default: float) -> float:
    try:
        value = float(fd.get(key))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) and value >= 0 else default


def _diffs(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """float64 views plus |diff| and relative diff with :func:`compare_arrays` semantics (NaN == NaN, NaN → inf)."""
    e = np.asarray(ref).astype(np.float64, copy=False)
    a = np.asarray(cand).astype(np.float64, copy=False)
    exact = (e == a) | (np.isnan(e) & np.isnan(a))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.where(exact, 0.0, np.abs(a - e))
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = np.where(exact, 0.0, diff / np.abs(e))
        rel = np.where(np.isnan(rel), np.inf, rel)
    return e, a, diff, rel


def top_entries(ref: np.ndarray, cand: np.ndarray, k: int) -> list[TopEntry]:
    """The ``k`` elements with the largest |diff| (ties by flat index), bitwise-equal elements excluded."""
    e, a, diff, rel = _diffs(ref, cand)
    flat = diff.ravel()
    k = min(k, int(np.count_nonzero(flat)))
    if k <= 0:
        return []
    part = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    order = part[np.lexsort((part, -flat[part]))]
    if diff.ndim == 0:
        return [TopEntry((), float(e), float(a), float(diff), float(rel))]
    idx = np.unravel_index(order, diff.shape)
    rows = zip(np.stack(idx, axis=-1).tolist(), e[idx].tolist(), a[idx].tolist(), diff[idx].tolist(),
               rel[idx].tolist())
    return [TopEntry(tuple(i), r, c, d, q) for i, r, c, d, q in rows]


def _missing(side: str, other: np.ndarray, rtol: float, atol: float) -> Mismatch:
    n = int(np.asarray(other).size)
    return Mismatch(n, n, n, float("inf"), (), float("inf"), (), rtol, atol, shape_mismatch=f"absent on {side} side")


def _compare_section(bundle: Bundle, section: str, rtol: float, atol: float,
                     top_k: int) -> tuple[list[TensorDiff], int]:
    ref = bundle.section(f"{section}/{REFERENCE}")
    cand = bundle.section(f"{section}/{CANDIDATE}")
    out: list[TensorDiff] = []
    # the reference defines what is compared: candidate-only tensors (extra actors actor<i>/...) are not its business
    for param in sorted(ref):
        if param not in cand:
            out.append(TensorDiff(section, param, tuple(ref[param].shape), _missing(CANDIDATE, ref[param], rtol, atol)))
            continue
        m = compare_arrays(ref[param], cand[param], rtol, atol)
        if m.bitwise_equal:
            continue
        top = top_entries(ref[param], cand[param], top_k) if m.shape_mismatch is None else []
        out.append(TensorDiff(section, param, tuple(ref[param].shape), m, top))
    return out, len(ref)


def _sort_worst_first(diffs: list[TensorDiff]) -> list[TensorDiff]:
    return sorted(diffs, key=lambda t: (-t.mismatch.max_abs, -t.mismatch.n_mismatched, t.name))


def _changed_params(bundle: Bundle) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for side in SIDES:
        before = bundle.section(f"before/{side}")
        after = bundle.section(f"after/{side}")
        common = sorted(set(before) & set(after))
        changed = sum(1 for p in common if not compare_arrays(before[p], after[p]).bitwise_equal)
        out[side] = (changed, len(common))
    return out


def _digest_history_key(observable: str, keys: set[str]) -> str | None:
    """Map an observable (possibly a parameter digest) to its ``history/<side>/`` key."""
    parts = observable.split("/")
    candidates = [observable, f"{observable}/sum"]
    if len(parts) > 1 and parts[0] in _DIGEST_PREFIXES:
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] in _DIGEST_SUFFIXES:
        parts = parts[:-1]
    candidates.append(f"params/{'/'.join(parts)}/sum")
    for c in candidates:
        if c in keys:
            return c
    prefixed = sorted(k for k in keys if k.startswith(observable + "/"))
    return prefixed[0] if prefixed else None


def _history(bundle: Bundle, names: list[str], path: Path) -> History | None:
    steps = bundle.arrays.get("history/steps")
    if steps is None or steps.ndim != 1:
        return None
    ref = bundle.section(f"history/{REFERENCE}")
    cand = bundle.section(f"history/{CANDIDATE}")
    keys = {k for k in set(ref) | set(cand) if k != "steps"}
    for name in names:
        key = _digest_history_key(name, keys)
        if key is None:
            continue
        nan = np.full(steps.shape, np.nan)
        r = np.asarray(ref.get(key, nan), dtype=np.float64)
        c = np.asarray(cand.get(key, nan), dtype=np.float64)
        if r.shape != steps.shape or c.shape != steps.shape:
            raise InputError(f"{path}: history/{key} has shape {r.shape}/{c.shape}, "
                             f"expected {steps.shape}")
        both_nan = np.isnan(r) & np.isnan(c)
        with np.errstate(invalid="ignore"):
            d = np.where(r == c, 0.0, np.abs(c - r))
        d = np.where(both_nan, np.nan, np.where(np.isnan(d), np.inf, d))
        hit = np.flatnonzero(d > 0)
        first = int(steps[hit[0]]) if hit.size else None
        return History(name, key, steps.astype(np.int64), r, c, d, first)
    return None


def inspect_bundle(path: str | os.PathLike, top_k: int = 10, plots_dir: str | os.PathLike | None = None) -> Inspection:
    """Analyse the bundle at ``path``; write ``diff_hist.png``, ``heatmap.png``, ``history.png`` to ``plots_dir``.

    Raises :class:`InputError` (one line naming the file) for a missing, corrupt or non-bundle file.
    """
    path = Path(path)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    bundle = _load(path)
    header = bundle.header
    fd = header["first_divergence"]
    rtol = _tolerance(fd, "rtol", DEFAULT_RTOL)
    atol = _tolerance(fd, "atol", DEFAULT_ATOL)
    observable = str(fd.get("observable", ""))

    tensors: list[TensorDiff] = []
    n_compared = 0
    for section in COMPARED_SECTIONS:
        diffs, n = _compare_section(bundle, section, rtol, atol, top_k)
        tensors += diffs
        n_compared += n
    before, n_before = _compare_section(bundle, "before", rtol, atol, top_k)

    raw_divergent = header.get("divergent_observables")
    divergent = [str(o) for o in raw_divergent] if isinstance(raw_divergent, list) else []
    obs = header.get("observables") if isinstance(header.get("observables"), dict) else {}
    ref_obs = obs.get(REFERENCE) if isinstance(obs.get(REFERENCE), dict) else {}
    cand_obs = obs.get(CANDIDATE) if isinstance(obs.get(CANDIDATE), dict) else {}
    shown = list(dict.fromkeys([observable, *divergent]))
    observables = {o: (ref_obs.get(o), cand_obs.get(o)) for o in shown if o in ref_obs or o in cand_obs}

    ins = Inspection(
        path=path, algo=str(header.get("algo")), step=int(header["step"]), observable=observable,
        first_divergence=dict(fd), rtol=rtol, atol=atol, divergent_observables=divergent, observables=observables,
        tensors=_sort_worst_first(tensors), n_compared=n_compared, before=_sort_worst_first(before),
        n_before_compared=n_before, changed_params=_changed_params(bundle),
        history=_history(bundle, shown, path), top_k=top_k,
    )
    if plots_dir is not None:
        ins.plots = write_plots(ins, bundle, plots_dir)
    return ins


# ------------------------------------------------------------------------------------------------ plots


def _new_figure(width: float, height: float) -> Any:
    """A Figure on its own Agg canvas: no pyplot, no global backend switch, nothing to leak between calls."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        fig.clear()
    atomic_write_bytes(path, buf.getvalue())
    return path


def _pair(bundle: Bundle, t: TensorDiff) -> tuple[np.ndarray, np.ndarray]:
    return (bundle.arrays[f"{t.section}/{REFERENCE}/{t.param}"], bundle.arrays[f"{t.section}/{CANDIDATE}/{t.param}"])


def _plot_diff_hist(ins: Inspection, t: TensorDiff, bundle: Bundle, path: Path) -> Path:
    e, a, diff, _ = _diffs(*_pair(bundle, t))
    with np.errstate(invalid="ignore", over="ignore"):
        d = (a - e)[diff > 0]
    finite = d[np.isfinite(d)]
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot()
    mag = np.abs(finite)
    symlog = finite.size > 0 and float(mag.max()) > 1e3 * float(mag.min())
    if symlog:
        lo, hi = float(mag.min()), float(mag.max())
        pos = np.logspace(np.log10(lo) - 0.01, np.log10(hi) + 0.01, 41)
        ax.hist(finite, bins=np.concatenate([-pos[::-1], pos]), color="tab:blue", edgecolor="white", linewidth=0.3)
        ax.set_xscale("symlog", linthresh=lo)
        decades = np.arange(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        ticks = 10.0 ** decades[::-1][:: max(1, math.ceil(len(decades) / 5))]
        ticks = ticks[ticks > lo] if np.any(ticks > lo) else ticks
        ax.set_xticks(np.concatenate([-ticks, [0.0], ticks[::-1]]))
    elif finite.size:
        ax.hist(finite, bins=101, color="tab:blue", edgecolor="tab:blue")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    scale = ", symlog x" if symlog else ""
    ax.set_xlabel(f"candidate − reference (elements that are not bitwise equal{scale})")
    ax.set_ylabel("elements (log)")
    m = t.mismatch
    note = (f"{m.n_not_bitwise} of {m.n_total} not bitwise equal ({m.n_total - m.n_not_bitwise} equal ones omitted), "
            f"{m.n_mismatched} outside tolerance, max |diff| {m.max_abs:.3g} at {index_text(m.max_abs_index)}")
    if finite.size < d.size:
        note += f", {d.size - finite.size} non-finite not shown"
    ax.set_title(f"{t.name} (step {ins.step})\n{textwrap.fill(note, 110)}", fontsize=9)
    return _save(fig, path)


def _plot_heatmap(ins: Inspection, t: TensorDiff, bundle: Bundle, path: Path) -> Path:
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    _, _, diff, _ = _diffs(*_pair(bundle, t))
    mat = diff.reshape(1, -1) if diff.ndim < 2 else diff.reshape(diff.shape[0], -1)
    nonfinite = ~np.isfinite(mat)
    positive = mat[~nonfinite & (mat > 0)]
    vmin, vmax = (float(positive.min()), float(positive.max())) if positive.size else (0.0, 0.0)
    if vmax == 0.0:
        norm, label = Normalize(0.0, 1.0), "|diff| (every finite |diff| is 0)"
    elif vmax / vmin > 1e3 or positive.size < mat.size - int(nonfinite.sum()):
        norm, label = LogNorm(vmin=vmin, vmax=vmax), "|diff| (log; white = 0)"
    else:
        norm, label = Normalize(0.0, vmax), "|diff|"
    shown = np.ma.masked_array(np.where(nonfinite, 10.0 * float(norm.vmax), mat), mask=False)  # "over" colour
    if isinstance(norm, LogNorm):
        shown.mask = ~nonfinite & (mat <= 0)
    if nonfinite.any():
        label += "; cyan = NaN/inf"
    cmap = colormaps["magma_r"].with_extremes(bad="white", over="cyan")
    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    im = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm)
    fig.colorbar(im, ax=ax, label=label, extend="max" if nonfinite.any() else "neither")
    shape = "×".join(str(s) for s in t.shape) or "scalar"
    reshaped = "" if diff.ndim == 2 else f", shown as {mat.shape[0]}×{mat.shape[1]}"
    ax.set_title(f"|candidate − reference| of {t.name} [{shape}{reshaped}] (step {ins.step})", fontsize=10)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    _integer_ticks(ax.xaxis, ax.yaxis)
    return _save(fig, path)


def _integer_ticks(*axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _plot_history(ins: Inspection, h: History, path: Path) -> Path:
    d = h.abs_diff
    present = ~np.isnan(d)
    finite_pos = d[np.isfinite(d) & (d > 0)]
    floor = float(finite_pos.min()) / 10.0 if finite_pos.size else 1e-12
    top = float(finite_pos.max()) * 10.0 if finite_pos.size else 1.0
    y = np.where(d > 0, d, floor)
    y = np.where(np.isinf(y), top, y)
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot()
    s = h.steps[present]
    ax.plot(s, y[present], color="tab:blue", lw=1.2, marker="o", ms=3, label="|candidate − reference|")
    zero = present & (d == 0)
    if zero.any():
        ax.scatter(h.steps[zero], y[zero], color="tab:green", s=12, zorder=3, label=f"equal (plotted at {floor:.1g})")
    missing = np.isinf(d)
    if missing.any():
        ax.scatter(h.steps[missing], y[missing], color="tab:red", marker="x", s=30, zorder=3,
                   label=f"value on one side only (plotted at {top:.1g})")
    ax.axvline(ins.step, color="tab:red", ls="--", lw=1, label=f"divergence step {ins.step}")
    if h.first_diff_step is not None and h.first_diff_step != ins.step:
        ax.axvline(h.first_diff_step, color="tab:orange", ls=":", lw=1, label=f"first |diff| > 0: {h.first_diff_step}")
    ax.set_yscale("log")
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("step")
    ax.set_ylabel("|diff| (log)")
    key = f" (history {h.key})" if h.key != h.observable else ""
    ax.set_title(f"{h.observable}{key}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def write_plots(ins: Inspection, bundle: Bundle, plots_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the plots that apply (no differing tensor → no histogram/heat map; no history → no curve)."""
    out_dir = Path(plots_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot create the plots directory ({exc.strerror or exc})") from None
    plots: dict[str, Path] = {}
    same_shape = [t for t in ins.tensors if t.mismatch.shape_mismatch is None]
    if same_shape:
        # plot a parameter matrix: after/ tensors first, real matrices (both dims > 1) first, worst first within
        ranked = sorted(same_shape, key=lambda t: (t.section != "after",
                                                   not (len(t.shape) == 2 and min(t.shape) > 1),
                                                   len(t.shape) != 2))
        matrix = ranked[0]
        plots["diff_hist"] = _plot_diff_hist(ins, matrix, bundle, out_dir / "diff_hist.png")
        plots["heatmap"] = _plot_heatmap(ins, matrix, bundle, out_dir / "heatmap.png")
    if ins.history is not None and bool(np.any(~np.isnan(ins.history.abs_diff))):
        plots["history"] = _plot_history(ins, ins.history, out_dir / "history.png")
    return plots


# ------------------------------------------------------------------------------------------------ rendering
