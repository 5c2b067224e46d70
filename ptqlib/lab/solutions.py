"""Solutions of the course notebooks' exercises, hidden until asked for.

``show("00-a")`` prints the solution of exercise a of notebook 00 (its source code, with the
reasoning in the docstring); :func:`ptqlib.lab.course.check` grades an answer without showing one.
Each solution is a plain function, so the tests can hold it to its own check.
"""
from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor

from ..errors import PtqlibError

if TYPE_CHECKING:
    from .activations import Activations
    from .sweeps import ScaleSweep

__all__ = ["SOLUTIONS", "asymmetric_fake", "twin_levels_and_split", "rounding_mse_ratio", "heaviest_head",
           "twin_loses_blocks", "outlier_zero_share", "twin_dead_zone", "fine_step_vs_uniform", "largest_gelu_split",
           "post_softmax_picks", "largest_scale_metric", "sign_test_by_hand", "constant_gradient_pick", "mcnemar_by_hand",
           "draws_for_standard_error", "paired_interval_ratio", "FOLD_EXAMPLE", "ADALOG_VALUES", "log_sqrt2_levels",
           "fold_by_hand", "adalog_pick", "show"]


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



# ----------------------------------------------------------------------------- notebook 01


def heaviest_head(acts: "Activations", block: int = 0, threshold: float = 0.5) -> int:
    """01-a: the head of ``block`` whose attention mass lies most on probabilities above ``threshold``.

    Every row of post-softmax values sums to 1, so the sum of a head's probabilities above 0.5,
    divided by the sum of all of them, is the share of its attention that goes to a single token
    taking more than half of a row: how peaked the head is. Few *values* ever exceed 0.5 (at most
    one per row of 197), which is why the share of mass, not the share of values, tells heads apart.
    """
    shares = []
    for head in range(acts.num_heads):
        p = acts.values("post-softmax", block, head).double()
        shares.append(float(p[p > threshold].sum() / p.sum()))
    return max(range(len(shares)), key=shares.__getitem__)


def twin_loses_blocks(acts: "Activations", bits: int = 4) -> list[int]:
    """01-b: the blocks where the MSE-fitted twin-uniform quantizer's error on the post-softmax values
    is above the MSE-searched unsigned uniform quantizer's.

    The twin quantizer's coarse range is fixed, [0, 1) with step 2^-(k-1), and its fine range must end
    at a power of two 2^-m. The uniform step is searched, and may clip: where the attention is spread
    (no probability near 1, many between 0.01 and 0.3: the last blocks), the uniform quantizer puts all
    2^k levels below about 0.3 and its step becomes as fine as the twin's fine step or finer, while the
    twin keeps half its codes for [2^-m, 1), where almost nothing lies.
    """
    from .fitting import fit_quantizer

    lost = []
    for block in acts.blocks:
        p = acts.values("post-softmax", block)
        uniform = fit_quantizer(p, "uniform", bits, "softmax")
        twin = fit_quantizer(p, "twin-uniform", bits, "softmax")
        if twin.mse(p) > uniform.mse(p):
            lost.append(block)
    return lost


def outlier_zero_share(acts: "Activations", block: int, bits: int = 8) -> float:
    """01-c: the share (in percent) of a block's post-GELU values that a ``bits``-bit min-max uniform
    quantizer rounds to 0.

    The signed min-max step is max|x| / (2^(k-1) - 1): one outlier of 213 makes it 213 / 127 ≈ 1.7
    even at 8 bits, and every |x| below half a step, about 0.84, becomes 0. Almost every hidden unit
    stays below that (the median unit's largest value is about 2), so nearly all values are lost.
    """
    from ..core.quant import minmax_step, uniform_fake

    x = acts.values("post-GELU", block)
    step = minmax_step(x.abs().max(), bits)
    return 100 * float((uniform_fake(x, step, bits) == 0).double().mean())


# ----------------------------------------------------------------------------- notebook 03


def twin_dead_zone(bits: int = 4, m: int = 5) -> tuple[float, float]:
    """03-a: for a split beyond the limit (m > k - 1), the interval of values that decode to 0
    although they are larger than the largest fine level.

    The fine range is R1 = [0, 2^(k-1)·Δ1) = [0, 2^-m). Everything from 2^-m up goes to the coarse
    range, whose code is round(x / Δ2) with Δ2 = 2^-(k-1): code 0 for x / Δ2 <= 1/2 (ties round to
    even), that is x <= 2^-k. For m > k these are a whole interval, [2^-m, 2^-k]: at k = 4, m = 5,
    [1/32, 1/16] decodes to 0 while the smaller values in R1 keep levels up to 7/256. At m = k the
    interval shrinks to the single tie point 2^-k; for m <= k - 1 it is empty, which is why ptqlib
    searches m = 0 … k - 1. Check: ``twin_softmax_fake(torch.linspace(0, 1, 4097), 4, 5)``.
    """
    return 2.0 ** -m, 2.0 ** -bits


