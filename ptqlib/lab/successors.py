"""Notebook 05's studies: what came after PTQ4ViT, and why.

* :func:`sensitivity_frame` and :func:`sensitivity_sentences` — a per-group sensitivity table
  (:func:`ptqlib.app.sensitivity.sensitivity`'s rows) named by what each group quantizes, and the
  conclusions it supports, as sentences computed from it.
* :func:`reparam_study` — RepQ-ViT's fold of one post-LayerNorm site: the per-channel ranges
  before and after, the 4-bit error of per-tensor, per-channel and folded quantizers on the same
  values, and how far the folded float model is from the float model.
* :func:`results_sentences` — the successors table's verdicts against the targets, in words.

Nothing here calibrates a whole model; the notebook does that with the engine's own functions.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..core.quant import minmax_step, uniform_fake
from ..engine.reparam import Fold, post_layernorm_sites, reparameterize
from ..engine.wrap import quantization_disabled
from ..errors import PtqlibError
from ..io import experiments
from .fitting import fit_uniform

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GROUP_MEANING", "SUCCESSOR_FIX", "sensitivity_frame", "sensitivity_sentences", "ReparamStudy",
           "norm_output", "reparam_study", "results_sentences"]

#: What each quantizer group of :func:`ptqlib.app.sensitivity.quantizer_groups` quantizes.
GROUP_MEANING = {
    "patch_embed weight": "patch-embedding weights",
    "qkv input": "post-LayerNorm (norm1) values entering qkv",
    "qkv weight": "qkv weights",
    "proj input": "attention output entering proj",
    "proj weight": "proj weights",
    "matmul_qk a": "queries (q of q·kᵀ)",
    "matmul_qk b": "keys (k of q·kᵀ)",
    "matmul_av a": "post-softmax values (attention probabilities)",
    "matmul_av b": "values (v of attn·v)",
    "fc1 input": "post-LayerNorm (norm2) values entering fc1",
    "fc1 weight": "fc1 weights",
    "fc2 input": "post-GELU values entering fc2",
    "fc2 weight": "fc2 weights",
    "head input": "class token entering the head",
    "head weight": "classifier weights",
    "all weights": "every weight",
    "all activations": "every activation",
    "everything": "the whole W/A configuration",
}
#: The groups the successors changed the quantizer of, and how.
SUCCESSOR_FIX = {
    "qkv input": "RepQ-ViT: per-channel scales folded into LayerNorm (reparameterization)",
    "fc1 input": "RepQ-ViT: per-channel scales folded into LayerNorm (reparameterization)",
    "matmul_av a": "RepQ-ViT: log√2; AdaLog: a searched log base",
    "fc2 input": "RepQ-ViT: uniform from GELU's minimum; AdaLog: a searched log base, shifted",
}
_TOTALS = ("all weights", "all activations", "everything")


def sensitivity_frame(rows: Sequence[Mapping[str, Any]]) -> "pd.DataFrame":
    """:func:`~ptqlib.app.sensitivity.sensitivity`'s rows as a table: one row per group with what
    it quantizes, whether it is a weight, an activation or a total, the successors' change to it,
    top-1 and the drop from float; the single groups sorted by drop (largest first), the three
    totals last."""
    import pandas as pd

    frame = pd.DataFrame([dict(r) for r in rows])
    if frame.empty:
        return pd.DataFrame(columns=["quantized", "what", "operand", "successors changed it", "quantizers",
                                     "top1", "top1_drop"])
    frame["what"] = [GROUP_MEANING.get(g, g) for g in frame["quantized"]]
    frame["operand"] = ["total" if g in _TOTALS else "weight" if g.endswith("weight") else "activation"
                        for g in frame["quantized"]]
    frame["successors changed it"] = [SUCCESSOR_FIX.get(g, "") for g in frame["quantized"]]
    single = frame[frame["operand"] != "total"].sort_values("top1_drop", ascending=False, kind="stable")
    totals = frame[frame["operand"] == "total"]
    cols = ["quantized", "what", "operand", "successors changed it", "quantizers", "top1", "top1_drop"]
    return pd.concat([single, totals])[cols].reset_index(drop=True)


def sensitivity_sentences(frame: "pd.DataFrame", *, fp_top1: float | None = None, top: int = 3) -> list[str]:
    """What the sensitivity table says, computed from it: the whole configuration's drop, weights
    alone against activations alone, the groups that cost most alone, and the share of the single
    groups' drops carried by the groups the successors changed."""
    if frame.empty:
        return ["no sensitivity rows"]
    drop = dict(zip(frame["quantized"], frame["top1_drop"]))
    lines = []
    if "everything" in drop:
        top1 = float(frame.loc[frame["quantized"] == "everything", "top1"].iloc[0])
        fp = f" (float {fp_top1:.2f} %)" if fp_top1 is not None else ""
        lines.append(f"everything quantized: top-1 {top1:.2f} %{fp}, a drop of {drop['everything']:.2f} points")
    if "all weights" in drop and "all activations" in drop:
        w, a = drop["all weights"], drop["all activations"]
        more = "activations" if a > w else "weights"
        lines.append(f"only the weights quantized: drop {w:.2f}; only the activations: drop {a:.2f}; "
                     f"the {more} cost more")
    single = frame[frame["operand"] != "total"]
    if len(single):
        best = single.head(top)
        lines.append("the groups that cost most alone: " + "; ".join(
            f"{r.quantized} ({r.what}) {r.top1_drop:.2f}" for r in best.itertuples()))
        positive = single["top1_drop"].clip(lower=0)
        fixed = single["quantized"].isin(list(SUCCESSOR_FIX))
        total = float(positive.sum())
        if total > 0:
            share = float(positive[fixed].sum()) / total
            ranks = [int(i) + 1 for i in range(len(single)) if bool(fixed.iloc[i])]
            lines.append(f"the {int(fixed.sum())} groups whose quantizer RepQ-ViT and AdaLog changed "
                         f"({', '.join(single['quantized'][fixed])}) carry {share:.0%} of the summed drops of the "
                         f"{len(single)} single groups; their ranks by drop: {ranks}")
        else:
            lines.append("no single group costs anything alone")
    return lines


