"""Turn a timm ViT / DeiT / Swin into a model whose every quantizable site is a quantized layer.

Sites (the paper's list): every Linear (qkv, proj, fc1, fc2, head, the distillation head, Swin's
PatchMerging reduction), the patch-embedding Conv2d (weights only) and both attention matmuls.
LayerNorm, softmax, GELU and residual additions stay float. Wrapping happens in place and leaves
every quantizer off, so the wrapped model computes what the timm model computes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from torch import nn

from .attention import QuantAttention, QuantWindowAttention
from .config import PTQConfig
from ..errors import PtqlibError
from .layers import QUANT_LAYERS, QuantConv2d, QuantLinear, QuantMatMul
from ..core.quant import (AdaLogQuantizer, Log2Quantizer, LogSqrt2Quantizer, Quantizer, ShiftedUniformQuantizer,
                          TwinGeluQuantizer, TwinSoftmaxQuantizer, UniformQuantizer)

__all__ = ["Site", "quantize_model", "sites", "quantizers", "set_quantization", "quantization_disabled"]


@dataclass(frozen=True)
class Site:
    """A quantized layer of a wrapped model: its dotted ``name``, ``role`` and the module."""

    name: str
    role: str
    module: nn.Module

    @property
    def block(self) -> str:
        """The enclosing block's name (``blocks.3``, ``layers.1.blocks.0``) or ``""``."""
        parts = self.name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            if parts[i].isdigit() and parts[i - 1] == "blocks":
                return ".".join(parts[: i + 1])
        return ""


def _attention_classes() -> tuple[tuple[type, type], ...]:
    from timm.layers import Attention
    from timm.models.swin_transformer import WindowAttention

    return ((Attention, QuantAttention), (WindowAttention, QuantWindowAttention))


#: The quantizer of post-softmax values (the first operand of attn @ v) by ``config.softmax_quantizer``.
_POST_SOFTMAX = {
    "uniform": lambda c: UniformQuantizer(c.a_bits, signed=not c.softmax_unsigned),
    "twin": lambda c: TwinSoftmaxQuantizer(c.a_bits),
    "log2": lambda c: Log2Quantizer(c.a_bits),
    "log_sqrt2": lambda c: LogSqrt2Quantizer(c.a_bits),
    "adalog": lambda c: AdaLogQuantizer(c.a_bits),
}
#: The quantizer of post-GELU values (fc2's input) by ``config.gelu_quantizer``; log kinds shifted.
_POST_GELU = {
    "uniform": lambda c: UniformQuantizer(c.a_bits),
    "uniform_shifted": lambda c: ShiftedUniformQuantizer(c.a_bits),
    "twin": lambda c: TwinGeluQuantizer(c.a_bits),
    "log2": lambda c: Log2Quantizer(c.a_bits, signed=True),
    "log_sqrt2": lambda c: LogSqrt2Quantizer(c.a_bits, signed=True),
    "adalog": lambda c: AdaLogQuantizer(c.a_bits, signed=True),
}


def _post_softmax(config: PTQConfig) -> Quantizer:
    return _POST_SOFTMAX[config.softmax_quantizer or ("twin" if config.twin_softmax else "uniform")](config)


def _post_gelu(config: PTQConfig) -> Quantizer:
    return _POST_GELU[config.gelu_quantizer or ("twin" if config.twin_gelu else "uniform")](config)


def _matmuls(config: PTQConfig) -> tuple[QuantMatMul, QuantMatMul]:
    a = config.a_bits
    qk = QuantMatMul(UniformQuantizer(a), UniformQuantizer(a), role="matmul_qk")
    av = QuantMatMul(_post_softmax(config), UniformQuantizer(a), role="matmul_av")
    return qk, av


def _linear_role(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("qkv", "proj", "fc1", "fc2", "reduction", "head", "head_dist", "gate"):
        return leaf
    if name.endswith("head.fc"):
        return "head"
    return "linear"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, new)


def quantize_model(model: nn.Module, config: PTQConfig) -> nn.Module:
    """Wrap ``model`` in place for ``config``'s bit-widths and quantizer kinds; returns it.

    Every quantizer starts disabled: the result equals the float model until calibration sets
    scales (``calibrate.py``). Raises :class:`PtqlibError` for a model with no supported attention.
    """
    if any(isinstance(m, QUANT_LAYERS) for m in model.modules()):
        raise PtqlibError("this model is already wrapped for quantization; load a fresh model to wrap it again")
    pairs = _attention_classes()
    found = False
    for name, module in list(model.named_modules()):
        for timm_cls, ours in pairs:
            if type(module) is timm_cls:
                _replace(model, name, ours(module, *_matmuls(config)))
                found = True
    if not found:
        others = sorted({type(m).__name__ for m in model.modules() if "attention" in type(m).__name__.lower()})
        hint = f" (it has {', '.join(others)}, which ptqlib cannot wrap)" if others else ""
        raise PtqlibError(
            f"{type(model).__name__} has no timm Attention or WindowAttention module{hint}; "
            "ptqlib quantizes ViT, DeiT and Swin models")
    gelu_fc2 = {f"{n}.fc2" for n, m in model.named_modules() if isinstance(getattr(m, "act", None), nn.GELU)}
    per_channel = config.weight_granularity == "channel"
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            role = _linear_role(name)
            inp: Quantizer = _post_gelu(config) if name in gelu_fc2 else UniformQuantizer(config.a_bits)
            granularity = "channel" if per_channel else ("qkv" if role == "qkv" else "tensor")
            _replace(model, name, QuantLinear(module, inp, UniformQuantizer(config.w_bits), role, granularity))
        elif isinstance(module, nn.Conv2d):
            _replace(model, name, QuantConv2d(module, UniformQuantizer(config.w_bits)))
    return model


def sites(model: nn.Module) -> list[Site]:
    """The quantized layers of a wrapped model, in module order (which is forward order)."""
    out = [Site(n, m.role, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]
    if not out:
        raise PtqlibError("the model is not wrapped for quantization; call ptqlib.quantize_model(model, config) first")
    return out


def quantizers(model: nn.Module) -> Iterator[tuple[str, Quantizer]]:
    """Every quantizer of a wrapped model with its dotted name."""
    for name, module in model.named_modules():
        if isinstance(module, Quantizer):
            yield name, module


def set_quantization(model: nn.Module, enabled: bool) -> None:
    """Switch every *calibrated* quantizer on or off (uncalibrated ones stay off)."""
    for _, q in quantizers(model):
        q.enabled = enabled and q.calibrated


@contextlib.contextmanager
def quantization_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the float model inside the block; restores each quantizer's state after."""
    states = [(q, q.enabled) for _, q in quantizers(model)]
    for q, _ in states:
        q.enabled = False
    try:
        yield model
    finally:
        for q, was in states:
            q.enabled = was
