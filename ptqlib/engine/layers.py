"""Quantized layers: Linear, Conv2d (weights only) and MatMul, each a float layer plus quantizers.

A layer quantizes what flows in (its input or both matmul operands, and its weight) and computes
in float, which is what "fake quantization" means: the result equals an integer kernel's output
dequantized. With every quantizer disabled (the default) a layer equals the float layer exactly.
Quantized weights are cached and recomputed only when the weight or its scale changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.quant import Quantizer, UniformQuantizer

__all__ = ["QuantLinear", "QuantConv2d", "QuantMatMul", "QUANT_LAYERS"]


class _WeightCache:
    """Holds ``weight_quant.fake(weight)`` until the weight or the quantizer's state changes."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Tensor | None = None

    def get(self, weight: Tensor, quant: Quantizer) -> Tensor:
        if not quant.enabled:
            return weight
        key = (weight._version, weight.data_ptr(), weight.device, quant.version, *(
            (b._version, b.data_ptr()) for b in quant.buffers()))
        if key != self.key or self.value is None:
            with torch.no_grad():
                self.value = quant.fake(weight.detach())
            self.key = key
        return self.value


class QuantLinear(nn.Module):
    """``y = Q_in(x) · Q_w(W)ᵀ + b``. Keeps the wrapped Linear's ``weight`` and ``bias``
    (same state-dict keys), so a timm checkpoint loads into the wrapped model unchanged.

    Args:
        linear: the float layer; its parameters are shared, not copied.
        input_quant: quantizer for the input (uniform or twin-uniform GELU).
        weight_quant: uniform quantizer for the weight; its scale is ``()`` or ``(out, 1)``.
        role: what the layer is in the network (``qkv``, ``proj``, ``fc1``, ``fc2``, ``head``, ...).
        weight_granularity: how calibration shares weight scales: ``tensor`` (one), ``qkv``
            (three: q, k and v rows) or ``channel`` (one per output row).
    """

    def __init__(
        self,
        linear: nn.Linear,
        input_quant: Quantizer,
        weight_quant: UniformQuantizer,
        role: str,
        weight_granularity: str = "tensor",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.input_quant = input_quant
        self.weight_quant = weight_quant
        self.role = role
        self.weight_granularity = weight_granularity
        self._cache = _WeightCache()

    def quantized_weight(self) -> Tensor:
        return self._cache.get(self.weight, self.weight_quant)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quant(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, role={self.role}"


class QuantConv2d(nn.Module):
    """A Conv2d with quantized weights (the patch embedding: its input, the image, stays float as
    in the paper). Keeps the wrapped layer's ``weight``/``bias`` and geometry."""

    def __init__(self, conv: nn.Conv2d, weight_quant: UniformQuantizer, role: str = "patch_embed") -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero padding is supported, got {conv.padding_mode}")
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.out_channels = conv.out_channels
        self.weight_quant = weight_quant
        self.role = role
        self._cache = _WeightCache()

    def quantized_weight(self) -> Tensor:
        return self._cache.get(self.weight, self.weight_quant)

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, stride={self.stride}, role={self.role}"


class QuantMatMul(nn.Module):
    """``Q_a(a) @ Q_b(b)``: the two attention matmuls, q@kᵀ (``matmul_qk``) and attn@v
    (``matmul_av``). Operands are ``(B, H, N, ·)``; per-head scales have shape ``(1, H, 1, 1)``."""

    def __init__(self, a_quant: Quantizer, b_quant: Quantizer, role: str) -> None:
        super().__init__()
        self.a_quant = a_quant
        self.b_quant = b_quant
        self.role = role

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.a_quant(a) @ self.b_quant(b)

    def extra_repr(self) -> str:
        return f"role={self.role}"


QUANT_LAYERS = (QuantLinear, QuantConv2d, QuantMatMul)
