"""Statistics for comparing quantized models on the same images: exact tests and bootstrap intervals.

Two methods evaluated on the same ``n`` images give paired outcomes (each image right or wrong
under each), so their difference is tested on the *discordant* images only:

* :func:`mcnemar` — exact McNemar test: of the ``b + c`` images exactly one method gets right,
  ``b`` favour the first; under "no difference" ``b ~ Binomial(b + c, 1/2)``;
* :func:`sign_test` — the same exact binomial test for any count of wins against losses
  (e.g. per-layer picks closer to / farther from an optimum; ties are left out);
* :func:`top1_interval`, :func:`difference_interval` — bootstrap 95 % intervals (BCa) for a top-1
  and for a paired difference of two top-1s, in points;
* :func:`within` — a claim that A loses at most ``margin`` points against B (e.g. "less than 0.5
  points below float"): a z-test of the mean per-image difference against ``-margin``;
* :func:`compare` — all of it for one claim, with a verdict: ``holds`` (p < 0.05, effect in the
  claimed direction), ``fails`` (p < 0.05, the other way) or ``inconclusive``.

At 1300 images a top-1 near 80 % has a standard error of ``sqrt(0.8 · 0.2 / 1300) = 1.1`` points,
and one image is 0.077 points: differences of a point or two need the paired test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "Interval", "Test", "Comparison", "mcnemar", "sign_test", "top1_interval",
           "difference_interval", "compare", "verdict", "within"]

#: Significance level of every verdict.
ALPHA = 0.05
Verdict = Literal["holds", "fails", "inconclusive"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (same unit: percentage points)."""

    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class Test:
    """An exact two-sided binomial test of ``wins`` against ``losses`` (ties left out)."""

    wins: int
    losses: int
    p_value: float


@dataclass(frozen=True)
class Comparison:
    """Method A against method B on the same images, for a claim that A is better (``expect=+1``)
    or worse (``-1``) than B."""

    difference: Interval  # top-1 of A minus top-1 of B, points
    test: Test  # McNemar: wins = images only A gets right, losses = images only B gets right
    verdict: Verdict

    def row(self) -> dict[str, float | int | str]:
        """A flat record for a table."""
        return {"effect": round(self.difference.estimate, 2), "ci_low": round(self.difference.low, 2),
                "ci_high": round(self.difference.high, 2), "only_a": self.test.wins, "only_b": self.test.losses,
                "p_value": self.test.p_value, "verdict": self.verdict}


def _outcomes(correct: Sequence[bool] | np.ndarray, name: str = "correct") -> np.ndarray:
    a = np.asarray(correct)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence of per-image outcomes, got shape {a.shape}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold per-image outcomes (True/False or 1/0)")
    return a.astype(bool)


