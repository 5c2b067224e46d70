"""The model and images a notebook works on: real (from ``PTQLIB_DATA``) or, where no data
exists and the caller allows it (smoke mode), random weights and Gaussian-noise images.

* :func:`load_notebook_data` — a float model with its calibration batch and validation images.
* :func:`preload` — decode a dataset once into memory, so that many evaluations share it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from ..errors import PtqlibError

__all__ = ["NotebookData", "load_notebook_data", "preload"]


@dataclass
class NotebookData:
    """A float model and its images, as a notebook uses them.

    Attributes:
        model: the float timm model, eval mode (never wrapped here; functions copy it).
        model_name: the timm name.
        real_weights: True when the weights are a trained checkpoint, False for random weights.
        calib_images, calib_labels: the calibration batch.
        val: validation images (a dataset), or None.
        source: where the weights and images came from, without local paths.
    """

    model: nn.Module
    model_name: str
    real_weights: bool
    calib_images: Tensor
    calib_labels: Tensor
    val: Dataset | None
    source: str


def load_notebook_data(
    model_name: str = "vit_tiny_patch16_224",
    data: str | Path | None = None,
    *,
    calib_images: int = 32,
    val_images: int | None = None,
    allow_random: bool = False,
    calib_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    seed: int = 0,
) -> NotebookData:
    """The model and images a notebook works on.

    Weights: the model's checkpoint in ``<data>/weights/`` if there is one; else, with
    ``allow_random`` (smoke mode), random weights; else timm's pretrained download (needs
    internet; a clear error otherwise).

    Images: calibration images from ``calib_dir`` (default ``<data>/imagenet-calib``, the files of
    ``calib32.txt`` first; a seeded sample when more are asked for or there is no list) and the
    first ``val_images`` of ``val_dir`` (default ``<data>/imagenet-val-1300``; an ImageNet
    ``val/<wnid>/`` folder works too). Without any image folder and with ``allow_random``:
    Gaussian-noise images with random labels, enough to run every code path.

    Args:
        model_name: timm model name (optionally with a pretrained tag).
        data: the data folder; ``None`` or ``""`` means none.
        calib_images: calibration batch size.
        val_images: validation images (``None``: all).
        allow_random: allow random weights and noise images where no real ones exist.
        calib_dir, val_dir: image folders overriding the data folder's.
        seed: seeds the random weights, images and samples.
    """
    from ..io.data import DataPaths, LabeledImages, calibration_batch, model_transform, read_list
    from ..io.models import find_checkpoint, load_model

    root = Path(data) if data else None
    if root is not None and not root.is_dir():
        raise PtqlibError(f"data folder {root} is not a directory; set PTQLIB_DATA to the shared data folder or leave it empty")
    paths = DataPaths.from_root(root) if root is not None else None
    checkpoint = find_checkpoint(model_name, root) if root is not None else None
    if checkpoint is not None:
        model, real, weights = load_model(model_name, checkpoint), True, f"real weights ({checkpoint.name})"
    elif allow_random:
        model, real, weights = load_model(model_name, random_init=True, seed=seed), False, "RANDOM weights"
    else:
        model, real, weights = load_model(model_name), True, "timm pretrained weights (downloaded)"
    transform = model_transform(model)
    calib_root = Path(calib_dir) if calib_dir else (paths.calib_dir if paths and paths.calib_dir.is_dir() else None)
    val_root = Path(val_dir) if val_dir else (paths.val_dir if paths and paths.val_dir.is_dir() else None)
    if calib_root is not None:
        calib_set = LabeledImages(calib_root, transform=transform)
        listed = None
        if not calib_dir and paths is not None and paths.calib_list.exists() and calib_images <= len(read_list(paths.calib_list)):
            listed = paths.calib_list
        images, labels, _ = calibration_batch(calib_set, calib_images, list_file=listed, seed=seed)
        calib_text = f"{images.shape[0]} calibration images ({'calib32.txt' if listed else 'seeded sample'} of {calib_root.name})"
    elif allow_random:
        size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
        gen = torch.Generator().manual_seed(seed)
        images = torch.randn(calib_images, *size, generator=gen)
        labels = torch.randint(0, 1000, (calib_images,), generator=gen)
        calib_text = f"{calib_images} Gaussian-noise calibration images"
    else:
        raise PtqlibError("no calibration images: set PTQLIB_DATA to the shared data folder or pass calib_dir")
    if val_root is not None:
        val: Dataset | None = LabeledImages(val_root, transform=transform, limit=val_images)
        val_text = f"{len(val)} validation images of {val_root.name}"
    elif allow_random:
        size = tuple(images.shape[1:])
        gen = torch.Generator().manual_seed(seed + 1)
        n_val = 16 if val_images is None else val_images
        val = TensorDataset(torch.randn(n_val, *size, generator=gen), torch.randint(0, 1000, (n_val,), generator=gen))
        val_text = f"{n_val} Gaussian-noise validation images"
    else:
        val, val_text = None, "no validation images"
    source = f"{model_name}: {weights}; {calib_text}; {val_text}"
    if not real:
        source += " (random weights: code paths only, the numbers mean nothing)"
    return NotebookData(model, model_name, real, images, labels, val, source)


def preload(dataset: Dataset, *, batch_size: int = 64, progress: bool = True, desc: str = "decode") -> TensorDataset:
    """Decode a dataset once into memory (``TensorDataset``), so that many evaluations share it."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    xs, ys = [], []
    for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return TensorDataset(torch.cat(xs), torch.cat(ys))
