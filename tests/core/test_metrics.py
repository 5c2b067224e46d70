"""Tests for ptqlib.core.metrics on tiny hand-computed tensors (arithmetic in the comments)."""
from __future__ import annotations

import math

import pytest
import torch

from ptqlib.core.metrics import METRICS, cosine, get_metric, hessian, l1, mse, pearson


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(a: torch.Tensor, b, atol: float = 1e-6) -> bool:
    b = torch.as_tensor(b, dtype=a.dtype)
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=atol)


# A 2x3 example shared by the per-channel tests.
OUT = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
OUT_HAT = t([[1.0, 2.0, 4.0], [4.0, 7.0, 6.0]])  # diff = [[0, 0, 1], [0, 2, 0]]
GRAD = t([[1.0, 1.0, 2.0], [1.0, 3.0, 1.0]])  # grad² = [[1, 1, 4], [1, 9, 1]]


# ----------------------------------------------------------------------------- mse / l1 / hessian


def test_mse_hand_values():
    # diff² = [[0, 0, 1], [0, 4, 0]]
    assert close(mse(OUT, OUT_HAT), 5 / 6)  # (1 + 4) / 6
    assert close(mse(OUT, OUT_HAT, channel_dim=0), [1 / 3, 4 / 3])  # rows: 1/3, 4/3
    assert close(mse(OUT, OUT_HAT, channel_dim=1), [0.0, 2.0, 0.5])  # cols: 0/2, 4/2, 1/2
    assert close(mse(OUT, OUT_HAT, channel_dim=-1), [0.0, 2.0, 0.5])
    assert close(mse(t([1.0, 2.0]), t([1.0, 4.0])), 2.0)  # (0 + 4) / 2


def test_l1_hand_values():
    # |diff| = [[0, 0, 1], [0, 2, 0]]
    assert close(l1(OUT, OUT_HAT), 0.5)  # 3 / 6
    assert close(l1(OUT, OUT_HAT, channel_dim=0), [1 / 3, 2 / 3])
    assert close(l1(OUT, OUT_HAT, channel_dim=1), [0.0, 1.0, 0.5])
    assert close(l1(t([1.0, 2.0]), t([0.0, 4.0])), 1.5)  # (1 + 2) / 2


def test_hessian_hand_values():
    # grad² · diff² = [[0, 0, 4·1], [0, 9·4, 0]] = [[0, 0, 4], [0, 36, 0]]
    assert close(hessian(OUT, OUT_HAT, grad=GRAD), 40 / 6)
    assert close(hessian(OUT, OUT_HAT, grad=GRAD, channel_dim=0), [4 / 3, 12.0])  # 4/3, 36/3
    assert close(hessian(OUT, OUT_HAT, grad=GRAD, channel_dim=1), [0.0, 18.0, 2.0])  # 0, 36/2, 4/2
    # docstring example: diff = [1, 2], grad² = [9, 0.25] -> (9 + 1) / 2 = 5
    assert close(hessian(t([1.0, 2.0]), t([2.0, 4.0]), grad=t([3.0, 0.5])), 5.0)


def test_hessian_with_unit_grad_equals_mse():
    assert close(hessian(OUT, OUT_HAT, grad=torch.ones_like(OUT)), mse(OUT, OUT_HAT))


def test_hessian_without_grad_raises():
    with pytest.raises(ValueError):
        hessian(OUT, OUT_HAT)
    with pytest.raises(ValueError):
        get_metric("hessian")(OUT, OUT_HAT, channel_dim=0)


# ----------------------------------------------------------------------------- cosine / pearson


