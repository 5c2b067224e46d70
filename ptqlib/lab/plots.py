"""Figures for the notebooks. Every function returns a :class:`matplotlib.figure.Figure` built
without pyplot (no global state; widgets redraw them in place); :func:`save_figure` writes one as
a small PNG under ``figures/``.

The data comes from :mod:`ptqlib.activations`, :mod:`ptqlib.fitting` and :mod:`ptqlib.sweeps`;
nothing here computes more than a histogram.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from .activations import KINDS, Activations
from .fitting import FittedQuantizer, fit_quantizer, fit_twin_gelu, fit_twin_softmax, fit_uniform
from .sweeps import ScaleSweep, rescaled_curve

if TYPE_CHECKING:
    from .explore import ScaleCurves, ScaleStudy, ScaleView

__all__ = [
    "COLORS",
    "repo_root",
    "figures_dir",
    "save_figure",
    "publish",
    "setup_notebook",
    "hist_with_grid",
    "error_per_value",
    "explorer_figure",
    "plot_distributions",
    "plot_heads",
    "plot_channel_outliers",
    "plot_uniform_vs_twin",
    "plot_error_by_bits",
    "plot_twin_levels",
    "plot_error_curves",
    "plot_split_search",
    "twin_figure",
    "plot_sensitivity",
    "plot_quantizer_levels",
    "plot_channel_ranges",
    "METRIC_STYLES",
    "metric_style",
    "plot_sweeps",
    "plot_grad_magnitudes",
    "plot_agreement",
    "plot_accuracy",
    "AXIS_CHOICES",
    "ValueAxis",
    "value_axis",
    "draw_histogram",
    "draw_levels",
    "draw_error_per_value",
    "quantizer_view",
    "activation_view",
    "twin_view",
    "draw_metric_curves",
    "scale_explorer_figure",
    "scale_gallery",
]

COLORS = {
    "uniform": "#d62728", "twin": "#1f77b4", "gaussian": "#2ca02c", "task": "black",
    "mse": "#ff7f0e", "cosine": "#9467bd", "pearson": "#8c564b", "l1": "#e377c2",
    "hessian": "#1f77b4", "hessian (per-channel)": "#393b79", "hessian (official KL)": "#17becf",
    "cosine_token": "#bcbd22",
    "fine range R1": "#08519c", "coarse range R2": "#e6550d", "positive": "#08519c", "negative": "#e6550d",
}
KIND_COLORS = {"post-softmax": "#1f77b4", "post-GELU": "#ff7f0e", "qkv input": "#2ca02c",
               "proj input": "#9467bd", "fc1 input": "#8c564b"}
GRID_HIST = "0.6"  # histograms under a quantizer grid are grey, so the grid's colours stand out
DPI = 100


def repo_root() -> Path:
    """The project folder: the first of the working directory and its parents holding
    ``pyproject.toml`` (notebooks run in ``notebooks/``), else the working directory."""
    here = Path.cwd().resolve()
    return next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), here)


def figures_dir(directory: str | Path | None = None) -> Path:
    """Where figures go: ``directory``, else ``$PTQLIB_FIGURES``, else ``figures/`` in
    :func:`repo_root`."""
    if directory:
        path = Path(directory)
    elif os.environ.get("PTQLIB_FIGURES"):
        path = Path(os.environ["PTQLIB_FIGURES"])
    else:
        path = repo_root() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: Figure, name: str, directory: str | Path | None = None, *, dpi: int = DPI) -> Path:
    """Save ``fig`` as ``<directory>/<name>.png`` (dpi 100, tight, 256-colour palette) and return the path."""
    path = figures_dir(directory) / (name if name.endswith(".png") else f"{name}.png")
    _light_log_ticks(*fig.axes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    # a 256-colour palette keeps line plots sharp at a third of the size
    with Image.open(buf) as img:
        img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
            .save(path, format="PNG", optimize=True)
    return path


def publish(fig: Figure, name: str, directory: str | Path | None = None) -> None:
    """Save ``fig`` (see :func:`save_figure`); in IPython show that PNG inline (the notebook shows
    exactly the saved file); print ``figure: <folder>/<name>.png`` (the folder's own name only, no
    local path: ``figures/`` in real mode)."""
    path = save_figure(fig, name, directory)
    try:
        from IPython import get_ipython
        from IPython.display import Image as PNG
        from IPython.display import display

        if get_ipython() is not None:
            display(PNG(data=path.read_bytes(), format="png"))
    except ImportError:  # pragma: no cover
        pass
    print(f"figure: {path.parent.name}/{path.name}")


def setup_notebook(dpi: int = 72) -> None:
    """Inline PNG figures at a modest resolution (small notebooks), shown by ``display(fig)``."""
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except ImportError:  # pragma: no cover
        ip = None
    if ip is not None:
        ip.run_line_magic("matplotlib", "inline")
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    import matplotlib

    matplotlib.rcParams["figure.dpi"] = dpi
    matplotlib.rcParams["savefig.dpi"] = dpi
    matplotlib.rcParams["figure.max_open_warning"] = 0


def _figure(width: float, height: float, *, fast: bool = False) -> Figure:
    """A figure; ``fast`` (for widgets that redraw) skips the constrained layout engine."""
    if fast:
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.09, hspace=0.08)
        return fig
    return Figure(figsize=(width, height), layout="constrained")


def _light_log_ticks(*axes) -> None:
    """No minor ticks on log axes spanning more than two decades (there they only cost redraw
    time); narrower log axes keep them, since they carry the only labels."""
    from matplotlib.ticker import NullLocator

    for ax in axes:
        for axis, scale, lim in ((ax.xaxis, ax.get_xscale(), ax.get_xlim), (ax.yaxis, ax.get_yscale(), ax.get_ylim)):
            if scale == "log":
                lo, hi = sorted(lim())
                if lo > 0 and math.log10(hi / lo) > 2:
                    axis.set_minor_locator(NullLocator())


# ----------------------------------------------------------------------------- histograms


def _bins(values: Tensor, xscale: str, count: int = 120) -> np.ndarray:
    v = values.float()
    if xscale == "log":
        pos = v[v > 0]
        lo = max(float(pos.min()) if pos.numel() else 1e-8, 1e-9)
        hi = max(float(v.max()), lo * 10)
        return np.logspace(math.log10(lo), math.log10(hi), count)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1e-6
    return np.linspace(lo, hi, count)


def _gaussian_counts(bins: np.ndarray, mean: float, std: float, total: int) -> np.ndarray:
    erf = np.vectorize(math.erf)
    cdf = 0.5 * (1 + erf((bins - mean) / (max(std, 1e-12) * math.sqrt(2))))
    return total * np.diff(cdf)


def hist_with_grid(ax, values: Tensor, fq: FittedQuantizer | None = None, *, xscale: str = "linear",
                   gaussian: bool = False, color: str = "0.35", label: str | None = None,
                   bins: np.ndarray | None = None, max_lines: int = 260) -> np.ndarray:
    """Histogram of ``values`` with a log count axis; ``fq``'s levels drawn on top as vertical
    lines (one colour per range), a Gaussian of the same mean and std if ``gaussian``."""
    v = values.float().reshape(-1)
    bins = _bins(v, xscale) if bins is None else bins
    counts, edges = np.histogram(v.numpy(), bins=bins)
    ax.stairs(counts, edges, fill=True, color=color, alpha=0.55, label=label)
    if gaussian:
        mean, std = float(v.double().mean()), float(v.double().std())
        g = _gaussian_counts(edges, mean, std, v.numel())
        centres = np.sqrt(edges[:-1] * edges[1:]) if xscale == "log" else (edges[:-1] + edges[1:]) / 2
        ax.plot(centres, np.where(g > 0.5, g, np.nan), color=COLORS["gaussian"], lw=1.5,
                label=f"Gaussian fit (μ={mean:.2g}, σ={std:.2g})")
    if fq is not None:
        lo_edge, hi_edge = edges[0], edges[-1]
        trans = ax.get_xaxis_transform()
        for i, (group, levels) in enumerate(fq.level_groups().items()):
            lv = levels.numpy()
            if xscale == "log":
                lv = lv[lv > 0]
            if lv.size > max_lines:
                lv = lv[:: math.ceil(lv.size / max_lines)]
            col = COLORS.get(group, COLORS["uniform"] if fq.kind == "uniform" else COLORS["twin"])
            ax.vlines(lv, 0, 0.92 if i == 0 else 0.8, transform=trans, colors=col, lw=0.7, alpha=0.75,
                      label="uniform levels" if group == "uniform" else f"{group} levels")
        if xscale == "log":  # everything below half the smallest positive level rounds to 0
            smallest = float(fq.levels()[fq.levels() > 0].min())
            zero = float((v.abs() < smallest / 2).double().mean())
            ax.axvspan(lo_edge, smallest / 2, color="0.85", alpha=0.6, zorder=0, label=f"rounds to 0 ({zero:.0%} of values)")
        pad = (hi_edge / lo_edge) ** 0.02 if xscale == "log" else (hi_edge - lo_edge) * 0.02
        ax.set_xlim((lo_edge / pad, hi_edge * pad) if xscale == "log" else (lo_edge - pad, hi_edge + pad))
    ax.set_yscale("log")
    ax.set_xscale(xscale)
    ax.set_ylabel("count")
    return edges


def error_per_value(ax, values: Tensor, quantizers: Mapping[str, FittedQuantizer], *, xscale: str = "linear",
                    bins: np.ndarray | None = None) -> dict[str, float]:
    """Mean |x − Q(x)| per value bin for each quantizer (log y); returns each one's MSE."""
    v = values.float().reshape(-1)
    bins = _bins(v, xscale) if bins is None else bins
    idx = np.clip(np.digitize(v.numpy(), bins) - 1, 0, len(bins) - 2)
    centres = np.sqrt(bins[:-1] * bins[1:]) if xscale == "log" else (bins[:-1] + bins[1:]) / 2
    counts = np.bincount(idx, minlength=len(bins) - 1)
    mses = {}
    for name, fq in quantizers.items():
        err = (fq.fake(v) - v).abs().double().numpy()
        sums = np.bincount(idx, weights=err, minlength=len(bins) - 1)
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        mses[name] = float((err ** 2).mean())
        color = COLORS["twin"] if fq.kind.startswith("twin") else COLORS["uniform"]
        ax.plot(centres, np.where(mean > 0, mean, np.nan), color=color, lw=1.4,
                label=f"{name}: MSE {mses[name]:.3g}")
    ax.set_xscale(xscale)
    ax.set_yscale("log")
    ax.set_ylabel("mean |x − Q(x)|")
    ax.legend(fontsize=8, loc="best")
    return mses