def fine_step_vs_uniform(bits: int = 6, m: int = 3) -> float:
    """03-b: how many times finer the post-softmax twin quantizer's fine step is than the unsigned
    min-max uniform step on [0, 1] with the same bits.

    Uniform: 2^k levels 0, Δ, …, 1, so Δ = 1 / (2^k - 1). Twin: Δ2 = 2^-(k-1) (twice as coarse as
    that, almost) and Δ1 = Δ2 / 2^m. The ratio is 2^(k-1+m) / (2^k - 1), about 2^(m-1), not 2^m:
    at k = 4, m = 2 it is 32 / 15 ≈ 2.1 (notebook 03's error curves), at k = 6, m = 3 256 / 63 ≈ 4.1.
    """
    uniform = 1 / (2**bits - 1)
    fine = 2.0 ** -(bits - 1) / 2**m
    return uniform / fine


def largest_gelu_split(bits: int = 4, positive_step: float = 0.5, gelu_min: float = -0.17) -> int:
    """03-c: the largest split m for which the post-GELU twin quantizer's negative levels still reach
    GELU's minimum (about -0.17), so that no negative value is clipped.

    The sign bit leaves k - 1 magnitude bits: the most negative level is -(2^(k-1) - 1)·Δn with
    Δn = Δp / 2^m. At k = 4, Δp = 0.5 that is -7·0.5 / 2^m: -0.219 at m = 4 (reaches -0.17, with
    the finest step that does), -0.109 at m = 5 (values in [-0.17, -0.11) would be clipped).
    """
    top = 2 ** (bits - 1) - 1
    m = 0
    while top * positive_step / 2 ** (m + 1) >= -gelu_min:
        m += 1
    return m


# ----------------------------------------------------------------------------- notebook 02

#: The metrics exercise 02-a asks about.
POST_SOFTMAX_CHOICES = ("mse", "l1", "cosine_token")


def post_softmax_picks(sweep: "ScaleSweep | None" = None,
                       metrics: Sequence[str] = POST_SOFTMAX_CHOICES) -> dict[int, dict[str, float]]:
    """Per bit-width, the scale multiplier each metric picks on post-softmax values (the ``a``
    operand of an ``attn.matmul_av`` site) of a :class:`~ptqlib.lab.sweeps.ScaleSweep`; without
    one (or without such a target), on synthetic attention: softmax of Gaussian logits (3 heads,
    197 tokens) times Gaussian values, unsigned uniform at 4 and 6 bits."""
    from ..core.metrics import get_metric
    from ..core.quant import minmax_step, uniform_fake

    if sweep is not None:
        t = sweep.table
        t = t[(t["operand"] == "a") & t["site"].str.endswith("attn.matmul_av")]
        if len(t) and all(m in t.columns for m in metrics):
            picks: dict[int, dict[str, float]] = {}
            for bits, g in t.groupby("bits"):
                first = g[g["target"] == g["target"].iloc[0]].sort_values("multiplier")
                picks[int(bits)] = {m: float(first["multiplier"].iloc[int(first[m].to_numpy().argmin())])
                                    for m in metrics}
            return picks
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(2.0 * torch.randn(3, 197, 197, generator=gen), -1)
    values = torch.randn(3, 197, 64, generator=gen)
    out = probs @ values
    multipliers = torch.logspace(math.log10(0.02), math.log10(1.2), 30).tolist()
    picks = {}
    for bits in (4, 6):
        step = float(minmax_step(probs.max(), bits, False))
        scores = {m: [float(get_metric(m)(out, uniform_fake(probs, torch.tensor(step * k), bits, False) @ values))
                      for k in multipliers] for m in metrics}
        picks[bits] = {m: multipliers[min(range(len(s)), key=s.__getitem__)] for m, s in scores.items()}
    return picks


def largest_scale_metric(sweep: "ScaleSweep | None" = None) -> str:
    """02-a: which of MSE, L1 and the per-token cosine picks the largest scale on post-softmax values?

    MSE. A few probabilities are large (a query attending mostly to one token) and the many others
    tiny. A small scale clips the large ones: few errors, but big ones, and MSE squares each error,
    so it pays most for clipping and keeps a larger scale. L1 counts errors linearly, so the many
    small rounding errors weigh more and it trades some clipping for a finer step. The per-token
    cosine scores each query row apart and averages: a row that spreads its attention thinly has a
    small output that MSE hardly sees but that counts as much as any other row here, and its error
    is the rounding of small probabilities: it too picks a finer step than MSE.
    The largest pick, over the sweep's bit-widths (``post_softmax_picks`` gives them all):
    """
    picks = post_softmax_picks(sweep)
    mean_log = {m: sum(math.log(p[m]) for p in picks.values()) / len(picks) for m in POST_SOFTMAX_CHOICES}
    return max(POST_SOFTMAX_CHOICES, key=mean_log.__getitem__)