def sign_test(wins: int, losses: int) -> Test:
    """Exact two-sided binomial test of ``wins`` against ``losses`` under p = 1/2.

    >>> sign_test(3, 0).p_value                 # 2 · (1/2)^3
    0.25
    >>> round(sign_test(10, 2).p_value, 5)      # 2 · (1 + 12 + 66) / 2^12
    0.03857
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be >= 0, got {wins} and {losses}")
    n = wins + losses
    p = 1.0 if n == 0 else float(stats.binomtest(wins, n, 0.5).pvalue)
    return Test(int(wins), int(losses), min(p, 1.0))


def mcnemar(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> Test:
    """Exact McNemar test of two methods' per-image outcomes on the same images.

    >>> mcnemar([1, 1, 1, 0, 1], [0, 0, 0, 0, 1])   # A alone right on 3 images, B alone on none
    Test(wins=3, losses=0, p_value=0.25)
    """
    a, b = _outcomes(correct_a, "correct_a"), _outcomes(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same images: {a.size} against {b.size}")
    return sign_test(int((a & ~b).sum()), int((~a & b).sum()))


def _mean_interval(values: np.ndarray, confidence: float, resamples: int, seed: int) -> Interval:
    """100 × the mean of per-image values, with a bootstrap (BCa) interval over the images."""
    estimate = 100 * float(values.mean())
    if np.all(values == values[0]):  # no spread (scipy's BCa would divide by zero)
        return Interval(estimate, estimate, estimate, confidence)
    ci = stats.bootstrap((values,), lambda x, axis=-1: 100 * x.mean(axis=axis), vectorized=True,
                         confidence_level=confidence, n_resamples=resamples, method="BCa",
                         random_state=np.random.default_rng(seed)).confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), confidence)


def top1_interval(correct: Sequence[bool] | np.ndarray, *, confidence: float = 0.95, resamples: int = 4999,
                  seed: int = 0) -> Interval:
    """Top-1 in percent with a bootstrap (BCa) interval over the images."""
    return _mean_interval(_outcomes(correct).astype(float), confidence, resamples, seed)


def difference_interval(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, *,
                        confidence: float = 0.95, resamples: int = 4999, seed: int = 0) -> Interval:
    """Top-1 of A minus top-1 of B in points, with a paired bootstrap (BCa) interval: the images
    are resampled together, i.e. the per-image differences ``a - b`` (each -1, 0 or +1)."""
    a, b = _outcomes(correct_a, "correct_a").astype(float), _outcomes(correct_b, "correct_b").astype(float)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same images: {a.size} against {b.size}")
    return _mean_interval(a - b, confidence, resamples, seed)


def verdict(effect: float, p_value: float, expect: int = 1, alpha: float = ALPHA) -> Verdict:
    """``holds`` if significant in the claimed direction (``expect`` = +1: A better, -1: A worse),
    ``fails`` if significant the other way, else ``inconclusive``.

    >>> verdict(1.5, 0.01), verdict(-0.9, 0.01), verdict(1.5, 0.2), verdict(-0.9, 0.01, expect=-1)
    ('holds', 'fails', 'inconclusive', 'holds')
    """
    if expect not in (1, -1):
        raise ValueError(f"expect must be +1 (A better) or -1 (A worse), got {expect!r}")
    if p_value >= alpha or effect == 0:
        return "inconclusive"
    return "holds" if (effect > 0) == (expect > 0) else "fails"


def compare(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, *, expect: int = 1,
            confidence: float = 0.95, seed: int = 0) -> Comparison:
    """Paired comparison of two methods on the same images: difference, interval, McNemar, verdict."""
    diff = difference_interval(correct_a, correct_b, confidence=confidence, seed=seed)
    test = mcnemar(correct_a, correct_b)
    return Comparison(diff, test, verdict(diff.estimate, test.p_value, expect))


def within(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray, margin: float, *,
           confidence: float = 0.95, seed: int = 0) -> Comparison:
    """The claim "A is at most ``margin`` points below B" on the same images.

    The per-image differences ``d = a - b`` (each -1, 0 or +1) have mean ``d̄`` and standard error
    ``s / √n``; ``z = (100 d̄ + margin) / (100 s / √n)`` tests ``d̄ = -margin`` two-sided. The
    verdict is ``holds`` when p < 0.05 and the difference lies above ``-margin``, ``fails`` when
    p < 0.05 and below, else ``inconclusive``; the interval is :func:`difference_interval`'s.
    ``test.wins`` / ``test.losses`` count the images only A / only B gets right.

    >>> a = [1] * 95 + [0] * 5
    >>> b = [1] * 100
    >>> r = within(a, b, margin=0.5)          # 5 points lost, se = 100·sqrt(0.05·0.95/99) = 2.19
    >>> round(r.difference.estimate, 2), round(r.test.p_value, 3), r.verdict
    (-5.0, 0.04, 'fails')
    """
    a, b = _outcomes(correct_a, "correct_a").astype(float), _outcomes(correct_b, "correct_b").astype(float)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same images: {a.size} against {b.size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0 points, got {margin!r}")
    d = a - b
    diff = difference_interval(a, b, confidence=confidence, seed=seed)
    se = 100 * float(d.std(ddof=1)) / np.sqrt(d.size) if d.size > 1 else 0.0
    gap = diff.estimate + margin
    if se == 0:
        p = 1.0 if gap == 0 else 0.0
    else:
        p = float(2 * stats.norm.sf(abs(gap) / se))
    test = Test(int((a > b).sum()), int((a < b).sum()), min(p, 1.0))
    return Comparison(diff, test, verdict(gap, test.p_value, 1))
