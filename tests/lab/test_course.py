"""The exercises' checks (``ptqlib.lab.course``) and their hidden solutions (``ptqlib.lab.solutions``):
every solution passes its own check, typical wrong answers get the hint that fits them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ptqlib.core.quant import TwinSoftmaxQuantizer, minmax_step, twin_softmax_fake, uniform_fake
from ptqlib.errors import PtqlibError
from ptqlib.lab import course, solutions

ROOT = Path(__file__).resolve().parents[2]


def test_every_exercise_has_a_solution_that_passes_its_check():
    assert set(course.EXERCISES) == set(solutions.SOLUTIONS)
    answers = {"00-a": solutions.asymmetric_fake, "00-b": solutions.twin_levels_and_split(4),
               "00-c": solutions.rounding_mse_ratio()}
    for exercise_id, answer in answers.items():
        ok, message = course.grade(exercise_id, answer)
        assert ok and message.startswith("correct"), (exercise_id, message)


def test_the_solutions_of_01_and_03_pass_their_checks(acts):
    """Notebook 01's exercises are graded on the captured activations (here the lab fixtures')."""
    answers = {"01-a": (solutions.heaviest_head(acts), {"acts": acts}),
               "01-b": (solutions.twin_loses_blocks(acts, 4), {"acts": acts, "bits": 4}),
               "01-c": (solutions.outlier_zero_share(acts, 1), {"acts": acts, "block": 1}),
               "03-a": (solutions.twin_dead_zone(), {}), "03-b": (solutions.fine_step_vs_uniform(), {}),
               "03-c": (solutions.largest_gelu_split(), {})}
    assert {e for e in course.EXERCISES if e[:2] in ("01", "03")} == set(answers)
    for exercise_id, (answer, context) in answers.items():
        ok, message = course.grade(exercise_id, answer, **context)
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


# ----------------------------------------------------------------------------- 01-a, 01-b, 01-c


def test_heaviest_head_hints(acts):
    best = solutions.heaviest_head(acts, 0)
    other = (best + 1) % acts.num_heads
    ok, message = course.grade("01-a", other, acts=acts)
    assert not ok and f"head {other} of block 0" in message and "another head puts more" in message
    for wrong in (None, 1.5, acts.num_heads, -1, "0"):
        ok, message = course.grade("01-a", wrong, acts=acts)
        assert not ok and "one head number" in message, (wrong, message)
    assert "acts=acts" in course.grade("01-a", best)[1]


def test_heaviest_head_is_the_head_with_most_mass_above_a_half():
    """Two heads: one spreads its attention evenly, one gives each row almost all to one token."""
    from ptqlib.lab.activations import Activations

    rows, n = 50, 10
    even = torch.full((rows, n), 1 / n)
    peaked = torch.full((rows, n), 0.1 / (n - 1))
    peaked[:, 0] = 0.9
    acts = Activations({("post-softmax", 0): torch.stack([even.reshape(-1), peaked.reshape(-1)])}, [0],
                       ["post-softmax"], 2, "toy", 1, rows)
    assert solutions.heaviest_head(acts, 0) == 1
    ok, message = course.grade("01-a", 1, acts=acts)
    assert ok and "head 1 puts 90.0%" in message and "head 0 0.0%" in message


def test_twin_loses_blocks_hints(acts):
    lost = solutions.twin_loses_blocks(acts, 4)
    ok, message = course.grade("01-b", set(lost), acts=acts, bits=4)
    assert ok and "twin / uniform MSE" in message
    wrong = set(acts.blocks) - set(lost) or {acts.blocks[0]}
    ok, message = course.grade("01-b", wrong, acts=acts, bits=4)
    assert not ok and "of your" in message and "fine step" in message
    for fmt in (None, 3, "9, 10", [9.5]):
        ok, message = course.grade("01-b", fmt, acts=acts)
        assert not ok and "block numbers" in message, (fmt, message)
    ok, message = course.grade("01-b", [99], acts=acts)
    assert not ok and "do not exist" in message


def test_outlier_zero_share_hints(acts):
    truth = solutions.outlier_zero_share(acts, 1, 8)
    assert 0 <= truth <= 100
    assert course.grade("01-c", truth + 2.5, acts=acts, block=1)[0]
    far = 0.0 if truth > 50 else 100.0
    ok, message = course.grade("01-c", far, acts=acts, block=1)
    assert not ok and ("higher" in message or "lower" in message) and "max|x| / 127" in message
    for wrong in (None, -1, 101, float("nan"), "97"):
        assert "percentage" in course.grade("01-c", wrong, acts=acts)[1]


def test_outlier_zero_share_counts_values_below_half_a_step():
    from ptqlib.lab.activations import Activations

    x = torch.cat([torch.full((99,), 0.4), torch.tensor([127.0])])  # step 1: 0.4 rounds to 0, 127 does not
    acts = Activations({("post-GELU", 0): x.view(1, -1)}, [0], ["post-GELU"], 1, "toy", 1, 1)
    assert solutions.outlier_zero_share(acts, 0, 8) == pytest.approx(99.0)
    ok, message = course.grade("01-c", 0.99, acts=acts)  # a fraction, not a percentage
    assert not ok and "percent" in message
    assert course.grade("01-c", 98, acts=acts)[0]  # block None: the block with the largest value


# ----------------------------------------------------------------------------- 03-a, 03-b, 03-c


def test_dead_zone_is_what_twin_softmax_sends_to_zero():
    x = torch.linspace(0, 1, 2**12 + 1)
    y = twin_softmax_fake(x, 4, 5)
    above_fine = x > y[x < 2.0**-5].max()
    dead = x[(y == 0) & above_fine]
    assert (float(dead.min()), float(dead.max())) == solutions.twin_dead_zone(4, 5) == (1 / 32, 1 / 16)


@pytest.mark.parametrize("answer, ok, hint", [
    ((1 / 32, 1 / 16), True, "correct"),
    ([0.0625, 0.03125], True, "correct"),
    ((0.0313, 0.0624), True, "correct"),
    ((0, 1 / 32), False, "fine range"),
    ((1 / 64, 1 / 16), False, "where does the fine range"),
    ((1 / 32, 1 / 8), False, "round(x / Δ2)"),
    (None, False, "two numbers"),
    ((1, 2, 3), False, "two numbers"),
    (("a", 1), False, "two numbers"),
])
def test_dead_zone_hints(answer, ok, hint):
    got, message = course.grade("03-a", answer)
    assert got is ok and hint in message, message


def test_fine_step_ratio_matches_the_quantizers():
    """The ratio of the steps ptqlib's quantizers use, at 4 bits (notebook 03's curves) and 6 bits."""
    for bits, m in ((4, 2), (6, 3)):
        uniform = 1 / (2**bits - 1)
        fine = TwinSoftmaxQuantizer(bits).set(m=m).steps()["fine"]
        assert solutions.fine_step_vs_uniform(bits, m) == pytest.approx(uniform / fine)
    assert solutions.fine_step_vs_uniform(6, 3) == pytest.approx(256 / 63)


@pytest.mark.parametrize("answer, ok, hint", [
    (4.06, True, "correct"),
    (4, True, "correct"),
    (256 / 63, True, "correct"),
    (8, False, "Δ2 / Δ1"),
    (63 / 256, False, "Δ1 / Δ"),
    (2, False, "1 / (2^k − 1)"),
    (None, False, "one positive number"),
    (-4, False, "one positive number"),
])
def test_fine_step_ratio_hints(answer, ok, hint):
    got, message = course.grade("03-b", answer)
    assert got is ok and hint in message, message


def test_largest_gelu_split_keeps_the_minimum_unclipped():
    from ptqlib.core.quant import twin_gelu_fake

    x = torch.tensor([-0.17])
    m = solutions.largest_gelu_split(4, 0.5)
    assert m == 4
    assert float((twin_gelu_fake(x, 4, torch.tensor(0.5), m) - x).abs()) <= 0.5 / 2**m / 2  # rounded, not clipped
    assert float((twin_gelu_fake(x, 4, torch.tensor(0.5), m + 1) - x).abs()) > 0.5 / 2 ** (m + 1) / 2  # clipped


@pytest.mark.parametrize("answer, ok, hint", [
    (4, True, "correct"),
    (4.0, True, "correct"),
    (3, False, "a larger m"),
    (5, False, "would be clipped"),
    (None, False, "one whole number"),
    (4.5, False, "one whole number"),
])
def test_largest_gelu_split_hints(answer, ok, hint):
    got, message = course.grade("03-c", answer)
    assert got is ok and hint in message, message


# ----------------------------------------------------------------------------- notebook 02


def _post_softmax_sweep(picks_by_bits):
    """A hand-made sweep of one post-softmax target: each metric lowest at its given multiplier."""
    import pandas as pd

    from ptqlib.lab.sweeps import ScaleSweep

    rows = []
    for bits, picks in picks_by_bits.items():
        for k in (0.1, 0.2, 0.4, 0.8):
            rows.append({"target": "blocks.7.attn.matmul_av a", "site": "blocks.7.attn.matmul_av", "operand": "a",
                         "bits": bits, "multiplier": k, **{m: abs(k - p) + 1 for m, p in picks.items()}})
    return ScaleSweep(pd.DataFrame(rows), list(next(iter(picks_by_bits.values()))))


def test_the_solutions_of_02_pass_their_checks():
    sweep = _post_softmax_sweep({4: {"mse": 0.4, "l1": 0.2, "cosine_token": 0.1},
                                 6: {"mse": 0.8, "l1": 0.4, "cosine_token": 0.4}})
    answers = {"02-a": [(solutions.largest_scale_metric(), {}), (solutions.largest_scale_metric(sweep), {"sweep": sweep})],
               "02-b": [(solutions.sign_test_by_hand(w, l), {"wins": w, "losses": l}) for w, l in ((5, 4), (8, 1), (0, 6), (3, 3), (0, 0))],
               "02-c": [(solutions.constant_gradient_pick(), {})]}
    assert {e for e in course.EXERCISES if e.startswith("02")} == set(answers)
    for exercise_id, cases in answers.items():
        for answer, context in cases:
            ok, message = course.grade(exercise_id, answer, **context)
            assert ok and message.startswith("correct"), (exercise_id, answer, message)


def test_post_softmax_picks_come_from_the_sweep_or_synthetic_attention():
    sweep = _post_softmax_sweep({4: {"mse": 0.2, "l1": 0.8, "cosine_token": 0.1}})
    assert solutions.post_softmax_picks(sweep) == {4: {"mse": 0.2, "l1": 0.8, "cosine_token": 0.1}}
    assert solutions.largest_scale_metric(sweep) == "l1"
    ok, message = course.grade("02-a", "l1", sweep=sweep)
    assert ok and "4-bit: mse 0.2, l1 0.8" in message
    synthetic = solutions.post_softmax_picks()  # MSE pays most for clipping the few large probabilities
    assert set(synthetic) == {4, 6}
    assert all(p["mse"] > p["l1"] and p["mse"] > p["cosine_token"] for p in synthetic.values())


@pytest.mark.parametrize("answer, ok, hint", [
    ("mse", True, "correct"),
    ("MSE", True, "correct"),
    ("l1", False, "square"),
    ("cosine_token", False, "query row"),
    ("cosine", False, "one metric name"),
    (None, False, "one metric name"),
])
def test_largest_scale_hints(answer, ok, hint):
    got, message = course.grade("02-a", answer)
    assert got is ok and hint in message, message


def test_sign_test_by_hand_is_the_exact_binomial_test():
    from ptqlib.core.stats import sign_test

    for wins in range(0, 13):
        for losses in range(0, 13):
            assert solutions.sign_test_by_hand(wins, losses) == pytest.approx(sign_test(wins, losses).p_value, abs=1e-12)


@pytest.mark.parametrize("answer, context, ok, hint", [
    (1.0, {"wins": 5, "losses": 4}, True, "needs a split of 8–1"),
    (0.039, {"wins": 8, "losses": 1}, True, "correct"),
    (0.0195, {"wins": 8, "losses": 1}, False, "one tail"),
    (0.5, {"wins": 5, "losses": 4}, False, "one tail"),
    (126 / 512, {"wins": 5, "losses": 4}, False, "exactly this split"),
    (0.0309, {"wins": 0, "losses": 6, "ties": 12}, True, "correct"),
    (1.45e-4, {"wins": 1, "losses": 8, "ties": 9}, False, "ties"),
    (0.3, {"wins": 5, "losses": 4}, False, "fair coin"),
    (1.5, {"wins": 5, "losses": 4}, False, "between 0 and 1"),
    ("1", {"wins": 5, "losses": 4}, False, "one number"),
    (1.0, {}, False, "pass the counts"),
])
def test_sign_test_hints(answer, context, ok, hint):
    got, message = course.grade("02-b", answer, **context)
    assert got is ok and hint in message, message


@pytest.mark.parametrize("answer, ok, hint", [
    ((0.25, True), True, "correct"),
    ([0.25, True], True, "correct"),
    ((0.5, True), False, "square"),
    ((4, True), False, "mse / hessian"),
    ((1, True), False, "each term"),
    ((0.25, False), False, "same positive factor"),
    ((0.25, "yes"), False, "True or False"),
    (0.25, False, "two values"),
])
def test_constant_gradient_hints(answer, ok, hint):
    got, message = course.grade("02-c", answer)
    assert got is ok and hint in message, message


def test_notebook_04_solutions_pass_their_checks_and_hints_name_the_mistake():
    from ptqlib.core.stats import sign_test
    from ptqlib.io import experiments

    assert solutions.mcnemar_by_hand() == pytest.approx(sign_test(37, 26).p_value)
    assert course.grade("04-a", solutions.mcnemar_by_hand())[0]
    ok, message = course.grade("04-a", sign_test(37, 26).p_value / 2)
    assert not ok and "two-sided" in message
    assert not course.grade("04-a", None)[0]
    assert solutions.draws_for_standard_error(2.95) == 35  # (2.95 / 0.5)² = 34.8
    assert course.grade("04-b", 35, std=2.95)[0]
    ok, message = course.grade("04-b", 6, std=2.95)
    assert not ok and "square" in message
    tables = experiments.load_tables(ROOT / "results" / "reference")
    ratio = solutions.paired_interval_ratio(tables)
    assert ratio > 1  # the paired interval is the narrower one
    assert course.grade("04-c", ratio, tables=tables)[0]
    ok, message = course.grade("04-c", 1 / ratio, tables=tables)
    assert not ok and "upside down" in message


# ----------------------------------------------------------------------------- notebook 05


def test_the_solutions_of_05_are_the_hand_computed_answers_and_pass_their_checks():
    # 05-a: codes 0..14 stand for 2^(-c/2), code 15 for 0: smallest 2^-7; below 0.1: codes 7..14 and the 0
    assert solutions.log_sqrt2_levels(4, 0.1) == (2.0 ** -7, 9)
    # 05-b: s = (1, 3), z = (1, round(5/3) = 2), s̃ = 2, z̃ = 2: r = s / s̃, b = s̃ (z̃ - z)
    assert solutions.fold_by_hand() == ([0.5, 1.5], [2.0, 0.0])
    # 05-c: neighbouring values fall by about 2^(-2/3): q = 1.5 codes per octave
    assert solutions.adalog_pick() == 1.5
    from ptqlib.lab import fitting

    assert fitting.fit_kind(torch.tensor(solutions.ADALOG_VALUES), "adalog", 3, signed=False).q == 1.5
    answers = {"05-a": solutions.log_sqrt2_levels(), "05-b": solutions.fold_by_hand(), "05-c": solutions.adalog_pick()}
    assert {e for e in course.EXERCISES if e.startswith("05")} == set(answers)
    for exercise_id, answer in answers.items():
        ok, message = course.grade(exercise_id, answer)
        assert ok and message.startswith("correct"), (exercise_id, message)


def test_the_log_sqrt2_levels_are_the_quantizers_levels():
    from ptqlib.core.quant import log_sqrt2_fake

    x = torch.linspace(0, 1, 200_001)
    levels = torch.unique(log_sqrt2_fake(x, 4))
    assert levels.numel() == 16 and float(levels[levels > 0].min()) == 2.0 ** -7
    assert int((levels < 0.1).sum()) == 9


@pytest.mark.parametrize("answer, ok, hint", [
    ((2.0 ** -7, 9), True, "correct"),
    ([0.0078, 9.0], True, "correct"),
    ((2.0 ** -7.5, 9), False, "means 0"),
    ((2.0 ** -14, 9), False, "two codes in each octave"),
    ((1 / 15, 9), False, "uniform step"),
    ((2.0 ** -7, 8), False, "level 0 too"),
    ((2.0 ** -7, 4), False, "2·log2(10)"),
    ((2.0 ** -7, 8.5), False, "two numbers"),
    (None, False, "two numbers"),
])
def test_log_levels_hints(answer, ok, hint):
    got, message = course.grade("05-a", answer)
    assert got is ok and hint in message, message


@pytest.mark.parametrize("answer, ok, hint", [
    (([0.5, 1.5], [2.0, 0.0]), True, "correct"),
    (((0.5, 1.5), (2, 0)), True, "correct"),
    (([2.0, 2 / 3], [2.0, 0.0]), False, "upside down"),
    (([1.0, 1.0], [2.0, 0.0]), False, "(2^k − 1)"),
    (([0.5, 1.5], [-2.0, 0.0]), False, "sign"),
    (([0.5, 1.5], [1.0, -1.0]), False, "centre"),
    (([0.5, 1.5], [2.0, 2 / 3]), False, "whole codes"),
    (([0.5, 1.5], [3.0, 0.0]), False, "z_c = round"),
    (([0.5], [2.0]), False, "two pairs"),
    (3, False, "two pairs"),
])
def test_fold_hints(answer, ok, hint):
    got, message = course.grade("05-b", answer)
    assert got is ok and hint in message, message


@pytest.mark.parametrize("answer, ok, hint", [
    (1.5, True, "correct"),
    (2 ** (1 / 1.5), False, "that is the base"),
    (2 ** (-1 / 1.5), False, "ratio between neighbouring levels"),
    (2.0, False, "another q"),
    (1.3, False, "AdaLog searches q in"),
    (None, False, "codes per octave"),
    (-1, False, "codes per octave"),
])
def test_adalog_base_hints(answer, ok, hint):
    got, message = course.grade("05-c", answer)
    assert got is ok and hint in message, message


def test_adalog_base_is_graded_on_given_values():
    powers = [2.0 ** -c for c in range(7)]  # log2's own grid
    assert solutions.adalog_pick(powers, 3) == 1.0
    assert course.grade("05-c", 1.0, values=powers)[0]
    assert not course.grade("05-c", 1.5, values=powers)[0]
