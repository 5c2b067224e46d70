"""Which distance picks the best scale? For one quantizer of one layer, every candidate scale
scored by each distance metric *and* by the real task loss (the model's outputs against the float
outputs, only that quantizer on).

* :func:`sweep_scales` — the sweep, a :class:`ScaleSweep` (a long table).
* :func:`metric_agreement` — per layer and metric: the pick, the task-loss optimum, their
  distance, the loss ratio and the rank correlation.
* :func:`compare_metrics` — one metric against another over all sweeps: in how many sweeps its
  pick is closer to the task-loss optimum, the same, or farther, with the exact sign test of
  closer against farther and the verdict of :mod:`ptqlib.core.stats` on the claim "it picks
  closer" (``holds`` / ``fails`` / ``inconclusive (p ≥ 0.05)``); :func:`claim_line` says it in one line.
* :func:`same_pick_groups` — groups of metrics that pick the same candidate in every sweep, for
  figures and text; :func:`curve_gap` how far apart their rescaled curves come.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..engine.capture import capture
from ..engine.config import PTQConfig
from ..errors import PtqlibError
from ..engine.layers import QuantLinear, QuantMatMul
from ..core import stats
from ..core.metrics import get_metric
from ..core.quant import minmax_step, uniform_fake
from ..engine.wrap import Site, quantize_model, sites

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SweepTarget", "ScaleSweep", "sweep_scales", "metric_agreement", "agreement_summary", "compare_metrics",
           "claim_line", "verdict_label", "same_pick_groups",
           "rescaled_curve", "curve_gap"]


@dataclass(frozen=True)
class SweepTarget:
    """One quantizer to sweep: ``operand`` of site ``site`` — ``weight`` or ``input`` of a
    Linear, ``a`` or ``b`` of a MatMul. Its scale is one per tensor, ``multiplier · Δ₀``."""

    site: str
    operand: str

    @property
    def label(self) -> str:
        return f"{self.site} {self.operand}"


@dataclass
class ScaleSweep:
    """Candidate scales of each target, scored by each metric and by the task loss.

    ``table`` is long-format: one row per (target, bits, multiplier) with a column per metric
    and ``task_kl`` (mean KL(float ‖ quantized) over the images, only that quantizer on) and
    ``task_ce`` (cross-entropy to the labels). ``grads`` keeps, per gradient loss, the output
    gradients of each target's site (for plotting their magnitudes).
    """

    table: "pd.DataFrame"
    metrics: list[str]
    grads: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    float_ce: float = float("nan")
    seconds: float = 0.0


_OPERAND_ATTR = {"weight": "weight_quant", "input": "input_quant", "a": "a_quant", "b": "b_quant"}


def _operand_tensor(site: Site, cap, operand: str) -> Tensor:
    if operand == "weight":
        return site.module.weight.detach()
    if operand in ("input", "a"):
        return cap.inputs[0]
    return cap.inputs[1]


def _layer_outputs(site: Site, cap, operand: str, fakes: Tensor) -> Tensor:
    """The site's output on the captured rows with ``operand`` replaced by each of ``fakes`` (K, ...)."""
    m = site.module
    if isinstance(m, QuantLinear):
        w, b = m.weight.detach(), m.bias
        x = cap.inputs[0]
        out = torch.matmul(x, fakes.transpose(-1, -2)) if operand == "weight" else torch.matmul(fakes, w.t())
        return out if b is None else out + b.detach()
    if isinstance(m, QuantMatMul):
        a, bm = cap.inputs
        return fakes @ bm if operand == "a" else a @ fakes
    raise PtqlibError(f"sweeps support Linear and MatMul sites, not {type(m).__name__} ({site.name})")


def _float_output(site: Site, cap) -> Tensor:
    m = site.module
    if isinstance(m, QuantLinear):
        return F.linear(cap.inputs[0], m.weight.detach(), None if m.bias is None else m.bias.detach())
    a, bm = cap.inputs
    return a @ bm


