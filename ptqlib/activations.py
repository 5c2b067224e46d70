"""The data behind the notebooks: named activations of a ViT, quantizers fitted to them, scale
sweeps against the task loss, and a cached runner for accuracy tables.

Everything here computes; :mod:`ptqlib.plots` draws and :mod:`ptqlib.widgets` makes it interactive.

* :func:`load_notebook_data` — a float model with its calibration batch and validation images,
  real (from ``PTQLIB_DATA``) or, where no data exists, random weights and random images.
* :func:`capture_activations` — what each block's quantized operands see (post-softmax,
  post-GELU, qkv / proj / fc1 inputs), row-sampled, in an :class:`Activations`.
* :func:`fit_quantizer` — the uniform or twin-uniform quantizer of lowest MSE for a set of values,
  as a :class:`FittedQuantizer` that knows its levels (for drawing the grid) and its error.
* :func:`sweep_scales` — for one quantizer of one layer, every candidate scale scored by each
  distance metric *and* by the real task loss (KL of the model's outputs to the float outputs,
  only that quantizer on), with :func:`metric_agreement` summarising who picks what.
* :func:`run_configs` — calibrate and evaluate a dict of configs, with an optional JSON cache.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from .capture import capture
from .config import PTQConfig
from .errors import PtqlibError
from .layers import QuantConv2d, QuantLinear, QuantMatMul
from .metrics import get_metric
from .quant import qrange, twin_gelu_fake, twin_softmax_fake, twin_softmax_steps, uniform_fake
from .search import linear_grid
from .wrap import Site, quantize_model, sites

__all__ = [
    "NotebookData",
    "load_notebook_data",
    "preload",
    "ActivationKind",
    "KINDS",
    "Activations",
    "capture_activations",
    "gaussian_fit",
    "activation_stats",
    "channel_absmax",
    "FittedQuantizer",
    "fit_uniform",
    "fit_twin_softmax",
    "fit_twin_gelu",
    "fit_quantizer",
    "quantizer_error_table",
    "split_search",
    "bit_layout",
    "SweepTarget",
    "ScaleSweep",
    "sweep_scales",
    "metric_agreement",
    "run_configs",
    "engine_fingerprint",
    "official_results",
]


# ----------------------------------------------------------------------------- data


@dataclass
class NotebookData:
    """A float model and its images, as a notebook uses them.

    Attributes:
        model: the float timm model, eval mode (never wrapped here; functions copy it).
        model_name: the timm name.
        real_weights: True when the weights are a trained checkpoint, False for random weights.
        calib_images, calib_labels: the calibration batch.
        val: validation images (a dataset), or None.
        source: where the weights and images came from, without local paths.
    """

    model: nn.Module
    model_name: str
    real_weights: bool
    calib_images: Tensor
    calib_labels: Tensor
    val: Dataset | None
    source: str


def load_notebook_data(
    model_name: str = "vit_tiny_patch16_224",
    data: str | Path | None = None,
    *,
    calib_images: int = 32,
    val_images: int | None = None,
    allow_random: bool = False,
    calib_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    seed: int = 0,
) -> NotebookData:
    """The model and images a notebook works on.

    Weights: the model's checkpoint in ``<data>/weights/`` if there is one; else, with
    ``allow_random`` (smoke mode), random weights; else timm's pretrained download (needs
    internet; a clear error otherwise).

    Images: calibration images from ``calib_dir`` (default ``<data>/imagenet-calib``, the files of
    ``calib32.txt`` first; a seeded sample when more are asked for or there is no list) and the
    first ``val_images`` of ``val_dir`` (default ``<data>/imagenet-val-1300``; an ImageNet
    ``val/<wnid>/`` folder works too). Without any image folder and with ``allow_random``:
    Gaussian-noise images with random labels, enough to run every code path.

    Args:
        model_name: timm model name (optionally with a pretrained tag).
        data: the data folder; ``None`` or ``""`` means none.
        calib_images: calibration batch size.
        val_images: validation images (``None``: all).
        allow_random: allow random weights and noise images where no real ones exist.
        calib_dir, val_dir: image folders overriding the data folder's.
        seed: seeds the random weights, images and samples.
    """
    from .data import DataPaths, LabeledImages, calibration_batch, model_transform, read_list
    from .models import find_checkpoint, load_model

    root = Path(data) if data else None
    if root is not None and not root.is_dir():
        raise PtqlibError(f"data folder {root} is not a directory; set PTQLIB_DATA to the shared data folder or leave it empty")
    paths = DataPaths.from_root(root) if root is not None else None
    checkpoint = find_checkpoint(model_name, root) if root is not None else None
    if checkpoint is not None:
        model, real, weights = load_model(model_name, checkpoint), True, f"real weights ({checkpoint.name})"
    elif allow_random:
        model, real, weights = load_model(model_name, random_init=True, seed=seed), False, "RANDOM weights"
    else:
        model, real, weights = load_model(model_name), True, "timm pretrained weights (downloaded)"
    transform = model_transform(model)
    calib_root = Path(calib_dir) if calib_dir else (paths.calib_dir if paths and paths.calib_dir.is_dir() else None)
    val_root = Path(val_dir) if val_dir else (paths.val_dir if paths and paths.val_dir.is_dir() else None)
    if calib_root is not None:
        calib_set = LabeledImages(calib_root, transform=transform)
        listed = None
        if not calib_dir and paths is not None and paths.calib_list.exists() and calib_images <= len(read_list(paths.calib_list)):
            listed = paths.calib_list
        images, labels, _ = calibration_batch(calib_set, calib_images, list_file=listed, seed=seed)
        calib_text = f"{images.shape[0]} calibration images ({'calib32.txt' if listed else 'seeded sample'} of {calib_root.name})"
    elif allow_random:
        size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
        gen = torch.Generator().manual_seed(seed)
        images = torch.randn(calib_images, *size, generator=gen)
        labels = torch.randint(0, 1000, (calib_images,), generator=gen)
        calib_text = f"{calib_images} Gaussian-noise calibration images"
    else:
        raise PtqlibError("no calibration images: set PTQLIB_DATA to the shared data folder or pass calib_dir")
    if val_root is not None:
        val: Dataset | None = LabeledImages(val_root, transform=transform, limit=val_images)
        val_text = f"{len(val)} validation images of {val_root.name}"
    elif allow_random:
        size = tuple(images.shape[1:])
        gen = torch.Generator().manual_seed(seed + 1)
        n_val = 16 if val_images is None else val_images
        val = TensorDataset(torch.randn(n_val, *size, generator=gen), torch.randint(0, 1000, (n_val,), generator=gen))
        val_text = f"{n_val} Gaussian-noise validation images"
    else:
        val, val_text = None, "no validation images"
    source = f"{model_name}: {weights}; {calib_text}; {val_text}"
    if not real:
        source += " (random weights: code paths only, the numbers mean nothing)"
    return NotebookData(model, model_name, real, images, labels, val, source)


def preload(dataset: Dataset, *, batch_size: int = 64, progress: bool = True, desc: str = "decode") -> TensorDataset:
    """Decode a dataset once into memory (``TensorDataset``), so that many evaluations share it."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    xs, ys = [], []
    for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


