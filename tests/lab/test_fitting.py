"""ptqlib.lab.fitting: uniform and twin-uniform quantizers fitted to values, and their tables."""
from __future__ import annotations

import pytest
import torch

from ptqlib.errors import PtqlibError
from ptqlib.lab import fitting


def test_fitted_quantizers_fake_quantize_by_hand():
    # uniform, 4 bits signed, step 0.25: codes -8..7, so values -2 .. 1.75
    # -1 -> -4; -0.2 -> -0.8 -> -1; 0.26 -> 1.04 -> 1; 0.30 -> 1.2 -> 1; 1 -> 4; 3 -> 12 -> clamped to 7
    fq = fitting.FittedQuantizer("uniform", 4, scale=0.25, signed=True)
    assert fq.fake(torch.tensor([-1.0, -0.2, 0.26, 0.30, 1.0, 3.0])).tolist() == [-1.0, -0.25, 0.25, 0.25, 1.0, 1.75]
    # twin softmax, 4 bits, m=2: coarse step 1/8 (codes 0..7), fine step 1/32 below 8/32 = 0.25
    # 0.10 -> 3.2/32 -> 3/32; 0.126 -> 4.03/32 -> 4/32; 0.30 -> 2.4/8 -> 2/8; 0.97 -> 7.76/8 -> 8 -> clamped to 7/8
    fq = fitting.FittedQuantizer("twin-softmax", 4, m=2)
    assert fq.fake(torch.tensor([0.0, 0.10, 0.126, 0.30, 0.97, 1.0])).tolist() == [0.0, 0.09375, 0.125, 0.25, 0.875, 0.875]
    # twin GELU, 4 bits, positive step 0.5, m=3: negative step 0.5/8 = 1/16; magnitude codes 0..7
    # -1 -> -16/16 -> clamped to -7/16; -0.1 -> -1.6/16 -> -2/16; 1.3 -> 2.6 -> 3 * 0.5; 9 -> 18 -> clamped to 7 * 0.5
    fq = fitting.FittedQuantizer("twin-gelu", 4, scale=0.5, m=3)
    assert fq.fake(torch.tensor([-1.0, -0.1, 0.0, 1.3, 9.0])).tolist() == [-0.4375, -0.125, 0.0, 1.5, 3.5]


def test_levels():
    assert fitting.FittedQuantizer("uniform", 4, scale=0.1, signed=False).levels().numel() == 16
    assert fitting.FittedQuantizer("uniform", 4, scale=0.1, signed=True).levels().numel() == 16
    tw = fitting.FittedQuantizer("twin-softmax", 4, m=2)  # fine i/32 and coarse i/8, i < 8: 0, 1/8 shared
    assert tw.levels().numel() == 8 + 8 - 2
    assert set(tw.level_groups()) == {"fine range R1", "coarse range R2"}
    g = fitting.FittedQuantizer("twin-gelu", 4, scale=0.5, m=3)
    assert g.levels().numel() == 15 and float(g.levels().min()) == -7 / 16
    assert g.steps() == {"positive": 0.5, "negative": 0.0625}


def test_fit_uniform_is_the_grid_minimum():
    v = torch.randn(5000, generator=torch.Generator().manual_seed(0)).abs() ** 3
    best = fitting.fit_uniform(v, 4)
    assert not best.signed
    step0 = float(v.max()) / 15
    brute = min(fitting.FittedQuantizer("uniform", 4, scale=float(m) * step0, signed=False).mse(v) for m in fitting.FIT_GRID)
    assert best.mse(v) == pytest.approx(brute, rel=1e-6)
    assert best.mse(v) <= fitting.fit_uniform(v, 4, search=False).mse(v)


def test_fit_twin_softmax_searches_m():
    v = torch.softmax(3 * torch.randn(200, 50, generator=torch.Generator().manual_seed(0)), -1).reshape(-1)
    best = fitting.fit_twin_softmax(v, 6)
    errs = [fitting.fit_twin_softmax(v, 6, m=m).mse(v) for m in range(6)]
    assert 0 <= best.m <= 5 and best.mse(v) == pytest.approx(min(errs))


