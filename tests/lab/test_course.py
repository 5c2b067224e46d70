"""The exercises' checks (``ptqlib.lab.course``) and their hidden solutions (``ptqlib.lab.solutions``):
every solution passes its own check, typical wrong answers get the hint that fits them."""
from __future__ import annotations

import pytest
import torch

from ptqlib.core.quant import TwinSoftmaxQuantizer, minmax_step, twin_softmax_fake, uniform_fake
from ptqlib.errors import PtqlibError
from ptqlib.lab import course, solutions


def test_every_exercise_has_a_solution_that_passes_its_check():
    assert set(course.EXERCISES) == set(solutions.SOLUTIONS)
    answers = {"00-a": solutions.asymmetric_fake, "00-b": solutions.twin_levels_and_split(4),
               "00-c": solutions.rounding_mse_ratio()}
    for exercise_id, answer in answers.items():
        ok, message = course.grade(exercise_id, answer)
        assert ok and message.startswith("correct"), (exercise_id, message)


def test_check_prints_correct_or_a_hint(capsys):
    course.check("00-c", 16)
    course.check("00-c", 4)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "correct"
    assert out[1].startswith("not yet: ") and "Δ²/12" in out[1]


def test_unknown_exercise_is_an_error():
    with pytest.raises(PtqlibError, match="00-a"):
        course.check("99-z", 1)
    with pytest.raises(PtqlibError, match="00-a"):
        solutions.show("99-z")


def test_show_prints_the_solution_code(capsys):
    solutions.show("00-a")
    out = capsys.readouterr().out
    assert "def asymmetric_fake" in out and "zero_point" in out


# ----------------------------------------------------------------------------- 00-a


def _no_clamp(x, bits):
    lo, hi = float(x.min()), float(x.max())
    step = (hi - lo) / (2**bits - 1) / 2  # half the step and no clamp: twice the codes
    return torch.round(x / step) * step


def _no_zero_point(x, bits):
    lo, hi = float(x.min()), float(x.max())
    step = (hi - lo) / (2**bits - 1)
    return torch.clamp(torch.round((x - lo) / step), 0, 2**bits - 1) * step + lo


def _symmetric(x, bits):
    return uniform_fake(x, minmax_step(x.abs().max(), bits), bits)


def _unfinished(x, bits):
    raise NotImplementedError


@pytest.mark.parametrize("answer, hint", [
    (_unfinished, "write the function first"),
    (lambda x, bits: None, "returns None"),
    (lambda x, bits: x[:10], "shape"),
    (lambda x, bits: x * 1.0, "round"),
    (_no_clamp, "clamp"),
    (_no_zero_point, "zero point"),
    (_symmetric, "symmetric"),
    (lambda x, bits: 1 / 0, "ZeroDivisionError"),
    (solutions.asymmetric_fake(torch.ones(3), 4), "function itself"),
])
def test_asymmetric_quantizer_hints(answer, hint):
    ok, message = course.grade("00-a", answer)
    assert not ok and hint in message, message


def test_asymmetric_quantizer_compared_with_twin_gelu_on_given_values():
    values = torch.nn.functional.gelu(torch.randn(5000, generator=torch.Generator().manual_seed(1)) * 2)
    ok, message = course.grade("00-a", solutions.asymmetric_fake, values=values, bits=6)
    assert ok and "twin-uniform GELU, MSE-fitted" in message and "lowest:" in message


def test_asymmetric_solution_keeps_zero_and_uses_2_to_the_k_levels():
    x = torch.linspace(-0.17, 5.0, 1001)
    out = solutions.asymmetric_fake(torch.cat([x, torch.zeros(1)]), 4)
    assert out[-1] == 0 and torch.unique(out).numel() <= 16
    assert float((out[:-1] - x).abs().max()) <= (5.17 / 15) / 2 + 1e-6


# ----------------------------------------------------------------------------- 00-b


@pytest.mark.parametrize("answer, ok, hint", [
    ((8, 3), True, "correct"),
    ([8.0, 3.0], True, "correct"),
    ((16, 3), False, "chooses the range"),
    ((15, 3), False, "0 is in both ranges"),
    ((7, 3), False, "count code 0"),
    ((8, 4), False, "1/16"),
    ((8, 7), False, "coarse level"),
    ((8, 2.5), False, "two whole numbers"),
    (None, False, "two whole numbers"),
    ((8,), False, "two whole numbers"),
])
def test_twin_levels_and_split(answer, ok, hint):
    got, message = course.grade("00-b", answer)
    assert got is ok and hint in message, message


def test_twin_split_limit_is_where_the_quantizer_stays_monotone():
    """The solution's claim, measured: m <= k - 1 is monotone on a grid holding every tie point."""
    x = torch.linspace(0, 1, 2**12 + 1)
    drops = {m: int((twin_softmax_fake(x, 4, m).diff() < 0).sum()) for m in range(6)}
    assert all(drops[m] == 0 for m in range(4)) and drops[4] > 0 and drops[5] > 0
    assert TwinSoftmaxQuantizer(4).search_space()["m"].tolist() == [0, 1, 2, 3]
    levels, split = solutions.twin_levels_and_split(4)
    assert len(TwinSoftmaxQuantizer(4).set(m=2).level_groups()["fine range R1"]) == levels and split == 3


# ----------------------------------------------------------------------------- 00-c


@pytest.mark.parametrize("answer, ok, hint", [
    (16, True, "correct"),
    (16.8, True, "correct"),
    (1 / 16, False, "MSE(8-bit) / MSE(6-bit)"),
    (4, False, "ratio of the steps"),
    (2, False, "Δ²/12"),
    (None, False, "one positive number"),
    ("16", False, "one positive number"),
    (float("nan"), False, "one positive number"),
])
def test_mse_ratio(answer, ok, hint):
    got, message = course.grade("00-c", answer)
    assert got is ok and hint in message, message


def test_measured_rounding_ratio_is_near_the_theory():
    assert abs(solutions.rounding_mse_ratio() - (127 / 31) ** 2) < 0.5
