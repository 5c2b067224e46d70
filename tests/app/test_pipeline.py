"""The jobs behind the command line, called as functions: what ``run_method`` returns, saving a
run and evaluating it again, and which float weights a saved model is rebuilt on.

Everything runs on timm's tiny ``test_vit`` (160 px) and four synthetic images.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from ptqlib import PtqlibError, get_method
from ptqlib.app.jobs import ReproducePaths, evaluate_saved, reproduce, save_run
from ptqlib.app.pipeline import MethodRun, Prepared, RunSpec, prepare, run_method
from ptqlib.app.report import ReferenceCheck
from ptqlib.engine.calibrate import CalibrationReport
from ptqlib.engine.wrap import quantizers

from helpers import random_image_folder

MODEL = "test_vit"


pytestmark = pytest.mark.usefixtures("without_data")  # explicit paths only


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_image_folder(tmp_path_factory.mktemp("images"), {f"img{i}.JPEG": i * 11 for i in range(4)})


def _weights(path: Path, seed: int) -> Path:
    """Float weights of test_vit, seeded, saved as safetensors."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(timm.create_model(MODEL, pretrained=False).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def prepared(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """test_vit on checkpoint weights (seed 0), two calibration images, four validation images."""
    checkpoint = _weights(tmp_path_factory.mktemp("float") / "test_vit.safetensors", seed=0)
    spec = RunSpec(model=MODEL, checkpoint=checkpoint, calib_dir=images, calib_size=2, val_dir=images)
    return prepare(spec, progress=False)


def test_run_method_returns_what_it_made(prepared: Prepared) -> None:
    config = get_method("minmax", 6, 6)
    run = run_method(prepared, config, progress=False)
    assert isinstance(run, MethodRun) and isinstance(run.report, CalibrationReport)
    assert run.config is run.report.config and run.result["config"] == run.config.to_dict()
    assert run.config == config  # nothing for the memory guard to change here
    assert run.accuracy is not None and run.result["top1"] == round(run.accuracy.top1, 2)
    assert run.result["eval_images"] == run.accuracy.images == 4
    assert run.result["candidate_evaluations"] == run.report.evaluations
    assert any(q.enabled for _, q in quantizers(run.model))  # the calibrated copy ...
    assert not list(quantizers(prepared.model))  # ... while the float model stays unwrapped
    assert not hasattr(prepared, "extra")


def test_reproduce_writes_records_after_each_run_and_the_table(prepared: Prepared, tmp_path: Path) -> None:
    paths = ReproducePaths.under(tmp_path / "results", "timm/" + MODEL)
    assert paths.json == tmp_path / "results" / "timm_test_vit.json"
    seen: list[int] = []
    configs = [get_method("minmax", 8, 8), get_method("minmax", 6, 6)]
    rows = reproduce(prepared, configs, paths, progress=False,
                     on_run=lambda run: seen.append(len(json.loads(paths.json.read_text()))))
    assert seen == [1, 2]  # the JSON holds every finished run when the next starts
    assert [(r["w_bits"], r["top1"] is not None) for r in rows] == [(8, True), (6, True)]
    lines = paths.csv.read_text().splitlines()
    assert lines[0] == "method,w_bits,a_bits,top1,top5,fp_top1,calib_seconds,eval_seconds,eval_images"
    assert len(lines) == 3 and not paths.sensitivity.exists()


def test_reproduce_compares_each_run_with_its_reference_record(prepared: Prepared, tmp_path: Path) -> None:
    paths = ReproducePaths.under(tmp_path / "first", MODEL)
    configs = [get_method("minmax", 8, 8), get_method("minmax", 6, 6)]
    reproduce(prepared, configs[:1], paths, progress=False)
    reference = json.loads(paths.json.read_text())  # W8A8 only: W6A6 has no reference record
    checks: list[ReferenceCheck] = []
    reproduce(prepared, configs, ReproducePaths.under(tmp_path / "again", MODEL), progress=False,
              reference=reference, on_reference=checks.append)
    assert len(checks) == 1 and checks[0].within_noise and checks[0].comparison.test.p_value == 1.0
    top1 = reference[0]["top1"]
    assert checks[0].line() == (f"min-max W8A8: {top1:.2f} vs reference {top1:.2f} (+0.00 [0.0, 0.0]), "
                                "McNemar p=1: within noise")


def test_saved_run_is_rebuilt_on_the_recorded_then_the_data_folders_weights(prepared: Prepared,
                                                                              tmp_path: Path) -> None:
    run = run_method(prepared, get_method("minmax", 6, 6), progress=False)
    saved = tmp_path / "q.safetensors"
    header = save_run(run, prepared, saved)
    assert header["info"]["top1"] == run.result["top1"] and header["info"]["val_limit"] is None
    val_dir = prepared.spec.val_dir
    data = tmp_path / "data"
    # the recorded checkpoint wins over other weights in the data folder
    _weights(data / "weights" / f"{MODEL}.safetensors", seed=1)
    done = evaluate_saved(saved, data=data, val_dir=val_dir, progress=False)
    assert done.same_as_saved is True and done.result["top1"] == run.result["top1"]
    # the recorded checkpoint gone: the data folder's weights, which must be the same weights
    recorded = Path(header["checkpoint"])
    moved = shutil.move(recorded, tmp_path / "elsewhere.safetensors")
    try:
        with pytest.raises(PtqlibError, match="differ from those"):
            evaluate_saved(saved, data=data, val_dir=val_dir, progress=False)
        shutil.copy(moved, data / "weights" / f"{MODEL}.safetensors")
        done = evaluate_saved(saved, data=data, val_dir=val_dir, progress=False)
        assert done.same_as_saved is True
        # an explicit checkpoint wins over both
        with pytest.raises(PtqlibError, match="differ from those"):
            evaluate_saved(saved, checkpoint=_weights(tmp_path / "other.safetensors", seed=2), data=data,
                           val_dir=val_dir, progress=False)
    finally:
        shutil.move(moved, recorded)


def test_evaluate_saved_needs_validation_images(prepared: Prepared, tmp_path: Path) -> None:
    run = run_method(prepared, get_method("minmax"), progress=False)
    save_run(run, prepared, tmp_path / "q.safetensors")
    with pytest.raises(PtqlibError, match="no validation images"):
        evaluate_saved(tmp_path / "q.safetensors", progress=False)
