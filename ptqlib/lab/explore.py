"""The scale explorer's computations, without widgets: for any quantized operand of a ViT block,
every candidate scale scored by every distance metric.

* :class:`ScaleStudy` — one float forward and backward pass over the images records, for every
  quantized site of the chosen blocks, its operands (row-sampled), the float output ``O`` on those
  rows and the output gradient ``∂L/∂O``; then :meth:`ScaleStudy.curves` scores the candidates of
  one operand, bit-width and quantizer kind by each metric, and :meth:`ScaleStudy.view` bundles
  what the explorer draws at one candidate.
* :data:`OPERANDS` — the quantized operands of a block: the Linear weights, the qkv / proj / fc1 /
  fc2 inputs and both operands of both attention matmuls.

What is measured, for a candidate quantizer ``Q`` of one operand: the site's output ``Ô`` with
that operand fake-quantized (``Q.fake_with``, the core quantizer classes' own maths) and every
other operand float, on the captured rows, against the float output ``O``: ``mse``, ``cosine``,
``pearson``, ``l1`` and ``hessian`` of :mod:`ptqlib.core.metrics`. The Hessian-guided weights
``(∂L/∂O)²`` come from :func:`ptqlib.engine.capture.capture` with ``grad_loss`` (default
``pseudo_label_ce``: cross-entropy to the float model's own prediction) and no gradient
normalisation, as :func:`ptqlib.lab.sweeps.sweep_scales` does: the paper's per-element weights.

The candidates (the explorer's slider) are, as in the paper's α…β search, multiples of the
operand's min-max step ``Δ₀`` (the largest magnitude of the *whole* operand over the images maps
to the largest code): :data:`MULTIPLIERS`, log-spaced from 0.01 to 1.2 with 1 (min-max) among
them. A twin-uniform quantizer exists for the post-softmax values (attn·v's first operand) and the
post-GELU values (fc2's input) only:

* post-softmax: the coarse step is fixed (``2^-(k-1)``), so its candidates are the splits
  ``m = 0 … k-1`` (fine step ``Δ1 = Δ2 / 2^m``), shown as ``Δ1 / Δ2 = 2^-m``;
* post-GELU: the candidates are multiples of the positives' min-max step ``Δp``; the negative
  step is the power-of-two fraction of ``Δp`` closest to the MSE-best step of the negatives (their
  squared error does not depend on ``Δp``), so one slider moves the whole quantizer.

Scales are one per tensor (the engine's ``qkv`` weight granularity gives q, k and v rows their own
scales; the explorer's per-channel view shows how far each channel's own min-max step lies from
the shared one).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.metrics import METRICS
from ..core.quant import Quantizer, TwinGeluQuantizer, TwinSoftmaxQuantizer, UniformQuantizer, minmax_step, qrange
from ..engine.capture import capture
from ..engine.config import GradLoss, PTQConfig
from ..engine.layers import QuantLinear, QuantMatMul
from ..engine.wrap import Site, quantize_model, sites
from ..errors import PtqlibError
from .fitting import FIT_GRID, FittedQuantizer

__all__ = ["Operand", "OPERANDS", "MULTIPLIERS", "METRIC_NAMES", "QUANTIZER_CHOICES", "SiteData", "ScaleCurves",
           "ChannelView", "ScaleView", "ScaleStudy", "quantizer_kind", "candidate_params", "operand_outputs",
           "score_candidates"]

#: The slider's candidates for uniform and post-GELU twin scales: multiples of the min-max step,
#: 60 log-spaced from 0.01 to 1.2 (the paper's α = 0.01, β = 1.2) and 1 itself (min-max).
MULTIPLIERS: Tensor = torch.unique(torch.cat([torch.logspace(math.log10(0.01), math.log10(1.2), 60, dtype=torch.float64),
                                              torch.ones(1, dtype=torch.float64)]))
#: The metrics scored, in drawing order: every one of :data:`ptqlib.core.metrics.METRICS` (the
#: paper's five first; ``hessian`` only where gradients were captured).
METRIC_NAMES: tuple[str, ...] = (*(m for m in ("mse", "cosine", "pearson", "l1", "hessian") if m in METRICS),
                                 *(m for m in METRICS if m not in ("mse", "cosine", "pearson", "l1", "hessian")))
#: The explorer's quantizer choices.
QUANTIZER_CHOICES: tuple[str, ...] = ("uniform", "twin-uniform")


@dataclass(frozen=True)
class Operand:
    """One quantized operand of a block: ``operand`` (``weight``/``input`` of a Linear, ``a``/``b``
    of a MatMul) of the site ``<block>.<suffix>``.

    ``twin`` names the twin-uniform quantizer made for it (``softmax``, ``gelu``) or is None;
    ``channel_dim`` is the operand's channel axis for the per-channel view (a weight's output rows,
    fc2 input's hidden units), None where there is no such view.
    """

    name: str
    suffix: str
    operand: str
    twin: str | None
    channel_dim: int | None
    description: str

    @property
    def per_channel(self) -> bool:
        return self.channel_dim is not None


OPERANDS: dict[str, Operand] = {o.name: o for o in (
    Operand("qkv weight", "attn.qkv", "weight", None, 0, "the qkv projection's weight (rows: q, k, v channels)"),
    Operand("qkv input", "attn.qkv", "input", None, None, "LayerNorm output entering qkv"),
    Operand("q (q·kᵀ)", "attn.matmul_qk", "a", None, None, "the queries, first operand of q·kᵀ"),
    Operand("k (q·kᵀ)", "attn.matmul_qk", "b", None, None, "the keys (kᵀ), second operand of q·kᵀ"),
    Operand("post-softmax (attn·v)", "attn.matmul_av", "a", "softmax", None,
            "the attention probabilities, first operand of attn·v"),
    Operand("v (attn·v)", "attn.matmul_av", "b", None, None, "the values, second operand of attn·v"),
    Operand("proj weight", "attn.proj", "weight", None, 0, "the attention output projection's weight"),
    Operand("proj input", "attn.proj", "input", None, None, "attention output (heads concatenated) entering proj"),
    Operand("fc1 weight", "mlp.fc1", "weight", None, 0, "the first MLP layer's weight"),
    Operand("fc1 input", "mlp.fc1", "input", None, None, "LayerNorm output entering fc1"),
    Operand("fc2 weight", "mlp.fc2", "weight", None, 0, "the second MLP layer's weight"),
    Operand("fc2 input (post-GELU)", "mlp.fc2", "input", "gelu", -1, "GELU(fc1(x)), the MLP's hidden activations"),
)}


def quantizer_kind(operand: Operand, choice: str) -> str:
    """The core quantizer kind for an explorer choice: ``uniform``, or ``twin-softmax`` /
    ``twin-gelu`` where ``choice`` is ``twin-uniform`` and the operand has a twin quantizer (else
    ``uniform``: no twin quantizer exists for it)."""
    if choice not in QUANTIZER_CHOICES:
        raise PtqlibError(f"unknown quantizer {choice!r}; choose one of {', '.join(QUANTIZER_CHOICES)}")
    if choice == "uniform" or operand.twin is None:
        return "uniform"
    return f"twin-{operand.twin}"


def _quantizer(kind: str, bits: int, signed: bool) -> Quantizer:
    if kind == "uniform":
        return UniformQuantizer(bits, signed=signed)
    return TwinSoftmaxQuantizer(bits) if kind == "twin-softmax" else TwinGeluQuantizer(bits)


@dataclass
class SiteData:
    """What one operand of one site saw during the float pass.

    ``x`` is the operand (a weight whole; a Linear input's captured rows; a matmul operand on its
    captured query rows, the second operand whole), ``output`` the site's float output ``O`` on
    those rows, ``grad`` the output gradient ``∂L/∂O`` on the same rows (None without gradients).
    ``absmax`` / ``max`` / ``min`` describe the whole operand over all images (the min-max step's
    source); ``layer`` maps a batch of fake-quantized operands ``(K, *x.shape)`` to the outputs
    ``(K, *output.shape)``.
    """

    block: int
    site: str
    operand: Operand
    x: Tensor
    output: Tensor
    grad: Tensor | None
    absmax: float
    max: float
    min: float
    layer: Callable[[Tensor], Tensor] = field(repr=False)

    @property
    def signed(self) -> bool:
        """Uniform codes are signed except for the post-softmax values (all k bits for [0, 1])."""
        return self.operand.twin != "softmax"


@dataclass
class ScaleCurves:
    """Every candidate of one operand, bit-width and quantizer kind, scored.

    ``x`` is the slider axis (multiples of the min-max step; ``Δ1/Δ2 = 2^-m`` for the post-softmax
    twin quantizer), ``labels`` the slider's labels, ``params`` each candidate's quantizer
    parameters, ``metrics`` each metric's value per candidate, ``picks`` each metric's argmin,
    ``operand_mse`` the operand's own quantization error ``E[(x - Q(x))²]``.
    """

    kind: str
    bits: int
    signed: bool
    step0: float
    x: Tensor
    labels: list[str]
    params: list[dict[str, float]]
    metrics: dict[str, Tensor]
    picks: dict[str, int]
    operand_mse: Tensor
    axis_label: str

    def quantizer(self, index: int) -> FittedQuantizer:
        """Candidate ``index`` as a :class:`~ptqlib.lab.fitting.FittedQuantizer` (levels, steps, label)."""
        p = self.params[index]
        return FittedQuantizer(self.kind, self.bits, scale=p.get("scale", 1.0), m=int(p.get("m", 0)), signed=self.signed)

    def default_index(self) -> int:
        """Where the slider starts: the min-max step (×1), or the MSE pick of the post-softmax split."""
        if self.kind == "twin-softmax":
            return self.picks["mse"]
        return int(torch.argmin((self.x - 1.0).abs()))


@dataclass
class ChannelView:
    """The per-channel view at one candidate: each channel's own min-max step next to the shared
    (per-tensor) step, and each channel's quantization error at that step."""

    channel_step: Tensor
    step: float
    error: Tensor
    axis: str


