"""Interactive explorers for the notebooks (ipywidgets).

Each explorer is a plain object: its controls are attributes (``explorer.block``,
``explorer.bits`` ...), every change calls :meth:`update`, which draws the figure with a pure
function of the control values (from :mod:`ptqlib.plots`) and shows it as a PNG in an
``ipywidgets.Image``. So the callbacks run headless (tests set ``explorer.block.value = 3`` and
read ``explorer.info`` / ``explorer.image.value``), and in a browser the image redraws.
"""
from __future__ import annotations

import io
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch import Tensor

from .activations import KINDS, Activations
from .fitting import FittedQuantizer, fit_quantizer
from .plots import explorer_figure, twin_figure

__all__ = ["ActivationExplorer", "TwinExplorer", "figure_png"]


def figure_png(fig: Figure, dpi: int = 72) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


class _Explorer:
    """Shared plumbing: an image, a summary line, an ``update`` count and the last figure."""

    def __init__(self, controls: list[widgets.Widget], dpi: int) -> None:
        self.dpi = dpi
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="900px"))
        self.summary = widgets.HTML(layout=widgets.Layout(margin="0 0 0 6px"))
        self.image.add_class("ptqlib-explorer-image")
        self.summary.add_class("ptqlib-explorer-summary")
        self.figure: Figure | None = None
        self.info: dict[str, Any] = {}
        self.updates = 0
        self.widget = widgets.VBox([widgets.HBox(controls[:3]), widgets.HBox(controls[3:]), self.summary, self.image])
        self.widget.add_class("ptqlib-explorer")
        for c in controls:
            c.observe(self._changed, names="value")

    def _changed(self, change: dict) -> None:
        self.update()

    def render(self) -> tuple[Figure, dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self) -> dict[str, Any]:
        """Redraw for the current control values; returns the summary."""
        self.figure, self.info = self.render()
        self.image.value = figure_png(self.figure, self.dpi)
        self.summary.value = self._summary_html()
        self.updates += 1
        return self.info

    def _summary_html(self) -> str:
        return f"<b>{self.info.get('title', '')}</b>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class ActivationExplorer(_Explorer):
    """Pick block, layer, head, bit-width and quantizer; see the histogram (log counts) with the
    quantizer's grid on top, and the quantization error per value.

    Args:
        acts: from :func:`ptqlib.activations.capture_activations`.
        block, layer, head, bits, quantizer: the initial view.
        dpi: resolution of the rendered PNG.
    """

    def __init__(self, acts: Activations, *, block: int | None = None, layer: str = "post-softmax",
                 head: int | None = None, bits: int = 6, quantizer: str = "uniform", dpi: int = 72) -> None:
        self.acts = acts
        self._fits: dict[tuple, FittedQuantizer] = {}
        layers = [k for k in acts.kinds if (k, acts.blocks[0]) in acts.data]
        self.block = widgets.Dropdown(options=acts.blocks, value=acts.blocks[0] if block is None else block,
                                      description="block", layout=widgets.Layout(width="170px"))
        self.layer = widgets.Dropdown(options=layers, value=layer, description="layer",
                                      layout=widgets.Layout(width="240px"))
        self.head = widgets.Dropdown(options=[("all", None)] + [(str(h), h) for h in range(acts.num_heads)],
                                     value=head, description="head", layout=widgets.Layout(width="160px"))
        self.bits = widgets.IntSlider(value=bits, min=2, max=8, description="bits", continuous_update=False)
        self.quantizer = widgets.ToggleButtons(options=["uniform", "twin-uniform"], value=quantizer,
                                               description="quantizer")
        for w, name in ((self.block, "block"), (self.layer, "layer"), (self.head, "head"), (self.bits, "bits"),
                        (self.quantizer, "quantizer")):
            w.add_class(f"ptqlib-{name}")
        super().__init__([self.block, self.layer, self.head, self.bits, self.quantizer], dpi)
        self.update()

    def values(self) -> dict[str, Any]:
        """The current control values."""
        return {"block": self.block.value, "layer": self.layer.value, "head": self.head.value,
                "bits": self.bits.value, "quantizer": self.quantizer.value}

    def render(self) -> tuple[Figure, dict[str, Any]]:
        v = self.values()
        kind = KINDS[v["layer"]]
        head = v["head"] if kind.heads else None
        self.head.disabled = not kind.heads
        fits = {q: self._fit(v["block"], v["layer"], head, v["bits"], q) for q in ("uniform", v["quantizer"])}
        return explorer_figure(self.acts, v["block"], v["layer"], head, v["bits"], v["quantizer"],
                               fig=self.figure, fitted=fits[v["quantizer"]], reference=fits["uniform"])

    def _fit(self, block: int, layer: str, head: int | None, bits: int, quantizer: str) -> FittedQuantizer:
        key = (block, layer, head, bits, quantizer)
        if key not in self._fits:
            vals = self.acts.values(layer, block, head)
            self._fits[key] = fit_quantizer(vals, quantizer, bits, KINDS[layer].twin)
        return self._fits[key]

    def _summary_html(self) -> str:
        i = self.info
        mses = ", ".join(f"{k}: {val:.3g}" for k, val in i["mses"].items())
        return (f"<b>{i['title']}</b><br>{i['quantizer']} · {i['levels']} levels · "
                f"{i['values']:,} values · MSE {mses}")