class _Tail:
    """Runs the model from the input of the block holding a site (cached), or whole."""

    def __init__(self, model: nn.Module, site_name: str, images: Tensor, batch: int) -> None:
        self.model, self.images, self.batch = model, images, batch
        self.start: int | None = None
        self.cached: list[Tensor] | None = None
        blocks = getattr(model, "blocks", None)
        parts = site_name.split(".")
        vit_like = isinstance(blocks, nn.Sequential) and hasattr(model, "forward_head") and hasattr(model, "norm")
        if vit_like and parts[0] == "blocks" and parts[1].isdigit():
            self.start = int(parts[1])
        elif vit_like and parts[0] == "head":
            self.start = len(blocks)
        if self.start is not None:
            self.cached = self._prefix()

    def _prefix(self) -> list[Tensor]:
        store: list[Tensor] = []
        target = self.model.blocks[self.start] if self.start < len(self.model.blocks) else self.model.norm

        def hook(_m, args):
            store.append(args[0].detach())
            raise _Stop

        h = target.register_forward_pre_hook(hook)
        try:
            with torch.inference_mode():
                for i in range(0, self.images.shape[0], self.batch):
                    try:
                        self.model(self.images[i:i + self.batch])
                    except _Stop:
                        pass
        finally:
            h.remove()
        return store

    def logits(self) -> Tensor:
        outs = []
        with torch.inference_mode():
            if self.cached is None:
                for i in range(0, self.images.shape[0], self.batch):
                    outs.append(self.model(self.images[i:i + self.batch]))
            else:
                m = self.model
                for x in self.cached:
                    x = m.blocks[self.start:](x) if self.start < len(m.blocks) else x
                    outs.append(m.forward_head(m.norm(x)))
        return torch.cat(outs).float()


class _Stop(Exception):
    pass


