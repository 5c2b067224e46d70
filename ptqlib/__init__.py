"""ptqlib: post-training quantization of vision transformers (PTQ4ViT and friends).

Quantize a timm ViT/DeiT/Swin in three calls::

    model = ptqlib.load_model("vit_tiny_patch16_224", "weights.safetensors")
    config = ptqlib.get_method("ptq4vit", w_bits=8, a_bits=8)
    ptqlib.quantize_model(model, config)          # wrap: every quantizer off
    ptqlib.calibrate(model, calib_images, config) # search scales and switch quantizers on
"""
from __future__ import annotations

__version__ = "0.1.0"

from .engine.calibrate import CalibrationReport, apply_scales, calibrate  # noqa: E402
from .engine.config import PTQConfig  # noqa: E402
from .errors import PtqlibError  # noqa: E402
from .engine.methods import METHODS, get_method  # noqa: E402
from .engine.wrap import quantization_disabled, quantize_model, set_quantization, sites  # noqa: E402

__all__ = [
    "__version__",
    "PTQConfig",
    "PtqlibError",
    "METHODS",
    "get_method",
    "quantize_model",
    "calibrate",
    "apply_scales",
    "CalibrationReport",
    "sites",
    "set_quantization",
    "quantization_disabled",
    "load_model",
]


def __getattr__(name: str):  # load_model pulls in timm; import it lazily
    if name == "load_model":
        from .io.models import load_model

        return load_model
    raise AttributeError(name)
