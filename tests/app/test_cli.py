"""The command line on synthetic images and random weights (fast), and the real main job path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptqlib.app.cli import main

from helpers import random_image_folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_image_folder(tmp_path_factory.mktemp("imgs"), {f"img{i}.JPEG": i * 7 for i in range(6)}, size=80)


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


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- output files


def test_failed_runs_leave_an_earlier_result_untouched(image_folder: Path, tmp_path: Path, capsys,
                                                       monkeypatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    out = tmp_path / "r.json"
    earlier = b'{"method": "ptq4vit", "top1": 81.92}\n'
    out.write_bytes(earlier)
    quantize = ["quantize", "--model", "test_vit", "--random-init", "--method", "minmax", "--no-progress",
                "--output", str(out)]
    assert main([*quantize, "--calib-dir", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert out.read_bytes() == earlier
    evaluate = ["evaluate", "--quantized", str(tmp_path / "none.safetensors"), "--val-dir", str(image_folder),
                "--output", str(out)]
    assert main(evaluate) == 2
    assert "does not exist" in capsys.readouterr().err
    assert out.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary or new files either


# ----------------------------------------------------------------------------- method settings from PTQConfig


OWN = {"method", "w_bits", "a_bits", "seed"}


def test_every_config_field_is_a_flag_with_its_help(capsys) -> None:
    from ptqlib.app.cli import CONFIG_FLAGS, build_parser
    from ptqlib.engine.config import config_fields

    settings = {f.name for f, _ in config_fields()} - OWN
    assert set(CONFIG_FLAGS) == settings
    for command in ("quantize", "reproduce", "sensitivity"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for f, hint in config_fields():
            if f.name in settings:
                flag = "--" + f.name.replace("_", "-")
                assert f"{flag} " in text, (command, flag)
                assert " ".join(f.metadata["help"].split()) in text, (command, flag)
                if hint is bool:
                    assert f"--no-{f.name.replace('_', '-')} " in text, (command, flag)
    parsed = vars(build_parser().parse_args(["quantize"]))
    assert all(parsed[name] is None for name in settings)  # None: the method's own value


@pytest.mark.parametrize("flag, value", [("--metric", "l2"), ("--search", "fast"), ("--weight-granularity", "head"),
                                         ("--grad-norm", "layer")])
def test_literal_flags_reject_other_values(flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["quantize", "--random-init", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"python -m ptqlib quantize: error: argument {flag}: invalid choice: ")
    assert value in err


@pytest.mark.parametrize("flag, value, expected", [("--outlier-rows", "1.5", "outlier_rows must be a share from 0 to 1"),
                                                   ("--chunks", "0", "chunks >= 1"),
                                                   ("--stride", "1", "stride >= 2")])
def test_out_of_range_settings_end_in_one_line(flag: str, value: str, expected: str, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    assert main(["quantize", "--random-init", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err


@pytest.mark.parametrize("flag, value", [("--max-tokens", "-1"), ("--alpha", "nan"), ("--n", "many"),
                                         ("--outlier-rows", "half")])
def test_malformed_numbers_are_usage_errors(flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["quantize", flag, value])
    assert e.value.code == 2 and f"argument {flag}: expected" in capsys.readouterr().err


def test_generated_flags_reach_the_config(image_folder: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """``--no-twin-gelu`` turns off a preset's twin GELU, ``--twin-gelu`` turns it on; ``--max-tokens 0``
    means every row (None); the saved model has exactly the quantizers the config says."""
    from ptqlib.io.checkpoints import read_header

    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    base = ["quantize", "--model", "test_vit", "--random-init", "--calib-dir", str(image_folder), "--calib-size", "2",
            "--no-fp", "--no-progress", "--rounds", "0"]
    kinds = {}
    for name, extra in (("off", ["--method", "ptq4vit", "--no-twin-gelu", "--max-tokens", "0", "--outlier-rows", "0.5"]),
                        ("on", ["--method", "minmax", "--twin-gelu", "--matmul-granularity", "head"])):
        out, saved = tmp_path / f"{name}.json", tmp_path / f"{name}.safetensors"
        assert main([*base, *extra, "--output", str(out), "--save", str(saved)]) == 0
        config = json.loads(out.read_text())["config"]
        assert read_header(saved)["config"] == config
        kinds[name] = ({e["kind"] for e in read_header(saved)["quantizers"].values()}, config)
    capsys.readouterr()
    off_kinds, off = kinds["off"]
    assert off["twin_gelu"] is False and off["twin_softmax"] is True and off["rounds"] == 0
    assert off["max_tokens"] is None and off["outlier_rows"] == 0.5 and off["method"] == "ptq4vit"
    assert "TwinGeluQuantizer" not in off_kinds and "TwinSoftmaxQuantizer" in off_kinds
    on_kinds, on = kinds["on"]
    assert on["twin_gelu"] is True and on["twin_softmax"] is False and on["matmul_granularity"] == "head"
    assert on["max_tokens"] == 1024  # not given: the preset's value
    assert "TwinGeluQuantizer" in on_kinds and "TwinSoftmaxQuantizer" not in on_kinds


# ----------------------------------------------------------------------------- PTQ4ViT's successors


def test_successor_preset_quantizes_saves_and_evaluates_alike(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    """The successors' presets (reparameterised LayerNorms, corrected weights) through the command
    line: the saved model, loaded by ``evaluate``, scores what the calibrated one scored."""
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    method, extra = "adalog", ["--weight-correction", "ridge"]
    saved, first, second = tmp_path / "m.safetensors", tmp_path / "q.json", tmp_path / "e.json"
    assert main(["quantize", "--model", "test_vit", "--random-init", "--method", method, "--w-bits", "4",
                 "--a-bits", "4", *extra, "--calib-dir", str(image_folder), "--val-dir", str(image_folder),
                 "--calib-size", "4", "--no-progress", "--save", str(saved), "--output", str(first)]) == 0
    result = json.loads(first.read_text())
    assert result["method"] == method and result["config"]["reparam"] is True
    assert main(["evaluate", "--quantized", str(saved), "--val-dir", str(image_folder), "--no-progress",
                 "--output", str(second)]) == 0
    again = json.loads(second.read_text())
    assert (again["top1"], again["top5"], again["saved_top1"]) == (result["top1"], result["top5"], result["top1"])