# ----------------------------------------------------------------------------- activations


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
        step = max(abs(lo), abs(hi)) / qrange(bits, signed)[1]
        skew, kurt = _moments(v)
        rows.append({"kind": kind, "block": block, "mean": float(v.mean()), "std": float(v.std()),
                     "min": lo, "max": hi, "skewness": skew, "excess_kurtosis": kurt,
                     f"zero_share_{bits}bit": float((v.abs() < step / 2).double().mean()),
                     "max_over_std": max(abs(lo), abs(hi)) / max(float(v.std()), 1e-12)})
    return pd.DataFrame(rows)


def channel_absmax(acts: Activations, kind: str = "post-GELU") -> Tensor:
    """``(blocks, channels)``: each channel's largest magnitude, per block (which units carry outliers)."""
    return torch.stack([acts.channels(kind, b).abs().amax(0) for b in acts.blocks])


# ----------------------------------------------------------------------------- fitted quantizers

#: The paper's search grid for scale multipliers (α = 0.01, β = 1.2, n = 100).
FIT_GRID = torch.unique(torch.cat([linear_grid(0.01, 1.2, 100), torch.ones(1)]))  # and the min-max step itself
TWIN_GELU_SPLITS = tuple(range(-2, 13))


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

    def fake(self, x: Tensor) -> Tensor:
        """Fake-quantize ``x`` (exactly what ``ptqlib.quant`` computes)."""
        x = x.float()
        if self.kind == "uniform":
            return uniform_fake(x, torch.tensor(self.scale), self.bits, self.signed)
        if self.kind == "twin-softmax":
            return twin_softmax_fake(x, self.bits, self.m)
        if self.kind == "twin-gelu":
            return twin_gelu_fake(x, self.bits, torch.tensor(self.scale), self.m)
        raise ValueError(self.kind)

    def steps(self) -> dict[str, float]:
        """The steps by range: ``{"step": Δ}``, ``{"fine": Δ1, "coarse": Δ2}`` or ``{"positive": Δp, "negative": Δn}``."""
        if self.kind == "uniform":
            return {"step": self.scale}
        if self.kind == "twin-softmax":
            d1, d2 = twin_softmax_steps(self.bits, self.m)
            return {"fine": float(d1), "coarse": float(d2)}
        return {"positive": self.scale, "negative": self.scale * 2.0 ** -self.m}

    def level_groups(self) -> dict[str, Tensor]:
        """The representable values by range (what a grid drawn over a histogram shows)."""
        if self.kind == "uniform":
            lo, hi = qrange(self.bits, self.signed)
            return {"uniform": torch.arange(lo, hi + 1, dtype=torch.float64) * self.scale}
        n = 2 ** (self.bits - 1)
        steps = list(self.steps().values())
        i = torch.arange(n, dtype=torch.float64)
        if self.kind == "twin-softmax":
            return {"fine range R1": i * steps[0], "coarse range R2": i * steps[1]}
        return {"positive": i * steps[0], "negative": -i * steps[1]}

    def levels(self) -> Tensor:
        """All representable values, sorted and unique."""
        return torch.unique(torch.cat(list(self.level_groups().values())))

    def mse(self, x: Tensor) -> float:
        x = x.float()
        return float((self.fake(x) - x).double().square().mean())

    def label(self) -> str:
        if self.kind == "uniform":
            return f"uniform {self.bits}-bit ({'signed' if self.signed else 'unsigned'}), Δ={self.scale:.3g}"
        s = self.steps()
        if self.kind == "twin-softmax":
            return f"twin-uniform {self.bits}-bit, Δ1=Δ2/2^{self.m}={s['fine']:.3g}, Δ2={s['coarse']:.3g}"
        return f"twin-uniform {self.bits}-bit, Δp={s['positive']:.3g}, Δn=Δp/2^{self.m}={s['negative']:.3g}"


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
    step0 = max(float(values.abs().max()), 1e-12) / qrange(bits, signed)[1]
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
        splits = torch.arange(0, bits, dtype=torch.float32)
        errs = _batched_mse(x, w, lambda v, mm: twin_softmax_fake(v, bits, mm), splits)
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
    scales = FIT_GRID * (max(float(values.max()), 1e-12) / (n - 1))  # (G,)

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
        neg_grid = FIT_GRID * (max(neg_max, 1e-12) / (n - 1))
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


