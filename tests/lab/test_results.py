"""ptqlib.lab.results: cached accuracy tables, results reused from the main job, reference numbers."""
from __future__ import annotations

import json

import pytest
import torch

from ptqlib.engine.methods import get_method
from ptqlib.lab import results


def test_run_configs_dedupes_and_caches(model, images, tmp_path):
    val = torch.utils.data.TensorDataset(images, torch.tensor([1, 2]))
    configs = {"a": get_method("minmax", 8, 8), "b": get_method("minmax", 8, 8), "c": get_method("minmax", 4, 4)}
    first = results.run_configs(model, images, val, configs, cache_dir=tmp_path, cache_tag={"x": 1}, progress=False)
    assert list(first["name"]) == ["a", "b", "c"] and not first["cached"].any()
    assert first.loc[0, "top1"] == first.loc[1, "top1"]
    assert len(list(tmp_path.glob("*.json"))) == 2  # a and b are one config
    again = results.run_configs(model, images, val, configs, cache_dir=tmp_path, cache_tag={"x": 1}, progress=False)
    assert again["cached"].all() and list(again["top1"]) == list(first["top1"])
    other = results.run_configs(model, images, val, {"c": configs["c"]}, cache_dir=tmp_path, cache_tag={"x": 2}, progress=False)
    assert not other["cached"].any()


def _main_job_file(tmp_path, config, *, engine):
    record = {"model": "m", "random_init": False, "calib_images": 2, "eval_images": 2, "top1": 12.5, "top5": 50.0,
              "calib_seconds": 3.0, "eval_seconds": 1.0, "fp_eval_seconds": 1.0, "config": config.to_dict(),
              "engine": engine}
    path = tmp_path / f"m-{engine}.json"
    path.write_text(json.dumps([record]))
    return path


def test_main_job_results_are_reused_only_from_the_same_engine(model, images, tmp_path, monkeypatch):
    config = get_method("minmax", 8, 8)
    fresh = _main_job_file(tmp_path, config, engine=results.engine_fingerprint())
    found = results.main_job_results(fresh, model_name="m", calib_images=2, val_images=2)
    assert list(found.values()) == [{"top1": 12.5, "top5": 50.0, "images": 2, "calib_seconds": 3.0, "eval_seconds": 1.0}]
    assert results.main_job_results(fresh, model_name="other", calib_images=2, val_images=2) == {}
    assert results.main_job_results(fresh, model_name="m", calib_images=2, val_images=3) == {}
    stale = _main_job_file(tmp_path, config, engine="0123456789abcdef")  # computed by other engine sources
    assert results.main_job_results(stale, model_name="m", calib_images=2, val_images=2) == {}
    assert results.main_job_results(tmp_path / "missing.json", model_name="m", calib_images=2, val_images=2) == {}

    def no_calibration(*args, **kwargs):
        raise AssertionError("a reused config must not be calibrated")

    monkeypatch.setattr(results, "_calibrate_and_evaluate", no_calibration)
    val = torch.utils.data.TensorDataset(images, torch.tensor([1, 2]))
    table = results.run_configs(model, images, val, {"x": config}, reuse=found, progress=False)
    assert table.loc[0, "top1"] == 12.5 and table.loc[0, "source"] == "main job" and table.loc[0, "cached"]


def test_with_references_puts_paper_and_official_numbers_beside_each_row():
    import pandas as pd

    from ptqlib.io.models import PAPER_MODELS

    table = pd.DataFrame({"method": ["baseptq", "ptq4vit", "ptq4vit"], "w_bits": [6, 6, 4], "a_bits": [6, 6, 4],
                          "top1": [50.0, 70.0, 10.0]})
    official = pd.DataFrame({"method": ["ptq4vit"], "w_bits": [6], "a_bits": [6], "top1": [75.77]})
    paper = PAPER_MODELS[1]  # ViT-S/224 in the paper: float 81.39, W6A6 BasePTQ 70.24, PTQ4ViT 78.63
    assert paper.key == "ViT-S/224"
    out = results.with_references(table, paper, official)
    assert list(out["bits"]) == ["W6A6", "W6A6", "W4A4"] and list(out["method name"]) == ["BasePTQ", "PTQ4ViT", "PTQ4ViT"]
    assert out["paper top-1"].tolist()[:2] == [70.24, 78.63] and pd.isna(out["paper top-1"][2])
    assert out.loc[1, "paper drop"] == pytest.approx(2.76)  # 81.39 - 78.63
    assert out.loc[1, "official code top-1"] == 75.77 and pd.isna(out.loc[0, "official code top-1"])
    assert "paper top-1" not in results.with_references(table)


def test_official_results_parser(tmp_path):
    md = tmp_path / "r.md"
    md.write_text("| configuration | top-1 | top-5 | time |\n|---|---|---|---|\n| float32 | 82.62 | 96.00 | — |\n"
                  "| PTQ4ViT W8A8 (Hessian) | 81.00 | 95.54 | 1 s |\n| BasePTQ W6A6 (cosine) | 63.15 | 87.69 | 2 s |\n")
    t = results.official_results(md)
    assert t[["method", "w_bits", "a_bits", "top1"]].values.tolist() == [
        ["float", 32, 32, 82.62], ["ptq4vit", 8, 8, 81.0], ["baseptq", 6, 6, 63.15]]
    assert results.official_results(tmp_path / "missing.md") is None