class TwinExplorer(_Explorer):
    """Sliders for the bit-width and the split ``m`` of a twin-uniform quantizer, on real
    post-softmax or post-GELU values: the grid, both ranges' steps, and the error per value
    against the best uniform quantizer of the same bits.

    Args:
        values: ``{"post-softmax": tensor, "post-GELU": tensor}`` (either or both).
    """

    def __init__(self, values: dict[str, Tensor], *, kind: str = "post-softmax", bits: int = 4, m: int | None = None,
                 dpi: int = 72) -> None:
        self.data = values
        self.kind = widgets.ToggleButtons(options=list(values), value=kind, description="values")
        self.bits = widgets.IntSlider(value=bits, min=3, max=8, description="bits", continuous_update=False)
        self.m = widgets.IntSlider(value=0, min=0, max=bits - 1, description="split m", continuous_update=False)
        self._set_m_range()
        self.m.value = self._best_m() if m is None else m
        for w, name in ((self.kind, "kind"), (self.bits, "bits"), (self.m, "m")):
            w.add_class(f"ptqlib-{name}")
        self._syncing = False
        self.kind.observe(self._range_changed, names="value")
        self.bits.observe(self._range_changed, names="value")
        super().__init__([self.kind, self.bits, self.m], dpi)
        self.update()

    def _set_m_range(self) -> None:
        if KINDS[self.kind.value].twin == "softmax":
            lo, hi = 0, self.bits.value - 1
        else:
            lo, hi = -2, 12
        self.m.min, self.m.max = min(self.m.min, lo), max(self.m.max, hi)
        self.m.value = min(max(self.m.value, lo), hi)
        self.m.min, self.m.max = lo, hi

    def _best_m(self) -> int:
        vals = self.data[self.kind.value]
        return fit_quantizer(vals, "twin-uniform", self.bits.value, KINDS[self.kind.value].twin).m

    def _range_changed(self, change: dict) -> None:
        # keep m valid for the new kind/bits (the best split for a new kind) without redrawing twice
        self._syncing = True
        try:
            self._set_m_range()
            if change["owner"] is self.kind:
                self.m.value = self._best_m()
        finally:
            self._syncing = False

    def _changed(self, change: dict) -> None:
        if not getattr(self, "_syncing", False):
            self.update()

    def render(self) -> tuple[Figure, dict[str, Any]]:
        return twin_figure(self.data[self.kind.value], self.kind.value, self.bits.value, self.m.value, fig=self.figure)

    def _summary_html(self) -> str:
        i = self.info
        steps = ", ".join(f"{k} {v:.3g}" for k, v in i["steps"].items())
        return (f"<b>{i['title']}</b><br>steps: {steps} · MSE twin {i['twin_mse']:.3g} vs best uniform "
                f"{i['uniform_mse']:.3g}")
