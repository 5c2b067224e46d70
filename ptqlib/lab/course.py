"""Checks for the course notebooks' exercises: ``check("00-c", 16)`` prints ``correct`` or
``not yet: <hint>``, never the solution (``ptqlib.lab.solutions.show`` prints that when asked).

* :func:`check` — print the verdict on an answer;
* :func:`grade` — the same verdict as ``(ok, message)``, for code and tests.

Exercises (ids ``<notebook>-<letter>``; :data:`EXERCISES` words them):

* ``00-a`` — answer: a function ``f(x, bits)`` returning ``x`` fake-quantized by an asymmetric
  min-max uniform quantizer; with ``values=...`` the verdict also compares its MSE there with the
  twin-uniform GELU quantizer's (``bits=6`` unless given).
* ``00-b`` — answer: ``(levels per range, largest split m)`` of a 4-bit post-softmax twin quantizer.
* ``00-c`` — answer: the predicted ratio MSE(6-bit) / MSE(8-bit) of the rounding error.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable

import torch
from torch import Tensor

from ..core.quant import TwinGeluQuantizer, minmax_step, uniform_fake
from ..errors import PtqlibError
from . import solutions
from .fitting import fit_twin_gelu

__all__ = ["EXERCISES", "grade", "check"]

#: Every exercise, by id: what is asked, in one line.
EXERCISES = {
    "00-a": "an asymmetric min-max uniform quantizer f(x, bits); then its MSE on post-GELU values vs twin-uniform GELU",
    "00-b": "(levels per range, largest split m) of a 4-bit post-softmax twin-uniform quantizer",
    "00-c": "the ratio MSE(6-bit) / MSE(8-bit) of the rounding error",
}


def _mse(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).square().mean())


def _test_values(seed: int = 0) -> Tensor:
    """Post-GELU-like values with an exact 0 in them: GELU of a Gaussian, a few outliers."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.gelu(torch.randn(4000, generator=gen) * 1.5)
    x[:8] = torch.linspace(4.0, 9.0, 8)
    x[8] = 0.0
    return x


def _grade_asymmetric(answer: Any, values: Tensor | None = None, bits: int = 6) -> tuple[bool, str]:
    if not callable(answer):
        return False, "pass your function itself (e.g. check('00-a', asymmetric_fake)), not its result"
    x = _test_values()
    for k in (4, 6):
        try:
            out = answer(x.clone(), k)
        except NotImplementedError:
            return False, "write the function first (it still raises NotImplementedError)"
        except Exception as exc:  # the student's code: any error is a hint, not a crash
            return False, f"your function raised {type(exc).__name__}: {exc}"
        if out is None:
            return False, "your function returns None; return the fake-quantized tensor (same shape as x)"
        try:
            out = torch.as_tensor(out).double()
        except Exception:
            return False, f"your function returned a {type(out).__name__}; return a tensor"
        if out.shape != x.shape:
            return False, f"the output has shape {tuple(out.shape)}, the input {tuple(x.shape)}: quantize elementwise"
        distinct = torch.unique(out).numel()
        if distinct > 2**k:
            if distinct > 4 * 2**k:
                return False, f"{distinct} distinct values at {k} bits: round x / Δ to whole codes"
            return False, f"{distinct} distinct values at {k} bits, more than 2^{k}: clamp the codes to [0, 2^k − 1]"
        reference = solutions.asymmetric_fake(x, k)
        step = (float(x.max()) - float(x.min())) / (2**k - 1)
        if abs(float(out[8])) > 1e-6 * step:
            return False, (f"0 comes back as {float(out[8]):.4g}: round the zero point z = round(−min / Δ) "
                           "to an integer, so that 0 is one of the levels")
        ratio = _mse(out, x) / _mse(reference, x)
        if ratio > 1.05:
            symmetric = _mse(uniform_fake(x, minmax_step(x.abs().max(), k), k), x) / _mse(reference, x)
            if abs(ratio / symmetric - 1) < 0.05:
                return False, ("that is the symmetric quantizer's error: let the 2^k levels span [min, max], "
                               "Δ = (max − min) / (2^k − 1), with a zero point")
            return False, (f"its MSE at {k} bits is {ratio:.2f}× the asymmetric min-max quantizer's: "
                           "Δ = (max − min) / (2^k − 1), codes clamp(round(x / Δ) + z, 0, 2^k − 1), value (q − z)·Δ")
    message = "correct"
    if values is not None:
        v = values.detach().reshape(-1).float()
        mine = _mse(torch.as_tensor(answer(v.clone(), bits)), v)
        twin = TwinGeluQuantizer(bits)
        start = twin.minmax_params({"max": v.max(), "min": v.min(), "absmax": v.abs().max()})
        minmax = _mse(twin.fake_with(v, start), v)
        fitted = fit_twin_gelu(v, bits).mse(v)
        best = min((mine, "your asymmetric quantizer"), (minmax, "twin-uniform (min-max)"),
                   (fitted, "twin-uniform (MSE-fitted)"))[1]
        message += (f"\n  MSE on these {v.numel()} values at {bits} bits:"
                    f"\n    your asymmetric min-max quantizer  {mine:.3e}"
                    f"\n    twin-uniform GELU, min-max start    {minmax:.3e}  (Δp = max / {2 ** (bits - 1) - 1}, "
                    f"Δn = Δp / 2^{int(start['m'])})"
                    f"\n    twin-uniform GELU, MSE-fitted       {fitted:.3e}"
                    f"\n  lowest: {best}. Was that your prediction?")
    return True, message


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, Real) or not float(value).is_integer():
        return None
    return int(value)


