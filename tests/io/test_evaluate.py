"""Tests for ptqlib.io.evaluate, on a toy classifier and on the real ViT-Ti."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ptqlib.io.data import DataPaths, LabeledImages, make_loader, model_transform
from ptqlib.errors import PtqlibError
from ptqlib.io.evaluate import Accuracy, evaluate
from ptqlib.io.models import find_checkpoint, load_model


class Fixed(nn.Module):
    """Returns the logits stored in the batch itself: ``x`` is already ``(batch, classes)``."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return (x, x) if self.as_tuple else x


def batches() -> list[tuple[Tensor, Tensor]]:
    # 6 classes; label ranks: 1st, 1st, 3rd, 6th (not in top 5).
    logits = torch.tensor([[9., 1, 2, 3, 4, 5], [1., 9, 2, 3, 4, 5],
                           [1., 2, 9, 8, 7, 0], [1., 2, 3, 4, 5, 0]])
    return [(logits[:3], torch.tensor([0, 1, 4])), (logits[3:], torch.tensor([5]))]


@pytest.mark.parametrize("as_tuple", [False, True])
def test_top1_top5_counts(as_tuple: bool) -> None:
    result = evaluate(Fixed(as_tuple), batches(), progress=False)
    assert isinstance(result, Accuracy)
    assert (result.top1, result.top5, result.images) == (50.0, 75.0, 4)
    assert result.seconds >= 0
    # per image, in loader order: argmax of each row, and the labels
    assert result.predictions == (0, 1, 2, 4) and result.labels == (0, 1, 4, 5)
    assert result.correct() == [True, True, False, False]


def test_fewer_than_five_classes() -> None:
    loader = [(torch.tensor([[0., 1.], [1., 0.]]), torch.tensor([1, 1]))]
    result = evaluate(Fixed(), loader, progress=False)
    assert (result.top1, result.top5) == (50.0, 100.0)


def test_empty_loader_is_an_error() -> None:
    with pytest.raises(PtqlibError, match="no images"):
        evaluate(Fixed(), [], progress=False)


def test_real_vit_tiny_on_100_val_images(shared_data: DataPaths) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_model("vit_tiny_patch16_224", find_checkpoint("vit_tiny_patch16_224", shared_data.root))
    dataset = LabeledImages(shared_data.val_dir, model_transform(model), limit=100)
    result = evaluate(model, make_loader(dataset, batch_size=50), progress=False)
    # 82.6 % top-1 on all 1300 images; 100 images have a binomial std of about 3.8 points.
    assert result.images == 100
    assert 70.0 < result.top1 <= 100.0 and result.top5 >= 85.0


class _Skipping(list):
    """A loader that reports skipped files, like ``make_loader(..., skip_corrupt=True)``."""

    skipped = ["bad1.JPEG", "bad2.JPEG", "bad3.JPEG", "bad4.JPEG"]


def test_skipped_images_are_reported_and_not_counted() -> None:
    from ptqlib.io.evaluate import skipped_note, skipped_record

    result = evaluate(Fixed(), _Skipping(batches()), progress=False)
    assert (result.top1, result.images) == (50.0, 4)
    assert result.skipped == ("bad1.JPEG", "bad2.JPEG", "bad3.JPEG", "bad4.JPEG")
    assert skipped_record(result) == {"count": 4, "files": list(result.skipped)}
    note = skipped_note(result)
    assert note is not None and note.startswith("skipped 4 images that could not be decoded")
    assert "bad1.JPEG, bad2.JPEG, bad3.JPEG and 1 more" in note and "over the 4 images evaluated" in note
    plain = evaluate(Fixed(), batches(), progress=False)
    assert plain.skipped == () and skipped_note(plain) is None
    assert skipped_record(plain) == {"count": 0, "files": []}
    with pytest.raises(PtqlibError, match="all 4 images could not be decoded"):
        evaluate(Fixed(), _Skipping([]), progress=False)
