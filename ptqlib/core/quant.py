"""Uniform, twin-uniform and logarithmic quantizers: pure functions, then tiny modules that hold their scales.

Every quantizer here has three faces that agree exactly:

* ``*_codes(x, ...)``: the integer codes (``torch.int32``) a real integer kernel would store;
* ``*_dequantize(codes, ...)``: the real values those codes stand for;
* ``*_fake(x, ...)``: the fake-quantized tensor, ``dequantize(codes(x))`` bit for bit.

Uniform, symmetric, k bits (signed)::

    q = round(clamp(x / Δ, -2^(k-1), 2^(k-1) - 1))        x̂ = q · Δ

(clamping first, at whole-number bounds, equals rounding first and lets the straight-through
gradient reach every value inside the range).

and unsigned ``q = clamp(round(x / Δ), 0, 2^k - 1)``. ``Δ`` broadcasts against ``x``, so one
shape serves per-tensor (``()``), per-output-channel (``(C, 1)``) and per-head (``(1, H, 1, 1)``).

Twin-uniform for post-softmax values (PTQ4ViT, Sec. 4.1), k bits = 1 range bit + (k-1) magnitude
bits, n = 2^(k-1)::

    Δ2 = 1 / n                      coarse step: R2 = [0, n·Δ2) covers [0, 1)
    Δ1 = Δ2 / 2^m                   fine step:   R1 = [0, n·Δ1)
    x in R1  ->  code = round(x / Δ1) clamped to [0, n-1],  range bit 0
    else     ->  code = round(x / Δ2) clamped to [0, n-1],  range bit 1

Worked example, k = 4 (n = 8), m = 2: Δ2 = 1/8, Δ1 = 1/32, R1 = [0, 0.25).
0.10 -> 0.10·32 = 3.2 -> code 3, value 3/32 = 0.09375. 0.30 is outside R1 -> 0.30·8 = 2.4 ->
code 2 with the range bit: 0b1010 = 10, value 2/8 = 0.25.

Twin-uniform for post-GELU values: one sign bit + (k-1) magnitude bits; positives use Δp and
negatives Δn = Δp / 2^m (GELU's negative part lies in [-0.17, 0], so m > 0 usually)::

    x >= 0  ->  code = round(x / Δp) clamped to [0, n-1],   sign bit 0
    x <  0  ->  code = round(-x / Δn) clamped to [0, n-1],  sign bit 1, value -code·Δn

The official PTQ4ViT code deviates in two places (its softmax quantizer adds the high and low
parts, and its GELU quantizer lets the two steps have any ratio); ours are correct by construction.

Logarithmic quantizers (RepQ-ViT, AdaLog) for power-law values: k-bit codes ``c`` in
``[0, 2^k - 1]`` on a geometric grid of ``q`` codes per octave (base ``b = 2^(1/q)``), the largest
code meaning 0::

    c = clamp(round(-q · log2(x / s)), 0, 2^k - 1)        x̂ = s · 2^(-c/q)   (c < 2^k - 1),  0 (c = 2^k - 1)

``q = 1`` is log2 (``x̂ = s · 2^-c``, a shift), ``q = 2`` is log√2, AdaLog searches ``q``. An integer
kernel splits the exponent into a shift and a q-entry table: with ``a = 4q`` (q is a multiple of
1/4), ``j = ⌊4c / a⌋`` and ``i = 4c mod a``, ``x̂ = s · 2^-j · T_a[i]``, ``T_a[i] = 2^(-i/a)`` in
float32. For log√2 that is ``x̂ = s · 2^-⌊c/2⌋ · (1/√2 if c is odd else 1)``: even and odd codes
are two log2 grids, one scaled by 1/√2 (RepQ-ViT's reparameterisation of log√2 to log2).
Every face computes the values this way, so they agree bit for bit.

Worked example, log2, k = 3 (codes 0..7, 7 means 0), s = 1: 0.3 -> -log2(0.3) = 1.74 -> code 2,
value 1/4; 0.012 -> 6.38 -> code 6, value 1/64 (the smallest level); 0.005 -> 7.64 -> code 7, value 0.

Post-GELU values are signed: their log kinds (``signed=True``) shift them by GELU's minimum
``|min GELU| = 0.16997...`` before quantizing and back after, ``x̂ = s · 2^(-c/q) - 0.16997``,
so all k bits form one grid over ``[-0.17, s - 0.17]``. This is AdaLog's bias reparameterisation:
an integer kernel quantizes ``x + 0.17`` and folds ``-W · 0.17`` into the next layer's bias.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ShiftedUniformQuantizer",
    "round_ste",
    "qrange",
    "uniform_codes",
    "uniform_dequantize",
    "uniform_fake",
    "twin_softmax_steps",
    "twin_softmax_codes",
    "twin_softmax_dequantize",
    "twin_softmax_fake",
    "twin_gelu_codes",
    "twin_gelu_dequantize",
    "twin_gelu_fake",
    "minmax_step",
    "GELU_SHIFT",
    "ADALOG_Q",
    "log2_codes",
    "log2_dequantize",
    "log2_fake",
    "log_sqrt2_codes",
    "log_sqrt2_dequantize",
    "log_sqrt2_fake",
    "adalog_codes",
    "adalog_dequantize",
    "adalog_fake",
    "Quantizer",
    "UniformQuantizer",
    "TwinSoftmaxQuantizer",
    "TwinGeluQuantizer",
    "LogQuantizer",
    "Log2Quantizer",
    "LogSqrt2Quantizer",
    "AdaLogQuantizer",
    "QUANTIZER_KINDS",
    "quantizer_for_layout",
]


def round_ste(x: Tensor) -> Tensor:
    """Round to nearest (ties to even) with a straight-through gradient (d round(x)/dx := 1).

    >>> round_ste(torch.tensor([0.4, 0.5, 1.5, -1.6]))
    tensor([ 0.,  0.,  2., -2.])
    """
    return x + (torch.round(x) - x).detach()


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """The smallest and largest integer code of a ``bits``-bit uniform quantizer.

    >>> qrange(8, True), qrange(8, False)
    ((-128, 127), (0, 255))
    """
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _round(x: Tensor) -> Tensor:
    """``round_ste`` where a gradient is wanted, plain (faster) ``torch.round`` otherwise."""
    return round_ste(x) if x.requires_grad else torch.round(x)


def _clamp_round(t: Tensor, lo: float, hi: float) -> Tensor:
    """``round(clamp(t, lo, hi))``. ``t`` must be a fresh temporary: without a gradient it is
    overwritten in place (no new buffers: large temporaries are the cost of fake quantization)."""
    if t.requires_grad:
        return round_ste(torch.clamp(t, lo, hi))
    return t.clamp_(lo, hi).round_()


def _times(levels: Tensor, step: Tensor) -> Tensor:
    """``levels · step``, in place when no gradient is needed (``levels`` is a fresh temporary)."""
    return levels * step if levels.requires_grad or step.requires_grad else levels.mul_(step)


def minmax_step(absmax: Tensor | float, bits: int, signed: bool = True, floor: float = 1e-8) -> Tensor:
    """The min-max step ``max|x| / qmax``: the largest magnitude maps to the largest code
    (``qmax = 2^(k-1) - 1`` signed, ``2^k - 1`` unsigned), at least ``floor``.

    >>> minmax_step(torch.tensor(2.54), 8), minmax_step(2.55, 8, signed=False)
    (tensor(0.0200), tensor(0.0100))
    """
    return (torch.as_tensor(absmax).float() / qrange(bits, signed)[1]).clamp_min(floor)


# ----------------------------------------------------------------------------- uniform


def _uniform_levels(x: Tensor, scale: Tensor, bits: int, signed: bool) -> Tensor:
    lo, hi = qrange(bits, signed)
    return _clamp_round(x / scale, lo, hi)


def uniform_codes(x: Tensor, scale: Tensor, bits: int, signed: bool = True) -> Tensor:
    """Integer codes ``clamp(round(x / scale), lo, hi)`` as ``int32``.

    >>> uniform_codes(torch.tensor([0.26, -1.0, 9.0]), torch.tensor(0.25), 4)
    tensor([ 1, -4,  7], dtype=torch.int32)
    """
    return _uniform_levels(x, scale, bits, signed).to(torch.int32)


def uniform_dequantize(codes: Tensor, scale: Tensor) -> Tensor:
    """Real values of uniform codes: ``codes · scale``."""
    return codes.to(scale.dtype) * scale


def uniform_fake(x: Tensor, scale: Tensor, bits: int, signed: bool = True) -> Tensor:
    """Fake-quantize: ``uniform_dequantize(uniform_codes(x))``, exactly, with a straight-through
    gradient inside the clipping range.

    >>> uniform_fake(torch.tensor([0.26, -1.0, 9.0]), torch.tensor(0.25), 4)
    tensor([ 0.2500, -1.0000,  1.7500])
    """
    return _times(_uniform_levels(x, scale, bits, signed), scale)


# ----------------------------------------------------------------------------- twin softmax


def twin_softmax_steps(bits: int, m: Tensor | int) -> tuple[Tensor, Tensor]:
    """The fine and coarse steps ``(Δ1, Δ2)`` of the post-softmax twin quantizer.

    ``Δ2 = 1 / 2^(k-1)`` so the coarse range covers [0, 1); ``Δ1 = Δ2 / 2^m``. Both are powers of
    two, so dividing by them is exact in floating point.

    >>> twin_softmax_steps(4, 2)
    (tensor(0.0312), tensor(0.1250))
    """
    m_t = torch.as_tensor(m, dtype=torch.float32)
    d2 = torch.tensor(2.0 ** -(bits - 1))
    return d2 * torch.exp2(-m_t), d2


def _twin_softmax_parts(x: Tensor, bits: int, m: Tensor | int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n = 2 ** (bits - 1)
    d1, d2 = twin_softmax_steps(bits, m)
    d1, d2 = d1.to(x.device, x.dtype), d2.to(x.device, x.dtype)
    in_fine = x < n * d1
    fine = _round(torch.clamp(x / d1, 0, n - 1))
    coarse = _round(torch.clamp(x / d2, 0, n - 1))
    return in_fine, fine, coarse, d1


def twin_softmax_codes(x: Tensor, bits: int, m: Tensor | int) -> Tensor:
    """Codes of the post-softmax twin quantizer: ``range_bit << (k-1) | magnitude``.

    >>> twin_softmax_codes(torch.tensor([0.10, 0.30, 1.0]), 4, 2)
    tensor([ 3, 10, 15], dtype=torch.int32)
    """
    in_fine, fine, coarse, _ = _twin_softmax_parts(x, bits, m)
    magnitude = torch.where(in_fine, fine, coarse).to(torch.int32)
    return magnitude | ((~in_fine).to(torch.int32) << (bits - 1))


def twin_softmax_dequantize(codes: Tensor, bits: int, m: Tensor | int) -> Tensor:
    """Real values of post-softmax twin codes (the range bit picks Δ1 or Δ2)."""
    d1, d2 = twin_softmax_steps(bits, m)
    d1, d2 = d1.to(codes.device), d2.to(codes.device)
    magnitude = (codes & (2 ** (bits - 1) - 1)).to(torch.float32)
    coarse = (codes >> (bits - 1)) & 1
    return torch.where(coarse.bool(), magnitude * d2, magnitude * d1)


def twin_softmax_fake(x: Tensor, bits: int, m: Tensor | int) -> Tensor:
    """Fake-quantize post-softmax values; equals ``twin_softmax_dequantize(twin_softmax_codes(x))``.

    >>> twin_softmax_fake(torch.tensor([0.10, 0.30, 1.0]), 4, 2)
    tensor([0.0938, 0.2500, 0.8750])
    """
    # one step per element (Δ1 inside R1, else Δ2), then a uniform quantizer: fewer temporaries
    # than quantizing twice and selecting, and the same values bit for bit
    n = 2 ** (bits - 1)
    d1, d2 = twin_softmax_steps(bits, m)
    d1, d2 = d1.to(x.device, x.dtype), d2.to(x.device, x.dtype)
    step = torch.where(x < n * d1, d1, d2)
    return _times(_clamp_round(x / step, 0, n - 1), step)


# ----------------------------------------------------------------------------- twin GELU


def _twin_gelu_parts(
    x: Tensor, bits: int, scale_pos: Tensor, m: Tensor | int
) -> tuple[Tensor, Tensor, Tensor]:
    n = 2 ** (bits - 1)
    m_t = torch.as_tensor(m, dtype=x.dtype, device=x.device)
    scale_neg = scale_pos * torch.exp2(-m_t)
    positive = x >= 0
    step = torch.where(positive, scale_pos, scale_neg)
    magnitude = _round(torch.clamp(x.abs() / step, 0, n - 1))
    return positive, magnitude, step


def twin_gelu_codes(x: Tensor, bits: int, scale_pos: Tensor, m: Tensor | int) -> Tensor:
    """Codes of the post-GELU twin quantizer: ``sign_bit << (k-1) | magnitude``.

    >>> twin_gelu_codes(torch.tensor([1.3, -0.1]), 4, torch.tensor(0.5), 3)  # Δn = 1/16
    tensor([ 3, 10], dtype=torch.int32)
    """
    positive, magnitude, _ = _twin_gelu_parts(x, bits, scale_pos, m)
    return magnitude.to(torch.int32) | ((~positive).to(torch.int32) << (bits - 1))


def twin_gelu_dequantize(codes: Tensor, bits: int, scale_pos: Tensor, m: Tensor | int) -> Tensor:
    """Real values of post-GELU twin codes (the sign bit picks -Δn or Δp)."""
    m_t = torch.as_tensor(m, dtype=scale_pos.dtype, device=scale_pos.device)
    magnitude = (codes & (2 ** (bits - 1) - 1)).to(scale_pos.dtype)
    negative = ((codes >> (bits - 1)) & 1).bool()
    return torch.where(negative, -magnitude * (scale_pos * torch.exp2(-m_t)), magnitude * scale_pos)


def twin_gelu_fake(x: Tensor, bits: int, scale_pos: Tensor, m: Tensor | int) -> Tensor:
    """Fake-quantize post-GELU values; equals ``twin_gelu_dequantize(twin_gelu_codes(x))``.

    >>> twin_gelu_fake(torch.tensor([1.3, -0.1, 9.0]), 4, torch.tensor(0.5), 3)
    tensor([ 1.5000, -0.1250,  3.5000])
    """
    n = 2 ** (bits - 1)
    if not x.requires_grad and torch.as_tensor(m).numel() == 1 and scale_pos.numel() == 1:
        # one split and one step (inference): dividing a negative by Δn = Δp/2^m is dividing by Δp
        # and scaling by 2^m, which leaky_relu does in place with no per-element step tensor;
        # powers of two scale exactly, so the values are those of the general path bit for bit
        up = 2.0 ** int(m)
        t = F.leaky_relu_(x / scale_pos, up).clamp_(-(n - 1), n - 1).round_().mul_(scale_pos)
        return F.leaky_relu_(t, 1.0 / up)
    # signed levels in one pass: round(clamp(x/step, -(n-1), n-1)) equals ±magnitude exactly
    m_t = torch.as_tensor(m, dtype=x.dtype, device=x.device)
    step = torch.where(x >= 0, scale_pos, scale_pos * torch.exp2(-m_t))
    return _times(_clamp_round(x / step, -(n - 1), n - 1), step)


# ----------------------------------------------------------------------------- logarithmic

#: GELU's smallest value, ``min x·Φ(x)`` (at x ≈ -0.7518): signed log kinds shift by its magnitude.
GELU_SHIFT = 0.16997124254703522
#: The codes per octave ``q`` AdaLog searches (base ``b = 2^(1/q)``): from base 4 (``q = 1/2``) to
#: ``2^(1/8)``, finer around log2 and log√2. Each is a multiple of 1/4, so ``a = 4q`` is an integer.
ADALOG_Q = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0)
_QUARTERS = 64  # q may be any multiple of 1/4 up to 16: a = 4q in 1..64
#: ``_EXP2_TABLE[a, i] = 2^(-i/a)`` in float32 for ``i < a`` (the tables ``T_a`` an integer kernel keeps).
_EXP2_TABLE = torch.tensor([[2.0 ** (-i / a) if a and i < a else 0.0 for i in range(_QUARTERS)]
                            for a in range(_QUARTERS + 1)], dtype=torch.float64).float()
#: ``2^(-1/2)`` in float32: the odd codes' factor of log√2 (equal to ``_EXP2_TABLE[8, 4]``).
_INV_SQRT2 = float(_EXP2_TABLE[8, 4])


def _quarters(q: Tensor | float, device: torch.device) -> Tensor:
    """``a = 4q`` as an integer tensor; ValueError unless q is a multiple of 1/4 from 1/4 to 16."""
    four_q = torch.as_tensor(q, dtype=torch.float64, device=device) * 4
    a = torch.round(four_q)
    if not bool(torch.all((a == four_q) & (a >= 1) & (a <= _QUARTERS))):
        raise ValueError(f"q (codes per octave) must be a multiple of 1/4 from 1/4 to 16, got {q!r}")
    return a.to(torch.int64)


def _log_levels(x: Tensor, bits: int, scale: Tensor | float, q: Tensor | float, shift: float) -> Tensor:
    """``round(clamp(-q · log2((x + shift) / scale), 0, 2^k - 1))`` as floats, without a gradient;
    values at or below ``-shift`` (and 0 when unshifted) get the largest code."""
    with torch.no_grad():
        t = (x + shift if shift else x) / scale
        e = torch.log2(t.clamp_(min=0)).mul_(-1)  # +inf for t = 0
        e = e * q if isinstance(q, Tensor) else e.mul_(q)
        return e.clamp_(0, 2**bits - 1).round_()


def _log_values(codes: Tensor, bits: int, scale: Tensor | float, q: Tensor | float, shift: float) -> Tensor:
    """The integer form: ``s · 2^-⌊4c/a⌋ · T_a[4c mod a] - shift`` (``a = 4q``), the top code 0 - shift."""
    c = codes.to(torch.int64)
    a = _quarters(q, c.device)
    e = 4 * c
    j = torch.div(e, a, rounding_mode="floor")
    frac = _EXP2_TABLE.to(c.device)[a, e - j * a]
    v = torch.exp2(-j.to(torch.float32)).mul_(frac)  # exact: 2^-j is exact in float32 (to 2^-149)
    v = v.masked_fill_(c == 2**bits - 1, 0.0) * scale
    return v - shift if shift else v


def _log_fake(x: Tensor, bits: int, scale: Tensor | float, q: Tensor | float, shift: float) -> Tensor:
    """``_log_values(_log_levels(x))`` in x's dtype, with a straight-through gradient."""
    v = _log_values(_log_levels(x, bits, scale, q, shift), bits, scale, q, shift).to(x.dtype)
    return v + (x - x.detach()) if x.requires_grad else v


