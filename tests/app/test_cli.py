"""The command line on synthetic images and random weights (fast), and the real main job path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptqlib.app.cli import main


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


# ----------------------------------------------------------------------------- corrupt images


@pytest.fixture
def real_with_broken(shared_data, tmp_path: Path) -> tuple[Path, Path]:
    """Three real validation images copied into ``tmp_path`` plus a truncated JPEG (labels.txt
    names all four); returns (that folder, the same folder without the broken image)."""
    import shutil

    lines = (shared_data.val_dir / "labels.txt").read_text().splitlines()[:3]
    folders = []
    for name, extra in (("with_broken", ["broken.JPEG 5"]), ("good_only", [])):
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        for line in lines:
            shutil.copy(shared_data.val_dir / "images" / line.split()[0], root / "images")
        (root / "labels.txt").write_text("\n".join(lines + extra) + "\n")
        folders.append(root)
    data = (shared_data.val_dir / "images" / lines[0].split()[0]).read_bytes()
    (folders[0] / "images" / "broken.JPEG").write_bytes(data[: len(data) // 3])
    (tmp_path / "calib.txt").write_text("\n".join(line.split()[0] for line in lines[:2]) + "\n")
    return folders[0], folders[1]


def _tiny(folder: Path, calib_list: Path, *extra: str) -> list[str]:
    return ["quantize", "--model", "test_vit", "--random-init", "--method", "minmax", "--calib-dir", str(folder),
            "--calib-list", str(calib_list), "--calib-size", "2", "--val-dir", str(folder), "--no-progress", *extra]


def test_corrupt_image_fails_by_default_or_is_skipped_and_recorded(real_with_broken, tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    broken, good = real_with_broken
    calib = tmp_path / "calib.txt"
    # the default: stop, naming the file
    assert main(_tiny(broken, calib)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read image") and "broken.JPEG" in err and err.count("\n") == 1
    # opt in: skipped, counted, named, recorded; accuracy over the 3 readable images only
    out = tmp_path / "skip.json"
    saved = tmp_path / "q.safetensors"
    assert main(_tiny(broken, calib, "--skip-corrupt", "--output", str(out), "--save", str(saved))) == 0
    stdout = capsys.readouterr().out
    assert "skipped 1 image that could not be decoded (broken.JPEG); accuracy is over the 3 images" in stdout
    result = json.loads(out.read_text())
    assert result["skipped_images"] == {"count": 1, "files": ["broken.JPEG"]} and result["eval_images"] == 3
    assert main(_tiny(good, calib, "--output", str(tmp_path / "good.json"))) == 0
    reference = json.loads((tmp_path / "good.json").read_text())
    assert reference["skipped_images"] == {"count": 0, "files": []} and reference["eval_images"] == 3
    for key in ("top1", "top5", "fp_top1", "fp_top5"):
        assert result[key] == reference[key], key
    capsys.readouterr()
    # evaluate --quantized: the same choice
    evaluate = ["evaluate", "--quantized", str(saved), "--val-dir", str(broken), "--no-progress"]
    assert main(evaluate) == 2
    assert "broken.JPEG" in capsys.readouterr().err
    assert main([*evaluate, "--skip-corrupt", "--output", str(tmp_path / "eval.json")]) == 0
    stdout = capsys.readouterr().out
    assert "skipped 1 image" in stdout and "top-1 equals" in stdout
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["skipped_images"] == {"count": 1, "files": ["broken.JPEG"]} and again["eval_images"] == 3
    assert again["top1"] == result["top1"]
