"""Top-1 / top-5 accuracy of a classifier over a data loader."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ptqlib.errors import PtqlibError

__all__ = ["Accuracy", "evaluate", "skipped_record", "skipped_note"]


@dataclass(frozen=True)
class Accuracy:
    """The result of :func:`evaluate`: accuracies in percent, the image count and the wall time.

    ``images`` counts the images actually evaluated; ``skipped`` names those a
    ``make_loader(..., skip_corrupt=True)`` loader left out because they could not be decoded.
    ``predictions`` and ``labels`` are every evaluated image's top-1 class and true class, in
    loader order, so two evaluations on the same images can be compared image by image.
    """

    top1: float
    top5: float
    images: int
    seconds: float
    skipped: tuple[str, ...] = field(default=())
    predictions: tuple[int, ...] = field(default=(), repr=False)
    labels: tuple[int, ...] = field(default=(), repr=False)

    def correct(self) -> list[bool]:
        """Per image: whether the top-1 class is the true class."""
        return [p == y for p, y in zip(self.predictions, self.labels)]


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
    predictions: list[int] = []
    truth: list[int] = []
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
            predictions += best[:, 0].tolist()
            truth += labels.tolist()
            bar.update(len(labels))
            bar.set_postfix(top1=f"{100 * top1 / seen:.2f}")
    skipped = tuple(getattr(loader, "skipped", ()) or ())
    if seen == 0:
        if skipped:
            raise PtqlibError(f"all {len(skipped)} images could not be decoded and were skipped "
                              f"({', '.join(skipped[:3])}); check the image folder")
        raise PtqlibError("the data loader gave no images to evaluate; check the image folder and --limit")
    return Accuracy(top1=100 * top1 / seen, top5=100 * top5 / seen, images=seen,
                    seconds=time.perf_counter() - start, skipped=skipped, predictions=tuple(predictions),
                    labels=tuple(truth))


def skipped_record(accuracy: Accuracy) -> dict[str, object]:
    """``{"count": n, "files": [...]}``: the images an evaluation skipped, for a JSON result."""
    return {"count": len(accuracy.skipped), "files": list(accuracy.skipped)}


def skipped_note(accuracy: Accuracy, shown: int = 3) -> str | None:
    """One line saying how many images were skipped and naming the first few; None if none were."""
    if not accuracy.skipped:
        return None
    n = len(accuracy.skipped)
    names = ", ".join(accuracy.skipped[:shown]) + (f" and {n - shown} more" if n > shown else "")
    return (f"skipped {n} image{'s' if n != 1 else ''} that could not be decoded ({names}); "
            f"accuracy is over the {accuracy.images} images evaluated")
