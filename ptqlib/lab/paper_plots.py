"""Figures of the paper's experiments (notebook 04), drawn from :mod:`ptqlib.io.experiments`'s tables.

Each figure puts one bit-width per panel with its own y-axis, so the W8A8 differences (a few
tenths of a point) are not flattened by the W6A6 ones (tens of points); accuracy panels plot the
*drop* from the float model, with the 95 % interval of each top-1 as an error bar, and say so
in their axis labels. Legends sit outside the data.
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..io import experiments as paper

__all__ = ["plot_main", "plot_draws", "plot_variants", "plot_calib_size", "plot_successors"]

_PALETTE = sns.color_palette("colorblind")


def _interval(frame: pd.DataFrame, column: str = "95% CI") -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([float(s.split("–")[0]) for s in frame[column]])
    hi = np.array([float(s.split("–")[1]) for s in frame[column]])
    return lo, hi


def _drop_bars(ax, frame: pd.DataFrame, fp: float, labels: Sequence[str], colors: Sequence[Any],
               reference: Sequence[float | None] = ()) -> None:
    """Bars of the drop from float with its paired 95 % interval (float and quantized model on the
    same images)."""
    lo, hi = _interval(frame, "drop 95% CI")
    drop = frame["drop"].to_numpy()
    x = np.arange(len(frame))
    ax.bar(x, drop, color=colors, width=0.7)
    ax.errorbar(x, drop, yerr=[drop - lo, hi - drop], fmt="none", ecolor="black", capsize=4, lw=1)
    for i, ref in enumerate(reference):
        if ref is not None and not pd.isna(ref):
            ax.plot([i - 0.35, i + 0.35], [fp - ref] * 2, color="black", ls="--", lw=1.5)
    for i, d in enumerate(drop):
        ax.annotate(f"{d:.2f}", (i + 0.36, d), xytext=(2, 0), textcoords="offset points", ha="left", va="center",
                    fontsize=8)
    ax.set_xticks(x, labels, rotation=20 if max(map(len, labels)) > 8 else 0, ha="right" if max(map(len, labels)) > 8 else "center")
    ax.set_ylabel("drop from float (points)")
    top = max(float(np.max(hi)), max((fp - r for r in reference if r is not None and not pd.isna(r)), default=0))
    ax.set_ylim(min(0.0, float(np.min(lo))) * 1.1, top * 1.15 + 0.05)


def plot_main(t: paper.Tables) -> Figure:
    """The main table as drops from float per bit-width (own y-axis per panel), with the official
    code on the same images as a dashed line."""
    table = paper.main_table(t)
    fp = float(table.loc[table.method == "float", "top-1"].iloc[0])
    table = table[table.method != "float"]
    bits = list(dict.fromkeys(table.bits))
    fig, axes = plt.subplots(1, len(bits), figsize=(3.4 * len(bits), 3.6), layout="constrained")
    for ax, b in zip(np.atleast_1d(axes), bits):
        part = table[table.bits == b]
        colors = [_PALETTE[0] if m == "BasePTQ" else _PALETTE[1] for m in part.method]
        _drop_bars(ax, part, fp, list(part.method), colors, list(part.get("official code", [])))
        ax.set_title(b)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_PALETTE[0]), plt.Rectangle((0, 0), 1, 1, color=_PALETTE[1]),
               plt.Line2D([], [], color="black", ls="--")]
    fig.legend(handles, ["BasePTQ (ptqlib)", "PTQ4ViT (ptqlib)", "official code, same images"], loc="outside lower center",
               ncols=3, frameon=False)
    fig.suptitle(f"ViT-Tiny, {int(t.float_record['eval_images'])} images: top-1 drop from float "
                 f"({fp:.2f} %); bars: paired 95 % interval")
    return fig


def plot_draws(t: paper.Tables, names: str | Sequence[str] = paper.STATISTICS) -> Figure:
    """Top-1 of every calibration draw of the sweeps ``names`` (dots) with mean ± std, one panel per
    bit-width."""
    long = paper.draws_long(t, names)
    bits = sorted(long.bits.unique(), reverse=True)
    width = 1.3 * long.method.nunique() + 1.0
    fig, axes = plt.subplots(1, len(bits), figsize=(width * len(bits), 3.6), layout="constrained")
    for ax, b in zip(np.atleast_1d(axes), bits):
        part = long[long.bits == b].assign(method=lambda f: f.method.str.replace(" (", "\n(", regex=False))
        sns.stripplot(part, x="method", y="top-1", hue="method", ax=ax, palette=_PALETTE[:part.method.nunique()],
                      size=6, jitter=0.15, legend=False)
        sns.pointplot(part, x="method", y="top-1", ax=ax, color="black", errorbar="sd", markers="_", capsize=0.2,
                      linestyle="none")
        ax.set_title(f"{b}: {part.draw.nunique()} draws of 32 images")
        ax.set_xlabel("")
        ax.set_ylabel("top-1 (%)")
    fig.suptitle("Calibration-draw spread (dots: draws; black: mean ± std)")
    return fig


def plot_variants(frame: pd.DataFrame, label: str, t: paper.Tables, title: str) -> Figure:
    """Rows of one table (metric comparison, ablation) as drops from float per bit-width."""
    fp = float(t.float_record["top1"])
    bits = list(dict.fromkeys(frame.bits))
    names = list(dict.fromkeys(frame[label]))
    colors = dict(zip(names, _PALETTE))
    fig, axes = plt.subplots(1, len(bits), figsize=(0.9 * len(names) * len(bits) + 1.5, 3.6), layout="constrained")
    for ax, b in zip(np.atleast_1d(axes), bits):
        part = frame[frame.bits == b]
        _drop_bars(ax, part, fp, list(part[label]), [colors[n] for n in part[label]])
        ax.set_title(b)
    fig.suptitle(f"{title}: top-1 drop from float ({fp:.2f} %); bars: paired 95 % interval")
    return fig


def plot_calib_size(t: paper.Tables) -> Figure:
    """Top-1 of every draw (dots) with mean ± std per calibration-set size, the ten-draw spread at
    32 images as a band, and the mean calibration time."""
    table = paper.calib_size_table(t)
    long = paper.calib_size_long(t)
    draws = paper.draws_table(t)
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    sizes = table["images"].to_numpy()
    pos = {int(v): i for i, v in enumerate(sizes)}
    row = draws[(draws.method == "PTQ4ViT") & (draws.bits == "W6A6")]
    if len(row):
        m, s = float(row["mean"].iloc[0]), float(row["std"].iloc[0])
        ax.axhspan(m - s, m + s, color=_PALETTE[7], alpha=0.25, label="32 images, 10 draws: mean ± std")
    ax.scatter([pos[int(v)] for v in long["images"]], long["top-1"], color=_PALETTE[1], s=22, label="one draw", zorder=3)
    ax.errorbar(np.arange(len(sizes)), table["mean"], yerr=table["std"].fillna(0), fmt="_", color="black",
                capsize=6, markersize=14, label="mean ± std over the draws", zorder=4)
    ax.set_xticks(np.arange(len(sizes)), [str(int(v)) for v in sizes])
    ax.set_xlabel("calibration images")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("PTQ4ViT W6A6: accuracy per calibration-set size")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.2), frameon=False, fontsize=8, ncols=2)
    ax_t.plot(np.arange(len(sizes)), table["calib s (mean)"], "o-", color=_PALETTE[2])
    ax_t.set_xticks(np.arange(len(sizes)), [str(int(v)) for v in sizes])
    ax_t.set_xlabel("calibration images")
    ax_t.set_ylabel("calibration time (s)")
    ax_t.set_title("mean calibration time as measured\n(2-core CPU; other jobs shared it at times)", fontsize=10)
    return fig


def plot_successors(t: paper.Tables) -> Figure:
    """The successors table (notebook 05) as drops from float per bit-width, one bar per method with
    its paired 95 % interval; the official RepQ-ViT code on the same images as a dashed line on the
    RepQ-ViT bar, the published drop on ViT-S as a cross (another model: the order of magnitude),
    and the target drop as a dotted line."""
    table = paper.successors_table(t)
    fp = float(t.float_record["top1"])
    bits = list(dict.fromkeys(table.bits))
    names = list(paper.SUCCESSOR_ROWS.values())
    colors = dict(zip(names, _PALETTE))
    abbrev = {"ptq4vit": "PTQ4ViT", "repq": "RepQ-ViT", "adalog": "AdaLog", "adalog-head": "AdaLog+head",
              "adalog-erq": "AdaLog+ERQ", "combined": "combined"}
    short = {label: abbrev.get(name, name) for name, label in paper.SUCCESSOR_ROWS.items()}
    fig, axes = plt.subplots(1, len(bits), figsize=(4.2 * len(bits), 3.9), layout="constrained")
    for ax, b in zip(np.atleast_1d(axes), bits):
        part = table[table.bits == b].reset_index(drop=True)
        _drop_bars(ax, part, fp, [short[m] for m in part.method], [colors[m] for m in part.method],
                   list(part.get("official code", [])))
        published = part["published drop ViT-S"].to_numpy(dtype=float)
        ax.plot(np.arange(len(part)), published, "x", color="black", ms=7, mew=1.5)
        target = paper.SUCCESSOR_TARGETS.get(b)
        if target is not None:
            ax.axhline(target, color=_PALETTE[3], ls=":", lw=1.5)
        lo, hi = ax.get_ylim()
        top = np.nanmax(np.concatenate([[hi], published * 1.1, [(target or 0) * 1.15]]))
        ax.set_ylim(lo, top)
        ax.set_title(b)
    handles = [plt.Line2D([], [], color="black", ls="--"), plt.Line2D([], [], color="black", marker="x", ls="none"),
               plt.Line2D([], [], color=_PALETTE[3], ls=":")]
    fig.legend(handles, ["official RepQ-ViT code, same images", "published drop, ViT-S (another model)",
                         "target drop"], loc="outside lower center", ncols=3, frameon=False,
               title="+head: one matmul scale per head; +ERQ: ERQ's ridge weight correction; combined: both",
               title_fontsize=8)
    fig.suptitle(f"ViT-Tiny, {int(t.float_record['eval_images'])} images: top-1 drop from float ({fp:.2f} %); "
                 "bars: paired 95 % interval")
    return fig