def split_search(values: Tensor, bits: int, twin: str) -> "pd.DataFrame":
    """MSE for every split ``m``: softmax 0..k-1; GELU -2..12 with Δp searched for each ``m``."""
    import pandas as pd

    rows = []
    splits = range(bits) if twin == "softmax" else TWIN_GELU_SPLITS
    for m in splits:
        fq = fit_twin_softmax(values, bits, m=m) if twin == "softmax" else fit_twin_gelu(values, bits, m=m)
        rows.append({"m": m, "mse": fq.mse(values), **fq.steps()})
    return pd.DataFrame(rows)


def bit_layout(values: Sequence[float], fq: FittedQuantizer) -> "pd.DataFrame":
    """For each value: the twin (or uniform) code in binary, its range/sign bit, magnitude,
    the value it stands for and the error."""
    import pandas as pd

    from .quant import twin_gelu_codes, twin_softmax_codes, uniform_codes

    x = torch.tensor(list(values), dtype=torch.float32)
    k = fq.bits
    if fq.kind == "twin-softmax":
        codes = twin_softmax_codes(x, k, fq.m)
        top = "range bit"
    elif fq.kind == "twin-gelu":
        codes = twin_gelu_codes(x, k, torch.tensor(fq.scale), fq.m)
        top = "sign bit"
    else:
        codes = uniform_codes(x, torch.tensor(fq.scale), k, fq.signed)
        top = None
    deq = fq.fake(x)
    rows = []
    for v, c, d in zip(x.tolist(), codes.tolist(), deq.tolist()):
        row = {"value": v, "code": c, "bits": format(c & (2 ** k - 1), f"0{k}b")}
        if top is not None:
            row[top] = c >> (k - 1)
            row["magnitude"] = c & (2 ** (k - 1) - 1)
            row["step"] = fq.steps()["coarse" if (top == "range bit" and c >> (k - 1)) else
                                     "fine" if top == "range bit" else
                                     "negative" if c >> (k - 1) else "positive"]
        row.update({"dequantized": d, "error": d - v})
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- scale sweeps


