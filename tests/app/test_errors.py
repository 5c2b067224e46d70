"""Every bad input ends in one line 'what is wrong; what to do', exit code 2 and no stack trace.

The command-line cases run ``ptqlib.app.cli.main`` in process on timm's tiny ``test_vit`` (random
weights, 160 px) and a few synthetic images, so each costs well under a second; one case runs
``python -m ptqlib`` in a subprocess to prove that no traceback reaches the terminal. Library
cases (NaN/Inf, the memory guard) call the functions directly.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from helpers import write_image
from PIL import Image

from ptqlib import PtqlibError, calibrate, get_method, quantize_model, sites
from ptqlib.app.cli import main
from ptqlib.engine.guards import estimate_memory, plan_chunks
from ptqlib.engine.capture import capture

MODEL = "test_vit"


pytestmark = pytest.mark.usefixtures("without_data")  # explicit paths only


def _folder(root: Path, n: int = 4, modes: tuple[str, ...] = ("RGB",)) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        name = f"img{i}.JPEG"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).convert(modes[i % len(modes)]).save(
            root / "images" / name)
        lines.append(f"{name} {i * 11}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """Float weights of test_vit (seed 0)."""
    torch.manual_seed(0)
    return timm.create_model(MODEL, pretrained=False).state_dict()


def quantize_args(folder: Path, *extra: str, method: str = "minmax") -> list[str]:
    return ["quantize", "--model", MODEL, "--random-init", "--method", method, "--calib-dir", str(folder),
            "--calib-size", "2", "--no-progress", "--no-fp", *extra]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in process; return (exit code, the error line) after checking the error shape."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors (usage + one error line)
        code = int(e.code)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert "Traceback" not in err
    assert code != 0 and lines, err
    last = lines[-1]
    assert "error: " in last, err
    if not err.startswith("usage:"):  # our own errors: exactly one line
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert ";" in last or "did you mean" in last, last  # what is wrong; what to do
    return code, last


# ----------------------------------------------------------------------------- models and bit-widths


def test_unknown_model_suggests_close_names(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(images, "--model", "vit_tiny_patch16_244"), capsys)
    assert code == 2 and "unknown timm model 'vit_tiny_patch16_244'" in err and "vit_tiny_patch16_224" in err


def test_unknown_pretrained_tag(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(images, "--model", "test_vit.nonsense"), capsys)
    assert code == 2 and "no pretrained tag 'nonsense'" in err and "r160_in1k" in err


def test_model_without_attention_fails_before_any_work(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(images, "--model", "test_resnet"), capsys)
    assert code == 2 and "ResNet has no timm Attention" in err and "ViT, DeiT and Swin" in err


@pytest.mark.parametrize("flag, value, expected", [
    ("--w-bits", "1", "from 2 to 16, got 1"),
    ("--a-bits", "17", "from 2 to 16, got 17"),
    ("--w-bits", "4.5", "got '4.5'"),
    ("--a-bits", "eight", "got 'eight'"),
])
def test_bit_widths_outside_2_to_16_or_not_integers(flag: str, value: str, expected: str, images: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(images, flag, value), capsys)
    assert code == 2 and "bit-width must be an integer" in err and expected in err


@pytest.mark.parametrize("bits", ["8/1", "8/17", "8.5/8", "8"])
def test_reproduce_bits_pairs(bits: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["reproduce", "--random-init", "--bits", bits, "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and ("--bits takes W/A pairs" in err or "from 2 to 16" in err)


# ----------------------------------------------------------------------------- folders and images


def test_missing_and_empty_folders(tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(tmp_path / "missing"), capsys)
    assert code == 2 and "missing does not exist" in err and "labels.txt" in err
    (tmp_path / "empty").mkdir()
    code, err = run(quantize_args(tmp_path / "empty"), capsys)
    assert code == 2 and "no images found" in err and "labels.txt" in err
    code, err = run(quantize_args(images, "--val-dir", str(tmp_path / "empty")), capsys)
    assert code == 2 and "no images found" in err
    code, err = run(quantize_args(images, "--data", str(tmp_path / "nowhere")), capsys)
    assert code == 2 and "is not a directory" in err


def test_missing_data_folder_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PTQLIB_DATA", str(tmp_path / "gone"))
    code, err = run(["quantize", "--model", MODEL, "--random-init", "--no-progress"], capsys)
    assert code == 2 and "PTQLIB_DATA" in err and "not a directory" in err


@pytest.mark.parametrize("line, expected", [
    ("ghost.JPEG 3", "image .*ghost.JPEG does not exist; add the file or remove the line"),
    ("img0.JPEG 1000", "class 1000 is outside 0..999"),
    ("img0.JPEG -2", "class -2 is outside 0..999"),
])
def test_labels_file_naming_missing_file_or_bad_class(line: str, expected: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import re

    folder = _folder(tmp_path, 2)
    (folder / "labels.txt").write_text(f"img1.JPEG 5\n{line}\n")
    code, err = run(quantize_args(folder), capsys)
    assert code == 2 and "labels.txt line 2" in err and re.search(expected, err), err


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_or_truncated_jpeg_names_the_file(damage: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path, 3)
    bad = folder / "images" / "img1.JPEG"
    write_image(bad, size=(96, 96))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff\xd8 not a jpeg")
    code, err = run(quantize_args(folder, "--calib-size", "3"), capsys)
    assert code == 2 and "cannot read calibration image" in err and "img1.JPEG" in err
    code, err = run(quantize_args(folder, "--calib-size", "3", "--skip-corrupt"), capsys)  # only evaluation skips
    assert code == 2 and "cannot read calibration image" in err and "never skipped" in err
    code, err = run(quantize_args(folder, "--calib-size", "1", "--seed", "0", "--val-dir", str(folder)), capsys)
    assert code == 2 and "cannot read image" in err and "img1.JPEG" in err and "--skip-corrupt" in err


def test_corrupt_validation_image_with_worker_processes(tmp_path: Path, images: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A worker process's error arrives wrapped in a traceback; the user still sees one line."""
    folder = _folder(tmp_path, 3)
    (folder / "images" / "img2.JPEG").write_bytes(b"broken")
    code, err = run(quantize_args(images, "--calib-size", "1", "--val-dir", str(folder), "--workers", "1"), capsys)
    assert code == 2 and "cannot read image" in err and "img2.JPEG" in err