def _norm_and_logits(model: nn.Module, images: Tensor, name: str, micro_batch: int) -> tuple[Tensor, Tensor]:
    module = model.get_submodule(name)
    outs: list[Tensor] = []
    logits: list[Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: outs.append(out.detach().reshape(-1, out.shape[-1])))
    try:
        with torch.no_grad(), quantization_disabled(model):
            for i in range(0, images.shape[0], micro_batch):
                logits.append(model(images[i:i + micro_batch]))
    finally:
        handle.remove()
    return torch.cat(outs), torch.cat(logits)


def norm_output(model: nn.Module, images: Tensor, name: str, *, micro_batch: int = 8) -> Tensor:
    """The output of module ``name`` (a LayerNorm) on ``images`` as ``(rows, channels)``, with the
    model's quantizers off."""
    return _norm_and_logits(model, images, name, micro_batch)[0]


@dataclass
class ReparamStudy:
    """One post-LayerNorm site before and after RepQ-ViT's fold.

    Attributes:
        block: the block's number; norm: the LayerNorm's name; consumers: the Linear layers reading it.
        bits: the activation bit-width of the fold (its per-channel quantizers).
        x, x_folded: the LayerNorm's output ``(rows, C)`` before and after the fold.
        fold: the :class:`~ptqlib.engine.reparam.Fold` (``ratio`` r, ``offset`` b, ``scale`` s̃ ...).
        errors: per quantizer of the site's input, its MSE on the values (in the float model's
            units) and on the first consumer's output, and both over the per-channel quantizer's.
        same_codes: the share of values whose per-tensor code after the fold equals the
            per-channel code before it (minus the common zero point).
        max_relative_difference: ``max |logits_folded − logits| / max |logits|`` on the images.
    """

    block: int
    norm: str
    consumers: tuple[str, ...]
    bits: int
    x: Tensor
    x_folded: Tensor
    fold: Fold
    errors: "pd.DataFrame"
    same_codes: float
    max_relative_difference: float

    def ranges(self, folded: bool = False) -> tuple[Tensor, Tensor]:
        """Per-channel minimum and maximum, before (or after) the fold."""
        x = self.x_folded if folded else self.x
        return x.amin(0), x.amax(0)


