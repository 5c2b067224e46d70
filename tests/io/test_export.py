"""Integer export: codes fit in k bits and dequantize to the fake-quantized tensors exactly.

Checked for every quantized layer of a calibrated ViT-Ti (random weights) under two configs that
between them use every layout: PTQ4ViT W4A4 (twin softmax, twin GELU, signed uniform) and a W8A6
config with unsigned post-softmax and per-channel weights. A hypothesis test covers the
quantizer modules at every bit-width 2..16 with per-channel scales.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from ptqlib import PTQConfig, calibrate, get_method, quantize_model, sites
from ptqlib.io.checkpoints import (LAYOUTS, IntegerTensor, activation_integers, export_integers, read_integers,
                       weight_integers)
from ptqlib.engine.layers import QuantConv2d, QuantLinear
from ptqlib.io.models import load_model
from ptqlib.core.quant import Quantizer, TwinGeluQuantizer, TwinSoftmaxQuantizer, UniformQuantizer

from helpers import quantizer_outputs, random_image_folder, random_images

CONFIGS = {
    "ptq4vit_w4a4": get_method("ptq4vit", 4, 4, rounds=1, n=20, search="coarse_to_fine", max_tokens=64),
    "uniform_w8a6": PTQConfig(method="custom", w_bits=8, a_bits=6, softmax_unsigned=True, weight_granularity="channel",
                              metric="mse", rounds=0),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def calibrated(request: pytest.FixtureRequest) -> tuple[nn.Module, torch.Tensor, PTQConfig]:
    """A calibrated ViT-Ti and one image to push through it."""
    config = CONFIGS[request.param]
    model = quantize_model(load_model("vit_tiny_patch16_224", random_init=True), config)
    calibrate(model, random_images(2, size=224, seed=1), config, progress=False)
    return model, random_images(1, size=224, seed=7), config


def _activation_outputs(model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every enabled activation quantizer's output (its fake-quantized tensor) on ``image``."""
    weights = {id(s.module.weight_quant) for s in sites(model) if hasattr(s.module, "weight_quant")}
    return quantizer_outputs(model, image, keep=lambda q: q.enabled and id(q) not in weights)


def _documented_value(it: IntegerTensor) -> torch.Tensor:
    """Decode codes straight from the ``LAYOUTS`` text, independently of ``quant.py``."""
    k, codes = it.bits, it.codes.to(torch.int64)
    top, magnitude = (codes >> (k - 1)) & 1, (codes & (2 ** (k - 1) - 1)).double()
    if it.layout.startswith("uniform"):
        return (codes.double() * it.scale.double()).float()
    if it.layout == "twin_softmax":
        coarse = 2.0 ** -(k - 1)
        fine = coarse / torch.exp2(it.m.double())
        return torch.where(top.bool(), magnitude * coarse, magnitude * fine).float()
    neg_step = it.scale.double() / torch.exp2(it.m.double())
    return torch.where(top.bool(), -magnitude * neg_step, magnitude * it.scale.double()).float()


def test_weight_codes_reproduce_every_quantized_weight(calibrated) -> None:
    model, _, config = calibrated
    exported = weight_integers(model)
    layers = [s for s in sites(model) if isinstance(s.module, (QuantLinear, QuantConv2d))]
    assert len(layers) == 50 and set(exported) == {f"{s.name}.weight_quant" for s in layers}
    bits = config.w_bits
    for site in layers:
        it = exported[f"{site.name}.weight_quant"]
        assert it.bits == bits and it.layout == "uniform_signed" and it.fits(), site.name
        assert it.code_range() == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        assert torch.equal(it.dequantize(), site.module.quantized_weight()), site.name
        assert torch.equal(_documented_value(it), site.module.quantized_weight()), site.name


def test_activation_codes_reproduce_every_fake_quantized_activation(calibrated) -> None:
    model, image, config = calibrated
    outputs = _activation_outputs(model, image)
    exported = activation_integers(model, image)
    assert set(exported) == set(outputs) and len(outputs) == 12 * 8 + 1  # qkv, proj, fc1, fc2, 2 × 2 operands; head
    for name, it in exported.items():
        assert it.fits(), name
        assert torch.equal(it.dequantize(), outputs[name]), name
        assert torch.equal(_documented_value(it), outputs[name]), name
    layouts = {it.layout for it in exported.values()}
    if config.twin_softmax:
        assert layouts == {"twin_softmax", "twin_gelu", "uniform_signed"}
        assert exported["blocks.0.attn.matmul_av.a_quant"].layout == "twin_softmax"
        assert exported["blocks.0.mlp.fc2.input_quant"].layout == "twin_gelu"
    else:
        assert layouts == {"uniform_unsigned", "uniform_signed"}