def _xscale(kind: str) -> str:
    return "log" if KINDS[kind].twin == "softmax" else "linear"


# ----------------------------------------------------------------------------- notebook 01


def explorer_figure(acts: Activations, block: int, layer: str, head: int | None, bits: int, quantizer: str,
                    fig: Figure | None = None, fitted: FittedQuantizer | None = None,
                    reference: FittedQuantizer | None = None) -> tuple[Figure, dict[str, Any]]:
    """The activation explorer's view: histogram with the chosen quantizer's grid, and the
    error per value (against the best uniform quantizer when a twin one is chosen).

    Returns the figure and a summary (``title``, ``mse``, ``quantizer`` label, ``levels``, ...).
    """
    kind = KINDS[layer]
    v = acts.values(layer, block, head if kind.heads else None)
    fq = fitted or fit_quantizer(v, quantizer, bits, kind.twin)
    note = "" if (quantizer == "uniform" or kind.twin) else " (no twin-uniform quantizer for this layer: uniform shown)"
    xscale = _xscale(layer)
    if fig is None:
        fig = _figure(10, 6.2, fast=True)
    else:
        fig.clear()
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    bins = _bins(v, xscale)
    hist_with_grid(ax1, v, fq, xscale=xscale, gaussian=True, color=GRID_HIST, bins=bins)
    quantizers = {fq.label(): fq}
    if fq.kind != "uniform":
        uni = reference or fit_uniform(v, bits, signed=False if kind.twin == "softmax" else None)
        quantizers = {f"uniform {bits}-bit": uni, f"twin-uniform {bits}-bit": fq}
    mses = error_per_value(ax2, v, quantizers, xscale=xscale, bins=bins)
    head_txt = f", head {head}" if (kind.heads and head is not None) else ""
    title = f"block {block} · {layer}{head_txt} · {bits}-bit {fq.kind}{note}"
    ax1.set_title(title, fontsize=11)
    ax1.legend(fontsize=8, loc="upper right")
    ax2.set_xlabel("activation value" + (" (log scale)" if xscale == "log" else ""))
    _light_log_ticks(ax1, ax2)
    info = {"title": title, "block": block, "layer": layer, "head": head, "bits": bits, "quantizer": fq.label(),
            "kind": fq.kind, "mse": fq.mse(v), "mses": mses, "levels": int(fq.levels().numel()), "values": int(v.numel())}
    return fig, info


def plot_distributions(acts: Activations, kinds: Sequence[str], blocks: Sequence[int]) -> Figure:
    """Paper Fig. 2 style: rows = activation kinds, columns = blocks; log-count histograms with
    the Gaussian of the same mean and standard deviation."""
    fig = _figure(3.3 * len(blocks), 2.3 * len(kinds))
    axes = np.atleast_2d(fig.subplots(len(kinds), len(blocks), squeeze=False))
    for r, kind in enumerate(kinds):
        for c, block in enumerate(blocks):
            ax = axes[r, c]
            hist_with_grid(ax, acts.values(kind, block), xscale="linear", gaussian=True,
                           color=KIND_COLORS.get(kind, "0.4"))
            ax.set_title(f"{kind} · block {block}", fontsize=9)
            ax.set_ylabel("count" if c == 0 else "")
            ax.tick_params(labelsize=7)
            if r == 0 and c == 0:
                ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{acts.model_name}: activations ({acts.images} images) against a Gaussian fit (green)", fontsize=11)
    return fig


def plot_heads(acts: Activations, kind: str, block: int) -> Figure:
    """One histogram per attention head (post-softmax on a log value axis)."""
    heads = acts.num_heads
    fig = _figure(3.6 * heads, 2.8)
    axes = fig.subplots(1, heads, squeeze=False)[0]
    xscale = _xscale(kind)
    for h in range(heads):
        v = acts.values(kind, block, h)
        hist_with_grid(axes[h], v, xscale=xscale, gaussian=xscale == "linear", color=KIND_COLORS.get(kind, "0.4"))
        share = float((v > 0.5).double().mean()) if kind == "post-softmax" else float(v.abs().max())
        extra = f"share > 0.5: {share:.2%}" if kind == "post-softmax" else f"max |x| {share:.3g}"
        axes[h].set_title(f"head {h} ({extra})", fontsize=9)
        axes[h].set_xlabel("value" + (" (log)" if xscale == "log" else ""))
    fig.suptitle(f"{kind}, block {block}, per head", fontsize=11)
    return fig


def plot_channel_outliers(absmax: Tensor, blocks: Sequence[int], *, detail_block: int, top: int = 8,
                          kind: str = "post-GELU") -> Figure:
    """Which hidden units carry the outliers: per-channel max |x| for every block (heat map,
    log colour) and, for ``detail_block``, sorted per-channel maxima with the top units named."""
    from matplotlib.colors import LogNorm

    fig = _figure(12, 5.2)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(3, 2))
    a = absmax.clamp_min(1e-6).numpy()
    im = ax1.imshow(a, aspect="auto", interpolation="nearest", cmap="magma", norm=LogNorm())
    ax1.set_yticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
    ax1.set_xlabel(f"{kind} channel (hidden unit)")
    ax1.set_ylabel("block")
    ax1.set_title(f"max |x| per channel of the {kind} activations", fontsize=10)
    fig.colorbar(im, ax=ax1)
    row = absmax[list(blocks).index(detail_block)]
    order = torch.argsort(row, descending=True)
    ranks = np.arange(1, row.numel() + 1)
    ax2.plot(ranks, row[order].numpy(), color=KIND_COLORS.get(kind, "0.4"))
    ax2.set_yscale("log")
    ax2.set_xscale("log")
    ax2.axhline(float(row.median()), color="0.5", ls="--", lw=1, label=f"median {float(row.median()):.2g}")
    for i, ch in enumerate(order[:min(top, 3)].tolist()):
        ax2.annotate(f"unit {ch}: {float(row[ch]):.3g}", (i + 1, float(row[ch])), fontsize=8,
                     xytext=(8, -4 - 10 * i), textcoords="offset points")
    ax2.set_xlabel("rank of the unit (sorted by max |x|)")
    ax2.set_title(f"block {detail_block}: per-unit max |x|, sorted", fontsize=10)
    ax2.legend(fontsize=8)
    return fig


