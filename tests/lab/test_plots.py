"""ptqlib.lab.plots: the notebooks' figures render, small, and say what they drew."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ptqlib.lab import activations, fitting, plots, sweeps


def test_save_figure_and_publish(tmp_path, monkeypatch, capsys):
    fig = Figure(figsize=(4, 3))
    fig.subplots().plot([0, 1], [1, 0])
    path = plots.save_figure(fig, "demo", tmp_path / "figs")
    assert path == tmp_path / "figs" / "demo.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setenv("PTQLIB_FIGURES", str(tmp_path / "env"))
    plots.publish(fig, "demo2")
    assert capsys.readouterr().out == "figure: env/demo2.png\n"
    assert (tmp_path / "env" / "demo2.png").is_file()


def test_figures_dir_defaults_to_the_project_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PTQLIB_FIGURES", raising=False)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert plots.repo_root() == tmp_path.resolve()
    assert plots.figures_dir() == tmp_path.resolve() / "figures"


def _png_size(fig: Figure, tmp_path: Path, name: str) -> int:
    return plots.save_figure(fig, name, tmp_path).stat().st_size


def test_every_figure_renders_small(acts, acts2, tmp_path):
    figs = {
        "dist": plots.plot_distributions(acts, ["post-softmax", "post-GELU"], [0, 5]),
        "heads": plots.plot_heads(acts, "post-softmax", 1),
        "heads_proj": plots.plot_heads(acts, "proj input", 1),
        "channels": plots.plot_channel_outliers(activations.channel_absmax(acts), acts.blocks, detail_block=2),
        "fig3": plots.plot_uniform_vs_twin(acts.values("post-softmax", 1), "post-softmax", 6)[0],
        "bits": plots.plot_error_by_bits(fitting.quantizer_error_table(acts2, (4, 6))),
        "levels": plots.plot_twin_levels(4, 2, fitting.FittedQuantizer("twin-gelu", 4, scale=0.5, m=3),
                                         fitting.FittedQuantizer("uniform", 4, scale=1 / 15, signed=False)),
        "curves": plots.plot_error_curves({"u": fitting.FittedQuantizer("uniform", 4, scale=1 / 15, signed=False),
                                           "t": fitting.FittedQuantizer("twin-softmax", 4, m=2)}, 1e-4, 1, xscale="log"),
        "split": plots.plot_split_search({"s": fitting.split_search(acts.values("post-softmax", 0), 4, "softmax")}),
        "explorer": plots.explorer_figure(acts, 0, "post-GELU", None, 4, "twin-uniform")[0],
        "twin": plots.twin_figure(acts.values("post-softmax", 0), "post-softmax", 4, 2)[0],
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        assert _png_size(fig, tmp_path, name) < 300_000, name


def test_explorer_figure_reports_what_it_drew(acts):
    fig, info = plots.explorer_figure(acts, 2, "post-softmax", 1, 5, "uniform")
    assert info["title"].startswith("block 2 · post-softmax, head 1 · 5-bit uniform")
    assert info["levels"] == 32 and info["values"] == acts.values("post-softmax", 2, 1).numel()
    assert fig.axes[0].get_title() == info["title"] and fig.axes[0].get_xscale() == "log"
    fig2, info2 = plots.explorer_figure(acts, 2, "qkv input", 1, 5, "twin-uniform", fig=fig)
    assert fig2 is fig and "no twin-uniform quantizer" in info2["title"] and info2["head"] == 1
    _, info3 = plots.explorer_figure(acts, 2, "post-GELU", None, 5, "twin-uniform")
    assert info3["kind"] == "twin-gelu" and len(info3["mses"]) == 2


def test_sweep_agreement_and_accuracy_plots(model, images, tmp_path):
    import pandas as pd

    sweep = sweeps.sweep_scales(model, images, [sweeps.SweepTarget("blocks.0.mlp.fc1", "weight")], bits=[4],
                           multipliers=torch.tensor([0.2, 0.6, 1.0]), max_tokens=16, batch=2, progress=False,
                           grad_losses={"hessian": "pseudo_label_ce", "hessian (official KL)": "official_kl"})
    agree = sweeps.metric_agreement(sweep)
    figs = {"sweep": plots.plot_sweeps(sweep, 4, same=[["mse", "cosine"]]), "grads": plots.plot_grad_magnitudes(sweep.grads),
            "agree": plots.plot_agreement(agree, step=math.log2(3)), "agree_abs": plots.plot_agreement(agree, value="log2_distance")}
    for name, fig in figs.items():
        assert _png_size(fig, tmp_path, name) < 300_000
    # the sweep figure: one curve per metric and the task loss, a pick row per metric, the legend outside
    ax = figs["sweep"].axes[0]
    assert len(ax.lines) == 2 * len(sweep.metrics) + 2
    assert len({line.get_color() for line in ax.lines[:2 * len(sweep.metrics):2]}) == len(sweep.metrics)
    assert "mse = cosine" in figs["sweep"].legends[0].get_title().get_text()
    # the heat map's labels are readable (at least 9 pt) and it has a title
    heat = figs["agree"].axes[0]
    assert min(t.get_fontsize() for t in heat.get_yticklabels() + heat.texts) >= 9 and heat.get_title()
    table = pd.DataFrame({"bits": ["W8A8", "W8A8", "W6A6"], "method": ["A", "B", "A"], "top1": [80.0, 81.0, 70.0]})
    fig = plots.plot_accuracy(table, fp_top1=82.0, reference={"W8A8|A": 79.0})
    assert len(fig.axes[0].patches) == 3
    assert json.dumps(fig.axes[0].get_xticks().tolist()) == "[0, 1]"

