"""ERQ's weight correction inside calibration (``PTQConfig.weight_correction='ridge'``).

One ``test_vit`` (timm's 6-block ViT, random weights, 160 px) is calibrated twice with the same
RepQ-ViT W4A4 config (MSE metric, every row scored), once without and once with the correction;
its float inputs per layer come from a float copy with the same folds. Checked: which layers are
corrected and how (the ridge solution for the *final* input scale on the layer's float inputs),
that the correction leaves the input scales alone, that each layer's output error on the
calibration images shrinks, and the config's refusals.

Whole-model output error is deliberately not asserted: on this random-weight model the per-layer
gains do not reliably add up. Measured logit MSE against the float model, without -> with the
correction (4 images, every row): repq/MSE 0.0038 -> 0.0039 (this config), repq/Hessian 0.0031 ->
0.0027, ptq4vit/MSE 0.0047 -> 0.0030, ptq4vit/Hessian 0.0045 -> 0.0057; a test of it would be luck.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptqlib import PTQConfig, PtqlibError, calibrate, get_method, load_model, quantize_model, sites
from ptqlib.core.correction import ridge_correction
from ptqlib.engine.calibrate import CalibrationReport, corrected_layers
from ptqlib.engine.layers import QuantLinear
from ptqlib.engine.reparam import apply_folds, folds_of
from ptqlib.engine.wrap import quantization_disabled, quantizers

from helpers import random_images

RHO = 0.1


def _config(correction: str) -> PTQConfig:
    return get_method("repq", 4, 4, rounds=1, n=20, metric="mse", max_tokens=None, weight_correction=correction,
                      ridge_rho=RHO)


def _linear_names(model: nn.Module) -> list[str]:
    return [s.name for s in sites(model) if isinstance(s.module, QuantLinear)]


def _float_inputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each Linear layer's input on ``images`` with every quantizer off, as rows ``(T, in)``."""
    got: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda mod, args, n=n: got.__setitem__(n, args[0].detach().reshape(-1, args[0].shape[-1])))
        for n in _linear_names(model)]
    with torch.no_grad(), quantization_disabled(model):
        model(images)
    for h in handles:
        h.remove()
    return got


@pytest.fixture(scope="module")
def runs(one_torch_thread) -> dict[str, object]:
    images = random_images(4, size=160, seed=1)
    out: dict[str, object] = {"images": images}
    for correction in ("none", "ridge"):
        config = _config(correction)
        model = quantize_model(load_model("test_vit", random_init=True, seed=0), config)
        out[correction] = (model, calibrate(model, images, config, progress=False))
    reference = quantize_model(load_model("test_vit", random_init=True, seed=0), _config("none"))
    plain_model = out["none"][0]
    apply_folds(reference, {n: (f.ratio, f.offset) for n, f in folds_of(plain_model).items()})
    out["float"] = reference  # the folded float model both calibrations started from
    out["inputs"] = _float_inputs(reference, images)
    return out


def _errors(layer: QuantLinear, ref_layer: nn.Linear, x: torch.Tensor, weight: torch.Tensor) -> float:
    """‖X Wᵀ + b − (Q(X) weightᵀ + b)‖ of one layer: float output against the given weights."""
    with torch.no_grad():
        ref = F.linear(x, ref_layer.weight, ref_layer.bias)
        return float((ref.double() - F.linear(layer.input_quant(x), weight, layer.bias).double()).norm())


def test_ridge_corrects_every_linear_layer_and_nothing_else(runs) -> None:
    plain, plain_report = runs["none"]
    model, report = runs["ridge"]
    reference = runs["float"]
    assert isinstance(report, CalibrationReport)
    names = _linear_names(model)
    assert len(names) == 25  # qkv, proj, fc1, fc2 of 6 blocks and the head
    assert corrected_layers(model) == sorted(names) and corrected_layers(plain) == []
    assert all(isinstance(model.get_submodule(n), QuantLinear) for n in corrected_layers(model))
    assert not any(n in plain_report.scales for n in names)
    for name in names:
        layer, ref = model.get_submodule(name), reference.get_submodule(name)
        assert set(report.scales[name]) == {"weight"}
        assert torch.equal(layer.weight, report.scales[name]["weight"]), name
        assert layer.weight.shape == ref.weight.shape and layer.weight.dtype == ref.weight.dtype
        assert not torch.allclose(layer.weight, ref.weight, atol=1e-4), name  # changed
        assert torch.equal(layer.bias, ref.bias), name  # the biases are not corrected
        assert torch.equal(plain.get_submodule(name).weight, ref.weight), name  # without correction: untouched
    # the patch embedding (a Conv2d) and the LayerNorms keep their (folded) float weights
    for key, value in reference.state_dict().items():
        if not any(key.startswith(n + ".") for n in names) and "quant" not in key:
            assert torch.equal(model.state_dict()[key], value), key


