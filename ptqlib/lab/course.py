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
* ``01-a`` — answer: the head of block 0 with the heaviest post-softmax mass above 0.5
  (``acts=`` the captured activations; ``block=``, ``threshold=`` optional).
* ``01-b`` — answer: the blocks where twin-uniform loses to uniform on post-softmax values at
  ``bits=4`` (``acts=``).
* ``01-c`` — answer: the share in percent of a block's post-GELU values that an 8-bit min-max
  uniform quantizer rounds to 0 (``acts=``, ``block=`` the outlier block, ``bits=`` optional).
* ``03-a`` — answer: ``(start, end)`` of the values a 4-bit post-softmax twin quantizer with
  m = 5 (beyond the limit) decodes to 0 although they exceed its largest fine level.
* ``03-b`` — answer: how many times finer the 6-bit twin's fine step (m = 3) is than the 6-bit
  unsigned min-max uniform step on [0, 1].
* ``03-c`` — answer: the largest split m of a 4-bit post-GELU twin quantizer with Δp = 0.5 whose
  negative levels still reach GELU's minimum −0.17.
* ``05-a`` — answer: ``(smallest positive level, levels below 0.1)`` of a 4-bit log√2 quantizer
  with largest level 1.
* ``05-b`` — answer: ``(r, b)``, the fold's ratios and offsets for the two channels of
  ``solutions.FOLD_EXAMPLE`` (2 bits, common zero point at the centre).
* ``05-c`` — answer: the codes per octave q AdaLog picks for ``solutions.ADALOG_VALUES`` at 3 bits
  (``values=``, ``bits=`` to grade other values).
* ``02-a`` — answer: which of ``"mse"``, ``"l1"``, ``"cosine_token"`` picks the largest scale on
  post-softmax values (``sweep=`` the notebook's sweep; synthetic attention without it).
* ``02-b`` — answer: the exact two-sided sign test's p-value for ``wins=``, ``losses=`` (``ties=``
  optional, for the hint).
* ``02-c`` — answer: ``(hessian / mse, same pick?)`` on a layer whose gradient ∂L/∂O is 0.5 everywhere.
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
from .fitting import fit_quantizer, fit_twin_gelu

__all__ = ["EXERCISES", "ADALOG_VALUES", "FOLD_EXAMPLE", "grade", "check"]

#: Every exercise, by id: what is asked, in one line.
EXERCISES = {
    "00-a": "an asymmetric min-max uniform quantizer f(x, bits); then its MSE on post-GELU values vs twin-uniform GELU",
    "00-b": "(levels per range, largest split m) of a 4-bit post-softmax twin-uniform quantizer",
    "00-c": "the ratio MSE(6-bit) / MSE(8-bit) of the rounding error",
    "01-a": "the head of block 0 with the heaviest post-softmax mass above 0.5",
    "01-b": "the blocks where twin-uniform loses to uniform on post-softmax values at 4 bits",
    "01-c": "the share (%) of the outlier block's post-GELU values an 8-bit min-max uniform quantizer rounds to 0",
    "03-a": "the interval a 4-bit post-softmax twin quantizer with m = 5 wrongly sends to 0",
    "03-b": "how many times finer the 6-bit twin fine step (m = 3) is than the 6-bit uniform step on [0, 1]",
    "03-c": "the largest GELU split m (4 bits, Δp = 0.5) whose negative levels reach −0.17",
    "02-a": "which of mse, l1, cosine_token picks the largest scale on post-softmax values",
    "02-b": "the sign test's p-value for given wins and losses, by hand",
    "02-c": "hessian / mse when ∂L/∂O = 0.5 everywhere, and whether both pick the same scale",
    "04-a": "the exact McNemar p-value when 37 images favour A and 26 favour B",
    "04-b": "how many calibration draws bring the standard error of a mean top-1 to 0.5 points (given the draws' std)",
    "04-c": "the width of one top-1's interval over the width of the paired drop interval (PTQ4ViT W8A8)",
    "05-a": "the smallest positive level of a 4-bit log√2 quantizer on [0, 1], and how many levels lie below 0.1",
    "05-b": "RepQ-ViT's fold by hand: the ratios r_c and offsets b_c of two channels at 2 bits",
    "05-c": "the base 2^(1/q) AdaLog picks for eight given values at 3 bits (answer q)",
}

