"""Which layers cost the accuracy: switch on one kind of quantizer at a time and evaluate.

For a calibrated model, every row of the table enables only the quantizers of one *group*
(``fc2 input``, ``qkv weight``, ``matmul_av a``, ...; then all weights, all activations, all) and
reports top-1 and its drop against the float model.
"""
from __future__ import annotations

from typing import Callable

from torch import nn
from torch.utils.data import DataLoader

from ..io.evaluate import Accuracy, evaluate
from ..engine.layers import QUANT_LAYERS
from ..core.quant import Quantizer

__all__ = ["quantizer_groups", "sensitivity"]

_OPERAND = {"input_quant": "input", "weight_quant": "weight", "a_quant": "a", "b_quant": "b"}


def quantizer_groups(model: nn.Module) -> dict[str, list[Quantizer]]:
    """Calibrated quantizers grouped as ``"<role> <operand>"`` plus the three totals."""
    groups: dict[str, list[Quantizer]] = {}
    weights: list[Quantizer] = []
    acts: list[Quantizer] = []
    for _, layer in model.named_modules():
        if not isinstance(layer, QUANT_LAYERS):
            continue
        for attr, operand in _OPERAND.items():
            q = getattr(layer, attr, None)
            if isinstance(q, Quantizer) and q.calibrated:
                groups.setdefault(f"{layer.role} {operand}", []).append(q)
                (weights if operand == "weight" else acts).append(q)
    groups["all weights"] = weights
    groups["all activations"] = acts
    groups["everything"] = weights + acts
    return groups


def sensitivity(
    model: nn.Module,
    loader: DataLoader,
    *,
    fp: Accuracy,
    device: str = "cpu",
    progress: bool = True,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Evaluate ``model`` with each quantizer group alone enabled; restores the quantizers after."""
    groups = quantizer_groups(model)
    every = groups["everything"]
    state = [(q, q.enabled) for q in every]
    rows = []
    try:
        for name, qs in groups.items():
            for q in every:
                q.enabled = False
            for q in qs:
                q.enabled = True
            acc = evaluate(model, loader, device=device, desc=name, progress=progress)
            row = {"quantized": name, "quantizers": len(qs), "top1": round(acc.top1, 2),
                   "top5": round(acc.top5, 2), "top1_drop": round(fp.top1 - acc.top1, 2)}
            rows.append(row)
            if on_row:
                on_row(row)
    finally:
        for q, was in state:
            q.enabled = was
    return rows