def test_correction_is_the_ridge_solution_for_the_final_input_scale(runs) -> None:
    model, _ = runs["ridge"]
    reference, inputs = runs["float"], runs["inputs"]
    for name in ("blocks.0.attn.qkv", "blocks.2.attn.proj", "blocks.4.mlp.fc2", "head"):
        layer, x = model.get_submodule(name), inputs[name]
        with torch.no_grad():
            expected = ridge_correction(x, layer.input_quant(x), reference.get_submodule(name).weight, RHO)
        assert torch.allclose(layer.weight, expected, rtol=1e-4, atol=1e-6), name


def test_correction_keeps_the_input_scales_and_searches_new_weight_scales(runs) -> None:
    plain, _ = runs["none"]
    model, _ = runs["ridge"]
    q_plain = dict(quantizers(plain))
    changed = 0
    for name, q in quantizers(model):
        if name.endswith(".weight_quant"):
            changed += not torch.equal(q.scale, q_plain[name].scale)
            continue
        for (buf_name, buf), (_, ref) in zip(q.named_buffers(), q_plain[name].named_buffers()):
            assert torch.equal(buf, ref), (name, buf_name)  # the correction comes after the input search
    assert changed >= 20  # W′ has its own ranges: its steps were searched again


def test_each_layer_is_closer_to_the_float_layer_on_the_calibration_images(runs) -> None:
    plain, _ = runs["none"]
    model, _ = runs["ridge"]
    reference, inputs = runs["float"], runs["inputs"]
    ratios = []
    for name in _linear_names(model):
        layer, ref, x = model.get_submodule(name), reference.get_submodule(name), inputs[name]
        # float weights: W′ minimises ‖XWᵀ − X̂Vᵀ‖² + λ‖V − W‖² over these very rows, so never loses to W
        assert _errors(layer, ref, x, layer.weight) <= _errors(layer, ref, x, ref.weight) * (1 + 1e-6), name
        # quantized weights (what the model computes): measured 25 of 25 layers better, mean ratio 0.75
        ratios.append(_errors(layer, ref, x, layer.quantized_weight()) ** 2
                      / _errors(plain.get_submodule(name), ref, x, plain.get_submodule(name).quantized_weight()) ** 2)
    assert sum(r < 1 for r in ratios) >= 22, ratios
    assert sum(ratios) / len(ratios) < 0.85, ratios


# ----------------------------------------------------------------------------- the config


def test_config_fields_defaults_and_refusals() -> None:
    config = PTQConfig()
    assert (config.reparam, config.weight_correction, config.ridge_rho) == (False, "none", 1.0)
    assert get_method("ptq4vit", weight_correction="ridge", ridge_rho=2.0).ridge_rho == 2.0
    for rho in (0.0, -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="ridge_rho must be positive"):
            PTQConfig(ridge_rho=rho)
    with pytest.raises(ValueError, match="ridge_rho must be float"):
        PTQConfig(ridge_rho="0.1")
    with pytest.raises(ValueError, match="weight_correction must be one of .*; got 'lasso'"):
        PTQConfig(weight_correction="lasso")
    with pytest.raises(ValueError, match="weight_correction .* needs rounds >= 1"):
        PTQConfig(weight_correction="ridge", rounds=0)
    with pytest.raises(PtqlibError, match="invalid settings for method 'minmax'.*rounds >= 1"):
        get_method("minmax", weight_correction="ridge")  # min-max has no search to correct for
    assert PTQConfig(weight_correction="none", rounds=0).rounds == 0
    config = get_method("repq", weight_correction="ridge", ridge_rho=0.3)
    assert PTQConfig(**config.to_dict()) == config  # how a saved config comes back
