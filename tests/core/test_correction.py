"""ERQ's ridge weight correction (``ptqlib.core.correction.ridge_correction``).

Checked against a hand-computed one-feature case, an independent solver (least squares on the
augmented system ``[X̂; √λ I] Vᵀ ≈ [X Wᵀ; √λ Wᵀ]``, whose minimiser is the ridge solution), its
limits (ρ → ∞ keeps W, X̂ = X keeps W), the guarantee that it never increases the layer's output
error on the rows it saw, and integer row weights as repeated rows.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptqlib.core.correction import ridge_correction
from ptqlib.core.quant import uniform_fake

PROPERTY = settings(max_examples=40, deadline=None)


def _problem(seed: int, t: int = 48, n_in: int = 12, n_out: int = 5, bits: int = 3) -> tuple[torch.Tensor, ...]:
    """Float inputs X (T, in) with channels of different sizes, their b-bit fake-quantized X̂, and W."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(t, n_in, generator=gen) * torch.exp(torch.randn(n_in, generator=gen))
    step = x.abs().max() / (2 ** (bits - 1) - 1)
    x_hat = uniform_fake(x, step, bits)
    w = torch.randn(n_out, n_in, generator=gen)
    return x, x_hat, w


def _reference(x: torch.Tensor, x_hat: torch.Tensor, w: torch.Tensor, rho: float) -> torch.Tensor:
    """argmin_V ‖X Wᵀ − X̂ Vᵀ‖² + λ ‖V − W‖², as least squares on the stacked rows (float64)."""
    xd, xqd, wd = x.double(), x_hat.double(), w.double()
    lam = rho * float((xqd * xqd).sum(0).mean())  # mean diagonal of X̂ᵀX̂
    root = math.sqrt(lam)
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    a = torch.cat([xqd, root * eye])
    b = torch.cat([xd @ wd.T, root * wd.T])
    return torch.linalg.lstsq(a, b, driver="gelsd").solution.T


def _output_error(x: torch.Tensor, x_hat: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> float:
    return float((x.double() @ w.double().T - x_hat.double() @ v.double().T).norm())


def test_one_feature_by_hand() -> None:
    # X = [1, 2]ᵀ, X̂ = [1, 1]ᵀ, w = 3: X̂ᵀX̂ = 2, X̂ᵀX = 3, λ = 2ρ; w' = (3 + λ)·3 / (2 + λ)
    x, xq, w = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [1.0]]), torch.tensor([[3.0]])
    assert ridge_correction(x, xq, w, 1.0).item() == pytest.approx(15 / 4)      # λ = 2: 5·3/4
    assert ridge_correction(x, xq, w, 0.5).item() == pytest.approx(12 / 3)      # λ = 1: 4·3/3
    assert ridge_correction(x, xq, w, 1e-12).item() == pytest.approx(4.5)       # least squares: 3·3/2


@pytest.mark.parametrize("rho", [1e-3, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_least_squares_on_the_augmented_system(rho: float, seed: int) -> None:
    x, x_hat, w = _problem(seed)
    got = ridge_correction(x, x_hat, w, rho)
    assert got.shape == w.shape and got.dtype == w.dtype
    expected = _reference(x, x_hat, w, rho)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert not torch.allclose(got, w, atol=1e-3)  # it did correct something


def test_float64_weights_stay_float64_and_match_tightly() -> None:
    x, x_hat, w = (t.double() for t in _problem(3))
    got = ridge_correction(x, x_hat, w, 0.05)
    assert got.dtype == torch.float64
    assert torch.allclose(got, _reference(x, x_hat, w, 0.05), rtol=1e-9, atol=1e-10)


def test_large_rho_keeps_the_weights() -> None:
    x, x_hat, w = _problem(4)
    distances = [float((ridge_correction(x, x_hat, w, rho) - w).abs().max()) for rho in (0.01, 1.0, 100.0, 1e6)]
    assert all(a > b for a, b in zip(distances, distances[1:]))  # strictly closer as ρ grows
    assert distances[0] > 1e-2 and distances[-1] < 1e-4


@given(seed=st.integers(0, 2**31 - 1), rho=st.floats(1e-4, 1e3))
@PROPERTY
def test_exact_inputs_keep_the_weights(seed: int, rho: float) -> None:
    x, _, w = _problem(seed, t=20, n_in=6, n_out=3)
    assert torch.allclose(ridge_correction(x, x.clone(), w, rho), w, atol=1e-6, rtol=1e-6)


@given(seed=st.integers(0, 2**31 - 1), rho=st.floats(1e-4, 1e2), bits=st.integers(2, 5))
@PROPERTY
def test_never_increases_the_output_error_on_its_rows(seed: int, rho: float, bits: int) -> None:
    # W itself is a candidate with objective ‖XWᵀ − X̂Wᵀ‖²; the minimiser's data term is no larger
    x, x_hat, w = _problem(seed, t=30, n_in=8, n_out=4, bits=bits)
    before = _output_error(x, x_hat, w, w)
    after = _output_error(x, x_hat, w, ridge_correction(x, x_hat, w, rho))
    assert after <= before * (1 + 1e-6) + 1e-9


def test_a_systematic_input_error_is_absorbed() -> None:
    # X̂ = Q₈(X) / 2 (an input at half its size, finely rounded): the correction is about 2 W and
    # removes nearly all the output error, which plain W leaves at about half the output
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(200, 12, generator=gen), torch.randn(5, 12, generator=gen)
    x_hat = uniform_fake(x, x.abs().max() / 127, 8) / 2
    corrected = ridge_correction(x, x_hat, w, 1e-4)
    assert torch.allclose(corrected, 2 * w, rtol=0.02, atol=0.02)
    before, after = _output_error(x, x_hat, w, w), _output_error(x, x_hat, w, corrected)
    assert after < 0.05 * before


def test_row_weights_are_repeated_rows() -> None:
    x, x_hat, w = _problem(6, t=10)
    ones = ridge_correction(x, x_hat, w, 0.1, row_weight=torch.ones(10))
    assert torch.equal(ones, ridge_correction(x, x_hat, w, 0.1))
    counts = torch.tensor([3, 1, 0, 2, 1, 1, 4, 1, 1, 2])
    repeated = ridge_correction(x.repeat_interleave(counts, 0), x_hat.repeat_interleave(counts, 0), w, 0.1)
    weighted = ridge_correction(x, x_hat, w, 0.1, row_weight=counts.float())
    assert torch.allclose(weighted, repeated, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(weighted, ones, atol=1e-4)  # the weights did matter


@pytest.mark.parametrize("shapes", [
    ((4, 3), (4, 2), (5, 3)),   # x and x_hat differ
    ((4, 3), (4, 3), (5, 2)),   # weight's inputs differ
    ((4, 3, 1), (4, 3, 1), (5, 3)),  # x not 2-D
    ((4, 3), (4, 3), (3,)),     # weight not 2-D
])
def test_bad_shapes_are_refused(shapes) -> None:
    x, x_hat, w = (torch.ones(s) for s in shapes)
    with pytest.raises(ValueError, match="need x and x_hat"):
        ridge_correction(x, x_hat, w, 0.1)


@pytest.mark.parametrize("rho", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_rho_is_refused(rho: float) -> None:
    x, x_hat, w = _problem(7, t=8, n_in=3, n_out=2)
    with pytest.raises(ValueError, match="rho must be positive"):
        ridge_correction(x, x_hat, w, rho)
