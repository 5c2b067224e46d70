"""The logarithmic quantizers end to end: chosen by the config, built by the wrapper, calibrated,
saved and loaded bit for bit, exported as integer codes in their layouts.

Models are the 2-block ViT-Ti of ``helpers.tiny_vit`` with a reduced PTQ4ViT search; three configs
cover every log layout: log2 / log√2 / AdaLog for post-softmax values (unsigned) and post-GELU
values (shifted by GELU's minimum), per tensor and per head.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import safetensors
import torch
from torch import nn

from ptqlib import PtqlibError, calibrate, get_method, quantize_model
from ptqlib.core.quant import (GELU_SHIFT, AdaLogQuantizer, Log2Quantizer, LogQuantizer, LogSqrt2Quantizer,
                               TwinGeluQuantizer, TwinSoftmaxQuantizer, UniformQuantizer)
from ptqlib.engine.config import PTQConfig, choices, config_fields
from ptqlib.engine.wrap import quantizers
from ptqlib.io.checkpoints import (LAYOUTS, IntegerTensor, activation_integers, export_integers, load_quantized,
                                   read_header, read_integers, save_quantized, weight_integers)

from helpers import quantizer_outputs, random_images, tiny_vit

TINY = "vit_tiny_patch16_224"
CLASSES = {"log2": Log2Quantizer, "log_sqrt2": LogSqrt2Quantizer, "adalog": AdaLogQuantizer}
#: (post-softmax kind, post-GELU kind, matmul granularity): every log layout at least once
COMBOS = [("log2", "adalog", "tensor"), ("log_sqrt2", "log2", "head"), ("adalog", "log_sqrt2", "head")]


def _config(softmax: str, gelu: str, granularity: str = "tensor", bits: int = 4) -> PTQConfig:
    return get_method("ptq4vit", bits, bits, rounds=1, n=20, max_tokens=32, twin_softmax=False, twin_gelu=False,
                      softmax_quantizer=softmax, gelu_quantizer=gelu, matmul_granularity=granularity)


# ----------------------------------------------------------------------------- the config and the wrapper


def test_config_fields_default_to_the_twin_flags_and_refuse_contradictions() -> None:
    hints = dict((f.name, hint) for f, hint in config_fields())
    for name in ("softmax_quantizer", "gelu_quantizer"):
        assert choices(hints[name]) == ("uniform", "uniform_shifted", "twin", "log2", "log_sqrt2", "adalog")
        assert getattr(PTQConfig(), name) is None and getattr(get_method("ptq4vit"), name) is None
    PTQConfig(twin_softmax=True, softmax_quantizer="twin", twin_gelu=True, gelu_quantizer="twin")  # consistent
    with pytest.raises(ValueError, match="twin_softmax=True asks for the twin quantizer but softmax_quantizer='log2'"):
        PTQConfig(twin_softmax=True, softmax_quantizer="log2")
    with pytest.raises(ValueError, match="twin_gelu=True .* gelu_quantizer='uniform'"):
        PTQConfig(twin_gelu=True, gelu_quantizer="uniform")
    with pytest.raises(ValueError, match="softmax_quantizer must be one of"):
        PTQConfig(softmax_quantizer="log3")
    with pytest.raises(PtqlibError, match="set twin_softmax=False"):
        get_method("ptq4vit", softmax_quantizer="adalog")


def _kinds(model: nn.Module) -> tuple[type, type, type]:
    q = dict(quantizers(model))
    return (type(q["blocks.0.attn.matmul_av.a_quant"]), type(q["blocks.1.mlp.fc2.input_quant"]),
            type(q["blocks.0.mlp.fc1.input_quant"]))


def test_wrapper_builds_the_chosen_kinds() -> None:
    # the flags as before
    assert _kinds(quantize_model(tiny_vit(), get_method("ptq4vit"))) == (TwinSoftmaxQuantizer, TwinGeluQuantizer,
                                                                         UniformQuantizer)
    assert _kinds(quantize_model(tiny_vit(), get_method("baseptq")))[:2] == (UniformQuantizer, UniformQuantizer)
    for kind, cls in CLASSES.items():
        model = quantize_model(tiny_vit(), _config(kind, kind))
        soft, gelu, other = _kinds(model)
        assert (soft, gelu, other) == (cls, cls, UniformQuantizer)
        q = dict(quantizers(model))
        assert not q["blocks.0.attn.matmul_av.a_quant"].signed and q["blocks.0.mlp.fc2.input_quant"].signed
        assert q["blocks.0.mlp.fc2.input_quant"].shift == GELU_SHIFT and q["blocks.0.mlp.fc2.input_quant"].bits == 4
        assert type(q["blocks.0.attn.matmul_av.b_quant"]) is UniformQuantizer  # v stays uniform
    # explicit uniform honours softmax_unsigned; explicit twin equals the flags
    model = quantize_model(tiny_vit(), PTQConfig(softmax_quantizer="uniform", softmax_unsigned=False))
    assert dict(quantizers(model))["blocks.0.attn.matmul_av.a_quant"].signed
    assert _kinds(quantize_model(tiny_vit(), PTQConfig(softmax_quantizer="twin", gelu_quantizer="twin")))[:2] == (
        TwinSoftmaxQuantizer, TwinGeluQuantizer)


def _scales(config: PTQConfig) -> dict[str, dict[str, torch.Tensor]]:
    model = quantize_model(tiny_vit(), config)
    return calibrate(model, random_images(2), config, progress=False).scales


def _same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(a[k][p].dtype == b[k][p].dtype and torch.equal(a[k][p], b[k][p])
                                           for p in a[k]) for k in a)


def test_flags_and_named_kinds_calibrate_alike_bit_for_bit() -> None:
    flags = get_method("ptq4vit", 6, 6, rounds=1, n=20, max_tokens=32)
    named = flags.replace(twin_softmax=False, twin_gelu=False, softmax_quantizer="twin", gelu_quantizer="twin")
    assert _same(_scales(flags), _scales(named))
    base = get_method("baseptq", 6, 6, n=20, max_tokens=32)
    assert _same(_scales(base), _scales(base.replace(softmax_quantizer="uniform", gelu_quantizer="uniform")))


# ----------------------------------------------------------------------------- calibrate, save, load


@pytest.fixture(scope="module", params=COMBOS, ids=lambda c: "-".join(c))
def calibrated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    softmax, gelu, granularity = request.param
    config = _config(softmax, gelu, granularity)
    model = quantize_model(tiny_vit(), config)
    calibrate(model, random_images(2), config, progress=False)
    path = tmp_path_factory.mktemp("log") / f"{softmax}_{gelu}.safetensors"
    save_quantized(model, path, config, model_name=TINY, info={"combo": list(request.param)})
    return model, config, path


def test_calibration_sets_every_log_quantizer(calibrated) -> None:
    model, config, _ = calibrated
    heads = 3 if config.matmul_granularity == "head" else None
    for name, q in quantizers(model):
        if not isinstance(q, LogQuantizer):
            continue
        assert q.calibrated and q.enabled, name
        p = q.params()
        if isinstance(q, AdaLogQuantizer):  # the base comes from the candidate set
            assert set(p["q"].reshape(-1).tolist()) <= set(AdaLogQuantizer.BASES.tolist()), name
        if q.signed:  # post-GELU: scale searched around max + 0.17
            assert p["scale"].shape == () and float(p["scale"]) > GELU_SHIFT, name
        elif heads:
            assert p["scale"].shape == (1, heads, 1, 1), name
        if not q.signed and not q.search_scale:
            assert torch.all(p["scale"] == 1.0), name  # post-softmax log2 / AdaLog: s stays 1


def test_save_load_reproduces_outputs_and_parameters_bit_for_bit(calibrated) -> None:
    model, config, path = calibrated
    header = read_header(path)
    kinds = {e["kind"] for e in header["quantizers"].values()}
    want = {type(q).__name__ for _, q in quantizers(model) if isinstance(q, LogQuantizer)}
    assert len(want) == 2 and want <= kinds
    assert header["config"]["softmax_quantizer"] == config.softmax_quantizer
    assert header["quantizers"]["blocks.0.mlp.fc2.input_quant"]["signed"] is True
    loaded = load_quantized(path, model=tiny_vit())
    x = random_images(2, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    original = dict(quantizers(model))
    for name, q in quantizers(loaded):
        p = original[name]
        assert (type(q), q.bits, q.enabled, getattr(q, "signed", None)) == (
            type(p), p.bits, p.enabled, getattr(p, "signed", None)), name
        for (bname, buf), (_, ref) in zip(q.named_buffers(), p.named_buffers()):
            assert buf.dtype == ref.dtype and torch.equal(buf, ref), (name, bname)


def test_a_tampered_base_is_refused(calibrated, tmp_path: Path) -> None:
    _, _, path = calibrated
    with safetensors.safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    bases = sorted(k for k in tensors if k.endswith("_quant.q"))
    if not bases:
        pytest.skip("no AdaLog quantizer in this file")
    tensors[bases[0]] = torch.full_like(tensors[bases[0]], 0.3)  # not a multiple of 1/4
    safetensors.torch.save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(PtqlibError, match="invalid parameters .*multiple of 1/4"):
        load_quantized(tmp_path / "bad.safetensors", model=tiny_vit())


# ----------------------------------------------------------------------------- integer export


def _documented_log_value(it: IntegerTensor) -> torch.Tensor:
    """Decode a log layout from its text, in float64 and independently of ``quant.py``:
    ``scale · 2^(-c/q)`` (q = 1 for log2, 2 for log√2), 0 for the top code, minus the shift."""
    q = {"log2": 1.0, "log_sqrt2": 2.0}.get(it.layout.removesuffix("_shifted"))
    q = it.q.double() if q is None else q
    c = it.codes.double()
    value = torch.where(c == 2**it.bits - 1, 0.0, it.scale.double() * torch.exp2(-c / q))
    return value - (GELU_SHIFT if it.layout.endswith("_shifted") else 0.0)


def test_export_round_trip_in_the_log_layouts(calibrated, tmp_path: Path) -> None:
    model, config, _ = calibrated
    images = random_images(1, seed=4)
    header = export_integers(model, tmp_path / "ints.safetensors", images, config=config)
    assert header["layouts"] == LAYOUTS and {"log2", "log_sqrt2_shifted", "adalog"} <= set(LAYOUTS)
    back = read_integers(tmp_path / "ints.safetensors")
    fresh = {**weight_integers(model), **activation_integers(model, images)}
    outputs = quantizer_outputs(model, images)
    log_layouts = set()
    for name, it in back.items():
        assert it.layout == fresh[name].layout and torch.equal(it.codes, fresh[name].codes), name
        assert it.fits(), name
        if not it.layout.startswith(("log", "adalog")):
            continue
        log_layouts.add(it.layout)
        assert torch.equal(it.dequantize(), outputs[name]), name  # the fake-quantized activation, exactly
        assert torch.allclose(_documented_log_value(it), outputs[name].double(), rtol=3e-7, atol=1e-7), name
        assert (it.q is not None) == it.layout.startswith("adalog") and it.m is None, name
    assert log_layouts == {config.softmax_quantizer, f"{config.gelu_quantizer}_shifted"}
    with safetensors.safe_open(str(tmp_path / "ints.safetensors"), framework="pt") as f:
        assert f.get_slice("blocks.0.attn.matmul_av.a_quant.codes").get_dtype() == "I8"  # 4-bit codes 0..15
        assert f.get_slice("blocks.0.mlp.fc2.input_quant.codes").get_dtype() == "I8"
