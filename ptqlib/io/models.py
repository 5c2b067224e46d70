"""The paper's models and how to load a timm vision transformer.

``PAPER_MODELS`` lists the eleven models of the PTQ4ViT paper with its ImageNet top-1 numbers.
:func:`load_model` builds any timm model in eval mode, with random weights, weights from a local
checkpoint (``.safetensors``, ``.pth``, ``.pt``, ``.bin``), or timm's own pretrained download.
:func:`find_checkpoint` looks for a model's weights in ``<data_root>/weights/``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import timm
import torch
from torch import nn

from ptqlib.errors import PtqlibError

__all__ = ["PaperModel", "PAPER_MODELS", "paper_model", "find_checkpoint", "load_model"]

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass(frozen=True)
class PaperModel:
    """One row of the paper's results table (ImageNet top-1, percent).

    ``key`` is the paper's name ("ViT-S/224"), ``timm_name`` the timm model with its pretrained tag.
    """

    key: str
    timm_name: str
    fp_top1: float
    base_w8a8: float
    base_w6a6: float
    ptq4vit_w8a8: float
    ptq4vit_w6a6: float


# Paper Table (two decimals); the official README gives the same runs to three decimals.
PAPER_MODELS: tuple[PaperModel, ...] = (
    PaperModel("ViT-S/224/32", "vit_small_patch32_224.augreg_in21k_ft_in1k", 75.99, 73.61, 60.14, 75.58, 71.90),
    PaperModel("ViT-S/224", "vit_small_patch16_224.augreg_in21k_ft_in1k", 81.39, 80.47, 70.24, 81.00, 78.63),
    PaperModel("ViT-B/224", "vit_base_patch16_224.augreg_in21k_ft_in1k", 84.54, 83.90, 75.67, 84.25, 81.65),
    PaperModel("ViT-B/384", "vit_base_patch16_384.augreg_in21k_ft_in1k", 86.00, 85.35, 46.88, 85.82, 83.34),
    PaperModel("DeiT-S/224", "deit_small_patch16_224.fb_in1k", 79.80, 77.65, 72.26, 79.47, 76.28),
    PaperModel("DeiT-B/224", "deit_base_patch16_224.fb_in1k", 81.80, 80.94, 78.78, 81.48, 80.25),
    PaperModel("DeiT-B/384", "deit_base_patch16_384.fb_in1k", 83.11, 82.33, 68.44, 82.97, 81.55),
    PaperModel("Swin-T/224", "swin_tiny_patch4_window7_224.ms_in1k", 81.39, 80.96, 78.45, 81.24, 80.47),
    PaperModel("Swin-S/224", "swin_small_patch4_window7_224.ms_in1k", 83.23, 82.75, 81.74, 83.10, 82.38),
    PaperModel("Swin-B/224", "swin_base_patch4_window7_224.ms_in22k_ft_in1k", 85.27, 84.79, 83.35, 85.14, 84.01),
    PaperModel("Swin-B/384", "swin_base_patch4_window12_384.ms_in22k_ft_in1k", 86.44, 86.16, 85.22, 86.39, 85.38),
)


def _untagged(name: str) -> str:
    """``vit_tiny_patch16_224.augreg_in21k_ft_in1k`` -> ``vit_tiny_patch16_224``."""
    return timm.models.split_model_name_tag(name)[0]


def paper_model(name: str) -> PaperModel | None:
    """The paper's row for ``name``, or None.

    Args:
        name: the paper's key ("ViT-S/224", any case), the timm name with its tag, or without it.
    """
    for model in PAPER_MODELS:
        if name.lower() == model.key.lower() or name in (model.timm_name, _untagged(model.timm_name)):
            return model
    return None


def find_checkpoint(name: str, data_root: Path | None) -> Path | None:
    """A checkpoint for ``name`` in ``<data_root>/weights/``, or None.

    A file matches when its stem equals ``name``; for a name without a pretrained tag, also when
    the stem starts with ``<name>.`` (so ``vit_tiny_patch16_224`` finds
    ``vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors``); for a tagged name, also an
    untagged file of the same architecture. A tagged name never picks a file with another tag.

    Args:
        name: timm model name, with or without a pretrained tag.
        data_root: the data folder (see :func:`ptqlib.data.data_root`); None finds nothing.
    """
    if data_root is None or not (Path(data_root) / "weights").is_dir():
        return None
    files = sorted(p for p in (Path(data_root) / "weights").iterdir()
                   if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    base, tag = timm.models.split_model_name_tag(name)
    exact = [p for p in files if p.stem == name]
    if tag:
        near = [p for p in files if p.stem == base]
    else:
        near = [p for p in files if p.stem.startswith(base + ".")]
    matches = exact or near
    return matches[0] if matches else None


def _check_model_name(name: str) -> None:
    """Raise PtqlibError (with close matches) unless timm knows ``name`` and its tag."""
    if name.startswith(("hf-hub:", "local-dir:")):  # timm resolves these itself
        return
    base, tag = timm.models.split_model_name_tag(name)
    if timm.is_model(base) and (not tag or name in timm.list_pretrained(base + ".*")):
        return
    if timm.is_model(base):
        tags = ", ".join(timm.list_pretrained(base + ".*")[:6]) or "none"
        raise PtqlibError(f"timm model {base!r} has no pretrained tag {tag!r}; "
                          f"use one of: {tags}, or the name without a tag")
    close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for the names"
    raise PtqlibError(f"unknown timm model {name!r}: {hint}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, unwrapping ``state_dict``/``model``."""
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, pickle with objects, truncated download, ...
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PtqlibError(f"cannot read checkpoint {path}: {first_line}; "
                          "pass a timm state dict saved with safetensors or torch.save") from error
    while isinstance(state, dict) and any(isinstance(state.get(k), dict) for k in ("state_dict", "model")):
        state = state["state_dict"] if isinstance(state.get("state_dict"), dict) else state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PtqlibError(f"checkpoint {path} holds no state dict of tensors; "
                          "pass a timm state dict saved with safetensors or torch.save")
    if path.suffix == ".safetensors" and _is_quantized_file(path):
        raise PtqlibError(f"{path} is a ptqlib quantized model (scales only), not float weights; "
                          f"evaluate it with 'python -m ptqlib evaluate --quantized {path}'")
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _is_quantized_file(path: Path) -> bool:
    """Whether a ``.safetensors`` file carries the ptqlib quantized-model header (``io.py``)."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return "ptqlib" in (f.metadata() or {})
    except Exception:  # unreadable files were already reported by the caller
        return False


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is a PtqlibError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("shape mismatch", shapes)) if keys]
    if problems:
        raise PtqlibError(f"checkpoint {path} does not fit the model: {'; '.join(problems)}; "
                          "pass the checkpoint made for this exact timm model name")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise PtqlibError(f"checkpoint {path} has NaN/Inf values in {len(bad)} tensors ({', '.join(bad[:3])}); "
                          "the file is corrupt: download or export the weights again")
    model.load_state_dict(state, strict=True)


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    random_init: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> nn.Module:
    """Build timm model ``name`` in eval mode on ``device``.

    Args:
        name: timm model name, optionally with a pretrained tag (``vit_tiny_patch16_224.augreg_in1k``).
        checkpoint: a local state dict to load strictly (``.safetensors``, ``.pth``, ``.pt``, ``.bin``).
        random_init: random weights (no download), seeded with ``seed``; for tests and timing.
        device: where the model lives.
        seed: the torch seed for ``random_init``; the global RNG is left untouched.

    Without ``checkpoint`` or ``random_init``, timm downloads the pretrained weights.
    """
    _check_model_name(name)
    if random_init and checkpoint is not None:
        raise PtqlibError("both random_init and a checkpoint were given; pick one")
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=False)
    elif checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise PtqlibError(f"checkpoint file {path} does not exist; check the path given with --checkpoint")
        model = timm.create_model(name, pretrained=False)
        _load_strict(model, _read_state_dict(path), path)
    else:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as error:  # no network, hub refusal, missing file in the cache, ...
            raise PtqlibError(f"cannot download pretrained weights for {name!r} "
                              f"({type(error).__name__}); pass --checkpoint FILE or set PTQLIB_DATA "
                              "to a folder with weights/<model>.safetensors") from error
    return model.to(device).eval()