def sign_test_by_hand(wins: int, losses: int) -> float:
    """02-b: the exact two-sided sign test of ``wins`` against ``losses`` (ties left out).

    Under "no difference" each untied sweep is a fair coin: wins ~ Binomial(n, 1/2), n = wins +
    losses. The p-value is the probability of a split at least as lopsided as the one seen, on
    either side: twice the smaller tail, at most 1. Ties say nothing about which metric is closer,
    so they are left out (they only shrink n). ``ptqlib.core.stats.sign_test`` computes the same.
    """
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def constant_gradient_pick(c: float = 0.5, seed: int = 0) -> tuple[float, bool]:
    """02-c: with ∂L/∂O = c for every element, the Hessian-guided distance over MSE, and whether
    both pick the same scale.

    E[(∂L/∂O)² (O − Ô)²] = c² · E[(O − Ô)²]: the same positive factor c² multiplies every
    candidate's score, and no positive factor changes which score is the smallest. So on such a
    layer the Hessian-guided pick is MSE's; only how ∂L/∂O *varies* across elements can move it.
    The same holds for a tiny common factor: the official KL weights, about 1e-10, would pick as
    ptqlib's do if they varied across the elements in the same way. Measured on a random layer:
    """
    from ..core.metrics import hessian, mse
    from ..core.quant import minmax_step, uniform_fake

    gen = torch.Generator().manual_seed(seed)
    x, w = torch.randn(256, 64, generator=gen), torch.randn(32, 64, generator=gen)
    out = x @ w.t()
    step = float(minmax_step(w.abs().max(), 4))
    w_hat = torch.stack([uniform_fake(w, torch.tensor(step * k), 4) for k in torch.linspace(0.1, 1.2, 23).tolist()])
    out_hat = x @ w_hat.transpose(-1, -2)
    h, m = hessian(out, out_hat, torch.full_like(out, c)), mse(out, out_hat)
    return float((h / m).mean()), bool(int(h.argmin()) == int(m.argmin()))


#: The solution of every exercise, by id (``<notebook>-<letter>``).
def mcnemar_by_hand(only_a: int = 37, only_b: int = 26) -> float:
    """04-a: the exact McNemar test is a sign test on the discordant images only.

    Images both configurations get right (or wrong) say nothing about which is better. Of the
    ``only_a + only_b`` = 63 images they disagree on, under "no difference" each favours A with
    probability 1/2, so the count favouring A is Binomial(63, 1/2); the two-sided p-value is twice
    the smaller tail: 0.207 here, so a 0.85-point lead on 1300 images is inconclusive.
    """
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def draws_for_standard_error(std: float, target: float = 0.5) -> int:
    """04-b: the mean of n independent draws has standard error std / sqrt(n); it is at most
    ``target`` when n >= (std / target)²."""
    return math.ceil((std / target) ** 2)


def paired_interval_ratio(tables) -> float:
    """04-c: width of PTQ4ViT W8A8's top-1 interval over the width of its paired drop interval.

    One top-1's interval reflects which images happen to be in the set (an easy set raises every
    method); the drop compares the float and the quantized model on the *same* images, so only
    the images they disagree on vary it, and those are few.
    """
    from ptqlib.io import experiments

    row = experiments.main_table(tables).query("method == 'PTQ4ViT' and bits == 'W8A8'").iloc[0]
    lo, hi = (float(v) for v in row["95% CI"].split("–"))
    dlo, dhi = (float(v) for v in row["drop 95% CI"].split("–"))
    return (hi - lo) / (dhi - dlo)


# ----------------------------------------------------------------------------- notebook 05

#: 05-b: per-channel minima and maxima of a two-channel LayerNorm output, folded at 2 bits.
FOLD_EXAMPLE = {"lo": (-1.0, -5.0), "hi": (2.0, 4.0), "bits": 2}
#: 05-c: the values whose AdaLog base is asked for (3 bits, largest level s = 1).
ADALOG_VALUES = (1.0, 0.62, 0.40, 0.25, 0.16, 0.10, 0.063, 0.05)


