"""Exact tests and bootstrap intervals against hand-computed values and independent references."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ptqlib.core.stats import compare, difference_interval, mcnemar, sign_test, top1_interval, verdict


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k wins in n fair trials, summed by hand (symmetric: twice the smaller tail)."""
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("wins, losses, expected", [
    (3, 0, 0.25),                 # 2 · 1/8
    (10, 2, 158 / 4096),          # 2 · (1 + 12 + 66) / 2^12
    (5, 4, 1.0),                  # as balanced as 9 trials can be
    (0, 0, 1.0),                  # no discordant pairs: no evidence
    (0, 6, 2 / 64),
])
def test_sign_test_hand_values(wins: int, losses: int, expected: float) -> None:
    t = sign_test(wins, losses)
    assert t.p_value == pytest.approx(expected, rel=1e-12) and (t.wins, t.losses) == (wins, losses)


@pytest.mark.parametrize("k, n", [(7, 20), (30, 41), (50, 100), (1, 13)])
def test_sign_test_against_the_binomial_sum(k: int, n: int) -> None:
    assert sign_test(k, n - k).p_value == pytest.approx(_binomial_two_sided(k, n), rel=1e-9)


def test_mcnemar_counts_only_discordant_images() -> None:
    a = [1, 1, 1, 1, 0, 0, 1, 0]
    b = [1, 0, 0, 0, 0, 1, 1, 0]
    # concordant: images 0, 4, 6, 7; A alone right: 1, 2, 3; B alone right: 5
    t = mcnemar(a, b)
    assert (t.wins, t.losses) == (3, 1) and t.p_value == pytest.approx(2 * (1 + 4) / 16)
    with pytest.raises(ValueError, match="same images"):
        mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="per-image outcomes"):
        mcnemar([1, 2], [1, 0])


def test_top1_interval_matches_the_normal_approximation_at_1300_images() -> None:
    rng = np.random.default_rng(1)
    correct = rng.random(1300) < 0.8
    iv = top1_interval(correct)
    p = correct.mean()
    se = 100 * math.sqrt(p * (1 - p) / correct.size)   # about 1.1 points
    assert iv.estimate == pytest.approx(100 * p)
    assert iv.low < iv.estimate < iv.high
    assert (iv.high - iv.low) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_difference_interval_is_paired() -> None:
    rng = np.random.default_rng(2)
    a = rng.random(1300) < 0.8
    b = a.copy()
    flip = rng.choice(1300, 26, replace=False)   # B loses 26 images A gets right, gains none where A is right
    b[flip] = False
    iv = difference_interval(a, b)
    assert iv.estimate == pytest.approx(100 * (a.sum() - b.sum()) / 1300)
    # paired: the spread comes from 26 discordant images, far narrower than two independent top-1s (±3 points)
    assert 0 < iv.low < iv.estimate < iv.high < 4


def test_constant_outcomes_give_a_point_interval() -> None:
    iv = top1_interval([True] * 10)
    assert (iv.estimate, iv.low, iv.high) == (100.0, 100.0, 100.0)
    d = difference_interval([1, 0, 1], [1, 0, 1])
    assert (d.estimate, d.low, d.high) == (0.0, 0.0, 0.0)


def test_verdicts() -> None:
    assert verdict(1.2, 0.001) == "holds" and verdict(-1.2, 0.001) == "fails"
    assert verdict(1.2, 0.05) == "inconclusive"  # p >= 0.05
    assert verdict(-0.85, 0.001, expect=-1) == "holds"
    with pytest.raises(ValueError):
        verdict(1.0, 0.01, expect=0)


def test_compare_one_claim() -> None:
    a = np.array([1] * 80 + [0] * 20, dtype=bool)
    b = a.copy()
    b[:12] = False          # B loses 12 images; A loses none: p = 2 / 2^12
    c = compare(a, b)
    assert c.difference.estimate == pytest.approx(12.0)
    assert (c.test.wins, c.test.losses) == (12, 0) and c.test.p_value == pytest.approx(2 / 4096)
    assert c.verdict == "holds" and c.row()["verdict"] == "holds"
    assert compare(b, a).verdict == "fails"


def test_within_margin_hand_values() -> None:
    """"A at most 0.5 points below B": z = (100·d̄ + 0.5) / (100·s/√n) on the per-image differences."""
    from ptqlib.core.stats import within

    n = 1000
    a = np.ones(n, dtype=bool)
    b = np.ones(n, dtype=bool)
    a[:2] = False                      # B alone right on 2 images: -0.2 points
    r = within(a, b, margin=0.5)
    d = a.astype(float) - b.astype(float)
    z = (100 * d.mean() + 0.5) / (100 * d.std(ddof=1) / np.sqrt(n))
    assert r.difference.estimate == pytest.approx(-0.2)
    assert r.test.p_value == pytest.approx(2 * (1 - __import__("scipy").stats.norm.cdf(abs(z))))
    assert (r.test.wins, r.test.losses) == (0, 2)
    assert r.verdict == ("holds" if r.test.p_value < 0.05 else "inconclusive")
    a[:20] = False                     # 2 points below: the claim fails
    assert within(a, b, margin=0.5).verdict == "fails"
    with pytest.raises(ValueError, match="margin"):
        within(a, b, margin=-1)
