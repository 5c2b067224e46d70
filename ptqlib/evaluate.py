"""Top-1 / top-5 accuracy of a classifier over a data loader."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ptqlib.errors import PtqlibError

__all__ = ["Accuracy", "evaluate"]


@dataclass(frozen=True)
class Accuracy:
    """The result of :func:`evaluate`: accuracies in percent, the image count and the wall time."""

    top1: float
    top5: float
    images: int
    seconds: float


def _logits(output: Tensor | tuple[Tensor, ...] | list[Tensor]) -> Tensor:
    """The model's class scores; a tuple (distilled DeiT in train mode) is averaged."""
    if isinstance(output, (tuple, list)):
        return torch.stack(list(output)).mean(dim=0)
    return output


def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    *,
    device: str | torch.device = "cpu",
    desc: str = "evaluate",
    progress: bool = True,
) -> Accuracy:
    """Run ``model`` over ``loader`` and count top-1 and top-5 hits.

    The model is used as it is (put it in eval mode first; :func:`ptqlib.models.load_model` does).

    Args:
        model: a classifier returning logits ``(batch, classes)``.
        loader: yields ``(images, labels)`` batches, e.g. :func:`ptqlib.data.make_loader`.
        device: where the batches go; the model must already be there.
        desc: the progress bar's label.
        progress: show a tqdm progress bar.
    """
    dataset = getattr(loader, "dataset", None)
    total = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
    top1 = top5 = seen = 0
    start = time.perf_counter()
    with torch.inference_mode(), tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = _logits(model(images))
            best = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
            hits = best == labels[:, None]
            top1 += int(hits[:, 0].sum())
            top5 += int(hits.any(dim=-1).sum())
            seen += len(labels)
            bar.update(len(labels))
            bar.set_postfix(top1=f"{100 * top1 / seen:.2f}")
    if seen == 0:
        raise PtqlibError("the data loader gave no images to evaluate; check the image folder and --limit")
    return Accuracy(top1=100 * top1 / seen, top5=100 * top5 / seen, images=seen,
                    seconds=time.perf_counter() - start)
