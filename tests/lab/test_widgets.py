"""Headless tests of the notebook explorers: change a control, check the figure follows.

The explorers redraw through plain functions of their control values, so no kernel or browser is
needed: setting ``explorer.block.value`` runs the same callback a browser change would. (These
also stand for the checks the notebooks used to run after their explorer cells.)
"""
from __future__ import annotations

import struct

import ipywidgets
import pytest
import torch
import torch.nn.functional as F

from ptqlib.lab import activations, fitting, plots
from ptqlib.lab.widgets import ALL_HEADS, BUSY, ActivationExplorer, TwinExplorer, figure_png

DPI = 40  # small PNGs: the tests check what is drawn, not how crisp


def _png_width(png: bytes) -> int:
    return struct.unpack(">I", png[16:20])[0]


@pytest.fixture(scope="module")
def acts(model, images):
    """The lab fixtures' test_vit and images (tests/lab/conftest.py), on fewer rows."""
    return activations.capture_activations(model, images, max_tokens=48)


@pytest.fixture
def explorer(acts):
    return ActivationExplorer(acts, block=1, layer="post-softmax", bits=4, dpi=DPI)


def test_initial_view(explorer, acts):
    assert explorer.updates == 1
    assert explorer.info["block"] == 1 and explorer.info["layer"] == "post-softmax"
    assert explorer.info["title"].startswith("block 1 · post-softmax · 4-bit uniform")
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "block 1" in explorer.summary.value
    # blocks are chosen on a slider (arrow keys on a closed dropdown move the notebook's cells)
    assert isinstance(explorer.block, ipywidgets.SelectionSlider)
    assert [v for _, v in explorer.block.options] == acts.blocks


def test_head_all_is_a_real_value(explorer, acts):
    assert explorer.head.value == ALL_HEADS is not None and explorer.head.label == "all"
    assert ("all", ALL_HEADS) in explorer.head.options and None not in [v for _, v in explorer.head.options]
    assert explorer.info["head"] is None and explorer.info["values"] == acts.values("post-softmax", 1).numel()
    explorer.head.value = 1
    assert explorer.info["head"] == 1
    explorer.head.value = ALL_HEADS
    assert explorer.info["head"] is None and "head" not in explorer.info["title"]
    assert ActivationExplorer(acts, head=ALL_HEADS, dpi=DPI).head.value == ALL_HEADS


def test_changing_the_block_redraws(explorer, acts):
    png, title = explorer.image.value, explorer.info["title"]
    explorer.block.value = 3
    assert explorer.updates == 2
    assert explorer.info["block"] == 3 and "block 3" in explorer.info["title"] != title
    assert explorer.image.value != png
    assert explorer.figure.axes[0].get_title(loc="left") == explorer.info["title"]
    assert explorer.info["values"] == acts.values("post-softmax", 3).numel()


def test_twin_button_is_disabled_without_a_twin_quantizer(explorer):
    explorer.layer.value = "post-GELU"
    assert explorer.info["kind"] == "uniform" and explorer.head.disabled and not explorer.quantizer.disabled
    explorer.quantizer.value = "twin-uniform"
    assert explorer.info["kind"] == "twin-gelu"
    assert len(explorer.info["mses"]) == 2  # twin against the best uniform
    n = explorer.updates
    explorer.layer.value = "qkv input"
    assert explorer.updates == n + 1  # one redraw, though the quantizer changed too
    assert explorer.quantizer.disabled and explorer.quantizer.value == "uniform"
    assert explorer.info["kind"] == "uniform" and "no twin-uniform quantizer" in explorer.summary.value
    explorer.layer.value = "post-softmax"  # the twin choice comes back where a twin quantizer exists
    assert not explorer.quantizer.disabled and explorer.quantizer.value == "twin-uniform"
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


def test_value_axis_choices(explorer):
    assert explorer.info["xscale"] == "log"  # post-softmax: log values
    explorer.layer.value = "post-GELU"
    assert explorer.info["xscale"] in ("linear", "symlog")
    explorer.axis.value = "symlog"
    assert explorer.info["xscale"] == "symlog" and explorer.figure.axes[0].get_xscale() == "symlog"
    explorer.axis.value = "log"  # GELU has negatives: symmetric log instead
    assert explorer.info["xscale"] == "symlog"
    explorer.axis.value = "linear"
    assert explorer.figure.axes[0].get_xscale() == "linear"


def test_a_massive_activation_gets_a_symmetric_log_axis():
    x = F.gelu(torch.randn(5000, generator=torch.Generator().manual_seed(0)))
    x[0] = 60.0  # one massive activation: on a linear axis every other value lies in one bin
    assert plots.value_axis(x).scale == "symlog" and plots.value_axis(x[1:]).scale == "linear"
    twin = TwinExplorer({"post-GELU": x}, kind="post-GELU", bits=6, dpi=DPI)
    assert twin.info["xscale"] == "symlog"
    lo, hi = twin.figure.axes[0].get_xlim()
    assert lo < -0.1 and hi > 50