def log2_codes(x: Tensor, bits: int, scale: Tensor | float = 1.0, *, shift: float = 0.0) -> Tensor:
    """Codes of the log2 quantizer: ``clamp(round(-log2((x + shift) / s)), 0, 2^k - 1)``.

    k = 3, s = 1: -log2(1) = 0 -> 0; -log2(0.3) = 1.74 -> 2; -log2(0.05) = 4.32 -> 4;
    -log2(0.012) = 6.38 -> 6; -log2(0.005) = 7.64 -> 7 (clamped) and 0 -> inf -> 7.

    >>> log2_codes(torch.tensor([1.0, 0.3, 0.05, 0.012, 0.005, 0.0]), 3)
    tensor([0, 2, 4, 6, 7, 7], dtype=torch.int32)
    """
    return _log_levels(x, bits, scale, 1.0, shift).to(torch.int32)


def log2_dequantize(codes: Tensor, bits: int, scale: Tensor | float = 1.0, *, shift: float = 0.0) -> Tensor:
    """Real values of log2 codes: ``s · 2^-c`` (a shift), the top code ``2^k - 1`` meaning 0; minus ``shift``.

    >>> log2_dequantize(torch.tensor([0, 2, 4, 6, 7], dtype=torch.int32), 3)
    tensor([1.0000, 0.2500, 0.0625, 0.0156, 0.0000])
    """
    c = codes.to(torch.int64)
    v = torch.exp2(-c.to(torch.float32)).masked_fill_(c == 2**bits - 1, 0.0) * scale
    return v - shift if shift else v


