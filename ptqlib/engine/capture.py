"""Record what each quantized site sees during float forward (and backward) passes.

One forward+backward pass over the calibration images records, for every site at once, its
inputs and the gradient of the task loss with respect to its output, ``∂L/∂O``. That is valid
for *parallel* calibration, where every layer is calibrated on float inputs, and it replaces the
official code's pass per layer.

What is kept per site (a :class:`SiteCapture`):

* ``inputs``: the operand(s). Rows (tokens) may be subsampled to ``max_tokens`` with a seeded
  sample; a matmul's second operand is kept whole, since every output row needs all of it.
* ``grad``: ``∂L/∂O`` on the same rows (only when the metric needs it).
* ``absmax`` / ``min``: statistics of the *whole* first operand (and second), per head for
  matmuls, so initial scales never depend on the sample.

The gradient comes from :func:`task_loss`. The model's parameters get no gradients (only
activations do), and the images are processed in micro-batches to bound memory; the loss is a
sum over images, so micro-batching does not change the gradients.
"""
from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GradLoss
from .layers import QuantConv2d, QuantLinear, QuantMatMul
from .wrap import Site, quantization_disabled

__all__ = ["SiteCapture", "task_loss", "capture"]


@dataclass
class SiteCapture:
    """What one site saw: operands (row-sampled), output gradient and operand statistics."""

    inputs: list[Tensor] = field(default_factory=list)
    grad: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)
    all_inputs: Tensor | None = None  # a Linear's input, every row (``all_rows``): for weight correction

    def nbytes(self) -> int:
        tensors = [*self.inputs, *([self.grad] if self.grad is not None else []),
                   *([self.all_inputs] if self.all_inputs is not None else [])]
        return sum(t.numel() * t.element_size() for t in tensors)


def task_loss(logits: Tensor, kind: GradLoss, labels: Tensor | None = None) -> Tensor:
    """The loss whose output gradients weight the Hessian-guided metric (summed over images).

    ``pseudo_label_ce``: cross-entropy against the float model's own top-1 prediction. Its
    gradient ``softmax(z) - onehot(argmax z)`` is the empirical Fisher's: informative and label-free.
    ``label_ce``: cross-entropy against the true labels. ``official_kl``: the official code's
    ``KL(softmax(z_float) || softmax(z))`` evaluated at ``z = z_float``; its gradient is zero up
    to rounding, which is why the official "Hessian" weights are noise in parallel calibration.
    """
    if kind == "pseudo_label_ce":
        return F.cross_entropy(logits, logits.detach().argmax(-1), reduction="sum")
    if kind == "label_ce":
        if labels is None:
            raise ValueError("grad_loss='label_ce' needs the calibration labels")
        return F.cross_entropy(logits, labels.to(logits.device), reduction="sum")
    if kind == "official_kl":
        target = F.softmax(logits.detach(), dim=-1)
        return F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="sum")
    raise ValueError(f"unknown grad_loss {kind!r}")


def _gather_rows(t: Tensor, rows: Tensor) -> Tensor:
    """``t[b, :, rows[b], :]`` for a ``(B, H, N, K)`` tensor and per-image rows ``(B, r)``."""
    index = rows.to(t.device)[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3])
    return t.gather(2, index)


def _rows(n: int, keep: int | None, gen: torch.Generator) -> Tensor | None:
    if keep is None or keep >= n:
        return None
    return torch.randperm(n, generator=gen)[:keep].sort().values


def _image_normalized(g: Tensor) -> Tensor:
    """Every image's gradient scaled to unit mean square."""
    rms = g.square().mean(dim=tuple(range(1, g.ndim)), keepdim=True).sqrt()
    return g / rms.clamp_min(torch.finfo(g.dtype).tiny)