#: The values of exercise 05-c (3 bits, largest level 1).
ADALOG_VALUES = solutions.ADALOG_VALUES
#: The two channels of exercise 05-b: per-channel minima ``lo``, maxima ``hi``, and ``bits``.
FOLD_EXAMPLE = solutions.FOLD_EXAMPLE


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



# ----------------------------------------------------------------------------- notebook 01


def _need_acts(acts: Any, exercise_id: str) -> str | None:
    if acts is None:
        return f"pass the captured activations too: check({exercise_id!r}, answer, acts=acts)"
    return None


def _head_mass_shares(acts: Any, block: int, threshold: float) -> list[float]:
    shares = []
    for head in range(acts.num_heads):
        p = acts.values("post-softmax", block, head).double()
        shares.append(float(p[p > threshold].sum() / p.sum()))
    return shares


def _grade_heaviest_head(answer: Any, acts: Any = None, block: int = 0, threshold: float = 0.5) -> tuple[bool, str]:
    missing = _need_acts(acts, "01-a")
    if missing:
        return False, missing
    head = _as_int(answer)
    if head is None or not 0 <= head < acts.num_heads:
        return False, f"answer with one head number, 0 … {acts.num_heads - 1}"
    best = solutions.heaviest_head(acts, block, threshold)
    shares = _head_mass_shares(acts, block, threshold)
    table = ", ".join(f"head {h} {s:.1%}" for h, s in enumerate(shares))
    if head == best:
        return True, (f"correct: in block {block}, head {best} puts {shares[best]:.1%} of its attention mass on "
                      f"probabilities above {threshold} ({table})")
    return False, (f"head {head} of block {block} puts {shares[head]:.1%} of its attention mass on probabilities above "
                   f"{threshold}; another head puts more. Look at each head of block {block} in the activation explorer "
                   f"(layer post-softmax, head selector), or measure: p = acts.values('post-softmax', {block}, head); "
                   f"p[p > {threshold}].sum() / p.sum()")


def _twin_uniform_ratios(acts: Any, bits: int) -> dict[int, float]:
    ratios = {}
    for block in acts.blocks:
        p = acts.values("post-softmax", block)
        uniform = fit_quantizer(p, "uniform", bits, "softmax")
        twin = fit_quantizer(p, "twin-uniform", bits, "softmax")
        ratios[block] = twin.mse(p) / uniform.mse(p)
    return ratios


def _grade_twin_loses(answer: Any, acts: Any = None, bits: int = 4) -> tuple[bool, str]:
    missing = _need_acts(acts, "01-b")
    if missing:
        return False, missing
    fmt = "answer with the block numbers, e.g. {9, 10} (an empty set if twin-uniform never loses)"
    if answer is None or isinstance(answer, (str, bytes)) or _as_int(answer) is not None:
        return False, fmt
    try:
        given = {_as_int(b) for b in answer}
    except TypeError:
        return False, fmt
    if None in given:
        return False, fmt
    unknown = sorted(b for b in given if b not in acts.blocks)
    if unknown:
        return False, f"blocks {unknown} do not exist; the blocks are {acts.blocks[0]} … {acts.blocks[-1]}"
    ratios = _twin_uniform_ratios(acts, bits)
    lost = {b for b, r in ratios.items() if r > 1}
    table = "\n".join(f"    block {b:2d}: twin / uniform MSE {r:5.2f}{'  <- twin loses' if r > 1 else ''}"
                      for b, r in ratios.items())
    if given == lost:
        return True, f"correct: at {bits} bits twin-uniform loses in blocks {sorted(lost)}\n{table}"
    right = len(given & lost)
    return False, (f"{right} of your {len(given)} blocks are right; at {bits} bits twin-uniform loses in {len(lost)} "
                   f"block{'s' if len(lost) != 1 else ''} in all. In which blocks can the MSE-searched uniform step "
                   f"be as fine as the twin's fine step Δ1 = 2^−(k−1) / 2^m (m ≤ k − 1)? Where the attention is spread "
                   f"out, with hardly any probability near 1, so that the uniform grid may end early (the table of "
                   f"steps per block shows it at 6 bits)")


