"""Interactive explorers for the notebooks (ipywidgets).

Each explorer is a plain object: its controls are attributes (``explorer.block``,
``explorer.bits`` ...), every change calls :meth:`update`, which draws the figure with a pure
function of the control values (from :mod:`ptqlib.lab.plots`) and shows it as a PNG in an
``ipywidgets.Image``. So the callbacks run headless (tests set ``explorer.block.value = 3`` and
read ``explorer.info`` / ``explorer.image.value``), and in a browser the image redraws.

* :class:`ActivationExplorer` — block, layer, head, bit-width, quantizer and value axis over
  captured activations: the histogram with the quantizer's grid and the error per value.
* :class:`TwinExplorer` — block, values (post-softmax / post-GELU), bit-width and the split ``m``
  of a twin-uniform quantizer.
* :class:`ScaleExplorer` — any quantized operand of any block, a bit-width and a quantizer kind,
  with the scale on a slider: the levels on the histogram, the error, and every metric's curve over
  the scales with the current scale and each metric's pick (computed by :mod:`ptqlib.lab.explore`).

Blocks are chosen with sliders, never closed dropdowns: arrow keys on a focused closed dropdown
also move the notebook's cell selection (ipywidgets issue #3912); on a slider they move the slider.
While a redraw is under way a "redrawing…" sign shows next to the summary. Displayed, an explorer
first says in plain words what it is and that it needs a running kernel (what a reader of the
saved notebook sees in place of the controls), then the controls.
"""
from __future__ import annotations

import contextlib
import html
import io
import time
from typing import Any, Iterator, Mapping

import ipywidgets as widgets
from matplotlib.figure import Figure
from torch import Tensor

from .activations import KINDS, Activations
from .explore import QUANTIZER_CHOICES, ScaleCurves, ScaleStudy
from .fitting import FittedQuantizer, fit_quantizer
from .plots import AXIS_CHOICES, EXPLORER_WIDTH, activation_view, scale_explorer_figure, twin_view

__all__ = ["ActivationExplorer", "TwinExplorer", "ScaleExplorer", "figure_png", "ALL_HEADS", "DPI"]

#: The head selector's "all heads" entry: a real value (``None`` reads as "nothing selected" to
#: ipywidgets and shows a blank box).
ALL_HEADS = -1
#: Resolution of the explorers' PNGs: crisp at the image's natural width (about 1050 px).
DPI = 110
BUSY = "<span style='color:#b35806'>⟳ redrawing…</span>"
_STYLE = widgets.HTML("<style>.ptqlib-redrawing{opacity:0.55;transition:opacity .1s}</style>")


def figure_png(fig: Figure, dpi: int = 72) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def _block_slider(blocks: list[int], value: int, disabled: bool = False) -> widgets.SelectionSlider:
    return widgets.SelectionSlider(options=[(str(b), b) for b in blocks], value=value, description="block",
                                   continuous_update=False, disabled=disabled, layout=widgets.Layout(width="320px"))


