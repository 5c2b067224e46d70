"""Uniform and twin-uniform quantizers fitted to a set of values (lowest MSE), as objects that
know their levels (for drawing the grid), their steps, their codes and their error.

* :func:`fit_quantizer` (and :func:`fit_uniform`, :func:`fit_twin_softmax`,
  :func:`fit_twin_gelu`) — a :class:`FittedQuantizer`.
* :func:`quantizer_error_table` — uniform vs twin-uniform error per kind, block and bit-width.
* :func:`split_search` — the error for every split ``m``; :func:`bit_layout` — codes bit by bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import functools

import torch
from torch import Tensor

from .activations import KINDS, Activations
from ..errors import PtqlibError
from ..core.quant import QUANTIZER_KINDS, Quantizer, TwinGeluQuantizer, TwinSoftmaxQuantizer, minmax_step, uniform_fake
from ..core.search import linear_grid

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FIT_GRID", "TWIN_GELU_SPLITS", "FittedQuantizer", "fit_uniform", "fit_twin_softmax", "fit_twin_gelu",
           "fit_quantizer", "quantizer_error_table", "zero_rounding_table", "split_search", "bit_layout"]


#: The paper's search grid for scale multipliers (α = 0.01, β = 1.2, n = 100).
FIT_GRID = torch.unique(torch.cat([linear_grid(0.01, 1.2, 100), torch.ones(1)]))  # and the min-max step itself
TWIN_GELU_SPLITS = tuple(int(m) for m in TwinGeluQuantizer.SPLITS)


def _sample(values: Tensor, limit: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """At most ``limit`` of the values, with weights summing to 1 such that a weighted mean over
    the sample estimates the mean over all values: the ``limit // 10`` largest magnitudes are kept
    exactly (weight 1/N each: rare outliers dominate a squared error and must not be missed), the
    rest is a seeded uniform sample standing for all the others."""
    v = values.reshape(-1).float()
    total = v.numel()
    if total <= limit:
        return v, torch.full_like(v, 1.0 / max(total, 1))
    k = limit // 10
    top = v.abs().topk(k).indices
    keep = torch.ones(total, dtype=torch.bool)
    keep[top] = False
    rest = v[keep]
    gen = torch.Generator().manual_seed(seed)
    picked = rest[torch.randint(0, rest.numel(), (limit - k,), generator=gen)]
    w = torch.cat([torch.full((k,), 1.0 / total), torch.full((limit - k,), rest.numel() / (limit - k) / total)])
    return torch.cat([v[top], picked]), w


@dataclass(frozen=True)
class FittedQuantizer:
    """A quantizer with its parameters fixed: ``kind`` is ``uniform``, ``twin-softmax`` or
    ``twin-gelu``; ``scale`` (uniform step, or the positive step of twin GELU), ``m`` (the
    split: fine step = coarse step / 2^m), ``signed`` (uniform only)."""

    kind: str
    bits: int
    scale: float = 1.0
    m: int = 0
    signed: bool = True

    @functools.cached_property
    def quantizer(self) -> Quantizer:
        """The ``ptqlib.core.quant`` quantizer with these parameters: it does all the maths."""
        if self.kind not in QUANTIZER_KINDS:
            raise ValueError(f"unknown quantizer kind {self.kind!r}; choose one of {', '.join(QUANTIZER_KINDS)}")
        return QUANTIZER_KINDS[self.kind].build(self.bits, signed=self.signed, scale=self.scale, m=self.m)

    def fake(self, x: Tensor) -> Tensor:
        """Fake-quantize ``x`` (exactly what the engine's quantizer computes)."""
        return self.quantizer.fake(x.float())

    def codes(self, x: Tensor) -> Tensor:
        """The integer codes of ``x``."""
        return self.quantizer.codes(x.float())

    def steps(self) -> dict[str, float]:
        """The steps by range: ``{"step": Δ}``, ``{"fine": Δ1, "coarse": Δ2}`` or ``{"positive": Δp, "negative": Δn}``."""
        return self.quantizer.steps()

    def level_groups(self) -> dict[str, Tensor]:
        """The representable values by range (what a grid drawn over a histogram shows)."""
        return self.quantizer.level_groups()

    def levels(self) -> Tensor:
        """All representable values, sorted and unique."""
        return torch.unique(torch.cat(list(self.level_groups().values())))

    def mse(self, x: Tensor) -> float:
        x = x.float()
        return float((self.fake(x) - x).double().square().mean())

    def label(self) -> str:
        return self.quantizer.label()


def _batched_mse(x: Tensor, w: Tensor, fake_fn, params: Tensor, chunk: int = 16) -> Tensor:
    """Weighted MSE of ``fake_fn(x, p)`` for each ``p`` in ``params`` (shape (K,)), chunked."""
    out = []
    for i in range(0, params.numel(), chunk):
        p = params[i:i + chunk].view(-1, 1)
        out.append(((fake_fn(x.unsqueeze(0), p) - x).square() * w).sum(1).double())
    return torch.cat(out)


def fit_uniform(values: Tensor, bits: int, *, signed: bool | None = None, search: bool = True,
                limit: int = 50_000) -> FittedQuantizer:
    """The uniform quantizer of lowest MSE: step ``m · Δ₀`` with ``Δ₀`` the min-max step and ``m``
    on the paper's grid (0.01 … 1.2); ``search=False`` keeps the min-max step. ``signed``
    defaults to whether the values have negatives."""
    x, w = _sample(values, limit)
    signed = bool(values.min() < 0) if signed is None else signed
    step0 = float(minmax_step(values.abs().max(), bits, signed, floor=1e-12))
    if not search:
        return FittedQuantizer("uniform", bits, scale=step0, signed=signed)
    scales = FIT_GRID * step0
    errs = _batched_mse(x, w, lambda v, s: uniform_fake(v, s, bits, signed), scales)
    best = FittedQuantizer("uniform", bits, scale=float(scales[errs.argmin()]), signed=signed)
    if x.numel() < values.numel():  # searched on a sample: never worse than min-max on all values
        minmax = FittedQuantizer("uniform", bits, scale=step0, signed=signed)
        best = min((best, minmax), key=lambda q: q.mse(values))
    return best


def fit_twin_softmax(values: Tensor, bits: int, *, m: int | None = None, limit: int = 50_000) -> FittedQuantizer:
    """The post-softmax twin quantizer; ``m`` of lowest MSE among 0..k-1 unless given."""
    if m is None:
        x, w = _sample(values, limit)
        q = TwinSoftmaxQuantizer(bits)
        splits = q.search_space()["m"]
        errs = _batched_mse(x, w, lambda v, mm: q.fake_with(v, {"m": mm}), splits)
        m = int(splits[errs.argmin()])
    return FittedQuantizer("twin-softmax", bits, m=int(m))


def fit_twin_gelu(values: Tensor, bits: int, *, m: int | None = None, limit: int = 50_000) -> FittedQuantizer:
    """The post-GELU twin quantizer of lowest MSE: positive step ``Δp`` on the paper's grid
    around the min-max step of the positives, and the split ``m`` (Δn = Δp / 2^m, searched over
    -2..12 unless given).

    The squared error separates: positives depend on Δp only, negatives on Δn only. So the best
    negative step Δn* is found once (on the grid around the negatives' min-max step), and for each
    Δp only the splits next to ``log2(Δp / Δn*)`` are scored.
    """
    x, w = _sample(values, limit)
    n = 2 ** (bits - 1)
    pos, neg = (x[x >= 0], w[x >= 0]), (x[x < 0].abs(), w[x < 0])
    scales = FIT_GRID * float(minmax_step(values.max(), bits, floor=1e-12))  # (G,)

    def sse(part: tuple[Tensor, Tensor], steps: Tensor) -> Tensor:  # weighted squared error of magnitudes, per step
        mag, wt = part
        if mag.numel() == 0:
            return torch.zeros(steps.numel(), dtype=torch.float64)
        out = []
        for i in range(0, steps.numel(), 32):
            s = steps[i:i + 32].view(-1, 1)
            q = torch.clamp(torch.round(mag.unsqueeze(0) / s), 0, n - 1) * s
            out.append(((q - mag).square() * wt).sum(1).double())
        return torch.cat(out)

    lo, hi = TWIN_GELU_SPLITS[0], TWIN_GELU_SPLITS[-1]
    if m is None:
        neg_max = float(neg[0].max()) if neg[0].numel() else 0.0
        neg_grid = FIT_GRID * float(minmax_step(neg_max, bits, floor=1e-12))
        d_star = float(neg_grid[sse(neg, neg_grid).argmin()])
        centre = torch.round(torch.log2(scales / d_star))
        cand = (centre.view(-1, 1) + torch.tensor([-1.0, 0.0, 1.0]).view(1, -1)).clamp(lo, hi)  # (G, 3)
    else:
        cand = torch.full((scales.numel(), 1), float(m))
    e_neg = sse(neg, (scales.view(-1, 1) * torch.exp2(-cand)).reshape(-1)).view(cand.shape)
    pick = e_neg.argmin(1)
    e = sse(pos, scales) + e_neg.gather(1, pick.view(-1, 1)).squeeze(1)
    g = int(e.argmin())
    return FittedQuantizer("twin-gelu", bits, scale=float(scales[g]), m=int(cand[g, pick[g]]))


def fit_quantizer(values: Tensor, quantizer: str, bits: int, twin: str | None) -> FittedQuantizer:
    """``quantizer`` is ``uniform`` or ``twin-uniform``; ``twin`` the twin kind of the values
    (``softmax`` / ``gelu``; None falls back to uniform, since no twin quantizer exists for it)."""
    if quantizer == "uniform" or twin is None:
        return fit_uniform(values, bits, signed=False if twin == "softmax" else None)
    if quantizer != "twin-uniform":
        raise PtqlibError(f"unknown quantizer {quantizer!r}; choose uniform or twin-uniform")
    return fit_twin_softmax(values, bits) if twin == "softmax" else fit_twin_gelu(values, bits)


def quantizer_error_table(acts: Activations, bits_list: Sequence[int] = (4, 6, 8),
                          kinds: Sequence[str] = ("post-softmax", "post-GELU")) -> "pd.DataFrame":
    """MSE of min-max uniform, MSE-searched uniform and MSE-searched twin-uniform quantizers on
    every captured block of ``kinds``, at each bit-width (rows: kind, block, bits)."""
    import pandas as pd

    rows = []
    for kind in kinds:
        twin = KINDS[kind].twin
        for block in acts.blocks:
            v = acts.values(kind, block)
            for bits in bits_list:
                signed = False if twin == "softmax" else None
                mm = fit_uniform(v, bits, signed=signed, search=False)
                uni = fit_uniform(v, bits, signed=signed)
                tw = fit_quantizer(v, "twin-uniform", bits, twin)
                rows.append({"kind": kind, "block": block, "bits": bits,
                             "uniform_minmax": mm.mse(v), "uniform": uni.mse(v), "twin": tw.mse(v),
                             "twin_m": tw.m})
    df = pd.DataFrame(rows)
    df["twin_over_uniform"] = df["twin"] / df["uniform"]
    return df


def zero_rounding_table(acts: Activations, bits: int, kind: str = "post-softmax") -> "pd.DataFrame":
    """Per block: the share of the non-zero values of ``kind`` that the MSE-fitted uniform and
    twin-uniform quantizers round to 0, both quantizers' MSE, and what was fitted: the largest
    value, the uniform step, the twin split ``m`` and the twin steps (``twin fine step`` and
    ``twin coarse step`` for post-softmax, ``twin positive step`` and ``twin negative step`` for
    post-GELU)."""
    import pandas as pd

    twin = KINDS[kind].twin
    rows = []
    for block in acts.blocks:
        v = acts.values(kind, block)
        uni, tw = fit_quantizer(v, "uniform", bits, twin), fit_quantizer(v, "twin-uniform", bits, twin)
        nonzero = v != 0
        rows.append({"block": block, "uniform: values -> 0": float((uni.fake(v)[nonzero] == 0).double().mean()),
                     "twin: values -> 0": float((tw.fake(v)[nonzero] == 0).double().mean()),
                     "uniform MSE": uni.mse(v), "twin MSE": tw.mse(v), "largest value": float(v.max()),
                     "uniform step": uni.scale, "twin m": tw.m,
                     **{f"twin {name} step": step for name, step in tw.steps().items()}})
    return pd.DataFrame(rows)


def split_search(values: Tensor, bits: int, twin: str) -> "pd.DataFrame":
    """MSE for every split ``m``: softmax 0..k-1; GELU -2..12 with Δp searched for each ``m``."""
    import pandas as pd

    rows = []
    splits = [int(m) for m in TwinSoftmaxQuantizer(bits).search_space()["m"]] if twin == "softmax" else TWIN_GELU_SPLITS
    for m in splits:
        fq = fit_twin_softmax(values, bits, m=m) if twin == "softmax" else fit_twin_gelu(values, bits, m=m)
        rows.append({"m": m, "mse": fq.mse(values), **fq.steps()})
    return pd.DataFrame(rows)


def bit_layout(values: Sequence[float], fq: FittedQuantizer) -> "pd.DataFrame":
    """For each value: the twin (or uniform) code in binary, its range/sign bit, magnitude,
    the value it stands for and the error."""
    import pandas as pd

    x = torch.tensor(list(values), dtype=torch.float32)
    codes = fq.codes(x)
    deq = fq.fake(x)
    rows = []
    for v, c, d in zip(x.tolist(), codes.tolist(), deq.tolist()):
        row = {"value": v, "code": c, "bits": format(c & (2 ** fq.bits - 1), f"0{fq.bits}b")}
        row.update(fq.quantizer.code_fields(c))
        row.update({"dequantized": d, "error": d - v})
        rows.append(row)
    return pd.DataFrame(rows)
