"""Attention with explicit, quantizable matmuls, standing in for timm's fused attention.

Modern timm computes attention with ``scaled_dot_product_attention``, which hides the two matmuls
PTQ4ViT quantizes. These modules compute the same function with two :class:`QuantMatMul` layers::

    S = matmul_qk(q, kᵀ) · d^-1/2  (+ relative position bias, + mask)
    P = softmax(S)
    o = matmul_av(P, v)

They take over the timm module's submodules and parameters under the same names, so state dicts
keep their keys. With quantization off they equal timm's output to float rounding (tested).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import QuantMatMul

__all__ = ["QuantAttention", "QuantWindowAttention"]


def _add_mask(scores: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask


class QuantAttention(nn.Module):
    """Multi-head self-attention (ViT, DeiT) with explicit matmuls.

    Args:
        attn: a ``timm.layers.Attention``; its qkv/proj layers, norms and dropouts are reused.
        matmul_qk: the quantized matmul for ``q @ kᵀ``.
        matmul_av: the quantized matmul for ``softmax(·) @ v``.
    """

    def __init__(self, attn: nn.Module, matmul_qk: QuantMatMul, matmul_av: QuantMatMul) -> None:
        super().__init__()
        self.num_heads: int = attn.num_heads
        self.head_dim: int = attn.head_dim
        self.attn_dim: int = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.scale: float = attn.scale
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        self.attn_drop = attn.attn_drop
        self.norm = getattr(attn, "norm", nn.Identity())
        self.gate = getattr(attn, "gate", None)
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop
        self.matmul_qk = matmul_qk
        self.matmul_av = matmul_av

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        scores = self.matmul_qk(q, k.transpose(-2, -1)) * self.scale
        if is_causal:
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            scores = _add_mask(scores, causal)
        scores = _add_mask(scores, attn_mask)
        probs = self.attn_drop(scores.softmax(dim=-1))
        out = self.matmul_av(probs, v).transpose(1, 2).reshape(b, n, self.attn_dim)
        out = self.norm(out)
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


class QuantWindowAttention(nn.Module):
    """Swin's window attention with explicit matmuls; the relative position bias and the shifted
    window mask are added in float, as in the paper.

    Args:
        attn: a ``timm.models.swin_transformer.WindowAttention``.
        matmul_qk, matmul_av: as for :class:`QuantAttention`.
    """

    def __init__(self, attn: nn.Module, matmul_qk: QuantMatMul, matmul_av: QuantMatMul) -> None:
        super().__init__()
        self.num_heads: int = attn.num_heads
        self.window_area: int = attn.window_area
        self.window_size = attn.window_size
        self.scale: float = attn.scale
        self.qkv = attn.qkv
        self.proj = attn.proj
        self.attn_drop = attn.attn_drop
        self.proj_drop = attn.proj_drop
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)
        self.matmul_qk = matmul_qk
        self.matmul_av = matmul_av

    def relative_position_bias(self) -> Tensor:
        """The bias added to every window's scores, shape ``(1, H, N, N)``."""
        n = self.window_area
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b_, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b_, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        scores = self.matmul_qk(q, k.transpose(-2, -1)) * self.scale + self.relative_position_bias()
        if mask is not None:  # (num_windows, N, N) of 0 / -100, shared by every image
            num_win = mask.shape[0]
            scores = scores.view(-1, num_win, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.view(-1, self.num_heads, n, n)
        probs = self.attn_drop(scores.softmax(dim=-1))
        out = self.matmul_av(probs, v).transpose(1, 2).reshape(b_, n, -1)
        return self.proj_drop(self.proj(out))