def test_grayscale_and_cmyk_images_are_converted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path, 2, modes=("L", "CMYK"))
    assert {Image.open(p).mode for p in (folder / "images").iterdir()} == {"L", "CMYK"}
    assert main(quantize_args(folder, "--val-dir", str(folder))) == 0
    out = capsys.readouterr().out
    assert "minmax" in out


def test_unavailable_device_and_bad_worker_count(images: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(images, "--device", "cuda:99"), capsys)
    assert code == 2 and "device cuda:99 is not available" in err and "--device cpu" in err
    code, err = run(quantize_args(images, "--device", "banana"), capsys)
    assert code == 2 and "unknown device 'banana'" in err
    code, err = run(["evaluate", "--quantized", str(tmp_path / "q.safetensors"), "--device", "cuda:99"], capsys)
    assert code == 2 and "not available" in err
    code, err = run(quantize_args(images, "--workers", "-1"), capsys)
    assert code == 2 and "whole number >= 0" in err


def test_calib_size_larger_than_available(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(images, "--calib-size", "50"), capsys)
    assert code == 2 and "calibration size 50 is more than the 4 images" in err and "smaller size" in err
    code, err = run(quantize_args(images, "--calib-size", "0"), capsys)
    assert code == 2 and "positive integer" in err


# ----------------------------------------------------------------------------- checkpoints and values


