"""Tests for ptqlib.core.search: the candidate grid and the per-channel search loop."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptqlib.core.search import linear_grid, search


class Counted:
    """Wraps a score function, counting evaluations (sum of K over calls) and the largest K."""

    def __init__(self, fn):
        self.fn, self.evaluations, self.calls, self.max_k = fn, 0, 0, 0

    def __call__(self, mults: torch.Tensor) -> torch.Tensor:
        assert mults.ndim == 2
        self.evaluations += mults.shape[0]
        self.calls += 1
        self.max_k = max(self.max_k, mults.shape[0])
        return self.fn(mults)


def table_score(grid: torch.Tensor, table: torch.Tensor):
    """A score defined on the grid: candidate grid[i] of channel c scores table[i, c]."""

    def score(mults: torch.Tensor) -> torch.Tensor:
        idx = (mults.unsqueeze(-1) == grid).to(torch.int64).argmax(-1)  # (K, C): exact grid match
        assert torch.all((mults.unsqueeze(-1) == grid).any(-1)), "search passed a non-grid value"
        return table[idx, torch.arange(table.shape[1])]

    return score


def convex_score(targets: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """Per-channel convex score a·(m - t)² + b·|m - t| (float64)."""

    def score(mults: torch.Tensor) -> torch.Tensor:
        d = mults.double() - targets.double()
        return a * d.square() + b * d.abs()

    return score


# ----------------------------------------------------------------------------- linear_grid


def test_linear_grid_paper_defaults():
    # α = 0.01, β = 1.2, n = 100: 0.01 + i·1.19/100, i = 0..100 -> 101 points
    g = linear_grid(0.01, 1.2, 100)
    assert g.dtype == torch.float32
    assert g.shape == (101,)
    assert g[0].item() == torch.tensor(0.01).item()
    assert g[-1].item() == torch.tensor(1.2).item()
    # step 0.0119: g[1] = 0.0219, g[50] = 0.01 + 0.595 = 0.605
    assert abs(g[1].item() - 0.0219) < 1e-7
    assert abs(g[50].item() - 0.605) < 1e-7
    assert torch.all(torch.diff(g) > 0)


def test_linear_grid_drops_non_positive():
    # α = 0: [0, 0.25, 0.5, 0.75, 1.0] without the 0
    assert torch.equal(linear_grid(0.0, 1.0, 4), torch.tensor([0.25, 0.5, 0.75, 1.0]))
    # α = -0.5, n = 3: [-0.5, 0, 0.5, 1.0] -> [0.5, 1.0]
    assert torch.equal(linear_grid(-0.5, 1.0, 3), torch.tensor([0.5, 1.0]))
    # docstring: 0.5 + i·0.1
    assert torch.allclose(linear_grid(0.5, 1.0, 5), torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9, 1.0]))


@pytest.mark.parametrize("alpha, beta, n", [(0.1, 1.0, 0), (1.0, 1.0, 5), (1.2, 0.5, 10)])
def test_linear_grid_invalid(alpha, beta, n):
    with pytest.raises(ValueError):
        linear_grid(alpha, beta, n)


# ----------------------------------------------------------------------------- grid strategy


def test_grid_finds_exact_argmin_per_channel():
    grid = linear_grid(0.01, 1.2, 100)
    table = torch.randn(101, 7, generator=torch.Generator().manual_seed(0))
    score = Counted(table_score(grid, table))
    best, evaluations = search(score, grid, channels=7, strategy="grid")
    assert best.shape == (7,)
    assert torch.equal(best, grid[table.argmin(0)])
    assert evaluations == 101 == score.evaluations


def test_grid_single_channel_default():
    grid = linear_grid(0.5, 1.0, 5)  # [0.5, 0.6, ..., 1.0]
    table = torch.tensor([[3.0], [2.0], [5.0], [-1.0], [0.0], [4.0]])  # argmin at index 3 -> 0.8
    best, evaluations = search(table_score(grid, table), grid)
    assert best.shape == (1,)
    assert best.item() == grid[3].item()
    assert evaluations == 6


# ----------------------------------------------------------------------------- coarse to fine


def test_coarse_to_fine_matches_grid_on_convex_scores_seeded():
    gen = torch.Generator().manual_seed(1)
    grid = linear_grid(0.01, 1.2, 100)
    channels = 64
    for stride in (2, 3, 5, 7, 10):
        for _ in range(3):
            targets = torch.rand(channels, generator=gen) * 1.6 - 0.2  # some beyond either end
            a = torch.rand(channels, generator=gen, dtype=torch.float64) * 5
            b = torch.rand(channels, generator=gen, dtype=torch.float64) * 5 + 0.01
            score = convex_score(targets, a, b)
            best_grid, _ = search(score, grid, channels, strategy="grid")
            best_ctf, _ = search(score, grid, channels, strategy="coarse_to_fine", stride=stride)
            assert torch.equal(best_ctf, best_grid), (stride, targets)


@settings(max_examples=60, deadline=None)
@given(
    targets=st.lists(st.floats(-0.5, 2.0), min_size=1, max_size=6),
    a=st.floats(0.0, 10.0),
    b=st.floats(0.01, 10.0),
    n=st.integers(1, 150),
    stride=st.integers(2, 12),
    chunk=st.integers(1, 40),
)
def test_coarse_to_fine_reaches_the_grid_minimum_on_convex_scores(targets, a, b, n, stride, chunk):
    # Tie-robust form: the score at the coarse-to-fine choice equals the grid's minimum score.
    grid = linear_grid(0.01, 1.2, n)
    tg = torch.tensor(targets, dtype=torch.float64)
    score = convex_score(tg, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    counted = Counted(score)
    best, evaluations = search(counted, grid, len(targets), strategy="coarse_to_fine", stride=stride, chunk=chunk)
    all_scores = score(grid.unsqueeze(1).expand(-1, len(targets)))
    assert torch.equal(score(best.unsqueeze(0))[0], all_scores.min(0).values)
    assert evaluations == counted.evaluations
    assert counted.max_k <= chunk
    g = grid.numel()
    if g <= 2 * stride + 1:  # small grids fall back to the exhaustive search
        assert evaluations == g
    else:
        # coarse points 0, stride, 2·stride, ... plus the last; then 2·(stride - 1) fine points
        coarse = len(range(0, g, stride)) + (0 if (g - 1) % stride == 0 else 1)
        assert evaluations == coarse + 2 * (stride - 1)


def test_coarse_to_fine_uses_fewer_evaluations_and_reports_them():
    grid = linear_grid(0.01, 1.2, 100)  # 101 points, indices 0..100
    targets = torch.tensor([0.3, 0.9, 1.5])
    score = convex_score(targets, torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    counted_grid, counted_ctf = Counted(score), Counted(score)
    best_grid, n_grid = search(counted_grid, grid, 3, strategy="grid")
    best_ctf, n_ctf = search(counted_ctf, grid, 3, strategy="coarse_to_fine", stride=5)
    # coarse: 0, 5, ..., 100 -> 21 points (100 = g - 1 is already on it); fine: offsets ±1..±4 -> 8
    assert n_ctf == 29 == counted_ctf.evaluations
    assert n_grid == 101 == counted_grid.evaluations
    assert torch.equal(best_ctf, best_grid)
    # targets 0.3 -> nearest grid point 0.01 + 24·0.0119 = 0.2956 (index 24); 1.5 -> last (1.2)
    assert best_ctf[0].item() == grid[24].item()
    assert best_ctf[2].item() == grid[100].item()


def test_coarse_to_fine_stride_with_uneven_tail():
    # g = 101, stride = 7: coarse 0, 7, ..., 98 (15 points) + 100 -> 16; fine 2·6 = 12 -> 28
    grid = linear_grid(0.01, 1.2, 100)
    table = (torch.arange(101.0) - 99).abs().unsqueeze(1)  # unimodal, minimum at index 99
    best, evaluations = search(table_score(grid, table), grid, 1, strategy="coarse_to_fine", stride=7)
    assert evaluations == 28
    assert best.item() == grid[99].item()


def test_coarse_to_fine_can_miss_a_narrow_dip():
    # Not unimodal: |i - 80| / 100 with a narrow dip to -1 at index 22 (not a coarse point).
    # grid finds index 22; coarse_to_fine (stride 5) picks coarse 80, refines 76..84, stays at 80.
    grid = linear_grid(0.01, 1.2, 100)
    table = ((torch.arange(101.0) - 80).abs() / 100).unsqueeze(1)
    table[22] = -1.0
    best_grid, _ = search(table_score(grid, table), grid, 1, strategy="grid")
    best_ctf, _ = search(table_score(grid, table), grid, 1, strategy="coarse_to_fine", stride=5)
    assert best_grid.item() == grid[22].item()
    assert best_ctf.item() == grid[80].item()


def test_refining_two_coarse_points_finds_a_second_basin():
    # Two basins: coarse point 80 is best (0.00), but the global minimum is index 27 (-0.05), in the
    # basin of the second-best coarse point 25 (0.02). refine=1 stays at 80; refine=2 scores the
    # neighbourhoods of 80 and 25 (each point once) and finds 27, with the evaluation count reported.
    grid = linear_grid(0.01, 1.2, 100)
    table = torch.full((101, 1), 1.0)
    table[76:85, 0] = (torch.arange(76, 85.0) - 80).abs() / 100
    table[21:30, 0] = 0.02 + (torch.arange(21, 30.0) - 25).abs() / 100
    table[27, 0] = -0.05
    counted = Counted(table_score(grid, table))
    one, _ = search(table_score(grid, table), grid, 1, strategy="coarse_to_fine", stride=5)
    two, evaluations = search(counted, grid, 1, strategy="coarse_to_fine", stride=5, refine=2)
    assert one.item() == grid[80].item()
    assert two.item() == grid[27].item()
    assert evaluations == counted.evaluations == 21 + 2 * 8


@pytest.mark.parametrize("refine", [1, 2, 3])
@pytest.mark.parametrize("stride", [3, 5, 6])
def test_refine_matches_the_grid_on_random_channels_when_it_covers_every_basin(refine, stride):
    # Many channels at once, each with its own scores: the answer of each channel is the best
    # point among its refined neighbourhoods, i.e. the grid's whenever the grid's minimum lies in one.
    grid = linear_grid(0.01, 1.2, 100)
    gen = torch.Generator().manual_seed(refine * 10 + stride)
    table = torch.randn(101, 40, generator=gen)
    best, _ = search(table_score(grid, table), grid, 40, strategy="coarse_to_fine", stride=stride, refine=refine)
    coarse = torch.cat([torch.arange(0, 101, stride), torch.tensor([100])]).unique()
    centres = coarse[table[coarse].topk(refine, dim=0, largest=False).indices]  # (refine, 40)
    for c in range(40):
        near = torch.cat([(centres[:, c:c + 1] + torch.arange(-stride + 1, stride)).flatten().clamp(0, 100),
                          centres[:1, c]]).unique()
        assert best[c].item() == grid[near[table[near, c].argmin()]].item()


def test_small_grid_falls_back_to_exhaustive():
    # g = 6 <= 2·5 + 1: coarse_to_fine evaluates all 6 points
    grid = linear_grid(0.5, 1.0, 5)
    table = torch.tensor([[3.0], [2.0], [5.0], [-1.0], [0.0], [4.0]])
    best, evaluations = search(table_score(grid, table), grid, strategy="coarse_to_fine", stride=5)
    assert evaluations == 6
    assert best.item() == grid[3].item()


# ----------------------------------------------------------------------------- chunking, errors


@pytest.mark.parametrize("strategy", ["grid", "coarse_to_fine"])
def test_chunking_gives_identical_results(strategy):
    grid = linear_grid(0.01, 1.2, 100)
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(101, 5, generator=gen)  # arbitrary (non-unimodal) scores
    results = []
    for chunk in (1, 3, 8, 1000):
        counted = Counted(table_score(grid, table))
        best, evaluations = search(counted, grid, 5, strategy=strategy, chunk=chunk)
        assert counted.max_k <= chunk
        assert evaluations == counted.evaluations
        results.append((best, evaluations))
    for best, evaluations in results[1:]:
        assert torch.equal(best, results[0][0]) and evaluations == results[0][1]
    # chunk = 1 makes one call per candidate; chunk = 8 on 101 grid points makes ceil(101/8) = 13
    counted = Counted(table_score(grid, table))
    search(counted, grid, 5, strategy="grid", chunk=8)
    assert counted.calls == 13


def test_unknown_strategy_raises_on_large_grid():
    grid = linear_grid(0.01, 1.2, 100)
    with pytest.raises(ValueError):
        search(lambda m: m, grid, strategy="bogus")


def test_unknown_strategy_raises_on_small_grid():
    # A typo'd strategy should be rejected whatever the grid size; with g <= 2·stride + 1 the
    # exhaustive fallback is taken before the strategy name is checked.
    grid = linear_grid(0.5, 1.0, 5)  # 6 points <= 2·5 + 1
    with pytest.raises(ValueError):
        search(lambda m: m, grid, strategy="bogus")


def test_tie_tolerance_picks_the_smallest_scale_within_the_band():
    """Scores that differ in the last bits: argmin follows the noise, the tie rule does not."""
    from ptqlib.core.search import pick

    grid = linear_grid(0.5, 1.0, 5)  # 0.5 .. 1.0
    base = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.5, 2.5])
    flips = []
    for noise in (torch.tensor([0, 0, 1e-7, -1e-7, 0, 0]), torch.tensor([0, 0, -1e-7, 1e-7, 0, 0])):
        scores = (base + noise).unsqueeze(1)
        plain, _ = search(lambda m, s=scores: s[(m.squeeze(1).unsqueeze(1) == grid).float().argmax(1)], grid)
        tied, _ = search(lambda m, s=scores: s[(m.squeeze(1).unsqueeze(1) == grid).float().argmax(1)], grid,
                         tie_tolerance=1e-5)
        flips.append((float(plain), float(tied)))
    assert flips[0][0] == pytest.approx(0.8) and flips[1][0] == pytest.approx(0.7)  # argmin flips with the noise
    assert flips[0][1] == flips[1][1] == pytest.approx(0.7)                          # the tie rule holds
    # outside the band the minimum wins, per column
    s = torch.tensor([[1.0, 2.0], [0.5, 2.0 + 1e-6], [0.7, 1.0]])
    idx = torch.arange(3).unsqueeze(1).expand(3, 2)
    assert pick(s, idx, 1e-3).tolist() == [1, 2]
    assert pick(s, idx).tolist() == s.argmin(0).tolist()
    # the smallest grid index wins even when the tied rows are not in grid order
    assert pick(torch.tensor([[1.0], [1.0]]), torch.tensor([[5], [2]]), 1e-6).tolist() == [1]


def test_tie_tolerance_in_coarse_to_fine_matches_grid():
    """Both strategies apply the same rule: on a flat-bottomed curve they pick the same point."""
    grid = linear_grid(0.01, 1.2, 100)
    target = 0.6

    def score(m):
        return torch.clamp((m - target).abs(), min=0.05) + 1e-9 * torch.rand_like(m)

    a, _ = search(score, grid, strategy="grid", tie_tolerance=1e-4)
    b, _ = search(score, grid, strategy="coarse_to_fine", stride=6, refine=2, tie_tolerance=1e-4)
    assert float(a) == float(b) == pytest.approx(float(grid[(grid >= target - 0.05 - 1e-6).nonzero()[0]]))
