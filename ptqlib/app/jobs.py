"""The command line's jobs as functions: reproduce the paper's table, save a run, evaluate a saved model.

The command line (``cli.py``) parses arguments, calls these and prints; everything here returns
what it computed and writes its files atomically (``ptqlib.io.files``), so a failed run never
leaves a half-written result behind.

* :func:`reproduce` — methods × bit-widths on one :class:`~ptqlib.app.pipeline.Prepared` model;
  ``results/<model>.json`` after every run, ``results/<model>.csv`` with the paper's numbers;
  each run compared image by image with its reference record (``results/reference/``) if any.
* :func:`reproduce_sensitivity` — the per-layer sensitivity table of one config.
* :func:`save_run` — a calibrated model with what ``evaluate`` later compares against.
* :func:`evaluate_saved` — re-evaluate a model saved by ``quantize --save``, no calibration.
* :func:`ensure_data` — before the main job: the public data in ``data/`` when nothing else is named.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..engine.config import PTQConfig
from ..errors import PtqlibError
from ..io.checkpoints import load_quantized, read_header, save_quantized
from ..io.data import DataPaths, LabeledImages, data_root, make_loader, model_transform
from ..io.evaluate import Accuracy, evaluate, skipped_record
from ..io.files import check_writable, write_csv, write_json
from ..io.models import paper_model
from ..io.provenance import versions
from .pipeline import MethodRun, Prepared, run_method
from .report import ReferenceCheck, check_reference
from .sensitivity import sensitivity

__all__ = ["RESULT_COLUMNS", "SAVED_INFO", "ReproducePaths", "reproduce",
           "results_table", "SensitivityTable", "reproduce_sensitivity", "save_run", "SavedEvaluation",
           "evaluate_saved", "ensure_data"]

#: The columns of the results table (the JSON records hold more).
RESULT_COLUMNS = ("method", "w_bits", "a_bits", "top1", "top5", "fp_top1", "calib_seconds", "eval_seconds")
#: The result entries a saved model records (``info`` in its header) for ``evaluate`` to compare.
SAVED_INFO = ("seed", "calib_images", "calib_files", "top1", "top5", "eval_images", "fp_top1", "skipped_images")


@dataclass(frozen=True)
class ReproducePaths:
    """Where :func:`reproduce` writes: ``<model>.json``, ``<model>.csv`` and the sensitivity CSV."""

    json: Path
    csv: Path
    sensitivity: Path

    @classmethod
    def under(cls, folder: str | Path, model: str) -> "ReproducePaths":
        """The files for timm model ``model`` in ``folder`` (a ``/`` in the name becomes ``_``)."""
        folder, stem = Path(folder), model.replace("/", "_")
        return cls(folder / f"{stem}.json", folder / f"{stem}.csv", folder / f"{stem}_sensitivity_w8a8.csv")

    def check_writable(self, *, sensitivity: bool = True) -> None:
        """PtqlibError now, before any work, if a file could not be written later."""
        for path in (self.json, self.csv, *((self.sensitivity,) if sensitivity else ())):
            check_writable(path)


def _paper_top1(result: dict[str, Any]) -> float | None:
    paper = paper_model(result["model"])
    method = "base" if result["method"] == "baseptq" else result["method"]
    return None if paper is None else getattr(paper, f"{method}_w{result['w_bits']}a{result['a_bits']}", None)


def results_table(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per result record: ``RESULT_COLUMNS``, ``eval_images`` and, for the paper's models,
    ``paper_top1`` (the paper's top-1 for that method and bit-width, where it reports one)."""
    rows = []
    for r in results:
        row = {k: r.get(k) for k in (*RESULT_COLUMNS, "eval_images")}
        if paper_model(r["model"]) is not None:
            row["paper_top1"] = _paper_top1(r)
        rows.append(row)
    return rows


