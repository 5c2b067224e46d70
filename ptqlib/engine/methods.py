"""Named calibration methods: each a function of the bit-widths returning a :class:`PTQConfig`.

=========  ==========================================================================
minmax     min-max scales, no search: the floor every method must beat
baseptq    the paper's base PTQ (its Sec. 3), as the official code runs it: cosine
           distance per token (cosine_token), α=0.5, β=1.2, one round, no twin
           quantizers, one matmul scale per head
ptq4vit    PTQ4ViT: Hessian-guided distance, α=0.01, β=1.2, three rounds, twin
           softmax and twin GELU, one matmul scale per tensor
repq       RepQ-ViT's quantizers (Li et al., ICCV'23): post-LayerNorm activations
           reparameterised (per-channel scales folded into LayerNorm and qkv / fc1),
           log√2 post-softmax, asymmetric (shifted) uniform post-GELU, per-channel
           weights; scales found by PTQ4ViT's search
adalog     AdaLog's quantizers (Wu et al., ECCV'24) on RepQ-ViT's reparameterisation:
           a logarithmic quantizer with a searched base for post-softmax and post-GELU
           values, per-channel weights; scales found by PTQ4ViT's search
combined   adalog plus ERQ's ridge correction of the float weights (Zhong et al.,
           ICML'24) and one matmul scale per head
=========  ==========================================================================

``repq`` and ``adalog`` keep the published quantizers but not the published scale search: both
run PTQ4ViT's Hessian-guided search (so the comparison with ``ptq4vit`` is one of quantizers).

``ptq4vit`` departs from the official code where that measured better or where the official code
is wrong: its Hessian weights are a real gradient (``grad_loss='pseudo_label_ce'``; the official
KL gradient vanishes), normalised per image (``grad_norm='image'``), on the rows with the largest
gradient energy plus the largest inputs (``row_select='fisher'``, ``outlier_rows=0.125``).

Every preset uses the fast search (``search='coarse_to_fine'``, ``stride=6``, ``refine=2``, on
``max_tokens=1024`` rows per layer), which picks the exhaustive grid's scales on ViT-Tiny; pass
``search='grid', max_tokens=None`` for the official exhaustive search. Any keyword overrides a
preset's field. FINDINGS.md gives the measurement behind each choice and the command that repeats it.
"""
from __future__ import annotations

from typing import Any, Callable

from .config import PTQConfig
from ..errors import PtqlibError

__all__ = ["minmax", "baseptq", "ptq4vit", "repq", "adalog", "combined", "METHODS", "get_method"]


#: PTQ4ViT's Hessian-guided search, shared by the presets that reuse it.
_HESSIAN_SEARCH: dict[str, Any] = dict(metric="hessian", grad_loss="pseudo_label_ce", grad_norm="image",
                                       row_select="fisher", alpha=0.01, beta=1.2, n=100, rounds=3)


def minmax(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """Min-max scales for every quantizer; no search."""
    return PTQConfig(method="minmax", w_bits=w_bits, a_bits=a_bits, metric="mse", rounds=0,
                     softmax_unsigned=False).replace(**overrides)


def baseptq(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """The paper's base PTQ (its Sec. 3): cosine distance per token, averaged (the official code's),
    α=0.5, β=1.2, n=100, one round."""
    return PTQConfig(method="baseptq", w_bits=w_bits, a_bits=a_bits, metric="cosine_token", alpha=0.5,
                     beta=1.2, n=100, rounds=1, softmax_unsigned=False,
                     matmul_granularity="head").replace(**overrides)


def ptq4vit(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """PTQ4ViT: twin-uniform softmax and GELU quantizers, Hessian-guided search, three rounds."""
    return PTQConfig(method="ptq4vit", w_bits=w_bits, a_bits=a_bits, twin_softmax=True, twin_gelu=True,
                     matmul_granularity="tensor", **_HESSIAN_SEARCH).replace(**overrides)


def repq(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """RepQ-ViT's quantizers: reparameterised post-LayerNorm activations, log√2 post-softmax,
    post-GELU uniform with its zero point at GELU's minimum, per-channel weights; PTQ4ViT's
    Hessian-guided search."""
    return PTQConfig(method="repq", w_bits=w_bits, a_bits=a_bits, reparam=True, softmax_quantizer="log_sqrt2",
                     gelu_quantizer="uniform_shifted", weight_granularity="channel", matmul_granularity="tensor",
                     **_HESSIAN_SEARCH).replace(**overrides)


def adalog(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """AdaLog's quantizers (searched-base logarithmic post-softmax and post-GELU) on RepQ-ViT's
    reparameterisation, per-channel weights; PTQ4ViT's Hessian-guided search."""
    return PTQConfig(method="adalog", w_bits=w_bits, a_bits=a_bits, reparam=True, softmax_quantizer="adalog",
                     gelu_quantizer="adalog", weight_granularity="channel", matmul_granularity="tensor",
                     **_HESSIAN_SEARCH).replace(**overrides)


def combined(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """``adalog`` with ERQ's ridge correction of each Linear's float weights (ρ = 1) and one scale
    per head for both matmuls' operands."""
    return adalog(w_bits, a_bits, method="combined", weight_correction="ridge", ridge_rho=1.0,
                  matmul_granularity="head").replace(**overrides)


METHODS: dict[str, Callable[..., PTQConfig]] = {"minmax": minmax, "baseptq": baseptq, "ptq4vit": ptq4vit,
                                                "repq": repq, "adalog": adalog, "combined": combined}


def get_method(name: str, w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """The config of method ``name`` at the given bit-widths, with ``overrides`` applied."""
    if name not in METHODS:
        raise PtqlibError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    try:
        return METHODS[name](w_bits, a_bits, **overrides)
    except (TypeError, ValueError) as e:
        raise PtqlibError(f"invalid settings for method {name!r}: {e}") from None