class _Explorer:
    """Shared plumbing: control rows, a summary line, a busy sign, an image, an ``update`` count
    and the last figure; programmatic control changes inside :meth:`_sync` do not redraw."""

    #: What the explorer is, in plain words (shown above it, and where no kernel runs).
    NOTE = "An interactive explorer."

    def __init__(self, rows: list[list[widgets.Widget]], dpi: int) -> None:
        self.dpi = dpi
        width = int(EXPLORER_WIDTH * dpi)
        # never wider than the PNG itself (no upscaling blur); narrower screens shrink it
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width=f"{width}px"))
        self.summary = widgets.HTML(layout=widgets.Layout(margin="0 0 0 6px"))
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px", min_width="110px"))
        self.image.add_class("ptqlib-explorer-image")
        self.summary.add_class("ptqlib-explorer-summary")
        self.status.add_class("ptqlib-explorer-status")
        self.figure: Figure | None = None
        self.info: dict[str, Any] = {}
        self.updates = 0
        self.seconds = 0.0
        self._syncing = False
        boxes = [widgets.HBox(r, layout=widgets.Layout(flex_flow="row wrap")) for r in rows]
        self.widget = widgets.VBox([_STYLE, *boxes, widgets.HBox([self.summary, self.status]), self.image])
        self.widget.add_class("ptqlib-explorer")
        for row in rows:
            for c in row:
                c.observe(self._changed, names="value")

    @contextlib.contextmanager
    def _sync(self) -> Iterator[None]:
        """Change controls without a redraw per change."""
        was, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = was

    def _changed(self, change: dict) -> None:
        if self._syncing:
            return
        with self._sync():
            self._reconcile(change["owner"])
        self.update()

    def _reconcile(self, owner: widgets.Widget) -> None:
        """Make the other controls agree with a change (ranges, disabled states); no redraw."""

    def render(self) -> tuple[Figure, dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self) -> dict[str, Any]:
        """Redraw for the current control values; returns the summary."""
        start = time.perf_counter()
        self.status.value = BUSY
        self.image.add_class("ptqlib-redrawing")
        try:
            self.figure, self.info = self.render()
            self.image.value = figure_png(self.figure, self.dpi)
            self.summary.value = self._summary_html()
        finally:
            self.image.remove_class("ptqlib-redrawing")
            self.status.value = ""
        self.updates += 1
        self.seconds = time.perf_counter() - start
        return self.info

    def _summary_html(self) -> str:
        return f"<b>{html.escape(str(self.info.get('title', '')))}</b>"

    # ---- display

    def note(self) -> str:
        """A sentence saying what this explorer is and that it needs a running kernel."""
        return (f"{self.NOTE} It needs a running Python kernel: if no controls show below this line, run the cells "
                "above and then this one (the static figure after it shows the explorer's first view).")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["text/plain"] = self.note()
        return bundle

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display({"text/markdown": f"*{self.note()}*", "text/plain": self.note()}, raw=True)
        display(self._repr_mimebundle_(), raw=True)


class ActivationExplorer(_Explorer):
    """Pick block, layer, head, bit-width, quantizer and value axis; see the histogram (log counts)
    with the quantizer's grid on top, and the quantization error per value.

    The twin-uniform button is disabled on layers without a twin quantizer (uniform is shown; the
    choice comes back on a layer that has one); the head selector on layers without heads.

    Args:
        acts: from :func:`ptqlib.lab.activations.capture_activations`.
        block, layer, head, bits, quantizer: the initial view (``head`` None or :data:`ALL_HEADS`: all heads).
        axis: the value axis, one of :data:`ptqlib.lab.plots.AXIS_CHOICES`.
        dpi: resolution of the rendered PNG.
    """

    NOTE = ("Activation explorer: pick a block, a layer, a head, a bit-width and a quantizer to see the histogram "
            "of the captured activations with the quantizer's grid and the error per value.")

    def __init__(self, acts: Activations, *, block: int | None = None, layer: str = "post-softmax",
                 head: int | None = None, bits: int = 6, quantizer: str = "uniform", axis: str = "auto",
                 dpi: int = DPI) -> None:
        self.acts = acts
        self._fits: dict[tuple, FittedQuantizer] = {}
        self._wanted = quantizer
        layers = [k for k in acts.kinds if (k, acts.blocks[0]) in acts.data]
        self.block = _block_slider(acts.blocks, acts.blocks[0] if block is None else block)
        self.layer = widgets.Dropdown(options=layers, value=layer, description="layer",
                                      layout=widgets.Layout(width="240px"))
        self.head = widgets.Dropdown(options=[("all", ALL_HEADS)] + [(str(h), h) for h in range(acts.num_heads)],
                                     value=ALL_HEADS if head is None else head, description="head",
                                     layout=widgets.Layout(width="160px"))
        self.bits = widgets.IntSlider(value=bits, min=2, max=8, description="bits", continuous_update=False)
        self.quantizer = widgets.ToggleButtons(options=list(QUANTIZER_CHOICES), value=quantizer, description="quantizer")
        self.axis = widgets.ToggleButtons(options=list(AXIS_CHOICES), value=axis, description="x axis",
                                          tooltips=["log for post-softmax, symmetric log for massive outliers",
                                                    "linear", "symmetric log: linear near 0, log in the tails",
                                                    "log (positive values)"])
        for w, name in ((self.block, "block"), (self.layer, "layer"), (self.head, "head"), (self.bits, "bits"),
                        (self.quantizer, "quantizer"), (self.axis, "axis")):
            w.add_class(f"ptqlib-{name}")
        super().__init__([[self.block, self.layer, self.head], [self.bits, self.quantizer], [self.axis]], dpi)
        with self._sync():
            self._reconcile(self.layer)
        self.update()

    def values(self) -> dict[str, Any]:
        """The current control values (``head`` None for all heads)."""
        head = self.head.value
        return {"block": self.block.value, "layer": self.layer.value, "head": None if head == ALL_HEADS else head,
                "bits": self.bits.value, "quantizer": self.quantizer.value, "axis": self.axis.value}

    def _reconcile(self, owner: widgets.Widget) -> None:
        kind = KINDS[self.layer.value]
        self.head.disabled = not kind.heads
        if owner is self.quantizer:
            self._wanted = self.quantizer.value
        has_twin = kind.twin is not None
        self.quantizer.disabled = not has_twin
        self.quantizer.value = self._wanted if has_twin else "uniform"
        self.quantizer.tooltips = [] if has_twin else [f"{self.layer.value} has no twin-uniform quantizer"] * 2

    def render(self) -> tuple[Figure, dict[str, Any]]:
        v = self.values()
        kind = KINDS[v["layer"]]
        head = v["head"] if kind.heads else None
        fq = self._fit(v["block"], v["layer"], head, v["bits"], v["quantizer"])
        ref = self._fit(v["block"], v["layer"], head, v["bits"], "uniform")
        fig, info = activation_view(self.acts, v["block"], v["layer"], head, v["bits"], fq, reference=ref,
                                    axis=v["axis"], fig=self.figure)
        info["twin_available"] = kind.twin is not None
        return fig, info

    def _fit(self, block: int, layer: str, head: int | None, bits: int, quantizer: str) -> FittedQuantizer:
        key = (block, layer, head, bits, quantizer)
        if key not in self._fits:
            vals = self.acts.values(layer, block, head)
            self._fits[key] = fit_quantizer(vals, quantizer, bits, KINDS[layer].twin)
        return self._fits[key]

    def _summary_html(self) -> str:
        i = self.info
        mses = ", ".join(f"{html.escape(k)}: {val:.3g}" for k, val in i["mses"].items())
        twin = "" if i["twin_available"] else " · no twin-uniform quantizer for this layer"
        return (f"<b>{html.escape(i['title'])}</b><br>{html.escape(i['quantizer'])} · {i['levels']} levels · "
                f"{i['values']:,} values · MSE {mses}{twin}")


