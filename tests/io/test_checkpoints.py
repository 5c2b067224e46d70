"""Save a calibrated model, load it without recalibrating, and get the same outputs bit for bit.

Model-level tests use ViT-Ti with random weights and a reduced PTQ4ViT search (every quantizer
kind: uniform, twin softmax, twin GELU); the real-data test checks the claim end to end on the
real ViT-Ti: ``quantize --save`` then ``evaluate --quantized`` reproduce accuracy and logits.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import timm
import torch
from torch import nn

import ptqlib
from ptqlib import PtqlibError, calibrate, get_method, quantize_model
from ptqlib.app.cli import main
from ptqlib.io.data import DataPaths, LabeledImages, calibration_batch, model_transform, read_list
from ptqlib.io.checkpoints import (FORMAT_VERSION, HEADER_KEY, export_integers, float_state_hash, load_quantized, read_header,
                       save_quantized)
from ptqlib.io.models import find_checkpoint, load_model
from ptqlib.core.quant import TwinGeluQuantizer, TwinSoftmaxQuantizer
from ptqlib.engine.wrap import quantizers

from helpers import random_images

TINY = "vit_tiny_patch16_224"
CONFIG = get_method("ptq4vit", 4, 4, rounds=1, n=20, search="coarse_to_fine", max_tokens=64)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, torch.Tensor]:
    """A ViT-Ti (random weights, seed 0) calibrated with CONFIG, saved; and its logits on 2 images."""
    model = quantize_model(load_model(TINY, random_init=True), CONFIG)
    calibrate(model, random_images(2, size=224, seed=1), CONFIG, progress=False)
    path = tmp_path_factory.mktemp("saved") / "tiny_w4a4.safetensors"
    save_quantized(model, path, CONFIG, model_name=TINY, random_init=True, init_seed=0,
                   info={"seed": 0, "calib_files": ["a.JPEG", "b.JPEG"]})
    with torch.no_grad():
        logits = model(random_images(2, size=224, seed=5))
    return model, path, logits


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy a saved file with its header changed by ``edit(header) -> header``."""
    with safetensors.safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    safetensors.torch.save_file(tensors, str(dst), metadata={HEADER_KEY: json.dumps(edit(header))})


def test_load_reproduces_outputs_bit_for_bit(saved) -> None:
    model, path, logits = saved
    fresh = load_model(TINY, random_init=True)  # float weights only: no calibration below
    loaded = load_quantized(path, model=fresh)
    with torch.no_grad():
        assert torch.equal(loaded(random_images(2, size=224, seed=5)), logits)
    original = dict(quantizers(model))
    for name, q in quantizers(loaded):
        p = original[name]
        assert (type(q), q.bits, q.enabled, q.version > 0) == (type(p), p.bits, p.enabled, p.version > 0), name
        for (bname, buf), (_, ref) in zip(q.named_buffers(), p.named_buffers()):
            assert buf.dtype == ref.dtype and torch.equal(buf, ref), (name, bname)


def test_load_by_name_rebuilds_the_float_model(saved) -> None:
    _, path, logits = saved
    loaded = load_quantized(path)  # the header says: random weights with seed 0
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(random_images(2, size=224, seed=5)), logits)


def test_header_records_method_config_bits_and_versions(saved) -> None:
    model, path, _ = saved
    header = read_header(path)
    assert header["format_version"] == FORMAT_VERSION
    assert set(header["versions"]) >= {"ptqlib", "torch", "timm"}
    assert header["versions"]["ptqlib"] == ptqlib.__version__ and header["versions"]["torch"] == torch.__version__
    assert header["model"] == TINY and header["architecture"] == TINY
    assert header["config"] == CONFIG.to_dict() and header["method"] == "ptq4vit"
    assert (header["w_bits"], header["a_bits"]) == (4, 4)
    assert header["float_sha256"] == float_state_hash(model)
    assert header["info"]["calib_files"] == ["a.JPEG", "b.JPEG"]
    kinds = {e["kind"] for e in header["quantizers"].values()}
    assert kinds == {"UniformQuantizer", "TwinSoftmaxQuantizer", "TwinGeluQuantizer"}
    assert len(header["quantizers"]) == sum(1 for _ in quantizers(model))
    with safetensors.safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "blocks.0.attn.matmul_av.a_quant.m" in keys and "blocks.0.mlp.fc2.input_quant.scale" in keys
    assert "blocks.0.mlp.fc2.input_quant.m" in keys and "blocks.0.attn.qkv.weight_quant.scale" in keys
    assert not any(k.endswith(".weight") for k in keys)  # float weights are not copied
    twin = [q for _, q in quantizers(model) if isinstance(q, (TwinSoftmaxQuantizer, TwinGeluQuantizer))]
    assert len(twin) == 24


