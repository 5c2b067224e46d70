"""Image folders with ImageNet labels, the model's eval transform, and the calibration batch.

Two folder layouts are read by :class:`LabeledImages`:

* ``labels.txt`` with one ``filename class_index`` per line, the images in ``images/`` beside it
  or directly beside it (the layout of the shared data folder);
* the ImageNet layout ``<wnid>/<file>.JPEG``; the class index is the wnid's place among the 1000
  ImageNet-1k wnids in sorted order (so a folder holding a subset of classes is numbered right).

Every image is decoded completely when read: a corrupt or truncated file raises
:class:`CorruptImageError` (a :class:`~ptqlib.errors.PtqlibError`) naming it, instead of silently
changing the accuracy. Only on request (``make_loader(..., skip_corrupt=True)``, the command
line's ``--skip-corrupt``) are such images left out, and the loader then records their names
(``loader.skipped``) so the accuracy can say over how many images it was measured.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm.data
import torch
from PIL import Image, ImageFile
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import to_tensor

from ptqlib.errors import PtqlibError

__all__ = [
    "DEFAULT_DATA_DIR",
    "DATA_FOLDERS",
    "SAMPLE_VAL_DIR",
    "holds_data",
    "data_root",
    "CorruptImageError",
    "DataPaths",
    "LabeledImages",
    "load_rgb",
    "model_transform",
    "read_list",
    "calibration_batch",
    "make_loader",
]

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
NUM_CLASSES = 1000
LAYOUT_HINT = ("expected labels.txt ('filename class_index' per line) with the images in images/ "
               "or beside it, or ImageNet wnid folders (n01440764/*.JPEG)")
#: The data folder used when neither ``--data`` nor ``PTQLIB_DATA`` names one: the repository's
#: ``data/`` (where ``python -m ptqlib data fetch`` downloads to). Read at call time, so tests may
#: point it elsewhere.
DEFAULT_DATA_DIR: Path = Path(__file__).resolve().parents[2] / "data"
#: The public evaluation images ``data fetch`` writes (the sample's images outside ``calib32.txt``);
#: :class:`DataPaths` uses it when the folder has no ``imagenet-val-1300/``.
SAMPLE_VAL_DIR = "imagenet-sample-val"
#: The folders whose presence makes a folder a data folder (see :func:`holds_data`).
DATA_FOLDERS = ("weights", "imagenet-calib", "imagenet-val-1300", SAMPLE_VAL_DIR)


class CorruptImageError(PtqlibError):
    """An image file that cannot be decoded (corrupt, truncated, not an image).

    Attributes:
        path: the file.
        reason: what the decoder said.
    """

    def __init__(self, message: str, path: Path | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


def holds_data(folder: str | Path) -> bool:
    """Whether ``folder`` holds any part of the data layout (``weights/``, ``imagenet-calib/``,
    ``imagenet-val-1300/`` or ``imagenet-sample-val/``): the repository's ``data/`` holds only its
    committed notes until ``python -m ptqlib data fetch`` has run.

    Args:
        folder: the folder to look at.
    """
    return any((Path(folder) / name).is_dir() for name in DATA_FOLDERS)


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The data folder: ``explicit`` if given, else ``$PTQLIB_DATA``, else the repository's
    ``data/`` (:data:`DEFAULT_DATA_DIR`) when it holds data (:func:`holds_data`), else None.

    ``PTQLIB_DATA`` set to the empty string means no data folder at all (not even ``data/``).

    Args:
        explicit: a path given by the user (``--data``); wins over the environment.
    """
    if explicit is not None and str(explicit) != "":
        path, source = Path(explicit), "the data folder"
    elif "PTQLIB_DATA" in os.environ:
        if not os.environ["PTQLIB_DATA"]:
            return None
        path, source = Path(os.environ["PTQLIB_DATA"]), "PTQLIB_DATA"
    else:
        default = DEFAULT_DATA_DIR
        return default if holds_data(default) else None
    if not path.is_dir():
        raise PtqlibError(f"{source} {path} is not a directory; point it at a folder laid out like "
                          "weights/, imagenet-val-1300/, imagenet-calib/")
    return path


@dataclass(frozen=True)
class DataPaths:
    """Where things live in a data folder laid out like the shared one."""

    root: Path
    weights_dir: Path
    val_dir: Path
    calib_dir: Path
    calib_list: Path

    @classmethod
    def from_root(cls, root: str | Path) -> DataPaths:
        """The paths below ``root``; only ``root`` itself has to exist now. The validation folder is
        ``imagenet-val-1300/``, or ``imagenet-sample-val/`` (the public sample) when only that exists.

        Args:
            root: the data folder.
        """
        root = Path(root)
        if not root.is_dir():
            raise PtqlibError(f"data folder {root} is not a directory; pass an existing folder")
        calib_dir = root / "imagenet-calib"
        val_dir = root / "imagenet-val-1300"
        if not val_dir.exists() and (root / SAMPLE_VAL_DIR).is_dir():  # the public sample (data fetch)
            val_dir = root / SAMPLE_VAL_DIR
        return cls(root=root, weights_dir=root / "weights", val_dir=val_dir,
                   calib_dir=calib_dir, calib_list=calib_dir / "calib32.txt")