def log2_fake(x: Tensor, bits: int, scale: Tensor | float = 1.0, *, shift: float = 0.0) -> Tensor:
    """Fake-quantize on the log2 grid; equals ``log2_dequantize(log2_codes(x))``.

    >>> log2_fake(torch.tensor([1.0, 0.3, 0.05, 0.012, 0.005]), 3)
    tensor([1.0000, 0.2500, 0.0625, 0.0156, 0.0000])
    """
    return _log_fake(x, bits, scale, 1.0, shift)


def log_sqrt2_codes(x: Tensor, bits: int, scale: Tensor | float = 1.0, *, shift: float = 0.0) -> Tensor:
    """Codes of the log√2 quantizer: ``clamp(round(-2 · log2((x + shift) / s)), 0, 2^k - 1)``.

    k = 3, s = 1: -2·log2(0.6) = 1.47 -> 1; -2·log2(0.3) = 3.47 -> 3; -2·log2(0.13) = 5.89 -> 6;
    -2·log2(0.02) = 11.3 -> 7 (clamped).

    >>> log_sqrt2_codes(torch.tensor([1.0, 0.6, 0.3, 0.13, 0.02]), 3)
    tensor([0, 1, 3, 6, 7], dtype=torch.int32)
    """
    return _log_levels(x, bits, scale, 2.0, shift).to(torch.int32)