@dataclass
class ScaleView:
    """Everything the scale explorer draws at one candidate of one operand."""

    data: SiteData
    curves: ScaleCurves
    index: int
    quantizer: FittedQuantizer
    error: float
    values: dict[str, float]
    channels: ChannelView | None

    @property
    def title(self) -> str:
        op = self.data.operand
        return (f"block {self.data.block} · {op.name} · {self.curves.bits}-bit {self.curves.kind} · "
                f"{self.curves.labels[self.index]}")

    def info(self) -> dict[str, object]:
        """What the explorer shows, as plain values (tests assert on them)."""
        c = self.curves
        return {"title": self.title, "block": self.data.block, "site": self.data.site, "operand": self.data.operand.name,
                "bits": c.bits, "kind": c.kind, "index": self.index, "x": float(c.x[self.index]),
                "label": c.labels[self.index], "steps": self.quantizer.steps(), "quantizer": self.quantizer.label(),
                "error": self.error, "metrics": dict(self.values),
                "picks": {m: float(c.x[i]) for m, i in c.picks.items()},
                "pick_index": dict(c.picks), "candidates": int(c.x.numel())}


# ----------------------------------------------------------------------------- candidates


def _mse_best_negative_step(neg: Tensor, bits: int) -> float:
    """The step of lowest MSE for the magnitudes of the negatives (twin GELU's Δn), on the fit grid."""
    if neg.numel() == 0:
        return 0.0
    n = 2 ** (bits - 1)
    steps = FIT_GRID.double() * float(minmax_step(neg.max(), bits, floor=1e-12))
    errs = torch.stack([(torch.clamp(torch.round(neg / s), 0, n - 1) * s - neg).square().mean() for s in steps])
    return float(steps[errs.argmin()])


