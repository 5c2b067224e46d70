"""Calibration: find every quantizer's scales from captured operands, then set them.

For each site, starting from min-max steps ``Δ₀``, ``rounds`` rounds alternate

1. the weight (or first operand) search with the input (second operand) quantized and fixed,
2. the input (second operand) search with the weight (first operand) quantized and fixed,

each scoring candidates ``Δ = m · Δ₀`` (``m`` on the grid of ``search.py``) by the config's
metric between the float output ``O`` and the quantized output ``Ô``. Twin-uniform quantizers
also search their split ``m`` (``Δ1 = Δ2 / 2^m`` for softmax, ``Δn = Δp / 2^m`` for GELU).
Per-channel and per-head scales are searched for all channels at once: the metrics are separable.
Which parameters a quantizer has, where they start and which values are searched is the
quantizer's own business (``Quantizer.minmax_params`` and ``Quantizer.search_space``).

:func:`calibrate` returns the scales (a plain dict) and :func:`apply_scales` sets them; layers
hold no calibration state machine.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .capture import SiteCapture, capture
from .config import PTQConfig
from ..errors import PtqlibError
from .reparam import Fold, folds_of, reparameterize
from .guards import check_finite_captures, check_finite_images, check_finite_weights, guard_memory
from .layers import QuantConv2d, QuantLinear, QuantMatMul
from ..core.correction import ridge_correction
from ..core.metrics import get_metric
from ..core.quant import Quantizer, minmax_step, uniform_fake
from ..core.search import linear_grid, search
from .wrap import Site, sites

__all__ = ["DEFAULT_MICRO_BATCH", "Scales", "CalibrationReport", "calibrate", "calibrate_site", "apply_scales",
           "corrected_layers"]

Scales = dict[str, dict[str, Tensor]]
"""``{quantizer name: keyword arguments of its set()}``, e.g. ``{"blocks.0.attn.qkv.input_quant": {"scale": t}}``;
with ``weight_correction`` also ``{layer name: {"weight": W′}}``, the layer's corrected float weights."""

#: The attribute of a model under which :func:`apply_scales` records the layers it corrected.
CORRECTED_ATTR = "ptqlib_corrected"

#: Images per capture pass. Fisher rows are chosen over the whole batch, so micro-batches change
#: no scale; they bound the memory of the forward/backward pass (ViT-B, 32 images: 8.5 GB in one
#: pass, see benchmarks/results/calibration.csv).
DEFAULT_MICRO_BATCH = 8
#: Linear sites with at most this many multiply-adds per candidate (rows × weights) are searched
#: exhaustively: e.g. ViT's head (32 class-token rows × 192 × 1000), where the grid costs little.
SMALL_SITE = 1 << 24
#: Elements of candidate outputs evaluated at once. Kept small (8 MB of float32): larger
#: temporaries are mmap-allocated by glibc and page-faulted on every op, several times slower.
CANDIDATE_BUDGET = 1 << 21


@dataclass
class CalibrationReport:
    """What :func:`calibrate` found and what it cost; ``config`` is the recipe actually used (the
    memory guard may have raised ``chunks``; sequential order scores random rows)."""

    config: PTQConfig
    scales: Scales
    seconds: float
    evaluations: int
    passes: int
    images: int
    capture_seconds: float = 0.0
    search_seconds: float = 0.0
    per_site_evaluations: dict[str, int] = field(default_factory=dict)
    folds: dict[str, Fold] = field(default_factory=dict)
    reparam_seconds: float = 0.0


def _metric(config: PTQConfig) -> Callable[..., Tensor]:
    """The config's metric, scoring in ``config.score_dtype``."""
    metric = get_metric(config.metric)
    if config.score_dtype == "float32":
        return metric

    def wide(out: Tensor, out_hat: Tensor, grad: Tensor | None = None, channel_dim: int | None = None) -> Tensor:
        return metric(out.double(), out_hat.double(), None if grad is None else grad.double(), channel_dim)
    return wide