def reparam_study(model: nn.Module, images: Tensor, block: int | None = None, bits: int = 4, *,
                  norm: str = "norm1", micro_batch: int = 8) -> ReparamStudy:
    """Fold a deep copy of the float ``model`` (RepQ-ViT, :func:`~ptqlib.engine.reparam.reparameterize`
    at ``bits``) and compare block ``block``'s ``norm`` output before and after, on ``images``
    (``block=None``: the block whose per-channel steps spread most, largest over median ``s_c``).

    The quantizers compared, all at ``bits`` and all measured in the float model's units (the
    folded values are mapped back, ``X = (X̃ + b) · r``, so the errors are comparable):

    * per tensor, min-max and MSE-searched steps, on the original values;
    * per channel, asymmetric min-max (RepQ-ViT's quantizer before the fold: ``s_c``, ``z_c``);
    * per tensor after the fold, with the fold's step ``s̃`` and with an MSE-searched step.

    The consumer's output error is ``(X̂ − X) Wᵀ`` with the float weights ``W``: after the fold
    ``(X̃̂ − X̃) W̃ᵀ`` is the same product, since ``W̃ = W · r`` column by column.
    """
    import pandas as pd

    sites = [(name, consumers) for name, _, consumers in post_layernorm_sites(model) if name.endswith(f".{norm}")]
    if block is not None and not 0 <= block < len(sites):
        raise PtqlibError(f"block {block} has no {norm} feeding a Linear layer; blocks 0 … {len(sites) - 1}")
    folded = copy.deepcopy(model)
    folds = reparameterize(folded, images, bits, micro_batch=micro_batch)
    if block is None:
        spread = [float(folds[n].channel_scale.max() / folds[n].channel_scale.median().clamp_min(1e-30)) for n, _ in sites]
        block = max(range(len(sites)), key=spread.__getitem__)
    name, consumers = sites[block]
    fold = folds[name]
    x, ref = _norm_and_logits(model, images, name, micro_batch)
    xf, out = _norm_and_logits(folded, images, name, micro_batch)
    x, xf = x.double(), xf.double()
    rel = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))

    r, b = fold.ratio.double(), fold.offset.double()
    s_c, z_c = fold.channel_scale.double(), fold.channel_zero_point.double()
    levels = 2**bits - 1
    codes_c = torch.clamp(torch.round(x / s_c) + z_c, 0, levels)
    per_channel = (codes_c - z_c) * s_c
    step_t = torch.tensor(fold.scale, dtype=torch.float64)
    codes_t = torch.clamp(torch.round(xf / step_t), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    same = float((codes_t == codes_c - fold.zero_point).double().mean())
    unfold = lambda q: (q + b) * r  # noqa: E731
    searched_before = fit_uniform(x.float(), bits, signed=True)
    searched_after = fit_uniform(xf.float(), bits, signed=True)
    xq = {
        "per tensor, min-max step (before the fold)":
            uniform_fake(x, minmax_step(x.abs().max(), bits).double(), bits),
        "per tensor, MSE-searched step (before the fold)": searched_before.fake(x.float()).double(),
        "per channel, asymmetric min-max (RepQ-ViT's quantizer)": per_channel,
        "per tensor after the fold, the fold's step s̃": unfold(uniform_fake(xf, step_t, bits)),
        "per tensor after the fold, MSE-searched step": unfold(searched_after.fake(xf.float()).double()),
    }
    weight = model.get_submodule(consumers[0][0]).weight.detach().double()
    rows = []
    for label, q in xq.items():
        err = q - x
        rows.append({"quantizer": label, "input MSE": float(err.square().mean()),
                     f"{consumers[0][0].rsplit('.', 1)[-1]} output MSE": float((err @ weight.T).square().mean())})
    errors = pd.DataFrame(rows).set_index("quantizer")
    base = errors.loc["per channel, asymmetric min-max (RepQ-ViT's quantizer)"]
    for col in list(errors.columns):
        errors[f"{col} / per channel"] = errors[col] / base[col]
    return ReparamStudy(block=block, norm=name, consumers=tuple(n for n, _ in consumers), bits=bits, x=x.float(),
                        x_folded=xf.float(), fold=fold, errors=errors, same_codes=same,
                        max_relative_difference=rel)


def _present(value: Any) -> bool:
    """Not None and not NaN (a missing cell of a table)."""
    return value is not None and value == value


def results_sentences(t: experiments.Tables) -> list[str]:
    """The successors table in words, every number computed from it: per bit-width the best
    configuration against its target (drop from float at most 0.5 / 1.0 / 10 points), with the
    one-sided paired test's verdict; each method's drop beside the published drops; ptqlib's
    RepQ-ViT quantizers beside the official RepQ-ViT code on the same images."""
    table = experiments.successors_table(t)
    fp = t.float_record
    if table.empty or fp is None:
        return ["the successors table (results/reference/sweeps/vit_tiny_successors.jsonl) is not in the "
                "reference folder yet: no results to show"]
    fp_top1 = float(fp["top1"])
    lines = [f"float ViT-Tiny: {fp_top1:.2f} % top-1 on {fp['eval_images']} validation images"]
    claims = experiments.successor_claims(t)
    for bits, target in experiments.SUCCESSOR_TARGETS.items():
        best = experiments.best_successor(t, bits)
        if best is None:
            continue
        name = experiments.SUCCESSOR_ROWS.get(best["method"], best["method"])
        row = table[(table["bits"] == bits) & (table["method"] == name)].iloc[0]
        met = row["drop"] <= target
        verdict = claims[claims["claim"].str.startswith(f"best at {bits} ")]["verdict"]
        tested = f"; the paired test of 'at most {target:g} below float' says {verdict.iloc[0]}" if len(verdict) else ""
        lines.append(f"{bits}: best is {name}, {row['top-1']:.2f} % (drop {row['drop']:.2f}, 95% CI "
                     f"{row['drop 95% CI']}); target drop ≤ {target:g} (top-1 ≥ {fp_top1 - target:.2f}): "
                     f"{'met' if met else 'NOT met'}, by {abs(target - row['drop']):.2f} points{tested}")
        base = table[(table["bits"] == bits) & (table["method"] == experiments.SUCCESSOR_ROWS["ptq4vit"])]
        if len(base) and best["method"] != "ptq4vit":
            gain = float(base["drop"].iloc[0]) - float(row["drop"])
            lines.append(f"{bits}: {name} is {gain:.2f} points above PTQ4ViT ({float(base['top-1'].iloc[0]):.2f} %)")
    pub_cols = ("published drop ViT-S", "published drop DeiT-T")
    for rec in table.to_dict("records"):
        if _present(rec.get(pub_cols[0])) and _present(rec.get(pub_cols[1])):
            lines.append(f"{rec['bits']} {rec['method']}: drop {rec['drop']:.2f} here; published drop "
                         f"{rec[pub_cols[0]]:.2f} on ViT-S, {rec[pub_cols[1]]:.2f} on DeiT-T")
    for rec in table.to_dict("records"):
        off = rec.get("official code")
        if _present(off):
            lines.append(f"{rec['bits']} RepQ-ViT: ptqlib's RepQ-ViT quantizers {rec['top-1']:.2f} %, the official "
                         f"RepQ-ViT code {off:.2f} % on the same model and images "
                         f"({rec['top-1'] - off:+.2f} points)")
    return lines
