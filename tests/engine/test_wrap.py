"""Wrapping: quantization off equals timm (ViT, DeiT, distilled DeiT, Swin); sites; layers."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from ptqlib import PtqlibError, get_method, quantize_model, sites
from ptqlib.engine.attention import QuantAttention, QuantWindowAttention
from ptqlib.engine.layers import QuantConv2d, QuantLinear, QuantMatMul
from ptqlib.core.quant import TwinGeluQuantizer, TwinSoftmaxQuantizer, UniformQuantizer, uniform_fake
from ptqlib.engine.wrap import quantization_disabled, quantizers, set_quantization

FAMILIES = {
    "vit_tiny_patch16_224": {"qkv": 12, "matmul_qk": 12, "head": 1},
    "deit_tiny_patch16_224": {"qkv": 12, "matmul_av": 12, "head": 1},
    "deit_tiny_distilled_patch16_224": {"qkv": 12, "head": 1, "head_dist": 1},
    "swin_tiny_patch4_window7_224": {"qkv": 12, "matmul_qk": 12, "reduction": 3, "head": 1},
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_quantization_off_equals_timm(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x)
        quantize_model(model, get_method("ptq4vit", 8, 8))
        wrapped = model(x)
    assert (wrapped - reference).abs().max().item() <= 1e-4
    roles = [s.role for s in sites(model)]
    for role, count in FAMILIES[name].items():
        assert roles.count(role) == count, role
    assert roles.count("patch_embed") == 1
    assert not any(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in model.modules())


def test_vit_tiny_sites_and_quantizer_kinds() -> None:
    model = quantize_model(_model("vit_tiny_patch16_224"), get_method("ptq4vit", 6, 5))
    s = sites(model)
    assert len(s) == 1 + 12 * 6 + 1  # patch embed, (qkv, qk, av, proj, fc1, fc2) x 12, head
    assert s[0].name == "patch_embed.proj" and s[-1].name == "head"
    fc2 = model.get_submodule("blocks.3.mlp.fc2")
    assert isinstance(fc2.input_quant, TwinGeluQuantizer) and fc2.input_quant.bits == 5
    assert isinstance(model.get_submodule("blocks.3.mlp.fc1").input_quant, UniformQuantizer)
    av = model.get_submodule("blocks.3.attn.matmul_av")
    assert isinstance(av.a_quant, TwinSoftmaxQuantizer) and av.b_quant.bits == 5
    assert model.get_submodule("blocks.3.attn.qkv").weight_quant.bits == 6
    assert model.get_submodule("blocks.3.attn.qkv").weight_granularity == "qkv"
    assert s[5].block == "blocks.0" and s[0].block == "" and s[-1].block == ""
    assert all(not q.enabled for _, q in quantizers(model))


def test_baseptq_uses_no_twin_quantizers() -> None:
    model = quantize_model(_model("vit_tiny_patch16_224"), get_method("baseptq", 8, 8))
    assert not any(isinstance(q, (TwinGeluQuantizer, TwinSoftmaxQuantizer)) for _, q in quantizers(model))
    assert model.get_submodule("blocks.0.attn.matmul_av").a_quant.signed  # official BasePTQ: signed


def test_wrapped_model_keeps_checkpoint_keys() -> None:
    model = _model("swin_tiny_patch4_window7_224")
    state = model.state_dict()
    quantize_model(model, get_method("ptq4vit"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    assert all(k.endswith(("_quant.scale", "_quant.m")) for k in missing)


def test_attention_modules_replaced() -> None:
    vit = quantize_model(_model("vit_tiny_patch16_224"), get_method("minmax"))
    swin = quantize_model(_model("swin_tiny_patch4_window7_224"), get_method("minmax"))
    assert sum(isinstance(m, QuantAttention) for m in vit.modules()) == 12
    assert sum(isinstance(m, QuantWindowAttention) for m in swin.modules()) == 12


def test_unsupported_model_gets_clear_error() -> None:
    model = timm.create_model("resnet10t", pretrained=False)
    with pytest.raises(PtqlibError, match="no timm Attention or WindowAttention"):
        quantize_model(model, get_method("ptq4vit"))


def test_wrapping_twice_is_an_error() -> None:
    model = quantize_model(_model("vit_tiny_patch16_224"), get_method("minmax"))
    with pytest.raises(PtqlibError, match="already wrapped"):
        quantize_model(model, get_method("minmax"))


def test_quant_linear_computes_quantized_product_and_caches_weight() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    q = QuantLinear(lin, UniformQuantizer(4), UniformQuantizer(4), role="fc1")
    x = torch.randn(3, 8)
    assert torch.equal(q(x), lin(x))  # off == float
    q.weight_quant.set(scale=torch.tensor(0.05))
    q.input_quant.set(scale=torch.tensor(0.3))
    expected = F.linear(uniform_fake(x, torch.tensor(0.3), 4), uniform_fake(lin.weight, torch.tensor(0.05), 4), lin.bias)
    assert torch.equal(q(x), expected)
    first = q.quantized_weight()
    assert q.quantized_weight() is first  # cached
    q.weight_quant.set(scale=torch.tensor(0.1))  # a new scale invalidates the cache
    assert torch.equal(q.quantized_weight(), uniform_fake(lin.weight.detach(), torch.tensor(0.1), 4))
    with torch.no_grad():
        lin.weight.mul_(2)  # so does an in-place weight change
    assert torch.equal(q.quantized_weight(), uniform_fake(lin.weight.detach(), torch.tensor(0.1), 4))


def test_quant_conv_and_matmul() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 4, stride=4)
    qc = QuantConv2d(conv, UniformQuantizer(6))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(qc(x), conv(x))
    scale = torch.full((4, 1, 1, 1), 0.01)
    qc.weight_quant.set(scale=scale)
    assert torch.equal(qc(x), F.conv2d(x, uniform_fake(conv.weight, scale, 6), conv.bias, 4))
    mm = QuantMatMul(UniformQuantizer(4), UniformQuantizer(4), role="matmul_qk")
    a, b = torch.randn(1, 2, 3, 5), torch.randn(1, 2, 5, 3)
    assert torch.equal(mm(a, b), a @ b)
    per_head = torch.tensor([0.1, 0.2]).view(1, 2, 1, 1)
    mm.a_quant.set(scale=per_head)
    mm.b_quant.set(scale=torch.tensor(0.25))
    assert torch.equal(mm(a, b), uniform_fake(a, per_head, 4) @ uniform_fake(b, torch.tensor(0.25), 4))


def test_set_quantization_and_disabled_context() -> None:
    model = quantize_model(_model("vit_tiny_patch16_224"), get_method("minmax"))
    qkv = model.get_submodule("blocks.0.attn.qkv")
    qkv.input_quant.set(scale=torch.tensor(0.5))
    with quantization_disabled(model):
        assert not qkv.input_quant.enabled
    assert qkv.input_quant.enabled
    set_quantization(model, False)
    assert not qkv.input_quant.enabled
    set_quantization(model, True)
    assert qkv.input_quant.enabled
    assert not qkv.weight_quant.enabled  # never calibrated: stays off
