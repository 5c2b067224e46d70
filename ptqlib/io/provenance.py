"""Where a result came from: library versions and a fingerprint of the engine's source.

Every saved model, integer export and result record carries :func:`versions`; result records
also carry :func:`engine_fingerprint`, so a cached result is reused only while the code that
decides a calibration is unchanged.
"""
from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path

import torch

from .. import __version__

__all__ = ["ENGINE_MODULES", "engine_fingerprint", "versions"]

#: The modules whose source decides a calibration's result (paths under ``ptqlib/``).
ENGINE_MODULES = ("core/quant.py", "core/metrics.py", "core/search.py", "core/correction.py", "engine/layers.py",
                  "engine/attention.py",
                  "engine/wrap.py", "engine/config.py", "engine/methods.py", "engine/capture.py",
                  "engine/calibrate.py", "engine/reparam.py", "io/evaluate.py", "io/data.py")


def versions() -> dict[str, str]:
    """The versions of ptqlib, torch, timm and Python in this process."""
    import timm

    return {"ptqlib": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version()}


@functools.cache
def engine_fingerprint() -> str:
    """A 16-hex-digit SHA-256 of the source of :data:`ENGINE_MODULES`, read once per process."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in ENGINE_MODULES:
        digest.update(name.encode())
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]