def _grade_outlier_zero_share(answer: Any, acts: Any = None, block: int | None = None, bits: int = 8) -> tuple[bool, str]:
    missing = _need_acts(acts, "01-c")
    if missing:
        return False, missing
    if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(answer) or not 0 <= answer <= 100:
        return False, "answer with one number, a percentage between 0 and 100"
    if block is None:  # the block with the largest post-GELU value
        block = max(acts.blocks, key=lambda b: float(acts.values("post-GELU", b).abs().max()))
    truth = solutions.outlier_zero_share(acts, block, bits)
    x = acts.values("post-GELU", block)
    top = 2 ** (bits - 1) - 1
    step = float(x.abs().max()) / top
    if abs(float(answer) - truth) <= 3:
        return True, (f"correct: {truth:.1f}% of block {block}'s post-GELU values round to 0 at {bits} bits "
                      f"(step {float(x.abs().max()):.1f} / {top} = {step:.2f}: every |x| < {step / 2:.2f} becomes 0)")
    if answer <= 1 and truth > 3:
        return False, "answer in percent (0–100), not as a fraction"
    direction = "higher" if truth > answer else "lower"
    return False, (f"{direction}. The signed min-max step is max|x| / (2^(k−1) − 1) = max|x| / {top}, and every |x| "
                   "below half a step rounds to 0: what share of the values is that small? (the outlier table "
                   "gives the block's largest value and its median unit's)")


# ----------------------------------------------------------------------------- notebook 03


def _two_numbers(answer: Any) -> tuple[float, float] | None:
    try:
        a, b = answer
        if any(isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) for v in (a, b)):
            return None
        return float(a), float(b)
    except (TypeError, ValueError):
        return None


def _grade_dead_zone(answer: Any) -> tuple[bool, str]:
    bits, m = 4, 5
    lo, hi = solutions.twin_dead_zone(bits, m)
    given = _two_numbers(answer)
    if given is None:
        return False, "answer with two numbers: (start, end) of the interval, e.g. (0.01, 0.02)"
    a, b = sorted(given)
    close = lambda u, v: abs(u - v) <= 0.02 * v  # noqa: E731
    if close(a, lo) and close(b, hi):
        return True, (f"correct: [{lo:g}, {hi:g}] = [1/{round(1 / lo)}, 1/{round(1 / hi)}] decodes to 0, while smaller "
                      f"values keep fine levels up to {(2 ** (bits - 1) - 1) * 2.0 ** -(bits - 1) / 2**m:g}")
    if a <= 1e-9:
        return False, (f"values near 0 are in the fine range and round normally; which values are larger than the fine "
                       f"range [0, 2^−m) = [0, 1/{2**m}), yet still round to 0?")
    if not close(a, lo):
        return False, (f"where does the fine range R1 = [0, 2^(k−1)·Δ1) end at m = {m}? Every value from there on "
                       "goes to the coarse range")
    return False, (f"in the coarse range the code is round(x / Δ2) with Δ2 = 2^−(k−1) = 1/{2 ** (bits - 1)}: up to which "
                   "x is that code 0?")


