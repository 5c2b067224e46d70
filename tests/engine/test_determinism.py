"""Same inputs and seed: identical scales and accuracy, run to run, across chunking and save/load.

The command-line test labels its synthetic images with the float model's own predictions, so the
accuracies compared are informative (float top-1 is 100 %), not a trivially equal 0 %.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from ptqlib import __version__, calibrate, get_method, quantize_model
from ptqlib.engine.calibrate import Scales
from ptqlib.app.cli import main
from ptqlib.io.data import LabeledImages, model_transform
from ptqlib.engine.guards import estimate_memory
from ptqlib.io.models import load_model
from ptqlib.engine.wrap import sites

from helpers import random_image_folder, random_images, tiny_vit

CONFIG = get_method("ptq4vit", 6, 6, search="coarse_to_fine", max_tokens=48)


def _same(a: Scales, b: Scales) -> bool:
    return a.keys() == b.keys() and all(
        a[q].keys() == b[q].keys() and all(torch.equal(a[q][k], b[q][k]) for k in a[q]) for q in a)


def test_same_seed_same_scales_and_logits_other_seed_other_sample() -> None:
    runs = []
    for seed in (0, 0, 1):
        config = CONFIG.replace(seed=seed, row_select="random")
        model = quantize_model(tiny_vit(), config)
        report = calibrate(model, random_images(), config, progress=False)
        with torch.no_grad():
            runs.append((report.scales, model(random_images(2))))
    (s0, y0), (s1, y1), (s2, _) = runs
    assert _same(s0, s1) and torch.equal(y0, y1)
    assert not _same(s0, s2)  # the seed picks the random token sample, so it matters


def test_fisher_rows_do_not_depend_on_the_seed() -> None:
    scales = []
    for seed in (0, 1):
        config = CONFIG.replace(seed=seed, row_select="fisher")
        model = quantize_model(tiny_vit(), config)
        scales.append(calibrate(model, random_images(), config, progress=False).scales)
    assert _same(*scales)


def test_memory_guard_chunks_do_not_change_scales(capsys: pytest.CaptureFixture[str]) -> None:
    x = random_images()
    whole = quantize_model(tiny_vit(), CONFIG)
    reference = calibrate(whole, x, CONFIG, progress=False)
    chunked = quantize_model(tiny_vit(), CONFIG)
    estimate = estimate_memory(chunked, x, sites(chunked), CONFIG)
    budget = (estimate.group_bytes([s.name for s in sites(chunked)]) // 2) / 1024**3
    report = calibrate(chunked, x, CONFIG, progress=False, max_memory=budget)
    assert report.passes > reference.passes == 1
    assert "memory guard" in capsys.readouterr().err
    assert _same(report.scales, reference.scales)
    # the report records the recipe actually used: the guard's chunks, not the requested one
    assert report.config.chunks == report.passes > CONFIG.chunks == reference.config.chunks


@pytest.fixture(scope="module")
def self_labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six images labelled with test_vit's (seed 3) own float predictions."""
    root = random_image_folder(tmp_path_factory.mktemp("self_labelled"), {f"x{i}.png": 0 for i in range(6)},
                               size=64, rng=4)
    model = load_model("test_vit", random_init=True, seed=3)
    data = LabeledImages(root, transform=model_transform(model))
    with torch.no_grad():
        predicted = model(torch.stack([data[i][0] for i in range(len(data))])).argmax(-1).tolist()
    (root / "labels.txt").write_text("".join(f"x{i}.png {c}\n" for i, c in enumerate(predicted)))
    return root


def test_cli_runs_repeat_exactly_and_record_their_inputs(self_labelled: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    base = ["quantize", "--model", "test_vit", "--random-init", "--seed", "3", "--method", "ptq4vit", "--w-bits", "4",
            "--a-bits", "4", "--search", "coarse_to_fine", "--max-tokens", "64", "--calib-dir", str(self_labelled),
            "--val-dir", str(self_labelled), "--calib-size", "4", "--no-progress"]
    results = []
    for run in ("a", "b"):
        assert main([*base, "--save", str(tmp_path / f"{run}.safetensors"),
                     "--output", str(tmp_path / f"{run}.json")]) == 0
        results.append(json.loads((tmp_path / f"{run}.json").read_text()))
    a, b = results
    assert a["fp_top1"] == 100.0
    for key in ("top1", "top5", "fp_top1", "calib_files", "seed", "config"):
        assert a[key] == b[key], key
    assert a["seed"] == 3 and len(a["calib_files"]) == 4 and set(a["calib_files"]) <= {f"x{i}.png" for i in range(6)}
    assert a["versions"]["ptqlib"] == __version__ and a["versions"]["torch"] == torch.__version__
    assert a["versions"]["timm"] == timm.__version__
    scales_a = safetensors.torch.load_file(str(tmp_path / "a.safetensors"))
    scales_b = safetensors.torch.load_file(str(tmp_path / "b.safetensors"))
    assert scales_a.keys() == scales_b.keys() and all(torch.equal(scales_a[k], scales_b[k]) for k in scales_a)
    capsys.readouterr()

    # across save/load: the same accuracy, with nothing recalibrated
    assert main(["evaluate", "--quantized", str(tmp_path / "a.safetensors"), "--val-dir", str(self_labelled),
                 "--no-progress", "--output", str(tmp_path / "e.json")]) == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert (evaluated["top1"], evaluated["top5"], evaluated["eval_images"]) == (a["top1"], a["top5"], 6)
    assert evaluated["calib_files"] == a["calib_files"] and evaluated["seed"] == 3
    assert "top-1 equals the" in capsys.readouterr().out


def test_last_bit_perturbation_moves_fewer_picks_with_a_tie_tolerance() -> None:
    """Images perturbed in the last bit (what another CPU's matmuls do to the activations): the
    plain argmin may flip near-tied picks; the tie rule, on the same images, moves no more of them,
    and float64 scores are a valid choice that calibrates every quantizer."""
    from ptqlib.engine.calibrate import _metric

    x = random_images()
    jittered = x * (1 + torch.where(torch.rand_like(x) < 0.5, -1.0, 1.0) * 2.0 ** -23)
    assert not torch.equal(x, jittered) and torch.allclose(x, jittered, rtol=2e-7, atol=0)
    moved = {}
    for tol in (0.0, 1e-4):
        config = CONFIG.replace(tie_tolerance=tol, row_select="random")
        pair = [calibrate(quantize_model(tiny_vit(), config), images, config, progress=False).scales
                for images in (x, jittered)]
        moved[tol] = sum(not torch.equal(pair[0][q][k], pair[1][q][k]) for q in pair[0] for k in pair[0][q])
    assert moved[1e-4] <= moved[0.0]
    wide = CONFIG.replace(score_dtype="float64", row_select="random")
    assert _metric(wide.replace(metric="mse"))(torch.ones(3), torch.ones(2, 3)).dtype == torch.float64
    report = calibrate(quantize_model(tiny_vit(), wide), x, wide, progress=False)
    assert all(torch.isfinite(v).all() for p in report.scales.values() for v in p.values())
