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
    with pytest.raises(PtqlibError, match=f"written by ptqlib 9.0 in format 99.* reads format {FORMAT_VERSION} at most; upgrade"):
        load_quantized(tmp_path / "v99.safetensors")
    _rewrite(path, tmp_path / "cfg.safetensors", lambda h: {**h, "config": {**h["config"], "new_knob": 1}})
    with pytest.raises(PtqlibError, match="config saved in .* does not fit this ptqlib"):
        load_quantized(tmp_path / "cfg.safetensors")


def test_a_format_1_file_still_loads(saved, tmp_path: Path) -> None:
    """Format 1 had no folds and no corrected weights: such a file reads as before."""
    _, path, logits = saved
    _rewrite(path, tmp_path / "v1.safetensors",
             lambda h: {k: v for k, v in {**h, "format_version": 1}.items() if k not in ("reparam", "corrected")})
    with torch.no_grad():
        assert torch.equal(load_quantized(tmp_path / "v1.safetensors")(random_images(2, size=224, seed=5)), logits)


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


# ----------------------------------------------------------------------------- RepQ-ViT folds and ERQ corrections


TEST_VIT = "test_vit"  # timm's 6-block ViT (dim 64, 160 px): calibrates in well under a second


def _reparam_config(method: str, correction: str):
    return get_method(method, 4, 4, rounds=1, n=20, max_tokens=32, weight_correction=correction)


@pytest.fixture(scope="module", params=[("repq", "none"), ("repq", "ridge"), ("adalog", "none"), ("adalog", "ridge")],
                ids=lambda p: "-".join(p))
def reparam_saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, one_torch_thread):
    """A reparameterised ``test_vit`` (random weights, seed 0) calibrated with a preset, saved."""
    method, correction = request.param
    config = _reparam_config(method, correction)
    model = quantize_model(load_model(TEST_VIT, random_init=True, seed=0), config)
    calibrate(model, random_images(2, size=160, seed=1), config, progress=False)
    path = tmp_path_factory.mktemp("reparam") / f"{method}_{correction}.safetensors"
    header = save_quantized(model, path, config, model_name=TEST_VIT, random_init=True, init_seed=0)
    return model, path, config, header


def _edit_file(src: Path, dst: Path, header_edit=lambda h: h, tensors_edit=lambda t: t) -> Path:
    """Copy a saved file with its header and/or tensors changed."""
    with safetensors.safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    safetensors.torch.save_file(tensors_edit(tensors), str(dst), metadata={HEADER_KEY: json.dumps(header_edit(header))})
    return dst


def test_reparam_round_trip_is_bit_for_bit(reparam_saved) -> None:
    from ptqlib.engine.calibrate import corrected_layers
    from ptqlib.engine.reparam import folds_of

    model, path, config, header = reparam_saved
    x = random_images(2, size=160, seed=5)
    for loaded in (load_quantized(path), load_quantized(path, model=load_model(TEST_VIT, random_init=True, seed=0))):
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
        saved_state, state = model.state_dict(), loaded.state_dict()
        assert list(state) == list(saved_state)
        for key, value in saved_state.items():  # folded (and corrected) float weights, and every scale
            assert value.dtype == state[key].dtype and torch.equal(value, state[key]), key
        original = dict(quantizers(model))
        for name, q in quantizers(loaded):
            assert (type(q), q.bits, q.enabled) == (type(original[name]), original[name].bits, original[name].enabled)
        folds, saved_folds = folds_of(loaded), folds_of(model)
        assert folds.keys() == saved_folds.keys() and len(folds) == 12
        for norm, fold in folds.items():
            assert torch.equal(fold.ratio, saved_folds[norm].ratio) and torch.equal(fold.offset, saved_folds[norm].offset)
        assert corrected_layers(loaded) == corrected_layers(model)
        assert float_state_hash(loaded) == header["float_sha256"]
    # the header says what was folded and corrected; the file holds the float64 folds, the corrected weights
    assert header["reparam"] == {f"blocks.{i}.norm{j}": [f"blocks.{i}.{'attn.qkv' if j == 1 else 'mlp.fc1'}"]
                                 for i in range(6) for j in (1, 2)}
    assert read_header(path)["reparam"] == header["reparam"] and read_header(path)["config"] == config.to_dict()
    ridge = config.weight_correction == "ridge"
    assert len(header["corrected"]) == (25 if ridge else 0)
    assert ("head" in header["corrected"]) == ridge
    with safetensors.safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_slice("reparam.blocks.3.norm2.ratio").get_dtype() == "F64"
        assert torch.equal(f.get_tensor("reparam.blocks.3.norm2.offset"), folds_of(model)["blocks.3.norm2"].offset)
    assert {k for k in keys if k.startswith("reparam.")} == {f"reparam.{n}.{p}" for n in header["reparam"]
                                                             for p in ("ratio", "offset")}
    assert {k for k in keys if k.endswith(".weight")} == {f"corrected.{n}.weight" for n in header["corrected"]}


