"""RepQ-ViT's post-LayerNorm scale reparameterisation (``ptqlib.engine.reparam``).

The fold must leave the function unchanged (logits to 1e-5 relative, quantization off), equalise
the post-LayerNorm channel ranges, and make one step per tensor reproduce the per-channel codes.
Random timm weights have LayerNorms with γ = 1 and β = 0, whose channels are all alike; every
model here gets log-normal γ and offsets β instead, so channel ranges differ about 50-fold, as in
trained ViTs.
"""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ptqlib import PtqlibError, calibrate, get_method, quantize_model
from ptqlib import load_model
from ptqlib.engine.reparam import (Fold, apply_folds, channel_ranges, fold_parameters, folds_of, post_layernorm_sites,
                                   reparameterize)
from ptqlib.engine.wrap import quantization_disabled, quantizers

from helpers import random_images, tiny_vit


def _spread_layernorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """γ log-normal (e^N(0,1)), β = γ · U(-0.8, 0.8): channel ranges differ ~50x and straddle 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                gamma = torch.exp(torch.randn(m.weight.shape, generator=gen))
                m.weight.copy_(gamma)
                m.bias.copy_(gamma * (torch.rand(m.bias.shape, generator=gen) * 1.6 - 0.8))
    return model


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


def _norms(model: nn.Module) -> dict[str, nn.Module]:
    return {name: norm for name, norm, _ in post_layernorm_sites(model)}


# ----------------------------------------------------------------------------- the arithmetic


def test_fold_parameters_by_hand():
    # k = 3 (levels 7): channel 0 spans [-1, 6] -> s 1, z round(1/1) = 1; channel 1 [-0.5, 3]
    # -> s 0.5, z 1; channel 2 [0.5, 7] is widened to [0, 7] -> s 1, z 0
    lo, hi = torch.tensor([-1.0, -0.5, 0.5]), torch.tensor([6.0, 3.0, 7.0])
    s, z, s_t, z_t, r, b = fold_parameters(lo, hi, 3)
    assert s.tolist() == [1.0, 0.5, 1.0] and z.tolist() == [1.0, 1.0, 0.0]
    # s̃ = 2.5/3; centre: z̃ = 2^2 = 4; r = s/s̃ = [1.2, 0.6, 1.2]; b = s̃ (4 - z) = s̃ · [3, 3, 4]
    assert s_t == pytest.approx(2.5 / 3) and z_t == 4.0
    assert torch.allclose(r, torch.tensor([1.2, 0.6, 1.2], dtype=torch.float64))
    assert torch.allclose(b, torch.tensor([2.5, 2.5, 10 / 3], dtype=torch.float64))
    # RepQ-ViT's own choice: z̃ = mean(z) = 2/3
    _, _, _, z_mean, _, b_mean = fold_parameters(lo, hi, 3, "mean")
    assert z_mean == pytest.approx(2 / 3) and torch.allclose(b_mean, s_t * (2 / 3 - z))
    # a dead channel (always 0) keeps a tiny positive step, not a division by zero
    s, _, _, _, r, _ = fold_parameters(torch.tensor([0.0, -1.0]), torch.tensor([0.0, 1.0]), 4)
    assert float(s[0]) > 0 and torch.all(torch.isfinite(r))
    with pytest.raises(ValueError, match="zero_point"):
        fold_parameters(lo, hi, 3, "median")


def test_sites_of_vit_and_refusals():
    sites = post_layernorm_sites(tiny_vit())
    assert [(n, [c for c, _ in cs]) for n, _, cs in sites] == [
        ("blocks.0.norm1", ["blocks.0.attn.qkv"]), ("blocks.0.norm2", ["blocks.0.mlp.fc1"]),
        ("blocks.1.norm1", ["blocks.1.attn.qkv"]), ("blocks.1.norm2", ["blocks.1.mlp.fc1"])]
    with pytest.raises(PtqlibError, match="no LayerNorm feeding qkv, fc1"):
        post_layernorm_sites(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)))
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, depths=(1, 1),
                             num_heads=(1, 2), embed_dim=16)
    with pytest.raises(PtqlibError, match="pad a \\(16, 16\\) input"):
        post_layernorm_sites(swin)
    with pytest.raises(ValueError, match="bits"):
        reparameterize(tiny_vit(), random_images(1), bits=1)


# ----------------------------------------------------------------------------- the tiny ViT


@pytest.fixture(scope="module")
def folded() -> tuple[nn.Module, nn.Module, dict[str, Fold], torch.Tensor]:
    """A tiny ViT with spread LayerNorms, its reparameterised copy (4-bit zero points) and the folds."""
    float_model = _spread_layernorms(tiny_vit())
    model = _spread_layernorms(tiny_vit())
    images = random_images(4)
    folds = reparameterize(model, images, bits=4, micro_batch=3)
    return float_model, model, folds, images


def test_function_is_unchanged(folded):
    float_model, model, folds, images = folded
    assert set(folds) == {"blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2"}
    assert folds["blocks.1.norm2"].consumers == ("blocks.1.mlp.fc1",)
    with torch.no_grad():
        for x in (images, random_images(3, seed=11)):  # calibration and unseen images
            assert _relative_error(model(x), float_model(x)) <= 1e-5
    # the weights did change: γ / r, and the Linear columns times r
    f = folds["blocks.0.norm1"]
    assert f.ratio.dtype == f.offset.dtype == torch.float64  # what apply_folds needs to repeat the fold exactly
    assert torch.allclose(model.blocks[0].norm1.weight.double(), float_model.blocks[0].norm1.weight / f.ratio,
                          rtol=1e-6)
    assert torch.allclose(model.blocks[0].attn.qkv.weight.double(), float_model.blocks[0].attn.qkv.weight * f.ratio,
                          rtol=1e-6)
    assert float(f.ratio.max() / f.ratio.min()) > 10  # the channels really were spread


def test_post_layernorm_ranges_are_equalised(folded):
    float_model, model, folds, images = folded
    before = channel_ranges(float_model, images, _norms(float_model))
    after = channel_ranges(model, images, _norms(model))
    for name, f in folds.items():
        lo, hi = before[name]
        width_before = hi - lo
        assert float(width_before.max() / width_before.min()) > 5, name
        lo2, hi2 = after[name]
        # every channel fits the one range [-z̃·s̃, (2^k - 1 - z̃)·s̃], to s̃/2 (integer zero points)
        bottom, top = -f.zero_point * f.scale, (15 - f.zero_point) * f.scale
        assert torch.all(lo2 >= bottom - f.scale / 2 * (1 + 1e-4)) and torch.all(hi2 <= top + f.scale / 2 * (1 + 1e-4))
        # the channels whose range held 0 (the zero-point grid's assumption; here most) span all of it
        full = (lo < 0) & (hi > 0)
        assert float(full.double().mean()) > 0.9, name
        assert torch.allclose((hi2 - lo2)[full], torch.full_like(lo2[full], 15 * f.scale), rtol=1e-5), name
        assert float((lo2[full] - bottom).abs().max()) <= f.scale / 2 * (1 + 1e-4), name
        spread_after = (hi2 - lo2)[full]
        assert float(spread_after.max() / spread_after.min()) < 1 + 1e-5, name
        assert f.zero_point == 8.0  # centre: 2^(4-1)


def test_one_step_reproduces_the_per_channel_codes(folded):
    """RepQ-ViT's point: the per-tensor quantizer on X̃ writes the per-channel quantizer's codes of X."""
    float_model, model, folds, images = folded
    captured: dict[str, list[torch.Tensor]] = {"float": [], "folded": []}
    for key, m in (("float", float_model), ("folded", model)):
        h = m.blocks[1].norm2.register_forward_hook(lambda mod, a, out, key=key: captured[key].append(out.detach()))
        with torch.no_grad():
            m(images)
        h.remove()
    f = folds["blocks.1.norm2"]
    x, x_tilde = captured["float"][0].double(), captured["folded"][0].double()
    per_channel = torch.clamp(torch.round(x / f.channel_scale.double()) + f.channel_zero_point.double(), 0, 15)
    per_tensor = torch.clamp(torch.round(x_tilde / f.scale), -8, 7) + 8  # signed 4-bit, step s̃
    diff = (per_channel - per_tensor).abs()
    assert float(diff.max()) <= 1 and float((diff > 0).double().mean()) < 1e-3  # float ties aside, equal


def test_mean_zero_point_also_preserves_the_function():
    float_model, model = _spread_layernorms(tiny_vit()), _spread_layernorms(tiny_vit())
    folds = reparameterize(model, random_images(2), bits=6, zero_point="mean")
    assert all(0 < f.zero_point < 63 and f.zero_point != 32 for f in folds.values())
    with torch.no_grad():
        x = random_images(2, seed=5)
        assert _relative_error(model(x), float_model(x)) <= 1e-5


def test_wrapped_model_then_calibration():
    config = get_method("ptq4vit", 4, 4, rounds=1, n=20, max_tokens=32)
    float_model = _spread_layernorms(tiny_vit())
    model = quantize_model(_spread_layernorms(tiny_vit()), config)
    images = random_images(2)
    reparameterize(model, images, bits=config.a_bits)
    x = random_images(2, seed=6)
    with torch.no_grad():
        assert _relative_error(model(x), float_model(x)) <= 1e-5  # quantizers are off after wrapping
    calibrate(model, images, config, progress=False)
    q = dict(quantizers(model))
    assert q["blocks.0.attn.qkv.input_quant"].scale.shape == () and q["blocks.0.mlp.fc1.input_quant"].enabled
    with torch.no_grad(), quantization_disabled(model):
        assert _relative_error(model(x), float_model(x)) <= 1e-5


# ----------------------------------------------------------------------------- real architectures


def test_vit_tiny_224_with_random_weights():
    torch.manual_seed(0)
    float_model = _spread_layernorms(timm.create_model("vit_tiny_patch16_224", pretrained=False).eval(), seed=1)
    model = _spread_layernorms(timm.create_model("vit_tiny_patch16_224", pretrained=False).eval(), seed=1)
    model.load_state_dict(float_model.state_dict())
    folds = reparameterize(model, random_images(2, size=224), bits=8)
    assert len(folds) == 24
    with torch.no_grad():
        x = random_images(2, size=224, seed=3)
        assert _relative_error(model(x), float_model(x)) <= 1e-5


def test_swin_blocks_and_patch_merging():
    def swin() -> nn.Module:
        torch.manual_seed(0)
        m = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=56, depths=(2, 2),
                              num_heads=(1, 2), embed_dim=16).eval()
        return _spread_layernorms(m, seed=2)
    float_model, model = swin(), swin()
    folds = reparameterize(model, random_images(2, size=56), bits=4)
    assert "layers.1.downsample.norm" in folds and folds["layers.1.downsample.norm"].consumers == (
        "layers.1.downsample.reduction",)
    assert model.layers[1].downsample.reduction.bias is not None  # the offset needed a bias
    with torch.no_grad():
        x = random_images(2, size=56, seed=4)
        assert _relative_error(model(x), float_model(x)) <= 1e-5


# ----------------------------------------------------------------------------- saved folds, calibrate's fold


def _test_vit(wrap: bool = False) -> nn.Module:
    """timm's 6-block ``test_vit`` (random weights, seed 0; 160 px) with spread LayerNorms."""
    model = _spread_layernorms(load_model("test_vit", random_init=True, seed=0), seed=3)
    return quantize_model(model, get_method("repq", 4, 4)) if wrap else model