@dataclass(frozen=True)
class SweepTarget:
    """One quantizer to sweep: ``operand`` of site ``site`` — ``weight`` or ``input`` of a
    Linear, ``a`` or ``b`` of a MatMul. Its scale is one per tensor, ``multiplier · Δ₀``."""

    site: str
    operand: str

    @property
    def label(self) -> str:
        return f"{self.site} {self.operand}"


@dataclass
class ScaleSweep:
    """Candidate scales of each target, scored by each metric and by the task loss.

    ``table`` is long-format: one row per (target, bits, multiplier) with a column per metric
    and ``task_kl`` (mean KL(float ‖ quantized) over the images, only that quantizer on) and
    ``task_ce`` (cross-entropy to the labels). ``grads`` keeps, per gradient loss, the output
    gradients of each target's site (for plotting their magnitudes).
    """

    table: "pd.DataFrame"
    metrics: list[str]
    grads: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    float_ce: float = float("nan")
    seconds: float = 0.0


_OPERAND_ATTR = {"weight": "weight_quant", "input": "input_quant", "a": "a_quant", "b": "b_quant"}


def _operand_tensor(site: Site, cap, operand: str) -> Tensor:
    if operand == "weight":
        return site.module.weight.detach()
    if operand in ("input", "a"):
        return cap.inputs[0]
    return cap.inputs[1]


def _layer_outputs(site: Site, cap, operand: str, fakes: Tensor) -> Tensor:
    """The site's output on the captured rows with ``operand`` replaced by each of ``fakes`` (K, ...)."""
    m = site.module
    if isinstance(m, QuantLinear):
        w, b = m.weight.detach(), m.bias
        x = cap.inputs[0]
        out = torch.matmul(x, fakes.transpose(-1, -2)) if operand == "weight" else torch.matmul(fakes, w.t())
        return out if b is None else out + b.detach()
    if isinstance(m, QuantMatMul):
        a, bm = cap.inputs
        return fakes @ bm if operand == "a" else a @ fakes
    raise PtqlibError(f"sweeps support Linear and MatMul sites, not {type(m).__name__} ({site.name})")


def _float_output(site: Site, cap) -> Tensor:
    m = site.module
    if isinstance(m, QuantLinear):
        return F.linear(cap.inputs[0], m.weight.detach(), None if m.bias is None else m.bias.detach())
    a, bm = cap.inputs
    return a @ bm


