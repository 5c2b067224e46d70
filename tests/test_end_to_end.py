"""End to end on the real ViT-Tiny weights, calib32 and all 1300 validation images (CI runs this).

The command line reproduces the float accuracy of the data README (82.6 % top-1), and PTQ4ViT
W8A8 with the default (fast) preset loses at most 2.5 points (min-max scales lose about 4; the
official implementation, measured on the same machine, model and images, loses 1.6).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptqlib.cli import main
from ptqlib.data import DataPaths

MAX_W8A8_DROP = 2.5


def test_ptq4vit_w8a8_on_real_vit_tiny(shared_data: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTQLIB_DATA", str(shared_data.root))
    out = tmp_path / "result.json"
    assert main(["quantize", "--method", "ptq4vit", "--w-bits", "8", "--a-bits", "8", "--no-progress",
                 "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["calib_images"] == 32 and r["eval_images"] == 1300
    assert r["calib_files"] == [line.strip() for line in shared_data.calib_list.read_text().splitlines() if line.strip()]
    assert abs(r["fp_top1"] - 82.6) <= 0.1 and abs(r["fp_top5"] - 96.0) <= 0.1
    assert r["top1"] >= r["fp_top1"] - MAX_W8A8_DROP
    assert r["top1"] <= r["fp_top1"] + 0.5  # quantization does not add accuracy: a sanity bound