def load_rgb(path: Path) -> Image.Image:
    """Decode the whole image at ``path`` as RGB (grayscale, CMYK, palette and RGBA converted).

    Args:
        path: the image file.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise PtqlibError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images would load "
                          "silently; leave it False while evaluating")
    try:
        with Image.open(path) as image:
            image.load()  # force the lazy decode now, so truncation shows here
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CorruptImageError(f"cannot read image {path} ({error}); replace or remove the file, or pass "
                                "--skip-corrupt to leave it out of the evaluation (skipped files are counted and "
                                "recorded)", Path(path), str(error)) from error


def _read_labels_file(labels: Path) -> list[tuple[Path, int]]:
    """Samples named by ``labels.txt``; images in ``images/`` beside it, else beside it."""
    image_dir = labels.parent / "images" if (labels.parent / "images").is_dir() else labels.parent
    samples = []
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise PtqlibError(f"{labels} line {number}: expected 'filename class_index', got {line.strip()!r}; "
                              "fix the line")
        path, label = image_dir / fields[0], int(fields[1])
        if not 0 <= label < NUM_CLASSES:
            raise PtqlibError(f"{labels} line {number}: class {label} is outside 0..{NUM_CLASSES - 1}; "
                              "use the index in sorted-wnid order")
        if not path.is_file():
            raise PtqlibError(f"{labels} line {number}: image {path} does not exist; "
                              "add the file or remove the line")
        samples.append((path, label))
    return samples


def _read_wnid_folders(root: Path) -> list[tuple[Path, int]]:
    """Samples from ``<wnid>/*`` folders, numbered by the sorted ImageNet-1k wnid list."""
    index = {wnid: i for i, wnid in enumerate(timm.data.ImageNetInfo().label_names())}
    folders = [p for p in root.iterdir() if p.is_dir() and p.name != "images"]
    unknown = sorted(p.name for p in folders if p.name not in index)
    if unknown and len(unknown) < len(folders):
        raise PtqlibError(f"{root}: folders {', '.join(unknown[:3])} are not ImageNet-1k wnids; "
                          "remove them or rename them to their wnid")
    return [(path, index[folder.name]) for folder in folders if folder.name in index
            for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES]


class LabeledImages(Dataset):
    """Images with ImageNet-1k class indices, from a folder (see the module docstring for layouts).

    Attributes:
        root: the folder.
        samples: ``(image path, class index)`` pairs, sorted by path (or in ``files`` order).
        transform: applied to the RGB ``PIL.Image``; None gives a ``[0, 1]`` tensor of its size.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Image.Image], Tensor] | None = None,
        *,
        files: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        """Find the images and their labels (nothing is decoded yet).

        Args:
            root: the folder.
            transform: e.g. :func:`model_transform` of the model to evaluate.
            files: keep only these file names (e.g. a calibration list), in this order.
            limit: keep the first ``limit`` samples.
        """
        self.root = Path(root)
        self.transform = transform
        if not self.root.is_dir():
            raise PtqlibError(f"image folder {self.root} does not exist; {LAYOUT_HINT}")
        labels = self.root / "labels.txt"
        samples = _read_labels_file(labels) if labels.is_file() else _read_wnid_folders(self.root)
        if not samples:
            raise PtqlibError(f"no images found in {self.root}; {LAYOUT_HINT}")
        samples.sort(key=lambda sample: sample[0].relative_to(self.root).as_posix())
        if files is not None:
            by_name = {path.name: (path, label) for path, label in samples}
            missing = [name for name in files if name not in by_name]
            if missing:
                raise PtqlibError(f"{len(missing)} listed files are not in {self.root} "
                                  f"({', '.join(missing[:3])}); fix the list or the folder")
            samples = [by_name[name] for name in files]
        if limit is not None:
            if limit < 1:
                raise PtqlibError(f"image limit {limit} is not positive; pass a count of at least 1")
            samples = samples[:limit]
        self.samples: list[tuple[Path, int]] = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        image = load_rgb(path)
        return (self.transform(image) if self.transform is not None else to_tensor(image)), label


def model_transform(model: nn.Module) -> Callable[[Image.Image], Tensor]:
    """timm's eval transform for ``model`` (resize, center crop, normalize from its pretrained cfg).

    Args:
        model: a timm model.
    """
    config: dict[str, Any] = timm.data.resolve_data_config({}, model=model)
    return timm.data.create_transform(**config)


def read_list(path: str | Path) -> list[str]:
    """The non-empty, stripped lines of a list file.

    Args:
        path: the list file (e.g. ``calib32.txt``).
    """
    path = Path(path)
    if not path.is_file():
        raise PtqlibError(f"list file {path} does not exist; check the path")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def calibration_batch(
    dataset: LabeledImages,
    size: int,
    *,
    list_file: Path | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, list[str]]:
    """The calibration images as one stacked batch: ``(images, labels, file names)``.

    Args:
        dataset: where the images come from (with the model's transform).
        size: how many images.
        list_file: take the first ``size`` files named in it; without it, a random sample.
        seed: the seed of the random sample.
    """
    if size < 1:
        raise PtqlibError(f"calibration size {size} is not positive; pass at least 1")
    if list_file is not None:
        names = read_list(list_file)
        if size > len(names):
            raise PtqlibError(f"calibration size {size} is more than the {len(names)} files in {list_file}; "
                              "pass a smaller size or a longer list")
        position = {path.name: i for i, (path, _) in enumerate(dataset.samples)}
        missing = [name for name in names[:size] if name not in position]
        if missing:
            raise PtqlibError(f"{len(missing)} files of {list_file} are not in {dataset.root} "
                              f"({', '.join(missing[:3])}); fix the list or the folder")
        indices = [position[name] for name in names[:size]]
    else:
        if size > len(dataset):
            raise PtqlibError(f"calibration size {size} is more than the {len(dataset)} images in "
                              f"{dataset.root}; pass a smaller size")
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(dataset), generator=generator)[:size].tolist()
    try:
        items = [dataset[i] for i in indices]
    except CorruptImageError as error:
        raise CorruptImageError(f"cannot read calibration image {error.path} ({error.reason}); replace or remove "
                                "the file, or choose other calibration images (they are never skipped)",
                                error.path, error.reason) from error
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([label for _, label in items])
    return images, labels, [dataset.samples[i][0].name for i in indices]


class _Skipping(Dataset):
    """``dataset`` whose items are ``(image, label, None)``, or ``(None, label, file name)`` for an
    image that cannot be decoded."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor | None, int, str | None]:
        try:
            image, label = self.dataset[index]
        except CorruptImageError as error:
            samples = getattr(self.dataset, "samples", None)
            path = samples[index][0] if samples is not None else error.path
            return None, -1, str(path.name if path is not None else index)
        return image, label, None


def _collate_skipping(items: list[tuple[Tensor | None, int, str | None]]) -> tuple[Tensor | None, Tensor | None, list[str]]:
    """Stack the readable images; the names of the unreadable ones come third."""
    good = [(image, label) for image, label, _ in items if image is not None]
    skipped = [name for image, _, name in items if image is None and name is not None]
    if not good:
        return None, None, skipped
    return torch.stack([image for image, _ in good]), torch.tensor([label for _, label in good]), skipped


class _OneLineErrors(DataLoader):
    """A DataLoader whose worker errors stay one line: a :class:`PtqlibError` raised in a worker
    process arrives wrapped with its whole traceback; keep only its message.

    With ``skip_corrupt`` it yields only readable images and lists the skipped file names in
    ``skipped`` (reset at every new pass over the data).
    """

    def __init__(self, *args: Any, skip_corrupt: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_corrupt = skip_corrupt
        self.skipped: list[str] = []

    def __iter__(self):  # type: ignore[override]
        iterator = super().__iter__()
        self.skipped = []
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except PtqlibError as error:
                lines = str(error).splitlines()
                prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
                own = [line[len(prefix):] for line in lines if line.startswith(prefix)]
                if len(lines) == 1 or not own:
                    raise
                raise PtqlibError(own[-1]) from error
            if self.skip_corrupt:
                images, labels, skipped = batch
                self.skipped.extend(skipped)
                if images is None:
                    continue
                batch = [images, labels]
            yield batch


def make_loader(dataset: Dataset, batch_size: int = 64, workers: int = 0, *, skip_corrupt: bool = False) -> DataLoader:
    """A DataLoader in the dataset's order (no shuffle).

    Args:
        dataset: e.g. a :class:`LabeledImages`.
        batch_size: images per batch.
        workers: loader processes; 0 reads in this process. Either way a bad image's error is one line.
        skip_corrupt: leave out images that cannot be decoded instead of failing; after a pass,
            the loader's ``skipped`` lists their file names (in dataset order).
    """
    if skip_corrupt:
        return _OneLineErrors(_Skipping(dataset), batch_size=batch_size, shuffle=False, num_workers=workers,
                              collate_fn=_collate_skipping, skip_corrupt=True)
    return _OneLineErrors(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