def log_sqrt2_levels(bits: int = 4, below: float = 0.1) -> tuple[float, int]:
    """05-a: (smallest positive level, how many levels lie below ``below``, 0 included) of a
    ``bits``-bit log√2 quantizer with largest level s = 1 (post-softmax values in [0, 1]).

    Code c stands for 2^(−c/2) (two codes per octave), except the top code 2^k − 1 = 15, which
    means 0. So the positive levels are 2^0, 2^−0.5, …, 2^−7 (codes 0 … 14): the smallest is
    2^−7 = 1/128 = 0.0078. Below 0.1: 2^(−c/2) < 0.1 for c > 2·log2(10) = 6.64, codes 7 … 14,
    eight levels, and the 0: nine of the sixteen. A 4-bit unsigned uniform grid on [0, 1] (step
    1/15) has two levels there (0 and 1/15), the twin-uniform grid with m = 3 seven (0 … 6/64):
    the log grid spends most of its codes where most attention probabilities lie.
    """
    from ..core.quant import LogSqrt2Quantizer

    levels = LogSqrt2Quantizer(bits).set(scale=torch.tensor(1.0)).level_groups()["log√2 levels"]
    return float(levels[levels > 0].min()), int((levels < below).sum())


def fold_by_hand(lo: Sequence[float] = FOLD_EXAMPLE["lo"], hi: Sequence[float] = FOLD_EXAMPLE["hi"],
                 bits: int = FOLD_EXAMPLE["bits"]) -> tuple[list[float], list[float]]:
    """05-b: RepQ-ViT's fold of two channels by hand: the ratios r_c and the offsets b_c.

    Per channel the min-max step s_c = (max − min) / (2^k − 1) and zero point z_c = round(−min / s_c):
    channel 0: s = 3/3 = 1, z = round(1/1) = 1; channel 1: s = 9/3 = 3, z = round(5/3) = round(1.67) = 2.
    One step for the tensor, s̃ = mean(s_c) = 2, and ptqlib's common zero point, the centre
    z̃ = 2^(k−1) = 2. Then r_c = s_c / s̃ = (0.5, 1.5) and b_c = s̃ · (z̃ − z_c) = (2·1, 2·0) = (2, 0).
    The LayerNorm's γ and β are divided by r (β also loses b), the next Linear's columns are
    multiplied by r and its bias gains W̃·b: X̃ = X / r − b, and (X̃ + b) W̃ᵀ = X Wᵀ.
    ``ptqlib.engine.reparam.fold_parameters`` does the same:
    """
    from ..engine.reparam import fold_parameters

    *_, r, b = fold_parameters(torch.tensor(lo), torch.tensor(hi), bits)
    return [round(v, 6) for v in r.tolist()], [round(v, 6) for v in b.tolist()]


def adalog_pick(values: Sequence[float] = ADALOG_VALUES, bits: int = 3) -> float:
    """05-c: the codes per octave q (base 2^(1/q)) AdaLog picks for ``values`` at ``bits``, largest
    level s = 1: the q of ``ADALOG_Q`` whose grid has the lowest MSE on the values.

    Neighbouring values fall by a factor of about 0.62 ≈ 2^(−2/3): a grid with q = 1.5 codes per
    octave (levels 1, 0.63, 0.40, 0.25, 0.157, 0.099, 0.0625, then 0) puts a level on almost every
    value; log2 (q = 1: 1, 0.5, 0.25, …) and log√2 (q = 2: 1, 0.71, 0.5, …) miss most of them.
    Trying every q, as calibration does (``fitting.fit_kind(values, "adalog", 3)``):
    """
    from ..core.quant import ADALOG_Q, adalog_fake

    v = torch.tensor(list(values), dtype=torch.float32)
    mse = {q: float((adalog_fake(v, bits, 1.0, q) - v).double().square().mean()) for q in ADALOG_Q}
    return min(mse, key=mse.__getitem__)


SOLUTIONS: dict[str, Callable] = {
    "00-a": asymmetric_fake,
    "00-b": twin_levels_and_split,
    "00-c": rounding_mse_ratio,
    "01-a": heaviest_head,
    "01-b": twin_loses_blocks,
    "01-c": outlier_zero_share,
    "03-a": twin_dead_zone,
    "03-b": fine_step_vs_uniform,
    "03-c": largest_gelu_split,
    "02-a": largest_scale_metric,
    "02-b": sign_test_by_hand,
    "02-c": constant_gradient_pick,
    "04-a": mcnemar_by_hand,
    "04-b": draws_for_standard_error,
    "04-c": paired_interval_ratio,
    "05-a": log_sqrt2_levels,
    "05-b": fold_by_hand,
    "05-c": adalog_pick,
}


def show(exercise_id: str) -> None:
    """Print the solution of ``exercise_id`` (e.g. ``"00-a"``): its code and the reasoning."""
    if exercise_id not in SOLUTIONS:
        raise PtqlibError(f"no exercise {exercise_id!r}; the exercises are {', '.join(SOLUTIONS)}")
    print(f"# solution of exercise {exercise_id}\n")
    print(inspect.getsource(SOLUTIONS[exercise_id]))