def _ratios_offsets(folds: dict[str, Fold]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: (f.ratio, f.offset) for name, f in folds.items()}


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("wrap", [False, True])
def test_apply_folds_repeats_the_fold_bit_for_bit(wrap: bool, one_torch_thread) -> None:
    images = random_images(2, size=160, seed=8)
    folded = _test_vit(wrap)
    folds = reparameterize(folded, images, bits=4)
    assert folds_of(folded).keys() == folds.keys() and len(folds) == 12  # norm1, norm2 of 6 blocks
    assert all(f.ratio.dtype == f.offset.dtype == torch.float64 for f in folds.values())
    fresh = _test_vit(wrap)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    apply_folds(fresh, _ratios_offsets(folds))
    _assert_same_state(fresh, folded)
    changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, before[k])]
    assert "blocks.3.norm2.weight" in changed and "blocks.0.attn.qkv.weight" in changed  # the fold did something
    assert folds_of(fresh).keys() == folds.keys()
    for name, f in folds_of(fresh).items():
        assert torch.equal(f.ratio, folds[name].ratio) and torch.equal(f.offset, folds[name].offset)
        assert f.consumers == folds[name].consumers


def test_folding_twice_is_refused(one_torch_thread) -> None:
    images = random_images(1, size=160, seed=8)
    model = _test_vit()
    folds = reparameterize(model, images, bits=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PtqlibError, match="already reparameterized"):
        reparameterize(model, images, bits=4)
    with pytest.raises(PtqlibError, match="already reparameterized"):
        apply_folds(model, _ratios_offsets(folds))
    applied = _test_vit()
    apply_folds(applied, _ratios_offsets(folds))
    with pytest.raises(PtqlibError, match="already reparameterized"):
        reparameterize(applied, images, bits=4)
    for key, value in model.state_dict().items():  # the refusals changed nothing
        assert torch.equal(value, state[key]), key