class _Recorder:
    """Forward hooks (and output-gradient hooks) for one site.

    Rows are kept in one of two ways when ``max_tokens`` is set. ``random``: a seeded uniform
    sample, drawn in the forward hook. ``fisher`` (only when gradients are recorded): the forward
    hook keeps every row, and the gradient hook keeps the rows with the largest Fisher energy
    ``Σ_c (∂L/∂O_rc)²`` (per-image normalised), i.e. the rows that carry most of the weight of the
    Hessian-guided distance. For matmuls the rows are query rows, chosen per image.
    ``outlier_rows`` (a share of the kept rows) are taken first by the largest input magnitude
    instead: the massive-activation tokens, whose gradient is tiny but whose clipping changes
    the model far beyond what the local (second-order) metric predicts.
    """

    def __init__(self, site: Site, max_tokens: int | None, total_images: int, want_grad: bool, gen: torch.Generator,
                 grad_norm: str = "none", row_select: str = "random", outlier_rows: float = 0.0,
                 all_rows: bool = False) -> None:
        self.site, self.max_tokens, self.total, self.want_grad, self.gen = site, max_tokens, total_images, want_grad, gen
        self.grad_norm, self.row_select, self.outlier_rows = grad_norm, row_select, outlier_rows
        self.all_rows = all_rows
        self.all_parts: list[Tensor] = []
        self.parts: list[list[Tensor]] = []
        self.grads: list[Tensor] = []
        self.scores: list[tuple[Tensor, Tensor]] = []  # Linear Fisher candidates: (energy, magnitude)
        self.keep: int | None = None
        self.sample: Tensor | None = None  # random rows, drawn once over the whole batch
        self.offset = 0  # Linear rows seen so far (earlier micro-batches)
        self.stats: dict[str, list[Tensor]] = {}

    def _stat(self, key: str, value: Tensor) -> None:
        self.stats.setdefault(key, []).append(value.detach())

    def _normalize(self, g: Tensor) -> Tensor:
        if self.grad_norm == "image":
            return _image_normalized(g)
        if self.grad_norm == "channel":  # E[g²] per output channel (per head for matmuls)
            keep = 1 if isinstance(self.site.module, (QuantMatMul, QuantConv2d)) else g.ndim - 1
            dims = tuple(d for d in range(g.ndim) if d != keep)
            return g.square().mean(dim=dims, keepdim=True).sqrt().expand_as(g)
        return g

    def _on_grad(self, kind: str, index: Tensor | None, keep: int | None) -> Callable[[Tensor], None]:
        """The output-gradient hook: ``kind`` is ``linear``, ``matmul`` or ``conv``; ``index`` the
        rows drawn in the forward hook, or ``None`` with ``keep`` rows to choose by Fisher energy."""
        def hook(g: Tensor) -> None:
            g = g.detach()
            gn = self._normalize(g)
            # per-image-normalised gradient for the Fisher energy (the same tensor when grad_norm='image')
            gi = gn if self.grad_norm == "image" else _image_normalized(g) if keep is not None else None
            if kind == "linear":
                gn = gn.reshape(-1, gn.shape[-1])
                self.grads.append(gn if index is None else gn.index_select(0, index.to(gn.device)))
                if keep is not None:  # Fisher selection: keep only the rows that can still be chosen
                    energy = gi.reshape(-1, gi.shape[-1]).square().sum(-1)
                    self.scores.append((energy, self.parts[-1][0].abs().amax(-1)))
                    self._prune(keep)
            elif kind == "matmul":
                if keep is not None:
                    a, b = self.parts[-1]
                    energy = gi.square().sum((1, 3))  # (B, N) per query row
                    rows = self._select(energy, a.abs().amax((1, 3)), keep)
                    self.parts[-1] = [_gather_rows(a, rows), b]
                    self.grads.append(_gather_rows(gn, rows))
                else:
                    self.grads.append(gn if index is None else gn.index_select(-2, index.to(gn.device)))
            else:
                self.grads.append(gn)
        return hook

    def _random_rows(self, n: int, total_rows: int) -> Tensor | None:
        """This micro-batch's part of one seeded sample of ``max_tokens`` rows drawn over the whole
        batch (``total_rows``), so the rows do not depend on micro-batching."""
        if self.sample is None:
            self.sample = _rows(total_rows, self.max_tokens, self.gen)
            if self.sample is None:
                self.sample = torch.arange(total_rows)
        start, self.offset = self.offset, self.offset + n
        part = self.sample[(self.sample >= start) & (self.sample < start + n)] - start
        return None if part.numel() == n else part

    def _prune(self, keep: int) -> None:
        """Merge the Linear rows kept so far into one part, keeping only those that can still be
        chosen by :meth:`_select` over the whole batch (memory stays about one micro-batch's rows
        plus ``keep`` candidates whatever the number of micro-batches)."""
        x = torch.cat([p[0] for p in self.parts])
        g = torch.cat(self.grads)
        energy, magnitude = (torch.cat(t) for t in zip(*self.scores))
        rows = self._candidates(energy, magnitude, keep)
        self.parts, self.grads = [[x.index_select(0, rows)]], [g.index_select(0, rows)]
        self.scores = [(energy[rows], magnitude[rows])]

    def _outliers(self, keep: int) -> int:
        return min(keep, round(self.outlier_rows * keep))

    def _candidates(self, energy: Tensor, magnitude: Tensor, keep: int) -> Tensor:
        """Rows that can be among the final ``keep`` (:meth:`_select`), whatever rows come later:
        the ``keep`` of largest energy and the outlier share of largest magnitude."""
        n = energy.shape[0]
        if keep >= n:
            return torch.arange(n, device=energy.device)
        mask = torch.zeros(n, dtype=torch.bool, device=energy.device)
        mask[energy.topk(keep).indices] = True
        n_out = self._outliers(keep)
        if n_out:
            mask[magnitude.topk(n_out).indices] = True
        return mask.nonzero().flatten()

    def _select(self, energy: Tensor, magnitude: Tensor, keep: int) -> Tensor:
        """Indices (sorted, along the last dim) of ``keep`` rows: the ``outlier_rows`` share with the
        largest input ``magnitude``, then the rest by Fisher ``energy``."""
        n_out = self._outliers(keep)
        if n_out:
            top = magnitude.topk(n_out, dim=-1).indices
            energy = energy.scatter(-1, top, torch.full_like(energy, float("inf")))
        return energy.topk(keep, dim=-1).indices.sort(dim=-1).values

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        by_fisher = self.row_select == "fisher" and self.want_grad and output.requires_grad
        if isinstance(module, QuantLinear):
            x = args[0].detach()
            self._stat("absmax", x.abs().amax())
            self._stat("max", x.amax())
            self._stat("min", x.amin())
            rows_per_image = x[0].numel() // x.shape[-1]
            if by_fisher:  # all of max_tokens: the final choice over all micro-batches is in result()
                keep = self.max_tokens
                keep = None if keep is None or keep >= rows_per_image * self.total else keep
                self.keep = keep
            x = x.reshape(-1, x.shape[-1])
            if self.all_rows:
                self.all_parts.append(x)
            idx = None if by_fisher else self._random_rows(x.shape[0], rows_per_image * self.total)
            self.parts.append([x if idx is None else x.index_select(0, idx.to(x.device))])
            grad_hook = self._on_grad("linear", idx, keep if by_fisher else None)
        elif isinstance(module, QuantMatMul):
            a, b = args[0].detach(), args[1].detach()
            for key, t in (("a", a), ("b", b)):
                self._stat(f"{key}_absmax", t.abs().amax(dim=tuple(d for d in range(t.ndim) if d != 1)))
            # the same number of query rows for every image, whatever the micro-batch size
            keep = None if self.max_tokens is None else max(1, math.ceil(self.max_tokens / self.total))
            keep = None if keep is None or keep >= a.shape[-2] else keep
            if not by_fisher and keep is not None and self.sample is None:
                self.sample = _rows(a.shape[-2], keep, self.gen)  # drawn once: the same rows for every image
            idx = None if by_fisher else self.sample
            self.parts.append([a if idx is None else a.index_select(-2, idx.to(a.device)), b])
            grad_hook = self._on_grad("matmul", idx, keep if by_fisher else None)
        elif isinstance(module, QuantConv2d):
            self.parts.append([args[0].detach()])
            grad_hook = self._on_grad("conv", None, None)
        else:  # pragma: no cover - sites() only yields the three kinds
            raise TypeError(type(module))
        if self.want_grad and output.requires_grad:
            output.register_hook(grad_hook)

    def result(self) -> SiteCapture:
        inputs = [torch.cat(ts, 0) for ts in zip(*self.parts)]
        grad = torch.cat(self.grads, 0) if self.grads else None
        if self.scores and self.keep is not None:  # Linear Fisher rows: the final choice over all micro-batches
            energy, magnitude = (torch.cat(t) for t in zip(*self.scores))
            rows = self._select(energy, magnitude, self.keep)
            inputs = [inputs[0].index_select(0, rows)]
            grad = None if grad is None else grad.index_select(0, rows)
        stats: dict[str, Tensor] = {}
        for key, vals in self.stats.items():
            v = torch.stack(vals)
            stats[key] = v.amin(0) if key == "min" else v.amax(0)
        return SiteCapture(inputs, grad, stats, torch.cat(self.all_parts, 0) if self.all_parts else None)