def plot_uniform_vs_twin(values: Tensor, kind: str, bits: int, *, title: str = "") -> tuple[Figure, dict[str, float]]:
    """Paper Fig. 3 style: the same histogram twice, with the best uniform grid (left) and the
    twin-uniform grid (right) drawn on top, and their error per value below."""
    twin = KINDS[kind].twin
    uni = fit_uniform(values, bits, signed=False if twin == "softmax" else None)
    tw = fit_quantizer(values, "twin-uniform", bits, twin)
    xscale = _xscale(kind)
    fig = _figure(12, 5.6)
    axes = fig.subplots(2, 2, sharex=True, height_ratios=(3, 2))
    bins = _bins(values, xscale)
    out = {}
    for c, fq in enumerate((uni, tw)):
        hist_with_grid(axes[0, c], values, fq, xscale=xscale, color=GRID_HIST, bins=bins)
        axes[0, c].set_title(fq.label(), fontsize=9)
        axes[0, c].legend(fontsize=7, loc="upper right")
        out[fq.kind] = error_per_value(axes[1, c], values, {fq.kind: fq}, xscale=xscale, bins=bins)[fq.kind]
        axes[1, c].set_xlabel("value" + (" (log scale)" if xscale == "log" else ""))
    fig.suptitle(title or f"{kind}: {bits}-bit uniform vs twin-uniform grid", fontsize=11)
    return fig, out


# ----------------------------------------------------------------------------- notebook 03


def plot_error_by_bits(table, *, value: str = "mse") -> Figure:
    """Mean quantization MSE over blocks per bit-width, uniform (min-max and searched) vs twin,
    one panel per kind (from :func:`ptqlib.activations.quantizer_error_table`)."""
    kinds = list(dict.fromkeys(table["kind"]))
    fig = _figure(5.5 * len(kinds), 3.8)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    cols = [("uniform_minmax", "uniform, min-max", "#f4a3a3"), ("uniform", "uniform, MSE-searched", COLORS["uniform"]),
            ("twin", "twin-uniform, MSE-searched", COLORS["twin"])]
    for ax, kind in zip(axes, kinds):
        g = table[table["kind"] == kind].groupby("bits")[[c for c, _, _ in cols]].mean()
        x = np.arange(len(g.index))
        for i, (c, label, color) in enumerate(cols):
            ax.bar(x + (i - 1) * 0.27, g[c].values, 0.27, label=label, color=color)
        ax.set_xticks(x, [f"{b}-bit" for b in g.index])
        ax.set_yscale("log")
        ax.set_ylabel("MSE (mean over blocks)")
        ax.set_title(kind, fontsize=10)
        ax.legend(fontsize=8)
    return fig


def plot_twin_levels(bits: int, m_softmax: int, gelu: FittedQuantizer, uniform_softmax: FittedQuantizer) -> Figure:
    """The representable values as tick marks: uniform vs twin on [0, 1] (softmax), and twin
    GELU's positive and negative ranges with their different steps."""
    tw = fit_twin_softmax(torch.zeros(1), bits, m=m_softmax)
    fig = _figure(12, 4.2)
    ax1, ax2 = fig.subplots(2, 1)
    rows = [("uniform", uniform_softmax.level_groups()["uniform"], COLORS["uniform"], 2),
            ("twin R2 (coarse)", tw.level_groups()["coarse range R2"], "#6baed6", 1),
            ("twin R1 (fine)", tw.level_groups()["fine range R1"], COLORS["twin"], 0)]
    for name, lv, color, y in rows:
        lv = lv[lv >= 0].numpy()
        color = {"uniform": COLORS["uniform"], "twin R2 (coarse)": COLORS["coarse range R2"],
                 "twin R1 (fine)": COLORS["fine range R1"]}[name]
        ax1.vlines(lv, y - 0.35, y + 0.35, color=color, lw=1)
    ax1.set_yticks([0, 1, 2], ["twin R1 (fine)", "twin R2 (coarse)", "uniform (unsigned)"], fontsize=8)
    s = tw.steps()
    ax1.set_title(f"post-softmax, {bits} bits: uniform Δ={uniform_softmax.scale:.3g} vs twin Δ1={s['fine']:.3g} "
                  f"on [0, {2 ** (bits - 1) * s['fine']:.3g}), Δ2={s['coarse']:.3g} on [0, 1)", fontsize=9)
    ax1.set_xlim(-0.01, 1.01)
    g = gelu.level_groups()
    ax2.vlines(g["positive"].numpy(), 0.65, 1.35, color=COLORS["positive"], lw=1)
    ax2.vlines(g["negative"].numpy(), -0.35, 0.35, color=COLORS["negative"], lw=1)
    ax2.set_yticks([0, 1], ["negative (Δn)", "positive (Δp)"], fontsize=8)
    gs = gelu.steps()
    ax2.set_title(f"post-GELU, {gelu.bits} bits: Δp={gs['positive']:.3g} (sign bit 0), Δn=Δp/2^{gelu.m}={gs['negative']:.3g} "
                  "(sign bit 1)", fontsize=9)
    ax2.set_xscale("symlog", linthresh=0.2)
    ax2.axvline(-0.17, color="0.5", ls=":", lw=1, label="GELU's minimum, −0.17")
    ax2.legend(fontsize=8, loc="upper left")
    ax2.set_xlabel("representable value (symlog: linear within ±0.2)")
    return fig


def plot_error_curves(quantizers: Mapping[str, FittedQuantizer], lo: float, hi: float, *, xscale: str = "linear",
                      title: str = "") -> Figure:
    """|x − Q(x)| for every x on [lo, hi] (a dense grid), one line per quantizer."""
    if xscale == "log":
        x = torch.logspace(math.log10(max(lo, 1e-6)), math.log10(hi), 4000)
    else:
        x = torch.linspace(lo, hi, 4000)
    fig = _figure(11, 3.4)
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for i, (name, fq) in enumerate(quantizers.items()):
        color = COLORS["twin"] if fq.kind.startswith("twin") else COLORS["uniform"]
        ax.plot(x.numpy(), (fq.fake(x) - x).abs().numpy(), color=color, ls=styles[i % 4], lw=1, label=name)
    ax.set_xscale(xscale)
    ax.set_xlabel("x" + (" (log)" if xscale == "log" else ""))
    ax.set_ylabel("|x − Q(x)|")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_split_search(searches: Mapping[str, Any]) -> Figure:
    """MSE against the split ``m`` for each ``{label: DataFrame from split_search}``; the best marked."""
    cols = min(len(searches), 2)
    rows = math.ceil(len(searches) / cols)
    fig = _figure(5.6 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(searches):]:
        ax.set_visible(False)
    for ax, (label, df) in zip(axes, searches.items()):
        ax.plot(df["m"], df["mse"], "o-", color=COLORS["twin"], ms=4)
        best = df.loc[df["mse"].idxmin()]
        ax.plot([best["m"]], [best["mse"]], "*", color=COLORS["uniform"], ms=14, label=f"best m = {int(best['m'])}")
        ax.set_yscale("log")
        ax.set_xlabel("split m (fine step = coarse step / 2^m)")
        ax.set_ylabel("MSE")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    return fig