def test_a_loaded_reparam_model_saves_the_same_file_again(reparam_saved, tmp_path: Path) -> None:
    _, path, config, header = reparam_saved
    again = save_quantized(load_quantized(path), tmp_path / "again.safetensors", config, model_name=TEST_VIT,
                           random_init=True, init_seed=0)
    assert {k: v for k, v in again.items() if k != "versions"} == {k: v for k, v in header.items() if k != "versions"}
    first, second = safetensors.torch.load_file(str(path)), safetensors.torch.load_file(str(tmp_path / "again.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def corrected_file(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    config = _reparam_config("repq", "ridge")
    model = quantize_model(load_model(TEST_VIT, random_init=True, seed=0), config)
    calibrate(model, random_images(2, size=160, seed=1), config, progress=False)
    path = tmp_path_factory.mktemp("corrected") / "repq_ridge.safetensors"
    save_quantized(model, path, config, model_name=TEST_VIT, random_init=True, init_seed=0)
    return path


def _set(tensors: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**tensors, key: value}


def _without(mapping: dict, *keys: str) -> dict:
    return {k: v for k, v in mapping.items() if k not in keys}


RATIO, OFFSET, CORRECTED = "reparam.blocks.2.norm1.ratio", "reparam.blocks.2.norm1.offset", "corrected.blocks.2.mlp.fc1.weight"


@pytest.mark.parametrize("case, header_edit, tensors_edit, message", [
    ("ratio_values", None, lambda t: _set(t, RATIO, t[RATIO] * (1 + 1e-6)), "float weights of this .* differ"),
    ("offset_values", None, lambda t: _set(t, OFFSET, t[OFFSET] + 1e-3), "float weights of this .* differ"),
    ("ratio_shape", None, lambda t: _set(t, RATIO, t[RATIO][:-1].clone()), "fold of blocks.2.norm1 has .*another model"),
    ("ratio_missing", None, lambda t: _without(t, RATIO), "names folded LayerNorms but lacks their tensors"),
    ("unknown_norm", lambda h: {**h, "reparam": {**h["reparam"], "blocks.7.norm1": ["blocks.7.attn.qkv"]}},
     lambda t: {**t, "reparam.blocks.7.norm1.ratio": t[RATIO].clone(), "reparam.blocks.7.norm1.offset": t[OFFSET].clone()},
     "no post-LayerNorm site blocks.7.norm1"),
    ("folds_unnamed", lambda h: {**h, "reparam": {}}, None, "float weights of this .* differ"),
    ("folds_dropped", lambda h: {**h, "reparam": {}}, lambda t: {k: v for k, v in t.items()
                                                                 if not k.startswith("reparam.")},
     "float weights of this .* differ"),  # an unfolded model is not the saved one
    ("corrected_missing", None, lambda t: _without(t, CORRECTED), "corrected weights of blocks.2.mlp.fc1 that it lacks"),
    ("corrected_shape", None, lambda t: _set(t, CORRECTED, t[CORRECTED][:, :-1].clone()), "corrected weights of blocks.2.mlp.fc1"),
    ("corrected_values", None, lambda t: _set(t, CORRECTED, t[CORRECTED] * 1.01), "float weights of this .* differ"),
    ("corrected_unknown_layer", lambda h: {**h, "corrected": [*h["corrected"], "blocks.9.mlp.fc1"]},
     lambda t: {**t, "corrected.blocks.9.mlp.fc1.weight": t[CORRECTED].clone()}, "corrected weights of blocks.9.mlp.fc1"),
    ("corrected_unnamed", lambda h: {**h, "corrected": [n for n in h["corrected"] if n != "blocks.2.mlp.fc1"]}, None,
     "float weights of this .* differ"),
])
def test_corrupt_folds_and_corrections_are_refused(corrected_file: Path, tmp_path: Path, case: str, header_edit,
                                                   tensors_edit, message: str) -> None:
    bad = _edit_file(corrected_file, tmp_path / f"{case}.safetensors", header_edit or (lambda h: h),
                     tensors_edit or (lambda t: t))
    with pytest.raises(PtqlibError, match=message):
        load_quantized(bad)
    if case.endswith("_unnamed"):  # without the hash check, the tensors the header does not name are still refused
        with pytest.raises(PtqlibError, match="holds tensors its header does not describe .*(reparam|corrected)\\."):
            load_quantized(bad, check_weights=False)


def test_corrected_weights_come_from_the_file(corrected_file: Path, tmp_path: Path) -> None:
    x = random_images(1, size=160, seed=5)
    with torch.no_grad():
        expected = load_quantized(corrected_file)(x)
    bad = _edit_file(corrected_file, tmp_path / "other.safetensors",
                     tensors_edit=lambda t: _set(t, CORRECTED, t[CORRECTED] * 1.5))
    loaded = load_quantized(bad, check_weights=False)  # the hash check off: the file's weights are used as they are
    assert torch.allclose(loaded.get_submodule("blocks.2.mlp.fc1").weight,
                          safetensors.torch.load_file(str(corrected_file))[CORRECTED] * 1.5)
    with torch.no_grad():
        assert not torch.equal(loaded(x), expected)


def test_integer_export_of_a_reparam_model(reparam_saved, tmp_path: Path) -> None:
    from helpers import quantizer_outputs
    from ptqlib.engine.layers import QuantLinear
    from ptqlib.engine.reparam import folds_of
    from ptqlib.io.checkpoints import read_integers, weight_integers

    model, _, config, saved_header = reparam_saved
    image = random_images(1, size=160, seed=7)
    header = export_integers(model, tmp_path / "ints.safetensors", image, config=config)
    assert header["reparam"] == saved_header["reparam"] and len(header["reparam"]) == 12
    with safetensors.safe_open(str(tmp_path / "ints.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()[HEADER_KEY])["reparam"] == header["reparam"]
        for norm, fold in folds_of(model).items():
            assert torch.equal(f.get_tensor(f"reparam.{norm}.ratio"), fold.ratio)
            assert torch.equal(f.get_tensor(f"reparam.{norm}.offset"), fold.offset)
    back = read_integers(tmp_path / "ints.safetensors")
    assert set(back) == set(header["tensors"]) and not any(k.startswith("reparam") for k in back)
    weights = weight_integers(model)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    for name, layer in layers.items():
        it = back[f"{name}.weight_quant"]
        assert it.fits(), name
        assert torch.equal(it.codes, weights[f"{name}.weight_quant"].codes), name
        # the codes are the folded (and corrected) weights' codes: dequantized, the fake-quantized weights
        assert torch.equal(it.dequantize(), layer.quantized_weight()), name
        assert it.scale.shape == (layer.out_features, 1)  # per-channel weights
    activations = quantizer_outputs(model, image, keep=lambda q: q.enabled)
    for name, it in back.items():
        assert it.fits(), name
        if not name.endswith(".weight_quant"):
            assert torch.equal(it.dequantize(), activations[name]), name
    softmax, gelu = back["blocks.0.attn.matmul_av.a_quant"].layout, back["blocks.0.mlp.fc2.input_quant"].layout
    assert (softmax, gelu.split("_")[0]) == {"repq": ("log_sqrt2", "uniform"), "adalog": ("adalog", "adalog")}[
        config.method], (softmax, gelu)


def test_integer_export_without_reparam_has_no_folds(saved, tmp_path: Path) -> None:
    model, _, _ = saved
    header = export_integers(model, tmp_path / "ints.safetensors")
    assert header["reparam"] == {}
    with safetensors.safe_open(str(tmp_path / "ints.safetensors"), framework="pt") as f:
        assert not any(k.startswith("reparam.") for k in f.keys())
