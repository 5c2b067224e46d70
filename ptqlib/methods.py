"""Named calibration methods: each a function of the bit-widths returning a :class:`PTQConfig`.

=========  ==========================================================================
minmax     min-max scales, no search (the floor every method must beat)
baseptq    the paper's base PTQ: cosine distance, α=0.5, β=1.2, one round, no twin
ptq4vit    PTQ4ViT: Hessian-guided distance, α=0.01, β=1.2, three rounds, twin
           softmax and twin GELU
=========  ==========================================================================

Every preset uses the fast search by default (``search='coarse_to_fine'``, ``max_tokens=1024``:
scores on a seeded sample of 1024 rows per layer, later rounds refine locally); pass
``search='grid', max_tokens=None`` for the official exhaustive search.

Granularities follow the official code: per-tensor Linear weights with separate q, k and v
scales, per-channel patch-embedding weights, per-tensor activations and matmul operands. The
Hessian weights come from a real Fisher gradient (``grad_loss='pseudo_label_ce'``), not the
official KL whose gradient vanishes; pass ``grad_loss='official_kl'`` to compare. The weight of
an output element is ``E[(∂L/∂O)²]`` over images and tokens for its channel
(``grad_norm='channel'``): the raw per-element weights (``grad_norm='none'``) are dominated by the
few tokens and images with large gradients and, measured on ViT-Tiny W8A8 (300 val images),
cost 7 points of top-1 (76.7 % vs 82.3 %), while per-channel weights match or beat MSE.
"""
from __future__ import annotations

from typing import Any, Callable

from .config import PTQConfig
from .errors import PtqlibError

__all__ = ["minmax", "baseptq", "ptq4vit", "METHODS", "get_method"]


def minmax(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """Min-max scales for every quantizer; no search."""
    return PTQConfig(method="minmax", w_bits=w_bits, a_bits=a_bits, metric="mse", rounds=0,
                     softmax_unsigned=False).replace(**overrides)


def baseptq(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """The paper's base PTQ (its Sec. 3): cosine distance, α=0.5, β=1.2, n=100, one round."""
    return PTQConfig(method="baseptq", w_bits=w_bits, a_bits=a_bits, metric="cosine", alpha=0.5,
                     beta=1.2, n=100, rounds=1, softmax_unsigned=False).replace(**overrides)


def ptq4vit(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """PTQ4ViT: twin-uniform softmax and GELU quantizers, Hessian-guided search, three rounds."""
    return PTQConfig(method="ptq4vit", w_bits=w_bits, a_bits=a_bits, metric="hessian",
                     grad_loss="pseudo_label_ce", grad_norm="channel", alpha=0.01, beta=1.2, n=100, rounds=3,
                     twin_softmax=True, twin_gelu=True).replace(**overrides)


METHODS: dict[str, Callable[..., PTQConfig]] = {"minmax": minmax, "baseptq": baseptq, "ptq4vit": ptq4vit}


def get_method(name: str, w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """The config of method ``name`` at the given bit-widths, with ``overrides`` applied."""
    if name not in METHODS:
        raise PtqlibError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    try:
        return METHODS[name](w_bits, a_bits, **overrides)
    except (TypeError, ValueError) as e:
        raise PtqlibError(f"invalid settings for method {name!r}: {e}") from None