def test_load_with_recorded_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    state = timm.create_model(TINY, pretrained=False).state_dict()
    ckpt = tmp_path / "float.safetensors"
    safetensors.torch.save_file(state, ckpt)
    config = get_method("minmax", 6, 6)
    model = quantize_model(load_model(TINY, ckpt), config)
    calibrate(model, random_images(1, size=224, seed=1), config, progress=False)
    save_quantized(model, tmp_path / "q.safetensors", config, checkpoint=ckpt)
    assert read_header(tmp_path / "q.safetensors")["checkpoint"] == str(ckpt.resolve())
    loaded = load_quantized(tmp_path / "q.safetensors")
    x = random_images(1, size=224, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ----------------------------------------------------------------------------- refusals


def test_another_architecture_is_refused(saved) -> None:
    _, path, _ = saved
    with pytest.raises(PtqlibError, match=f"made for {TINY}, not deit_tiny_patch16_224"):
        load_quantized(path, model=timm.create_model("deit_tiny_patch16_224", pretrained=False))
    shallow = timm.create_model(TINY, pretrained=False, depth=2)  # same name, other structure
    with pytest.raises(PtqlibError, match="float weights .* differ"):
        load_quantized(path, model=shallow)
    with pytest.raises(PtqlibError, match="quantizer blocks.2.* the file was made for another model"):
        load_quantized(path, model=timm.create_model(TINY, pretrained=False, depth=2), check_weights=False)


def test_other_float_weights_are_refused(saved) -> None:
    _, path, _ = saved
    with pytest.raises(PtqlibError, match="differ from those .* calibrated with \\(random weights, seed 0\\)"):
        load_quantized(path, model=load_model(TINY, random_init=True, seed=1))


def test_newer_format_and_incompatible_config_are_refused(saved, tmp_path: Path) -> None:
    _, path, _ = saved
    _rewrite(path, tmp_path / "v99.safetensors", lambda h: {**h, "format_version": 99,
                                                             "versions": {**h["versions"], "ptqlib": "9.0"}})
    with pytest.raises(PtqlibError, match="written by ptqlib 9.0 in format 99.* reads format 1 at most; upgrade"):
        load_quantized(tmp_path / "v99.safetensors")
    _rewrite(path, tmp_path / "cfg.safetensors", lambda h: {**h, "config": {**h["config"], "new_knob": 1}})
    with pytest.raises(PtqlibError, match="config saved in .* does not fit this ptqlib"):
        load_quantized(tmp_path / "cfg.safetensors")


def test_truncated_corrupt_and_foreign_files_are_refused(saved, tmp_path: Path) -> None:
    _, path, _ = saved
    data = path.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 20, 3, 0):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(PtqlibError, match="truncated or corrupt"):
            load_quantized(tmp_path / "cut.safetensors")
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(PtqlibError, match="not a ptqlib file"):
        load_quantized(tmp_path / "plain.safetensors")
    with pytest.raises(PtqlibError, match="does not exist"):
        load_quantized(tmp_path / "nothing.safetensors")
    _rewrite(path, tmp_path / "lost.safetensors",
             lambda h: {**h, "quantizers": {**h["quantizers"], "blocks.0.attn.qkv.nope": {"kind": "UniformQuantizer"}}})
    with pytest.raises(PtqlibError, match="quantizer blocks.0.attn.qkv.nope"):
        load_quantized(tmp_path / "lost.safetensors")
    _rewrite(path, tmp_path / "bits.safetensors", lambda h: {**h, "quantizers": {
        k: {**v, "bits": 5} if k == "blocks.3.mlp.fc1.input_quant" else v for k, v in h["quantizers"].items()}})
    with pytest.raises(PtqlibError, match="blocks.3.mlp.fc1.input_quant .* 5-bit .* 4-bit"):
        load_quantized(tmp_path / "bits.safetensors")


