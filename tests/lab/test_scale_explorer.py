"""The scale explorer: its computations (ptqlib.lab.explore) checked against the model and the core
quantizers and metrics computed here independently, and its widget driven headless."""
from __future__ import annotations

import copy

import ipywidgets
import pytest
import torch
import torch.nn.functional as F

from ptqlib.core import metrics as core_metrics
from ptqlib.core.quant import UniformQuantizer, minmax_step, twin_gelu_fake, twin_softmax_fake, uniform_fake
from ptqlib.engine.config import PTQConfig
from ptqlib.engine.wrap import quantize_model
from ptqlib.errors import PtqlibError
from ptqlib.lab import explore, plots
from ptqlib.lab.widgets import ScaleExplorer

DPI = 40
TWINS = {"post-softmax (attn·v)": "twin-softmax", "fc2 input (post-GELU)": "twin-gelu"}


@pytest.fixture(scope="module")
def study(model, images):
    """test_vit (6 blocks, 2 heads, width 64) on the lab fixtures' 2 images, 32 rows per site."""
    return explore.ScaleStudy(model, images, max_tokens=32)


@pytest.fixture
def explorer(study):
    return ScaleExplorer(study, block=1, operand="fc2 input (post-GELU)", bits=4, dpi=DPI)


def _curve(out, outputs, grad, name):
    return torch.stack([core_metrics.METRICS[name](out, o, grad) for o in outputs]).double()


# ----------------------------------------------------------------------------- computations


def test_every_operand_of_every_block_is_captured(study, model):
    assert study.blocks == list(range(len(model.blocks)))
    for b in study.blocks:
        assert study.operands(b) == list(explore.OPERANDS)
        for name in study.operands(b):
            d = study.site(b, name)
            assert d.block == b and d.site.startswith(f"blocks.{b}.") and d.grad is not None
            assert d.grad.shape == d.output.shape
    assert study.has_twin(0, "post-softmax (attn·v)") and study.has_twin(0, "fc2 input (post-GELU)")
    assert not study.has_twin(0, "qkv input") and not study.has_twin(0, "v (attn·v)")
    with pytest.raises(PtqlibError, match="no 'nope' captured"):
        study.site(0, "nope")


def test_candidates_span_the_papers_grid_with_min_max_among_them():
    x = explore.MULTIPLIERS
    assert float(x[0]) == pytest.approx(0.01) and float(x[-1]) == pytest.approx(1.2)
    assert bool((x[1:] > x[:-1]).all()) and bool((x == 1.0).any())
    ratios = x[1:] / x[:-1]
    assert float(ratios.max()) < 1.1  # log-spaced: every step is under 10 %


def test_site_outputs_are_the_models_outputs(study, model):
    block = model.blocks[2]
    x_in = study.site(2, "fc1 input").x
    assert torch.allclose(study.site(2, "fc1 weight").output, block.mlp.fc1(x_in), atol=1e-5)
    q, kt = study.site(2, "q (q·kᵀ)").x, study.site(2, "k (q·kᵀ)").x
    assert torch.allclose(study.site(2, "k (q·kᵀ)").output, q @ kt, atol=1e-5)
    probs = study.site(2, "post-softmax (attn·v)").x
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)  # whole rows of probabilities


def test_a_candidate_output_is_the_quantized_layer_output(study, model):
    """The explorer's Ô is the engine's own layer with that one quantizer set and on."""
    wrapped = quantize_model(copy.deepcopy(model), PTQConfig())
    layer = wrapped.blocks[3].mlp.fc2
    data = study.site(3, "fc2 input (post-GELU)")
    curves = study.curves(3, "fc2 input (post-GELU)", 4)
    i = curves.picks["mse"]
    layer.input_quant = UniformQuantizer(4, signed=True).set(scale=torch.tensor(curves.params[i]["scale"]))
    with torch.no_grad():
        expected = layer(data.x)
        _, got = explore.operand_outputs(data, "uniform", 4, [curves.params[i]])
    assert torch.allclose(got[0], expected, atol=1e-5)
    assert float(core_metrics.mse(data.output, expected)) == pytest.approx(float(curves.metrics["mse"][i]), rel=1e-4)


