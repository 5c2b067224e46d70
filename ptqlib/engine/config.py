"""What to quantize and how to calibrate it: one frozen dataclass. Presets live in ``methods.py``.

Each field carries one short line of help (``dataclasses.fields(PTQConfig)[i].metadata["help"]``),
which the command line shows; every field's type is checked in one place, so a typo in a
``Literal`` choice fails at construction, naming the allowed values.
"""
from __future__ import annotations

import functools
import math
import types
import typing
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any, Literal

from ..core.metrics import MetricName

__all__ = ["PTQConfig", "GradLoss", "Granularity", "ActivationQuantizer", "config_fields", "choices"]

Granularity = Literal["tensor", "channel"]
#: Quantizer kinds for post-softmax and post-GELU values (``ptqlib.core.quant``): uniform,
#: twin-uniform, and the logarithmic log2, log√2 and AdaLog (shifted by GELU's minimum for GELU);
#: post-GELU only, uniform_shifted (asymmetric, its zero point at GELU's minimum).
ActivationQuantizer = Literal["uniform", "uniform_shifted", "twin", "log2", "log_sqrt2", "adalog"]
GradLoss = Literal["pseudo_label_ce", "label_ce", "official_kl"]


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PTQConfig:
    """A complete post-training quantization recipe (PTQ4ViT, Sec. 3-4).

    The Hessian-guided metric scores a candidate by ``E[(∂L/∂O)² (O - Ô)²]``; ``grad_loss`` says
    which loss ``L``, ``grad_norm`` how its gradients are normalised, and ``row_select`` /
    ``outlier_rows`` which rows (tokens) of ``O`` are scored. Candidates are the scales
    ``(α + i(β-α)/n)·Δ₀``, i = 0..n, around the min-max step ``Δ₀``; ``coarse_to_fine`` scores every
    ``stride``-th candidate, then every candidate within ``stride`` of the ``refine`` best.
    Why the defaults are what they are, measured, is in FINDINGS.md.
    """

    method: str = _f("custom", "name recorded with results")
    # quantizers
    w_bits: int = _f(8, "bit-width of weights (2..16)")
    a_bits: int = _f(8, "bit-width of activations: Linear inputs and both matmul operands (2..16)")
    twin_softmax: bool = _f(False, "post-softmax values use the twin-uniform quantizer")
    twin_gelu: bool = _f(False, "post-GELU values (fc2 inputs) use the twin-uniform quantizer")
    softmax_quantizer: ActivationQuantizer | None = _f(
        None, "post-softmax quantizer kind (None: twin if twin_softmax, else uniform)")
    gelu_quantizer: ActivationQuantizer | None = _f(
        None, "post-GELU (fc2 input) quantizer kind (None: twin if twin_gelu, else uniform)")
    softmax_unsigned: bool = _f(True, "without twin softmax: all k bits for [0, 1] (the official BasePTQ signs them)")
    weight_granularity: Granularity = _f("tensor", "Linear weight scales: tensor (q, k, v apart) or channel")
    matmul_granularity: Literal["tensor", "head"] = _f("tensor", "matmul operand scales: one, or one per head")
    reparam: bool = _f(False, "RepQ-ViT: fold per-channel post-LayerNorm scales into the LayerNorms and qkv/fc1 weights first")
    weight_correction: Literal["none", "ridge"] = _f(
        "none", "ERQ: ridge-correct each Linear's float weights for its quantized input before quantizing them")
    ridge_rho: float = _f(1.0, "weight_correction: ridge strength, relative to the mean diagonal of X̂ᵀX̂")
    # calibration
    metric: MetricName = _f("hessian", "distance that scores candidate scales")
    grad_loss: GradLoss = _f("pseudo_label_ce", "loss behind the hessian metric (official_kl: the official, vanishing one)")
    grad_norm: Literal["none", "image", "channel"] = _f("none", "gradient normalisation: per image, per channel, or raw")
    alpha: float = _f(0.01, "smallest candidate, as a multiple of the min-max step")
    beta: float = _f(1.2, "largest candidate, as a multiple of the min-max step")
    n: int = _f(100, "candidates between alpha and beta (n + 1 points)")
    rounds: int = _f(3, "alternating weight / input search rounds; 0 = min-max scales")
    search: Literal["grid", "coarse_to_fine", "coarse_to_fine_local"] = _f("coarse_to_fine", "candidate search strategy")
    stride: int = _f(6, "coarse_to_fine: score every stride-th candidate first")
    refine: int = _f(2, "coarse_to_fine: refine around this many best coarse points")
    max_tokens: int | None = _f(1024, "rows (tokens) per layer that score candidates; None = all")
    row_select: Literal["fisher", "random"] = _f("fisher", "which rows: largest gradient energy, or a seeded sample")
    outlier_rows: float = _f(0.125, "share of the fisher rows taken by the largest inputs (massive activations)")
    tie_tolerance: float = _f(0.0, "scores within this share of the best tie; the smallest scale wins (0: argmin)")
    score_dtype: Literal["float32", "float64"] = _f("float32", "dtype in which the metric scores candidates")
    order: Literal["parallel", "sequential"] = _f("parallel", "layers see float inputs, or the quantized blocks before them")
    chunks: int = _f(1, "capture passes (more passes, less memory)")
    seed: int = _f(0, "seed of the random row sample")

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), _hints()[f.name])
        for name in ("w_bits", "a_bits"):
            if not 2 <= getattr(self, name) <= 16:
                raise ValueError(f"{name} must be an integer from 2 to 16, got {getattr(self, name)!r}")
        if self.rounds < 0 or self.n < 1 or self.chunks < 1 or self.stride < 2 or self.refine < 1:
            raise ValueError("rounds must be >= 0, n >= 1, chunks >= 1, stride >= 2 and refine >= 1")
        if not 0 < self.alpha <= self.beta:
            raise ValueError(f"need 0 < alpha <= beta, got alpha={self.alpha!r}, beta={self.beta!r}")
        if not 0.0 <= self.tie_tolerance < 1.0:
            raise ValueError(f"tie_tolerance must be a share from 0 (exact argmin) below 1, got {self.tie_tolerance!r}")
        if self.weight_correction != "none" and self.rounds == 0:
            raise ValueError("weight_correction corrects weights for the searched input scales; it needs rounds >= 1")
        if not (self.ridge_rho > 0 and math.isfinite(self.ridge_rho)):
            raise ValueError(f"ridge_rho must be positive and finite, got {self.ridge_rho!r}")
        if not 0.0 <= self.outlier_rows <= 1.0:
            raise ValueError(f"outlier_rows must be a share from 0 to 1, got {self.outlier_rows!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be positive or None")
        if self.softmax_quantizer == "uniform_shifted":
            raise ValueError("softmax_quantizer='uniform_shifted' is for post-GELU values; post-softmax values are "
                             "non-negative: use 'uniform' (unsigned with softmax_unsigned=True)")
        for flag, kind in (("twin_softmax", "softmax_quantizer"), ("twin_gelu", "gelu_quantizer")):
            if getattr(self, flag) and getattr(self, kind) not in (None, "twin"):
                raise ValueError(f"{flag}=True asks for the twin quantizer but {kind}={getattr(self, kind)!r}; "
                                 f"set {flag}=False to use {getattr(self, kind)!r}")

    @property
    def needs_grads(self) -> bool:
        return self.metric == "hessian" and self.rounds > 0

    def replace(self, **changes: Any) -> "PTQConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(PTQConfig)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """ValueError unless ``value`` fits ``hint`` (a Literal, bool, int, float, str or ``X | None``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        _check_type(name, value, next(a for a in args if a is not type(None)))
        return
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[hint](value)
    if not ok:
        raise ValueError(f"{name} must be {hint.__name__}, got {value!r}")


def config_fields() -> list[tuple[Field, Any]]:
    """Every field of :class:`PTQConfig` with its resolved type (for command lines and forms)."""
    return [(f, _hints()[f.name]) for f in fields(PTQConfig)]


def choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal`` type (also inside ``X | None``), else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for a in typing.get_args(hint):
            found = choices(a)
            if found:
                return found
    return None