def _grade_fine_vs_uniform(answer: Any) -> tuple[bool, str]:
    bits, m = 6, 3
    truth = solutions.fine_step_vs_uniform(bits, m)
    if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(answer) or answer <= 0:
        return False, "answer with one positive number: the uniform step divided by the twin's fine step"
    a = float(answer)
    if abs(a / truth - 1) <= 0.05:
        return True, (f"correct: Δ = 1/{2 ** bits - 1} against Δ1 = 1/{2 ** (bits - 1) * 2 ** m}, "
                      f"a ratio of {truth:.2f} (about 2^(m−1), not 2^m)")
    if abs(a * truth - 1) <= 0.05:
        return False, "that is Δ1 / Δ; the question asks how many times finer Δ1 is, Δ / Δ1 (a number above 1)"
    if abs(a - 2**m) < 0.5:
        return False, (f"2^m = {2 ** m} is Δ2 / Δ1; but the coarse step Δ2 = 1/{2 ** (bits - 1)} is itself about twice "
                       f"the uniform step 1/{2 ** bits - 1}")
    return False, ("the unsigned min-max uniform step on [0, 1] is 1 / (2^k − 1); the twin's coarse step is "
                   "Δ2 = 2^−(k−1) and its fine step Δ1 = Δ2 / 2^m")


def _grade_gelu_split(answer: Any) -> tuple[bool, str]:
    bits, step = 4, 0.5
    truth = solutions.largest_gelu_split(bits, step)
    given = _as_int(answer)
    if given is None:
        return False, "answer with one whole number m"
    top = 2 ** (bits - 1) - 1
    lowest = lambda m: -top * step / 2**m  # noqa: E731
    if given == truth:
        return True, (f"correct: at m = {truth} the most negative level is {lowest(truth):.3f} (step {step / 2 ** truth:g}); "
                      f"at m = {truth + 1} it would be {lowest(truth + 1):.3f}, and [−0.17, {lowest(truth + 1):.2f}) "
                      "would be clipped")
    if given < truth:
        return False, (f"at m = {given} the most negative level is {lowest(given):.3f}: it reaches −0.17, but a larger m "
                       "(a finer step) still does")
    return False, (f"the most negative level is −(2^(k−1) − 1)·Δp / 2^m = −{top}·{step} / 2^m; at m = {given} that is "
                   f"{lowest(given):.3f}, above −0.17: the values below it would be clipped")


# ----------------------------------------------------------------------------- notebook 02


def _grade_largest_scale(answer: Any, sweep: Any = None) -> tuple[bool, str]:
    choices = solutions.POST_SOFTMAX_CHOICES
    name = answer.strip().lower().replace(" ", "_") if isinstance(answer, str) else None
    if name not in choices:
        return False, f"answer with one metric name: {', '.join(repr(c) for c in choices)}"
    picks = solutions.post_softmax_picks(sweep)
    mean_log = {m: sum(math.log(p[m]) for p in picks.values()) / len(picks) for m in choices}
    table = "\n".join(f"    {bits}-bit: " + ", ".join(f"{m} {p[m]:.3g}" for m in choices) for bits, p in picks.items())
    if mean_log[name] >= max(mean_log.values()) - 1e-12:
        return True, f"correct: {name} keeps the largest scale (× the min-max scale, post-softmax values):\n{table}"
    hints = {"l1": "L1 grows linearly with each error, MSE with its square: which of the two pays more for clipping "
                   "the few large probabilities?",
             "cosine_token": "the per-token cosine gives every query row the same weight, the rows with thinly spread "
                             "attention (all probabilities small) too: what do those rows need, a fine or a coarse step?",
             "mse": "MSE squares each error"}
    return False, hints[name]


