"""Candidate grids and the search loop that picks, per channel, the candidate of lowest score.

PTQ4ViT searches scaling factors on a linear grid around an initial step ``Δ₀``::

    Δ_i = (α + i (β - α) / n) · Δ₀,     i = 0 .. n

The search is written against a *score function* ``score(mults) -> scores`` where ``mults`` has
shape ``(K, C)``: K candidates for each of C independent channels (C = 1 for a per-tensor scale,
the output channels for per-channel weights, the heads for per-head inputs), and ``scores`` the
same shape. Channels are searched at once because the metrics are separable over them.

Two strategies give the same answer on unimodal score curves:

* ``grid``: every point of the grid (n + 1 scores per channel);
* ``coarse_to_fine``: every ``stride``-th point, then every point within ``stride`` of each
  channel's best coarse point (about ``n / stride + 2·stride`` scores). Given a previous answer
  (``around``: calibration's ``coarse_to_fine_local`` passes later rounds the one before), only
  its ``2·stride - 1`` neighbours are scored; faster, but it stays in that answer's basin.

**Ties.** The pick is the argmin of the scores. Candidates whose scores differ in the last bits
swap places when the matmuls that produce them round differently (another CPU, another thread
count): ``tie_tolerance`` > 0 counts every candidate within ``tie_tolerance · |best|`` of the
best as tied and picks the tied candidate with the smallest grid index (the smallest scale), a
choice that only moves when a candidate crosses the tolerance band, not when two near-equal
scores cross each other.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

__all__ = ["SearchStrategy", "linear_grid", "pick", "search"]

SearchStrategy = Literal["grid", "coarse_to_fine"]
ScoreFn = Callable[[Tensor], Tensor]


def linear_grid(alpha: float, beta: float, n: int) -> Tensor:
    """Multipliers ``α + i (β - α) / n`` for ``i = 0..n``, dropping non-positive ones.

    >>> linear_grid(0.5, 1.0, 5)
    tensor([0.5000, 0.6000, 0.7000, 0.8000, 0.9000, 1.0000])
    """
    if n < 1 or beta <= alpha:
        raise ValueError(f"need n >= 1 and beta > alpha, got n={n}, alpha={alpha}, beta={beta}")
    grid = alpha + torch.arange(n + 1, dtype=torch.float64) * (beta - alpha) / n
    return grid[grid > 0].to(torch.float32)


def pick(scores: Tensor, idx: Tensor, tie_tolerance: float = 0.0) -> Tensor:
    """Per column, the row of ``scores`` (K, C) to take: the argmin, or with ``tie_tolerance`` > 0
    the row of smallest ``idx`` (grid indices, same shape) among those within
    ``tie_tolerance · |min|`` of the column's minimum.

    >>> s = torch.tensor([[1.0000001, 5.0], [1.0, 4.0]])
    >>> i = torch.tensor([[0, 0], [1, 1]])
    >>> pick(s, i), pick(s, i, tie_tolerance=1e-6)
    (tensor([1, 1]), tensor([0, 1]))
    """
    if tie_tolerance <= 0:
        return scores.argmin(0)
    best = scores.min(0, keepdim=True).values
    tied = scores <= best + tie_tolerance * best.abs()
    big = torch.iinfo(torch.long).max
    smallest = torch.where(tied, idx.long(), torch.full_like(idx, big, dtype=torch.long)).min(0, keepdim=True).values
    return (tied & (idx.long() == smallest)).long().argmax(0)


def _score_indices(score: ScoreFn, grid: Tensor, idx: Tensor, chunk: int) -> Tensor:
    """Scores of candidates ``grid[idx]`` (idx: (K, C) integer), evaluated ``chunk`` at a time."""
    parts = [score(grid[idx[i : i + chunk]]) for i in range(0, idx.shape[0], chunk)]
    return torch.cat(parts, 0)


def search(
    score: ScoreFn,
    grid: Tensor,
    channels: int = 1,
    strategy: SearchStrategy = "grid",
    stride: int = 5,
    chunk: int = 8,
    around: Tensor | None = None,
    refine: int = 1,
    tie_tolerance: float = 0.0,
) -> tuple[Tensor, int]:
    """Find, for each channel, the grid multiplier of lowest score.

    Args:
        score: maps multipliers of shape ``(K, C)`` to scores of shape ``(K, C)``.
        grid: the candidate multipliers, shape ``(G,)``.
        channels: C, the number of independently searched channels.
        strategy: ``grid`` (exhaustive) or ``coarse_to_fine``.
        stride: coarse step, in grid points, for ``coarse_to_fine``.
        chunk: how many candidates ``score`` receives at once (memory/speed trade-off).
        around: for ``coarse_to_fine``, per-channel grid indices of a previous answer: skip the
            coarse pass and score only the points within ``stride`` of them.
        refine: for ``coarse_to_fine``, how many of the best coarse points per channel have
            their neighbourhood scored (more finds the grid's minimum on bumpier curves).
        tie_tolerance: relative score band counted as a tie (see the module's **Ties**; 0: argmin).

    Returns:
        ``(best, evaluations)``: the best multiplier per channel, shape ``(C,)``, and how many
        candidate evaluations (calls' K summed) were made.

    >>> grid = linear_grid(0.1, 2.0, 19)
    >>> target = torch.tensor([0.5, 1.5])
    >>> best, _ = search(lambda m: (m - target).abs(), grid, channels=2, strategy="coarse_to_fine")
    >>> best
    tensor([0.5000, 1.5000])
    """
    if strategy not in ("grid", "coarse_to_fine"):
        raise ValueError(f"unknown search strategy {strategy!r}")
    g = grid.numel()
    arange_c = torch.arange(channels)
    if strategy == "grid" or g <= 2 * stride + 1:
        idx = torch.arange(g).unsqueeze(1).expand(g, channels)
        scores = _score_indices(score, grid, idx, chunk)
        best = pick(scores, idx, tie_tolerance)
        return grid[best], g
    if around is not None:
        return _local(score, grid, around.long(), stride, chunk, arange_c, tie_tolerance=tie_tolerance)
    coarse = torch.arange(0, g, stride)
    if coarse[-1] != g - 1:
        coarse = torch.cat([coarse, torch.tensor([g - 1])])
    idx = coarse.unsqueeze(1).expand(-1, channels)
    scores = _score_indices(score, grid, idx, chunk)
    k = min(refine, coarse.numel())
    top = scores.topk(k, dim=0, largest=False)  # (k, C)
    centres = coarse[top.indices]
    if k == 1:
        best, n = _local(score, grid, centres[0], stride, chunk, arange_c, top.values[0], tie_tolerance)
        return best, coarse.numel() + n
    # neighbourhoods of the k best coarse points, each point once: score the union
    offsets = torch.arange(-stride + 1, stride)
    near = (centres.unsqueeze(1) + offsets.view(1, -1, 1)).clamp(0, g - 1).reshape(-1, channels)  # (k*(2s-1), C)
    is_coarse = (near % stride == 0) | (near == g - 1)
    # per channel, a sorted unique set padded by repeating its last point (scored again, harmless)
    near = torch.where(is_coarse, torch.full_like(near, -1), near)
    uniq = near.sort(0).values
    dup = torch.zeros_like(uniq, dtype=torch.bool)
    dup[1:] = uniq[1:] == uniq[:-1]
    uniq = torch.where(dup | (uniq < 0), torch.full_like(uniq, g), uniq).sort(0).values
    count = int((uniq < g).sum(0).max())
    if count == 0:
        return grid[centres[0]], coarse.numel()
    uniq = uniq[:count]
    last = uniq.gather(0, ((uniq < g).sum(0, keepdim=True) - 1).clamp_min(0))
    uniq = torch.where(uniq < g, uniq, last)
    fine = _score_indices(score, grid, uniq, chunk)
    all_idx = torch.cat([centres[:1], uniq], 0)
    all_scores = torch.cat([top.values[:1], fine], 0)
    return grid[all_idx[pick(all_scores, all_idx, tie_tolerance), arange_c]], coarse.numel() + count


def _local(
    score: ScoreFn, grid: Tensor, centre: Tensor, stride: int, chunk: int, arange_c: Tensor,
    centre_scores: Tensor | None = None, tie_tolerance: float = 0.0,
) -> tuple[Tensor, int]:
    """Best of the points within ``stride`` of each channel's ``centre`` (its score may be known)."""
    g = grid.numel()
    offsets = torch.arange(-stride + 1, stride)
    if centre_scores is not None:
        offsets = offsets[offsets != 0]
    idx = (centre.unsqueeze(0) + offsets.unsqueeze(1)).clamp(0, g - 1)  # (offsets, C)
    scores = _score_indices(score, grid, idx, chunk)
    if centre_scores is not None:
        idx = torch.cat([centre.unsqueeze(0), idx], 0)
        scores = torch.cat([centre_scores.unsqueeze(0), scores], 0)
    return grid[idx[pick(scores, idx, tie_tolerance), arange_c]], offsets.numel()
