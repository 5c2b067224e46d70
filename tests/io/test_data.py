"""Tests for ptqlib.io.data: folder layouts, image decoding, lists and the calibration batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import write_image

from ptqlib.io.data import (DataPaths, LabeledImages, calibration_batch, data_root, load_rgb,
                         make_loader, read_list)
from ptqlib.errors import PtqlibError


def fixed_size(image) -> torch.Tensor:
    """A transform that makes every image 3x8x8 so that batches stack."""
    from torchvision.transforms.functional import resize, to_tensor
    return to_tensor(resize(image, [8, 8]))


def test_data_root_explicit_env_and_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    assert data_root() is None
    monkeypatch.setenv("PTQLIB_DATA", str(tmp_path))
    assert data_root() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert data_root(other) == other
    with pytest.raises(PtqlibError, match="not a directory"):
        data_root(tmp_path / "missing")
    monkeypatch.setenv("PTQLIB_DATA", str(tmp_path / "missing"))
    with pytest.raises(PtqlibError, match="PTQLIB_DATA"):
        data_root()


def test_data_paths_layout(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    assert paths.val_dir == tmp_path / "imagenet-val-1300"
    assert paths.calib_list == tmp_path / "imagenet-calib" / "calib32.txt"
    assert paths.weights_dir == tmp_path / "weights"
    with pytest.raises(PtqlibError):
        DataPaths.from_root(tmp_path / "missing")


def test_labels_file_layout_converts_every_mode_to_rgb(labeled_folder: Path) -> None:
    dataset = LabeledImages(labeled_folder)
    assert [(p.name, label) for p, label in dataset.samples] == [
        ("a_rgb.JPEG", 3), ("b_gray.JPEG", 1), ("c_cmyk.JPEG", 999), ("d_rgba.png", 0)]
    for index in range(len(dataset)):
        tensor, label = dataset[index]
        assert tensor.shape == (3, 30, 40) and tensor.dtype == torch.float32
        assert label == dataset.samples[index][1]


def test_labels_file_with_images_beside_it(tmp_path: Path) -> None:
    write_image(tmp_path / "x.jpg")
    (tmp_path / "labels.txt").write_text("x.jpg 5\n")
    assert [(p, label) for p, label in LabeledImages(tmp_path).samples] == [(tmp_path / "x.jpg", 5)]


@pytest.mark.parametrize("line, message", [
    ("gone.JPEG 3", "line 2: image .* does not exist"),
    ("a_rgb.JPEG 1000", "line 2: class 1000 is outside"),
    ("a_rgb.JPEG -1", "line 2: class -1 is outside"),
    ("a_rgb.JPEG three", "line 2: expected 'filename class_index'"),
])
def test_bad_labels_line_names_the_line(labeled_folder: Path, line: str, message: str) -> None:
    (labeled_folder / "labels.txt").write_text(f"a_rgb.JPEG 3\n{line}\n")
    with pytest.raises(PtqlibError, match=message):
        LabeledImages(labeled_folder)


def test_wnid_layout_uses_imagenet_class_order(tmp_path: Path) -> None:
    # A subset of classes: the sorted-subfolder index would be 0 and 1; ImageNet's is 1 and 999.
    write_image(tmp_path / "n01443537" / "goldfish.JPEG")
    write_image(tmp_path / "n15075141" / "tissue.JPEG", "L")
    dataset = LabeledImages(tmp_path, fixed_size)
    assert [label for _, label in dataset.samples] == [1, 999]
    assert dataset[1][0].shape == (3, 8, 8)


def test_wnid_layout_rejects_unknown_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "n01443537" / "goldfish.JPEG")
    write_image(tmp_path / "cats" / "cat.JPEG")
    with pytest.raises(PtqlibError, match="cats"):
        LabeledImages(tmp_path)


def test_empty_or_missing_folder_says_what_layout_is_expected(tmp_path: Path) -> None:
    with pytest.raises(PtqlibError, match="expected labels.txt"):
        LabeledImages(tmp_path)
    with pytest.raises(PtqlibError, match="does not exist"):
        LabeledImages(tmp_path / "missing")


def test_truncated_jpeg_raises_naming_the_file(labeled_folder: Path) -> None:
    good = labeled_folder / "images" / "a_rgb.JPEG"
    write_image(good, size=(64, 64))
    data = good.read_bytes()
    (labeled_folder / "images" / "a_rgb.JPEG").write_bytes(data[: len(data) // 2])
    dataset = LabeledImages(labeled_folder)
    with pytest.raises(PtqlibError, match="a_rgb.JPEG"):
        dataset[0]
    (labeled_folder / "images" / "a_rgb.JPEG").write_bytes(b"not an image at all")
    with pytest.raises(PtqlibError, match="cannot read image"):
        load_rgb(good)


def test_files_and_limit_select_samples(labeled_folder: Path) -> None:
    picked = LabeledImages(labeled_folder, files=["c_cmyk.JPEG", "a_rgb.JPEG"])
    assert [p.name for p, _ in picked.samples] == ["c_cmyk.JPEG", "a_rgb.JPEG"]
    assert [p.name for p, _ in LabeledImages(labeled_folder, limit=2).samples] == ["a_rgb.JPEG", "b_gray.JPEG"]
    with pytest.raises(PtqlibError, match="nope.JPEG"):
        LabeledImages(labeled_folder, files=["a_rgb.JPEG", "nope.JPEG"])


def test_read_list_skips_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("  a.JPEG \n\n b.JPEG\n")
    assert read_list(tmp_path / "list.txt") == ["a.JPEG", "b.JPEG"]
    with pytest.raises(PtqlibError):
        read_list(tmp_path / "missing.txt")


def test_calibration_batch_from_list(labeled_folder: Path) -> None:
    dataset = LabeledImages(labeled_folder, fixed_size)
    (labeled_folder / "calib.txt").write_text("d_rgba.png\nb_gray.JPEG\na_rgb.JPEG\n")
    images, labels, names = calibration_batch(dataset, 2, list_file=labeled_folder / "calib.txt")
    assert images.shape == (2, 3, 8, 8)
    assert labels.tolist() == [0, 1] and names == ["d_rgba.png", "b_gray.JPEG"]
    with pytest.raises(PtqlibError, match="more than the 3 files"):
        calibration_batch(dataset, 4, list_file=labeled_folder / "calib.txt")


def test_calibration_batch_random_is_seeded(labeled_folder: Path) -> None:
    dataset = LabeledImages(labeled_folder, fixed_size)
    first = calibration_batch(dataset, 3, seed=1)
    again = calibration_batch(dataset, 3, seed=1)
    assert first[2] == again[2] and torch.equal(first[0], again[0])
    assert len(set(first[2])) == 3
    with pytest.raises(PtqlibError, match="more than the 4 images"):
        calibration_batch(dataset, 5)


def test_make_loader_keeps_order(labeled_folder: Path) -> None:
    loader = make_loader(LabeledImages(labeled_folder, fixed_size), batch_size=3)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [3, 1]
    assert batches[0][1].tolist() == [3, 1, 999]


def test_shared_data_counts(shared_data: DataPaths) -> None:
    assert len(LabeledImages(shared_data.val_dir)) == 1300
    names = read_list(shared_data.calib_list)
    assert len(names) == 32 and len(set(names)) == 32
    calib = LabeledImages(shared_data.calib_dir, files=names)
    assert len(calib) == 32


@pytest.mark.parametrize("workers", [0, 1])
def test_make_loader_skip_corrupt_names_the_skipped_files(labeled_folder: Path, workers: int) -> None:
    """Opt-in skipping: only readable images reach the batches, the unreadable ones are listed
    (also across worker processes); without the option the same folder fails naming the file."""
    (labeled_folder / "images" / "b_gray.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    good = labeled_folder / "images" / "a_rgb.JPEG"
    data = write_image(good, size=(64, 64)).read_bytes()
    good.write_bytes(data[: len(data) // 2])  # truncated
    dataset = LabeledImages(labeled_folder, fixed_size)
    with pytest.raises(PtqlibError, match="a_rgb.JPEG.*--skip-corrupt"):
        list(make_loader(dataset, batch_size=3, workers=workers))
    loader = make_loader(dataset, batch_size=3, workers=workers, skip_corrupt=True)
    batches = list(loader)
    assert [labels.tolist() for _, labels in batches] == [[999], [0]]  # c_cmyk, d_rgba
    assert all(images.shape[1:] == (3, 8, 8) for images, _ in batches)
    assert loader.skipped == ["a_rgb.JPEG", "b_gray.JPEG"]
    assert len(list(loader)) == 2 and loader.skipped == ["a_rgb.JPEG", "b_gray.JPEG"]  # reset per pass


def test_make_loader_skip_corrupt_whole_batch_unreadable(labeled_folder: Path) -> None:
    for name in ("a_rgb.JPEG", "b_gray.JPEG"):
        (labeled_folder / "images" / name).write_bytes(b"garbage")
    loader = make_loader(LabeledImages(labeled_folder, fixed_size), batch_size=2, skip_corrupt=True)
    batches = list(loader)
    assert len(batches) == 1 and batches[0][1].tolist() == [999, 0]
    assert loader.skipped == ["a_rgb.JPEG", "b_gray.JPEG"]