def test_integer_export_is_not_a_model_file(saved, tmp_path: Path) -> None:
    model, _, _ = saved
    export_integers(model, tmp_path / "ints.safetensors")
    with pytest.raises(PtqlibError, match="holds exported integer codes"):
        load_quantized(tmp_path / "ints.safetensors")


def test_save_refuses_uncalibrated_models_and_unwritable_paths(saved, tmp_path: Path) -> None:
    wrapped = quantize_model(timm.create_model("test_vit", pretrained=False), get_method("minmax"))
    with pytest.raises(PtqlibError, match="no calibrated quantizers"):
        save_quantized(wrapped, tmp_path / "x.safetensors", get_method("minmax"))
    with pytest.raises(PtqlibError, match="not wrapped"):
        save_quantized(timm.create_model("test_vit", pretrained=False), tmp_path / "x.safetensors", CONFIG)
    model, _, _ = saved
    (tmp_path / "file").write_text("")
    with pytest.raises(PtqlibError, match="cannot write .*; choose a writable output path"):
        save_quantized(model, tmp_path / "file" / "q.safetensors", CONFIG)
    with pytest.raises(PtqlibError, match="JSON-serializable"):
        save_quantized(model, tmp_path / "q.safetensors", CONFIG, info={"when": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written


# ----------------------------------------------------------------------------- the real ViT-Ti


@pytest.mark.slow
def test_real_vit_tiny_save_load_evaluate_reproduces_accuracy_and_logits(
        shared_data: DataPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = find_checkpoint(TINY, shared_data.root)
    assert checkpoint is not None
    saved_file, result_json = tmp_path / "tiny.safetensors", tmp_path / "quantize.json"
    common = ["--data", str(shared_data.root), "--val-limit", "48", "--no-progress"]
    assert main(["quantize", "--method", "minmax", "--calib-size", "4", "--no-fp",
                 "--save", str(saved_file), "--output", str(result_json), *common]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--quantized", str(saved_file), "--output", str(tmp_path / "evaluate.json"), *common]) == 0
    out = capsys.readouterr().out
    quantized, evaluated = json.loads(result_json.read_text()), json.loads((tmp_path / "evaluate.json").read_text())
    assert quantized["eval_images"] == evaluated["eval_images"] == 48
    assert (quantized["top1"], quantized["top5"]) == (evaluated["top1"], evaluated["top5"])
    assert quantized["top1"] > 10  # a real model: not a trivially equal 0 %
    assert re.search(r"top-1 equals the [\d.]+ % measured when the model was saved", out)
    header = read_header(saved_file)
    assert header["checkpoint"] == str(checkpoint.resolve())
    assert header["info"]["calib_files"] == read_list(shared_data.calib_list)[:4] == quantized["calib_files"]

    # logits, bit for bit: a model calibrated here and saved, its reloaded copy, and the CLI's file
    config = get_method("minmax", seed=0)
    model = quantize_model(load_model(TINY, checkpoint), config)
    calib = LabeledImages(shared_data.calib_dir, transform=model_transform(model))
    images, _, _ = calibration_batch(calib, 4, list_file=shared_data.calib_list)
    calibrate(model, images, config, progress=False)
    save_quantized(model, tmp_path / "api.safetensors", config, model_name=TINY, checkpoint=checkpoint)
    val = LabeledImages(shared_data.val_dir, transform=model_transform(model), limit=8)
    batch = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        expected = model(batch)
        assert torch.equal(load_quantized(tmp_path / "api.safetensors")(batch), expected)
        assert torch.equal(load_quantized(saved_file)(batch), expected)  # same images, seed, config
