"""The end-to-end job behind the command line: load, calibrate, evaluate, report.

``prepare`` resolves data and model once (explicit paths first, then ``PTQLIB_DATA``), and
``run_method`` quantizes a fresh copy of the float model with one config and evaluates it, so a
table of methods × bit-widths shares one float evaluation. ``run_method`` returns everything it
made (:class:`MethodRun`): the result record, the calibrated model, the calibration report and
the accuracy.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..engine.calibrate import DEFAULT_MICRO_BATCH, CalibrationReport, calibrate
from ..engine.config import PTQConfig
from ..io.data import DataPaths, LabeledImages, calibration_batch, data_root, make_loader, model_transform, read_list
from ..errors import PtqlibError
from ..io.evaluate import Accuracy, evaluate, skipped_record
from ..io.models import find_checkpoint, load_model
from ..io.provenance import engine_fingerprint, versions
from ..engine.wrap import quantize_model

__all__ = ["RunSpec", "Prepared", "MethodRun", "prepare", "run_method", "last_bit_jitter", "scales_digest"]


@dataclass(frozen=True)
class RunSpec:
    """Where the model and images come from; ``None`` paths default to ``PTQLIB_DATA``'s.

    ``skip_corrupt`` leaves undecodable *validation* images out of every evaluation (results record
    them under ``skipped_images``); an undecodable calibration image always stops the run.
    ``calib_seed`` seeds the random calibration sample (drawn when no list file applies) apart
    from ``seed``; None uses ``seed`` (a sweep's calibration draws vary only this).
    ``calib_jitter`` > 0 perturbs the calibration images in their last bit (:func:`last_bit_jitter`,
    seeded with it): what another machine's arithmetic does to the activations, made repeatable here.
    """

    model: str = "vit_tiny_patch16_224"
    checkpoint: Path | None = None
    random_init: bool = False
    data: Path | None = None
    calib_dir: Path | None = None
    calib_list: Path | None = None
    calib_size: int = 32
    val_dir: Path | None = None
    val_limit: int | None = None
    seed: int = 0
    calib_seed: int | None = None
    calib_jitter: int = 0
    device: str = "cpu"
    batch_size: int = 64
    workers: int = 0
    micro_batch: int | None = DEFAULT_MICRO_BATCH
    max_memory: float | None = None
    skip_corrupt: bool = False


@dataclass
class Prepared:
    """A float model with its calibration batch and validation loader, ready for any method."""

    spec: RunSpec
    model: nn.Module
    checkpoint: Path | None
    calib_images: Tensor
    calib_labels: Tensor
    calib_files: list[str]
    val: LabeledImages | None
    fp: Accuracy | None = None

    def validation(self) -> LabeledImages:
        """The validation images; PtqlibError when none were found."""
        if self.val is None:
            raise PtqlibError("no validation images: pass --val-dir DIR or set PTQLIB_DATA to a folder holding "
                              "imagenet-val-1300/")
        return self.val

    def loader(self) -> torch.utils.data.DataLoader:
        """A loader over the validation images, with the spec's batch size and workers."""
        return make_loader(self.validation(), batch_size=self.spec.batch_size, workers=self.spec.workers,
                           skip_corrupt=self.spec.skip_corrupt)

    def float_accuracy(self, *, progress: bool = True) -> Accuracy:
        """The float model's accuracy (evaluated now if :func:`prepare` skipped it)."""
        if self.fp is None:
            self.fp = evaluate(self.model, self.loader(), device=self.spec.device, desc="float", progress=progress)
        return self.fp


@dataclass
class MethodRun:
    """What :func:`run_method` made: the JSON-ready result record, the calibrated model, the config
    calibration actually used (``report.config``), the calibration report and the quantized
    model's accuracy (None without validation images)."""

    result: dict[str, Any]
    model: nn.Module
    config: PTQConfig
    report: CalibrationReport
    accuracy: Accuracy | None


def prepare(spec: RunSpec, *, evaluate_float: bool = True, progress: bool = True) -> Prepared:
    """Load the model, the calibration batch and the validation set; evaluate the float model."""
    root = data_root(spec.data)
    paths = DataPaths.from_root(root) if root is not None else None
    checkpoint = spec.checkpoint
    if checkpoint is None and not spec.random_init and paths is not None:
        checkpoint = find_checkpoint(spec.model, root)
    model = load_model(spec.model, checkpoint, random_init=spec.random_init, device=spec.device, seed=spec.seed)
    quantize_model(copy.deepcopy(model), PTQConfig())  # an unsupported model fails now, not after the float evaluation
    transform = model_transform(model)

    calib_dir = spec.calib_dir or (paths.calib_dir if paths else None)
    if calib_dir is None:
        raise PtqlibError("no calibration images: pass --calib-dir DIR (a folder with labels.txt, or ImageNet "
                          "<wnid>/ folders) or set PTQLIB_DATA to a folder holding imagenet-calib/")
    calib_list = spec.calib_list
    if calib_list is None and spec.calib_dir is None and paths is not None and paths.calib_list.exists():
        if spec.calib_size <= len(read_list(paths.calib_list)):
            calib_list = paths.calib_list
    calib_set = LabeledImages(calib_dir, transform=transform)
    images, labels, files = calibration_batch(calib_set, spec.calib_size, list_file=calib_list,
                                             seed=spec.seed if spec.calib_seed is None else spec.calib_seed)
    if spec.calib_jitter:
        images = last_bit_jitter(images, spec.calib_jitter)

    val_dir = spec.val_dir or (paths.val_dir if paths else None)
    val = None
    if val_dir is not None:
        val = LabeledImages(val_dir, transform=transform, limit=spec.val_limit)
    prepared = Prepared(spec, model, checkpoint, images, labels, files, val)
    if evaluate_float and val is not None:
        prepared.fp = evaluate(model, prepared.loader(), device=spec.device, desc="float", progress=progress)
    return prepared


def scales_digest(scales: Mapping[str, Mapping[str, Tensor]]) -> dict[str, str]:
    """Per quantizer, a 12-hex-digit hash of its calibrated parameters (exact bytes): two runs
    picked the same scales for a quantizer exactly when its digests are equal.

    >>> a = scales_digest({"q": {"scale": torch.tensor([0.5])}})
    >>> a == scales_digest({"q": {"scale": torch.tensor([0.5])}}), a == scales_digest({"q": {"scale": torch.tensor([0.25])}})
    (True, False)
    """
    out = {}
    for name, params in sorted(scales.items()):
        digest = hashlib.sha256()
        for key, value in sorted(params.items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        out[name] = digest.hexdigest()[:12]
    return out


def last_bit_jitter(images: Tensor, seed: int) -> Tensor:
    """``images`` with every value multiplied by ``1 ± 2⁻²³`` (the sign drawn per value with
    ``seed``): float32 values move by at most one unit in the last place, as the activations do
    when another CPU's matmul kernels round differently.

    >>> x = torch.tensor([1.0, 0.5, -2.0, 0.0])
    >>> y = last_bit_jitter(x, 1)
    >>> bool(((y - x).abs() <= x.abs() * 2.0 ** -23).all()), bool((y != x).sum() >= 1)
    (True, True)
    """
    gen = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(images.shape, generator=gen) < 0.5, -1.0, 1.0).to(images)
    return images * (1 + sign * 2.0 ** -23)


def run_method(prepared: Prepared, config: PTQConfig, *, progress: bool = True) -> MethodRun:
    """Quantize a copy of the float model with ``config``, calibrate and evaluate it.

    The float model in ``prepared`` is not changed, so one :class:`Prepared` serves any number
    of configs.
    """
    spec = prepared.spec
    torch.manual_seed(spec.seed)
    model = quantize_model(copy.deepcopy(prepared.model), config)
    report = calibrate(model, prepared.calib_images, config, labels=prepared.calib_labels,
                       device=spec.device, micro_batch=spec.micro_batch, progress=progress,
                       max_memory=spec.max_memory)
    used = report.config  # what calibration actually ran with (the memory guard may raise chunks)
    result: dict[str, Any] = {
        "model": spec.model,
        "checkpoint": str(prepared.checkpoint) if prepared.checkpoint else None,
        "random_init": spec.random_init,
        "method": used.method,
        "w_bits": used.w_bits,
        "a_bits": used.a_bits,
        "calib_images": int(prepared.calib_images.shape[0]),
        "calib_seconds": round(report.seconds, 2),
        "candidate_evaluations": report.evaluations,
        "capture_passes": report.passes,
        "scales": scales_digest(report.scales),
    }
    accuracy = None
    if prepared.val is not None:
        accuracy = evaluate(model, prepared.loader(), device=spec.device,
                            desc=f"{used.method} W{used.w_bits}A{used.a_bits}", progress=progress)
        fp = prepared.fp
        result.update({
            "eval_images": accuracy.images,
            "fp_top1": None if fp is None else round(fp.top1, 2),
            "fp_top5": None if fp is None else round(fp.top5, 2),
            "top1": round(accuracy.top1, 2),
            "top5": round(accuracy.top5, 2),
            "eval_seconds": round(accuracy.seconds, 2),
            "fp_eval_seconds": None if fp is None else round(fp.seconds, 2),
            "skipped_images": skipped_record(accuracy),
            "predictions": list(accuracy.predictions),  # per image, for paired comparisons (ptqlib.core.stats)
            "labels": list(accuracy.labels),
        })
    result.update({"engine": engine_fingerprint(), "seed": spec.seed, "device": spec.device, "config": used.to_dict(),
                   "calib_files": prepared.calib_files, "versions": versions()})
    return MethodRun(result=result, model=model, config=used, report=report, accuracy=accuracy)
