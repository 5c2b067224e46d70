"""RepQ-ViT's scale reparameterisation of post-LayerNorm activations (Li et al., ICCV'23, Sec. 4.2).

The inputs of qkv and fc1 (a LayerNorm's output) vary wildly between channels: a per-tensor step
fit to the widest channel leaves the narrow ones a few levels. RepQ-ViT quantizes them per channel,
with a min-max step ``s_c`` and zero point ``z_c`` per channel ``c``, then moves the per-channel part
into the weights so that inference needs one step for the whole tensor.

With ``s̃`` the mean of the ``s_c``, ``z̃`` a common zero point and ``r_c = s_c / s̃``, the LayerNorm's
output ``X`` is replaced by ``X̃ = X / r - b`` with the offset ``b_c = s̃ · (z̃ - z_c)``; so that the
model computes the same function, ::

    LayerNorm:  γ̃_c = γ_c / r_c            β̃_c = β_c / r_c - b_c     (= (β_c + s_c (z_c - z̃)) / r_c)
    next Linear: W̃[:, c] = W[:, c] · r_c    bias̃ = bias + W̃ · b

(``Y = X Wᵀ + bias = (X̃ + b) W̃ᵀ + bias``). Then ``X̃ / s̃ = X / s_c + z_c - z̃``: one step ``s̃``
quantizes every channel of ``X̃`` on the grid the per-channel quantizer put on ``X``, and every
channel spans the same range ``[-z̃ s̃, (2^k - 1 - z̃) s̃]`` (to ``s̃/2``, the zero points being integers).

``zero_point="center"`` (the default) takes ``z̃ = 2^(k-1)``: the common range is then symmetric,
which is what ptqlib's signed uniform quantizer uses, and ``round(X̃ / s̃)`` is exactly the
per-channel code ``round(X / s_c) + z_c`` minus ``2^(k-1)``. ``zero_point="mean"`` takes
``z̃ = mean(z_c)``, RepQ-ViT's choice for its asymmetric per-tensor quantizer.

Folded: ViT / DeiT blocks (``norm1`` -> ``attn.qkv`` and a gate if any, ``norm2`` -> ``mlp.fc1``)
and Swin blocks and patch merging (``norm`` -> ``reduction``), plain or wrapped by
:func:`~ptqlib.quantize_model`. Run it on the float model before calibrating; the folded weights
are the model's new float weights (a saved model records their hash).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import PtqlibError
from .wrap import quantization_disabled

__all__ = ["Fold", "post_layernorm_sites", "channel_ranges", "fold_parameters", "reparameterize", "folds_of",
           "apply_folds"]

#: The attribute of a model under which :func:`reparameterize` records its folds.
FOLDS_ATTR = "ptqlib_folds"


@dataclass(frozen=True)
class Fold:
    """One LayerNorm's reparameterisation: what was computed from its output and moved where.

    Attributes:
        norm: the LayerNorm's name.
        consumers: the names of the Linear layers that read its output.
        channel_scale: ``s_c``, the per-channel min-max steps ``(C,)``.
        channel_zero_point: ``z_c``, the per-channel (integer) zero points ``(C,)``.
        scale: ``s̃``, the one step left for the tensor.
        zero_point: ``z̃``, the common zero point.
        ratio: ``r_c = s_c / s̃`` (float64), divided out of the LayerNorm and into the Linear weights' columns.
        offset: ``b_c = s̃ (z̃ - z_c)`` (float64), taken off the LayerNorm's bias and added to the Linear biases.

    ``ratio`` and ``offset`` are what :func:`apply_folds` needs to repeat the fold bit for bit.
    """

    norm: str
    consumers: tuple[str, ...]
    channel_scale: Tensor
    channel_zero_point: Tensor
    scale: float
    zero_point: float
    ratio: Tensor
    offset: Tensor


def _linear(module: nn.Module | None) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, Tensor) and weight.ndim == 2


def _affine_norm(module: nn.Module | None) -> bool:
    return isinstance(module, nn.LayerNorm) and module.weight is not None and module.bias is not None


def post_layernorm_sites(model: nn.Module) -> list[tuple[str, nn.LayerNorm, list[tuple[str, nn.Module]]]]:
    """Every LayerNorm whose output only Linear layers read, with those layers (in module order).

    Raises :class:`PtqlibError` when the model has none, or for a Swin block whose windows need
    padding (padded tokens are zeros of ``X̃``, not of ``X``: the fold would change them).
    """
    found: list[tuple[str, nn.LayerNorm, list[tuple[str, nn.Module]]]] = []
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        if all(hasattr(m, a) for a in ("norm1", "attn", "norm2", "mlp")):
            resolution, window = getattr(m, "input_resolution", None), getattr(m, "window_size", None)
            if resolution is not None and window is not None and any(
                    int(r) % int(w) for r, w in zip(resolution, window)):
                raise PtqlibError(f"{name}: Swin windows of {tuple(window)} pad a {tuple(resolution)} input; "
                                  "the post-LayerNorm fold needs unpadded windows")
            attn = [(f"{prefix}attn.{a}", getattr(m.attn, a)) for a in ("qkv", "gate")
                    if _linear(getattr(m.attn, a, None))]
            mlp = [(f"{prefix}mlp.{a}", getattr(m.mlp, a)) for a in ("fc1", "fc1_g", "fc1_x")
                   if _linear(getattr(m.mlp, a, None))]
            for norm_name, consumers in (("norm1", attn), ("norm2", mlp)):
                norm = getattr(m, norm_name)
                if _affine_norm(norm) and consumers and (norm_name != "norm1" or consumers[0][0].endswith("qkv")):
                    found.append((f"{prefix}{norm_name}", norm, consumers))
        elif _affine_norm(getattr(m, "norm", None)) and _linear(getattr(m, "reduction", None)):  # Swin patch merging
            found.append((f"{prefix}norm", m.norm, [(f"{prefix}reduction", m.reduction)]))
    if not found:
        raise PtqlibError(f"{type(model).__name__} has no LayerNorm feeding qkv, fc1 or a patch-merging reduction; "
                          "the post-LayerNorm reparameterisation supports ViT, DeiT and Swin blocks")
    return found


def channel_ranges(model: nn.Module, images: Tensor, norms: dict[str, nn.Module], *,
                   micro_batch: int | None = 8) -> dict[str, tuple[Tensor, Tensor]]:
    """The per-channel minimum and maximum of each norm's output over ``images`` (float model).

    Args:
        model: a timm model, plain or wrapped (its quantizers are off during the pass).
        images: a batch ``(B, 3, H, W)``; moved to the model's device.
        norms: the modules to watch, by name.
        micro_batch: images per forward pass (None: all at once).
    """
    ranges: dict[str, tuple[Tensor, Tensor]] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            flat = out.detach().reshape(-1, out.shape[-1])
            lo, hi = flat.amin(0).double(), flat.amax(0).double()
            if name in ranges:
                lo, hi = torch.minimum(ranges[name][0], lo), torch.maximum(ranges[name][1], hi)
            ranges[name] = (lo, hi)
        return hook

    device = next(model.parameters()).device
    handles = [module.register_forward_hook(hook_for(name)) for name, module in norms.items()]
    step = images.shape[0] if micro_batch is None else micro_batch
    try:
        with torch.no_grad(), quantization_disabled(model):
            for i in range(0, images.shape[0], step):
                model(images[i:i + step].to(device))
    finally:
        for h in handles:
            h.remove()
    return ranges


def fold_parameters(lo: Tensor, hi: Tensor, bits: int, zero_point: Literal["center", "mean"] = "center"
                    ) -> tuple[Tensor, Tensor, float, float, Tensor, Tensor]:
    """``(s_c, z_c, s̃, z̃, r, b)`` from per-channel ranges (which are widened to hold 0).

    ``s_c = (max_c - min_c) / (2^k - 1)`` (at least ``1e-8`` of the largest, for dead channels),
    ``z_c = round(-min_c / s_c)``, ``s̃ = mean(s_c)``, ``z̃ = 2^(k-1)`` or ``mean(z_c)``,
    ``r = s / s̃``, ``b = s̃ (z̃ - z)``; all in float64.

    >>> s, z, s_t, z_t, r, b = fold_parameters(torch.tensor([-1.0, -3.0]), torch.tensor([2.0, 1.0]), 2)
    >>> s.tolist(), z.tolist(), s_t, z_t   # steps 3/3 and 4/3; -(-1)/1 = 1, -(-3)/(4/3) = 2.25 -> 2
    ([1.0, 1.3333333333333333], [1.0, 2.0], 1.1666666666666665, 2.0)
    >>> [round(v, 4) for v in r.tolist()], [round(v, 4) for v in b.tolist()]
    ([0.8571, 1.1429], [1.1667, 0.0])
    """
    if zero_point not in ("center", "mean"):
        raise ValueError(f"zero_point must be 'center' or 'mean', got {zero_point!r}")
    levels = 2**bits - 1
    lo, hi = torch.clamp(lo.double(), max=0.0), torch.clamp(hi.double(), min=0.0)
    s = (hi - lo) / levels
    s = s.clamp_min(float(s.max()) * 1e-8 if float(s.max()) > 0 else 1e-12)
    z = torch.round(-lo / s).clamp(0, levels)
    s_t = float(s.mean())
    z_t = float(2 ** (bits - 1)) if zero_point == "center" else float(z.mean())
    r = s / s_t
    return s, z, s_t, z_t, r, s_t * (z_t - z)


def _fold(norm: nn.LayerNorm, consumers: list[tuple[str, nn.Module]], r: Tensor, b: Tensor) -> None:
    with torch.no_grad():
        gamma, beta = norm.weight, norm.bias
        beta.copy_(beta.double() / r - b)
        gamma.copy_(gamma.double() / r)
        for _, layer in consumers:
            w = layer.weight
            w.copy_(w.double() * r)
            shift = w.double() @ b  # the folded weights as stored
            if layer.bias is None:
                layer.bias = nn.Parameter(shift.to(w.dtype), requires_grad=w.requires_grad)
            else:
                layer.bias.copy_(layer.bias.double() + shift)


def folds_of(model: nn.Module) -> dict[str, Fold]:
    """The folds :func:`reparameterize` (or :func:`apply_folds`) made in ``model``; ``{}`` if none."""
    return dict(getattr(model, FOLDS_ATTR, None) or {})


def apply_folds(model: nn.Module, folds: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Repeat saved folds on a fresh float model: ``{norm name: (ratio, offset)}``, float64.

    The same float64 arithmetic as :func:`reparameterize` on the same weights gives the same
    folded weights, bit for bit (a loaded model's weight hash then matches the saved one).
    Raises :class:`PtqlibError` for a model that is already folded or lacks one of the norms.
    """
    if folds_of(model):
        raise PtqlibError("this model is already reparameterized; load a fresh float model to fold it")
    sites = {name: (norm, consumers) for name, norm, consumers in post_layernorm_sites(model)}
    missing = sorted(set(folds) - set(sites))
    if missing:
        raise PtqlibError(f"the model has no post-LayerNorm site {missing[0]}; the folds were made for another model")
    for name, (r, b) in folds.items():  # check them all before folding any: a refusal changes nothing
        norm = sites[name][0]
        if r.shape != norm.weight.shape or b.shape != norm.weight.shape:
            raise PtqlibError(f"the fold of {name} has {tuple(r.shape)} channels, the model's LayerNorm "
                              f"{tuple(norm.weight.shape)}; the folds were made for another model")
    done: dict[str, Fold] = {}
    for name, (r, b) in folds.items():
        norm, consumers = sites[name]
        r, b = r.double(), b.double()
        _fold(norm, consumers, r.to(norm.weight.device), b.to(norm.weight.device))
        nan = torch.full_like(r, float("nan"))
        done[name] = Fold(norm=name, consumers=tuple(n for n, _ in consumers), channel_scale=nan,
                          channel_zero_point=nan, scale=float("nan"), zero_point=float("nan"), ratio=r, offset=b)
    setattr(model, FOLDS_ATTR, done)


