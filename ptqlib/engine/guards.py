"""Checks that keep calibration honest and alive: NaN/Inf detection and a memory guard.

Finite checks: a NaN or Inf weight, calibration image or captured activation/gradient would make
every scale search meaningless (``min``/``max`` and the metrics turn NaN) without any error;
:func:`check_finite_weights`, :func:`check_finite_images` and :func:`check_finite_captures` stop
with the name of the first bad tensor instead.

Memory guard: parallel calibration keeps every site's captured operands (and output gradients)
in memory at once. :func:`estimate_memory` runs one float forward on a single image with hooks
that record only *shapes*, and scales each site's bytes to the whole batch exactly as
``capture.py`` samples rows (``max_tokens``). :func:`plan_chunks` then picks the fewest capture
passes (``config.chunks``) whose largest group fits the budget -- the available memory
(``/proc/meminfo`` ``MemAvailable``, the cgroup limit, or free GPU memory), or a user budget
(``--max-memory``) -- and raises :class:`~ptqlib.errors.PtqlibError` when even one site per pass
does not fit, instead of being killed by the out-of-memory killer.

The estimate of one pass is ``2 × captured bytes of the group`` (the parts and their concatenation
live together for a moment) ``+ site input/output bytes per image × images per pass`` (the
autograd graph and temporaries of the forward/backward pass); on ViT-Ti/S it overestimates the
measured peak by 10-40 %.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from .config import PTQConfig
from ..errors import PtqlibError
from .layers import QuantConv2d, QuantLinear, QuantMatMul
from .wrap import Site, quantization_disabled

__all__ = [
    "check_finite_weights",
    "check_finite_images",
    "check_finite_captures",
    "MemoryEstimate",
    "estimate_memory",
    "available_memory",
    "plan_chunks",
    "guard_memory",
]

GB = 1024**3
#: Fraction of the available memory calibration may plan to use (the rest: allocator slack, the OS).
SAFETY = 0.85


def _bad_count(t: Tensor) -> int:
    """How many NaN/Inf values ``t`` holds (0 for integer tensors)."""
    if not t.is_floating_point() or bool(torch.isfinite(t).all()):
        return 0
    return int((~torch.isfinite(t)).sum())


# ----------------------------------------------------------------------------- finite checks


def check_finite_weights(site_list: Sequence[Site]) -> None:
    """Raise :class:`PtqlibError` naming the first site whose weight or bias holds NaN or Inf.

    Args:
        site_list: the sites of a wrapped model (:func:`ptqlib.sites`).
    """
    for site in site_list:
        for attr in ("weight", "bias"):
            t = getattr(site.module, attr, None)
            if isinstance(t, Tensor) and (bad := _bad_count(t.detach())):
                raise PtqlibError(f"{site.name}.{attr} has {bad} NaN/Inf values; the weights are corrupt: "
                                  "load a valid checkpoint")


def check_finite_images(images: Tensor) -> None:
    """Raise :class:`PtqlibError` when the calibration batch holds NaN or Inf.

    Args:
        images: the calibration batch.
    """
    if bad := _bad_count(images):
        raise PtqlibError(f"the calibration images hold {bad} NaN/Inf values; pass finite, normalized images")


def check_finite_captures(caps: Mapping[str, object]) -> None:
    """Raise :class:`PtqlibError` naming the first site whose captured activations or output
    gradients hold NaN or Inf (the float model overflows on these images).

    The statistics (absolute maxima over the *whole* operands) stand for the inputs of Linear and
    MatMul sites, NaN and Inf propagate into them; a Conv's input (the images) is checked whole.

    Args:
        caps: ``{site name: SiteCapture}`` from :func:`ptqlib.capture.capture`.
    """
    for name, cap in caps.items():
        stats = list(getattr(cap, "stats", {}).values())
        parts = {"input": stats or list(getattr(cap, "inputs", [])),
                 "output gradient": [cap.grad] if getattr(cap, "grad", None) is not None else []}
        for what, tensors in parts.items():
            if any(_bad_count(t) for t in tensors):
                raise PtqlibError(f"the float model produces NaN/Inf at {name} ({what}) on the calibration images; "
                                  "check the checkpoint's weights and the image normalization")


# ----------------------------------------------------------------------------- memory


@dataclass
class MemoryEstimate:
    """Predicted bytes of calibration: ``per_site`` captured bytes for the whole batch, and
    ``pass_bytes``, the forward/backward pass itself (independent of how sites are grouped)."""

    per_site: dict[str, int] = field(default_factory=dict)
    pass_bytes: int = 0

    def group_bytes(self, names: Sequence[str]) -> int:
        """Peak bytes of one capture pass that records the sites ``names``."""
        return 2 * sum(self.per_site[n] for n in names) + self.pass_bytes


def _shapes_hook(store: dict[str, tuple], name: str):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        store[name] = (tuple(tuple(a.shape) for a in args if isinstance(a, Tensor)), tuple(output.shape),
                       output.element_size())
    return hook


def estimate_memory(
    model: nn.Module,
    images: Tensor,
    site_list: Sequence[Site],
    config: PTQConfig,
    *,
    micro_batch: int | None = None,
    device: str | torch.device = "cpu",
) -> MemoryEstimate:
    """Estimate what capturing ``site_list`` for ``images`` costs, from one float forward on one image.

    Args:
        model: a wrapped model.
        images: the calibration batch ``(B, 3, H, W)`` (only its first image is run).
        site_list: the sites that will be calibrated.
        config: gives ``max_tokens`` and whether gradients are captured.
        micro_batch: images per capture pass (``None``: all).
        device: where the dry forward runs.
    """
    shapes: dict[str, tuple] = {}
    handles = [s.module.register_forward_hook(_shapes_hook(shapes, s.name)) for s in site_list]
    try:
        with torch.no_grad(), quantization_disabled(model):
            model(images[:1].to(device))
    finally:
        for h in handles:
            h.remove()
    total = images.shape[0]
    micro = min(micro_batch or total, total)
    # as capture.py keeps rows: each micro-batch its share of max_tokens, each image the same
    # number of matmul query rows
    sizes = [min(micro, total - start) for start in range(0, total, micro)]
    grads = config.needs_grads
    est = MemoryEstimate()
    io_per_image = 0
    for site in site_list:
        if site.name not in shapes:  # not reached by the forward (an unused head): captures nothing
            est.per_site[site.name] = 0
            continue
        in_shapes, out_shape, size = shapes[site.name]
        io_per_image += size * (sum(math.prod(s) for s in in_shapes) + math.prod(out_shape))
        module = site.module
        if isinstance(module, QuantLinear):
            d_in, d_out = in_shapes[0][-1], out_shape[-1]
            rows_per_image = math.prod(in_shapes[0]) // d_in
            t = config.max_tokens
            if t is not None and grads and config.row_select == "fisher":
                # each micro-batch keeps its candidates for the final choice (up to t rows by
                # Fisher energy plus the outlier share), merged and pruned with the earlier ones
                # (capture.py): at most two micro-batches' worth at once
                per_part = t + round(config.outlier_rows * t)
                rows = min(sum(min(rows_per_image * b, per_part) for b in sizes), 2 * per_part)
            else:
                rows = sum(rows_per_image * b if t is None else min(rows_per_image * b, max(1, math.ceil(t * b / total)))
                           for b in sizes)
            nbytes = rows * (d_in + (d_out if grads else 0))
        elif isinstance(module, QuantMatMul):
            (_, h, n, k), b_shape = in_shapes[0], in_shapes[1]
            keep = n if config.max_tokens is None else min(n, max(1, math.ceil(config.max_tokens / total)))
            nbytes = total * (h * keep * k + math.prod(b_shape) + (h * keep * out_shape[-1] if grads else 0))
        elif isinstance(module, QuantConv2d):
            nbytes = total * (math.prod(in_shapes[0]) + (math.prod(out_shape) if grads else 0))
        else:  # pragma: no cover - sites() yields only the three kinds
            raise TypeError(type(module))
        est.per_site[site.name] = nbytes * size
    est.pass_bytes = io_per_image * micro
    return est


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``, or None when unknown.

    On CPU: ``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup's remaining limit
    (containers); on CUDA: the free GPU memory.

    Args:
        device: where calibration computes.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            candidates.append(max(0, limit - usage))
    return min(candidates) if candidates else None


def _fmt(nbytes: int) -> str:
    return f"{nbytes / GB:.2f} GB"


def plan_chunks(estimate: MemoryEstimate, names: Sequence[str], budget: int, chunks: int = 1) -> int:
    """The fewest capture passes (at least ``chunks``) whose largest group fits ``budget`` bytes.

    Groups are consecutive runs of ``ceil(len(names) / chunks)`` sites, as in ``calibrate.py``.
    Raises :class:`PtqlibError` when even one site per pass does not fit.

    Args:
        estimate: from :func:`estimate_memory`.
        names: the sites in calibration order.
        budget: bytes calibration may use.
        chunks: the configured number of passes (never lowered).
    """
    n = len(names)
    for c in range(max(1, chunks), n + 1):
        size = math.ceil(n / c)
        if max(estimate.group_bytes(names[i : i + size]) for i in range(0, n, size)) <= budget:
            return c
    worst = max(names, key=lambda s: estimate.per_site[s])
    need = estimate.group_bytes([worst])
    raise PtqlibError(
        f"calibration needs about {_fmt(need)} even one layer at a time ({worst}), but only {_fmt(budget)} "
        "may be used; pass --micro-batch 4, --max-tokens 1024 or a smaller --calib-size (or raise --max-memory)")


def guard_memory(
    model: nn.Module,
    images: Tensor,
    site_list: Sequence[Site],
    config: PTQConfig,
    *,
    micro_batch: int | None = None,
    device: str | torch.device = "cpu",
    max_memory: float | None = None,
    verbose: bool = True,
) -> PTQConfig:
    """``config`` with enough ``chunks`` for parallel calibration to fit in memory.

    Returns ``config`` unchanged for sequential calibration or when the available memory is
    unknown and no budget is given. Prints one line to stderr when it adds passes (``verbose``).

    Args:
        model, images, site_list, config, micro_batch, device: as for :func:`estimate_memory`.
        max_memory: a budget in GB (``--max-memory``); the smaller of it and the available memory wins.
        verbose: say when the guard changes ``chunks``.
    """
    if config.order != "parallel":
        return config
    if max_memory is not None and not max_memory > 0:
        raise PtqlibError(f"--max-memory must be a positive number of GB, got {max_memory}")
    available = available_memory(device)
    limits = [int(available * SAFETY)] if available is not None else []
    if max_memory is not None:
        limits.append(int(max_memory * GB))
    if not limits:
        return config
    budget = min(limits)
    estimate = estimate_memory(model, images, site_list, config, micro_batch=micro_batch, device=device)
    names = [s.name for s in site_list]
    chunks = plan_chunks(estimate, names, budget, config.chunks)
    if chunks != config.chunks:
        if verbose:
            print(f"memory guard: capturing all layers at once needs about {_fmt(estimate.group_bytes(names))}, "
                  f"{_fmt(budget)} may be used; calibrating in {chunks} passes", file=sys.stderr)
        return config.replace(chunks=chunks)
    return config
