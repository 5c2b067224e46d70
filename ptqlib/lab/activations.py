"""Named activations of a ViT, as its quantizers see them: post-softmax, post-GELU (fc2 input),
qkv / proj / fc1 inputs, per block (and per head), with summary statistics.

* :func:`capture_activations` — run a copy of the float model and keep each kind's operand,
  row-sampled, in an :class:`Activations`.
* :func:`activation_stats` — moments, tails and how much a uniform grid rounds to zero.
* :func:`channel_absmax` — each channel's largest magnitude (which hidden units carry outliers).

Quantizers fitted to these values live in :mod:`ptqlib.fitting`, scale sweeps in
:mod:`ptqlib.sweeps`, cached accuracy tables in :mod:`ptqlib.results`; :mod:`ptqlib.plots`
draws and :mod:`ptqlib.widgets` makes it interactive.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..engine.capture import capture
from ..engine.config import PTQConfig
from ..errors import PtqlibError
from ..core.quant import minmax_step
from ..engine.wrap import Site, quantize_model, sites

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ActivationKind", "KINDS", "Activations", "capture_activations", "gaussian_fit", "activation_stats",
           "channel_absmax", "channel_outlier_table"]


@dataclass(frozen=True)
class ActivationKind:
    """One kind of activation: the operand ``operand`` of the site ``<block>.<suffix>``.

    ``twin`` names the twin-uniform quantizer made for it (``softmax``, ``gelu``) or is None;
    ``heads`` says whether the values split by attention head (post-softmax by its head axis,
    proj input by its head-major channels).
    """

    name: str
    suffix: str
    operand: int
    twin: str | None
    heads: bool
    description: str


KINDS: dict[str, ActivationKind] = {k.name: k for k in (
    ActivationKind("post-softmax", "attn.matmul_av", 0, "softmax", True,
                   "attention probabilities softmax(q·kᵀ/√d), the first operand of attn@v"),
    ActivationKind("post-GELU", "mlp.fc2", 0, "gelu", False, "the MLP's hidden activations GELU(fc1(x)), fc2's input"),
    ActivationKind("qkv input", "attn.qkv", 0, None, False, "LayerNorm output entering the qkv projection"),
    ActivationKind("proj input", "attn.proj", 0, None, True, "attention output (heads concatenated) entering proj"),
    ActivationKind("fc1 input", "mlp.fc1", 0, None, False, "LayerNorm output entering fc1"),
)}


@dataclass
class Activations:
    """Captured activations, by kind and block.

    ``data[(kind, block)]`` is ``(heads, values)`` for post-softmax and ``(rows, channels)`` for
    the Linear inputs. Blocks are numbered 0.. in forward order.
    """

    data: dict[tuple[str, int], Tensor]
    blocks: list[int]
    kinds: list[str]
    num_heads: int
    model_name: str
    images: int
    rows_per_site: int | None

    def values(self, kind: str, block: int, head: int | None = None) -> Tensor:
        """The values of one kind in one block as a 1-D tensor; ``head`` selects one head where
        the kind has heads (ignored otherwise)."""
        t = self._get(kind, block)
        k = KINDS[kind]
        if head is None or not k.heads:
            return t.reshape(-1)
        if not 0 <= head < self.num_heads:
            raise PtqlibError(f"head {head} is outside 0..{self.num_heads - 1}")
        if k.operand == 0 and k.suffix.endswith("matmul_av"):
            return t[head].reshape(-1)
        per = t.shape[1] // self.num_heads  # proj input: channels are head-major
        return t[:, head * per:(head + 1) * per].reshape(-1)

    def channels(self, kind: str, block: int) -> Tensor:
        """``(rows, channels)`` of a Linear input (not defined for post-softmax)."""
        if KINDS[kind].suffix.endswith("matmul_av"):
            raise PtqlibError("post-softmax values have no channel axis; use values(kind, block, head)")
        return self._get(kind, block)

    def has_heads(self, kind: str) -> bool:
        return KINDS[kind].heads

    def _get(self, kind: str, block: int) -> Tensor:
        try:
            return self.data[(kind, block)]
        except KeyError:
            raise PtqlibError(f"no {kind!r} activations captured for block {block}; "
                              f"captured kinds {self.kinds}, blocks {self.blocks}") from None


def _block_index(site_list: Sequence[Site]) -> dict[str, int]:
    order: dict[str, int] = {}
    for s in site_list:
        if s.block and s.block not in order:
            order[s.block] = len(order)
    return order


def capture_activations(
    model: nn.Module,
    images: Tensor,
    *,
    kinds: Iterable[str] = tuple(KINDS),
    blocks: Iterable[int] | None = None,
    max_tokens: int | None = 2048,
    seed: int = 0,
    micro_batch: int | None = None,
) -> Activations:
    """Run ``images`` through a copy of the float ``model`` and keep the named activations.

    Args:
        model: a float timm ViT/DeiT/Swin (not modified: a copy is wrapped).
        images: ``(B, 3, H, W)``.
        kinds: names from :data:`KINDS`.
        blocks: block numbers to keep (default all).
        max_tokens: rows (tokens) kept per site, a seeded sample (post-softmax keeps whole rows
            of ``N`` probabilities, ``ceil(max_tokens / B)`` per image and head).
        seed: seeds the sample.
        micro_batch: images per forward pass.
    """
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise PtqlibError(f"unknown activation kinds {unknown}; choose from {list(KINDS)}")
    wrapped = quantize_model(copy.deepcopy(model), PTQConfig())
    site_list = sites(wrapped)
    index = _block_index(site_list)
    wanted = set(index.values()) if blocks is None else set(blocks)
    chosen: dict[str, tuple[str, int]] = {}
    for s in site_list:
        if not s.block or index[s.block] not in wanted:
            continue
        for k in kinds:
            if s.name == f"{s.block}.{KINDS[k].suffix}":
                chosen[s.name] = (k, index[s.block])
    if not chosen:
        raise PtqlibError(f"none of {kinds} found in {type(model).__name__}; is it a ViT/DeiT/Swin?")
    caps = capture(wrapped, images, [s for s in site_list if s.name in chosen], grads=False,
                   max_tokens=max_tokens, micro_batch=micro_batch, seed=seed)
    data: dict[tuple[str, int], Tensor] = {}
    num_heads = 1
    for name, (k, b) in chosen.items():
        x = caps[name].inputs[KINDS[k].operand]
        if x.ndim == 4:  # (B, H, rows, N) -> (H, B·rows·N)
            num_heads = x.shape[1]
            x = x.transpose(0, 1).reshape(x.shape[1], -1)
        data[(k, b)] = x.contiguous()
    return Activations(data=data, blocks=sorted({b for _, b in chosen.values()}), kinds=kinds,
                       num_heads=num_heads, model_name=getattr(model, "default_cfg", {}).get("architecture", type(model).__name__),
                       images=int(images.shape[0]), rows_per_site=max_tokens)


def gaussian_fit(values: Tensor) -> tuple[float, float]:
    """Mean and standard deviation: the Gaussian the values would follow if they were normal."""
    v = values.double()
    return float(v.mean()), float(v.std())


def _moments(v: Tensor) -> tuple[float, float]:
    v = v.double()
    c = v - v.mean()
    var = c.square().mean()
    skew = float((c ** 3).mean() / var.clamp_min(1e-300) ** 1.5)
    kurt = float((c ** 4).mean() / var.clamp_min(1e-300) ** 2 - 3)
    return skew, kurt


def activation_stats(acts: Activations, bits: int = 8) -> "pd.DataFrame":
    """Per kind and block: mean, std, min, max, skewness, excess kurtosis (0 for a Gaussian), the
    share of values a ``bits``-bit min-max uniform quantizer rounds to zero, and max/std."""
    import pandas as pd

    rows = []
    for (kind, block), _ in sorted(acts.data.items(), key=lambda kv: (acts.kinds.index(kv[0][0]), kv[0][1])):
        v = acts.values(kind, block)
        lo, hi = float(v.min()), float(v.max())
        signed = lo < 0
        step = float(minmax_step(max(abs(lo), abs(hi)), bits, signed, floor=0.0))
        skew, kurt = _moments(v)
        rows.append({"kind": kind, "block": block, "mean": float(v.mean()), "std": float(v.std()),
                     "min": lo, "max": hi, "skewness": skew, "excess_kurtosis": kurt,
                     f"zero_share_{bits}bit": float((v.abs() < step / 2).double().mean()),
                     "max_over_std": max(abs(lo), abs(hi)) / max(float(v.std()), 1e-12)})
    return pd.DataFrame(rows)


def channel_absmax(acts: Activations, kind: str = "post-GELU") -> Tensor:
    """``(blocks, channels)``: each channel's largest magnitude, per block (which units carry outliers)."""
    return torch.stack([acts.channels(kind, b).abs().amax(0) for b in acts.blocks])


def channel_outlier_table(absmax: Tensor, blocks: Sequence[int], top: int = 5) -> "pd.DataFrame":
    """Per block, from :func:`channel_absmax`: the largest channel maximum, the median channel's,
    their ratio (``max / median``: how far the outlier units reach beyond the rest) and the ``top``
    units with their maxima."""
    import pandas as pd

    rows = []
    for i, b in enumerate(blocks):
        best = absmax[i].topk(min(top, absmax.shape[1]))
        median = float(absmax[i].median())
        rows.append({"block": b, "max |x|": float(best.values[0]), "median unit max": median,
                     "max / median": float(best.values[0]) / max(median, 1e-12), "top units": best.indices.tolist(),
                     "their max": [round(v, 1) for v in best.values.tolist()]})
    return pd.DataFrame(rows)