def _twin_values(values: Mapping[str, Any] | Activations) -> tuple[dict[str, dict[int, Tensor]], list[int]]:
    """``{kind: {block: values}}`` and the blocks, from activations or a mapping of kinds to
    tensors (one unnamed block, -1) or to ``{block: tensor}``."""
    if isinstance(values, Activations):
        kinds = [k for k in ("post-softmax", "post-GELU") if k in values.kinds]
        data = {k: {b: values.values(k, b) for b in values.blocks if (k, b) in values.data} for k in kinds}
        return data, list(values.blocks)
    data = {k: (dict(v) if isinstance(v, Mapping) else {-1: v}) for k, v in values.items()}
    blocks = sorted({b for d in data.values() for b in d})
    return data, blocks


class TwinExplorer(_Explorer):
    """Sliders for the block, the bit-width and the split ``m`` of a twin-uniform quantizer, on
    real post-softmax or post-GELU values: the grid, both ranges' steps, and the error per value
    against the best uniform quantizer of the same bits.

    Args:
        values: :class:`~ptqlib.lab.activations.Activations` (every captured block), or
            ``{"post-softmax": tensor, "post-GELU": tensor}`` (either or both; one block, the
            block slider disabled), or ``{kind: {block: tensor}}``.
        kind, bits, m, block: the initial view (``m`` None: the best split for the values).
        axis: the value axis, one of :data:`ptqlib.lab.plots.AXIS_CHOICES`.
    """

    NOTE = ("Twin-uniform explorer: move the block, the bit-width and the split m of a twin-uniform quantizer on "
            "post-softmax or post-GELU values to see its grid and its error against the best uniform quantizer.")

    def __init__(self, values: Mapping[str, Any] | Activations, *, kind: str = "post-softmax", bits: int = 4,
                 m: int | None = None, block: int | None = None, axis: str = "auto", dpi: int = DPI) -> None:
        self.data, blocks = _twin_values(values)
        self.kind = widgets.ToggleButtons(options=list(self.data), value=kind, description="values")
        start = block if block is not None else blocks[len(blocks) // 2] if blocks != [-1] else -1
        self.block = _block_slider(blocks, start, disabled=blocks == [-1])
        if blocks == [-1]:
            self.block.options = [("given", -1)]
        self.bits = widgets.IntSlider(value=bits, min=3, max=8, description="bits", continuous_update=False)
        self.m = widgets.IntSlider(value=0, min=0, max=bits - 1, description="split m", continuous_update=False)
        self.axis = widgets.ToggleButtons(options=list(AXIS_CHOICES), value=axis, description="x axis")
        self._set_m_range()
        self.m.value = self._best_m() if m is None else m
        for w, name in ((self.kind, "kind"), (self.block, "block"), (self.bits, "bits"), (self.m, "m"),
                        (self.axis, "axis")):
            w.add_class(f"ptqlib-{name}")
        super().__init__([[self.kind, self.block], [self.bits, self.m], [self.axis]], dpi)
        self.update()

    def shown_values(self) -> Tensor:
        """The values shown: the chosen kind in the chosen block."""
        return self.data[self.kind.value][self.block.value]

    def _set_m_range(self) -> None:
        if KINDS[self.kind.value].twin == "softmax":
            lo, hi = 0, self.bits.value - 1
        else:
            lo, hi = -2, 12
        self.m.min, self.m.max = min(self.m.min, lo), max(self.m.max, hi)
        self.m.value = min(max(self.m.value, lo), hi)
        self.m.min, self.m.max = lo, hi

    def _best_m(self) -> int:
        return fit_quantizer(self.shown_values(), "twin-uniform", self.bits.value, KINDS[self.kind.value].twin).m

    def _reconcile(self, owner: widgets.Widget) -> None:
        # keep m valid for the new kind/bits (the best split for a new kind); a new block keeps m
        if owner in (self.kind, self.bits):
            self._set_m_range()
        if owner is self.kind:
            self.m.value = self._best_m()

    def render(self) -> tuple[Figure, dict[str, Any]]:
        block = self.block.value
        fig, info = twin_view(self.shown_values(), self.kind.value, self.bits.value, self.m.value, axis=self.axis.value,
                              block=None if block == -1 else block, fig=self.figure)
        info["best_m"] = self._best_m()
        return fig, info

    def _summary_html(self) -> str:
        i = self.info
        steps = ", ".join(f"{k} {v:.3g}" for k, v in i["steps"].items())
        return (f"<b>{html.escape(i['title'])}</b><br>steps: {steps} · MSE twin {i['twin_mse']:.3g} vs best uniform "
                f"{i['uniform_mse']:.3g} · best split here: m = {i['best_m']}")


class ScaleExplorer(_Explorer):
    """The scale factor of any quantizer of a ViT block, on a slider.

    Pick a block (slider), an operand (every Linear weight; the qkv, proj, fc1 and fc2 inputs; q and
    k of q·kᵀ; the post-softmax probabilities and v of attn·v), a bit-width and a quantizer kind
    (twin-uniform exists for post-softmax and the fc2 input only; the button is disabled
    elsewhere), then move the scale (multiples of the min-max step, 0.01 … 1.2; for the post-softmax
    twin quantizer, the split m): the histogram with the quantization levels, the error per value,
    and every metric's curve (MSE, cosine, Pearson, L1, Hessian-guided) over the scales with the
    current scale and each metric's pick (argmin) marked. ``view = channels`` shows, for weights
    and the fc2 input, each channel's own min-max step against the shared step and each channel's
    error.

    Args:
        study: a :class:`~ptqlib.lab.explore.ScaleStudy` (captured once; curves are cached).
        block, operand, bits, quantizer, axis: the initial view.
        dpi: resolution of the rendered PNG.
    """

    NOTE = ("Scale explorer: pick a block, a quantized operand, a bit-width and a quantizer, then move the scale "
            "factor with the slider to see the quantization levels on the values, the error, and how each metric "
            "(MSE, cosine, Pearson, L1, Hessian-guided) scores every scale, with each metric's pick.")

    def __init__(self, study: ScaleStudy, *, block: int | None = None, operand: str = "fc2 input (post-GELU)",
                 bits: int = 4, quantizer: str = "uniform", axis: str = "auto", dpi: int = DPI) -> None:
        self.study = study
        self._wanted = {"quantizer": quantizer, "view": "values"}
        self._x: Tensor | None = None
        block = study.blocks[len(study.blocks) // 2] if block is None else block
        self.block = _block_slider(study.blocks, block)
        operands = study.operands(block)
        self.operand = widgets.Dropdown(options=operands, value=operand if operand in operands else operands[0],
                                        description="operand",
                                        layout=widgets.Layout(width="300px"))
        self.bits = widgets.IntSlider(value=bits, min=2, max=8, description="bits", continuous_update=False)
        self.quantizer = widgets.ToggleButtons(options=list(QUANTIZER_CHOICES), value=quantizer, description="quantizer")
        self.scale = widgets.SelectionSlider(options=[("×1", 0)], description="scale", continuous_update=False,
                                             layout=widgets.Layout(width="560px"))
        self.axis = widgets.ToggleButtons(options=list(AXIS_CHOICES), value=axis, description="x axis")
        self.view = widgets.ToggleButtons(options=["values", "channels"], value="values", description="view",
                                          tooltips=["histogram with the levels", "per-channel steps and errors "
                                                    "(weights and the fc2 input)"])
        for w, name in ((self.block, "block"), (self.operand, "operand"), (self.bits, "bits"),
                        (self.quantizer, "quantizer"), (self.scale, "scale"), (self.axis, "axis"), (self.view, "view")):
            w.add_class(f"ptqlib-{name}")
        super().__init__([[self.block, self.operand], [self.bits, self.quantizer], [self.scale],
                          [self.axis, self.view]], dpi)
        with self._sync():
            self._reconcile(self.operand)
        self.update()

    def curves(self) -> ScaleCurves:
        """The :class:`~ptqlib.lab.explore.ScaleCurves` of the current block, operand, bits and quantizer."""
        return self.study.curves(self.block.value, self.operand.value, self.bits.value, self.quantizer.value)

    def _reconcile(self, owner: widgets.Widget) -> None:
        if owner is self.quantizer:
            self._wanted["quantizer"] = self.quantizer.value
        if owner is self.view:
            self._wanted["view"] = self.view.value
        if owner in (self.scale, self.axis, self.view):
            return
        operands = self.study.operands(self.block.value)
        if list(self.operand.options) != operands:
            current = self.operand.value
            self.operand.options = operands
            self.operand.value = current if current in operands else operands[0]
        data = self.study.site(self.block.value, self.operand.value)
        has_twin = data.operand.twin is not None
        self.quantizer.disabled = not has_twin
        self.quantizer.value = self._wanted["quantizer"] if has_twin else "uniform"
        self.quantizer.tooltips = [] if has_twin else [f"{data.operand.name} has no twin-uniform quantizer"] * 2
        self.view.disabled = not data.operand.per_channel
        self.view.value = self._wanted["view"] if data.operand.per_channel else "values"
        # the scale slider: the new candidates, at the same multiple of the min-max step where it exists
        old = None
        if self._x is not None and self.scale.value is not None:
            old = float(self._x[self.scale.value])
        c = self.curves()
        self._x = c.x
        index = c.default_index()
        if old is not None:
            near = int((c.x - old).abs().argmin())
            if abs(float(c.x[near]) - old) <= 1e-9 * max(1.0, abs(old)):
                index = near
        self.scale.options = [(label, i) for i, label in enumerate(c.labels)]
        self.scale.value = index

    def render(self) -> tuple[Figure, dict[str, Any]]:
        view = self.study.view(self.block.value, self.operand.value, self.bits.value, self.quantizer.value,
                               self.scale.value)
        fig, info = scale_explorer_figure(view, axis=self.axis.value, channels=self.view.value == "channels",
                                          fig=self.figure)
        info["twin_available"] = view.data.operand.twin is not None
        return fig, info

    def _summary_html(self) -> str:
        i = self.info
        now = ", ".join(f"{k} {v:.3g}" for k, v in i["metrics"].items())
        labels = self.curves().labels
        picks = ", ".join(f"{k} {labels[j]}" for k, j in i["pick_index"].items())
        return (f"<b>{html.escape(i['title'])}</b><br>{html.escape(i['quantizer'])} · operand MSE now "
                f"{i['error']:.3g} · metrics now: {now}<br>picks: {picks}")
