"""Solutions of the course notebooks' exercises, hidden until asked for.

``show("00-a")`` prints the solution of exercise a of notebook 00 (its source code, with the
reasoning in the docstring); :func:`ptqlib.lab.course.check` grades an answer without showing one.
Each solution is a plain function, so the tests can hold it to its own check.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor

from ..errors import PtqlibError

__all__ = ["SOLUTIONS", "asymmetric_fake", "twin_levels_and_split", "rounding_mse_ratio", "show"]


def asymmetric_fake(x: Tensor, bits: int) -> Tensor:
    """00-a: an asymmetric (affine) min-max uniform quantizer.

    The 2^k levels span [min, max] (step Δ = (max - min) / (2^k - 1)); the zero point z is the
    code of 0, rounded to an integer so that 0 stays exactly 0 (zero padding, ReLU zeros).
    Codes q = clamp(round(x / Δ) + z, 0, 2^k - 1); values (q - z)·Δ.

    Post-GELU values lie in [-0.17, max]: the asymmetric grid spends no codes on negatives below
    -0.17, but its one step Δ ≈ max / 2^k is far coarser than the negative tail needs. The twin
    quantizer gives the negatives their own step Δp / 2^m and wins on a trained ViT.
    """
    lo, hi = float(x.min()), float(x.max())
    step = max(hi - lo, 1e-12) / (2**bits - 1)
    zero_point = round(-lo / step)
    codes = torch.clamp(torch.round(x / step) + zero_point, 0, 2**bits - 1)
    return (codes - zero_point) * step


def twin_levels_and_split(bits: int = 4) -> tuple[int, int]:
    """00-b: (levels per range, largest split m) of a k-bit post-softmax twin quantizer.

    One bit picks the range, the other k - 1 bits are the magnitude: 2^(k-1) levels per range
    (codes 0..2^(k-1) - 1; 0 is in both ranges, so 2^k - 1 distinct values in all).
    The fine range R1 = [0, 2^(k-1)·Δ1) = [0, 2^-m) must end on a coarse level, a multiple of
    Δ2 = 2^-(k-1): true for m <= k - 1. At m = k it ends halfway between the coarse levels 0 and Δ2
    (there x = 2^-m rounds down to 0, below the largest fine level), and beyond, a whole interval
    of values rounds to 0: the quantizer stops being monotone. Check it:
    ``TwinSoftmaxQuantizer(4).search_space()["m"]`` and ``twin_softmax_fake`` on a fine grid.
    """
    return 2 ** (bits - 1), bits - 1


def rounding_mse_ratio(high: int = 8, low: int = 6, samples: int = 100_000, seed: int = 0) -> float:
    """00-c: MSE(low bits) / MSE(high bits) of min-max uniform quantization (rounding error only).

    Without clipping the error is uniform on [-Δ/2, Δ/2], so MSE = Δ²/12. Two bits fewer make Δ
    about 4 times larger, so the MSE about 16 times larger: exactly ((2^(h-1) - 1) / (2^(l-1) - 1))²
    = (127 / 31)² ≈ 16.8 for the signed min-max step max|x| / (2^(k-1) - 1). Measured here:
    """
    from ..core.quant import minmax_step, uniform_fake

    x = torch.randn(samples, generator=torch.Generator().manual_seed(seed))

    def mse(bits: int) -> float:
        return float((uniform_fake(x, minmax_step(x.abs().max(), bits), bits) - x).double().square().mean())

    return mse(low) / mse(high)


#: The solution of every exercise, by id (``<notebook>-<letter>``).
SOLUTIONS: dict[str, Callable] = {
    "00-a": asymmetric_fake,
    "00-b": twin_levels_and_split,
    "00-c": rounding_mse_ratio,
}


def show(exercise_id: str) -> None:
    """Print the solution of ``exercise_id`` (e.g. ``"00-a"``): its code and the reasoning."""
    if exercise_id not in SOLUTIONS:
        raise PtqlibError(f"no exercise {exercise_id!r}; the exercises are {', '.join(SOLUTIONS)}")
    print(f"# solution of exercise {exercise_id}\n")
    print(inspect.getsource(SOLUTIONS[exercise_id]))