def test_apply_folds_refuses_folds_of_another_model(one_torch_thread) -> None:
    model = _test_vit()
    folds = reparameterize(_test_vit(), random_images(1, size=160, seed=8), bits=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    unknown = {**_ratios_offsets(folds), "blocks.9.norm1": (folds["blocks.0.norm1"].ratio,
                                                              folds["blocks.0.norm1"].offset)}
    with pytest.raises(PtqlibError, match="no post-LayerNorm site blocks.9.norm1"):
        apply_folds(model, unknown)
    r, b = folds["blocks.5.norm2"].ratio, folds["blocks.5.norm2"].offset  # the last one: all others come first
    for bad in ((r[:-1], b), (r, b[:-1]), (r.repeat(2), b.repeat(2))):
        with pytest.raises(PtqlibError, match="fold of blocks.5.norm2 has .*made for another model"):
            apply_folds(model, {**_ratios_offsets(folds), "blocks.5.norm2": bad})
    for key, value in model.state_dict().items():  # nothing half-folded
        assert torch.equal(value, state[key]), key
    assert folds_of(model) == {}
    apply_folds(model, _ratios_offsets(folds))  # the right folds still go in
    assert len(folds_of(model)) == 12


def test_calibrate_folds_once_and_keeps_the_function(one_torch_thread) -> None:
    config = get_method("repq", 4, 4, rounds=1, n=20, max_tokens=32)
    assert config.reparam
    float_model = _test_vit()
    model = _test_vit(wrap=True)
    images, x = random_images(2, size=160, seed=1), random_images(2, size=160, seed=6)
    report = calibrate(model, images, config, progress=False)
    assert set(report.folds) == {f"blocks.{i}.norm{j}" for i in range(6) for j in (1, 2)}
    assert report.folds.keys() == folds_of(model).keys() and report.reparam_seconds > 0
    assert report.folds["blocks.2.norm1"].consumers == ("blocks.2.attn.qkv",)
    assert float(report.folds["blocks.0.norm2"].ratio.max() / report.folds["blocks.0.norm2"].ratio.min()) > 5
    assert not torch.equal(model.blocks[0].norm1.weight, float_model.blocks[0].norm1.weight)  # folded in place
    with torch.no_grad(), quantization_disabled(model):
        assert _relative_error(model(x), float_model(x)) <= 1e-5
    with torch.no_grad():
        assert _relative_error(model(x), float_model(x)) > 1e-3  # quantized: it is not the float model

    # the same folds as reparameterize with the config's bits on the same images
    by_hand = _test_vit(wrap=True)
    reparameterize(by_hand, images, bits=config.a_bits)
    for name, p in by_hand.named_parameters():
        assert torch.equal(p, model.get_parameter(name)), name

    state = {k: v.clone() for k, v in model.state_dict().items() if "quant" not in k}
    again = calibrate(model, images, config, progress=False)
    for key, value in state.items():  # no second fold: the float weights are untouched
        assert torch.equal(model.state_dict()[key], value), key
    assert again.folds.keys() == report.folds.keys()
    assert all(torch.equal(again.folds[n].ratio, f.ratio) for n, f in report.folds.items())
    with torch.no_grad(), quantization_disabled(model):
        assert _relative_error(model(x), float_model(x)) <= 1e-5


def test_calibrate_without_reparam_does_not_fold(one_torch_thread) -> None:
    config = get_method("repq", 4, 4, rounds=0, reparam=False)
    model = _test_vit(wrap=True)
    float_state = {k: v.clone() for k, v in model.state_dict().items() if "quant" not in k}
    report = calibrate(model, random_images(1, size=160, seed=1), config, progress=False)
    assert report.folds == {} and folds_of(model) == {}
    for key, value in float_state.items():
        assert torch.equal(model.state_dict()[key], value), key
