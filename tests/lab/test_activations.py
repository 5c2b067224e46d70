"""ptqlib.lab.activations: activations captured by kind and block, their statistics and outliers.

The fixtures (tests/lab/conftest.py) capture a random ``test_vit``; the real-data test at the end
uses ViT-Tiny.
"""
from __future__ import annotations

import pytest
import torch

from ptqlib.errors import PtqlibError
from ptqlib.lab import activations, fitting, notebook_data


def test_capture_shapes_and_softmax_rows_sum_to_one(acts, model):
    heads = model.blocks[0].attn.num_heads
    assert acts.blocks == list(range(len(model.blocks))) and acts.num_heads == heads
    soft = acts.data[("post-softmax", 0)]
    n_tokens = 1 + (160 // 16) ** 2
    assert soft.shape[0] == heads
    rows = soft.reshape(heads, -1, n_tokens).sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    gelu = acts.channels("post-GELU", 0)
    assert gelu.shape[1] == model.blocks[0].mlp.fc1.out_features and gelu.shape[0] <= 64
    assert float(gelu.min()) >= -0.1701  # GELU's minimum


def test_values_by_head(acts):
    soft_all = acts.values("post-softmax", 1)
    per_head = [acts.values("post-softmax", 1, h) for h in range(acts.num_heads)]
    assert sum(v.numel() for v in per_head) == soft_all.numel()
    assert sum(acts.values("proj input", 1, h).numel() for h in range(acts.num_heads)) == acts.values("proj input", 1).numel()
    assert acts.values("qkv input", 1, 1).numel() == acts.values("qkv input", 1).numel()  # no heads: ignored
    with pytest.raises(PtqlibError):
        acts.channels("post-softmax", 1)
    with pytest.raises(PtqlibError, match="head"):
        acts.values("post-softmax", 1, acts.num_heads)
    with pytest.raises(PtqlibError, match="no 'post-GELU'"):
        acts.values("post-GELU", 99)


def test_capture_selected_kinds_and_blocks(model, images):
    a = activations.capture_activations(model, images, kinds=["post-GELU"], blocks=[2, 4], max_tokens=16)
    assert set(a.data) == {("post-GELU", 2), ("post-GELU", 4)}
    with pytest.raises(PtqlibError, match="unknown activation kinds"):
        activations.capture_activations(model, images, kinds=["softmax"])


def test_activation_stats_and_channel_absmax(acts):
    stats = activations.activation_stats(acts, bits=8)
    assert set(stats["kind"]) == set(acts.kinds) and len(stats) == len(acts.kinds) * len(acts.blocks)
    g = torch.randn(100_000, generator=torch.Generator().manual_seed(1))
    skew, kurt = activations._moments(g)
    assert abs(skew) < 0.05 and abs(kurt) < 0.1  # a Gaussian: 0 and 0
    absmax = activations.channel_absmax(acts, "post-GELU")
    assert absmax.shape == (len(acts.blocks), acts.channels("post-GELU", 0).shape[1])
    table = activations.channel_outlier_table(absmax, acts.blocks, top=3)
    assert list(table["block"]) == acts.blocks and all(len(u) == 3 for u in table["top units"])


def _hand_made(data: dict, blocks: list[int], num_heads: int = 2) -> activations.Activations:
    return activations.Activations(data=data, blocks=blocks, kinds=sorted({k for k, _ in data}), num_heads=num_heads,
                                   model_name="by hand", images=1, rows_per_site=None)


def test_values_and_heads_of_hand_made_activations():
    # proj input: (rows, channels), heads' channels side by side (2 heads of 2 channels)
    # post-softmax: (heads, values)
    acts = _hand_made({("proj input", 0): torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]),
                       ("post-softmax", 0): torch.tensor([[0.1, 0.9], [0.7, 0.3]])}, [0])
    assert acts.values("proj input", 0).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert acts.values("proj input", 0, 0).tolist() == [1.0, 2.0, 5.0, 6.0]
    assert acts.values("proj input", 0, 1).tolist() == [3.0, 4.0, 7.0, 8.0]
    assert acts.values("post-softmax", 0, 1).tolist() == pytest.approx([0.7, 0.3])


def test_channel_absmax_and_outlier_table_by_hand():
    acts = _hand_made({("post-GELU", 0): torch.tensor([[0.5, -3.0, 1.0, 0.0], [-2.0, 1.0, 0.25, 4.0]]),
                       ("post-GELU", 1): torch.tensor([[1.0, -1.0, 10.0, 0.5], [0.0, 2.0, -1.0, -0.5]])}, [0, 1])
    absmax = activations.channel_absmax(acts, "post-GELU")
    assert absmax.tolist() == [[2.0, 3.0, 1.0, 4.0], [1.0, 2.0, 10.0, 0.5]]  # largest |x| per column
    table = activations.channel_outlier_table(absmax, [0, 1], top=3)
    assert list(table["block"]) == [0, 1]
    assert list(table["max |x|"]) == [4.0, 10.0]
    assert list(table["median unit max"]) == [2.0, 1.0]  # the lower middle of 4 sorted maxima
    assert list(table["max / median"]) == [2.0, 10.0]
    assert list(table["top units"]) == [[3, 1, 0], [2, 1, 0]]
    assert list(table["their max"]) == [[4.0, 3.0, 2.0], [10.0, 2.0, 1.0]]


def test_real_vit_tiny_activations_are_what_the_paper_says(shared_data):
    d = notebook_data.load_notebook_data("vit_tiny_patch16_224", shared_data.root, calib_images=2, val_images=4)
    assert d.real_weights and "calib32.txt" in d.source and len(d.val) == 4
    acts = activations.capture_activations(d.model, d.calib_images, kinds=["post-softmax", "post-GELU", "qkv input"],
                                 blocks=[0, 9], max_tokens=128)
    stats = activations.activation_stats(acts).set_index(["kind", "block"])
    for block in (0, 9):
        assert stats.loc[("post-softmax", block), "excess_kurtosis"] > 10 > stats.loc[("qkv input", block), "excess_kurtosis"]
        assert stats.loc[("post-softmax", block), "zero_share_8bit"] > 0.5
    soft = acts.values("post-softmax", 9)
    assert fitting.fit_quantizer(soft, "twin-uniform", 6, "softmax").mse(soft) < fitting.fit_uniform(soft, 6, signed=False).mse(soft)