def twin_figure(values: Tensor, kind: str, bits: int, m: int, fig: Figure | None = None) -> tuple[Figure, dict[str, Any]]:
    """The twin explorer's view: the values with the twin grid for split ``m`` (and the best
    uniform grid), and both quantizers' error per value."""
    twin = KINDS[kind].twin
    tw = fit_twin_softmax(values, bits, m=m) if twin == "softmax" else fit_twin_gelu(values, bits, m=m)
    uni = fit_uniform(values, bits, signed=False if twin == "softmax" else None)
    xscale = _xscale(kind)
    if fig is None:
        fig = _figure(10, 6, fast=True)
    else:
        fig.clear()
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    bins = _bins(values, xscale)
    hist_with_grid(ax1, values, tw, xscale=xscale, color=GRID_HIST, bins=bins)
    mses = error_per_value(ax2, values, {f"uniform {bits}-bit": uni, f"twin {bits}-bit, m={m}": tw}, xscale=xscale, bins=bins)
    title = f"{kind} · {bits}-bit twin-uniform, m = {m}: {tw.label()}"
    ax1.set_title(title, fontsize=10)
    ax1.legend(fontsize=8, loc="upper right")
    ax2.set_xlabel("value" + (" (log scale)" if xscale == "log" else ""))
    _light_log_ticks(ax1, ax2)
    return fig, {"title": title, "kind": kind, "bits": bits, "m": m, "twin_mse": tw.mse(values),
                 "uniform_mse": uni.mse(values), "steps": tw.steps(), "mses": mses}


# ----------------------------------------------------------------------------- notebook 02

#: Notebook 02's metrics: a colour of seaborn's colour-blind palette and a line style each, so that
#: curves lying on top of each other stay visible (the dashes of one show the other through).
METRIC_STYLES = {
    "mse": (1, "-"), "cosine": (2, (0, (5, 2))), "pearson": (9, (0, (1, 1.5))), "cosine_token": (5, "-."),
    "l1": (7, (0, (3, 1, 1, 1, 1, 1))), "hessian": (0, "-"), "hessian (per-channel)": (4, (0, (5, 2))),
    "hessian (official KL)": (3, (0, (1, 1.5))),
}


def metric_style(metric: str, index: int = 0) -> dict[str, Any]:
    """``color`` and ``ls`` of a metric's curve in notebook 02's figures (a fallback for others)."""
    import seaborn as sns

    palette = sns.color_palette("colorblind", 10).as_hex()
    colour, ls = METRIC_STYLES.get(metric, (index % 10, "-"))
    return {"color": palette[colour], "ls": ls}