def _grade_sign_test(answer: Any, wins: int | None = None, losses: int | None = None, ties: int = 0) -> tuple[bool, str]:
    from ..core.stats import sign_test

    if wins is None or losses is None:
        return False, "pass the counts too: check('02-b', p, wins=closer, losses=farther)"
    if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(answer):
        return False, "answer with one number, the p-value"
    if not 0 <= answer <= 1:
        return False, "a p-value is a probability, between 0 and 1"
    n = wins + losses
    truth = sign_test(wins, losses).p_value
    close = lambda a, b: abs(a - b) <= 0.02 * b + 1e-4  # noqa: E731  (p rounded to 2 significant digits)
    if close(float(answer), truth):
        need = next((w for w in range(n // 2 + 1, n + 1) if sign_test(w, n - w).p_value < 0.05), None)
        reach = (f"with {n} untied sweeps, p < 0.05 needs a split of {need}–{n - need} or more" if need is not None
                 else f"with {n} untied sweeps no split reaches p < 0.05")
        return True, f"correct: p = {truth:.4g} (stats.sign_test({wins}, {losses}).p_value); {reach}"
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    if close(float(answer), tail) and tail < truth:
        return False, "that is one tail; the test is two-sided (a lopsided split either way counts): double it, at most 1"
    if n and close(float(answer), math.comb(n, k) / 2**n):
        return False, ("that is the probability of exactly this split; the p-value adds every split at least as "
                       "lopsided, on both sides")
    if ties and any(close(float(answer), sign_test(w, n + ties - w).p_value) for w in (wins, wins + ties)):
        return False, "ties say nothing about which metric is closer: leave them out (n = wins + losses)"
    return False, ("under 'no difference' each untied sweep is a fair coin: p = 2 · Σ_{i ≤ min(w, l)} C(n, i) / 2^n "
                   "with n = w + l, at most 1")


def _grade_constant_gradient(answer: Any, c: float = 0.5) -> tuple[bool, str]:
    try:
        ratio, same = answer
    except (TypeError, ValueError):
        return False, "answer with two values: (hessian / mse, True or False: the same pick as MSE?)"
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not math.isfinite(ratio) or ratio <= 0:
        return False, "the first value is a positive number: hessian / mse for any candidate"
    if not isinstance(same, bool):
        return False, "the second value is True or False: does the Hessian-guided metric pick MSE's scale?"
    truth = c * c
    close = lambda a, b: abs(a - b) <= 0.01 * b  # noqa: E731
    if not close(float(ratio), truth):
        if close(float(ratio), c):
            return False, "the metric weights each squared error by the *square* of the gradient"
        if close(float(ratio), 1 / truth):
            return False, "that is mse / hessian; the question asks hessian / mse"
        return False, f"with ∂L/∂O = {c} everywhere, each term of E[(∂L/∂O)² (O − Ô)²] is {c}² · (O − Ô)²"
    if not same:
        return False, (f"every candidate's score is multiplied by the same positive factor {truth:g}: can that change "
                       "which candidate scores lowest?")
    return True, (f"correct: hessian = {truth:g} · MSE for every candidate, so both pick the same scale. A constant "
                  "gradient turns the Hessian-guided metric into MSE; only how ∂L/∂O varies across elements moves the "
                  "pick, never its overall size (the official KL weights are about 1e-10)")


def _grade_mcnemar(answer: Any) -> tuple[bool, str]:
    from ..core.stats import sign_test

    if answer is None:
        return False, "compute the p-value first (replace None): the exact binomial test of 37 against 26 at 1/2"
    if not isinstance(answer, Real):
        return False, "answer with the p-value, a number between 0 and 1"
    expected = sign_test(37, 26).p_value
    if abs(float(answer) - expected) <= 0.005:
        return True, f"correct: p = {expected:.3f} >= 0.05, so 'inconclusive' — 0.85 points on 1300 images is within the noise"
    if abs(float(answer) - expected / 2) <= 0.005:
        return False, "that is the one-sided p-value; the test is two-sided (double it)"
    return False, "use only the 37 + 26 discordant images: under 'no difference' the 37 ~ Binomial(63, 1/2)"


def _grade_draws(answer: Any, std: float | None = None) -> tuple[bool, str]:
    if std is None:
        return False, "pass the std you read: check('04-b', n, std=...)"
    if answer is None or not isinstance(answer, Real):
        return False, "answer with a number of draws (replace None)"
    need = math.ceil((float(std) / 0.5) ** 2)
    if abs(float(answer) - need) <= 1:
        return True, f"correct: std/sqrt(n) <= 0.5 needs n >= (std/0.5)^2 = {need}"
    if abs(float(answer) - float(std) / 0.5) <= 1:
        return False, "the standard error shrinks with the square root of n: square the ratio"
    return False, "the standard error of a mean of n draws is std / sqrt(n); solve std / sqrt(n) <= 0.5"


def _grade_paired_ratio(answer: Any, tables: Any = None) -> tuple[bool, str]:
    from ..io import experiments

    if tables is None:
        return False, "pass the tables: check('04-c', ratio, tables=t)"
    if answer is None or not isinstance(answer, Real):
        return False, "answer with the ratio of the two widths, a number (replace None)"
    row = experiments.main_table(tables).query("method == 'PTQ4ViT' and bits == 'W8A8'").iloc[0]
    lo, hi = (float(v) for v in row["95% CI"].split("–"))
    dlo, dhi = (float(v) for v in row["drop 95% CI"].split("–"))
    expected = (hi - lo) / (dhi - dlo)
    if abs(float(answer) - expected) <= 0.1 * expected:
        return True, (f"correct: {expected:.1f}x — both models get most images right or wrong together, and only "
                      "the images they disagree on vary the paired difference")
    if abs(float(answer) - 1 / expected) <= 0.1 / expected:
        return False, "upside down: the width of the top-1 interval over the width of the drop interval"
    return False, "widths are high minus low of the '95% CI' and 'drop 95% CI' columns of the PTQ4ViT W8A8 row"


# ----------------------------------------------------------------------------- notebook 05


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        return None
    return float(value)


def _grade_log_levels(answer: Any) -> tuple[bool, str]:
    fmt = "answer with two numbers: (smallest positive level, how many levels lie below 0.1, 0 included)"
    try:
        smallest, count = answer
    except (TypeError, ValueError):
        return False, fmt
    smallest, count = _number(smallest), _as_int(count)
    if smallest is None or count is None:
        return False, fmt
    true_smallest, true_count = solutions.log_sqrt2_levels(4, 0.1)
    close = lambda a, b: abs(a - b) <= 0.01 * b  # noqa: E731
    if not close(smallest, true_smallest):
        if close(smallest, 2 ** -7.5):
            return False, "the top code 2^k − 1 = 15 does not stand for 2^(−15/2): it means 0. Which code is the last positive one?"
        if close(smallest, 2.0 ** -15) or close(smallest, 2.0 ** -14):
            return False, "log√2 puts two codes in each octave: code c stands for 2^(−c/2), not 2^(−c)"
        if close(smallest, 1 / 15):
            return False, "that is the uniform step 1/15; the log√2 grid's levels are 2^(−c/2), c = 0 … 14"
        return False, "code c stands for 2^(−c/2) for c = 0 … 2^k − 2; the top code 2^k − 1 means 0"
    if count != true_count:
        if count == true_count - 1:
            return False, "count the level 0 too (the top code)"
        return False, "which codes c give 2^(−c/2) < 0.1? Solve c > 2·log2(10), then add the 0"
    return True, (f"correct: the smallest level is 2^−7 = {true_smallest:.4f} and {true_count} of the 16 levels "
                  "lie below 0.1; a 4-bit uniform grid on [0, 1] (step 1/15) has 2 there, the twin grid with "
                  "m = 3 has 7")


def _grade_fold(answer: Any) -> tuple[bool, str]:
    fmt = "answer with two pairs: ([r_0, r_1], [b_0, b_1])"
    try:
        r, b = ([float(x) for x in part] for part in answer)
    except (TypeError, ValueError):
        return False, fmt
    if len(r) != 2 or len(b) != 2 or not all(map(math.isfinite, r + b)):
        return False, fmt
    true_r, true_b = solutions.fold_by_hand()
    close = lambda a, t: all(abs(x - y) <= 1e-3 + 1e-3 * abs(y) for x, y in zip(a, t))  # noqa: E731
    if not close(r, true_r):
        if close(r, [1 / v for v in true_r]):
            return False, "upside down: r_c = s_c / s̃ (the channel's step over the common one)"
        return False, ("s_c = (max_c − min_c) / (2^k − 1) for each channel, s̃ their mean, r_c = s_c / s̃ "
                       "(the ranges are widened to hold 0 first; here they already do)")
    if not close(b, true_b):
        if close(b, [-v for v in true_b]):
            return False, "the sign: b_c = s̃ · (z̃ − z_c)"
        s_t = 2.0
        if close(b, [s_t * (1.5 - z) for z in (1, 2)]):
            return False, "ptqlib's common zero point is the centre z̃ = 2^(k−1) = 2, not the mean of the z_c"
        if close(b, [s_t * (2 - z) for z in (1, 5 / 3)]):
            return False, "round the zero points to whole codes: z_c = round(−min_c / s_c)"
        return False, "z_c = round(−min_c / s_c), z̃ = 2^(k−1), b_c = s̃ · (z̃ − z_c)"
    return True, (f"correct: r = {true_r}, b = {true_b}: the LayerNorm divides by r and subtracts b, the next "
                  "Linear's columns are multiplied by r and its bias gains W̃·b, so the model computes the same "
                  "function while both channels now share one step s̃ = 2")


def _grade_adalog_base(answer: Any, values: Any = None, bits: int = 3) -> tuple[bool, str]:
    from ..core.quant import ADALOG_Q, adalog_fake

    values = solutions.ADALOG_VALUES if values is None else values
    q = _number(answer)
    if q is None or q <= 0:
        return False, f"answer with q, the codes per octave (one of {', '.join(f'{v:g}' for v in ADALOG_Q)})"
    truth = solutions.adalog_pick(values, bits)
    v = torch.as_tensor(list(values), dtype=torch.float32) if not isinstance(values, Tensor) else values.float()
    mse = {c: float((adalog_fake(v, bits, 1.0, c) - v).double().square().mean()) for c in ADALOG_Q}
    if abs(q - truth) < 1e-9:
        return True, (f"correct: q = {truth:g}, base 2^(1/{truth:g}) = {2 ** (1 / truth):.3f}, MSE {mse[truth]:.2e} "
                      f"(log2 {mse[1.0]:.2e}, log√2 {mse[2.0]:.2e})")
    if abs(q - 2 ** (1 / truth)) < 0.01:
        return False, "that is the base b = 2^(1/q); answer with q, the codes per octave"
    if abs(q - 2 ** (-1 / truth)) < 0.01:
        return False, "that is the ratio between neighbouring levels, 2^(−1/q); answer with q"
    if q not in mse:
        return False, f"AdaLog searches q in {', '.join(f'{c:g}' for c in ADALOG_Q)}"
    return False, (f"q = {q:g} gives MSE {mse[q]:.2e}, another q less: the ratio between neighbouring levels is "
                   "2^(−1/q); compare it with the ratio between neighbouring values (and mind the top code, 0)")


_GRADERS: dict[str, Callable[..., tuple[bool, str]]] = {
    "00-a": _grade_asymmetric,
    "00-b": _grade_twin_levels,
    "00-c": _grade_mse_ratio,
    "01-a": _grade_heaviest_head,
    "01-b": _grade_twin_loses,
    "01-c": _grade_outlier_zero_share,
    "03-a": _grade_dead_zone,
    "03-b": _grade_fine_vs_uniform,
    "03-c": _grade_gelu_split,
    "02-a": _grade_largest_scale,
    "02-b": _grade_sign_test,
    "02-c": _grade_constant_gradient,
    "04-a": _grade_mcnemar,
    "04-b": _grade_draws,
    "04-c": _grade_paired_ratio,
    "05-a": _grade_log_levels,
    "05-b": _grade_fold,
    "05-c": _grade_adalog_base,
}


def grade(exercise_id: str, answer: Any, **context: Any) -> tuple[bool, str]:
    """``(True, "correct…")`` or ``(False, hint)`` for ``answer`` to ``exercise_id``;
    ``context`` passes extras (``values``, ``bits`` for ``00-a``; ``acts`` and more for ``01-*``)."""
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