def test_dense_twin_levels_are_thinned(acts):
    twin = TwinExplorer(acts, kind="post-GELU", bits=8, block=2, dpi=DPI)
    neg = twin.info["level_counts"]["negative"]
    assert neg["levels"] > 60 and neg["drawn"] < neg["levels"]  # a readable grid, not a solid block
    labels = [t.get_text() for t in twin.figure.axes[0].get_legend().get_texts()]
    assert any("band" in t and "negative" in t for t in labels)


def test_fits_are_cached(explorer):
    explorer.block.value = 2
    explorer.block.value = 1
    n = len(explorer._fits)
    explorer.block.value = 2
    assert len(explorer._fits) == n


def test_widget_tree_and_png(explorer, acts):
    classes = explorer.widget._dom_classes
    assert "ptqlib-explorer" in classes
    assert "ptqlib-block" in explorer.block._dom_classes
    assert explorer.image in explorer.widget.children
    assert figure_png(explorer.figure)[:4] == b"\x89PNG"
    crisp = ActivationExplorer(acts, block=1, bits=4)  # the default resolution
    assert crisp.dpi >= 100 and _png_width(crisp.image.value) == int(plots.EXPLORER_WIDTH * crisp.dpi)
    assert crisp.image.layout.max_width == f"{int(plots.EXPLORER_WIDTH * crisp.dpi)}px"  # never upscaled


def test_redrawing_sign_shows_during_a_redraw(explorer):
    seen = []
    explorer.status.observe(lambda ch: seen.append(ch["new"]), names="value")
    classes = []
    render = explorer.render

    def spy():
        classes.append(list(explorer.image._dom_classes))
        return render()

    explorer.render = spy
    explorer.bits.value = 5
    assert seen == [BUSY, ""] and "redrawing" in BUSY
    assert "ptqlib-redrawing" in classes[0] and "ptqlib-redrawing" not in explorer.image._dom_classes


def test_without_a_kernel_the_cell_says_what_it_is(explorer, monkeypatch):
    bundle = explorer._repr_mimebundle_()
    plain = bundle["text/plain"]
    assert plain.startswith("Activation explorer:") and "run the cells above" in plain and "VBox" not in plain
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    explorer._ipython_display_()
    assert "run the cells above" in shown[0]["text/markdown"]  # a sentence first, then the widget
    assert "application/vnd.jupyter.widget-view+json" in shown[1]


@pytest.fixture
def twin(acts):
    return TwinExplorer({"post-softmax": acts.values("post-softmax", 0), "post-GELU": acts.values("post-GELU", 0)},
                        kind="post-softmax", bits=4, dpi=DPI)


def test_twin_explorer_starts_at_the_best_split(twin, acts):
    best = fitting.fit_twin_softmax(acts.values("post-softmax", 0), 4).m
    assert twin.m.value == best and (twin.m.min, twin.m.max) == (0, 3)
    assert twin.info["m"] == best and twin.updates == 1 and twin.info["best_m"] == best
    assert twin.block.disabled  # one block's values given: nothing to choose


def test_twin_explorer_split_slider(twin):
    twin.m.value = 1
    assert twin.info["steps"]["fine"] == pytest.approx(2.0 ** -3 / 2)
    png = twin.image.value
    twin.m.value = 3
    assert twin.info["steps"]["fine"] == pytest.approx(2.0 ** -3 / 8) and twin.image.value != png
    assert twin.info["m"] == 3 and "m = 3" in twin.info["title"]
    twin.m.value = 2  # one step of m halves or doubles the fine step
    assert twin.info["steps"]["fine"] == pytest.approx(2.0 ** -3 / 4)


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


def test_twin_explorer_block_selector_changes_the_values(acts):
    twin = TwinExplorer(acts, kind="post-softmax", bits=4, block=1, m=2, dpi=DPI)
    assert isinstance(twin.block, ipywidgets.SelectionSlider) and not twin.block.disabled
    assert [v for _, v in twin.block.options] == acts.blocks
    assert twin.info["block"] == 1 and twin.info["title"].startswith("block 1 · post-softmax")
    v1, mse1, png = twin.shown_values(), twin.info["twin_mse"], twin.image.value
    assert torch.equal(v1, acts.values("post-softmax", 1))
    twin.block.value = 4
    assert torch.equal(twin.shown_values(), acts.values("post-softmax", 4))
    assert twin.info["block"] == 4 and twin.info["title"].startswith("block 4")
    assert twin.info["m"] == 2  # a new block keeps the split being explored
    q = fitting.fit_twin_softmax(acts.values("post-softmax", 4), 4, m=2)
    assert twin.info["twin_mse"] == pytest.approx(q.mse(acts.values("post-softmax", 4))) != mse1
    assert twin.image.value != png
    twin.kind.value = "post-GELU"
    assert torch.equal(twin.shown_values(), acts.values("post-GELU", 4))