def candidate_params(data: SiteData, kind: str, bits: int,
                     multipliers: Tensor | None = None) -> tuple[Tensor, list[str], list[dict[str, float]], float, str]:
    """The candidates of ``kind`` at ``bits`` for one operand: the slider axis, its labels, each
    candidate's quantizer parameters, the min-max step ``Δ₀`` and the axis' name."""
    mults = (MULTIPLIERS if multipliers is None else multipliers).double()
    if kind == "twin-softmax":
        ms = list(range(bits))
        d2 = 2.0 ** -(bits - 1)
        return (torch.tensor([2.0 ** -m for m in ms], dtype=torch.float64),
                [f"m = {m} (Δ1 = Δ2/{2 ** m})" for m in ms], [{"m": float(m)} for m in ms], d2,
                "fine step / coarse step  Δ1/Δ2 = 2^-m")
    if kind == "twin-gelu":
        step0 = float(minmax_step(max(data.max, 1e-12), bits, floor=1e-12))
        x = data.x.double()
        d_neg = _mse_best_negative_step(x[x < 0].abs(), bits)
        lo, hi = (int(TwinGeluQuantizer.SPLITS[0]), int(TwinGeluQuantizer.SPLITS[-1]))
        params = []
        for mult in mults.tolist():
            scale = step0 * mult
            m = 0 if d_neg <= 0 else int(min(max(round(math.log2(scale / d_neg)), lo), hi))
            params.append({"scale": scale, "m": float(m)})
        return mults, [f"×{v:.3g}" for v in mults.tolist()], params, step0, "Δp / min-max step of the positives"
    step0 = float(minmax_step(max(data.absmax, 1e-12), bits, data.signed, floor=1e-12))
    return (mults, [f"×{v:.3g}" for v in mults.tolist()], [{"scale": step0 * v} for v in mults.tolist()], step0,
            "scale / min-max step")