def test_fit_twin_gelu_matches_a_brute_force_search():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 1.5
    v = torch.nn.functional.gelu(x)
    best = fitting.fit_twin_gelu(v, 4)
    step0 = float(v.max()) / 7
    brute = min(fitting.FittedQuantizer("twin-gelu", 4, scale=float(s) * step0, m=m).mse(v)
                for s in fitting.FIT_GRID[::3] for m in fitting.TWIN_GELU_SPLITS)
    assert best.mse(v) <= brute * 1.0001
    assert best.mse(v) < fitting.fit_uniform(v, 4).mse(v)  # the twin quantizer wins on GELU values


def test_fit_quantizer_falls_back_to_uniform_without_a_twin_kind():
    v = torch.randn(1000)
    assert fitting.fit_quantizer(v, "twin-uniform", 4, None).kind == "uniform"
    with pytest.raises(PtqlibError):
        fitting.fit_quantizer(v, "log2", 4, "softmax")


def test_quantizer_error_table_and_split_search(acts2):
    acts = acts2
    t = fitting.quantizer_error_table(acts, (4, 8))
    assert len(t) == 2 * 2 * len(acts.blocks)
    assert (t["uniform"] <= t["uniform_minmax"] * (1 + 1e-6)).all()
    assert torch.allclose(torch.tensor(t["twin_over_uniform"].values), torch.tensor((t["twin"] / t["uniform"]).values))
    s = fitting.split_search(acts.values("post-softmax", 0), 4, "softmax")
    assert list(s["m"]) == [0, 1, 2, 3] and {"fine", "coarse"} <= set(s.columns)
    g = fitting.split_search(acts.values("post-GELU", 0), 4, "gelu")
    assert list(g["m"]) == list(fitting.TWIN_GELU_SPLITS)
    z = fitting.zero_rounding_table(acts, 4)
    assert list(z["block"]) == acts.blocks and z[["uniform: values -> 0", "twin: values -> 0"]].stack().between(0, 1).all()
    # block 0's uniform columns, from the fitted step by plain arithmetic: 4-bit unsigned codes 0..15,
    # and a positive value rounds to 0 when it is below half a step
    v = acts.values("post-softmax", 0).double()
    step = fitting.fit_quantizer(v.float(), "uniform", 4, "softmax").scale
    by_hand = (v / step).round().clamp(0, 15) * step
    assert z.loc[0, "uniform MSE"] == pytest.approx(float((by_hand - v).square().mean()), rel=1e-5)
    positive = v[v != 0]
    assert z.loc[0, "uniform: values -> 0"] == pytest.approx(float((positive < step / 2).double().mean()))


def test_bit_layout_worked_example():
    t = fitting.bit_layout([0.10, 0.30], fitting.FittedQuantizer("twin-softmax", 4, m=2))
    assert t["code"].tolist() == [3, 10] and t["bits"].tolist() == ["0011", "1010"]
    assert t["range bit"].tolist() == [0, 1] and t["dequantized"].tolist() == [0.09375, 0.25]
    u = fitting.bit_layout([0.26, -1.0], fitting.FittedQuantizer("uniform", 4, scale=0.25, signed=True))
    assert u["code"].tolist() == [1, -4] and u["bits"].tolist() == ["0001", "1100"]



# ----------------------------------------------------------------------------- fit_kind: any quantizer kind


def test_fit_kind_finds_the_base_that_puts_a_level_on_every_value():
    """Values on a geometric grid of ratio 2^(-1/q): AdaLog picks that q, with no error."""
    for q in (1.0, 1.5, 3.0):
        v = torch.tensor([2.0 ** (-c / q) for c in range(7)])
        fq = fitting.fit_kind(v, "adalog", 3, signed=False)
        assert fq.q == q and fq.scale == 1.0 and fq.mse(v) == pytest.approx(0.0, abs=1e-12)