class _Tail:
    """Runs the model from the input of the block holding a site (cached), or whole."""

    def __init__(self, model: nn.Module, site_name: str, images: Tensor, batch: int) -> None:
        self.model, self.images, self.batch = model, images, batch
        self.start: int | None = None
        self.cached: list[Tensor] | None = None
        blocks = getattr(model, "blocks", None)
        parts = site_name.split(".")
        vit_like = isinstance(blocks, nn.Sequential) and hasattr(model, "forward_head") and hasattr(model, "norm")
        if vit_like and parts[0] == "blocks" and parts[1].isdigit():
            self.start = int(parts[1])
        elif vit_like and parts[0] == "head":
            self.start = len(blocks)
        if self.start is not None:
            self.cached = self._prefix()

    def _prefix(self) -> list[Tensor]:
        store: list[Tensor] = []
        target = self.model.blocks[self.start] if self.start < len(self.model.blocks) else self.model.norm

        def hook(_m, args):
            store.append(args[0].detach())
            raise _Stop

        h = target.register_forward_pre_hook(hook)
        try:
            with torch.inference_mode():
                for i in range(0, self.images.shape[0], self.batch):
                    try:
                        self.model(self.images[i:i + self.batch])
                    except _Stop:
                        pass
        finally:
            h.remove()
        return store

    def logits(self) -> Tensor:
        outs = []
        with torch.inference_mode():
            if self.cached is None:
                for i in range(0, self.images.shape[0], self.batch):
                    outs.append(self.model(self.images[i:i + self.batch]))
            else:
                m = self.model
                for x in self.cached:
                    x = m.blocks[self.start:](x) if self.start < len(m.blocks) else x
                    outs.append(m.forward_head(m.norm(x)))
        return torch.cat(outs).float()


class _Stop(Exception):
    pass


