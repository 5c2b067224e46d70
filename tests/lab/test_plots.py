"""Tests for ptqlib.lab.activations (the notebooks' data) and ptqlib.lab.plots (their figures).

A random ``test_vit`` (timm's 6-block test model, 160 px) stands in for a real ViT: capture,
sweeps and accuracy tables run on it in a second; the real-data test at the end uses ViT-Tiny.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from ptqlib.lab import activations, fitting, notebook_data, plots, results, sweeps
from ptqlib.errors import PtqlibError
from ptqlib.engine.methods import get_method
from ptqlib.io.models import load_model
from ptqlib.core.quant import twin_gelu_fake, twin_softmax_fake, uniform_fake


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def model():
    return load_model("test_vit", random_init=True, seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def acts(model, images):
    return activations.capture_activations(model, images, max_tokens=64)


@pytest.fixture(scope="module")
def acts2(model, images):
    """Two blocks, for the studies that fit many quantizers per block."""
    return activations.capture_activations(model, images, kinds=["post-softmax", "post-GELU"], blocks=[0, 1], max_tokens=32)


# ----------------------------------------------------------------------------- data


def test_load_notebook_data_without_data_uses_random_weights_and_noise_images():
    d = notebook_data.load_notebook_data("test_vit", None, calib_images=3, val_images=5, allow_random=True)
    assert not d.real_weights and "RANDOM" in d.source
    assert d.calib_images.shape == (3, 3, 160, 160) and d.calib_labels.shape == (3,)
    assert len(d.val) == 5
    x, y = d.val[0]
    assert x.shape == (3, 160, 160) and 0 <= int(y) < 1000


def test_load_notebook_data_rejects_a_missing_folder(tmp_path):
    with pytest.raises(PtqlibError, match="not a directory"):
        notebook_data.load_notebook_data("test_vit", tmp_path / "nope", allow_random=True)


def test_preload_keeps_order_and_labels():
    ds = torch.utils.data.TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
    out = notebook_data.preload(ds, batch_size=3, progress=False)
    assert torch.equal(out.tensors[0], ds.tensors[0]) and torch.equal(out.tensors[1], ds.tensors[1])


# ----------------------------------------------------------------------------- activations


def test_capture_shapes_and_softmax_rows_sum_to_one(acts, model):
    heads = model.blocks[0].attn.num_heads
    assert acts.blocks == list(range(len(model.blocks))) and acts.num_heads == heads
    soft = acts.data[("post-softmax", 0)]
    n_tokens = 1 + (160 // 16) ** 2
    assert soft.shape[0] == heads
    rows = soft.reshape(heads, -1, n_tokens).sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    gelu = acts.channels("post-GELU", 0)
    assert gelu.shape[1] == model.blocks[0].mlp.fc1.out_features and gelu.shape[0] <= 64
    assert float(gelu.min()) >= -0.1701  # GELU's minimum


def test_values_by_head(acts):
    soft_all = acts.values("post-softmax", 1)
    per_head = [acts.values("post-softmax", 1, h) for h in range(acts.num_heads)]
    assert sum(v.numel() for v in per_head) == soft_all.numel()
    proj = acts.channels("proj input", 1)
    width = proj.shape[1] // acts.num_heads
    assert torch.equal(acts.values("proj input", 1, 1), proj[:, width:2 * width].reshape(-1))
    assert acts.values("qkv input", 1, 1).numel() == acts.values("qkv input", 1).numel()  # no heads: ignored
    with pytest.raises(PtqlibError):
        acts.channels("post-softmax", 1)
    with pytest.raises(PtqlibError, match="head"):
        acts.values("post-softmax", 1, acts.num_heads)
    with pytest.raises(PtqlibError, match="no 'post-GELU'"):
        acts.values("post-GELU", 99)


def test_capture_selected_kinds_and_blocks(model, images):
    a = activations.capture_activations(model, images, kinds=["post-GELU"], blocks=[2, 4], max_tokens=16)
    assert set(a.data) == {("post-GELU", 2), ("post-GELU", 4)}
    with pytest.raises(PtqlibError, match="unknown activation kinds"):
        activations.capture_activations(model, images, kinds=["softmax"])


def test_activation_stats_and_channel_absmax(acts):
    stats = activations.activation_stats(acts, bits=8)
    assert set(stats["kind"]) == set(acts.kinds) and len(stats) == len(acts.kinds) * len(acts.blocks)
    g = torch.randn(100_000, generator=torch.Generator().manual_seed(1))
    skew, kurt = activations._moments(g)
    assert abs(skew) < 0.05 and abs(kurt) < 0.1  # a Gaussian: 0 and 0
    absmax = activations.channel_absmax(acts, "post-GELU")
    assert absmax.shape == (len(acts.blocks), acts.channels("post-GELU", 0).shape[1])
    assert torch.equal(absmax[3], acts.channels("post-GELU", 3).abs().amax(0))
    table = activations.channel_outlier_table(absmax, acts.blocks, top=3)
    assert list(table["block"]) == acts.blocks and all(len(u) == 3 for u in table["top units"])
    assert table.loc[3, "max |x|"] == pytest.approx(float(absmax[3].max()))
    assert table.loc[3, "max / median"] == pytest.approx(float(absmax[3].max() / absmax[3].median()))


# ----------------------------------------------------------------------------- fitted quantizers


def test_fitted_quantizers_agree_with_ptqlib_quant():
    x = torch.linspace(-0.2, 3, 101)
    fq = fitting.FittedQuantizer("uniform", 4, scale=0.25, signed=True)
    assert torch.equal(fq.fake(x), uniform_fake(x, torch.tensor(0.25), 4, True))
    fq = fitting.FittedQuantizer("twin-softmax", 4, m=2)
    assert torch.equal(fq.fake(x.clamp(0, 1)), twin_softmax_fake(x.clamp(0, 1), 4, 2))
    fq = fitting.FittedQuantizer("twin-gelu", 4, scale=0.5, m=3)
    assert torch.equal(fq.fake(x), twin_gelu_fake(x, 4, torch.tensor(0.5), 3))


def test_levels():
    assert fitting.FittedQuantizer("uniform", 4, scale=0.1, signed=False).levels().numel() == 16
    assert fitting.FittedQuantizer("uniform", 4, scale=0.1, signed=True).levels().numel() == 16
    tw = fitting.FittedQuantizer("twin-softmax", 4, m=2)  # fine i/32 and coarse i/8, i < 8: 0, 1/8 shared
    assert tw.levels().numel() == 8 + 8 - 2
    assert set(tw.level_groups()) == {"fine range R1", "coarse range R2"}
    g = fitting.FittedQuantizer("twin-gelu", 4, scale=0.5, m=3)
    assert g.levels().numel() == 15 and float(g.levels().min()) == -7 / 16
    assert g.steps() == {"positive": 0.5, "negative": 0.0625}


def test_fit_uniform_is_the_grid_minimum():
    v = torch.randn(5000, generator=torch.Generator().manual_seed(0)).abs() ** 3
    best = fitting.fit_uniform(v, 4)
    assert not best.signed
    step0 = float(v.max()) / 15
    brute = min(fitting.FittedQuantizer("uniform", 4, scale=float(m) * step0, signed=False).mse(v) for m in fitting.FIT_GRID)
    assert best.mse(v) == pytest.approx(brute, rel=1e-6)
    assert best.mse(v) <= fitting.fit_uniform(v, 4, search=False).mse(v)


def test_fit_twin_softmax_searches_m():
    v = torch.softmax(3 * torch.randn(200, 50, generator=torch.Generator().manual_seed(0)), -1).reshape(-1)
    best = fitting.fit_twin_softmax(v, 6)
    errs = [fitting.fit_twin_softmax(v, 6, m=m).mse(v) for m in range(6)]
    assert 0 <= best.m <= 5 and best.mse(v) == pytest.approx(min(errs))


def test_fit_twin_gelu_matches_a_brute_force_search():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 1.5
    v = torch.nn.functional.gelu(x)
    best = fitting.fit_twin_gelu(v, 4)
    step0 = float(v.max()) / 7
    brute = min(fitting.FittedQuantizer("twin-gelu", 4, scale=float(s) * step0, m=m).mse(v)
                for s in fitting.FIT_GRID[::3] for m in fitting.TWIN_GELU_SPLITS)
    assert best.mse(v) <= brute * 1.0001
    assert best.mse(v) < fitting.fit_uniform(v, 4).mse(v)  # the twin quantizer wins on GELU values


def test_fit_quantizer_falls_back_to_uniform_without_a_twin_kind():
    v = torch.randn(1000)
    assert fitting.fit_quantizer(v, "twin-uniform", 4, None).kind == "uniform"
    with pytest.raises(PtqlibError):
        fitting.fit_quantizer(v, "log2", 4, "softmax")


def test_quantizer_error_table_and_split_search(acts2):
    acts = acts2
    t = fitting.quantizer_error_table(acts, (4, 8))
    assert len(t) == 2 * 2 * len(acts.blocks)
    assert (t["uniform"] <= t["uniform_minmax"] * (1 + 1e-6)).all()
    assert torch.allclose(torch.tensor(t["twin_over_uniform"].values), torch.tensor((t["twin"] / t["uniform"]).values))
    s = fitting.split_search(acts.values("post-softmax", 0), 4, "softmax")
    assert list(s["m"]) == [0, 1, 2, 3] and {"fine", "coarse"} <= set(s.columns)
    g = fitting.split_search(acts.values("post-GELU", 0), 4, "gelu")
    assert list(g["m"]) == list(fitting.TWIN_GELU_SPLITS)
    z = fitting.zero_rounding_table(acts, 4)
    assert list(z["block"]) == acts.blocks and z[["uniform: values -> 0", "twin: values -> 0"]].stack().between(0, 1).all()
    v = acts.values("post-softmax", 0)
    uni = fitting.fit_quantizer(v, "uniform", 4, "softmax")
    assert z.loc[0, "uniform MSE"] == pytest.approx(uni.mse(v))
    assert z.loc[0, "uniform: values -> 0"] == pytest.approx(float((uni.fake(v)[v != 0] == 0).double().mean()))


def test_bit_layout_worked_example():
    t = fitting.bit_layout([0.10, 0.30], fitting.FittedQuantizer("twin-softmax", 4, m=2))
    assert t["code"].tolist() == [3, 10] and t["bits"].tolist() == ["0011", "1010"]
    assert t["range bit"].tolist() == [0, 1] and t["dequantized"].tolist() == [0.09375, 0.25]
    u = fitting.bit_layout([0.26, -1.0], fitting.FittedQuantizer("uniform", 4, scale=0.25, signed=True))
    assert u["code"].tolist() == [1, -4] and u["bits"].tolist() == ["0001", "1100"]


# ----------------------------------------------------------------------------- sweeps


def test_tail_runner_equals_the_full_model(model, images):
    from ptqlib.engine.config import PTQConfig
    from ptqlib.engine.wrap import quantize_model

    import copy

    wrapped = quantize_model(copy.deepcopy(model), PTQConfig())
    with torch.inference_mode():
        full = wrapped(images).float()
    for site in ("blocks.0.attn.qkv", "blocks.4.mlp.fc2", "head"):
        tail = sweeps._Tail(wrapped, site, images, batch=1)
        assert tail.cached is not None
        assert torch.allclose(tail.logits(), full, atol=1e-5)


def test_sweep_scales_and_agreement(model, images):
    targets = [sweeps.SweepTarget("blocks.1.attn.qkv", "weight"), sweeps.SweepTarget("blocks.2.mlp.fc2", "input"),
               sweeps.SweepTarget("blocks.3.attn.matmul_av", "a")]
    mults = torch.tensor([0.1, 0.5, 1.0])
    sweep = sweeps.sweep_scales(model, images, targets, bits=[4, 12], multipliers=mults,
                           grad_losses={"hessian": "pseudo_label_ce", "hessian (official KL)": "official_kl"},
                           max_tokens=32, batch=2, progress=False)
    t = sweep.table
    assert len(t) == 3 * 2 * 3
    assert sweep.metrics == ["mse", "cosine", "pearson", "l1", "hessian", "hessian (official KL)"]
    assert (t["task_kl"] >= -1e-6).all()
    # 12 bits at the min-max scale barely changes the outputs; 4 bits at 0.1x does
    fine = t[(t.bits == 12) & t.multiplier.between(0.99, 1.01)]["task_kl"]
    coarse = t[(t.bits == 4) & t.multiplier.between(0.09, 0.11)]["task_kl"]
    assert len(fine) == len(coarse) == 3
    assert fine.max() < coarse.min()
    g_ours = sweep.grads["hessian"]["blocks.1.attn.qkv"].abs().mean()
    g_off = sweep.grads["hessian (official KL)"]["blocks.1.attn.qkv"].abs().mean()
    assert g_off < 1e-4 * g_ours  # the official KL gradient vanishes
    agree = sweeps.metric_agreement(sweep)
    assert len(agree) == 3 * 2 * len(sweep.metrics)
    for _, row in agree.iterrows():
        g = t[(t.target == row.target) & (t.bits == row.bits)]
        assert row.picked == g.loc[g[row.metric].idxmin(), "multiplier"]
        assert row.optimum == g.loc[g["task_kl"].idxmin(), "multiplier"]
        assert row.loss_ratio >= 1 - 1e-9
        assert row.log2_distance == pytest.approx(abs(math.log2(row.picked / row.optimum)))


def test_sweep_rejects_unknown_sites(model, images):
    with pytest.raises(PtqlibError, match="no quantized site"):
        sweeps.sweep_scales(model, images, [sweeps.SweepTarget("blocks.99.mlp.fc2", "input")], progress=False)


# ----------------------------------------------------------------------------- accuracy tables


def test_run_configs_dedupes_and_caches(model, images, tmp_path):
    val = torch.utils.data.TensorDataset(images, torch.tensor([1, 2]))
    configs = {"a": get_method("minmax", 8, 8), "b": get_method("minmax", 8, 8), "c": get_method("minmax", 4, 4)}
    first = results.run_configs(model, images, val, configs, cache_dir=tmp_path, cache_tag={"x": 1}, progress=False)
    assert list(first["name"]) == ["a", "b", "c"] and not first["cached"].any()
    assert first.loc[0, "top1"] == first.loc[1, "top1"]
    assert len(list(tmp_path.glob("*.json"))) == 2  # a and b are one config
    again = results.run_configs(model, images, val, configs, cache_dir=tmp_path, cache_tag={"x": 1}, progress=False)
    assert again["cached"].all() and list(again["top1"]) == list(first["top1"])
    other = results.run_configs(model, images, val, {"c": configs["c"]}, cache_dir=tmp_path, cache_tag={"x": 2}, progress=False)
    assert not other["cached"].any()


def _main_job_file(tmp_path, config, *, engine):
    record = {"model": "m", "random_init": False, "calib_images": 2, "eval_images": 2, "top1": 12.5, "top5": 50.0,
              "calib_seconds": 3.0, "eval_seconds": 1.0, "fp_eval_seconds": 1.0, "config": config.to_dict(),
              "engine": engine}
    path = tmp_path / f"m-{engine}.json"
    path.write_text(json.dumps([record]))
    return path


def test_main_job_results_are_reused_only_from_the_same_engine(model, images, tmp_path, monkeypatch):
    config = get_method("minmax", 8, 8)
    fresh = _main_job_file(tmp_path, config, engine=results.engine_fingerprint())
    found = results.main_job_results(fresh, model_name="m", calib_images=2, val_images=2)
    assert list(found.values()) == [{"top1": 12.5, "top5": 50.0, "images": 2, "calib_seconds": 3.0, "eval_seconds": 1.0}]
    assert results.main_job_results(fresh, model_name="other", calib_images=2, val_images=2) == {}
    assert results.main_job_results(fresh, model_name="m", calib_images=2, val_images=3) == {}
    stale = _main_job_file(tmp_path, config, engine="0123456789abcdef")  # computed by other engine sources
    assert results.main_job_results(stale, model_name="m", calib_images=2, val_images=2) == {}
    assert results.main_job_results(tmp_path / "missing.json", model_name="m", calib_images=2, val_images=2) == {}

    def no_calibration(*args, **kwargs):
        raise AssertionError("a reused config must not be calibrated")

    monkeypatch.setattr(results, "_calibrate_and_evaluate", no_calibration)
    val = torch.utils.data.TensorDataset(images, torch.tensor([1, 2]))
    table = results.run_configs(model, images, val, {"x": config}, reuse=found, progress=False)
    assert table.loc[0, "top1"] == 12.5 and table.loc[0, "source"] == "main job" and table.loc[0, "cached"]


def test_compare_metrics_and_verdict():
    import pandas as pd

    rows = []
    for layer, (d_h, d_m) in {"a @4b": (0.0, 1.0), "b @4b": (0.5, 0.5), "c @4b": (0.2, 0.4)}.items():
        rows.append({"layer": layer, "metric": "hessian", "log2_distance": d_h, "loss_ratio": 1 + d_h})
        rows.append({"layer": layer, "metric": "mse", "log2_distance": d_m, "loss_ratio": 1 + d_m})
    agree = pd.DataFrame(rows)
    c = sweeps.compare_metrics(agree, "hessian", "mse")
    assert (c["closer"], c["same"], c["farther"]) == (2, 1, 0)
    assert c["picks closer?"].startswith("yes")
    assert sweeps.compare_metrics(agree, "mse", "hessian")["picks closer?"].startswith("no")
    assert sweeps.compare_metrics(agree, "mse", "mse")["picks closer?"].startswith("no difference")
    assert "supports" in sweeps.verdict(["yes: ...", "yes: ..."])
    assert "contradicts" in sweeps.verdict(["no: ...", "no: ..."])
    assert "does not support" in sweeps.verdict(["yes: ...", "mixed: ..."])
    summary = sweeps.agreement_summary(agree.assign(spearman=0.5))
    assert summary.loc["hessian", "optimum_hits"] == 1 and summary.loc["mse", "cases"] == 3


def test_with_references_puts_paper_and_official_numbers_beside_each_row():
    import pandas as pd

    from ptqlib.io.models import PAPER_MODELS

    table = pd.DataFrame({"method": ["baseptq", "ptq4vit", "ptq4vit"], "w_bits": [6, 6, 4], "a_bits": [6, 6, 4],
                          "top1": [50.0, 70.0, 10.0]})
    official = pd.DataFrame({"method": ["ptq4vit"], "w_bits": [6], "a_bits": [6], "top1": [75.77]})
    paper = PAPER_MODELS[1]
    out = results.with_references(table, paper, official)
    assert list(out["bits"]) == ["W6A6", "W6A6", "W4A4"] and list(out["method name"]) == ["BasePTQ", "PTQ4ViT", "PTQ4ViT"]
    assert out["paper top-1"].tolist()[:2] == [paper.base_w6a6, paper.ptq4vit_w6a6] and pd.isna(out["paper top-1"][2])
    assert out.loc[1, "paper drop"] == pytest.approx(paper.fp_top1 - paper.ptq4vit_w6a6)
    assert out.loc[1, "official code top-1"] == 75.77 and pd.isna(out.loc[0, "official code top-1"])
    assert "paper top-1" not in results.with_references(table)


def test_official_results_parser(tmp_path):
    md = tmp_path / "r.md"
    md.write_text("| configuration | top-1 | top-5 | time |\n|---|---|---|---|\n| float32 | 82.62 | 96.00 | — |\n"
                  "| PTQ4ViT W8A8 (Hessian) | 81.00 | 95.54 | 1 s |\n| BasePTQ W6A6 (cosine) | 63.15 | 87.69 | 2 s |\n")
    t = results.official_results(md)
    assert t[["method", "w_bits", "a_bits", "top1"]].values.tolist() == [
        ["float", 32, 32, 82.62], ["ptq4vit", 8, 8, 81.0], ["baseptq", 6, 6, 63.15]]
    assert results.official_results(tmp_path / "missing.md") is None


# ----------------------------------------------------------------------------- figures


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
    for name, fig in {"sweep": plots.plot_sweeps(sweep, 4), "grads": plots.plot_grad_magnitudes(sweep.grads),
                      "agree": plots.plot_agreement(sweeps.metric_agreement(sweep))}.items():
        assert _png_size(fig, tmp_path, name) < 300_000
    table = pd.DataFrame({"bits": ["W8A8", "W8A8", "W6A6"], "method": ["A", "B", "A"], "top1": [80.0, 81.0, 70.0]})
    fig = plots.plot_accuracy(table, fp_top1=82.0, reference={"W8A8|A": 79.0})
    assert len(fig.axes[0].patches) == 3
    assert json.dumps(fig.axes[0].get_xticks().tolist()) == "[0, 1]"


# ----------------------------------------------------------------------------- real data


def test_real_vit_tiny_activations_are_what_the_paper_says(shared_data):
    d = notebook_data.load_notebook_data("vit_tiny_patch16_224", shared_data.root, calib_images=2, val_images=4)
    assert d.real_weights and "calib32.txt" in d.source and len(d.val) == 4
    acts = activations.capture_activations(d.model, d.calib_images, kinds=["post-softmax", "post-GELU", "qkv input"],
                                 blocks=[0, 9], max_tokens=128)
    stats = activations.activation_stats(acts).set_index(["kind", "block"])
    for block in (0, 9):
        assert stats.loc[("post-softmax", block), "excess_kurtosis"] > 10 > stats.loc[("qkv input", block), "excess_kurtosis"]
        assert stats.loc[("post-softmax", block), "zero_share_8bit"] > 0.5
    soft = acts.values("post-softmax", 9)
    assert fitting.fit_quantizer(soft, "twin-uniform", 6, "softmax").mse(soft) < fitting.fit_uniform(soft, 6, signed=False).mse(soft)
