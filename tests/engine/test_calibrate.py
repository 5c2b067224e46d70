"""Capture and calibration on a small random ViT, checked against independent brute force."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptqlib import calibrate, get_method, quantize_model, sites
from ptqlib.engine.calibrate import calibrate_site
from ptqlib.engine.capture import capture, task_loss
from ptqlib.core.metrics import get_metric
from ptqlib.core.quant import TwinGeluQuantizer, TwinSoftmaxQuantizer, uniform_fake
from ptqlib.core.search import linear_grid
from ptqlib.engine.wrap import quantizers

from helpers import random_images, tiny_vit


def test_minmax_scales_are_absmax_over_qmax() -> None:
    config = get_method("minmax", 8, 6)
    model = quantize_model(tiny_vit(), config)
    x = random_images()
    calibrate(model, x, config, progress=False)
    fc1 = model.get_submodule("blocks.0.mlp.fc1")
    assert torch.allclose(fc1.weight_quant.scale, fc1.weight.detach().abs().max() / 127)
    caps = capture(model, x, [s for s in sites(model) if s.name == "blocks.0.mlp.fc1"], grads=False)
    absmax = caps["blocks.0.mlp.fc1"].inputs[0].abs().max()
    assert torch.allclose(fc1.input_quant.scale, absmax / 31)
    qkv = model.get_submodule("blocks.0.attn.qkv")
    w = qkv.weight.detach().view(3, -1)
    expected = (w.abs().amax(1) / 127).repeat_interleave(qkv.out_features // 3).unsqueeze(1)
    assert torch.allclose(qkv.weight_quant.scale, expected)  # separate q, k, v scales


def test_every_quantizer_is_calibrated_and_enabled() -> None:
    config = get_method("ptq4vit", 6, 6, search="coarse_to_fine")
    model = quantize_model(tiny_vit(), config)
    report = calibrate(model, random_images(), config, progress=False)
    names = {n for n, _ in quantizers(model) if not n.endswith("patch_embed.proj.input_quant")}
    assert set(report.scales) == names
    assert all(q.enabled for n, q in quantizers(model) if n in names)
    assert report.evaluations > 0 and report.passes == 1
    for name, q in quantizers(model):
        if isinstance(q, TwinSoftmaxQuantizer):
            assert bool(((q.m >= 0) & (q.m <= 5)).all())
        if isinstance(q, TwinGeluQuantizer):
            assert q.scale > 0 and q.m.dtype == torch.int64


def test_input_search_matches_brute_force() -> None:
    """The chosen input scale of a Linear is the grid argmin of the metric, computed here by hand."""
    config = get_method("baseptq", 6, 6, metric="mse", rounds=1)
    model = quantize_model(tiny_vit(), config)
    site = next(s for s in sites(model) if s.name == "blocks.1.mlp.fc1")
    cap = capture(model, random_images(), [site], grads=False)[site.name]
    scales, _ = calibrate_site(site, cap, config)
    x = cap.inputs[0]
    layer = site.module
    w_scale = scales[f"{site.name}.weight_quant"]["scale"]
    wq = uniform_fake(layer.weight.detach(), w_scale, 6)
    out = F.linear(x, layer.weight.detach(), layer.bias.detach())
    step0 = x.abs().max() / 31
    scores = []
    for mult in linear_grid(config.alpha, config.beta, config.n):
        o_hat = F.linear(uniform_fake(x, step0 * mult, 6), wq, layer.bias.detach())
        scores.append(get_metric("mse")(out, o_hat).item())
    best = linear_grid(config.alpha, config.beta, config.n)[int(torch.tensor(scores).argmin())]
    assert torch.allclose(scales[f"{site.name}.input_quant"]["scale"], step0 * best)


def test_per_channel_and_per_head_granularity() -> None:
    config = get_method("ptq4vit", 8, 8, weight_granularity="channel", matmul_granularity="head", search="coarse_to_fine")
    model = quantize_model(tiny_vit(), config)
    calibrate(model, random_images(), config, progress=False)
    fc2 = model.get_submodule("blocks.0.mlp.fc2")
    assert fc2.weight_quant.scale.shape == (fc2.out_features, 1)
    assert len(set(fc2.weight_quant.scale.flatten().tolist())) > 1
    qk = model.get_submodule("blocks.0.attn.matmul_qk")
    assert qk.a_quant.scale.shape == (1, 3, 1, 1) and qk.b_quant.scale.shape == (1, 3, 1, 1)
    assert model.get_submodule("blocks.0.attn.matmul_av").a_quant.m.shape == (1, 3, 1, 1)


def test_search_never_worse_than_minmax_on_output_error() -> None:
    x = random_images()
    errors = {}
    for method in ("minmax", "ptq4vit"):
        model = tiny_vit()
        with torch.no_grad():
            ref = model(x)
        config = get_method(method, 4, 4, metric="mse")
        quantize_model(model, config)
        calibrate(model, x, config, progress=False)
        with torch.no_grad():
            errors[method] = (model(x) - ref).square().mean().item()
    assert errors["ptq4vit"] < errors["minmax"]


def test_pseudo_label_gradients_carry_information_unlike_official_kl() -> None:
    model = quantize_model(tiny_vit(), get_method("ptq4vit"))
    site = [s for s in sites(model) if s.name == "blocks.1.mlp.fc2"]
    ours = capture(model, random_images(), site, grads=True, grad_loss="pseudo_label_ce")[site[0].name].grad
    official = capture(model, random_images(), site, grads=True, grad_loss="official_kl")[site[0].name].grad
    assert ours.abs().mean() > 1e4 * official.abs().mean()
    assert ours.abs().mean() > 0


def test_task_loss_gradient_of_pseudo_label_ce() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    task_loss(logits, "pseudo_label_ce").backward()
    expected = torch.softmax(logits.detach(), -1) - torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.allclose(logits.grad, expected)
    with pytest.raises(ValueError, match="labels"):
        task_loss(logits, "label_ce")


def test_chunked_calibration_gives_identical_scales() -> None:
    config = get_method("ptq4vit", 8, 8, search="coarse_to_fine", max_tokens=64)
    results = []
    for chunks in (1, 3):
        model = quantize_model(tiny_vit(), config.replace(chunks=chunks))
        report = calibrate(model, random_images(), config.replace(chunks=chunks), progress=False)
        results.append(report)
    assert results[1].passes == 3
    for name, params in results[0].scales.items():
        for key, value in params.items():
            assert torch.equal(value, results[1].scales[name][key]), (name, key)


def test_sequential_calibration_sees_quantized_inputs() -> None:
    x = random_images()
    parallel = get_method("ptq4vit", 4, 4, search="coarse_to_fine")
    sequential = parallel.replace(order="sequential")
    par, seq = quantize_model(tiny_vit(), parallel), quantize_model(tiny_vit(), sequential)
    rp, rs = calibrate(par, x, parallel, progress=False), calibrate(seq, x, sequential, progress=False)
    assert rs.passes > rp.passes
    # both passes of sequential order must keep the same rows, so it scores random rows; the report says so
    assert sequential.row_select == "fisher" and rs.config == sequential.replace(row_select="random")
    assert rp.config == parallel
    first = "blocks.0.attn.qkv.input_quant"  # sees only float layers before it... but the patch embed is quantized
    last = "blocks.1.mlp.fc2.input_quant"
    assert not torch.equal(rp.scales[last]["scale"], rs.scales[last]["scale"])
    assert first in rs.scales


def test_calibrate_rejects_bad_images() -> None:
    from ptqlib import PtqlibError

    config = get_method("minmax")
    model = quantize_model(tiny_vit(), config)
    with pytest.raises(PtqlibError, match="non-empty batch"):
        calibrate(model, torch.zeros(0, 3, 64, 64), config, progress=False)


def test_capture_with_uneven_micro_batches_keeps_the_same_rows_per_image() -> None:
    """A micro-batch that does not divide the batch must not change how many rows each matmul
    image keeps (the parts are concatenated over images)."""
    model = quantize_model(tiny_vit(), get_method("ptq4vit", 8, 8))
    chosen = [s for s in sites(model) if s.name in ("blocks.0.attn.matmul_qk", "blocks.0.mlp.fc1")]
    for select in ("random", "fisher"):
        whole = capture(model, random_images(5), chosen, grads=True, max_tokens=10, row_select=select)
        parts = capture(model, random_images(5), chosen, grads=True, max_tokens=10, micro_batch=2, row_select=select)
        for name in whole:
            assert parts[name].inputs[0].shape == whole[name].inputs[0].shape
            assert parts[name].grad.shape[:-1] == parts[name].inputs[0].shape[:-1]


@pytest.mark.parametrize("select", ["fisher", "random"])
def test_rows_do_not_depend_on_micro_batching(select: str) -> None:
    """Fisher rows (with an outlier share) are chosen over the whole batch and random rows are one
    sample of the whole batch, so micro-batches only bound memory: the scales stay the same."""
    model = quantize_model(tiny_vit(), get_method("ptq4vit", 8, 8))
    # block 0: every row gets a gradient (in the last block only the class token rows do: ties)
    chosen = [s for s in sites(model) if s.name in ("blocks.0.attn.matmul_av", "blocks.0.mlp.fc2", "blocks.0.attn.qkv")]
    kw = dict(grads=True, grad_norm="image", max_tokens=12, row_select=select, outlier_rows=0.25)
    whole = capture(model, random_images(5), chosen, **kw)
    for micro in (1, 2, 3):
        parts = capture(model, random_images(5), chosen, micro_batch=micro, **kw)
        for name in whole:
            assert parts[name].inputs[0].shape == whole[name].inputs[0].shape, (name, micro)
            torch.testing.assert_close(parts[name].inputs[0], whole[name].inputs[0])
            torch.testing.assert_close(parts[name].grad, whole[name].grad, rtol=1e-4, atol=1e-4)


def test_fisher_rows_are_those_with_the_largest_gradient_energy() -> None:
    model = quantize_model(tiny_vit(), get_method("ptq4vit", 8, 8))
    x = random_images(3)
    fc2 = [s for s in sites(model) if s.name == "blocks.1.mlp.fc2"]
    qk = [s for s in sites(model) if s.name == "blocks.1.attn.matmul_qk"]
    full = capture(model, x, fc2 + qk, grads=True, grad_norm="image")
    kept = capture(model, x, fc2 + qk, grads=True, grad_norm="image", max_tokens=6, row_select="fisher")
    # Linear: the 6 rows (over all images) with the largest sum of squared normalised gradients
    g = full["blocks.1.mlp.fc2"].grad
    top = g.square().sum(-1).topk(6).indices.sort().values
    assert torch.equal(kept["blocks.1.mlp.fc2"].inputs[0], full["blocks.1.mlp.fc2"].inputs[0][top])
    assert torch.equal(kept["blocks.1.mlp.fc2"].grad, g[top])
    # matmul: per image, the query rows (2 = 6 / 3 images) with the largest energy over heads
    gm = full["blocks.1.attn.matmul_qk"].grad
    rows = gm.square().sum((1, 3)).topk(2, dim=1).indices.sort(dim=1).values
    a = full["blocks.1.attn.matmul_qk"].inputs[0]
    expected = torch.stack([a[i][:, rows[i]] for i in range(3)])
    assert torch.equal(kept["blocks.1.attn.matmul_qk"].inputs[0], expected)
    assert kept["blocks.1.attn.matmul_qk"].inputs[1].shape == full["blocks.1.attn.matmul_qk"].inputs[1].shape


def test_outlier_rows_are_the_largest_inputs_then_the_fisher_rows() -> None:
    """``outlier_rows=0.5`` of 6 kept rows: the 3 rows of largest input magnitude, then the 3 of
    largest gradient energy among the others (for matmuls: per image, 1 by magnitude, 1 by energy)."""
    model = quantize_model(tiny_vit(), get_method("ptq4vit", 8, 8))
    x = random_images(3)
    chosen = [s for s in sites(model) if s.name in ("blocks.0.mlp.fc2", "blocks.0.attn.matmul_qk")]
    full = capture(model, x, chosen, grads=True, grad_norm="image")
    kept = capture(model, x, chosen, grads=True, grad_norm="image", max_tokens=6, row_select="fisher", outlier_rows=0.5)
    inp, g = full["blocks.0.mlp.fc2"].inputs[0], full["blocks.0.mlp.fc2"].grad
    big = inp.abs().amax(-1).topk(3).indices
    energy = g.square().sum(-1)
    energy[big] = -1.0
    rows = torch.cat([big, energy.topk(3).indices]).sort().values
    assert torch.equal(kept["blocks.0.mlp.fc2"].inputs[0], inp[rows])
    assert torch.equal(kept["blocks.0.mlp.fc2"].grad, g[rows])
    a, gm = full["blocks.0.attn.matmul_qk"].inputs[0], full["blocks.0.attn.matmul_qk"].grad
    big = a.abs().amax((1, 3)).argmax(1, keepdim=True)  # (B, 1)
    energy = gm.square().sum((1, 3)).scatter(1, big, -1.0)
    rows = torch.cat([big, energy.argmax(1, keepdim=True)], 1).sort(1).values
    expected = torch.stack([a[i][:, rows[i]] for i in range(3)])
    assert torch.equal(kept["blocks.0.attn.matmul_qk"].inputs[0], expected)
    # without an outlier share the same call keeps the pure Fisher rows
    pure = capture(model, x, chosen, grads=True, grad_norm="image", max_tokens=6, row_select="fisher")
    top = g.square().sum(-1).topk(6).indices.sort().values
    assert torch.equal(pure["blocks.0.mlp.fc2"].inputs[0], inp[top])


def test_a_converged_search_is_not_repeated_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Later rounds skip a search whose other operand is unchanged: same scales, fewer evaluations."""
    import importlib

    calibrate_module = importlib.import_module("ptqlib.engine.calibrate")
    config = get_method("ptq4vit", 6, 6, rounds=4, max_tokens=64)
    model = quantize_model(tiny_vit(), config)
    site_list = sites(model)
    caps = capture(model, random_images(4), site_list, grads=True, grad_norm="image", max_tokens=64, row_select="fisher")
    remembered = {s.name: calibrate_site(s, caps[s.name], config) for s in site_list}
    # the same searches, each run every round
    def every_time(self, score, grid, channels, config, chunk, previous=None, exhaustive=False, tag="", given=()):
        return self._search(score, grid, channels, config, chunk, previous, exhaustive)

    monkeypatch.setattr(calibrate_module._Tally, "search", every_time)
    every = {s.name: calibrate_site(s, caps[s.name], config) for s in site_list}
    for name in every:
        assert remembered[name][0].keys() == every[name][0].keys()
        for q in every[name][0]:
            for key, value in every[name][0][q].items():
                assert torch.equal(remembered[name][0][q][key], value), (q, key)
        assert remembered[name][1] <= every[name][1]
    assert sum(n for _, n in remembered.values()) < sum(n for _, n in every.values())
