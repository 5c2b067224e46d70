"""Named calibration methods: each a function of the bit-widths returning a :class:`PTQConfig`.

=========  ==========================================================================
minmax     min-max scales, no search (the floor every method must beat)
baseptq    the paper's base PTQ: cosine distance, α=0.5, β=1.2, one round, no twin
ptq4vit    PTQ4ViT: Hessian-guided distance, α=0.01, β=1.2, three rounds, twin
           softmax and twin GELU
=========  ==========================================================================

Every preset uses the fast search by default (``search='coarse_to_fine'``: in every round every
5th grid point, then the points around the best; ``max_tokens=1024``: scores on 1024 rows per
layer); pass ``search='grid', max_tokens=None`` for the official exhaustive search.

Granularities follow the official code: per-tensor Linear weights with separate q, k and v
scales, per-channel patch-embedding weights, per-tensor Linear inputs. The official matmul
operands are per head; ``baseptq`` keeps that (measured on ViT-Tiny W6A6, first 300 val images:
53.3 % per head against 46.7 % per tensor), while ``ptq4vit`` uses one scale (and one twin
split) per tensor, which measured better with its Hessian metric (before the outlier rows below):
77.15 % against 75.92 % top-1
at W6A6 on all 1300 val images (79.0 against 77.3 on the first 300). Pass
``matmul_granularity='head'`` for the official layout.

PTQ4ViT's Hessian weights here are real: ``(∂L/∂O)²`` of the cross-entropy against the float
model's own prediction (``grad_loss='pseudo_label_ce'``), not the official KL whose gradient
vanishes; pass ``grad_loss='official_kl'`` to compare. Each image's gradient is scaled to unit
mean square (``grad_norm='image'``) so that the few images the model is unsure of do not decide
every scale, and the rows the search scores are the 1024 with the largest gradient energy
(``row_select='fisher'``: for a ViT mostly the class-token rows, which carry the prediction),
except an eighth of them (``outlier_rows=0.125``) taken by the largest input magnitude: the
massive-activation tokens. On ViT-Tiny, tokens 1, 14, 183 and 196 carry a post-GELU value near
213 in channel 417 of block 7's fc2 input, which meets a weight of 2.6 (the layer's largest);
their gradient is tiny, so without them the search clips that weight to 0.3 of its value, which
the local metric calls harmless. W8A8 top-1 with the exhaustive grid: 81.00 without the outlier
rows, 81.92 with them (a coarse-to-fine search without them fell to 78.15).
Measured on real ViT-Tiny (first 300 val images, float 83.67): per-element weights scored on a
*uniform* sample of rows give 76.7 at W8A8; the same weights on Fisher-selected or on all rows
give 83.7 at W8A8 and 79.0 at W6A6, against 82.3 and 65.0 with per-channel weights
(``grad_norm='channel'``).
"""
from __future__ import annotations

from typing import Any, Callable

from .config import PTQConfig
from ..errors import PtqlibError

__all__ = ["minmax", "baseptq", "ptq4vit", "METHODS", "get_method"]


def minmax(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """Min-max scales for every quantizer; no search."""
    return PTQConfig(method="minmax", w_bits=w_bits, a_bits=a_bits, metric="mse", rounds=0,
                     softmax_unsigned=False).replace(**overrides)


def baseptq(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """The paper's base PTQ (its Sec. 3): cosine distance, α=0.5, β=1.2, n=100, one round."""
    return PTQConfig(method="baseptq", w_bits=w_bits, a_bits=a_bits, metric="cosine", alpha=0.5,
                     beta=1.2, n=100, rounds=1, softmax_unsigned=False,
                     matmul_granularity="head").replace(**overrides)


def ptq4vit(w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """PTQ4ViT: twin-uniform softmax and GELU quantizers, Hessian-guided search, three rounds."""
    return PTQConfig(method="ptq4vit", w_bits=w_bits, a_bits=a_bits, metric="hessian",
                     grad_loss="pseudo_label_ce", grad_norm="image", row_select="fisher", alpha=0.01, beta=1.2,
                     n=100, rounds=3, twin_softmax=True, twin_gelu=True, matmul_granularity="tensor").replace(**overrides)


METHODS: dict[str, Callable[..., PTQConfig]] = {"minmax": minmax, "baseptq": baseptq, "ptq4vit": ptq4vit}


def get_method(name: str, w_bits: int = 8, a_bits: int = 8, **overrides: Any) -> PTQConfig:
    """The config of method ``name`` at the given bit-widths, with ``overrides`` applied."""
    if name not in METHODS:
        raise PtqlibError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    try:
        return METHODS[name](w_bits, a_bits, **overrides)
    except (TypeError, ValueError) as e:
        raise PtqlibError(f"invalid settings for method {name!r}: {e}") from None