def _stack_params(params: Sequence[Mapping[str, float]], ndim: int) -> dict[str, Tensor]:
    """``[{name: value}]`` as ``{name: (K, 1, ..., 1)}`` tensors broadcasting against ``(K, *x.shape)``."""
    shape = (len(params),) + (1,) * ndim
    return {name: torch.tensor([p[name] for p in params], dtype=torch.float32).view(shape) for name in params[0]}


def _chunk(data: SiteData, limit: int = 4_000_000) -> int:
    per = max(data.x.numel(), data.output.numel(), 1)
    return max(1, limit // per)


def operand_outputs(data: SiteData, kind: str, bits: int, params: Sequence[Mapping[str, float]]) -> tuple[Tensor, Tensor]:
    """``(fakes, outputs)``: the operand fake-quantized with each candidate's ``params``
    (``Quantizer.fake_with``) and the site's output with it, ``(K, *x.shape)`` and ``(K, *O.shape)``."""
    q = _quantizer(kind, bits, data.signed)
    with torch.no_grad():
        fakes = q.fake_with(data.x.unsqueeze(0).float(), _stack_params(params, data.x.ndim))
        return fakes, data.layer(fakes)


def score_candidates(data: SiteData, kind: str, bits: int, params: Sequence[Mapping[str, float]],
                     metrics: Iterable[str] = METRIC_NAMES) -> tuple[dict[str, Tensor], Tensor]:
    """Each metric's value for each candidate (``(K,)`` float64 tensors), and the operand's own
    MSE per candidate; chunked so that no more than a few million elements are alive at once."""
    names = [m for m in metrics if m != "hessian" or data.grad is not None]
    out: dict[str, list[Tensor]] = {m: [] for m in names}
    own: list[Tensor] = []
    step = _chunk(data)
    for i in range(0, len(params), step):
        fakes, o_hat = operand_outputs(data, kind, bits, params[i:i + step])
        with torch.no_grad():
            dims = tuple(range(1, fakes.ndim))
            own.append((fakes - data.x.unsqueeze(0)).double().square().mean(dims))
            for m in names:
                out[m].append(METRICS[m](data.output, o_hat, data.grad).double())
    return {m: torch.cat(v) for m, v in out.items()}, torch.cat(own)


# ----------------------------------------------------------------------------- the study


def _block_numbers(site_list: Sequence[Site]) -> dict[str, int]:
    order: dict[str, int] = {}
    for s in site_list:
        if s.block and s.block not in order:
            order[s.block] = len(order)
    return order


def _linear_layer(module: QuantLinear, operand: str, x: Tensor) -> Callable[[Tensor], Tensor]:
    w = module.weight.detach().float()
    b = None if module.bias is None else module.bias.detach().float()

    def layer(fakes: Tensor) -> Tensor:
        out = torch.matmul(x, fakes.transpose(-1, -2)) if operand == "weight" else torch.matmul(fakes, w.t())
        return out if b is None else out + b
    return layer


def _matmul_layer(operand: str, a: Tensor, b: Tensor) -> Callable[[Tensor], Tensor]:
    def layer(fakes: Tensor) -> Tensor:
        return fakes @ b if operand == "a" else a @ fakes
    return layer


class ScaleStudy:
    """Captured operands, float outputs and output gradients of every quantized operand in the
    blocks of a float ViT / DeiT / Swin, and their candidate scales scored by each metric.

    One forward and backward pass over ``images`` (micro-batched) records every site at once on a
    wrapped copy of ``model`` (the model itself is not modified). Curves are computed on demand and
    cached per (block, operand, bits, kind).

    Args:
        model: a float timm model.
        images: ``(B, 3, H, W)`` (the calibration batch).
        blocks: block numbers to keep (default all).
        max_tokens: rows (tokens) captured per site (matmuls: query rows), seeded; None = all.
        grad_loss: the loss behind ``∂L/∂O`` (:func:`ptqlib.engine.capture.task_loss`).
        labels: the images' labels (for ``grad_loss='label_ce'``).
        micro_batch: images per forward/backward pass.
        seed: seeds the row sample.
        grads: record ``∂L/∂O`` (needed by the ``hessian`` metric only).

    >>> study = ScaleStudy(model, images, max_tokens=256)                        # doctest: +SKIP
    >>> view = study.view(5, "fc2 input (post-GELU)", 4, "uniform", index=None)   # doctest: +SKIP
    >>> view.info()["picks"]                                                     # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, images: Tensor, *, blocks: Iterable[int] | None = None,
                 max_tokens: int | None = 512, grad_loss: GradLoss = "pseudo_label_ce", labels: Tensor | None = None,
                 micro_batch: int | None = 8, seed: int = 0, grads: bool = True) -> None:
        wrapped = quantize_model(copy.deepcopy(model), PTQConfig())
        site_list = sites(wrapped)
        numbers = _block_numbers(site_list)
        wanted = set(numbers.values()) if blocks is None else set(blocks)
        suffixes = {o.suffix for o in OPERANDS.values()}
        chosen: dict[str, tuple[Site, int]] = {}
        for s in site_list:
            if s.block and numbers[s.block] in wanted and s.name[len(s.block) + 1:] in suffixes:
                chosen[s.name] = (s, numbers[s.block])
        if not chosen:
            raise PtqlibError(f"no quantized attention or MLP sites in blocks {sorted(wanted)} of "
                              f"{type(model).__name__}; is it a ViT/DeiT/Swin?")
        caps = capture(wrapped, images, [s for s, _ in chosen.values()], grads=grads, grad_loss=grad_loss,
                       labels=labels, max_tokens=max_tokens, micro_batch=micro_batch, seed=seed)
        gelu_parents = {n for n, m in wrapped.named_modules() if isinstance(getattr(m, "act", None), nn.GELU)}
        self.model_name: str = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
        self.images = int(images.shape[0])
        self.max_tokens = max_tokens
        self.grad_loss = grad_loss if grads else None
        self.blocks: list[int] = sorted({b for _, b in chosen.values()})
        self._sites: dict[tuple[int, str], SiteData] = {}
        self._curves: dict[tuple, ScaleCurves] = {}
        for name, (site, block) in chosen.items():
            cap = caps[name]
            suffix = name[len(site.block) + 1:]
            for op in OPERANDS.values():
                if op.suffix != suffix:
                    continue
                if op.twin == "gelu" and name.rsplit(".", 1)[0] not in gelu_parents:
                    op = Operand(op.name, op.suffix, op.operand, None, op.channel_dim, op.description)
                self._sites[(block, op.name)] = self._site_data(site, block, op, cap)

    @staticmethod
    def _site_data(site: Site, block: int, op: Operand, cap) -> SiteData:
        m = site.module
        if isinstance(m, QuantLinear):
            x_in = cap.inputs[0].float()
            w = m.weight.detach().float()
            out = F.linear(x_in, w, None if m.bias is None else m.bias.detach().float())
            if op.operand == "weight":
                x, absmax, mx, mn = w, float(w.abs().max()), float(w.max()), float(w.min())
            else:
                x = x_in
                absmax, mx, mn = (float(cap.stats[k]) for k in ("absmax", "max", "min"))
            layer = _linear_layer(m, op.operand, x_in)
        elif isinstance(m, QuantMatMul):
            a, b = (t.float() for t in cap.inputs)
            out = a @ b
            x = a if op.operand == "a" else b
            absmax = float(cap.stats[f"{op.operand}_absmax"].max())
            mx, mn = float(x.max()), float(x.min())
            layer = _matmul_layer(op.operand, a, b)
        else:  # pragma: no cover - OPERANDS names Linear and MatMul sites only
            raise PtqlibError(f"{site.name}: not a Linear or MatMul site")
        grad = None if cap.grad is None else cap.grad.float()
        return SiteData(block, site.name, op, x, out, grad, absmax, mx, mn, layer)

    # ---- what is there

    def operands(self, block: int | None = None) -> list[str]:
        """The operand names captured (in a block, or in the first block)."""
        block = self.blocks[0] if block is None else block
        return [name for name in OPERANDS if (block, name) in self._sites]

    def site(self, block: int, operand: str) -> SiteData:
        """The captured data of one operand."""
        try:
            return self._sites[(block, operand)]
        except KeyError:
            raise PtqlibError(f"no {operand!r} captured in block {block}; blocks {self.blocks}, "
                              f"operands {self.operands()}") from None

    def has_twin(self, block: int, operand: str) -> bool:
        """Whether a twin-uniform quantizer exists for this operand."""
        return self.site(block, operand).operand.twin is not None

    # ---- curves and views

    def curves(self, block: int, operand: str, bits: int, quantizer: str = "uniform") -> ScaleCurves:
        """Every candidate of ``quantizer`` (``uniform`` / ``twin-uniform``) at ``bits``, scored."""
        data = self.site(block, operand)
        kind = quantizer_kind(data.operand, quantizer)
        key = (block, operand, bits, kind)
        if key not in self._curves:
            x, labels, params, step0, axis = candidate_params(data, kind, bits)
            metrics, own = score_candidates(data, kind, bits, params)
            picks = {m: int(torch.argmin(v)) for m, v in metrics.items()}
            self._curves[key] = ScaleCurves(kind, bits, data.signed, step0, x, labels, params, metrics, picks, own, axis)
        return self._curves[key]

    def channel_view(self, data: SiteData, fq: FittedQuantizer) -> ChannelView | None:
        """Per-channel steps and errors of a weight or the fc2 input at quantizer ``fq``."""
        dim = data.operand.channel_dim
        if dim is None:
            return None
        x = data.x.movedim(dim, 0).reshape(data.x.shape[dim], -1)
        qmax = qrange(fq.bits, fq.signed)[1] if fq.kind == "uniform" else 2 ** (fq.bits - 1) - 1
        with torch.no_grad():
            err = (fq.fake(x) - x).double().square().mean(1)
        axis = "output channel (weight row)" if data.operand.operand == "weight" else "input channel (hidden unit)"
        return ChannelView(channel_step=x.abs().amax(1).double() / qmax, step=float(fq.steps().get("step", fq.scale)),
                           error=err, axis=axis)

    def view(self, block: int, operand: str, bits: int, quantizer: str = "uniform", index: int | None = None) -> ScaleView:
        """What the explorer draws at candidate ``index`` (default: :meth:`ScaleCurves.default_index`)."""
        data = self.site(block, operand)
        c = self.curves(block, operand, bits, quantizer)
        index = c.default_index() if index is None else int(index)
        if not 0 <= index < c.x.numel():
            raise PtqlibError(f"candidate {index} is outside 0..{c.x.numel() - 1}")
        fq = c.quantizer(index)
        values = {m: float(v[index]) for m, v in c.metrics.items()}
        return ScaleView(data, c, index, fq, float(c.operand_mse[index]), values, self.channel_view(data, fq))

    def picks_table(self, operand: str, bits: int, quantizer: str = "uniform") -> list[dict[str, object]]:
        """Per block: each metric's pick (the slider value) for one operand, as rows for a table."""
        rows = []
        for b in self.blocks:
            if (b, operand) not in self._sites:
                continue
            c = self.curves(b, operand, bits, quantizer)
            rows.append({"block": b, **{m: float(c.x[i]) for m, i in c.picks.items()}})
        return rows