def test_export_file_round_trip(calibrated, tmp_path: Path) -> None:
    model, image, config = calibrated
    header = export_integers(model, tmp_path / "ints.safetensors", image)
    assert header["layouts"] == LAYOUTS and len(header["tensors"]) == 50 + 97
    back = read_integers(tmp_path / "ints.safetensors")
    fresh = {**weight_integers(model), **activation_integers(model, image)}
    assert set(back) == set(fresh)
    for name, it in back.items():
        assert it.layout == fresh[name].layout and it.bits == fresh[name].bits
        assert torch.equal(it.codes, fresh[name].codes) and it.codes.dtype == torch.int32
        assert torch.equal(it.dequantize(), fresh[name].dequantize()), name
    with safetensors.safe_open(str(tmp_path / "ints.safetensors"), framework="pt") as f:
        dtypes = {name: f.get_slice(f"{name}.codes").get_dtype() for name in back}
    a_bits = config.a_bits
    assert dtypes["blocks.0.attn.qkv.weight_quant"] == "I8"  # k-bit signed codes in int8
    assert dtypes["blocks.0.attn.matmul_av.a_quant"] == ("I8" if 2**a_bits - 1 <= 127 else "U8")  # unsigned codes


# ----------------------------------------------------------------------------- properties, bits 2..16


def _module(kind: str, bits: int, scale: torch.Tensor, m: int) -> Quantizer:
    if kind == "uniform_signed":
        return UniformQuantizer(bits).set(scale=scale)
    if kind == "uniform_unsigned":
        return UniformQuantizer(bits, signed=False).set(scale=scale)
    if kind == "twin_gelu":
        return TwinGeluQuantizer(bits).set(scale=scale, m=m)
    return TwinSoftmaxQuantizer(bits).set(m=torch.full(scale.shape, min(m, bits - 1)))


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["uniform_signed", "uniform_unsigned", "twin_softmax", "twin_gelu"]),  # log: test_checkpoints_log.py
    bits=st.integers(2, 16),
    m=st.integers(0, 6),
    scales=arrays(np.float32, 3, elements=st.floats(2.0**-12, 4.0, width=32)),
    unit=arrays(np.float32, (3, 24), elements=st.floats(-1.25, 1.25, width=32)),
    wild=arrays(np.float32, (3, 4), elements=st.floats(-1e6, 1e6, width=32)),
)
def test_quantizer_modules_codes_fit_and_error_is_half_a_step(kind, bits, m, scales, unit, wild) -> None:
    """Per-channel modules: codes never leave k bits; inside the clipping range the dequantized
    value is within half a step of the input (the step that the code's layout selects)."""
    scale = torch.from_numpy(scales).view(3, 1)
    q = _module(kind, bits, scale, m)
    n = 2 ** (bits - 1)
    u = torch.from_numpy(unit).double()
    if kind == "twin_softmax":
        d2 = 2.0 ** -(bits - 1)
        d1 = d2 / 2.0 ** q.m.double()
        x = torch.where(u.abs() < 0.5, u.abs() * 2 * n * d1, u.abs() / 1.25).float()  # fine range, whole [0, 1]
        step = torch.where(x < n * d1, d1, torch.as_tensor(d2, dtype=torch.float64))
        top = torch.where(x < n * d1, (n - 1) * d1, (n - 1) * d2)
        inside = (x >= 0) & (x.double() <= top)
    elif kind == "twin_gelu":
        dn = scale.double() / 2.0**m
        x = torch.where(u >= 0, u * n * scale.double(), u * n * dn).float()
        step = torch.where(x >= 0, scale.double(), dn)
        inside = (x.double() <= (n - 1) * scale.double()) & (x.double() >= -(n - 1) * dn)
    else:
        lo, hi = (-n, n - 1) if kind == "uniform_signed" else (0, 2**bits - 1)
        x = (u * (hi if kind == "uniform_signed" else hi / 2) * scale.double()).float()
        if kind == "uniform_unsigned":
            x = x + (hi / 2 * scale)
        step = scale.double().expand_as(x)
        inside = (x.double() >= lo * scale.double()) & (x.double() <= hi * scale.double())
    x = torch.cat([x, torch.from_numpy(wild)], 1)
    step = torch.cat([step, step[:, :1].expand(3, 4)], 1)
    inside = torch.cat([inside, torch.zeros(3, 4, dtype=torch.bool)], 1)
    codes = q.codes(x)
    it = IntegerTensor(codes, bits, kind, None if kind == "twin_softmax" else q.scale, getattr(q, "m", None))
    lo, hi = it.code_range()
    assert int(codes.min()) >= lo and int(codes.max()) <= hi
    fake = q.fake(x)
    assert torch.equal(it.dequantize(), fake) and torch.equal(q.dequantize(codes), fake)
    err = (fake.double() - x.double()).abs()
    tol = 1e-6 * (x.double().abs() + step)
    assert torch.all(err[inside] <= step[inside] / 2 + tol[inside])