def sweep_scales(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[SweepTarget],
    *,
    bits: Sequence[int] = (4,),
    multipliers: Tensor | None = None,
    metrics: Sequence[str] = ("mse", "cosine", "pearson", "l1", "hessian"),
    grad_losses: Mapping[str, str | tuple[str, str]] | None = None,
    labels: Tensor | None = None,
    max_tokens: int | None = 2048,
    batch: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> ScaleSweep:
    """Score every candidate scale of each target by each metric and by the task loss.

    For a target at ``b`` bits the candidates are ``multiplier · Δ₀`` (``Δ₀`` the min-max step
    of the operand, one per tensor). The *metrics* compare the site's float output with its
    output when only that operand is quantized, on the captured (row-sampled) calibration
    inputs, as calibration does. The *task loss* runs the model on all ``images`` with only that
    quantizer switched on: ``task_kl`` = mean KL(softmax(z_float) ‖ softmax(z)), ``task_ce`` = mean
    cross-entropy to ``labels`` (or to the float model's predictions without labels).

    Args:
        model: the float model (a copy is wrapped).
        images: the images (the calibration batch).
        targets: quantizers to sweep.
        bits: bit-widths to sweep at.
        multipliers: candidate multipliers (default: 40, geometric from 0.02 to 1.2).
        metrics: metric names; ``hessian`` uses the first gradient loss.
        grad_losses: ``{column name: grad_loss}`` or ``{column name: (grad_loss, grad_norm)}`` for
            the Hessian-guided columns, e.g. ``{"hessian": "pseudo_label_ce",
            "hessian (per-channel)": ("pseudo_label_ce", "channel"), "hessian (official KL)":
            "official_kl"}`` (``grad_norm`` as in :class:`~ptqlib.config.PTQConfig`; default ``none``,
            the per-element weights of the paper's formula).
        labels: true labels of ``images`` (for ``task_ce``).
        max_tokens: rows captured per site for the metrics.
        batch: images per forward pass of the task loss.
    """
    import pandas as pd

    start_time = time.perf_counter()
    if multipliers is None:
        multipliers = torch.logspace(math.log10(0.02), math.log10(1.2), 40)
    grad_losses = dict(grad_losses or {"hessian": "pseudo_label_ce"})
    plain = [m for m in metrics if m != "hessian"]
    columns = plain + list(grad_losses) if "hessian" in metrics else plain
    wrapped = quantize_model(copy.deepcopy(model), PTQConfig(twin_softmax=False, twin_gelu=False))
    by_name = {s.name: s for s in sites(wrapped)}
    missing = [t.site for t in targets if t.site not in by_name]
    if missing:
        raise PtqlibError(f"no quantized site named {missing}; sites look like {list(by_name)[:4]}")
    chosen = [by_name[n] for n in dict.fromkeys(t.site for t in targets)]
    caps = capture(wrapped, images, chosen, grads=False, max_tokens=max_tokens, seed=seed)
    grads: dict[str, dict[str, Tensor]] = {}
    if "hessian" in metrics:
        for col, spec in grad_losses.items():
            loss, norm = (spec, "none") if isinstance(spec, str) else spec
            extra = {} if norm == "none" else {"grad_norm": norm}
            gc = capture(wrapped, images, chosen, grads=True, grad_loss=loss, labels=labels,
                         max_tokens=max_tokens, seed=seed, micro_batch=batch, **extra)
            grads[col] = {n: c.grad for n, c in gc.items()}
    with torch.inference_mode():
        float_logits = torch.cat([wrapped(images[i:i + batch]) for i in range(0, images.shape[0], batch)]).float()
    float_logp = float_logits.log_softmax(-1)
    target_labels = float_logits.argmax(-1) if labels is None else labels
    float_ce = float(F.nll_loss(float_logp, target_labels))

    rows = []
    total = len(targets) * len(bits) * multipliers.numel()
    bar = tqdm(total=total, desc="sweep", unit="scale", disable=not progress)
    for t in targets:
        site = by_name[t.site]
        cap = caps[t.site]
        q = getattr(site.module, _OPERAND_ATTR[t.operand], None)
        if q is None:
            raise PtqlibError(f"{t.site} has no {t.operand} quantizer")
        operand = _operand_tensor(site, cap, t.operand)
        absmax = {"weight": operand.abs().max(), "input": cap.stats.get("absmax"),
                  "a": cap.stats.get("a_absmax"), "b": cap.stats.get("b_absmax")}[t.operand]
        absmax = float(operand.abs().max() if absmax is None else absmax.max())
        out = _float_output(site, cap)
        tail = _Tail(wrapped, t.site, images, batch)
        for b in bits:
            signed = bool(operand.min() < 0)
            q_b = type(q)(b, signed=signed)
            setattr(site.module, _OPERAND_ATTR[t.operand], q_b)
            step0 = float(minmax_step(absmax, b, signed, floor=1e-12))
            for mult in multipliers.tolist():
                scale = torch.tensor(step0 * mult)
                with torch.no_grad():
                    fake = uniform_fake(operand, scale, b, signed).unsqueeze(0)
                    o_hat = _layer_outputs(site, cap, t.operand, fake)
                    row = {"target": t.label, "site": t.site, "operand": t.operand, "bits": b,
                           "multiplier": mult, "scale": step0 * mult}
                    for name in plain:
                        row[name] = float(get_metric(name)(out, o_hat)[0])
                    if "hessian" in metrics:
                        for col in grad_losses:
                            row[col] = float(get_metric("hessian")(out, o_hat, grads[col][t.site])[0])
                q_b.set(scale=scale)
                logp = tail.logits().log_softmax(-1)
                # KL >= 0; float rounding can dip a hair below when the outputs barely change
                row["task_kl"] = max(0.0, float(F.kl_div(logp, float_logp, log_target=True, reduction="batchmean")))
                row["task_ce"] = float(F.nll_loss(logp, target_labels))
                rows.append(row)
                bar.update(1)
            setattr(site.module, _OPERAND_ATTR[t.operand], q)
    bar.close()
    return ScaleSweep(pd.DataFrame(rows), columns, grads, float_ce, time.perf_counter() - start_time)


def metric_agreement(sweep: ScaleSweep, task: str = "task_kl") -> "pd.DataFrame":
    """Per target, bit-width and metric: the multiplier the metric picks, the task-loss optimum,
    how far apart they are (``log2_offset`` = log2(pick / optimum), > 0: the metric picks a larger
    scale; ``log2_distance`` its absolute value), the task loss at the metric's pick over the
    optimum's (``loss_ratio``, 1 = as good as the best; 1e-12 is added to both), and the Spearman
    rank correlation of the metric with the task loss over all candidates. ``layer`` names the
    sweep (``"<target> @<bits>b"``)."""
    import pandas as pd

    rows = []
    for (target, bits), g in sweep.table.groupby(["target", "bits"], sort=False):
        g = g.sort_values("multiplier")
        best = g.loc[g[task].idxmin()]
        for metric in sweep.metrics:
            pick = g.loc[g[metric].idxmin()]
            rank = g[metric].rank().corr(g[task].rank())
            offset = math.log2(pick["multiplier"] / best["multiplier"])
            rows.append({"layer": f"{target} @{bits}b", "target": target, "bits": bits, "metric": metric,
                         "picked": pick["multiplier"], "optimum": best["multiplier"],
                         "log2_offset": offset, "log2_distance": abs(offset),
                         "loss_at_pick": pick[task], "loss_at_optimum": best[task],
                         "loss_ratio": (pick[task] + 1e-12) / (best[task] + 1e-12),
                         "spearman": rank})
    return pd.DataFrame(rows)


def _geomean(values: "pd.Series") -> float:
    return float(np.exp(np.log(values.astype(float)).mean()))


def agreement_summary(agreement: "pd.DataFrame") -> "pd.DataFrame":
    """Per metric, over all sweeps of :func:`metric_agreement`: mean ``|log2|`` distance of the
    pick from the optimum, geometric-mean loss ratio, median Spearman, how often the pick is the
    optimum (``optimum_hits``) out of ``cases``."""
    return agreement.groupby("metric", sort=False).agg(
        mean_log2_distance=("log2_distance", "mean"),
        geomean_loss_ratio=("loss_ratio", _geomean),
        median_spearman=("spearman", "median"),
        optimum_hits=("log2_distance", lambda d: int((d < 1e-9).sum())),
        cases=("log2_distance", "size"),
    )


def verdict_label(verdict: str) -> str:
    """The verdict as the notebooks print it: ``holds``, ``fails`` or ``inconclusive (p ≥ 0.05)``."""
    return f"{verdict} (p ≥ {stats.ALPHA:g})" if verdict == "inconclusive" else verdict


def compare_metrics(agreement: "pd.DataFrame", metric: str, other: str) -> dict[str, object]:
    """``metric`` against ``other`` over the sweeps of :func:`metric_agreement`, for the claim
    "``metric`` picks scales closer to the task-loss optimum than ``other``".

    Counts the sweeps where the pick of ``metric`` is closer (``closer``), as close (``same``: the
    same candidate, or as far on the other side) or farther (``farther``) than the pick of
    ``other``; tests closer against farther with the exact two-sided sign test
    (:func:`ptqlib.core.stats.sign_test`, ties left out) and gives the verdict of
    :func:`ptqlib.core.stats.verdict` on the claim (:func:`verdict_label`: ``holds``, ``fails`` or
    ``inconclusive (p ≥ 0.05)``). Both mean ``|log2|`` distances and geometric-mean loss ratios
    are kept as the size of the effect.
    """
    x = agreement[agreement.metric == metric].set_index("layer")
    y = agreement[agreement.metric == other].set_index("layer").loc[x.index]
    closer = int((x.log2_distance < y.log2_distance - 1e-9).sum())
    farther = int((x.log2_distance > y.log2_distance + 1e-9).sum())
    test = stats.sign_test(closer, farther)
    return {"comparison": f"{metric} vs {other}", "closer": closer, "same": len(x) - closer - farther,
            "farther": farther, "p_value": test.p_value,
            "verdict": verdict_label(stats.verdict(closer - farther, test.p_value, expect=1)),
            "mean log2 distance": float(x.log2_distance.mean()), "mean log2 distance (other)": float(y.log2_distance.mean()),
            "loss ratio": _geomean(x.loss_ratio), "loss ratio (other)": _geomean(y.loss_ratio)}


def claim_line(row: Mapping[str, object]) -> str:
    """One line for a row of :func:`compare_metrics`: the claim, the counts, the p-value, the verdict.

    >>> claim_line({"comparison": "hessian vs mse", "closer": 5, "same": 9, "farther": 4, "p_value": 1.0,
    ...             "verdict": "inconclusive (p ≥ 0.05)"})
    'hessian picks closer than mse: closer in 5, farther in 4, same in 9 sweeps; sign test p = 1.00: inconclusive (p ≥ 0.05)'
    """
    metric, other = str(row["comparison"]).split(" vs ", 1)
    return (f"{metric} picks closer than {other}: closer in {row['closer']}, farther in {row['farther']}, "
            f"same in {row['same']} sweeps; sign test p = {_p(float(row['p_value']))}: {row['verdict']}")


def _p(p: float) -> str:
    return f"{p:.2f}" if p >= 0.01 else f"{p:.1e}"


def same_pick_groups(sweep: ScaleSweep) -> list[list[str]]:
    """Groups (of two or more) of ``sweep.metrics`` that pick the same candidate in every sweep
    (every target and bit-width): interchangeable for the scale search on these layers, whatever
    their curves do away from the minimum. In the order of ``sweep.metrics``."""
    picks = {m: [] for m in sweep.metrics}
    for _, g in sweep.table.groupby(["target", "bits"], sort=False):
        g = g.sort_values("multiplier")
        for m in sweep.metrics:
            picks[m].append(float(g["multiplier"].iloc[int(np.argmin(g[m].to_numpy(float)))]))
    groups: list[list[str]] = []
    for m in sweep.metrics:
        for group in groups:
            if picks[group[0]] == picks[m]:
                group.append(m)
                break
        else:
            groups.append([m])
    return [g for g in groups if len(g) > 1]


def rescaled_curve(values: "pd.Series | np.ndarray") -> np.ndarray:
    """A metric's (or the task loss's) values over the candidates, log-scaled and rescaled to
    [0, 1], as :func:`ptqlib.lab.plots.plot_sweeps` draws them."""
    y = np.log10(np.maximum(np.asarray(values, dtype=float), 1e-30))
    lo, hi = np.nanmin(y), np.nanmax(y)
    return (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)


def curve_gap(sweep: ScaleSweep, metrics: Sequence[str]) -> float:
    """The largest difference, over every sweep and candidate, between the rescaled curves
    (:func:`rescaled_curve`) of ``metrics``: 0 = drawn on top of each other, 1 = as far apart as
    the axis allows."""
    gap = 0.0
    for _, g in sweep.table.groupby(["target", "bits"], sort=False):
        g = g.sort_values("multiplier")
        curves = np.stack([rescaled_curve(g[m]) for m in metrics])
        gap = max(gap, float((curves.max(0) - curves.min(0)).max()))
    return gap