def test_fit_kind_searches_what_calibration_searches():
    v = torch.softmax(3 * torch.randn(200, 50, generator=torch.Generator().manual_seed(0)), -1).reshape(-1)
    log2 = fitting.fit_kind(v, "log2", 4, signed=False)
    assert log2.scale == 1.0  # post-softmax log2 keeps its largest level at 1: nothing to search
    sqrt2 = fitting.fit_kind(v, "log-sqrt2", 4, signed=False)
    start = float(v.max())  # log√2 searches its largest level on the grid around the largest value
    brute = min(fitting.FittedQuantizer("log-sqrt2", 4, scale=float(m) * start, signed=False).mse(v)
                for m in fitting.FIT_GRID)
    assert sqrt2.mse(v) == pytest.approx(brute, rel=1e-6)
    ada = fitting.fit_kind(v, "adalog", 4, signed=False)  # the bases include log2 (q = 1) and log√2 (q = 2)
    assert ada.mse(v) <= min(log2.mse(v), fitting.FittedQuantizer("log-sqrt2", 4, scale=1.0, signed=False).mse(v))
    # the kinds with their own fitters give those fitters' answers
    assert fitting.fit_kind(v, "uniform", 4, signed=False) == fitting.fit_uniform(v, 4, signed=False)
    assert fitting.fit_kind(v, "twin-softmax", 4) == fitting.fit_twin_softmax(v, 4)


def test_fit_kind_on_post_gelu_values_shifts_and_searches_scale_and_base():
    v = torch.nn.functional.gelu(torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 1.5)
    ada = fitting.fit_kind(v, "adalog", 4)
    assert ada.signed  # negatives: shifted by GELU's minimum
    start = float(v.max()) + 0.16997124254703522
    brute = min(fitting.FittedQuantizer("adalog", 4, scale=float(m) * start, q=q, signed=True).mse(v)
                for m in fitting.FIT_GRID[::4] for q in (1.0, 2.0, 3.0))
    assert ada.mse(v) <= brute * 1.0001
    shifted = fitting.fit_kind(v, "uniform-shifted", 4)
    assert float(shifted.levels().min()) == pytest.approx(-0.16997, abs=1e-4)  # the zero point sits at GELU's minimum
    assert shifted.mse(v) < fitting.fit_uniform(v, 4).mse(v)  # no codes wasted below -0.17
    with pytest.raises(PtqlibError, match="log2"):
        fitting.fit_kind(v, "log3", 4)


def test_kind_error_table(acts2):
    t = fitting.kind_error_table(acts2, 4)
    per_block = len(fitting.KIND_CHOICES["softmax"]) + len(fitting.KIND_CHOICES["gelu"])
    assert len(t) == per_block * len(acts2.blocks)
    twins = t[t["quantizer"].str.startswith("twin")]
    assert (twins["mse / twin"] == 1.0).all()
    row = t[(t["values"] == "post-softmax") & (t["block"] == 0) & (t["quantizer"] == "adalog")].iloc[0]
    fq = fitting.fit_kind(acts2.values("post-softmax", 0), "adalog", 4, signed=False)
    assert row["mse"] == pytest.approx(fq.mse(acts2.values("post-softmax", 0))) and row["q"] == fq.q
    assert t.loc[t["quantizer"] == "log2", "m"].isna().all() and t.loc[t["quantizer"] == "twin-softmax", "m"].notna().all()


def test_fits_from_table_gives_back_the_fitted_quantizers(acts2):
    t = fitting.kind_error_table(acts2, 4)
    fits = fitting.fits_from_table(t)
    assert set(fits) == {(k, b) for k in ("post-softmax", "post-GELU") for b in acts2.blocks}
    for row in t.to_dict("records"):
        fq = fits[(row["values"], row["block"])][row["quantizer"]]
        assert fq.mse(acts2.values(row["values"], row["block"])) == pytest.approx(row["mse"], rel=1e-6)
    assert fits[("post-GELU", 0)]["adalog"].signed and not fits[("post-softmax", 0)]["adalog"].signed
