"""Which distance picks the best scale? For one quantizer of one layer, every candidate scale
scored by each distance metric *and* by the real task loss (the model's outputs against the float
outputs, only that quantizer on).

* :func:`sweep_scales` — the sweep, a :class:`ScaleSweep` (a long table).
* :func:`metric_agreement` — per layer and metric: the pick, the task-loss optimum, their
  distance, the loss ratio and the rank correlation.
* :func:`compare_metrics` and :func:`verdict` — one metric against another over all sweeps, and
  the sentence the data supports.
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
from ..core.metrics import get_metric
from ..core.quant import minmax_step, uniform_fake
from ..engine.wrap import Site, quantize_model, sites

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SweepTarget", "ScaleSweep", "sweep_scales", "metric_agreement", "agreement_summary", "compare_metrics",
           "verdict"]


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
    how far apart they are (``|log2|`` of their ratio), the task loss at the metric's pick over the
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
            rows.append({"layer": f"{target} @{bits}b", "target": target, "bits": bits, "metric": metric,
                         "picked": pick["multiplier"], "optimum": best["multiplier"],
                         "log2_distance": abs(math.log2(pick["multiplier"] / best["multiplier"])),
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


def compare_metrics(agreement: "pd.DataFrame", metric: str, other: str) -> dict[str, object]:
    """``metric`` against ``other`` over the sweeps of :func:`metric_agreement`: in how many the
    pick of ``metric`` is closer to the task-loss optimum, the same, or farther; both mean
    ``|log2|`` distances and geometric-mean loss ratios; and the answer to "does ``metric`` pick
    closer?" — ``yes`` / ``no`` when both measures agree, ``no difference`` when the picks are the
    same, ``mixed`` otherwise."""
    x = agreement[agreement.metric == metric].set_index("layer")
    y = agreement[agreement.metric == other].set_index("layer").loc[x.index]
    closer = int((x.log2_distance < y.log2_distance - 1e-9).sum())
    farther = int((x.log2_distance > y.log2_distance + 1e-9).sum())
    dx, dy = float(x.log2_distance.mean()), float(y.log2_distance.mean())
    lx, ly = _geomean(x.loss_ratio), _geomean(y.loss_ratio)
    if abs(dx - dy) < 1e-9 and abs(lx - ly) < 1e-12:
        answer = "no difference: the same picks"
    elif dx <= dy and lx <= ly:
        answer = "yes: closer to the task-loss optimum"
    elif dx >= dy and lx >= ly:
        answer = "no: farther from the task-loss optimum"
    else:
        answer = "mixed: closer by one measure, farther by the other"
    return {"comparison": f"{metric} vs {other}", "closer": closer, "same": len(x) - closer - farther,
            "farther": farther, "mean log2 distance": dx, "mean log2 distance (other)": dy,
            "loss ratio": lx, "loss ratio (other)": ly, "picks closer?": answer}


def verdict(answers: Sequence[str]) -> str:
    """One sentence from the ``picks closer?`` answers of :func:`compare_metrics` (one metric
    against several others): it completes "the metric ..."."""
    heads = [a.split(":")[0] for a in answers]
    if all(h == "yes" for h in heads):
        return "picks scales closer to the task-loss optimum than each of the others: the data supports the claim"
    if all(h == "no" for h in heads):
        return "picks scales farther from the task-loss optimum than each of the others: the data contradicts the claim"
    return "is neither consistently closer nor consistently farther than the others: the data does not support the claim"