def reparameterize(model: nn.Module, images: Tensor, bits: int = 8, *,
                   zero_point: Literal["center", "mean"] = "center", micro_batch: int | None = 8) -> dict[str, Fold]:
    """Fold per-channel post-LayerNorm scales into the LayerNorms and the Linear layers after them.

    The model (plain or wrapped, in place) then computes the same function (to float rounding),
    and the inputs of qkv / fc1 have one step ``s̃`` per tensor: calibrate it afterwards.

    Args:
        model: a timm ViT, DeiT or Swin, plain or wrapped; changed in place.
        images: calibration images ``(B, 3, H, W)``: the per-channel ranges come from them.
        bits: the activation bit-width ``k`` of the per-channel quantizers (their zero points).
        zero_point: ``center`` (``z̃ = 2^(k-1)``, a symmetric range) or ``mean`` (RepQ-ViT's).
        micro_batch: images per forward pass (None: all at once).

    Returns:
        Each LayerNorm's :class:`Fold`, by the LayerNorm's name (also kept on the model:
        :func:`folds_of`). Raises :class:`PtqlibError` for a model that is already folded.
    """
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer in 2..16, got {bits!r}")
    if folds_of(model):
        raise PtqlibError("this model is already reparameterized; load a fresh float model to fold it again")
    sites = post_layernorm_sites(model)
    ranges = channel_ranges(model, images, {name: norm for name, norm, _ in sites}, micro_batch=micro_batch)
    folds: dict[str, Fold] = {}
    for name, norm, consumers in sites:
        s, z, s_t, z_t, r, b = fold_parameters(*ranges[name], bits, zero_point)
        device = norm.weight.device
        _fold(norm, consumers, r.to(device), b.to(device))
        folds[name] = Fold(norm=name, consumers=tuple(n for n, _ in consumers), channel_scale=s.float(),
                           channel_zero_point=z.float(), scale=s_t, zero_point=z_t, ratio=r, offset=b)
    setattr(model, FOLDS_ATTR, folds)
    return folds