def _norm(y: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(y), np.nanmax(y)
    return (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)


def plot_sweeps(sweep: ScaleSweep, bits: int, *, task: str = "task_kl", cols: int = 3,
                same: Sequence[Sequence[str]] = ()) -> Figure:
    """One panel per target: each metric and the task loss against the scale multiplier (log x),
    each curve log-scaled and rescaled to [0, 1], so only where it is lowest and how it rises
    around that matter. Below the curves, one row per metric marks its pick (▼), so that metrics
    picking the same candidate line up; the dotted line is the task-loss optimum. ``same`` (e.g.
    :func:`ptqlib.lab.sweeps.same_pick_groups`) is named in the legend."""
    t = sweep.table[sweep.table["bits"] == bits]
    targets = list(dict.fromkeys(t["target"]))
    ncols = min(cols, len(targets))
    rows = math.ceil(len(targets) / ncols)
    metrics = list(sweep.metrics)
    strip = 0.07  # height of one pick row, in the rescaled unit
    fig = _figure(4.2 * ncols + 2.6, 3.5 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, ncols, squeeze=False)).ravel()
    for ax, target in zip(axes, targets):
        g = t[t["target"] == target].sort_values("multiplier")
        x = g["multiplier"].values
        ax.axhspan(-strip * (len(metrics) + 0.6), -0.02, color="0.95", lw=0)
        for i, metric in enumerate(metrics):
            style = metric_style(metric, i)
            y = rescaled_curve(g[metric].values)
            ax.plot(x, y, lw=1.6, label=metric, **style)
            ax.plot([x[int(np.argmin(g[metric].values))]], [-strip * (i + 1)], "v", color=style["color"], ms=6)
        ty = rescaled_curve(g[task].values)
        ax.plot(x, ty, color=COLORS["task"], lw=2.4, label=f"task loss ({task})", zorder=1)
        ax.axvline(x[int(np.argmin(g[task].values))], color="black", ls=":", lw=1.2,
                   label="task-loss optimum" if ax is axes[0] else None)
        ax.set_xscale("log")
        ax.set_ylim(-strip * (len(metrics) + 0.8), 1.04)
        ax.set_yticks([0, 0.5, 1])
        ax.set_title(target, fontsize=10)
        ax.set_xlabel("scale / min-max scale (log)", fontsize=9)
        ax.tick_params(labelsize=8.5)
    for ax in axes[len(targets):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("log loss, rescaled to [0, 1]", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    title = "metric (▼ = its pick;\none row each, in this order)"
    if same:
        title += "\n" + "\n".join("same pick in every sweep:\n  " + " = ".join(grp) for grp in same)
    fig.legend(handles, labels, loc="outside right upper", fontsize=9, title=title, title_fontsize=8.5,
               frameon=False, alignment="left")
    fig.suptitle(f"{bits}-bit: where each distance metric is lowest, against the task loss", fontsize=12)
    return fig


def plot_grad_magnitudes(grads: Mapping[str, Mapping[str, Tensor]]) -> Figure:
    """Histogram of |∂L/∂O| per gradient loss (log-log), pooled over the swept sites."""
    fig = _figure(10, 3.6)
    ax = fig.subplots()
    for i, (name, by_site) in enumerate(grads.items()):
        g = torch.cat([t.reshape(-1).abs().float() for t in by_site.values() if t is not None])
        zero = float((g == 0).double().mean())
        pos = g[g > 0]
        if pos.numel():
            bins = np.logspace(math.log10(float(pos.min())), math.log10(float(pos.max()) * 1.01), 100)
            ax.hist(pos.numpy(), bins=bins, histtype="stepfilled", alpha=0.55, color=metric_style(name, i)["color"],
                    label=f"{name}:\nmean |g| {float(g.mean()):.2g}, zeros {zero:.1%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|∂L/∂O| (output gradient; the Hessian-guided metric weights by its square)", fontsize=10)
    ax.set_ylabel("elements", fontsize=10)
    ax.set_title("Hessian weights: the official code's KL gradient against ptqlib's, all swept sites", fontsize=11)
    _legend_outside(ax, fontsize=9)
    return fig


def plot_agreement(agreement, *, value: str = "log2_offset", step: float | None = None) -> Figure:
    """Heat map, sweeps × metrics, of where each metric's pick lies from the task-loss optimum:
    ``log2_offset`` (signed: red = a larger scale than the optimum, blue = smaller), in candidate
    steps when ``step`` (the log2 ratio of neighbouring candidates) is given; ``log2_distance`` or
    any other column of :func:`ptqlib.lab.sweeps.metric_agreement` works too."""
    import pandas as pd

    tab = agreement.pivot(index="layer", columns="metric", values=value)
    tab = tab.loc[list(dict.fromkeys(agreement["layer"])), list(dict.fromkeys(agreement["metric"]))]
    values = tab.values.astype(float) / (step or 1.0)
    fig = _figure(1.05 * tab.shape[1] + 4.6, 0.34 * tab.shape[0] + 2.2)
    ax = fig.subplots()
    signed = bool(np.nanmin(values) < 0)
    whole = step is not None
    top = max(float(np.nanmax(np.abs(values))), 1e-9)
    if whole:  # one colour per whole number of steps
        from matplotlib import colormaps
        from matplotlib.colors import BoundaryNorm

        top = max(round(top), 1)
        edges = np.arange(-top - 0.5 if signed else -0.5, top + 1)
        cmap = colormaps["RdBu_r" if signed else "Reds"]
        im = ax.imshow(values, cmap=cmap, norm=BoundaryNorm(edges, cmap.N), aspect="auto")
    else:
        im = ax.imshow(values, cmap="RdBu_r" if signed else "Reds", aspect="auto",
                       vmin=-top if signed else 0, vmax=top)
    ax.set_xticks(range(tab.shape[1]), tab.columns, rotation=30, ha="right", fontsize=10)
    ax.set_yticks(range(tab.shape[0]), tab.index, fontsize=9.5)
    for i in range(tab.shape[0]):
        for j in range(tab.shape[1]):
            val = values[i, j]
            if pd.notna(val):
                text = (f"{val:+.0f}" if round(val) else "0") if whole else f"{val:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9.5,
                        color="white" if abs(val) > 0.6 * top else "black")
    unit = "candidate steps" if whole else "log2"
    label = {"log2_offset": f"pick − task-loss optimum ({unit})\n> 0: a larger scale than the task loss wants",
             "log2_distance": f"|pick − task-loss optimum| ({unit})"}.get(value, value)
    bar = fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    if whole:
        bar.set_ticks(np.arange(-top if signed else 0, top + 1))
    ax.set_title("Each metric's pick against the task-loss optimum, per sweep (0 = the optimum itself)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- notebook 04


def plot_accuracy(table, *, fp_top1: float | None = None, group: str = "bits", hue: str = "method",
                  reference: Mapping[str, float] | None = None, title: str = "") -> Figure:
    """Grouped bars of top-1: ``group`` along x, ``hue`` as colours; ``fp_top1`` a dashed line and
    ``reference`` (label -> top-1 by ``group|hue`` key) as hollow markers."""
    groups = list(dict.fromkeys(table[group]))
    hues = list(dict.fromkeys(table[hue]))
    fig = _figure(max(6, 1.2 * len(groups) * len(hues) ** 0.5 + 3), 4)
    ax = fig.subplots()
    width = 0.8 / len(hues)
    for j, h in enumerate(hues):
        for i, g in enumerate(groups):
            sel = table[(table[group] == g) & (table[hue] == h)]
            if sel.empty:
                continue
            val = float(sel["top1"].iloc[0])
            x = i + (j - (len(hues) - 1) / 2) * width
            ax.bar(x, val, width, color=f"C{j}", label=h if i == 0 else None)
            ax.text(x, val + 0.5, f"{val:.1f}", ha="center", fontsize=7)
            if reference and f"{g}|{h}" in reference:
                ax.plot([x], [reference[f"{g}|{h}"]], "o", mfc="none", mec="black", ms=7,
                        label="reference" if not any(t.get_label() == "reference" for t in ax.lines) else None)
    if fp_top1 is not None:
        ax.axhline(fp_top1, color="black", ls="--", lw=1, label=f"float {fp_top1:.2f}")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("top-1 (%)")
    lo = float(table["top1"].min())
    ax.set_ylim(max(0, min(lo, fp_top1 or lo) - 10), 100)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------- explorers (widgets) and galleries

#: The value axes an explorer offers: ``auto`` picks log for post-softmax values, symmetric-log for
#: values with a massive outlier (``max |x|`` beyond :data:`MASSIVE` standard deviations), else linear.
AXIS_CHOICES = ("auto", "linear", "symlog", "log")
MASSIVE = 12.0
#: Levels closer than this share of the axis width are thinned (a band shows where all of them lie).
MIN_LEVEL_GAP = 0.006
EXPLORER_WIDTH = 9.6  # inches; the widgets render at about 110 dpi, so about 1050 px wide
LEGEND_RIGHT = 0.75   # explorer figures end their axes here and put the legends beyond, outside the data


class ValueAxis:
    """How values are laid out along x: ``linear``, ``log`` (positive values only) or ``symlog``
    (linear within ±``linthresh``, logarithmic beyond: negatives and a massive outlier both stay
    readable)."""

    def __init__(self, scale: str, linthresh: float | None = None, note: str = "") -> None:
        if scale not in ("linear", "log", "symlog"):
            raise ValueError(f"unknown axis scale {scale!r}; choose linear, log or symlog")
        self.scale, self.linthresh, self.note = scale, linthresh, note

    def __repr__(self) -> str:
        return f"ValueAxis({self.scale!r}, linthresh={self.linthresh!r})"

    def apply(self, ax) -> None:
        if self.scale == "symlog":
            ax.set_xscale("symlog", linthresh=self.linthresh, linscale=1.0)
        else:
            ax.set_xscale(self.scale)

    def set_ticks(self, ax, lo: float, hi: float) -> None:
        """Readable ticks on a symlog axis over ``[lo, hi]``: 0 and the decades beyond the linear
        core, each side with at least one tick, written plainly (``-0.1``, ``10``), not as powers."""
        if self.scale != "symlog":
            return
        from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

        ticks = {0.0} if lo <= 0 <= hi else set()
        for sign, end in ((-1.0, -lo), (1.0, hi)):
            if end <= 0:
                continue
            decades = [10.0 ** k for k in range(math.floor(math.log10(self.linthresh)), math.floor(math.log10(end)) + 1)]
            side = [sign * d for d in decades if d >= self.linthresh * 0.999 and d <= end]
            if not side:  # the side lies inside the linear core: one tick near its end
                side = [sign * float(f"{end:.1g}")]
            ticks.update(side[-4:] if sign > 0 else side[-2:])
        ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(NullLocator())

    def forward(self, v: np.ndarray) -> np.ndarray:
        from matplotlib.scale import LogTransform, SymmetricalLogTransform

        v = np.asarray(v, dtype=np.float64)
        if self.scale == "log":
            return LogTransform(10).transform(v)
        if self.scale == "symlog":
            return SymmetricalLogTransform(10, self.linthresh, 1.0).transform(v)
        return v

    def inverse(self, t: np.ndarray) -> np.ndarray:
        from matplotlib.scale import SymmetricalLogTransform

        t = np.asarray(t, dtype=np.float64)
        if self.scale == "log":
            return np.power(10.0, t)
        if self.scale == "symlog":
            return SymmetricalLogTransform(10, self.linthresh, 1.0).inverted().transform(t)
        return t

    def visible(self, values: Tensor) -> Tensor:
        """The values this axis can show (log: the positive ones)."""
        v = values.float().reshape(-1)
        return v[v > 0] if self.scale == "log" else v

    def bins(self, values: Tensor, count: int = 120) -> np.ndarray:
        """``count`` bin edges evenly spaced along this axis over the values' range."""
        if self.scale == "log":
            return _bins(values, "log", count)
        v = values.float()
        lo, hi = float(v.min()), float(v.max())
        if hi <= lo:
            hi = lo + 1e-6
        t = np.linspace(*self.forward(np.array([lo, hi])), count)
        edges = self.inverse(t)
        edges[0], edges[-1] = lo, hi
        return edges

    def centres(self, edges: np.ndarray) -> np.ndarray:
        t = self.forward(edges)
        return self.inverse((t[:-1] + t[1:]) / 2)

    def label(self, what: str) -> str:
        if self.scale == "symlog":
            return f"{what} (symmetric log: linear within ±{self.linthresh:.2g})"
        return what + (" (log scale)" if self.scale == "log" else "")


def value_axis(values: Tensor, choice: str = "auto", *, twin: str | None = None) -> ValueAxis:
    """The x axis for ``values``: ``choice`` from :data:`AXIS_CHOICES`. ``auto``: log for
    post-softmax values (``twin='softmax'``), symlog when ``max |x|`` exceeds :data:`MASSIVE`
    standard deviations (a massive activation squeezes everything else into one bin on a linear
    axis), else linear. ``log`` on values with negatives falls back to symlog."""
    if choice not in AXIS_CHOICES:
        raise ValueError(f"unknown axis {choice!r}; choose one of {', '.join(AXIS_CHOICES)}")
    v = values.float().reshape(-1)
    lo, absmax = float(v.min()), float(v.abs().max())
    if choice == "auto":
        if twin == "softmax" and lo >= 0:
            choice = "log"
        else:
            std = float(v.double().std()) if v.numel() > 1 else 0.0
            choice = "symlog" if std > 0 and absmax > MASSIVE * std else "linear"
    if choice == "log" and lo < 0:
        choice, note = "symlog", "log axis needs positive values: symmetric log shown"
    else:
        note = ""
    if choice == "symlog":
        # the linear core spans the typical magnitude (the median |x|), the tails go logarithmic
        linthresh = max(float(v.abs().median()), 1e-3 * absmax, 1e-12)
        return ValueAxis("symlog", linthresh, note)
    return ValueAxis(choice, None, note)


def _with_levels(values: Tensor, fq: FittedQuantizer) -> Tensor:
    """The values' extremes and the quantizer's outermost levels: a range showing both the data
    and where the grid ends (clipping, or levels no value reaches)."""
    v = values.float().reshape(-1)
    lv = fq.levels().float()
    pos = torch.cat([v[v > 0], lv[lv > 0]])
    ends = [v.min(), v.max(), lv.min(), lv.max()] + ([pos.min()] if pos.numel() else [])
    return torch.stack(ends)


def _legend_outside(ax, **kw) -> None:
    """The legend to the right of the axes (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  fontsize=kw.get("fontsize", 7.5), frameon=False)


def _bin_index(axis: ValueAxis, v: Tensor, bins: np.ndarray) -> np.ndarray:
    """The bin of each value, for ``bins`` evenly spaced along ``axis`` (as :meth:`ValueAxis.bins`
    makes them): arithmetic in the axis' own coordinates, no sorting (fast on a million values)."""
    t = axis.forward(v.double().numpy())
    t0, t1 = axis.forward(np.array([bins[0], bins[-1]]))
    n = len(bins) - 1
    idx = np.floor((t - t0) / max(t1 - t0, 1e-300) * n)
    return np.clip(np.nan_to_num(idx, nan=0.0), 0, n - 1).astype(np.int64)


def draw_histogram(ax, values: Tensor, axis: ValueAxis, bins: np.ndarray, *, color: str = GRID_HIST,
                   label: str | None = None) -> None:
    """Histogram of ``values`` on ``axis`` (``bins`` evenly spaced along it) with a log count axis."""
    v = axis.visible(values)
    counts = np.bincount(_bin_index(axis, v, bins), minlength=len(bins) - 1)
    ax.stairs(counts, bins, fill=True, color=color, alpha=0.55, label=label)
    ax.set_yscale("log")
    axis.apply(ax)
    ax.set_ylabel("count")


def draw_levels(ax, fq: FittedQuantizer, axis: ValueAxis, lo: float, hi: float, *,
                min_gap: float = MIN_LEVEL_GAP, label_prefix: str = "") -> dict[str, dict[str, int]]:
    """``fq``'s levels inside ``[lo, hi]`` as vertical lines, one colour per range. Where a range's
    levels lie closer than ``min_gap`` of the axis width (64 negative twin levels in [-0.17, 0], 256
    uniform ones), only every so many are drawn, over a light band covering all of them: a grid
    that can be read instead of a solid block. Returns per range the levels shown and drawn."""
    trans = ax.get_xaxis_transform()
    t_lo, t_hi = axis.forward(np.array([lo, hi]))
    width = max(t_hi - t_lo, 1e-300)
    out: dict[str, dict[str, int]] = {}
    for i, (group, levels) in enumerate(fq.level_groups().items()):
        lv = np.unique(levels.numpy())
        if axis.scale == "log":
            lv = lv[lv > 0]
        lv = lv[(lv >= lo) & (lv <= hi)]
        col = COLORS.get(group, COLORS["uniform"] if fq.kind == "uniform" else COLORS["twin"])
        name = "uniform" if group == "uniform" else group
        if lv.size == 0:
            out[group] = {"levels": 0, "drawn": 0}
            continue
        pos = (axis.forward(lv) - t_lo) / width
        keep, dropped = [0], []
        for j in range(1, lv.size):
            (keep if pos[j] - pos[keep[-1]] >= min_gap else dropped).append(j)
        drawn = lv[keep]
        top = 0.92 if i == 0 else 0.8
        thinned = bool(dropped)
        if thinned:  # the band covers where levels were left out
            ax.axvspan(float(lv[dropped[0] - 1]), float(lv[dropped[-1]]), ymin=0, ymax=top, color=col, alpha=0.13, lw=0)
        text = f"{label_prefix}{name}: {lv.size} levels"
        text += f"\n(band: all; 1 in {math.ceil(lv.size / drawn.size)} drawn)" if thinned else ""
        ax.vlines(drawn, 0, top, transform=trans, colors=col, lw=0.7, alpha=0.8, label=text)
        out[group] = {"levels": int(lv.size), "drawn": int(drawn.size)}
    return out


def draw_error_per_value(ax, values: Tensor, quantizers: Mapping[str, FittedQuantizer], axis: ValueAxis,
                         bins: np.ndarray) -> dict[str, float]:
    """Mean |x − Q(x)| per bin of ``axis`` for each quantizer (log y); returns each one's MSE over
    all values (also those a log axis cannot show)."""
    v_all = values.float().reshape(-1)
    v = axis.visible(v_all)
    idx = _bin_index(axis, v, bins)
    counts = np.bincount(idx, minlength=len(bins) - 1)
    centres = axis.centres(bins)
    mses = {}
    for name, fq in quantizers.items():
        mses[name] = float((fq.fake(v_all) - v_all).double().square().mean())
        err = (fq.fake(v) - v).abs().double().numpy()
        sums = np.bincount(idx, weights=err, minlength=len(bins) - 1)
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        color = COLORS["twin"] if fq.kind.startswith("twin") else COLORS["uniform"]
        ax.plot(centres, np.where(mean > 0, mean, np.nan), color=color, lw=1.4, label=f"{name}: MSE {mses[name]:.3g}")
    axis.apply(ax)
    ax.set_yscale("log")
    ax.set_ylabel("mean |x − Q(x)|")
    return mses


def _explorer_figure(fig: Figure | None, height: float) -> Figure:
    if fig is None:
        fig = Figure(figsize=(EXPLORER_WIDTH, height))
    else:
        fig.clear()
    fig.subplots_adjust(left=0.085, right=LEGEND_RIGHT, top=0.94, bottom=0.08, hspace=0.1)
    return fig


def quantizer_view(values: Tensor, fq: FittedQuantizer, *, reference: FittedQuantizer | None = None,
                   title: str = "", axis: ValueAxis | None = None, fig: Figure | None = None,
                   twin: str | None = None) -> tuple[Figure, dict[str, Any]]:
    """The explorers' view of a quantizer on values: histogram with the (thinned) grid on top and
    the error per value, against ``reference`` (the best uniform quantizer) when given; legends
    outside the axes. Returns the figure and ``title``, ``mses``, ``xscale``, ``level_counts``."""
    axis = axis or value_axis(values, twin=twin)
    fig = _explorer_figure(fig, 6.0)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    bins = axis.bins(_with_levels(values, fq))
    draw_histogram(ax1, values, axis, bins, label="values")
    lo, hi = float(bins[0]), float(bins[-1])
    counts = draw_levels(ax1, fq, axis, lo, hi)
    if axis.scale == "log":  # everything below half the smallest positive level rounds to 0
        smallest = float(fq.levels()[fq.levels() > 0].min())
        zero = float((values.abs() < smallest / 2).double().mean())
        ax1.axvspan(lo, min(smallest / 2, hi), color="0.85", alpha=0.6, zorder=0, label=f"rounds to 0 ({zero:.0%} of values)")
    t = axis.forward(np.array([lo, hi]))
    pad = (t[1] - t[0]) * 0.02
    ax1.set_xlim(*axis.inverse(np.array([t[0] - pad, t[1] + pad])))
    short = "twin-uniform" if fq.kind.startswith("twin") else "uniform"
    quantizers = {f"{short} {fq.bits}-bit": fq} if reference is None else {
        f"best uniform {reference.bits}-bit": reference, f"{short} {fq.bits}-bit": fq}
    mses = draw_error_per_value(ax2, values, quantizers, axis, bins)
    axis.set_ticks(ax2, lo, hi)
    ax1.set_title(title, fontsize=10, loc="left")
    ax2.set_xlabel(axis.label("value"))
    _legend_outside(ax1)
    _legend_outside(ax2)
    _light_log_ticks(ax1, ax2)
    return fig, {"title": title, "mses": mses, "xscale": axis.scale, "linthresh": axis.linthresh,
                 "level_counts": counts, "axis_note": axis.note}


def activation_view(acts: Activations, block: int, layer: str, head: int | None, bits: int, fq: FittedQuantizer, *,
                    reference: FittedQuantizer | None = None, axis: str = "auto", note: str = "",
                    fig: Figure | None = None) -> tuple[Figure, dict[str, Any]]:
    """:func:`explorer_figure`'s view for the activation explorer, with a chosen value axis
    (:data:`AXIS_CHOICES`), thinned levels and legends outside: ``fq`` is the quantizer shown,
    ``reference`` the best uniform one (drawn in the error panel for a twin ``fq``)."""
    kind = KINDS[layer]
    v = acts.values(layer, block, head if kind.heads else None)
    head_txt = f", head {head}" if (kind.heads and head is not None) else ""
    title = f"block {block} · {layer}{head_txt} · {bits}-bit {fq.kind}{note}"
    fig, drawn = quantizer_view(v, fq, reference=reference if fq.kind != "uniform" else None, title=title,
                                axis=value_axis(v, axis, twin=kind.twin), fig=fig)
    info = {"title": title, "block": block, "layer": layer, "head": head, "bits": bits, "quantizer": fq.label(),
            "kind": fq.kind, "mse": fq.mse(v), "mses": drawn["mses"], "levels": int(fq.levels().numel()),
            "values": int(v.numel()), "xscale": drawn["xscale"], "level_counts": drawn["level_counts"]}
    return fig, info


def twin_view(values: Tensor, kind: str, bits: int, m: int, *, axis: str = "auto", block: int | None = None,
              fig: Figure | None = None) -> tuple[Figure, dict[str, Any]]:
    """:func:`twin_figure`'s view for the twin explorer, with a chosen value axis, thinned levels
    and legends outside; ``block`` (if given) is named in the title."""
    twin = KINDS[kind].twin
    tw = fit_twin_softmax(values, bits, m=m) if twin == "softmax" else fit_twin_gelu(values, bits, m=m)
    uni = fit_uniform(values, bits, signed=False if twin == "softmax" else None)
    where = "" if block is None else f"block {block} · "
    title = f"{where}{kind} · {bits}-bit twin-uniform, m = {m}: {tw.label()}"
    fig, drawn = quantizer_view(values, tw, reference=uni, title=title, axis=value_axis(values, axis, twin=twin), fig=fig)
    return fig, {"title": title, "kind": kind, "block": block, "bits": bits, "m": m, "twin_mse": tw.mse(values),
                 "uniform_mse": uni.mse(values), "steps": tw.steps(), "mses": drawn["mses"], "xscale": drawn["xscale"],
                 "level_counts": drawn["level_counts"]}


def _curve_norm(y: np.ndarray) -> np.ndarray:
    """A metric curve on a log scale, rescaled to [0, 1] (what matters is where it is lowest)."""
    return _norm(np.log10(np.maximum(y, 1e-30)))


def _range_ends(fq: FittedQuantizer) -> list[float]:
    """Where the quantizer's range ends (clipping), or, for post-softmax twin, where the fine range ends."""
    groups = fq.level_groups()
    if fq.kind == "twin-softmax":
        return [float(groups["fine range R1"].max())]
    lv = fq.levels()
    return [float(lv.min()), float(lv.max())] if float(lv.min()) < 0 else [float(lv.max())]


def draw_metric_curves(ax, curves: "ScaleCurves", index: int | None = None) -> dict[str, float]:
    """Each metric of :class:`~ptqlib.lab.explore.ScaleCurves` against the slider axis (log), each
    rescaled to [0, 1] on a log scale, its pick (▼, the argmin) and the current candidate
    (dotted line, dots on the curves). Returns the x of the current-candidate line."""
    x = curves.x.numpy()
    for name, vals in curves.metrics.items():
        y = _curve_norm(vals.numpy())
        color = COLORS.get(name, "0.5")
        pick = curves.picks[name]
        ax.plot(x, y, color=color, lw=1.2, label=f"{name}: pick {curves.labels[pick]}")
        ax.plot([x[pick]], [-0.07], "v", color=color, ms=7, clip_on=False)
        if index is not None:
            ax.plot([x[index]], [y[index]], "o", color=color, ms=4)
    marked = float("nan")
    if index is not None:
        line = ax.axvline(x[index], color="black", ls=":", lw=1.2, label=f"current: {curves.labels[index]}")
        marked = float(line.get_xdata()[0])
    ax.set_xscale("log")
    ax.set_ylim(-0.13, 1.06)
    ax.set_xlabel(curves.axis_label)
    ax.set_ylabel("distance (log, rescaled)")
    return {"marker_x": marked}


def scale_explorer_figure(view: "ScaleView", *, axis: str = "auto", channels: bool = False,
                          fig: Figure | None = None) -> tuple[Figure, dict[str, Any]]:
    """The scale explorer's view of a :class:`~ptqlib.lab.explore.ScaleView`: the operand's
    histogram with the levels at the current scale (or, with ``channels``, each channel's own
    min-max step against the shared step and each channel's error), the error per value, and every
    metric's curve over the candidates with the current one and each metric's pick marked.

    Returns the figure and ``view.info()`` plus ``marker_x`` (where the current-candidate line is
    drawn), ``xscale`` and ``channels``."""
    data, fq = view.data, view.quantizer
    fig = _explorer_figure(fig, 7.4)
    outer = fig.add_gridspec(2, 1, height_ratios=(4.2, 2.3), hspace=0.32)
    top = outer[0].subgridspec(2, 1, height_ratios=(2.6, 1.6), hspace=0.1 if not channels else 0.3)
    gs = [top[0], top[1], outer[1]]
    values = data.x.reshape(-1)
    info = view.info()
    show_channels = channels and view.channels is not None
    if show_channels:
        cv = view.channels
        ax1, ax2 = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
        idx = np.arange(cv.channel_step.numel())
        ax1.bar(idx, cv.channel_step.numpy(), width=1.0, color="0.55", label="each channel's own min-max step")
        ax1.axhline(cv.step, color=COLORS["uniform"] if fq.kind == "uniform" else COLORS["twin"], lw=1.4,
                    label=f"shared step now: {cv.step:.3g}")
        ax1.set_yscale("log")
        ax1.set_ylabel("step")
        ax1.set_title(view.title, fontsize=10, loc="left")
        ax2.bar(idx, np.maximum(cv.error.numpy(), 1e-30), width=1.0, color=COLORS["mse"], label="channel's MSE now")
        ax2.set_yscale("log")
        ax2.set_ylabel("E[(x − Q(x))²]")
        ax2.set_xlabel(cv.axis)
        for ax in (ax1, ax2):
            ax.set_xlim(-0.5, idx.size - 0.5)
        info.update({"xscale": "channels", "channel_steps": cv.channel_step.numpy(), "channel_errors": cv.error.numpy()})
    else:
        vax = value_axis(values, axis, twin=data.operand.twin)
        ax1 = fig.add_subplot(gs[0])
        ax2 = fig.add_subplot(gs[1], sharex=ax1)
        bins = vax.bins(_with_levels(values, fq))
        draw_histogram(ax1, values, vax, bins, label=f"{data.operand.name} ({values.numel():,} values)")
        lo, hi = float(bins[0]), float(bins[-1])
        counts = draw_levels(ax1, fq, vax, lo, hi)
        t = vax.forward(np.array([lo, hi]))
        pad = (t[1] - t[0]) * 0.02
        ax1.set_xlim(*vax.inverse(np.array([t[0] - pad, t[1] + pad])))
        ax1.tick_params(labelbottom=False)
        ax1.set_title(view.title, fontsize=10, loc="left")
        draw_error_per_value(ax2, values, {"now": fq}, vax, bins)
        vax.set_ticks(ax2, lo, hi)
        ax2.set_xlabel(vax.label("operand value"))
        info.update({"xscale": vax.scale, "linthresh": vax.linthresh, "level_counts": counts})
    ax3 = fig.add_subplot(gs[2])
    info.update(draw_metric_curves(ax3, view.curves, view.index))
    ax3.set_title(f"output distance of {data.site} against the float output, per candidate "
                  f"(▼ = each metric's pick)", fontsize=8.5, loc="left")
    for ax in (ax1, ax2, ax3):
        _legend_outside(ax)
    _light_log_ticks(ax1, ax2, ax3)
    info["channels"] = show_channels
    return fig, info


def scale_gallery(study: "ScaleStudy", operand: str, bits: int, quantizer: str = "uniform", *, metric: str = "hessian",
                  blocks: Sequence[int] | None = None, cols: int = 4) -> Figure:
    """A static stand-in for the scale explorer: one small panel per block for ``operand``, its
    histogram with the quantization levels at ``metric``'s pick and, as dashed lines, where each
    metric's pick ends the range (clipping; the fine range for post-softmax twin), in the metric's
    colour. ``study`` is a :class:`~ptqlib.lab.explore.ScaleStudy`."""
    from matplotlib.lines import Line2D

    blocks = [b for b in (study.blocks if blocks is None else blocks) if operand in study.operands(b)]
    if not blocks:
        raise ValueError(f"no block of the study has {operand!r}")
    cols = min(cols, len(blocks))
    rows = math.ceil(len(blocks) / cols)
    fig = _figure(3.3 * cols, 2.5 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[len(blocks):]:
        ax.set_visible(False)
    metrics: list[str] = []
    for ax, b in zip(axes, blocks):
        c = study.curves(b, operand, bits, quantizer)
        data = study.site(b, operand)
        metrics = list(c.metrics)
        shown = metric if metric in c.picks else metrics[0]
        pick = c.picks[shown]
        fq = c.quantizer(pick)
        values = data.x.reshape(-1)
        vax = value_axis(values, twin=data.operand.twin)
        bins = vax.bins(_with_levels(values, fq), 80)
        draw_histogram(ax, values, vax, bins)
        lo, hi = float(bins[0]), float(bins[-1])
        draw_levels(ax, fq, vax, lo, hi, min_gap=0.012)
        for name in metrics:
            for end in _range_ends(c.quantizer(c.picks[name])):
                if lo <= end <= hi:
                    ax.axvline(end, color=COLORS.get(name, "0.5"), ls="--", lw=1.0)
        ax.set_xlim(lo, hi)
        vax.set_ticks(ax, lo, hi)
        ax.set_title(f"block {b}: {shown} pick {c.labels[pick]}", fontsize=8)
        ax.tick_params(labelsize=6.5)
        ax.set_ylabel("")
        _light_log_ticks(ax)
    handles = [Line2D([], [], color=COLORS.get(m, "0.5"), ls="--", label=f"{m} pick") for m in metrics]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{study.model_name}: {operand}, {bits}-bit {quantizer}, every block — levels at the {metric} pick; "
                 "dashed: where each metric's pick ends the range", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- notebook 05

#: Level colours of the logarithmic kinds (by their ``level_groups`` names).
COLORS.update({"log2 levels": "#2ca02c", "log√2 levels": "#9467bd", "AdaLog levels": "#8c564b"})


def plot_sensitivity(frame, *, fp_top1: float | None = None, title: str = "") -> Figure:
    """:func:`ptqlib.lab.successors.sensitivity_frame` as horizontal seaborn bars: the drop from
    float with one quantizer group on at a time (single groups by drop, then the totals), coloured
    by weight / activation / total; groups the successors changed are starred."""
    import pandas as pd
    import seaborn as sns

    data = frame.assign(label=[f"{g} ★" if fix else g for g, fix in zip(frame["quantized"], frame["successors changed it"])])
    fig = _figure(7.5, 0.3 * len(data) + 1.4)
    ax = fig.subplots()
    palette = {"weight": "#4c72b0", "activation": "#dd8452", "total": "0.45"}
    sns.barplot(data=data, y="label", x="top1_drop", hue="operand", dodge=False, palette=palette, ax=ax,
                hue_order=[h for h in ("activation", "weight", "total") if h in set(data["operand"])])
    for i, v in enumerate(pd.to_numeric(data["top1_drop"])):
        ax.annotate(f"{v:.2f}", (max(float(v), 0.0), i), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=7.5)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_ylabel("")
    ax.set_xlabel("top-1 drop from float (points), only this group quantized")
    ax.set_xlim(min(0.0, float(data["top1_drop"].min()) * 1.1), float(data["top1_drop"].max()) * 1.15 + 0.5)
    ax.legend(title="", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title((title + "\n" if title else "") + "★ RepQ-ViT and AdaLog changed this activation's quantizer "
                 "(and both quantize every weight per output channel)", fontsize=9)
    return fig


def plot_quantizer_levels(values: Mapping[str, Tensor], fits: Mapping[str, Mapping[str, FittedQuantizer]], *,
                          title: str = "") -> Figure:
    """One column per set of values (``values[label]``, the label starting with its kind, e.g.
    ``"post-softmax, block 2"``), one row per fitted quantizer (``fits[label][name]``): the values'
    histogram (log counts) with the quantizer's levels on top and its MSE in the title. Post-softmax values on a log x-axis (the level 0 cannot be shown
    there: the grey band is what rounds to 0), the others on the axis :func:`value_axis` picks."""
    kinds = list(values)
    rows = max(len(fits[k]) for k in kinds)
    fig = _figure(5.2 * len(kinds), 1.35 * rows + 0.8)
    axes = np.atleast_2d(fig.subplots(rows, len(kinds), squeeze=False))
    for j, kind in enumerate(kinds):
        v = values[kind].float().reshape(-1)
        twin = next((k.twin for name, k in KINDS.items() if kind.startswith(name)), None)  # "post-softmax, block 2"
        for i in range(rows):
            ax = axes[i, j]
            if i >= len(fits[kind]):
                ax.set_visible(False)
                continue
            name, fq = list(fits[kind].items())[i]
            vax = value_axis(v, twin=twin)
            bins = vax.bins(_with_levels(v, fq), 90)
            draw_histogram(ax, v, vax, bins)
            lo, hi = float(bins[0]), float(bins[-1])
            draw_levels(ax, fq, vax, lo, hi, min_gap=0.004)
            if vax.scale == "log":
                to_zero = fq.fake(v) == 0
                zero = float(to_zero.double().mean())
                gone = v[to_zero & (v > 0)]
                if gone.numel():  # the largest value that rounds to 0: everything left of it does
                    ax.axvspan(lo, min(float(gone.max()), hi), color="0.85", alpha=0.7, zorder=0)
                ax.text(0.01, 0.9, f"→ 0: {zero:.0%}", transform=ax.transAxes, fontsize=7, va="top")
            ax.set_xlim(lo, hi)
            vax.set_ticks(ax, lo, hi)
            ax.set_ylabel("")
            ax.tick_params(labelsize=7)
            ax.set_title(f"{kind}: {name}, MSE {fq.mse(v):.3g}", fontsize=8.5)
            _light_log_ticks(ax)
        axes[min(rows, len(fits[kind])) - 1, j].set_xlabel(value_axis(v, twin=twin).label("value"), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_channel_ranges(study, *, title: str = "") -> Figure:
    """:class:`ptqlib.lab.successors.ReparamStudy`: each channel's range (min to max) of the
    LayerNorm output before and after the fold, with the range of one per-tensor min-max grid
    (before) and of the fold's per-tensor grid (after)."""
    fig = _figure(9.5, 5.0)
    axes = fig.subplots(2, 1)
    k = study.bits
    for ax, folded in zip(axes, (False, True)):
        lo, hi = (t.numpy() for t in study.ranges(folded))
        c = np.arange(lo.size)
        ax.vlines(c, lo, hi, color="#1f77b4" if not folded else "#2ca02c", lw=1.0)
        width = hi - lo
        if folded:
            s = study.fold.scale
            top, bottom = (2 ** (k - 1) - 1) * s, -(2 ** (k - 1)) * s
            ax.axhspan(bottom, top, color="#2ca02c", alpha=0.1, lw=0)
            ax.set_title(f"after the fold: {study.norm} output X̃ = X / r − b; the per-tensor {k}-bit grid with step "
                         f"s̃ = {s:.3g} spans [{bottom:.2g}, {top:.2g}] (band); largest / median channel range "
                         f"{width.max() / max(float(np.median(width)), 1e-12):.1f}", fontsize=9)
        else:
            absmax = float(np.abs(np.concatenate([lo, hi])).max())
            step = absmax / (2 ** (k - 1) - 1)
            ax.axhspan(-absmax, absmax, color="#1f77b4", alpha=0.08, lw=0)
            ax.set_title(f"before: {study.norm} output X per channel; one per-tensor {k}-bit min-max grid "
                         f"(step {step:.3g}) spans ±{absmax:.3g} (band); largest / median channel range "
                         f"{width.max() / max(float(np.median(width)), 1e-12):.1f}", fontsize=9)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlim(-1, lo.size)
        ax.set_ylabel("min … max")
    axes[1].set_xlabel("channel")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