def capture(
    model: nn.Module,
    images: Tensor,
    site_list: Sequence[Site],
    *,
    grads: bool,
    grad_loss: GradLoss = "pseudo_label_ce",
    grad_norm: str = "none",
    row_select: str = "random",
    outlier_rows: float = 0.0,
    labels: Tensor | None = None,
    max_tokens: int | None = None,
    micro_batch: int | None = None,
    seed: int = 0,
    float_model: bool = True,
    device: str | torch.device = "cpu",
    all_rows: bool = False,
) -> dict[str, SiteCapture]:
    """Run the calibration images through ``model`` and record ``site_list``'s operands.

    Args:
        model: a wrapped model (``quantize_model``).
        images: the calibration batch ``(B, 3, H, W)``.
        site_list: the sites to record (others are not hooked).
        grads: also run a backward pass of :func:`task_loss` and record ``∂L/∂O``.
        grad_loss, labels: the loss for the backward pass.
        grad_norm: ``image`` scales each image's ``∂L/∂O`` to unit mean square; ``channel``
            replaces it by its per-channel RMS; ``none`` keeps it.
        row_select: how rows are kept under ``max_tokens``: ``random`` (seeded) or ``fisher``
            (the rows with the largest gradient energy; needs ``grads``, else random).
        outlier_rows: with ``fisher``, the share of kept rows taken first by the largest input
            magnitude (massive-activation tokens).
        max_tokens: keep about this many rows per site (shared over micro-batches in proportion
            to their images; matmuls keep the same query rows count for every image), seeded.
        micro_batch: images per forward/backward pass (``None``: all at once).
        seed: seeds the row sample (one generator per site, seeded by its name).
        float_model: run with every quantizer off (parallel calibration); ``False`` keeps the
            current quantizers (sequential calibration).
        device: where to compute.
        all_rows: also keep every row of each Linear's input (``SiteCapture.all_inputs``), which
            the weight correction fits on (32 ViT-Tiny images: about 0.4 GB over all sites).

    Returns:
        ``{site name: SiteCapture}``.
    """
    total = images.shape[0]
    micro = micro_batch or total
    recorders = {}
    handles = []
    for site in site_list:
        # one generator per site, seeded by its name: the sample does not depend on grouping
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(site.name.encode()))
        rec = _Recorder(site, max_tokens, total, grads, gen, grad_norm, row_select, outlier_rows, all_rows)
        recorders[site.name] = rec
        handles.append(site.module.register_forward_hook(rec))
    was_training = model.training
    requires = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in requires:
        p.requires_grad_(False)
    ctx = quantization_disabled(model) if float_model else contextlib.nullcontext(model)
    try:
        with ctx:
            for start in range(0, total, micro):
                x = images[start : start + micro].to(device)
                y = None if labels is None else labels[start : start + micro].to(device)
                if grads:
                    with torch.enable_grad():
                        x = x.clone().requires_grad_(True)
                        task_loss(model(x), grad_loss, y).backward()
                else:
                    with torch.no_grad():
                        model(x)
    finally:
        for h in handles:
            h.remove()
        for p, r in requires:
            p.requires_grad_(r)
        model.train(was_training)
    return {name: rec.result() for name, rec in recorders.items()}