def _chunk(per_candidate: int) -> int:
    return max(1, CANDIDATE_BUDGET // max(1, per_candidate))


class _Tally:
    """Runs a site's searches: counts evaluations and remembers each search's last answer."""

    def __init__(self) -> None:
        self.n = 0
        self.memo: dict[str, tuple[list[Tensor], Tensor]] = {}

    def search(
        self, score: Callable[[Tensor], Tensor], grid: Tensor, channels: int, config: PTQConfig, chunk: int,
        previous: Tensor | None = None, exhaustive: bool = False, tag: str = "", given: tuple[Tensor, ...] = (),
    ) -> Tensor:
        """``search.search``, counting evaluations; ``previous`` (values on ``grid``, from an
        earlier round) lets ``coarse_to_fine_local`` refine locally instead of starting over;
        ``exhaustive`` scores the whole grid whatever the strategy (small sites).

        ``given`` are the values the scores depend on besides the candidates (the other
        operand's scales). A search ``tag`` whose ``given`` (and ``previous``) are those of its
        last run returns that run's answer unscored: the scores would be the same, so would the
        answer. Later rounds of a converged site cost nothing.
        """
        key = [t.detach().clone() for t in given] + ([previous.clone()] if previous is not None else [])
        hit = self.memo.get(tag) if tag else None
        if hit is not None and len(hit[0]) == len(key) and all(torch.equal(a, b) for a, b in zip(hit[0], key)):
            return hit[1]
        best = self._search(score, grid, channels, config, chunk, previous, exhaustive)
        if tag:
            self.memo[tag] = (key, best)
        return best

    def _search(
        self, score: Callable[[Tensor], Tensor], grid: Tensor, channels: int, config: PTQConfig, chunk: int,
        previous: Tensor | None, exhaustive: bool,
    ) -> Tensor:
        around = None
        if previous is not None and config.search == "coarse_to_fine_local":
            around = (grid.unsqueeze(0) - previous.reshape(-1, 1)).abs().argmin(1).expand(channels)
        strategy = "grid" if config.search == "grid" or exhaustive else "coarse_to_fine"
        best, n = search(score, grid, channels, strategy, stride=config.stride, chunk=chunk,
                         around=None if exhaustive else around, refine=config.refine,
                         tie_tolerance=config.tie_tolerance)
        self.n += n
        return best


# ----------------------------------------------------------------------------- one operand


def _search_operand(
    tally: _Tally, q: Quantizer, params: dict[str, Tensor], start: dict[str, Tensor], previous: dict[str, Tensor],
    score: Callable[[str, Tensor], Tensor], channels: int, config: PTQConfig, chunk: int, *, tag: str,
    given: tuple[Tensor, ...], exhaustive: bool = False,
) -> None:
    """Search each parameter of ``q``'s :meth:`~Quantizer.search_space` in turn, updating ``params``.

    ``score(key, values)`` scores candidate values ``(K, channels)`` of parameter ``key`` with
    the others as in ``params``. A parameter without fixed candidates is searched on the config's
    multiplier grid around its start value (``previous`` keeps the multipliers found, for
    ``coarse_to_fine_local``); fixed candidates (twin splits) are scored exhaustively. ``given``
    is what the scores depend on outside this operand.
    """
    for key, fixed in q.search_space().items():
        others = tuple(v for k, v in params.items() if k != key)
        if fixed is None:
            grid = linear_grid(config.alpha, config.beta, config.n)
            mult = tally.search(lambda v: score(key, v), grid, channels, config, chunk, previous.get(key), exhaustive,
                                f"{tag}.{key}", given + others)
            previous[key] = mult
            params[key] = start[key] * mult.reshape(start[key].shape)
        else:
            found = tally.search(lambda v: score(key, v), fixed, channels, config.replace(search="grid"), chunk,
                                 tag=f"{tag}.{key}", given=given + others)
            params[key] = found.reshape(start[key].shape)


def _candidate(start: Tensor, values: Tensor, multiplied: bool) -> Tensor:
    return start * values if multiplied else values


def _final(q: Quantizer, params: dict[str, Tensor], shape: tuple[int, ...]) -> dict[str, Tensor]:
    """Parameters in the quantizer's own shape and dtype (integer splits rounded)."""
    own = q.params()
    out = {}
    for k, v in params.items():
        v = v.reshape(shape)
        out[k] = v.round().to(own[k].dtype) if not own[k].dtype.is_floating_point else v
    return out


# ----------------------------------------------------------------------------- Linear


def _calibrate_linear(name: str, layer: QuantLinear, cap: SiteCapture, config: PTQConfig, tally: _Tally) -> Scales:
    metric = _metric(config)
    x, g = cap.inputs[0], cap.grad
    w, b = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    out_features = w.shape[0]
    groups = {"channel": out_features, "qkv": 3, "tensor": 1}[layer.weight_granularity]
    per_group = out_features // groups
    wq_bits = layer.weight_quant.bits
    w_step0 = minmax_step(w.reshape(groups, -1).abs().amax(1), wq_bits)  # (groups,)

    def rows(step_per_group: Tensor) -> Tensor:  # (..., groups) -> (..., out, 1)
        return step_per_group.repeat_interleave(per_group, dim=-1).unsqueeze(-1)

    iq = layer.input_quant
    a_params = iq.minmax_params(cap.stats)
    a_start, a_prev = dict(a_params), {}
    multiplied = {k: v is None for k, v in iq.search_space().items()}
    w_step = w_step0
    corrected: Tensor | None = None

    if config.rounds > 0:
        out = F.linear(x, w, b)
        t = out.shape[0]
        out_g = out.view(t, groups, per_group)
        g_g = None if g is None else g.view(t, groups, per_group)
        grid = linear_grid(config.alpha, config.beta, config.n)
        chunk = _chunk(t * out_features)
        small = t * w.numel() <= SMALL_SITE  # e.g. the head: one row per image
        def weight_scorer(weight: Tensor, step0: Tensor, xq: Tensor) -> Callable[[Tensor], Tensor]:
            def score_w(mults: Tensor) -> Tensor:
                wq = uniform_fake(weight, rows(step0 * mults), wq_bits)  # (K, out, in)
                o_hat = torch.matmul(xq, wq.transpose(1, 2))
                if b is not None:
                    o_hat = o_hat + b
                return metric(out_g, o_hat.view(-1, t, groups, per_group), g_g, channel_dim=1)
            return score_w

        w_mult = None
        for _ in range(config.rounds):
            xq = iq.fake_with(x, a_params)
            w_mult = tally.search(weight_scorer(w, w_step0, xq), grid, groups, config, chunk, w_mult, small, "w",
                                  tuple(a_params.values()))
            w_step = w_step0 * w_mult
            wq_t = uniform_fake(w, rows(w_step), wq_bits).t()

            def score_a(key: str, values: Tensor) -> Tensor:
                k = values.shape[0]
                p = dict(a_params)
                p[key] = _candidate(a_start[key], values[:, 0], multiplied[key])
                p = {kk: (v.view(k, 1, 1) if v.ndim == 1 else v) for kk, v in p.items()}
                o_hat = torch.matmul(iq.fake_with(x.unsqueeze(0), p), wq_t)
                if b is not None:
                    o_hat = o_hat + b
                return metric(out, o_hat, g).view(k, 1)

            _search_operand(tally, iq, a_params, a_start, a_prev, score_a, 1, config, chunk, tag="a",
                            given=(w_mult,), exhaustive=small)

        if config.weight_correction == "ridge":  # ERQ: absorb the input's error, then search W′'s steps
            rows_all = x if cap.all_inputs is None else cap.all_inputs  # fit on every row: few rows over-fit
            corrected = ridge_correction(rows_all, iq.fake_with(rows_all, a_params), w, config.ridge_rho)
            xq = iq.fake_with(x, a_params)
            step0 = minmax_step(corrected.reshape(groups, -1).abs().amax(1), wq_bits)
            w_step = step0 * tally.search(weight_scorer(corrected, step0, xq), grid, groups, config, chunk,
                                          exhaustive=small)

    w_scale = w_step[0] if groups == 1 else rows(w_step)
    scales: Scales = {f"{name}.weight_quant": {"scale": w_scale}, f"{name}.input_quant": _final(iq, a_params, ())}
    if corrected is not None:
        scales[name] = {"weight": corrected}
    return scales


# ----------------------------------------------------------------------------- Conv2d


def _calibrate_conv(name: str, layer: QuantConv2d, cap: SiteCapture, config: PTQConfig, tally: _Tally) -> Scales:
    metric = _metric(config)
    x, g = cap.inputs[0], cap.grad
    w, b = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
    c = w.shape[0]
    bits = layer.weight_quant.bits
    step0 = minmax_step(w.reshape(c, -1).abs().amax(1), bits)  # (C,)
    step = step0
    if config.rounds > 0:
        out = layer.conv(x, w, b)  # (B, C, h, w)
        grid = linear_grid(config.alpha, config.beta, config.n)

        def score(mults: Tensor) -> Tensor:
            k = mults.shape[0]
            wq = uniform_fake(w.unsqueeze(0), (step0 * mults).view(k, c, 1, 1, 1), bits).reshape(k * c, *w.shape[1:])
            o_hat = layer.conv(x, wq, None if b is None else b.repeat(k))
            o_hat = o_hat.view(x.shape[0], k, c, *out.shape[2:]).transpose(0, 1)
            return metric(out, o_hat, g, channel_dim=1)

        # one search (no rounds), per channel: exhaustive, at about 2 % of ViT-Tiny's search time
        step = step0 * tally.search(score, grid, c, config, _chunk(out.numel()), exhaustive=True)
    return {f"{name}.weight_quant": {"scale": step.view(c, 1, 1, 1)}}


# ----------------------------------------------------------------------------- MatMul


def _calibrate_matmul(name: str, layer: QuantMatMul, cap: SiteCapture, config: PTQConfig, tally: _Tally) -> Scales:
    metric = _metric(config)
    a, bm = cap.inputs
    g = cap.grad
    heads = a.shape[1]
    per_head = config.matmul_granularity == "head"
    channels = heads if per_head else 1
    channel_dim = 1 if per_head else None

    def reduce(t: Tensor) -> Tensor:  # per-head statistic -> per channel
        return t if per_head else t.amax().reshape(1)

    def shape(v: Tensor) -> Tensor:  # (K, C) -> (K, 1, C or 1, 1, 1)
        return v.reshape(v.shape[0], 1, v.shape[1], 1, 1)

    def as_tensor_params(p: dict[str, Tensor]) -> dict[str, Tensor]:  # (C,) -> broadcast over (B, H, N, ·)
        return {k: v.view(1, channels, 1, 1) for k, v in p.items()}

    qa, qb = layer.a_quant, layer.b_quant
    pa = qa.minmax_params({"absmax": reduce(cap.stats["a_absmax"])})
    pb = qb.minmax_params({"absmax": reduce(cap.stats["b_absmax"])})
    starts = {"a": dict(pa), "b": dict(pb)}
    multiplied = {op: {k: v is None for k, v in q.search_space().items()} for op, q in (("a", qa), ("b", qb))}

    if config.rounds > 0:
        out = a @ bm
        chunk = _chunk(out.numel())

        def scorer(operand: str) -> Callable[[str, Tensor], Tensor]:
            q, x, p = (qa, a, pa) if operand == "a" else (qb, bm, pb)

            def score(key: str, values: Tensor) -> Tensor:
                k = values.shape[0]
                v = _candidate(starts[operand][key], values, multiplied[operand][key])
                xq = q.fake_with(x.unsqueeze(0), {**{kk: shape(vv.expand(k, -1)) for kk, vv in p.items()}, key: shape(v)})
                o_hat = xq @ bq if operand == "a" else aq_fixed @ xq
                return metric(out, o_hat, g, channel_dim=channel_dim).reshape(k, channels)
            return score

        prev: dict[str, dict[str, Tensor]] = {"a": {}, "b": {}}
        for _ in range(config.rounds):
            bq = qb.fake_with(bm, as_tensor_params(pb))
            _search_operand(tally, qa, pa, starts["a"], prev["a"], scorer("a"), channels, config, chunk, tag="a",
                            given=tuple(pb.values()))
            aq_fixed = qa.fake_with(a, as_tensor_params(pa))
            _search_operand(tally, qb, pb, starts["b"], prev["b"], scorer("b"), channels, config, chunk, tag="b",
                            given=tuple(pa.values()))

    final_shape = (1, heads, 1, 1) if per_head else ()
    return {f"{name}.a_quant": _final(qa, pa, final_shape), f"{name}.b_quant": _final(qb, pb, final_shape)}


# ----------------------------------------------------------------------------- driver


def calibrate_site(site: Site, cap: SiteCapture, config: PTQConfig) -> tuple[Scales, int]:
    """Scales for one site from its capture; returns ``(scales, candidate evaluations)``."""
    tally = _Tally()
    with torch.no_grad():
        if isinstance(site.module, QuantLinear):
            scales = _calibrate_linear(site.name, site.module, cap, config, tally)
        elif isinstance(site.module, QuantConv2d):
            scales = _calibrate_conv(site.name, site.module, cap, config, tally)
        elif isinstance(site.module, QuantMatMul):
            scales = _calibrate_matmul(site.name, site.module, cap, config, tally)
        else:  # pragma: no cover
            raise TypeError(type(site.module))
    return scales, tally.n


def apply_scales(model: nn.Module, scales: Scales) -> None:
    """Set (and enable) the quantizers named in ``scales``; an entry naming a layer, not a
    quantizer, is ``{"weight": W′}``: its corrected float weights (``weight_correction``), which
    are copied in and recorded in :func:`corrected_layers`."""
    for qname, params in scales.items():
        q = model.get_submodule(qname)
        if not isinstance(q, Quantizer):
            with torch.no_grad():
                q.weight.copy_(params["weight"])
            setattr(model, CORRECTED_ATTR, sorted({*corrected_layers(model), qname}))
            continue
        device = next((buf.device for buf in q.buffers()), torch.device("cpu"))
        q.set(**{k: v.to(device) for k, v in params.items()})


def corrected_layers(model: nn.Module) -> list[str]:
    """The layers whose float weights calibration corrected (``weight_correction``), by name."""
    return list(getattr(model, CORRECTED_ATTR, None) or [])


def _groups(site_list: list[Site], config: PTQConfig) -> list[list[Site]]:
    if config.order == "sequential":
        blocks: dict[str, list[Site]] = {}
        for s in site_list:
            blocks.setdefault(s.block, []).append(s)
        # sites outside any block (patch embedding, head) keep their place in forward order
        ordered: list[list[Site]] = []
        for s in site_list:
            key = s.block
            if key == "":
                ordered.append([s])
            elif not ordered or ordered[-1][0].block != key:
                ordered.append(blocks[key])
        return ordered
    size = math.ceil(len(site_list) / config.chunks)
    return [site_list[i : i + size] for i in range(0, len(site_list), size)]


def calibrate(
    model: nn.Module,
    images: Tensor,
    config: PTQConfig,
    *,
    labels: Tensor | None = None,
    device: str | torch.device = "cpu",
    micro_batch: int | None = DEFAULT_MICRO_BATCH,
    progress: bool = True,
    max_memory: float | None = None,
) -> CalibrationReport:
    """Calibrate a wrapped model on a batch of images, set its scales and return them.

    Args:
        model: a model wrapped by :func:`ptqlib.quantize_model` (its quantizer kinds and
            bit-widths come from that config).
        images: calibration images ``(B, 3, H, W)``, already transformed.
        config: the recipe (its search settings; the model must have been wrapped with the same
            config's quantizer kinds and bit-widths). With ``config.reparam`` the model's
            post-LayerNorm scales are folded first (:func:`~ptqlib.engine.reparam.reparameterize`,
            changing its float weights in place), unless the model is folded already.
        labels: true labels, needed only for ``grad_loss='label_ce'``.
        device: where to compute.
        micro_batch: images per capture pass (bounds memory; the scales do not depend on it);
            ``None`` = all at once.
        progress: show a progress bar.
        max_memory: memory budget in GB for parallel calibration (default: the available memory);
            more capture passes (``chunks``) are used when needed (``guards.py``).
    """
    if not isinstance(config, PTQConfig):
        raise PtqlibError(f"calibrate needs a PTQConfig, got {type(config).__name__}; pass ptqlib.get_method(...)")
    if images.ndim != 4 or images.shape[0] == 0:
        raise PtqlibError(f"calibration images must be a non-empty batch (B, 3, H, W), got shape {tuple(images.shape)}")
    site_list = sites(model)
    check_finite_images(images)
    start = time.perf_counter()
    if config.reparam and not folds_of(model):  # RepQ-ViT: fold per-channel post-LayerNorm scales first
        reparameterize(model, images, config.a_bits, micro_batch=micro_batch)
    reparam_seconds = time.perf_counter() - start
    check_finite_weights(site_list)
    config = guard_memory(model, images, site_list, config, micro_batch=micro_batch, device=device, max_memory=max_memory)
    if config.order == "sequential" and config.row_select != "random":
        # sequential inputs come from a second pass: both passes must keep the same (random) rows
        config = config.replace(row_select="random")
    report = CalibrationReport(config=config, scales={}, seconds=0.0, evaluations=0, passes=0, images=images.shape[0],
                               folds=folds_of(model), reparam_seconds=reparam_seconds)
    groups = _groups(site_list, config)
    bar = tqdm(total=len(site_list), desc=f"calibrate {config.method}", disable=not progress, unit="layer")
    for group in groups:
        t0 = time.perf_counter()
        caps = capture(
            model, images, group, grads=config.needs_grads, grad_loss=config.grad_loss, grad_norm=config.grad_norm,
            row_select=config.row_select,
            outlier_rows=config.outlier_rows, labels=labels,
            max_tokens=config.max_tokens, micro_batch=micro_batch, seed=config.seed, device=device,
            float_model=True, all_rows=config.weight_correction != "none" and config.order == "parallel")
        report.passes += 1
        if config.order == "sequential":
            # inputs from the model quantized so far; gradients stay those of the float model
            seq = capture(model, images, group, grads=False, max_tokens=config.max_tokens,
                          micro_batch=micro_batch, seed=config.seed, device=device, float_model=False,
                          all_rows=config.weight_correction != "none")
            for s in group:
                caps[s.name].inputs = seq[s.name].inputs
                caps[s.name].stats = seq[s.name].stats
                caps[s.name].all_inputs = seq[s.name].all_inputs
            report.passes += 1
        check_finite_captures(caps)
        report.capture_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        group_scales: Scales = {}
        for s in group:
            scales, n = calibrate_site(s, caps.pop(s.name), config)
            group_scales.update(scales)
            report.per_site_evaluations[s.name] = n
            report.evaluations += n
            bar.update(1)
        report.search_seconds += time.perf_counter() - t0
        if config.order == "sequential":
            apply_scales(model, group_scales)
        report.scales.update(group_scales)
    bar.close()
    apply_scales(model, report.scales)
    report.seconds = time.perf_counter() - start
    return report
