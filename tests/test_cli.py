"""The command line on synthetic images and random weights (fast), and the real main job path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptqlib.cli import main


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        name = f"img{i}.JPEG"
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(root / "images" / name)
        lines.append(f"{name} {i * 7}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root


def _common(folder: Path) -> list[str]:
    return ["--random-init", "--calib-dir", str(folder), "--val-dir", str(folder), "--calib-size", "4",
            "--no-progress"]


def test_quantize_writes_json_with_required_fields(image_folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    out = tmp_path / "r.json"
    rc = main(["quantize", "--method", "minmax", "--w-bits", "6", "--a-bits", "6", *_common(image_folder),
               "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    for key in ("model", "method", "w_bits", "a_bits", "calib_images", "eval_images", "fp_top1", "fp_top5",
                "top1", "top5", "calib_seconds", "eval_seconds", "seed", "versions", "calib_files"):
        assert key in result, key
    assert result["method"] == "minmax" and result["w_bits"] == 6 and result["calib_images"] == 4
    assert result["eval_images"] == 6 and len(result["calib_files"]) == 4
    assert "minmax" in capsys.readouterr().out


def test_reproduce_writes_csv_and_json(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    rc = main(["reproduce", "--methods", "minmax,baseptq", "--bits", "8/8", "--search", "coarse_to_fine",
               "--max-tokens", "128", "--no-sensitivity", "--output-dir", str(tmp_path), *_common(image_folder)])
    assert rc == 0
    csv = (tmp_path / "vit_tiny_patch16_224.csv").read_text().splitlines()
    assert csv[0].startswith("method,w_bits,a_bits,top1") and len(csv) == 3
    assert len(json.loads((tmp_path / "vit_tiny_patch16_224.json").read_text())) == 2


@pytest.mark.parametrize("bits", ["1", "17", "4.5", "eight"])
def test_bad_bit_widths_exit_2(bits: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["quantize", "--w-bits", bits])
    assert e.value.code == 2
    assert "bit-width must be an integer from 2 to 16" in capsys.readouterr().err


def test_unknown_method_and_missing_data(capsys, monkeypatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    assert main(["quantize", "--method", "magic", "--random-init"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main(["quantize", "--random-init"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no calibration images") and err.count("\n") == 1


def test_models_lists_the_paper_registry(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "swin_small_patch4_window7_224.ms_in1k" in out and "ViT-B/384" in out