def sweep_scales(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[SweepTarget],
    *,
    bits: Sequence[int] = (4,),
    multipliers: Tensor | None = None,
    metrics: Sequence[str] = ("mse", "cosine", "pearson", "l1", "hessian"),
    grad_losses: Mapping[str, str | tuple[str, str]] | None = None,
    labels: Tensor | None = None,
    max_tokens: int | None = 2048,
    batch: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> ScaleSweep:
    """Score every candidate scale of each target by each metric and by the task loss.

    For a target at ``b`` bits the candidates are ``multiplier · Δ₀`` (``Δ₀`` the min-max step
    of the operand, one per tensor). The *metrics* compare the site's float output with its
    output when only that operand is quantized, on the captured (row-sampled) calibration
    inputs, as calibration does. The *task loss* runs the model on all ``images`` with only that
    quantizer switched on: ``task_kl`` = mean KL(softmax(z_float) ‖ softmax(z)), ``task_ce`` = mean
    cross-entropy to ``labels`` (or to the float model's predictions without labels).

    Args:
        model: the float model (a copy is wrapped).
        images: the images (the calibration batch).
        targets: quantizers to sweep.
        bits: bit-widths to sweep at.
        multipliers: candidate multipliers (default: 40, geometric from 0.02 to 1.2).
        metrics: metric names; ``hessian`` uses the first gradient loss.
        grad_losses: ``{column name: grad_loss}`` or ``{column name: (grad_loss, grad_norm)}`` for
            the Hessian-guided columns, e.g. ``{"hessian": "pseudo_label_ce",
            "hessian (per-channel)": ("pseudo_label_ce", "channel"), "hessian (official KL)":
            "official_kl"}`` (``grad_norm`` as in :class:`~ptqlib.config.PTQConfig`; default ``none``,
            the per-element weights of the paper's formula).
        labels: true labels of ``images`` (for ``task_ce``).
        max_tokens: rows captured per site for the metrics.
        batch: images per forward pass of the task loss.
    """
    import pandas as pd

    start_time = time.perf_counter()
    if multipliers is None:
        multipliers = torch.logspace(math.log10(0.02), math.log10(1.2), 40)
    grad_losses = dict(grad_losses or {"hessian": "pseudo_label_ce"})
    plain = [m for m in metrics if m != "hessian"]
    columns = plain + list(grad_losses) if "hessian" in metrics else plain
    wrapped = quantize_model(copy.deepcopy(model), PTQConfig(twin_softmax=False, twin_gelu=False))
    by_name = {s.name: s for s in sites(wrapped)}
    missing = [t.site for t in targets if t.site not in by_name]
    if missing:
        raise PtqlibError(f"no quantized site named {missing}; sites look like {list(by_name)[:4]}")
    chosen = [by_name[n] for n in dict.fromkeys(t.site for t in targets)]
    caps = capture(wrapped, images, chosen, grads=False, max_tokens=max_tokens, seed=seed)
    grads: dict[str, dict[str, Tensor]] = {}
    if "hessian" in metrics:
        for col, spec in grad_losses.items():
            loss, norm = (spec, "none") if isinstance(spec, str) else spec
            extra = {} if norm == "none" else {"grad_norm": norm}
            gc = capture(wrapped, images, chosen, grads=True, grad_loss=loss, labels=labels,
                         max_tokens=max_tokens, seed=seed, micro_batch=batch, **extra)
            grads[col] = {n: c.grad for n, c in gc.items()}
    with torch.inference_mode():
        float_logits = torch.cat([wrapped(images[i:i + batch]) for i in range(0, images.shape[0], batch)]).float()
    float_logp = float_logits.log_softmax(-1)
    target_labels = float_logits.argmax(-1) if labels is None else labels
    float_ce = float(F.nll_loss(float_logp, target_labels))

    rows = []
    total = len(targets) * len(bits) * multipliers.numel()
    bar = tqdm(total=total, desc="sweep", unit="scale", disable=not progress)
    for t in targets:
        site = by_name[t.site]
        cap = caps[t.site]
        q = getattr(site.module, _OPERAND_ATTR[t.operand], None)
        if q is None:
            raise PtqlibError(f"{t.site} has no {t.operand} quantizer")
        operand = _operand_tensor(site, cap, t.operand)
        absmax = {"weight": operand.abs().max(), "input": cap.stats.get("absmax"),
                  "a": cap.stats.get("a_absmax"), "b": cap.stats.get("b_absmax")}[t.operand]
        absmax = float(operand.abs().max() if absmax is None else absmax.max())
        out = _float_output(site, cap)
        tail = _Tail(wrapped, t.site, images, batch)
        for b in bits:
            signed = bool(operand.min() < 0)
            q_b = type(q)(b, signed=signed)
            setattr(site.module, _OPERAND_ATTR[t.operand], q_b)
            step0 = max(absmax, 1e-12) / qrange(b, signed)[1]
            for mult in multipliers.tolist():
                scale = torch.tensor(step0 * mult)
                with torch.no_grad():
                    fake = uniform_fake(operand, scale, b, signed).unsqueeze(0)
                    o_hat = _layer_outputs(site, cap, t.operand, fake)
                    row = {"target": t.label, "site": t.site, "operand": t.operand, "bits": b,
                           "multiplier": mult, "scale": step0 * mult}
                    for name in plain:
                        row[name] = float(get_metric(name)(out, o_hat)[0])
                    if "hessian" in metrics:
                        for col in grad_losses:
                            row[col] = float(get_metric("hessian")(out, o_hat, grads[col][t.site])[0])
                q_b.set(scale=scale)
                logp = tail.logits().log_softmax(-1)
                row["task_kl"] = float(F.kl_div(logp, float_logp, log_target=True, reduction="batchmean"))
                row["task_ce"] = float(F.nll_loss(logp, target_labels))
                rows.append(row)
                bar.update(1)
            setattr(site.module, _OPERAND_ATTR[t.operand], q)
    bar.close()
    return ScaleSweep(pd.DataFrame(rows), columns, grads, float_ce, time.perf_counter() - start_time)


def metric_agreement(sweep: ScaleSweep, task: str = "task_kl") -> "pd.DataFrame":
    """Per target, bit-width and metric: the multiplier the metric picks, the task-loss optimum,
    how far apart they are (``|log2|`` of their ratio), the task loss at the metric's pick over the
    optimum's (``loss_ratio``, 1 = as good as the best), and the Spearman rank correlation of the
    metric with the task loss over all candidates."""
    import pandas as pd

    rows = []
    for (target, bits), g in sweep.table.groupby(["target", "bits"], sort=False):
        g = g.sort_values("multiplier")
        best = g.loc[g[task].idxmin()]
        for metric in sweep.metrics:
            pick = g.loc[g[metric].idxmin()]
            rank = g[metric].rank().corr(g[task].rank())
            rows.append({"target": target, "bits": bits, "metric": metric,
                         "picked": pick["multiplier"], "optimum": best["multiplier"],
                         "log2_distance": abs(math.log2(pick["multiplier"] / best["multiplier"])),
                         "loss_at_pick": pick[task], "loss_at_optimum": best[task],
                         "loss_ratio": pick[task] / max(best[task], 1e-30),
                         "spearman": rank})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- accuracy tables


def _cache_key(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


ENGINE_MODULES = ("quant", "metrics", "search", "layers", "attention", "wrap", "config", "methods", "capture",
                  "calibrate", "evaluate", "data")


def _fingerprint() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ENGINE_MODULES:
        path = here / f"{name}.py"
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


_ENGINE_FINGERPRINT = _fingerprint()  # the sources as they were when this process imported ptqlib


def engine_fingerprint() -> str:
    """A hash of the source (as imported by this process) of the modules that decide a
    calibration's result: a cached result is reused only while none of them changed."""
    return _ENGINE_FINGERPRINT


def run_configs(
    model: nn.Module,
    calib_images: Tensor,
    val: Dataset,
    configs: Mapping[str, PTQConfig],
    *,
    calib_labels: Tensor | None = None,
    cache_dir: str | Path | None = None,
    cache_tag: Mapping[str, Any] | None = None,
    batch_size: int = 100,
    progress: bool = True,
) -> "pd.DataFrame":
    """Calibrate a copy of ``model`` with each config and evaluate it on ``val``.

    Identical configs run once. With ``cache_dir``, each result is stored as JSON under a key
    made of the config, ``cache_tag`` (describe the model and data there), the image counts and
    :func:`engine_fingerprint`, and read back instead of recomputed.

    Returns one row per name: top-1, top-5, calibration and evaluation seconds, and whether the
    row came from the cache.
    """
    import pandas as pd

    from .calibrate import calibrate
    from .evaluate import evaluate

    loader = DataLoader(val, batch_size=batch_size, shuffle=False)
    done: dict[str, dict[str, Any]] = {}
    rows = []
    cache = Path(cache_dir) if cache_dir else None
    for name, config in configs.items():
        key = _cache_key({"config": config.to_dict(), "tag": dict(cache_tag or {}), "engine": engine_fingerprint(),
                          "calib": int(calib_images.shape[0]), "val": len(val)})
        path = None if cache is None else cache / f"{key}.json"
        if key in done:
            result = dict(done[key])
        elif path is not None and path.exists():
            result = json.loads(path.read_text())
            result["cached"] = True
        else:
            torch.manual_seed(config.seed)
            qmodel = quantize_model(copy.deepcopy(model), config)
            report = calibrate(qmodel, calib_images, config, labels=calib_labels, progress=progress)
            acc = evaluate(qmodel, loader, desc=name, progress=progress)
            result = {"top1": acc.top1, "top5": acc.top5, "images": acc.images,
                      "calib_seconds": report.seconds, "eval_seconds": acc.seconds, "cached": False}
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result, indent=2) + "\n")
        done[key] = result
        rows.append({"name": name, "method": config.method, "w_bits": config.w_bits, "a_bits": config.a_bits,
                     "metric": config.metric, "twin_softmax": config.twin_softmax, "twin_gelu": config.twin_gelu,
                     "grad_loss": config.grad_loss if config.metric == "hessian" else "",
                     **result})
    return pd.DataFrame(rows)


def official_results(path: str | Path) -> "pd.DataFrame | None":
    """The table of ``official-ptq4vit-results.md`` (the official code run on the same data), or
    None when the file is absent. Columns: configuration, method, w_bits, a_bits, top1, top5."""
    import re

    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.match(r"^\d+(\.\d+)?$", cells[1]):
            continue
        m = re.match(r"(\w+)\s+W(\d+)A(\d+)", cells[0])
        method = "float" if cells[0].startswith("float") else (m.group(1).lower() if m else cells[0])
        rows.append({"configuration": cells[0], "method": method,
                     "w_bits": int(m.group(2)) if m else 32, "a_bits": int(m.group(3)) if m else 32,
                     "top1": float(cells[1]), "top5": float(cells[2])})
    return pd.DataFrame(rows) if rows else None
