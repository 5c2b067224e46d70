"""What to quantize and how to calibrate it: one frozen dataclass. Presets live in ``methods.py``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from ..core.metrics import METRICS, MetricName

__all__ = ["PTQConfig", "GradLoss", "Granularity"]

Granularity = Literal["tensor", "channel"]
GradLoss = Literal["pseudo_label_ce", "label_ce", "official_kl"]


@dataclass(frozen=True)
class PTQConfig:
    """A complete post-training quantization recipe.

    Quantizers:
        w_bits, a_bits: bit-widths of weights and of activations (inputs of every Linear, both
            matmul operands). 2..16.
        twin_softmax: post-softmax values (attn@v's first operand) use the twin-uniform quantizer.
        twin_gelu: post-GELU values (fc2's input) use the twin-uniform quantizer.
        softmax_unsigned: without twin, quantize post-softmax values with an unsigned uniform
            quantizer (all k bits for [0, 1]); the official BasePTQ uses a signed one.
        weight_granularity: ``tensor`` (one scale; qkv gets three, one each for q, k, v) or
            ``channel`` (one per output channel) for Linear weights. Conv weights are always
            per output channel.
        matmul_granularity: ``tensor`` or ``head`` (one scale per attention head) for both
            matmul operands.

    Calibration:
        metric: distance used to score candidate scales (``metrics.py``).
        grad_loss: loss whose gradient weights the ``hessian`` metric. ``pseudo_label_ce`` is
            cross-entropy against the float model's own top-1 predictions (a Fisher weight that
            needs no labels); ``label_ce`` uses the true labels; ``official_kl`` is the official
            code's KL(float || float), whose gradient vanishes in parallel calibration.
        grad_norm: ``image`` scales each calibration image's gradient to unit mean square, so
            the few images the float model is unsure of (large ``∂L/∂O``) do not decide every
            scale alone; ``channel`` replaces ``(∂L/∂O)²`` by its mean over images and tokens per
            output channel (per head for matmuls); ``none`` keeps the raw per-element weights.
        alpha, beta, n: the candidate grid ``(α + i(β-α)/n)·Δ₀``, i = 0..n.
        rounds: alternating weight/input search rounds; 0 means min-max scales, no search.
        search: ``grid`` (exhaustive), ``coarse_to_fine`` (every round: a coarse pass, then the
            points around its best; ``search.py``) or ``coarse_to_fine_local`` (later rounds only
            refine around the previous round's answer: faster, but it can stay in the first
            round's basin, which measured 0.8 point below the grid at W6A6).
        stride, refine: ``coarse_to_fine`` scores every ``stride``-th grid point, then every point
            within ``stride`` of the ``refine`` best of them. Small sites (the patch embedding's
            single search, the head's one row per image) are always searched exhaustively.
        max_tokens: score candidates on at most this many rows (tokens) per layer, a seeded
            sample; ``None`` uses all.
        row_select: which rows ``max_tokens`` keeps. ``fisher``: when the metric uses gradients,
            the rows with the largest gradient energy ``Σ_c (∂L/∂O_rc)²`` (per-image
            normalised), which carry most of the Hessian-guided distance (for a ViT the class
            token rows, which a uniform sample mostly misses); otherwise a seeded random sample.
            ``random``: always the seeded random sample.
        outlier_rows: with ``fisher`` rows, the share of ``max_tokens`` taken first by the largest
            input magnitude: a ViT's massive-activation tokens (e.g. 4 corner patches with a
            channel near 200 after GELU) carry almost no gradient, so Fisher selection drops them,
            yet clipping them costs accuracy that the local metric cannot predict.
        order: ``parallel`` (every layer sees float inputs; one capture pass) or ``sequential``
            (block by block, each block sees the already-quantized blocks' outputs).
        chunks: split the layers into this many groups captured in separate passes (less
            memory, more passes).
        seed: seeds the token sample.
    """

    method: str = "custom"
    w_bits: int = 8
    a_bits: int = 8
    twin_softmax: bool = False
    twin_gelu: bool = False
    softmax_unsigned: bool = True
    weight_granularity: Granularity = "tensor"
    matmul_granularity: Literal["tensor", "head"] = "tensor"
    metric: MetricName = "hessian"
    grad_loss: GradLoss = "pseudo_label_ce"
    grad_norm: Literal["none", "image", "channel"] = "none"
    alpha: float = 0.01
    beta: float = 1.2
    n: int = 100
    rounds: int = 3
    search: Literal["grid", "coarse_to_fine", "coarse_to_fine_local"] = "coarse_to_fine"
    stride: int = 6
    refine: int = 2
    max_tokens: int | None = 1024
    row_select: Literal["fisher", "random"] = "fisher"
    outlier_rows: float = 0.125
    order: Literal["parallel", "sequential"] = "parallel"
    chunks: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 16:
                raise ValueError(f"{name} must be an integer from 2 to 16, got {v!r}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if self.rounds < 0 or self.n < 1 or self.chunks < 1 or self.stride < 2 or self.refine < 1:
            raise ValueError("rounds must be >= 0, n >= 1, chunks >= 1, stride >= 2 and refine >= 1")
        if self.row_select not in ("fisher", "random"):
            raise ValueError(f"row_select must be 'fisher' or 'random', got {self.row_select!r}")
        if not 0.0 <= self.outlier_rows <= 1.0:
            raise ValueError(f"outlier_rows must be a share from 0 to 1, got {self.outlier_rows!r}")
        if self.search not in ("grid", "coarse_to_fine", "coarse_to_fine_local"):
            raise ValueError(f"unknown search {self.search!r}; choose grid, coarse_to_fine or coarse_to_fine_local")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be positive or None")

    @property
    def needs_grads(self) -> bool:
        return self.metric == "hessian" and self.rounds > 0

    def replace(self, **changes: Any) -> "PTQConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