def log_sqrt2_dequantize(codes: Tensor, bits: int, scale: Tensor | float = 1.0, *, shift: float = 0.0) -> Tensor:
    """Real values of log√2 codes as an integer kernel computes them: ``j = c >> 1`` is a shift,
    the odd bit ``c & 1`` a factor 1/√2: ``s · 2^-j · (1/√2 if odd else 1)``; top code 0; minus ``shift``.

    Codes 0, 1, 3, 6: 2^0 = 1; 2^0/√2 = 0.7071; 2^-1/√2 = 0.3536; 2^-3 = 0.125; code 7: 0.

    >>> log_sqrt2_dequantize(torch.tensor([0, 1, 3, 6, 7], dtype=torch.int32), 3)
    tensor([1.0000, 0.7071, 0.3536, 0.1250, 0.0000])
    """
    c = codes.to(torch.int64)
    odd = torch.full(c.shape, _INV_SQRT2, dtype=torch.float32, device=c.device)
    v = torch.exp2(-(c >> 1).to(torch.float32)).mul_(odd.masked_fill_((c & 1) == 0, 1.0))
    v = v.masked_fill_(c == 2**bits - 1, 0.0) * scale
    return v - shift if shift else v


def log_sqrt2_fake(x: Tensor, bits: int, scale: Tensor | float = 1.0, *, shift: float = 0.0) -> Tensor:
    """Fake-quantize on the log√2 grid; equals ``log_sqrt2_dequantize(log_sqrt2_codes(x))``.

    >>> log_sqrt2_fake(torch.tensor([1.0, 0.6, 0.3, 0.13, 0.02]), 3)
    tensor([1.0000, 0.7071, 0.3536, 0.1250, 0.0000])
    """
    return _log_fake(x, bits, scale, 2.0, shift)


def adalog_codes(x: Tensor, bits: int, scale: Tensor | float, q: Tensor | float, *, shift: float = 0.0) -> Tensor:
    """Codes of AdaLog with base ``b = 2^(1/q)``: ``clamp(round(-q · log2((x + shift) / s)), 0, 2^k - 1)``.

    k = 3, s = 1, q = 1.5: -1.5·log2(0.7) = 0.77 -> 1; -1.5·log2(0.3) = 2.61 -> 3;
    -1.5·log2(0.1) = 4.98 -> 5; -1.5·log2(0.03) = 7.59 -> 7 (clamped).

    >>> adalog_codes(torch.tensor([0.7, 0.3, 0.1, 0.03]), 3, 1.0, 1.5)
    tensor([1, 3, 5, 7], dtype=torch.int32)
    """
    return _log_levels(x, bits, scale, q, shift).to(torch.int32)


def adalog_dequantize(codes: Tensor, bits: int, scale: Tensor | float, q: Tensor | float, *,
                      shift: float = 0.0) -> Tensor:
    """Real values of AdaLog codes as an integer kernel computes them: with ``a = 4q``,
    ``s · 2^-⌊4c/a⌋ · T_a[4c mod a]``, ``T_a[i] = 2^(-i/a)`` (a table of ``a`` entries); top code 0;
    minus ``shift``.

    q = 1.5, a = 6: code 1 -> 4 = 0·6 + 4 -> T_6[4] = 2^(-2/3) = 0.6300; code 3 -> 12 = 2·6 + 0 ->
    2^-2 = 0.25; code 5 -> 20 = 3·6 + 2 -> 2^-3 · 2^(-1/3) = 0.0992; code 7 (top) -> 0.

    >>> adalog_dequantize(torch.tensor([1, 3, 5, 7], dtype=torch.int32), 3, 1.0, 1.5)
    tensor([0.6300, 0.2500, 0.0992, 0.0000])
    """
    return _log_values(codes, bits, scale, q, shift)


def adalog_fake(x: Tensor, bits: int, scale: Tensor | float, q: Tensor | float, *, shift: float = 0.0) -> Tensor:
    """Fake-quantize with AdaLog; equals ``adalog_dequantize(adalog_codes(x))``. ``scale`` and ``q``
    broadcast against ``x`` (per tensor, per head, or candidates stacked in front).

    >>> adalog_fake(torch.tensor([0.7, 0.3, 0.1, 0.03]), 3, 1.0, 1.5)
    tensor([0.6300, 0.2500, 0.0992, 0.0000])
    """
    return _log_fake(x, bits, scale, q, shift)