def test_checkpoint_that_does_not_fit(tmp_path: Path, images: Path, state: dict[str, torch.Tensor],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = dict(state)
    bad["head.weight"] = torch.zeros(10, bad["head.weight"].shape[1])
    del bad["norm.bias"]
    safetensors.torch.save_file(bad, tmp_path / "bad.safetensors")
    args = quantize_args(images)
    args.remove("--random-init")
    code, err = run([*args, "--checkpoint", str(tmp_path / "bad.safetensors")], capsys)
    assert code == 2 and "does not fit the model" in err and "head.weight" in err and "norm.bias" in err
    code, err = run([*args, "--checkpoint", str(tmp_path / "none.pth")], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "trunc.safetensors").write_bytes((tmp_path / "bad.safetensors").read_bytes()[:1000])
    code, err = run([*args, "--checkpoint", str(tmp_path / "trunc.safetensors")], capsys)
    assert code == 2 and "cannot read checkpoint" in err


def test_nan_or_inf_in_checkpoint_weights(tmp_path: Path, images: Path, state: dict[str, torch.Tensor],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = {k: v.clone() for k, v in state.items()}
    bad["blocks.0.mlp.fc1.weight"][3, 5] = float("nan")
    bad["blocks.1.attn.proj.bias"][0] = float("inf")
    safetensors.torch.save_file(bad, tmp_path / "nan.safetensors")
    args = quantize_args(images)
    args.remove("--random-init")
    code, err = run([*args, "--checkpoint", str(tmp_path / "nan.safetensors")], capsys)
    assert code == 2 and "NaN/Inf" in err and "blocks.0.mlp.fc1.weight" in err


def test_activations_that_overflow(tmp_path: Path, images: Path, state: dict[str, torch.Tensor],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    huge = {k: v.clone() for k, v in state.items()}
    huge["blocks.0.mlp.fc1.weight"].fill_(1e38)  # finite weights, infinite activations
    safetensors.torch.save_file(huge, tmp_path / "huge.safetensors")
    args = quantize_args(images)
    args.remove("--random-init")
    code, err = run([*args, "--checkpoint", str(tmp_path / "huge.safetensors")], capsys)
    assert code == 2 and "produces NaN/Inf at blocks.0.mlp.fc2 (input)" in err


def test_nan_inf_checks_in_the_library() -> None:
    torch.manual_seed(0)
    config = get_method("minmax")
    model = quantize_model(timm.create_model(MODEL, pretrained=False).eval(), config)
    x = torch.randn(2, 3, 160, 160)
    bad = x.clone()
    bad[1, 2, 3, 4] = float("inf")
    with pytest.raises(PtqlibError, match="calibration images hold 1 NaN/Inf"):
        calibrate(model, bad, config, progress=False)
    with torch.no_grad():
        model.blocks[1].attn.qkv.weight[0, 0] = float("nan")
    with pytest.raises(PtqlibError, match=r"blocks\.1\.attn\.qkv\.weight has 1 NaN/Inf"):
        calibrate(model, x, config, progress=False)


def test_output_paths_that_cannot_be_written(tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a folder")
    for flag in ("--output", "--save"):
        code, err = run(quantize_args(images, flag, str(blocker / "out.json")), capsys)
        assert code == 2 and f"cannot write {blocker / 'out.json'}" in err and "writable" in err
    code, err = run(quantize_args(images, "--save", str(tmp_path)), capsys)  # a directory
    assert code == 2 and "cannot write" in err
    code, err = run(["reproduce", "--random-init", "--output-dir", str(blocker / "results")], capsys)
    assert code == 2 and "cannot write" in err


# ----------------------------------------------------------------------------- saved models


def test_evaluate_bad_quantized_files(tmp_path: Path, images: Path, state: dict[str, torch.Tensor],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "q.safetensors"
    assert main(quantize_args(images, "--save", str(saved))) == 0
    capsys.readouterr()
    evaluate = ["evaluate", "--val-dir", str(images), "--no-progress", "--quantized"]
    code, err = run([*evaluate, str(tmp_path / "nothing.safetensors")], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "cut.safetensors").write_bytes(saved.read_bytes()[:-100])
    code, err = run([*evaluate, str(tmp_path / "cut.safetensors")], capsys)
    assert code == 2 and "truncated or corrupt" in err and "quantize --save" in err
    safetensors.torch.save_file(state, tmp_path / "float.safetensors")
    code, err = run([*evaluate, str(tmp_path / "float.safetensors")], capsys)
    assert code == 2 and "not a ptqlib file" in err
    # float weights of another architecture, and other weights of the same one
    torch.manual_seed(1)
    other = timm.create_model(MODEL, pretrained=False).state_dict()
    safetensors.torch.save_file(other, tmp_path / "other.safetensors")
    code, err = run([*evaluate, str(saved), "--checkpoint", str(tmp_path / "other.safetensors")], capsys)
    assert code == 2 and "differ from those" in err and "--checkpoint" in err
    small = timm.create_model("test_vit2", pretrained=False).state_dict()
    safetensors.torch.save_file(small, tmp_path / "vit2.safetensors")
    code, err = run([*evaluate, str(saved), "--checkpoint", str(tmp_path / "vit2.safetensors")], capsys)
    assert code == 2 and "does not fit the model" in err
    # a quantized file where float weights are expected
    args = quantize_args(images)
    args.remove("--random-init")
    code, err = run([*args, "--checkpoint", str(saved)], capsys)
    assert code == 2 and "is a ptqlib quantized model" in err and "evaluate --quantized" in err


def _rewrite_header(src: Path, dst: Path, **changes: object) -> Path:
    """Copy a quantized model file with some header entries changed."""
    import json

    import safetensors

    with safetensors.safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()["ptqlib"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    safetensors.torch.save_file(tensors, str(dst), metadata={"ptqlib": json.dumps({**header, **changes})})
    return dst


@pytest.fixture(scope="module")
def saved_model(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_vit (random weights) calibrated with minmax on two images and saved."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("saved") / "q.safetensors"
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.delenv("PTQLIB_DATA", raising=False)  # module scope: set up before the autouse fixture runs
        assert main(quantize_args(images, "--save", str(path))) == 0
    return path


def test_quantized_file_of_newer_format_or_other_architecture(saved_model: Path, images: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command line: a format this ptqlib cannot read, and a file whose model is
    another architecture (its header names test_vit2, its scales are test_vit's)."""
    newer = _rewrite_header(saved_model, tmp_path / "v99.safetensors", format_version=99,
                            versions={"ptqlib": "9.0"})
    for command in (["evaluate", "--val-dir", str(images), "--no-progress"],
                    ["export", "--output", str(tmp_path / "ints.safetensors")]):
        code, err = run([*command, "--quantized", str(newer)], capsys)
        assert code == 2 and "written by ptqlib 9.0 in format 99" in err and "upgrade ptqlib" in err
    other = _rewrite_header(saved_model, tmp_path / "other.safetensors", model="test_vit2")
    code, err = run(["evaluate", "--val-dir", str(images), "--no-progress", "--quantized", str(other)], capsys)
    assert code == 2 and "made for test_vit, but its model name test_vit2 builds test_vit2" in err
    assert "quantize --save" in err
    assert not (tmp_path / "ints.safetensors").exists()


def test_export_bad_inputs(saved_model: Path, images: Path, tmp_path: Path, state: dict[str, torch.Tensor],
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ints.safetensors"
    export = ["export", "--output", str(out), "--quantized"]
    code, err = run([*export, str(tmp_path / "nothing.safetensors")], capsys)
    assert code == 2 and "does not exist; check the path" in err
    (tmp_path / "cut.safetensors").write_bytes(saved_model.read_bytes()[:-100])
    code, err = run([*export, str(tmp_path / "cut.safetensors")], capsys)
    assert code == 2 and "truncated or corrupt" in err
    safetensors.torch.save_file(state, tmp_path / "float.safetensors")
    code, err = run([*export, str(tmp_path / "float.safetensors")], capsys)
    assert code == 2 and "not a ptqlib file" in err
    # an integer export is not a model to export from
    assert main(["export", "--quantized", str(saved_model), "--output", str(out)]) == 0
    capsys.readouterr()
    code, err = run(["export", "--output", str(tmp_path / "again.safetensors"), "--quantized", str(out)], capsys)
    assert code == 2 and "holds exported integer codes" in err
    # float weights of another architecture
    safetensors.torch.save_file(timm.create_model("test_vit2", pretrained=False).state_dict(), tmp_path / "v2.safetensors")
    code, err = run([*export, str(saved_model), "--checkpoint", str(tmp_path / "v2.safetensors")], capsys)
    assert code == 2 and "does not fit the model" in err
    # where to write
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = run(["export", "--quantized", str(saved_model), "--output", str(blocker / "x.safetensors")], capsys)
    assert code == 2 and f"cannot write {blocker / 'x.safetensors'}" in err and "writable" in err
    code, err = run(["export", "--quantized", str(saved_model), "--output", str(saved_model)], capsys)
    assert code == 2 and "is the quantized model file itself" in err
    # activation images
    code, err = run([*export, str(saved_model), "--activations", "2"], capsys)
    assert code == 2 and "--activations needs images" in err and "--image-dir" in err
    code, err = run([*export, str(saved_model), "--activations", "9", "--image-dir", str(images)], capsys)
    assert code == 2 and "--activations 9 asks for more than the 4 images" in err
    code, err = run([*export, str(saved_model), "--activations", "-1"], capsys)
    assert code == 2 and "whole number >= 0" in err
    code, err = run([*export, str(saved_model), "--activations", "1", "--image-dir", str(tmp_path / "none")], capsys)
    assert code == 2 and "does not exist" in err


# ----------------------------------------------------------------------------- memory guard


def test_max_memory_too_small_stops_with_advice(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(quantize_args(images, "--max-memory", "0.0001"), capsys)
    assert code == 2 and "calibration needs about" in err and "--micro-batch" in err
    for bad in ("-1", "0", "lots"):
        code, err = run(quantize_args(images, "--max-memory", bad), capsys)
        assert code == 2 and "memory size in GB" in err


def test_memory_estimate_matches_captured_bytes() -> None:
    torch.manual_seed(0)
    model = quantize_model(timm.create_model(MODEL, pretrained=False).eval(), get_method("ptq4vit"))
    site_list = sites(model)
    x = torch.randn(2, 3, 160, 160)
    for max_tokens, micro in ((None, None), (64, 1)):
        config = get_method("ptq4vit", max_tokens=max_tokens, row_select="random")
        estimate = estimate_memory(model, x, site_list, config, micro_batch=micro)
        caps = capture(model, x, site_list, grads=True, max_tokens=max_tokens, micro_batch=micro)
        assert estimate.per_site == {name: cap.nbytes() for name, cap in caps.items()}
    # Fisher rows: each micro-batch holds its candidates (64 + 8 outlier rows) until the final
    # choice, so the estimate bounds the kept bytes from above, by that much for Linear sites
    fisher = get_method("ptq4vit", max_tokens=64)
    bound = estimate_memory(model, x, site_list, fisher, micro_batch=1)
    caps = capture(model, x, site_list, grads=True, max_tokens=64, micro_batch=1, row_select="fisher",
                   grad_norm="image", outlier_rows=fisher.outlier_rows)
    kept = {name: cap.nbytes() for name, cap in caps.items()}
    assert all(bound.per_site[n] >= kept[n] for n in kept)
    qkv = "blocks.0.attn.qkv"
    assert bound.per_site[qkv] == kept[qkv] * 2 * 72 // 64
    estimate = estimate_memory(model, x, site_list, get_method("ptq4vit", max_tokens=None))
    names = [s.name for s in site_list]
    one_pass = estimate.group_bytes(names)
    assert plan_chunks(estimate, names, one_pass) == 1
    assert plan_chunks(estimate, names, one_pass - 1) >= 2
    assert plan_chunks(estimate, names, one_pass, chunks=3) == 3  # never fewer than asked
    with pytest.raises(PtqlibError, match="even one layer at a time"):
        plan_chunks(estimate, names, estimate.pass_bytes)


def test_memory_guard_falls_back_to_chunks(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = quantize_model(timm.create_model(MODEL, pretrained=False).eval(), get_method("minmax"))
    x = torch.randn(1, 3, 160, 160)
    config = get_method("minmax")
    estimate = estimate_memory(model, x, sites(model), config)
    budget_gb = (estimate.group_bytes([s.name for s in sites(model)]) - 1) / 1024**3
    report = calibrate(model, x, config, progress=False, max_memory=budget_gb)
    assert report.passes >= 2
    assert "memory guard" in capsys.readouterr().err


# ----------------------------------------------------------------------------- --debug and a real process


def test_debug_flag_shows_the_exception(images: Path) -> None:
    with pytest.raises(PtqlibError, match="unknown timm model"):
        main(["--debug", *quantize_args(images, "--model", "vit_tiny_patch16_244")])


@pytest.mark.slow
def test_subprocess_prints_one_line_and_no_traceback(images: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PTQLIB_DATA"}
    proc = subprocess.run([sys.executable, "-m", "ptqlib", *quantize_args(images, "--calib-size", "9")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: calibration size 9 is more than the 4 images") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr + proc.stdout