def reproduce(prepared: Prepared, configs: Sequence[PTQConfig], paths: ReproducePaths, *, progress: bool = True,
              on_run: Callable[[MethodRun], None] | None = None, reference: Sequence[Mapping[str, Any]] = (),
              on_reference: Callable[[ReferenceCheck], None] | None = None) -> list[dict[str, Any]]:
    """Calibrate and evaluate every config; write the records and the table.

    ``paths.json`` is rewritten after each run (a long job that stops keeps what it finished),
    ``paths.csv`` once at the end. ``on_run`` sees each run as it finishes (to print progress);
    ``on_reference`` then sees its comparison with the record of the same configuration and
    images in ``reference`` (:func:`~ptqlib.app.report.check_reference`), where there is one.

    Returns:
        The rows of the table (:func:`results_table`).
    """
    prepared.validation()
    results = []
    for config in configs:
        run = run_method(prepared, config, progress=progress)
        results.append(run.result)
        write_json(paths.json, results)
        if on_run is not None:
            on_run(run)
        check = check_reference(run.result, reference) if reference else None
        if check is not None and on_reference is not None:
            on_reference(check)
    rows = results_table(results)
    write_csv(paths.csv, rows)
    return rows


@dataclass(frozen=True)
class SensitivityTable:
    """:func:`reproduce_sensitivity`'s table: ``rows`` over the first ``images`` validation
    images, on which the float model scores ``fp``."""

    images: int
    fp: Accuracy
    rows: list[dict[str, Any]]


def reproduce_sensitivity(prepared: Prepared, config: PTQConfig, images: int, path: str | Path | None = None, *,
                          progress: bool = True) -> SensitivityTable:
    """Calibrate ``config`` and tabulate top-1 with one kind of quantizer on at a time, on the
    first ``images`` validation images (the float model is evaluated on the same ones); the
    table is written as CSV to ``path`` when given."""
    from torch.utils.data import Subset

    from ..engine.wrap import quantization_disabled

    val = prepared.validation()
    spec = prepared.spec
    run = run_method(prepared, config, progress=progress)
    n = min(images, len(val))
    loader = make_loader(Subset(val, range(n)), batch_size=spec.batch_size, workers=spec.workers,
                         skip_corrupt=spec.skip_corrupt)
    with quantization_disabled(run.model):
        fp = evaluate(run.model, loader, device=spec.device, desc="float", progress=progress)
    rows = sensitivity(run.model, loader, fp=fp, device=spec.device, progress=progress)
    if path is not None:
        write_csv(path, rows)
    return SensitivityTable(images=n, fp=fp, rows=rows)


def save_run(run: MethodRun, prepared: Prepared, path: str | Path) -> dict[str, Any]:
    """Save ``run``'s calibrated model (:func:`~ptqlib.io.checkpoints.save_quantized`) with how
    to rebuild its float model and the measurements :func:`evaluate_saved` compares against.

    Returns:
        The header written into the file.
    """
    spec = prepared.spec
    info = {k: run.result.get(k) for k in SAVED_INFO}
    info["val_limit"] = spec.val_limit
    return save_quantized(run.model, path, run.config, model_name=spec.model, checkpoint=prepared.checkpoint,
                          random_init=spec.random_init, init_seed=spec.seed, info=info)


@dataclass(frozen=True)
class SavedEvaluation:
    """:func:`evaluate_saved`'s outcome: the JSON-ready ``result``, the ``accuracy`` and the
    saved file's ``header``."""

    result: dict[str, Any]
    accuracy: Accuracy
    header: dict[str, Any]

    @property
    def same_as_saved(self) -> bool | None:
        """Whether top-1 equals the one measured when the model was saved; None when that was
        not measured or not on the same number of images."""
        saved = self.header.get("info") or {}
        if saved.get("top1") is None or saved.get("eval_images") != self.accuracy.images:
            return None
        return self.result["top1"] == saved["top1"]


