"""Helpers the tests share (importable as ``helpers``: pytest puts ``tests/`` on the path)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 30), color: int = 7) -> Path:
    """Save a small synthetic image (JPEG unless the suffix says otherwise) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = {"L": color * 30, "CMYK": (color * 30, 20, 40, 0), "RGBA": (color * 30, 60, 90, 128),
            "P": color}.get(mode, (color * 30, 60, 90))
    Image.new(mode, size, fill).save(path)
    return path
