"""Weight error correction: change a Linear layer's float weights so that, fed its *quantized*
input, it computes what the float layer computes on the float input (ERQ, Zhong et al., ICML'24,
its activation-error reduction).

With ``X`` the float inputs (rows), ``X̂ = Q(X)`` the quantized ones and ``W`` the float weights,
the corrected weights solve the ridge regression ::

    W' = argmin_V ‖X Wᵀ − X̂ Vᵀ‖² + λ ‖V − W‖²,        λ = ρ · mean_i (X̂ᵀX̂)_ii

whose normal equations give, in closed form, ::

    (X̂ᵀX̂ + λI) W'ᵀ = (X̂ᵀX + λI) Wᵀ.

``ρ = 0`` is least squares (exact on the rows, over-fitted when the rows are few); ``ρ → ∞`` keeps
``W``. Weight quantization then quantizes ``W'`` instead of ``W``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ridge_correction"]


def ridge_correction(x: Tensor, x_hat: Tensor, weight: Tensor, rho: float, row_weight: Tensor | None = None) -> Tensor:
    """The weights ``W'`` (``weight``'s shape and dtype) that absorb the input error ``x_hat - x``.

    Args:
        x: float inputs ``(T, in)``.
        x_hat: the quantized inputs ``(T, in)``.
        weight: float weights ``(out, in)``.
        rho: the ridge strength relative to the mean diagonal of ``X̂ᵀX̂`` (``> 0``, finite).
        row_weight: optional non-negative weight per row ``(T,)`` (a row's importance); rows count
            equally when None.

    Solved in float64. For one input feature and no ridge the answer is ``w · Σxx̂ / Σx̂²``:

    >>> x, xq = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    >>> ridge_correction(x, xq, torch.tensor([[3.0]]), 1e-12)   # 3 · (1 + 2) / 2
    tensor([[4.5000]])
    """
    if x.shape != x_hat.shape or x.ndim != 2 or weight.ndim != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"need x and x_hat (T, in) and weight (out, in); got {tuple(x.shape)}, "
                         f"{tuple(x_hat.shape)} and {tuple(weight.shape)}")
    if not (rho > 0 and math.isfinite(rho)):  # ρ = ∞ would give NaN weights, not W
        raise ValueError(f"rho must be positive and finite, got {rho!r}")
    xd, xqd, wd = x.double(), x_hat.double(), weight.double()
    if row_weight is not None:
        root = row_weight.double().clamp_min(0).sqrt().unsqueeze(1)
        xd, xqd = xd * root, xqd * root
    gram = xqd.T @ xqd
    lam = rho * float(gram.diagonal().mean().clamp_min(1e-30))
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    rhs = (xqd.T @ xd + lam * eye) @ wd.T
    return torch.linalg.solve(gram + lam * eye, rhs).T.to(weight.dtype)