def _grade_twin_levels(answer: Any) -> tuple[bool, str]:
    bits = 4
    levels, split = solutions.twin_levels_and_split(bits)
    try:
        given_levels, given_split = (_as_int(a) for a in answer)
    except (TypeError, ValueError):
        return False, "answer with two whole numbers: (levels per range, largest split m)"
    if given_levels is None or given_split is None:
        return False, "answer with two whole numbers: (levels per range, largest split m)"
    if given_levels != levels:
        hints = {2**bits: "16 is every code of 4 bits; one of the bits chooses the range",
                 2**bits - 1: "15 distinct values in all (0 is in both ranges); how many in each range?",
                 levels - 1: "count code 0 too: the magnitude bits give codes 0 … 2^(k−1) − 1"}
        return False, hints.get(given_levels, "a k-bit twin quantizer spends 1 bit on the range, k − 1 on the magnitude")
    if given_split != split:
        hint = ("the fine range R1 = [0, 2^(k−1)·Δ1) = [0, 2^−m) must end on a coarse level, a multiple of "
                f"Δ2 = 2^−(k−1) = 1/{2 ** (bits - 1)}")
        if given_split == split + 1:
            hint += f"; is 2^−{given_split} = 1/{2 ** given_split} a multiple of 1/{2 ** (bits - 1)}?"
        return False, hint
    return True, "correct"


def _grade_mse_ratio(answer: Any) -> tuple[bool, str]:
    if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(answer) or answer <= 0:
        return False, "answer with one positive number: how many times larger is the 6-bit MSE than the 8-bit one?"
    a = float(answer)
    if 14 <= a <= 19:
        return True, "correct"
    if 1 / 19 <= a <= 1 / 14:
        return False, "that is MSE(8-bit) / MSE(6-bit); the question asks how many times larger the 6-bit MSE is"
    if 3 <= a <= 5:
        return False, "about 4 is the ratio of the steps Δ; the rounding error's MSE is Δ²/12"
    return False, "the rounding error is uniform on [−Δ/2, Δ/2], so MSE = Δ²/12; how does Δ change from 8 to 6 bits?"


_GRADERS: dict[str, Callable[..., tuple[bool, str]]] = {
    "00-a": _grade_asymmetric,
    "00-b": _grade_twin_levels,
    "00-c": _grade_mse_ratio,
}


def grade(exercise_id: str, answer: Any, **context: Any) -> tuple[bool, str]:
    """``(True, "correct…")`` or ``(False, hint)`` for ``answer`` to ``exercise_id``;
    ``context`` passes extras (``values``, ``bits`` for ``00-a``)."""
    if exercise_id not in _GRADERS:
        raise PtqlibError(f"no exercise {exercise_id!r}; the exercises are {', '.join(_GRADERS)}")
    return _GRADERS[exercise_id](answer, **context)


def check(exercise_id: str, answer: Any, **context: Any) -> None:
    """Print ``correct`` or ``not yet: <hint>`` for ``answer`` to ``exercise_id`` (see :func:`grade`).

    >>> check("00-c", 16)
    correct
    >>> check("00-c", 4)
    not yet: about 4 is the ratio of the steps Δ; the rounding error's MSE is Δ²/12
    """
    ok, message = grade(exercise_id, answer, **context)
    print(message if ok else f"not yet: {message}")