def evaluate_saved(
    quantized: str | Path,
    *,
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    val_dir: str | Path | None = None,
    val_limit: int | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    skip_corrupt: bool = False,
    progress: bool = True,
) -> SavedEvaluation:
    """Load a model saved by ``quantize --save`` (no calibration) and evaluate it.

    Args:
        quantized: the saved model file.
        checkpoint: its float weights; default: as :func:`~ptqlib.io.checkpoints.load_quantized`
            decides (the recorded checkpoint, the data folder's weights, timm's download).
        data: the data folder (default ``$PTQLIB_DATA``): its weights and validation images.
        val_dir: validation images; default: the data folder's.
        val_limit: evaluate only the first N images.
        device, batch_size, workers, skip_corrupt, progress: as for evaluation.
    """
    quantized = Path(quantized)
    header = read_header(quantized)
    root = data_root(data)
    if val_dir is None and root is not None:
        val_dir = DataPaths.from_root(root).val_dir
    if val_dir is None:
        raise PtqlibError("no validation images: pass --val-dir DIR or set PTQLIB_DATA to a folder holding "
                          "imagenet-val-1300/")
    model = load_quantized(quantized, checkpoint=checkpoint, data_root=root, device=device)
    val = LabeledImages(val_dir, transform=model_transform(model), limit=val_limit)
    acc = evaluate(model, make_loader(val, batch_size, workers, skip_corrupt=skip_corrupt), device=device,
                   desc=f"{header['method']} W{header['w_bits']}A{header['a_bits']}", progress=progress)
    saved = header.get("info") or {}
    result = {"model": header["model"], "quantized": str(quantized), "method": header["method"],
              "w_bits": header["w_bits"], "a_bits": header["a_bits"], "eval_images": acc.images,
              "top1": round(acc.top1, 2), "top5": round(acc.top5, 2), "eval_seconds": round(acc.seconds, 2),
              "skipped_images": skipped_record(acc), "saved_top1": saved.get("top1"),
              "saved_eval_images": saved.get("eval_images"), "seed": saved.get("seed"),
              "calib_files": saved.get("calib_files"), "config": header["config"], "versions": versions(),
              "saved_versions": header.get("versions")}
    return SavedEvaluation(result=result, accuracy=acc, header=header)


def ensure_data(
    data: str | Path | None = None,
    *,
    calib_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    report: Callable[[str], None] | None = print,
) -> Path | None:
    """Make sure the main job has data when it names none: with no ``data``, ``calib_dir``,
    ``val_dir`` or ``$PTQLIB_DATA``, the repository's ``data/`` is completed by
    :func:`~ptqlib.io.fetch.fetch_data` (resuming what an earlier fetch left) unless it is complete.
    Outside a clone of the repository (no ``data/manifest.json``) nothing is done.

    Returns:
        The folder fetched into, or None when nothing had to be done.

    Raises:
        PtqlibError: one line saying how to get the data, when the download cannot be done.
    """
    from ..io import data as data_module
    from ..io.fetch import OfflineError, data_complete, default_manifest_path, fetch_data, load_manifest

    if data is not None or calib_dir is not None or val_dir is not None or "PTQLIB_DATA" in os.environ:
        return None
    if not default_manifest_path().is_file():  # not a clone of the repository: no data/ to fill
        return None
    root = data_module.DEFAULT_DATA_DIR
    manifest = load_manifest()
    if data_complete(root, manifest):
        return None
    said: list[str] = []

    def say(line: str) -> None:  # the first line only once a server answered: offline prints just the error
        if report is None:
            return
        if not said:
            said.append(line)
            report(f"no data yet: fetching the public ViT-Tiny weights and ImageNet sample into {root} "
                   "(python -m ptqlib data fetch; or set PTQLIB_DATA to your own data folder)")
        report(line)

    try:
        fetch_data(root, manifest=manifest, report=say)
    except OfflineError as error:
        raise PtqlibError(f"no data in {root}, and {error.host} cannot be reached to download it ({error.reason}): "
                          "run python -m ptqlib data fetch where the network is reachable, or set PTQLIB_DATA to a "
                          "folder laid out as in data/README.md") from None
    return root
