"""Helpers the tests share (importable as ``helpers``: pytest puts ``tests/`` on the path)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import timm
import torch
from PIL import Image


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 30), color: int = 7) -> Path:
    """Save a small synthetic image (JPEG unless the suffix says otherwise) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = {"L": color * 30, "CMYK": (color * 30, 20, 40, 0), "RGBA": (color * 30, 60, 90, 128),
            "P": color}.get(mode, (color * 30, 60, 90))
    Image.new(mode, size, fill).save(path)
    return path


def tiny_vit() -> torch.nn.Module:
    """A ViT-Tiny with random weights (seed 0), cut to 2 blocks on 64 px images, in eval mode:
    every quantizer kind in a model that calibrates in about a second."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64).eval()


def random_images(n: int = 4, size: int = 64, seed: int = 2) -> torch.Tensor:
    """``n`` standard-normal "images" of ``3 × size × size`` from their own seeded generator."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_image_folder(root: Path, labels: Mapping[str, int], *, size: int = 48,
                        rng: np.random.Generator | int = 0) -> Path:
    """``root/images/<name>`` of random RGB pixels (drawn from ``rng``, or a generator seeded with
    it, in the order of ``labels``) and ``root/labels.txt`` naming each image's label."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in labels:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / name)
    (root / "labels.txt").write_text("".join(f"{name} {label}\n" for name, label in labels.items()))
    return root


def quantizer_outputs(model: torch.nn.Module, images: torch.Tensor, keep=lambda q: True) -> dict[str, torch.Tensor]:
    """Each quantizer's output (its fake-quantized tensor) on ``images``, by name, for the
    quantizers ``keep`` accepts (default: all)."""
    from ptqlib.engine.wrap import quantizers

    outputs: dict[str, torch.Tensor] = {}
    handles = [q.register_forward_hook(lambda mod, args, out, name=name: outputs.__setitem__(name, out.detach().clone()))
               for name, q in quantizers(model) if keep(q)]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return outputs


def result_record(method: str, bits: int | None, right: set[int], n: int = 200, **extra) -> dict:
    """A result record on ``n`` images of which exactly ``right`` are predicted right (the others
    one class off): per-image outcomes, counts and p-values known in advance."""
    labels = [i % 1000 for i in range(n)]
    predictions = [y if i in right else (y + 1) % 1000 for i, y in enumerate(labels)]
    return {"model": "m", "method": method, "w_bits": bits, "a_bits": bits, "eval_images": n,
            "top1": round(100 * len(right) / n, 2), "predictions": predictions, "labels": labels,
            "calib_seconds": 1.0, "engine": "e", **extra}