@pytest.mark.parametrize("operand, quantizer", [("fc1 weight", "uniform"), ("fc2 input (post-GELU)", "uniform"),
                                                ("k (q·kᵀ)", "uniform"), ("post-softmax (attn·v)", "twin-uniform"),
                                                ("fc2 input (post-GELU)", "twin-uniform")])
@torch.no_grad()
def test_picks_are_the_argmin_of_curves_computed_independently(study, model, operand, quantizer):
    b, bits = 4, 4
    c = study.curves(b, operand, bits, quantizer)
    d = study.site(b, operand)
    block = model.blocks[b]
    mults = explore.MULTIPLIERS.tolist()
    # the layer output, rebuilt here from the model's own parameters and the captured operands
    if operand == "fc1 weight":
        x_in, w = study.site(b, "fc1 input").x, block.mlp.fc1.weight.detach()
        step0 = float(minmax_step(w.abs().max(), bits))
        outs = [F.linear(x_in, uniform_fake(w, torch.tensor(step0 * m), bits), block.mlp.fc1.bias) for m in mults]
        out = F.linear(x_in, w, block.mlp.fc1.bias)
    elif operand == "fc2 input (post-GELU)":
        x, w = d.x, block.mlp.fc2.weight.detach()
        if quantizer == "uniform":
            step0 = float(minmax_step(d.absmax, bits))
            fakes = [uniform_fake(x, torch.tensor(step0 * m), bits) for m in mults]
        else:
            step0 = float(minmax_step(d.max, bits))
            fakes = [twin_gelu_fake(x, bits, torch.tensor(step0 * m), int(p["m"])) for m, p in zip(mults, c.params)]
            assert [p["scale"] for p in c.params] == pytest.approx([step0 * m for m in mults])
        outs = [F.linear(f, w, block.mlp.fc2.bias) for f in fakes]
        out = F.linear(x, w, block.mlp.fc2.bias)
    elif operand == "k (q·kᵀ)":
        q, kt = study.site(b, "q (q·kᵀ)").x, d.x
        step0 = float(minmax_step(d.absmax, bits))
        outs = [q @ uniform_fake(kt, torch.tensor(step0 * m), bits) for m in mults]
        out = q @ kt
    else:  # post-softmax twin: the split m = 0..k-1
        probs, v = d.x, study.site(b, "v (attn·v)").x
        assert c.x.tolist() == [2.0 ** -m for m in range(bits)]
        outs = [twin_softmax_fake(probs, bits, m) @ v for m in range(bits)]
        out = probs @ v
    assert torch.allclose(out, d.output, atol=1e-5)
    assert set(c.picks) == set(explore.METRIC_NAMES)
    for name in explore.METRIC_NAMES:
        mine = _curve(out, outs, d.grad, name)
        assert torch.allclose(c.metrics[name], mine, rtol=1e-3, atol=1e-9), name
        assert c.picks[name] == int(torch.argmin(c.metrics[name])), name
        # the study's pick is the independent curve's minimum (up to float rounding between near-ties)
        assert float(mine[c.picks[name]]) <= float(mine.min()) * (1 + 1e-4) + 1e-12, name