def test_cosine_hand_values():
    out = t([[1.0, 0.0, 2.0], [3.0, 4.0, 0.0]])
    out_hat = t([[0.0, 1.0, 2.0], [3.0, 4.0, 0.0]])
    # whole: <O,Ô> = 4 + 9 + 16 = 29; |O|² = 1+4+9+16 = 30, |Ô|² = 1+4+9+16 = 30 -> 1 - 29/30
    assert close(cosine(out, out_hat), 1 / 30)
    # rows: row 0: dot 4, norms √5·√5 -> 1 - 4/5 = 0.2; row 1 identical -> 0
    assert close(cosine(out, out_hat, channel_dim=0), [0.2, 0.0])
    # cols: c0 (1,3)·(0,3) = 9, √10·3 -> 1 - 3/√10; c1 (0,4)·(1,4) = 16, 4·√17 -> 1 - 4/√17;
    #       c2 (2,0)·(2,0) = 4, 2·2 -> 0
    assert close(cosine(out, out_hat, channel_dim=1), [1 - 3 / math.sqrt(10), 1 - 4 / math.sqrt(17), 0.0])
    # orthogonal -> 1, opposite -> 2
    assert close(cosine(t([1.0, 0.0]), t([0.0, 2.0])), 1.0)
    assert close(cosine(t([1.0, 2.0]), t([-1.0, -2.0])), 2.0)


def test_pearson_hand_values():
    out = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out_hat = t([[1.0, 3.0, 2.0], [6.0, 5.0, 4.0]])
    # row 0: centred O = [-1, 0, 1], Ô = [-1, 1, 0]: dot 1, norms √2·√2 -> 1 - 1/2 = 0.5
    # row 1: centred O = [-1, 0, 1], Ô = [1, 0, -1]: corr -1 -> 2
    assert close(pearson(out, out_hat, channel_dim=0), [0.5, 2.0])
    # cols (two points each, both increasing): corr 1 -> 0
    assert close(pearson(out, out_hat, channel_dim=1), [0.0, 0.0, 0.0])
    # whole: both means 3.5; O - 3.5 = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5],
    # Ô - 3.5 = [-2.5, -0.5, -1.5, 2.5, 1.5, 0.5]; dot = 6.25+0.75+0.75+1.25+2.25+1.25 = 12.5;
    # |.|² = 17.5 each -> 1 - 12.5/17.5 = 2/7
    assert close(pearson(out, out_hat), 2 / 7)


def test_cosine_and_pearson_zero_for_identical_and_scaled():
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    for metric in (cosine, pearson):
        assert close(metric(x, x), 0.0)
        assert close(metric(x, 3.0 * x), 0.0)
        assert close(metric(x, x, channel_dim=0), torch.zeros(4))
        assert close(metric(x, 0.5 * x, channel_dim=1), torch.zeros(5))
    # pearson ignores a shift, cosine does not
    assert close(pearson(x, 2.0 * x + 5.0), 0.0, atol=1e-5)
    assert close(pearson(x, 2.0 * x - 1.0, channel_dim=1), torch.zeros(5), atol=1e-5)
    assert float(cosine(x, x + 5.0)) > 0.1


def test_mse_l1_hessian_zero_for_identical():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    for metric in (mse, l1):
        assert torch.equal(metric(x, x), torch.tensor(0.0))
    assert torch.equal(hessian(x, x, grad=x), torch.tensor(0.0))


# ----------------------------------------------------------------------------- candidates


def _metric_kwargs(name: str, out: torch.Tensor) -> dict:
    return {"grad": torch.linspace(-1, 2, out.numel()).view(out.shape)} if name == "hessian" else {}


@pytest.mark.parametrize("channel_dim", [None, 0, 1, -1])
@pytest.mark.parametrize("name", sorted(METRICS))
def test_leading_candidate_dim_equals_separate_calls(name, channel_dim):
    # out_hat of shape (K, *out.shape) gives K results, each equal to scoring that candidate alone.
    gen = torch.Generator().manual_seed(2)
    out = torch.randn(3, 4, generator=gen)
    out_hat = out + 0.3 * torch.randn(5, 3, 4, generator=gen)
    metric = get_metric(name)
    kw = _metric_kwargs(name, out)
    batched = metric(out, out_hat, channel_dim=channel_dim, **kw)
    separate = torch.stack([metric(out, oh, channel_dim=channel_dim, **kw) for oh in out_hat])
    assert batched.shape == separate.shape
    assert torch.allclose(batched, separate, rtol=1e-5, atol=1e-6)


def test_cosine_candidates_hand_values_per_column():
    # out (2, 2), channel_dim=-1 (columns), one candidate: out_hat (1, 2, 2).
    out = t([[1.0, 0.0], [1.0, 2.0]])
    out_hat = t([[[1.0, 0.0], [2.0, 3.0]]])
    # col 0: (1,1)·(1,2) = 3, √2·√5 -> 1 - 3/√10; col 1: (0,2)·(0,3) = 6, 2·3 -> 1 - 1 = 0
    expected = [1 - 3 / math.sqrt(10), 0.0]
    assert close(cosine(out, out_hat[0], channel_dim=-1), expected)
    assert close(cosine(out, out_hat, channel_dim=-1), [expected])


