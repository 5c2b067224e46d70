"""Distances between a layer's float output ``O`` and its quantized output ``Ô``: lower is better.

One signature for all: ``metric(out, out_hat, grad=None, channel_dim=None) -> Tensor``.

* ``out`` is the float output; ``out_hat`` the quantized one, possibly with extra *leading* dims
  (a batch of candidate scales: shape ``(K, *out.shape)``) that are kept in the result.
* ``channel_dim`` (a dim of ``out``) is kept too, so a per-channel or per-head scale search
  scores every channel at once; all other dims of ``out`` are reduced.
* ``grad`` is ``∂L/∂O`` (same shape as ``out``), used by the Hessian-guided distance only.

Definitions, with the mean over the reduced elements::

    mse      E[(O - Ô)²]
    l1       E[|O - Ô|]
    hessian  E[(∂L/∂O)² (O - Ô)²]      PTQ4ViT's Hessian-guided metric (a diagonal Fisher weight)
    cosine   1 - <O, Ô> / (|O| |Ô|)    over the reduced elements as one vector
    pearson  1 - corr(O, Ô)            cosine of the mean-centred vectors
    cosine_token  1 - E_rows[cos(O_r, Ô_r)]  cosine of each row (last dim) of O, averaged

``cosine`` takes the reduced tensor as one vector, which is defined for every search;
``cosine_token`` is the official code's: each row (a token's output features, a row of
attention scores) scored apart, then averaged, so every token counts the same whatever its
norm. Rows are the last dim; with ``channel_dim`` the last dim the row *is* one channel's value
per token, which no per-row cosine can separate, so ``cosine_token`` then falls back to ``cosine``.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

__all__ = ["MetricName", "METRICS", "mse", "l1", "hessian", "cosine", "pearson", "cosine_token", "get_metric"]

MetricName = Literal["mse", "l1", "hessian", "cosine", "pearson", "cosine_token"]
Metric = Callable[..., Tensor]


def _reduce_dims(out: Tensor, out_hat: Tensor, channel_dim: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The dims to reduce, counted in ``out_hat`` and in ``out``."""
    lead = out_hat.ndim - out.ndim
    if lead < 0 or out_hat.shape[lead:] != out.shape:
        raise ValueError(f"out_hat {tuple(out_hat.shape)} must end with out's shape {tuple(out.shape)}")
    keep = None if channel_dim is None else channel_dim % out.ndim
    out_dims = tuple(d for d in range(out.ndim) if d != keep)
    return tuple(d + lead for d in out_dims), out_dims


def mse(out: Tensor, out_hat: Tensor, grad: Tensor | None = None, channel_dim: int | None = None) -> Tensor:
    """Mean squared error ``E[(O - Ô)²]``.

    >>> mse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    tensor(2.)
    """
    dims, _ = _reduce_dims(out, out_hat, channel_dim)
    return (out_hat - out).square().mean(dims)


def l1(out: Tensor, out_hat: Tensor, grad: Tensor | None = None, channel_dim: int | None = None) -> Tensor:
    """Mean absolute error ``E[|O - Ô|]``.

    >>> l1(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
    tensor(1.5000)
    """
    dims, _ = _reduce_dims(out, out_hat, channel_dim)
    return (out_hat - out).abs().mean(dims)


def hessian(out: Tensor, out_hat: Tensor, grad: Tensor | None = None, channel_dim: int | None = None) -> Tensor:
    """Hessian-guided distance ``E[(∂L/∂O)² (O - Ô)²]``: the second-order Taylor term of the task
    loss with the Hessian approximated by the diagonal Fisher ``(∂L/∂O)²``.

    >>> hessian(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]), grad=torch.tensor([3.0, 0.5]))
    tensor(5.)
    """
    if grad is None:
        raise ValueError("the hessian metric needs the output gradient ∂L/∂O (capture with grads)")
    dims, _ = _reduce_dims(out, out_hat, channel_dim)
    if grad.shape != out.shape:
        raise ValueError(f"grad {tuple(grad.shape)} must have out's shape {tuple(out.shape)}")
    return ((out_hat - out).square() * grad.square()).mean(dims)


def cosine(out: Tensor, out_hat: Tensor, grad: Tensor | None = None, channel_dim: int | None = None) -> Tensor:
    """Cosine distance ``1 - cos(O, Ô)`` over the reduced elements.

    >>> cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    tensor(1.)
    """
    dims, out_dims = _reduce_dims(out, out_hat, channel_dim)
    dot = (out * out_hat).sum(dims)
    norms = out.square().sum(out_dims).sqrt() * out_hat.square().sum(dims).sqrt()
    return 1 - dot / norms.clamp_min(torch.finfo(out.dtype).tiny)


def pearson(out: Tensor, out_hat: Tensor, grad: Tensor | None = None, channel_dim: int | None = None) -> Tensor:
    """Pearson distance ``1 - corr(O, Ô)``: the cosine distance of the mean-centred tensors.

    >>> pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0]))
    tensor(0.)
    """
    dims, out_dims = _reduce_dims(out, out_hat, channel_dim)
    o = out - out.mean(out_dims, keepdim=True)
    oh = out_hat - out_hat.mean(dims, keepdim=True)
    dot = (o * oh).sum(dims)
    norms = o.square().sum(out_dims).sqrt() * oh.square().sum(dims).sqrt()
    return 1 - dot / norms.clamp_min(torch.finfo(out.dtype).tiny)


def cosine_token(out: Tensor, out_hat: Tensor, grad: Tensor | None = None, channel_dim: int | None = None) -> Tensor:
    """Per-row cosine distance ``1 - E_r[cos(O_r, Ô_r)]``: each row (the last dim) of ``O`` scored
    apart and averaged over the rows (the official PTQ4ViT code's ``cosine``). A ``channel_dim``
    other than the last is kept; with the last dim as ``channel_dim`` it is :func:`cosine`.

    >>> o = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    >>> cosine_token(o, torch.tensor([[0.0, 1.0], [0.0, 10.0]]))  # rows: 1 - 0 and 1 - 1
    tensor(0.5000)
    >>> cosine(o, torch.tensor([[0.0, 1.0], [0.0, 10.0]]))  # one vector: 1 - 100/101, the large row dominates
    tensor(0.0099)
    """
    dims, out_dims = _reduce_dims(out, out_hat, channel_dim)
    if channel_dim is not None and channel_dim % out.ndim == out.ndim - 1:
        return cosine(out, out_hat, grad, channel_dim)
    tiny = torch.finfo(out.dtype).tiny
    cos = (out * out_hat).sum(-1) / (out.norm(dim=-1) * out_hat.norm(dim=-1)).clamp_min(tiny)
    rows = tuple(d for d in dims if d != out_hat.ndim - 1)  # the reduced dims of cos (the last is gone)
    return 1 - (cos.mean(rows) if rows else cos)


METRICS: dict[str, Metric] = {"mse": mse, "l1": l1, "hessian": hessian, "cosine": cosine, "pearson": pearson,
                              "cosine_token": cosine_token}


def get_metric(name: str) -> Metric:
    """The metric called ``name`` (one of :data:`METRICS`)."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}") from None