# ----------------------------------------------------------------------------- modules


class Quantizer(nn.Module):
    """A fake quantizer: identity while ``enabled`` is False, else ``fake(x)``.

    A quantizer's state is its data: ``bits``, its parameters (buffers such as ``scale`` and
    ``m``), ``enabled`` and ``calibrated`` (set by :meth:`set`). Each subclass owns everything
    that depends on its kind, so nothing else switches over kinds:

    * the maths: :meth:`fake_with` (any parameters, broadcasting over candidates), :meth:`codes`,
      :meth:`dequantize`, and the integer :attr:`layout` with its :meth:`code_range`;
    * calibration: :meth:`minmax_params` (start values from capture statistics) and
      :meth:`search_space` (which parameters a search sets, and over which values);
    * description: :meth:`steps`, :meth:`level_groups`, :meth:`label`, :meth:`code_fields`.
    """

    kind: ClassVar[str]
    #: The integer layouts this kind writes, with the documentation the export header carries.
    layouts: ClassVar[dict[str, str]]

    def __init__(self, bits: int) -> None:
        super().__init__()
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"bits must be an integer in 2..16, got {bits!r}")
        self.bits = bits
        self.enabled = False
        self.calibrated = False  # set() was called: the parameters are calibrated ones
        self.version = 0  # bumped by set(): lets layers cache quantized weights safely

    def forward(self, x: Tensor) -> Tensor:
        return self.fake(x) if self.enabled else x

    # ---- parameters

    def params(self) -> dict[str, Tensor]:
        """The current parameters by name (the buffers :meth:`set` takes)."""
        return dict(self.named_buffers(recurse=False))

    def set(self, *, enabled: bool = True, **params: Tensor | int | float) -> "Quantizer":
        """Set the parameters (by name), mark the quantizer calibrated and (by default) enable it; returns self."""
        current = self.params()
        if set(params) != set(current):
            raise TypeError(f"{type(self).__name__}.set takes {', '.join(sorted(current))}, got {', '.join(sorted(params))}")
        new = {name: torch.as_tensor(value, dtype=current[name].dtype).detach() for name, value in params.items()}
        if "scale" in new and not torch.all(torch.isfinite(new["scale"]) & (new["scale"] > 0)):
            raise ValueError("quantizer scales must be finite and positive")
        for name, t in new.items():  # all checked before any is set: a failed set changes nothing
            setattr(self, name, t.to(current[name].device))
        self.enabled = enabled
        self.calibrated = True
        self.version += 1
        return self

    # ---- maths

    def fake_with(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        """Fake-quantize ``x`` with ``params`` in place of this quantizer's own (they broadcast)."""
        raise NotImplementedError

    def fake(self, x: Tensor) -> Tensor:
        return self.fake_with(x, self.params())

    def codes(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dequantize(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def layout(self) -> str:
        """The name of this quantizer's integer layout (a key of :attr:`layouts`)."""
        return next(iter(self.layouts))

    def code_range(self) -> tuple[int, int]:
        """The smallest and largest code (as a k-bit field: twin codes are unsigned)."""
        return 0, 2**self.bits - 1

    @classmethod
    def build(cls, bits: int, *, signed: bool = True, **params: Tensor | int | float) -> "Quantizer":
        """A calibrated quantizer of this kind from plain values; parameters it lacks are ignored
        (so one call site can build any kind from ``scale``, ``m`` and ``signed``)."""
        q = cls(bits)
        return q.set(**{k: v for k, v in params.items() if k in q.params()})

    @classmethod
    def from_layout(cls, layout: str, bits: int, params: Mapping[str, Tensor]) -> "Quantizer":
        """A calibrated quantizer of ``layout`` with ``params`` (to give exported codes values)."""
        return cls.build(bits, **params)

    # ---- calibration

    def minmax_params(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Start parameters from capture statistics (``absmax``, and ``max`` / ``min`` where kept),
        one per channel of the statistics' shape."""
        raise NotImplementedError

    def search_space(self) -> dict[str, Tensor | None]:
        """The parameters a search sets, in order: each maps to its candidate values, or None for
        the config's multiplier grid times the min-max value."""
        return {"scale": None}

    # ---- description

    def steps(self) -> dict[str, float]:  # pragma: no cover - abstract
        """The quantization steps by range name (per-tensor parameters)."""
        raise NotImplementedError

    def level_groups(self) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """The representable values by range (what a grid drawn over a histogram shows)."""
        raise NotImplementedError

    def label(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def code_fields(self, code: int) -> dict[str, int | float]:
        """What the bits of one code mean (for tables that spell codes out); none for uniform."""
        return {}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, enabled={self.enabled}, calibrated={self.calibrated}"


class UniformQuantizer(Quantizer):
    """Symmetric uniform quantizer; ``scale`` broadcasts (per tensor, channel or head).

    >>> q = UniformQuantizer(4).set(scale=torch.tensor(0.25))
    >>> q(torch.tensor([0.26, 9.0]))
    tensor([0.2500, 1.7500])
    """

    kind = "uniform"
    layouts = {
        "uniform_signed": "two's complement k-bit integer q in [-2^(k-1), 2^(k-1)-1]; value = q * scale",
        "uniform_unsigned": "k-bit integer q in [0, 2^k-1]; value = q * scale",
    }

    def __init__(self, bits: int, signed: bool = True) -> None:
        super().__init__(bits)
        self.signed = signed
        self.register_buffer("scale", torch.ones(()))

    def fake_with(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return uniform_fake(x, params["scale"], self.bits, self.signed)

    def codes(self, x: Tensor) -> Tensor:
        return uniform_codes(x, self.scale, self.bits, self.signed)

    def dequantize(self, codes: Tensor) -> Tensor:
        return uniform_dequantize(codes, self.scale)

    @property
    def layout(self) -> str:
        return "uniform_signed" if self.signed else "uniform_unsigned"

    def code_range(self) -> tuple[int, int]:
        return qrange(self.bits, self.signed)

    @classmethod
    def build(cls, bits: int, *, signed: bool = True, **params: Tensor | int | float) -> "Quantizer":
        q = cls(bits, signed=signed)
        return q.set(**{k: v for k, v in params.items() if k in q.params()})

    @classmethod
    def from_layout(cls, layout: str, bits: int, params: Mapping[str, Tensor]) -> "Quantizer":
        return cls.build(bits, signed=layout == "uniform_signed", **params)

    def minmax_params(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"scale": minmax_step(stats["absmax"], self.bits, self.signed)}

    def steps(self) -> dict[str, float]:
        return {"step": float(self.scale)}

    def level_groups(self) -> dict[str, Tensor]:
        lo, hi = qrange(self.bits, self.signed)
        return {"uniform": torch.arange(lo, hi + 1, dtype=torch.float64) * float(self.scale)}

    def label(self) -> str:
        return f"uniform {self.bits}-bit ({'signed' if self.signed else 'unsigned'}), Δ={float(self.scale):.3g}"

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, signed={self.signed}, scale_shape={tuple(self.scale.shape)}"


class ShiftedUniformQuantizer(UniformQuantizer):
    """Uniform quantizer for post-GELU values, shifted by GELU's minimum: ``x̂ = Δ · c - 0.17``
    with ``c = clamp(round((x + 0.17) / Δ), 0, 2^k - 1)``: an asymmetric uniform quantizer whose
    zero point sits at :data:`GELU_SHIFT`, so all ``2^k`` levels cover ``[-0.17, (2^k - 1)Δ - 0.17]``
    (a symmetric signed one spends half of them below -0.17, where GELU has no values). RepQ-ViT
    quantizes post-GELU values with an asymmetric uniform quantizer; this one fixes its zero point.

    >>> q = ShiftedUniformQuantizer(2).set(scale=torch.tensor(1.0))
    >>> q(torch.tensor([-0.17, 0.4, 5.0]))   # levels -0.17, 0.83, 1.83, 2.83
    tensor([-0.1700,  0.8300,  2.8300])
    """

    kind = "uniform-shifted"
    layouts = {"uniform_shifted": f"k-bit integer c in [0, 2^k-1]; value = c * scale - {GELU_SHIFT}"}
    shift = GELU_SHIFT

    def __init__(self, bits: int, signed: bool = False) -> None:
        super().__init__(bits, signed=False)

    def fake_with(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return uniform_fake(x + self.shift, params["scale"], self.bits, False) - self.shift

    def codes(self, x: Tensor) -> Tensor:
        return uniform_codes(x + self.shift, self.scale, self.bits, False)

    def dequantize(self, codes: Tensor) -> Tensor:
        return uniform_dequantize(codes, self.scale) - self.shift

    @property
    def layout(self) -> str:
        return "uniform_shifted"

    @classmethod
    def build(cls, bits: int, *, signed: bool = False, **params: Tensor | int | float) -> "Quantizer":
        q = cls(bits)
        return q.set(**{k: v for k, v in params.items() if k in q.params()})

    @classmethod
    def from_layout(cls, layout: str, bits: int, params: Mapping[str, Tensor]) -> "Quantizer":
        return cls.build(bits, **params)

    def minmax_params(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``Δ = (max + 0.17) / (2^k - 1)`` (``max`` from the statistics, else ``absmax``)."""
        top = (stats["max"] if "max" in stats else stats["absmax"]).float() + self.shift
        return {"scale": (top / (2**self.bits - 1)).clamp_min(1e-8)}

    def level_groups(self) -> dict[str, Tensor]:
        return {"uniform": torch.arange(0, 2**self.bits, dtype=torch.float64) * float(self.scale) - self.shift}

    def label(self) -> str:
        return f"uniform {self.bits}-bit, shifted by {self.shift:.3g}, Δ={float(self.scale):.3g}"


class TwinSoftmaxQuantizer(Quantizer):
    """Twin-uniform quantizer for post-softmax values in [0, 1]; ``m`` (per tensor or head) sets
    the fine step ``Δ1 = 2^-(k-1) / 2^m``. Its splits are ``m = 0..k-1``: up to ``k-1`` the fine
    range ends on a coarse level, so the quantizer stays monotone.

    >>> TwinSoftmaxQuantizer(4).set(m=2)(torch.tensor([0.10, 0.30]))
    tensor([0.0938, 0.2500])
    """

    kind = "twin-softmax"
    layouts = {"twin_softmax": "bit k-1: range bit r, bits 0..k-2: magnitude q; "
                               "value = q * 2^-(k-1) if r = 1 else q * 2^-(k-1) / 2^m"}

    def __init__(self, bits: int) -> None:
        super().__init__(bits)
        self.register_buffer("m", torch.zeros((), dtype=torch.int64))

    def fake_with(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return twin_softmax_fake(x, self.bits, params["m"])

    def codes(self, x: Tensor) -> Tensor:
        return twin_softmax_codes(x, self.bits, self.m)

    def dequantize(self, codes: Tensor) -> Tensor:
        return twin_softmax_dequantize(codes, self.bits, self.m)

    def minmax_params(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"m": torch.full_like(stats["absmax"].float(), float(self.bits // 2))}

    def search_space(self) -> dict[str, Tensor | None]:
        return {"m": torch.arange(0, self.bits, dtype=torch.float32)}

    def steps(self) -> dict[str, float]:
        d1, d2 = twin_softmax_steps(self.bits, self.m)
        return {"fine": float(d1), "coarse": float(d2)}

    def level_groups(self) -> dict[str, Tensor]:
        i = torch.arange(2 ** (self.bits - 1), dtype=torch.float64)
        s = self.steps()
        return {"fine range R1": i * s["fine"], "coarse range R2": i * s["coarse"]}

    def label(self) -> str:
        s = self.steps()
        return f"twin-uniform {self.bits}-bit, Δ1=Δ2/2^{int(self.m)}={s['fine']:.3g}, Δ2={s['coarse']:.3g}"

    def code_fields(self, code: int) -> dict[str, int | float]:
        coarse = code >> (self.bits - 1)
        return {"range bit": coarse, "magnitude": code & (2 ** (self.bits - 1) - 1),
                "step": self.steps()["coarse" if coarse else "fine"]}


class TwinGeluQuantizer(Quantizer):
    """Twin-uniform quantizer for post-GELU values: ``scale`` for positives and
    ``scale / 2^m`` for negatives, ``m`` in -2..12.

    >>> TwinGeluQuantizer(4).set(scale=torch.tensor(0.5), m=3)(torch.tensor([1.3, -0.1]))
    tensor([ 1.5000, -0.1250])
    """

    kind = "twin-gelu"
    layouts = {"twin_gelu": "bit k-1: sign bit s, bits 0..k-2: magnitude q; "
                            "value = -q * scale / 2^m if s = 1 else q * scale"}
    #: The splits searched: Δn = Δp / 2^m from 4·Δp down to Δp / 4096.
    SPLITS = torch.arange(-2, 13, dtype=torch.float32)

    def __init__(self, bits: int) -> None:
        super().__init__(bits)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("m", torch.zeros((), dtype=torch.int64))

    def set(self, *, enabled: bool = True, **params: Tensor | int | float) -> "Quantizer":
        if "m" in params and "scale" in params:  # m is an integer: keep it on the scale's device
            params["m"] = torch.as_tensor(params["m"]).to(torch.as_tensor(params["scale"]).device)
        return super().set(enabled=enabled, **params)

    def fake_with(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return twin_gelu_fake(x, self.bits, params["scale"], params["m"])

    def codes(self, x: Tensor) -> Tensor:
        return twin_gelu_codes(x, self.bits, self.scale, self.m)

    def dequantize(self, codes: Tensor) -> Tensor:
        return twin_gelu_dequantize(codes, self.bits, self.scale, self.m)

    def minmax_params(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Δp from the largest value; the split whose negative step just covers the smallest."""
        scale = minmax_step(stats["max"].clamp_min(1e-6), self.bits)
        need = (stats["min"].abs().clamp_min(1e-6) / (2 ** (self.bits - 1) - 1)).float()
        m = torch.floor(torch.log2(scale / need)).clamp(self.SPLITS[0], self.SPLITS[-1])
        return {"scale": scale, "m": m}

    def search_space(self) -> dict[str, Tensor | None]:
        return {"scale": None, "m": self.SPLITS}

    def steps(self) -> dict[str, float]:
        return {"positive": float(self.scale), "negative": float(self.scale) * 2.0 ** -int(self.m)}

    def level_groups(self) -> dict[str, Tensor]:
        i = torch.arange(2 ** (self.bits - 1), dtype=torch.float64)
        s = self.steps()
        return {"positive": i * s["positive"], "negative": -i * s["negative"]}

    def label(self) -> str:
        s = self.steps()
        return f"twin-uniform {self.bits}-bit, Δp={s['positive']:.3g}, Δn=Δp/2^{int(self.m)}={s['negative']:.3g}"

    def code_fields(self, code: int) -> dict[str, int | float]:
        negative = code >> (self.bits - 1)
        return {"sign bit": negative, "magnitude": code & (2 ** (self.bits - 1) - 1),
                "step": self.steps()["negative" if negative else "positive"]}


class LogQuantizer(Quantizer):
    """A logarithmic quantizer: ``x̂ = s · 2^(-c/q) - shift`` on k-bit codes, the top code 0 - shift.

    ``signed=False`` (post-softmax values in [0, 1]): no shift. ``signed=True`` (post-GELU values):
    shifted by :data:`GELU_SHIFT` so the whole k-bit grid covers ``[-0.17, s - 0.17]`` (AdaLog's
    bias reparameterisation; a sign bit would spend half the codes on a range 0.17 wide).
    ``scale`` broadcasts like a uniform step. Whether calibration searches it is ``search_scale``
    (default: the kind's choice for unsigned values, always for signed ones); unsearched it stays 1,
    the largest softmax value, so dequantizing is a shift (and a table for AdaLog).
    Subclasses set :attr:`Q` (codes per octave) and their layouts' names and text.
    """

    #: Codes per octave of the fixed-base kinds (AdaLog has a parameter ``q`` instead).
    Q: ClassVar[float] = 1.0
    #: Whether calibration searches ``scale`` of unsigned (post-softmax) quantizers by default.
    SEARCH_SCALE: ClassVar[bool] = False
    #: The kind's name in labels.
    NAME: ClassVar[str] = "log"

    def __init__(self, bits: int, signed: bool = False, search_scale: bool | None = None) -> None:
        super().__init__(bits)
        self.signed = signed
        self.search_scale = (signed or self.SEARCH_SCALE) if search_scale is None else search_scale
        self.register_buffer("scale", torch.ones(()))

    @property
    def shift(self) -> float:
        """What is added before and subtracted after quantizing: :data:`GELU_SHIFT` if signed, else 0."""
        return GELU_SHIFT if self.signed else 0.0

    def _q(self, params: Mapping[str, Tensor]) -> Tensor | float:
        return self.Q

    def fake_with(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return _log_fake(x, self.bits, params["scale"], self._q(params), self.shift)

    def codes(self, x: Tensor) -> Tensor:
        return _log_levels(x, self.bits, self.scale, self._q(self.params()), self.shift).to(torch.int32)

    def dequantize(self, codes: Tensor) -> Tensor:
        return _log_values(codes, self.bits, self.scale, self._q(self.params()), self.shift)

    @property
    def layout(self) -> str:
        plain, shifted = self.layouts
        return shifted if self.signed else plain

    @classmethod
    def build(cls, bits: int, *, signed: bool = False, **params: Tensor | int | float) -> "Quantizer":
        q = cls(bits, signed=signed)
        return q.set(**{k: v for k, v in params.items() if k in q.params()})

    @classmethod
    def from_layout(cls, layout: str, bits: int, params: Mapping[str, Tensor]) -> "Quantizer":
        return cls.build(bits, signed=layout.endswith("_shifted"), **params)

    def minmax_params(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``scale`` maps the largest (shifted) value to code 0 when searched, else stays 1."""
        absmax = stats["absmax"].float()
        if not self.search_scale:
            return {"scale": torch.ones_like(absmax)}
        top = stats["max"].float() + self.shift if self.signed and "max" in stats else absmax + self.shift
        return {"scale": top.clamp_min(1e-8)}

    def search_space(self) -> dict[str, Tensor | None]:
        return {"scale": None} if self.search_scale else {}

    def _q_value(self) -> float:
        return float(self._q(self.params()))

    def steps(self) -> dict[str, float]:
        """The largest level and the ratio between neighbouring levels, ``2^(-1/q)``."""
        return {"scale": float(self.scale), "ratio": 2.0 ** (-1.0 / self._q_value())}

    def level_groups(self) -> dict[str, Tensor]:
        codes = torch.arange(2**self.bits, dtype=torch.int32)
        values = _log_values(codes, self.bits, float(self.scale), self._q_value(), self.shift)
        return {f"{self.NAME} levels": values.double()}

    def label(self) -> str:
        shifted = f", shifted by {self.shift:.3g}" if self.signed else ""
        return f"{self.NAME} {self.bits}-bit, s={float(self.scale):.3g}{shifted}"

    def code_fields(self, code: int) -> dict[str, int | float]:
        a = round(4 * self._q_value())
        zero = int(code == 2**self.bits - 1)
        value = float(_log_values(torch.tensor(code), self.bits, float(self.scale), self._q_value(), self.shift))
        return {"shift": (4 * code) // a, "table index": (4 * code) % a, "zero": zero, "value": value}

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, signed={self.signed}, search_scale={self.search_scale}, "
                f"scale_shape={tuple(self.scale.shape)}")


class Log2Quantizer(LogQuantizer):
    """log2 quantizer (RepQ-ViT's inference form): ``x̂ = s · 2^-c``, the top code meaning 0.
    ``s`` stays 1 unless ``search_scale``: dequantizing is then a shift.

    >>> Log2Quantizer(3).set(scale=torch.tensor(1.0))(torch.tensor([0.3, 0.012, 0.005]))
    tensor([0.2500, 0.0156, 0.0000])
    """

    kind = "log2"
    NAME = "log2"
    Q = 1.0
    layouts = {
        "log2": "k-bit integer c in [0, 2^k-1]; value = scale * 2^-c, c = 2^k-1 means 0",
        "log2_shifted": f"k-bit integer c in [0, 2^k-1]; value = scale * 2^-c - {GELU_SHIFT}, "
                        f"c = 2^k-1 means -{GELU_SHIFT}",
    }

    def dequantize(self, codes: Tensor) -> Tensor:
        return log2_dequantize(codes, self.bits, self.scale, shift=self.shift)

    def code_fields(self, code: int) -> dict[str, int | float]:
        fields = super().code_fields(code)
        return {"exponent": code, "zero": fields["zero"], "value": fields["value"]}


class LogSqrt2Quantizer(LogQuantizer):
    """log√2 quantizer (RepQ-ViT): ``x̂ = s · 2^(-c/2) = s · 2^-⌊c/2⌋ · (1/√2 if c is odd else 1)``,
    the top code meaning 0. ``s`` is searched by default (RepQ-ViT searches it too, by quantiles).

    >>> LogSqrt2Quantizer(3).set(scale=torch.tensor(1.0))(torch.tensor([0.6, 0.3, 0.13]))
    tensor([0.7071, 0.3536, 0.1250])
    """

    kind = "log-sqrt2"
    NAME = "log√2"
    Q = 2.0
    SEARCH_SCALE = True
    layouts = {
        "log_sqrt2": "k-bit integer c in [0, 2^k-1]; j = c >> 1, o = c & 1; "
                     "value = scale * 2^-j * (2^-0.5 if o else 1), c = 2^k-1 means 0",
        "log_sqrt2_shifted": "k-bit integer c in [0, 2^k-1]; j = c >> 1, o = c & 1; "
                             f"value = scale * 2^-j * (2^-0.5 if o else 1) - {GELU_SHIFT}, "
                             f"c = 2^k-1 means -{GELU_SHIFT}",
    }

    def dequantize(self, codes: Tensor) -> Tensor:
        return log_sqrt2_dequantize(codes, self.bits, self.scale, shift=self.shift)

    def code_fields(self, code: int) -> dict[str, int | float]:
        fields = super().code_fields(code)
        return {"shift": code >> 1, "odd": code & 1, "zero": fields["zero"], "value": fields["value"]}


class AdaLogQuantizer(LogQuantizer):
    """AdaLog: a logarithmic quantizer whose base ``b = 2^(1/q)`` is searched per layer over
    :data:`ADALOG_Q` (like a twin split), ``x̂ = s · 2^(-c/q)``, the top code meaning 0. Unsigned,
    ``s`` stays 1 (as AdaLog's post-softmax quantizer); signed (post-GELU), ``s`` is searched too.
    ``q`` (per tensor or head) is any multiple of 1/4 from 1/4 to 16.

    AdaLog's own code writes the exponent as ``c · p / 37`` (a 37-entry table for every base,
    rounded to a fixed-point grid); here ``c / q`` with ``q`` a multiple of 1/4 and float32 tables.

    >>> AdaLogQuantizer(3).set(scale=torch.tensor(1.0), q=1.5)(torch.tensor([0.7, 0.3, 0.1]))
    tensor([0.6300, 0.2500, 0.0992])
    """

    kind = "adalog"
    NAME = "AdaLog"
    layouts = {
        "adalog": "k-bit integer c in [0, 2^k-1], a = 4q; j = floor(4c / a), i = 4c mod a; "
                  "value = scale * 2^-j * 2^(-i/a) (float32 table), c = 2^k-1 means 0",
        "adalog_shifted": "k-bit integer c in [0, 2^k-1], a = 4q; j = floor(4c / a), i = 4c mod a; "
                          f"value = scale * 2^-j * 2^(-i/a) (float32 table) - {GELU_SHIFT}, "
                          f"c = 2^k-1 means -{GELU_SHIFT}",
    }
    #: The bases searched, as codes per octave ``q``.
    BASES = torch.tensor(ADALOG_Q, dtype=torch.float32)

    def __init__(self, bits: int, signed: bool = False, search_scale: bool | None = None) -> None:
        super().__init__(bits, signed, search_scale)
        self.register_buffer("q", torch.full((), 2.0))

    def set(self, *, enabled: bool = True, **params: Tensor | int | float) -> "Quantizer":
        if "q" in params:  # checked before anything is set
            _quarters(params["q"], torch.device("cpu"))
            if "scale" in params:
                params["q"] = torch.as_tensor(params["q"]).to(torch.as_tensor(params["scale"]).device)
        return super().set(enabled=enabled, **params)

    def _q(self, params: Mapping[str, Tensor]) -> Tensor | float:
        return params["q"]

    def minmax_params(self, stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """As :class:`LogQuantizer`, with the base starting at log√2 (``q = 2``)."""
        params = super().minmax_params(stats)
        return {**params, "q": torch.full_like(params["scale"], 2.0)}

    def search_space(self) -> dict[str, Tensor | None]:
        return {"q": self.BASES, **super().search_space()}

    def label(self) -> str:
        return super().label().replace(f"{self.bits}-bit,", f"{self.bits}-bit, base 2^(1/{self._q_value():g}),")


#: Every quantizer kind, by its ``kind`` name. A new kind is one class added here.
QUANTIZER_KINDS: dict[str, type[Quantizer]] = {
    cls.kind: cls for cls in (UniformQuantizer, ShiftedUniformQuantizer, TwinSoftmaxQuantizer, TwinGeluQuantizer,
                              Log2Quantizer, LogSqrt2Quantizer, AdaLogQuantizer)
}


def quantizer_for_layout(layout: str, bits: int, params: Mapping[str, Tensor]) -> Quantizer:
    """The calibrated quantizer that writes integer ``layout`` with ``params`` (ValueError if none)."""
    for cls in QUANTIZER_KINDS.values():
        if layout in cls.layouts:
            return cls.from_layout(layout, bits, params)
    known = [name for cls in QUANTIZER_KINDS.values() for name in cls.layouts]
    raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(known)}")