def test_pearson_candidates_hand_values_per_column():
    # out (3, 2), channel_dim=-1 (columns), one candidate: out_hat (1, 3, 2).
    out = t([[1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    out_hat = t([[[1.0, 2.0], [3.0, 1.0], [2.0, 0.0]]])
    # col 0: O (1,2,3) - 2 = (-1,0,1); Ô (1,3,2) - 2 = (-1,1,0): dot 1, √2·√2 -> 1 - 1/2 = 0.5
    # col 1: O (0,2,1) - 1 = (-1,1,0); Ô (2,1,0) - 1 = (1,0,-1): dot -1, √2·√2 -> 1 + 1/2 = 1.5
    expected = [0.5, 1.5]
    assert close(pearson(out, out_hat[0], channel_dim=-1), expected)
    assert close(pearson(out, out_hat, channel_dim=-1), [expected])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(METRICS))
def test_mismatched_broadcastable_shapes_raise(name):
    # Shapes that torch would broadcast but where out_hat does not end with out's shape.
    for out_shape, hat_shape in [((2, 3), (1, 3)), ((2, 3), (3,)), ((2, 1), (2, 3)), ((2, 3), (2, 1, 3))]:
        out, out_hat = torch.ones(out_shape), torch.ones(hat_shape)
        with pytest.raises(ValueError):
            get_metric(name)(out, out_hat, grad=torch.ones(out_shape))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_mismatched_non_broadcastable_shapes_raise_value_error(name):
    # The documented error for a bad out_hat shape is ValueError, whatever the shapes.
    for out_shape, hat_shape in [((2, 3), (3, 2)), ((2, 3), (2,)), ((2, 3), (2, 3, 1)), ((6,), (2, 3))]:
        out, out_hat = torch.ones(out_shape), torch.ones(hat_shape)
        with pytest.raises(ValueError):
            get_metric(name)(out, out_hat, grad=torch.ones(out_shape))


def test_get_metric():
    assert get_metric("mse") is mse
    assert get_metric("l1") is l1
    assert get_metric("hessian") is hessian
    assert get_metric("cosine") is cosine
    assert get_metric("pearson") is pearson
    assert set(METRICS) == {"mse", "l1", "hessian", "cosine", "pearson", "cosine_token"}
    for bad in ("MSE", "kl", ""):
        with pytest.raises(ValueError):
            get_metric(bad)


def test_cosine_token_is_the_mean_of_per_row_cosines():
    """The official code's cosine: each row scored apart (hand-computed), candidates and a kept
    channel dim as for the other metrics; the last dim as channel falls back to ``cosine``."""
    from ptqlib.core.metrics import cosine_token
    o = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    oh = torch.tensor([[[3.0, 4.0], [0.0, 1.0]],     # rows: cos 1 and cos 0 -> 1 - 0.5
                       [[4.0, 3.0], [1.0, 1.0]]])    # rows: 24/25 and 1/sqrt(2)
    expected = torch.tensor([0.5, 1 - (24 / 25 + 2 ** -0.5) / 2])
    assert torch.allclose(cosine_token(o, oh), expected)
    x = torch.randn(3, 4, 5)
    xh = x + 0.2 * torch.randn(2, 3, 4, 5)
    ref = 1 - torch.nn.functional.cosine_similarity(x.expand_as(xh), xh, dim=-1).mean(1)  # keep dim 1 of x
    assert torch.allclose(cosine_token(x, xh, channel_dim=1), ref, atol=1e-6)
    assert torch.equal(cosine_token(x, xh, channel_dim=-1), cosine(x, xh, channel_dim=-1))
    # a row's norm does not weigh it: scaling one row leaves the per-row cosine unchanged
    big = x.clone()
    big[0] *= 1000
    bigh = xh.clone()
    bigh[:, 0] *= 1000
    assert torch.allclose(cosine_token(big, bigh), cosine_token(x, xh), atol=1e-5)
