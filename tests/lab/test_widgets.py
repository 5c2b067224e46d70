"""Headless tests of the notebook explorers: change a control, check the figure follows.

The explorers redraw through plain functions of their control values, so no kernel or browser is
needed: setting ``explorer.block.value`` runs the same callback a browser change would.
"""
from __future__ import annotations

import pytest

from ptqlib.lab import activations, fitting
from ptqlib.lab.widgets import ActivationExplorer, TwinExplorer, figure_png


@pytest.fixture(scope="module")
def acts(model, images):
    """The lab fixtures' test_vit and images (tests/lab/conftest.py), on fewer rows."""
    return activations.capture_activations(model, images, max_tokens=48)


@pytest.fixture
def explorer(acts):
    return ActivationExplorer(acts, block=1, layer="post-softmax", bits=4)


def test_initial_view(explorer, acts):
    assert explorer.updates == 1
    assert explorer.info["block"] == 1 and explorer.info["layer"] == "post-softmax"
    assert explorer.info["title"].startswith("block 1 · post-softmax · 4-bit uniform")
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "block 1" in explorer.summary.value
    assert explorer.block.options == tuple(acts.blocks)


def test_changing_the_block_redraws(explorer, acts):
    png, title = explorer.image.value, explorer.info["title"]
    explorer.block.value = 3
    assert explorer.updates == 2
    assert explorer.info["block"] == 3 and "block 3" in explorer.info["title"] != title
    assert explorer.image.value != png
    assert explorer.figure.axes[0].get_title() == explorer.info["title"]
    assert explorer.info["values"] == acts.values("post-softmax", 3).numel()


def test_changing_layer_and_quantizer(explorer):
    explorer.layer.value = "post-GELU"
    assert explorer.info["kind"] == "uniform" and explorer.head.disabled
    explorer.quantizer.value = "twin-uniform"
    assert explorer.info["kind"] == "twin-gelu"
    assert len(explorer.info["mses"]) == 2  # twin against the best uniform
    explorer.layer.value = "qkv input"
    assert explorer.info["kind"] == "uniform" and "no twin-uniform quantizer" in explorer.info["title"]
    explorer.layer.value = "post-softmax"
    assert explorer.info["kind"] == "twin-softmax" and not explorer.head.disabled


def test_changing_head_and_bits(explorer, acts):
    explorer.head.value = 1
    assert explorer.info["values"] == acts.values("post-softmax", 1, 1).numel()
    assert "head 1" in explorer.info["title"]
    explorer.bits.value = 6
    assert explorer.info["bits"] == 6 and explorer.info["levels"] == 64  # unsigned uniform, 2^6 levels
    mse6 = explorer.info["mse"]
    explorer.bits.value = 3
    assert explorer.info["levels"] == 8 and explorer.info["mse"] > mse6


def test_fits_are_cached(explorer):
    explorer.block.value = 2
    explorer.block.value = 1
    n = len(explorer._fits)
    explorer.block.value = 2
    assert len(explorer._fits) == n


def test_widget_tree_and_png(explorer):
    classes = explorer.widget._dom_classes
    assert "ptqlib-explorer" in classes
    assert "ptqlib-block" in explorer.block._dom_classes
    assert explorer.image in explorer.widget.children
    assert figure_png(explorer.figure)[:4] == b"\x89PNG"


@pytest.fixture
def twin(acts):
    return TwinExplorer({"post-softmax": acts.values("post-softmax", 0), "post-GELU": acts.values("post-GELU", 0)},
                        kind="post-softmax", bits=4)


def test_twin_explorer_starts_at_the_best_split(twin, acts):
    best = fitting.fit_twin_softmax(acts.values("post-softmax", 0), 4).m
    assert twin.m.value == best and (twin.m.min, twin.m.max) == (0, 3)
    assert twin.info["m"] == best and twin.updates == 1


def test_twin_explorer_split_slider(twin):
    twin.m.value = 1
    assert twin.info["steps"]["fine"] == pytest.approx(2.0 ** -3 / 2)
    png = twin.image.value
    twin.m.value = 3
    assert twin.info["steps"]["fine"] == pytest.approx(2.0 ** -3 / 8) and twin.image.value != png
    assert twin.info["m"] == 3 and "m = 3" in twin.info["title"]


def test_twin_explorer_bits_and_kind(twin):
    n = twin.updates
    twin.bits.value = 6
    assert twin.updates == n + 1  # one redraw per change, even when m is adjusted
    assert twin.m.max == 5 and twin.info["bits"] == 6
    twin.m.value = 5
    twin.bits.value = 3
    assert twin.m.value == 2 and twin.info["m"] == 2  # clamped to the new range
    twin.kind.value = "post-GELU"
    assert (twin.m.min, twin.m.max) == (-2, 12) and twin.info["kind"] == "post-GELU"
    assert "Δp" in twin.info["title"]
    twin.kind.value = "post-softmax"
    assert (twin.m.min, twin.m.max) == (0, 2)