# ----------------------------------------------------------------------------- the command line


def _image_folder(root: Path, n: int = 3) -> Path:
    return random_image_folder(root, {f"img{i}.JPEG": i for i in range(n)})


def test_cli_export_writes_codes_that_reproduce_the_saved_model(tmp_path: Path, monkeypatch, capsys) -> None:
    """``quantize --save`` then ``export``: weights as k-bit codes with scales, activations in the
    documented layouts (twin: bit k-1 range/sign, bits 0..k-2 magnitude), one summary line."""
    from ptqlib.app.cli import main
    from ptqlib.io.data import LabeledImages, model_transform
    from ptqlib.io.checkpoints import load_quantized

    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    folder = _image_folder(tmp_path / "imgs")
    saved = tmp_path / "q.safetensors"
    assert main(["quantize", "--model", "test_vit", "--random-init", "--method", "ptq4vit", "--w-bits", "4",
                 "--a-bits", "4", "--search", "coarse_to_fine", "--max-tokens", "64", "--metric", "mse", "--calib-dir", str(folder),
                 "--calib-size", "2", "--no-fp", "--no-progress", "--save", str(saved)]) == 0
    capsys.readouterr()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["export", "--quantized", str(saved), "--output", str(out_dir), "--activations", "2",
                 "--image-dir", str(folder)]) == 0
    stdout = capsys.readouterr().out
    target = out_dir / "q.int.safetensors"
    assert stdout.count("\n") == 1 and stdout.startswith(f"wrote {target}")
    assert "weight tensors (4-bit: uniform_signed)" in stdout and "of 2 images" in stdout
    assert "bit k-1 = range/sign bit" in stdout

    model = load_quantized(saved)
    with safetensors.safe_open(str(target), framework="pt") as f:
        import json

        header = json.loads(f.metadata()["ptqlib"])
    assert header["layouts"] == LAYOUTS and header["architecture"] == "test_vit"
    back = read_integers(target)
    weights = {k: v for k, v in back.items() if header["tensors"][k]["kind"] == "weight"}
    layers = {f"{s.name}.weight_quant": s.module for s in sites(model) if isinstance(s.module, (QuantLinear, QuantConv2d))}
    assert set(weights) == set(layers)
    for name, it in weights.items():
        assert it.bits == 4 and it.fits() and it.scale is not None, name
        assert torch.equal(_documented_value(it), layers[name].quantized_weight()), name
    data = LabeledImages(folder, transform=model_transform(model), limit=2)
    images = torch.stack([data[i][0] for i in range(2)])
    outputs = _activation_outputs(model, images)
    acts = {k: v for k, v in back.items() if header["tensors"][k]["kind"] == "activation"}
    assert set(acts) == set(outputs)
    assert {it.layout for it in acts.values()} == {"twin_softmax", "twin_gelu", "uniform_signed"}
    for name, it in acts.items():
        assert it.fits() and torch.equal(_documented_value(it), outputs[name]), name

    # weights only, to a file path
    assert main(["export", "--quantized", str(saved), "--output", str(tmp_path / "w.safetensors")]) == 0
    stdout = capsys.readouterr().out
    assert "activation" not in stdout and stdout.count("\n") == 1
    assert all(header["tensors"][k]["kind"] == "weight" for k in read_integers(tmp_path / "w.safetensors"))
