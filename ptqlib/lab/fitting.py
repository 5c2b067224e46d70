"""Quantizers fitted to a set of values (lowest MSE), as objects that know their levels (for
drawing the grid), their steps, their codes and their error.

* :func:`fit_quantizer` (and :func:`fit_uniform`, :func:`fit_twin_softmax`,
  :func:`fit_twin_gelu`) — a uniform or twin-uniform :class:`FittedQuantizer`.
* :func:`fit_kind` — any kind of :mod:`ptqlib.core.quant` (log2, log√2, AdaLog, shifted uniform, ...),
  searched over the quantizer's own ``search_space()``.
* :func:`quantizer_error_table` — uniform vs twin-uniform error per kind, block and bit-width;
  :func:`kind_error_table` — any set of kinds (:func:`fits_from_table`: its quantizers back).
* :func:`split_search` — the error for every split ``m``; :func:`bit_layout` — codes bit by bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import functools
import inspect

import torch
from torch import Tensor

from .activations import KINDS, Activations
from ..errors import PtqlibError
from ..core.quant import QUANTIZER_KINDS, Quantizer, TwinGeluQuantizer, TwinSoftmaxQuantizer, minmax_step, uniform_fake
from ..core.search import linear_grid

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FIT_GRID", "TWIN_GELU_SPLITS", "FittedQuantizer", "fit_uniform", "fit_twin_softmax", "fit_twin_gelu",
           "fit_quantizer", "fit_kind", "KIND_CHOICES", "quantizer_error_table", "kind_error_table", "fits_from_table",
           "zero_rounding_table", "split_search", "bit_layout"]


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
    """A quantizer with its parameters fixed: ``kind`` is a key of
    :data:`~ptqlib.core.quant.QUANTIZER_KINDS` (``uniform``, ``twin-softmax``, ``twin-gelu``,
    ``uniform-shifted``, ``log2``, ``log-sqrt2``, ``adalog``); ``scale`` (uniform step, the
    positive step of twin GELU, or the largest level of a logarithmic quantizer), ``m`` (the
    split: fine step = coarse step / 2^m), ``q`` (AdaLog's codes per octave: base 2^(1/q)),
    ``signed`` (uniform: signed codes; logarithmic: shifted by GELU's minimum, for post-GELU
    values). Parameters a kind does not have are ignored."""

    kind: str
    bits: int
    scale: float = 1.0
    m: int = 0
    signed: bool = True
    q: float = 2.0

    @functools.cached_property
    def quantizer(self) -> Quantizer:
        """The ``ptqlib.core.quant`` quantizer with these parameters: it does all the maths."""
        if self.kind not in QUANTIZER_KINDS:
            raise ValueError(f"unknown quantizer kind {self.kind!r}; choose one of {', '.join(QUANTIZER_KINDS)}")
        return QUANTIZER_KINDS[self.kind].build(self.bits, signed=self.signed, scale=self.scale, m=self.m, q=self.q)

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


#: The kinds :func:`kind_error_table` fits by default, per kind of values: what PTQ4ViT, RepQ-ViT
#: and AdaLog put on post-softmax and post-GELU values (``twin`` is the twin kind of the values).
KIND_CHOICES = {
    "softmax": ("uniform", "twin-softmax", "log2", "log-sqrt2", "adalog"),
    "gelu": ("uniform", "uniform-shifted", "twin-gelu", "log2", "log-sqrt2", "adalog"),
}


def _candidates(space: dict[str, Tensor | None], start: dict[str, Tensor], grid: Tensor) -> dict[str, Tensor]:
    """Every combination of the search space's values, one column per parameter: ``None`` means
    ``grid`` times the start value (the min-max one); parameters outside the space keep their start."""
    axes = {name: (grid * float(start[name]) if vals is None else vals.float()) for name, vals in space.items()}
    if not axes:
        return {name: v.reshape(1).float() for name, v in start.items()}
    mesh = torch.meshgrid(*axes.values(), indexing="ij")
    out = {name: m.reshape(-1) for name, m in zip(axes, mesh)}
    count = next(iter(out.values())).numel()
    for name, v in start.items():
        out.setdefault(name, v.float().reshape(1).expand(count))
    return out


def fit_kind(values: Tensor, kind: str, bits: int, *, signed: bool | None = None, limit: int = 50_000,
             grid: Tensor = FIT_GRID) -> FittedQuantizer:
    """The quantizer of ``kind`` (a key of :data:`~ptqlib.core.quant.QUANTIZER_KINDS`) of lowest
    MSE on ``values``, searched as calibration would: the quantizer's start parameters come from
    ``minmax_params`` and every combination of its ``search_space()`` is scored (a parameter
    without candidates, such as a scale, takes ``grid`` times its min-max value, the paper's
    0.01 … 1.2). So log2 on post-softmax values keeps its largest level at 1 (nothing searched),
    log√2 searches it, AdaLog searches its base 2^(1/q) over :data:`~ptqlib.core.quant.ADALOG_Q`
    (and, shifted for post-GELU values, its scale too).

    ``signed`` defaults to whether the values have negatives: for the logarithmic kinds it means
    *shifted by GELU's minimum* (post-GELU values), for uniform signed codes. ``uniform``,
    ``twin-softmax`` and ``twin-gelu`` use :func:`fit_uniform`, :func:`fit_twin_softmax` and
    :func:`fit_twin_gelu` (the same search, done faster).

    >>> v = torch.tensor([1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625])   # powers of 2
    >>> fq = fit_kind(v, "adalog", 3, signed=False)    # base 2 (q = 1) puts a level on each
    >>> fq.q, fq.mse(v)
    (1.0, 0.0)
    """
    if kind not in QUANTIZER_KINDS:
        raise PtqlibError(f"unknown quantizer kind {kind!r}; choose one of {', '.join(QUANTIZER_KINDS)}")
    v = values.detach().reshape(-1).float()
    if v.numel() == 0:
        raise PtqlibError("no values to fit a quantizer to")
    signed = bool(v.min() < 0) if signed is None else signed
    if kind == "uniform":
        return fit_uniform(v, bits, signed=signed, limit=limit)
    if kind == "twin-softmax":
        return fit_twin_softmax(v, bits, limit=limit)
    if kind == "twin-gelu":
        return fit_twin_gelu(v, bits, limit=limit)
    cls = QUANTIZER_KINDS[kind]
    quantizer = cls(bits, signed=signed) if "signed" in inspect.signature(cls.__init__).parameters else cls(bits)
    start = quantizer.minmax_params({"absmax": v.abs().max(), "max": v.max(), "min": v.min()})
    cands = _candidates(quantizer.search_space(), start, grid)
    x, w = _sample(v, limit)
    count = next(iter(cands.values())).numel()
    errs = []
    for i in range(0, count, 16):
        params = {name: c[i:i + 16].reshape(-1, 1) for name, c in cands.items()}
        errs.append(((quantizer.fake_with(x.unsqueeze(0), params) - x).square() * w).sum(1).double())
    best = int(torch.cat(errs).argmin())
    chosen = {name: float(c[best]) for name, c in cands.items()}
    return FittedQuantizer(kind, bits, scale=chosen.get("scale", 1.0), m=int(chosen.get("m", 0)), signed=signed,
                           q=chosen.get("q", 2.0))


def kind_error_table(acts: Activations, bits: int, kinds: Sequence[str] = ("post-softmax", "post-GELU"),
                     choices: dict[str, Sequence[str]] | None = None) -> "pd.DataFrame":
    """MSE of every quantizer kind of ``choices`` (default :data:`KIND_CHOICES`) fitted with
    :func:`fit_kind` to each captured block's values of ``kinds`` at ``bits``; one row per kind of
    values, block and quantizer, with its MSE over the twin-uniform quantizer's and what was fitted
    (``signed``, and ``scale``, ``m``, ``q``: the parameters the kind has, else empty);
    :func:`fits_from_table` gives the quantizers back."""
    import pandas as pd

    choices = KIND_CHOICES if choices is None else choices
    rows = []
    for kind in kinds:
        twin = KINDS[kind].twin
        for block in acts.blocks:
            v = acts.values(kind, block)
            for name in choices[twin]:
                fq = fit_kind(v, name, bits, signed=False if twin == "softmax" else None)
                own = fq.quantizer.params()
                rows.append({"values": kind, "block": block, "quantizer": name, "bits": bits, "signed": fq.signed,
                             "mse": fq.mse(v), "scale": fq.scale if "scale" in own else None,
                             "m": fq.m if "m" in own else None, "q": fq.q if "q" in own else None})
    df = pd.DataFrame(rows)
    twin = df[df["quantizer"].str.startswith("twin")].set_index(["values", "block"])["mse"].to_dict()
    df["mse / twin"] = [m / twin.get((k, b), float("nan")) for k, b, m in zip(df["values"], df["block"], df["mse"])]
    return df


def fits_from_table(table: "pd.DataFrame") -> dict[tuple[str, int], dict[str, FittedQuantizer]]:
    """The quantizers of a :func:`kind_error_table`, by ``(values, block)`` and quantizer kind
    (no new fit: the parameters the table holds)."""
    out: dict[tuple[str, int], dict[str, FittedQuantizer]] = {}
    for row in table.to_dict("records"):
        given = {k: row[k] for k in ("scale", "m", "q") if row.get(k) is not None and row[k] == row[k]}
        fq = FittedQuantizer(row["quantizer"], int(row["bits"]), signed=bool(row["signed"]),
                             **{k: int(v) if k == "m" else float(v) for k, v in given.items()})
        out.setdefault((row["values"], int(row["block"])), {})[row["quantizer"]] = fq
    return out


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
