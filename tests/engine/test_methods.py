"""The named presets (``ptqlib.engine.methods``): RepQ-ViT's and AdaLog's quantizers on PTQ4ViT's
search, as the module's table documents them, and the registry that lists them."""
from __future__ import annotations

import pytest

import ptqlib.engine.methods as methods
from ptqlib import PTQConfig, PtqlibError, get_method, load_model, quantize_model
from ptqlib.core.quant import AdaLogQuantizer, LogSqrt2Quantizer, ShiftedUniformQuantizer, UniformQuantizer
from ptqlib.engine.wrap import quantizers

#: PTQ4ViT's Hessian-guided search, written out: what repq and adalog must share with ptq4vit.
SEARCH = {"metric": "hessian", "grad_loss": "pseudo_label_ce", "grad_norm": "image", "row_select": "fisher",
          "alpha": 0.01, "beta": 1.2, "n": 100, "rounds": 3}

QUANTIZERS = {
    "repq": {"reparam": True, "softmax_quantizer": "log_sqrt2", "gelu_quantizer": "uniform_shifted",
             "weight_granularity": "channel", "matmul_granularity": "tensor", "twin_softmax": False,
             "twin_gelu": False, "weight_correction": "none"},
    "adalog": {"reparam": True, "softmax_quantizer": "adalog", "gelu_quantizer": "adalog",
               "weight_granularity": "channel", "matmul_granularity": "tensor", "twin_softmax": False,
               "twin_gelu": False, "weight_correction": "none"},
}


def _fields(config: PTQConfig, names) -> dict[str, object]:
    return {name: getattr(config, name) for name in names}


def test_registry_lists_every_preset_in_order() -> None:
    assert list(methods.METHODS) == ["minmax", "baseptq", "ptq4vit", "repq", "adalog", "combined"]
    assert methods.METHODS["repq"] is methods.repq and methods.METHODS["adalog"] is methods.adalog
    assert {"repq", "adalog"} <= set(methods.__all__)
    with pytest.raises(PtqlibError, match="unknown method 'repqvit'; choose one of: minmax, baseptq, ptq4vit, repq, "
                                          "adalog"):
        get_method("repqvit")
    for name in methods.METHODS:  # the module's table documents each
        assert f"\n{name} " in methods.__doc__, name


@pytest.mark.parametrize("name", ["repq", "adalog"])
def test_presets_have_the_documented_fields(name: str) -> None:
    config = get_method(name, 4, 6)
    assert isinstance(config, PTQConfig) and config.method == name
    assert (config.w_bits, config.a_bits) == (4, 6)
    assert _fields(config, QUANTIZERS[name]) == QUANTIZERS[name]
    assert _fields(config, SEARCH) == SEARCH
    assert _fields(config, SEARCH) == _fields(get_method("ptq4vit"), SEARCH)  # the same search as ptq4vit
    assert get_method(name) == methods.METHODS[name]()  # 8/8 by default
    assert (get_method(name).w_bits, get_method(name).a_bits) == (8, 8)


def test_ptq4vit_is_unchanged_by_the_shared_search() -> None:
    config = get_method("ptq4vit")
    assert _fields(config, SEARCH) == SEARCH
    assert (config.twin_softmax, config.twin_gelu, config.matmul_granularity, config.reparam,
            config.weight_granularity) == (True, True, "tensor", False, "tensor")


@pytest.mark.parametrize("name", ["repq", "adalog"])
def test_overrides_apply_and_are_validated(name: str) -> None:
    config = get_method(name, weight_correction="ridge", ridge_rho=0.5, rounds=1, reparam=False)
    assert (config.weight_correction, config.ridge_rho, config.rounds, config.reparam) == ("ridge", 0.5, 1, False)
    assert config.softmax_quantizer == QUANTIZERS[name]["softmax_quantizer"]  # the rest stays
    with pytest.raises(PtqlibError, match=f"invalid settings for method '{name}': .*rounds >= 1"):
        get_method(name, weight_correction="ridge", rounds=0)
    with pytest.raises(PtqlibError, match=f"invalid settings for method '{name}': twin_softmax=True"):
        get_method(name, twin_softmax=True)  # contradicts the preset's log post-softmax quantizer
    with pytest.raises(PtqlibError, match=f"invalid settings for method '{name}'"):
        get_method(name, no_such_field=1)


@pytest.mark.parametrize("name, softmax, gelu", [("repq", LogSqrt2Quantizer, ShiftedUniformQuantizer),
                                                ("adalog", AdaLogQuantizer, AdaLogQuantizer)])
def test_presets_wrap_the_documented_quantizers(name: str, softmax: type, gelu: type) -> None:
    config = get_method(name, 4, 4)
    model = quantize_model(load_model("test_vit", random_init=True, seed=0), config)
    q = dict(quantizers(model))
    assert type(q["blocks.0.attn.matmul_av.a_quant"]) is softmax
    assert type(q["blocks.3.mlp.fc2.input_quant"]) is gelu
    assert type(q["blocks.0.attn.qkv.input_quant"]) is UniformQuantizer  # post-LayerNorm: one step after the fold
    assert model.get_submodule("blocks.0.mlp.fc1").weight_granularity == "channel"