def test_twin_gelu_negative_step_is_a_power_of_two_fraction(study):
    c = study.curves(1, "fc2 input (post-GELU)", 6, "twin-uniform")
    for i in (0, len(c.params) // 2, len(c.params) - 1):
        s = c.quantizer(i).steps()
        assert s["negative"] == pytest.approx(s["positive"] * 2.0 ** -c.params[i]["m"])
    # Δn tracks the same best negative step: m grows with Δp
    ms = [p["m"] for p in c.params]
    assert ms == sorted(ms)


def test_views_and_the_per_channel_view(study):
    v = study.view(2, "fc1 weight", 4, index=5)
    assert v.index == 5 and v.channels is not None
    w = study.site(2, "fc1 weight").x
    assert v.channels.channel_step.shape == (w.shape[0],)
    assert torch.allclose(v.channels.channel_step, (w.abs().amax(1) / 7).double())
    assert v.channels.step == pytest.approx(v.info()["steps"]["step"])
    assert v.error == pytest.approx(float((uniform_fake(w, torch.tensor(v.channels.step), 4) - w).square().mean()), rel=1e-5)
    g = study.view(2, "fc2 input (post-GELU)", 4)
    assert g.channels.channel_step.shape == (study.site(2, "fc2 input (post-GELU)").x.shape[1],)
    assert study.view(2, "qkv input", 4).channels is None
    with pytest.raises(PtqlibError, match="outside"):
        study.view(2, "qkv input", 4, index=10_000)


# ----------------------------------------------------------------------------- the widget


def test_every_site_can_be_selected(explorer, study):
    assert isinstance(explorer.block, ipywidgets.SelectionSlider)
    assert [v for _, v in explorer.block.options] == study.blocks
    assert list(explorer.operand.options) == list(explore.OPERANDS)
    for name in explore.OPERANDS:
        explorer.operand.value = name
        assert explorer.info["operand"] == name and explorer.info["block"] == 1
        assert explorer.info["site"] == study.site(1, name).site
        assert f"block 1 · {name}" in explorer.summary.value
    for b in study.blocks:
        explorer.block.value = b
        assert explorer.info["block"] == b and explorer.info["site"].startswith(f"blocks.{b}.")


def test_moving_the_slider_changes_the_error_and_the_marked_point(explorer):
    c = explorer.curves()
    assert explorer.info["x"] == 1.0 and explorer.scale.label == "×1"  # starts at the min-max step
    before = dict(explorer.info)
    png = explorer.image.value
    explorer.scale.value = 10
    i = explorer.info
    assert i["index"] == 10 and i["x"] == pytest.approx(float(c.x[10])) and i["label"] == c.labels[10]
    assert i["marker_x"] == pytest.approx(float(c.x[10])) != before["marker_x"]
    assert i["error"] == pytest.approx(float(c.operand_mse[10])) and i["error"] != before["error"]
    assert i["metrics"] == {m: pytest.approx(float(v[10])) for m, v in c.metrics.items()}
    assert i["steps"]["step"] == pytest.approx(c.params[10]["scale"])
    assert explorer.image.value != png
    # the picks do not move with the slider; the current-point dots do
    assert i["picks"] == before["picks"] and i["pick_index"] == c.picks


def test_picks_in_the_widget_are_each_curves_argmin(explorer):
    for quantizer in ("uniform", "twin-uniform"):
        explorer.quantizer.value = quantizer
        c = explorer.curves()
        assert explorer.info["pick_index"] == {m: int(torch.argmin(v)) for m, v in c.metrics.items()}
        assert explorer.info["picks"] == {m: pytest.approx(float(c.x[int(torch.argmin(v))])) for m, v in c.metrics.items()}
        assert all(f"{m} {c.labels[j]}" in explorer.summary.value for m, j in c.picks.items())


def test_twin_kind_is_disabled_where_no_twin_exists(explorer, study):
    explorer.quantizer.value = "twin-uniform"
    assert explorer.info["kind"] == "twin-gelu"
    for name, op in explore.OPERANDS.items():
        explorer.operand.value = name
        if name in TWINS:
            assert not explorer.quantizer.disabled and explorer.quantizer.value == "twin-uniform"
            assert explorer.info["kind"] == TWINS[name]
        else:
            assert explorer.quantizer.disabled and explorer.quantizer.value == "uniform"
            assert explorer.info["kind"] == "uniform" and not explorer.info["twin_available"]


def test_post_softmax_twin_slider_moves_the_split(explorer):
    explorer.operand.value = "post-softmax (attn·v)"
    explorer.quantizer.value = "twin-uniform"
    assert [label for label, _ in explorer.scale.options] == [f"m = {m} (Δ1 = Δ2/{2 ** m})" for m in range(4)]
    explorer.scale.value = 1
    assert explorer.info["steps"]["fine"] == pytest.approx(2.0 ** -3 / 2)
    explorer.scale.value = 3
    assert explorer.info["steps"]["fine"] == pytest.approx(2.0 ** -3 / 8)
    explorer.quantizer.value = "uniform"  # back to scales: the slider starts at the min-max step
    assert explorer.scale.label == "×1"


def test_one_redraw_per_change_and_the_scale_is_kept(explorer):
    explorer.scale.value = 20
    x = explorer.info["x"]
    n = explorer.updates
    explorer.block.value = 3
    assert explorer.updates == n + 1
    assert explorer.info["x"] == pytest.approx(x)  # the same multiple of the new block's min-max step
    explorer.bits.value = 6
    assert explorer.updates == n + 2 and explorer.info["bits"] == 6 and explorer.info["x"] == pytest.approx(x)


def test_per_channel_view_for_weights_and_fc2_input(explorer):
    explorer.view.value = "channels"
    assert explorer.info["channels"] and explorer.info["xscale"] == "channels"
    assert len(explorer.info["channel_errors"]) == explorer.study.site(1, "fc2 input (post-GELU)").x.shape[1]
    explorer.operand.value = "qkv input"
    assert explorer.view.disabled and explorer.view.value == "values" and not explorer.info["channels"]
    explorer.operand.value = "proj weight"  # the channel view comes back where it exists
    assert not explorer.view.disabled and explorer.info["channels"]
    steps = explorer.info["channel_steps"]
    explorer.scale.value = 5
    assert (explorer.info["channel_steps"] == steps).all()  # each channel's own step stays
    assert explorer.info["steps"]["step"] == pytest.approx(explorer.curves().params[5]["scale"])


def test_axis_choice_and_description(explorer):
    explorer.axis.value = "symlog"
    assert explorer.info["xscale"] == "symlog" and explorer.figure.axes[0].get_xscale() == "symlog"
    explorer.operand.value = "post-softmax (attn·v)"
    explorer.axis.value = "auto"
    assert explorer.info["xscale"] == "log"
    plain = explorer._repr_mimebundle_()["text/plain"]
    assert plain.startswith("Scale explorer:") and "run the cells above" in plain


# ----------------------------------------------------------------------------- static stand-ins


def test_gallery_over_all_blocks_is_published(study, tmp_path, monkeypatch, capsys):
    fig = plots.scale_gallery(study, "fc2 input (post-GELU)", 4, metric="hessian")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == len(study.blocks)
    for b, title in zip(study.blocks, titles):
        c = study.curves(b, "fc2 input (post-GELU)", 4)
        assert title == f"block {b}: hessian pick {c.labels[c.picks['hessian']]}"
    monkeypatch.setenv("PTQLIB_FIGURES", str(tmp_path))
    plots.publish(fig, "scale_gallery_fc2_input_4bit")
    assert capsys.readouterr().out.endswith("scale_gallery_fc2_input_4bit.png\n")
    path = tmp_path / "scale_gallery_fc2_input_4bit.png"
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size < 300_000
    twin = plots.scale_gallery(study, "post-softmax (attn·v)", 4, "twin-uniform", blocks=[0, 5])
    assert sum(ax.get_visible() for ax in twin.axes) == 2
    rows = study.picks_table("fc2 input (post-GELU)", 4)
    assert [r["block"] for r in rows] == study.blocks and set(rows[0]) == {"block", *explore.METRIC_NAMES}
