"""Tests for the logarithmic quantizers of ptqlib.core.quant: log2, log√2 and AdaLog.

Each kind has three faces that must agree bit for bit (``codes`` -> ``dequantize`` == ``fake``),
on random values and on the edges: 0, -0, 1, the scale, values above it, tiny and subnormal values,
negatives (unsigned: they mean 0) and, for the shifted post-GELU kinds, GELU's minimum and below.
Expected values are worked by hand in the comments: ``c = round(-q·log2((x + shift)/s))``
clamped to ``[0, 2^k - 1]``, value ``s·2^(-c/q) - shift``, the top code ``2^k - 1`` meaning 0.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ptqlib.core.quant import (
    ADALOG_Q,
    GELU_SHIFT,
    QUANTIZER_KINDS,
    AdaLogQuantizer,
    Log2Quantizer,
    LogQuantizer,
    LogSqrt2Quantizer,
    adalog_codes,
    adalog_dequantize,
    adalog_fake,
    log2_codes,
    log2_dequantize,
    log2_fake,
    log_sqrt2_codes,
    log_sqrt2_dequantize,
    log_sqrt2_fake,
    quantizer_for_layout,
)

PROPERTY = settings(max_examples=60, deadline=None)
INV_SQRT2 = torch.tensor(2.0**-0.5, dtype=torch.float32)  # float32(1/√2) = 0.70710677


def t(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def i32(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


def pow2(j: int) -> torch.Tensor:
    return t(2.0**-j)


# ----------------------------------------------------------------------------- hand values


def test_log2_4bit_hand_values():
    # k = 4: codes 0..15, 15 means 0; s = 0.5.
    x = t([0.5, 0.2, 0.06, 0.0003, 0.00002, 0.7, -0.1, 0.0])
    # 0.5/0.5 = 1: -log2 1 = 0 -> 0              0.2/0.5 = 0.4: 1.32 -> 1
    # 0.06/0.5 = 0.12: 3.06 -> 3                 0.0003/0.5 = 6e-4: 10.70 -> 11
    # 0.00002/0.5 = 4e-5: 14.61 -> 15 (zero)     0.7/0.5 = 1.4: -0.49 -> clamp 0
    # -0.1 and 0: -log2(0) = inf -> 15 (zero)
    codes = log2_codes(x, 4, t(0.5))
    assert codes.dtype == torch.int32 and torch.equal(codes, i32([0, 1, 3, 11, 15, 0, 15, 15]))
    # values 0.5·2^-c: 0.5, 0.25, 0.0625, 0.5/2048 = 2.44140625e-4 (exact), 0, 0.5, 0, 0
    expected = t([0.5, 0.25, 0.0625, 2.44140625e-4, 0.0, 0.5, 0.0, 0.0])
    assert torch.equal(log2_fake(x, 4, t(0.5)), expected)
    assert torch.equal(log2_dequantize(codes, 4, t(0.5)), expected)


def test_log2_shifted_4bit_hand_values():
    # post-GELU: x + 0.16997 is quantized, then the shift is taken off again; s = 2.
    x = t([1.0, -0.1, 0.0, 2.5, -GELU_SHIFT, -0.5])
    # (1 + 0.17)/2 = 0.585: -log2 = 0.77 -> 1      (-0.1 + 0.17)/2 = 0.035: 4.84 -> 5
    # 0.17/2 = 0.085: 3.56 -> 4                      (2.5 + 0.17)/2 = 1.33: -0.42 -> 0
    # -0.17 + 0.17 = 0 and -0.5 + 0.17 < 0: the top code 15
    codes = log2_codes(x, 4, t(2.0), shift=GELU_SHIFT)
    assert torch.equal(codes, i32([1, 5, 4, 0, 15, 15]))
    # values 2·2^-c - 0.16997: 1 - 0.17, 1/16 - 0.17, 1/8 - 0.17, 2 - 0.17, then -0.17 twice
    expected = t([1.0, 0.0625, 0.125, 2.0, 0.0, 0.0]) - GELU_SHIFT
    assert torch.equal(log2_fake(x, 4, t(2.0), shift=GELU_SHIFT), expected)
    assert torch.equal(log2_dequantize(codes, 4, t(2.0), shift=GELU_SHIFT), expected)
    assert float(expected[2]) == pytest.approx(-0.045, abs=1e-3)  # 0 itself is not a level when shifted


def test_log_sqrt2_4bit_hand_values_and_integer_form():
    # s = 1: c = round(-2·log2 x); j = c >> 1 is a shift, odd codes take a factor 1/√2.
    x = t([0.75, 0.5, 0.4, 0.01, 0.003, 1.0])
    # 0.75: 0.83 -> 1 (j 0, odd)    0.5: 2.0 -> 2 (j 1, even)    0.4: 2.64 -> 3 (j 1, odd)
    # 0.01: 13.29 -> 13 (j 6, odd)  0.003: 16.76 -> 15 (zero)     1.0: 0 -> 0
    codes = log_sqrt2_codes(x, 4)
    assert torch.equal(codes, i32([1, 2, 3, 13, 15, 0]))
    expected = torch.stack([INV_SQRT2, pow2(1), pow2(1) * INV_SQRT2, pow2(6) * INV_SQRT2, t(0.0), t(1.0)])
    assert torch.equal(log_sqrt2_fake(x, 4), expected)
    assert torch.equal(log_sqrt2_dequantize(codes, 4), expected)
    # the integer form equals s·2^(-c/2) to float32 rounding: 2^-6.5 = 0.011048543...
    assert float(expected[3]) == pytest.approx(2.0**-6.5, rel=1e-7)


def test_adalog_4bit_hand_values_and_table():
    # q = 0.75 (base 2^(4/3)), a = 4q = 3: value 2^-floor(4c/3) · 2^(-(4c mod 3)/3).
    x = t([0.5, 0.1, 0.001, 0.0001, 2.0])
    # -0.75·log2(0.5) = 0.75 -> 1: 4 = 1·3 + 1 -> 2^-1 · 2^(-1/3)
    # -0.75·log2(0.1) = 2.49 -> 2: 8 = 2·3 + 2 -> 2^-2 · 2^(-2/3)
    # -0.75·log2(0.001) = 7.47 -> 7: 28 = 9·3 + 1 -> 2^-9 · 2^(-1/3)
    # -0.75·log2(0.0001) = 9.97 -> 10: 40 = 13·3 + 1 -> 2^-13 · 2^(-1/3)
    # 2.0 > s: -0.75 -> clamp 0 -> 1
    codes = adalog_codes(x, 4, t(1.0), t(0.75))
    assert torch.equal(codes, i32([1, 2, 7, 10, 0]))
    cube = t(2.0 ** (-1 / 3)), t(2.0 ** (-2 / 3))
    expected = torch.stack([pow2(1) * cube[0], pow2(2) * cube[1], pow2(9) * cube[0], pow2(13) * cube[0], t(1.0)])
    assert torch.equal(adalog_fake(x, 4, t(1.0), t(0.75)), expected)
    assert torch.equal(adalog_dequantize(codes, 4, t(1.0), t(0.75)), expected)
    # and it is 2^(-4c/3) to float32 rounding
    reference = torch.tensor([2.0 ** (-4 * c / 3) for c in (1, 2, 7, 10, 0)], dtype=torch.float64)
    assert torch.allclose(expected.double(), reference, rtol=2e-7, atol=0)


def test_fixed_bases_are_adalog_special_cases_bit_for_bit():
    # q = 1 is log2 and q = 2 is log√2: same codes and the same float32 values
    codes = torch.arange(0, 256, dtype=torch.int32)
    for shift in (0.0, GELU_SHIFT):
        for s in (t(1.0), t(0.37)):
            assert torch.equal(adalog_dequantize(codes, 8, s, 1.0, shift=shift),
                               log2_dequantize(codes, 8, s, shift=shift))
            assert torch.equal(adalog_dequantize(codes, 8, s, 2.0, shift=shift),
                               log_sqrt2_dequantize(codes, 8, s, shift=shift))
    x = torch.rand(500, generator=torch.Generator().manual_seed(0)) ** 6
    assert torch.equal(adalog_codes(x, 6, 1.0, 1.0), log2_codes(x, 6))
    assert torch.equal(adalog_codes(x, 6, 1.0, 2.0), log_sqrt2_codes(x, 6))


def test_log_sqrt2_integer_form_against_float64_power():
    # every 8-bit code whose value is a normal float32 (c <= 250): s · 2^-(c>>1) · (1/√2 if odd)
    # == s · 2^(-c/2) within the two float32 roundings (of 1/√2 and of the product)
    codes = torch.arange(0, 251, dtype=torch.int32)
    got = log_sqrt2_dequantize(codes, 8, t(0.8)).double()
    want = float(t(0.8)) * torch.exp2(-codes.double() / 2)
    assert torch.allclose(got, want, rtol=1.2e-7, atol=0)
    assert torch.equal(got[::2], want[::2])  # even codes: a power of two times s, exactly
    assert float(log_sqrt2_dequantize(i32([255]), 8, t(0.8))) == 0.0  # the top code is 0


def test_levels_are_fixed_points():
    # every level is reproduced exactly and keeps its code (unsigned; q over the whole candidate set)
    for q in ADALOG_Q:
        codes = torch.arange(0, 2**6 - 1, dtype=torch.int32)
        levels = adalog_dequantize(codes, 6, t(0.75), q)
        assert torch.equal(adalog_codes(levels, 6, t(0.75), q), codes), q
        assert torch.equal(adalog_fake(levels, 6, t(0.75), q), levels), q


def test_invalid_base_raises():
    for q in (0.0, 0.3, -1.0, 16.25, float("nan")):
        with pytest.raises(ValueError, match="multiple of 1/4"):
            adalog_fake(t([0.5]), 4, 1.0, q)


# ----------------------------------------------------------------------------- three faces, edges


def _cases() -> list[LogQuantizer]:
    out: list[LogQuantizer] = []
    for signed in (False, True):
        out += [Log2Quantizer(4, signed=signed).set(scale=t(0.8)),
                LogSqrt2Quantizer(6, signed=signed).set(scale=t(1.0)),
                AdaLogQuantizer(5, signed=signed).set(scale=t(1.3), q=t(1.75)),
                AdaLogQuantizer(3, signed=signed).set(scale=t(0.5), q=t(0.5))]
    return out


EDGES = [0.0, -0.0, 1.0, 0.8, 1.3, 0.5, 5.0, 1e3, 1e-3, 1e-12, 1e-30, 1e-40, 1e-45, -1e-45, -1e-3, -0.1,
         -GELU_SHIFT, -0.16997, -0.17, -0.5, -7.0]


@pytest.mark.parametrize("q", _cases(), ids=lambda q: f"{q.layout}-{q.bits}bit")
def test_three_faces_agree_on_edges_and_random_values(q: LogQuantizer):
    gen = torch.Generator().manual_seed(q.bits)
    x = torch.cat([t(EDGES), torch.rand(400, generator=gen) ** 8 * 2, torch.randn(200, generator=gen)])
    codes = q.codes(x)
    assert codes.dtype == torch.int32 and int(codes.min()) >= 0 and int(codes.max()) <= 2**q.bits - 1
    fake = q.fake(x)
    assert torch.equal(q.dequantize(codes), fake)
    assert torch.equal(q.fake_with(x, q.params()), fake)
    assert torch.equal(q(x), fake) and q.enabled
    # the top code means 0 (minus the shift): 0 and everything at or below -shift
    top = 2**q.bits - 1
    low = x + q.shift <= 0
    assert torch.all(codes[low] == top) and torch.all(fake[low] == t(0.0) - q.shift)
    # at or above the scale: code 0, the largest level s - shift
    high = x + q.shift >= float(q.scale)
    assert torch.all(codes[high] == 0) and torch.all(fake[high] == q.scale - q.shift)
    # the layout alone rebuilds an equal quantizer (what integer export relies on)
    back = quantizer_for_layout(q.layout, q.bits, q.params())
    assert type(back) is type(q) and back.signed == q.signed and torch.equal(back.dequantize(codes), fake)


def test_unsigned_negatives_zero_and_subnormals():
    q = Log2Quantizer(8).set(scale=t(1.0))
    x = t([-1.0, -1e-45, 0.0, 1e-45, 2.0**-126, 2.0**-140])
    # negatives and 0 take the top code 255 (zero); 1e-45 is float32's smallest subnormal 2^-149:
    # code 149, a level; 2^-126 (smallest normal) -> 126; 2^-140 -> 140
    assert q.codes(x).tolist() == [255, 255, 255, 149, 126, 140]
    v = q.fake(x)
    assert v.tolist() == [0.0, 0.0, 0.0, 2.0**-149, 2.0**-126, 2.0**-140]
    assert torch.equal(q.dequantize(q.codes(x)), v)
    # codes 150..254 are levels below float32's range: they dequantize to 0 on every face
    assert q.dequantize(torch.arange(150, 256, dtype=torch.int32)).eq(0).all()


# ----------------------------------------------------------------------------- broadcasting


def test_per_head_parameters_and_stacked_candidates_match_one_by_one():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 4, 5, generator=gen) ** 4  # (B, H, N, N) post-softmax-like
    scale = t([1.0, 0.5, 0.25]).view(1, 3, 1, 1)
    q = t([1.0, 1.75, 6.0]).view(1, 3, 1, 1)
    per_head = adalog_fake(x, 4, scale, q)
    for h in range(3):
        assert torch.equal(per_head[:, h], adalog_fake(x[:, h], 4, scale[0, h], float(q[0, h])))
    module = AdaLogQuantizer(4).set(scale=scale, q=q)
    assert torch.equal(module.dequantize(module.codes(x)), per_head) and torch.equal(module(x), per_head)
    # candidates stacked in front (K, 1, C, 1, 1), as calibration scores them
    cands = t(ADALOG_Q).view(-1, 1, 1, 1, 1)
    stacked = adalog_fake(x.unsqueeze(0), 4, t(1.0), cands)
    for k, value in enumerate(ADALOG_Q):
        assert torch.equal(stacked[k], adalog_fake(x, 4, t(1.0), value)), value
    scales = t([0.3, 0.6, 1.2]).view(-1, 1, 1, 1, 1)
    stacked = log_sqrt2_fake(x.unsqueeze(0), 4, scales, shift=GELU_SHIFT)
    for k in range(3):
        assert torch.equal(stacked[k], log_sqrt2_fake(x, 4, scales[k, 0, 0, 0, 0], shift=GELU_SHIFT))


# ----------------------------------------------------------------------------- properties

_KINDS = st.sampled_from(["log2", "log_sqrt2", "adalog"])


def _pure(kind: str, q: float):
    if kind == "log2":
        return 1.0, log2_codes, log2_dequantize, log2_fake
    if kind == "log_sqrt2":
        return 2.0, log_sqrt2_codes, log_sqrt2_dequantize, log_sqrt2_fake

    def codes(x, bits, s, *, shift):
        return adalog_codes(x, bits, s, q, shift=shift)

    def deq(c, bits, s, *, shift):
        return adalog_dequantize(c, bits, s, q, shift=shift)

    def fake(x, bits, s, *, shift):
        return adalog_fake(x, bits, s, q, shift=shift)
    return q, codes, deq, fake


@PROPERTY
@given(
    kind=_KINDS,
    q=st.sampled_from(ADALOG_Q),
    signed=st.booleans(),
    bits=st.integers(2, 10),
    scale=st.floats(2.0**-8, 8.0, width=32),
    unit=arrays(np.float32, st.integers(1, 48), elements=st.floats(0.0, 1.25, width=32)),
    raw=arrays(np.float32, st.integers(0, 8), elements=st.floats(-1e3, 1e3, width=32)),
)
def test_log_properties(kind, q, signed, bits, scale, unit, raw):
    q, codes_fn, deq_fn, fake_fn = _pure(kind, q)
    shift = GELU_SHIFT if signed else 0.0
    s = t(scale)
    top = 2**bits - 1
    octaves = min((top - 1) / q, 100.0)  # down to the smallest nonzero level, within float32's normal range
    smallest = float(s) * 2.0**-octaves
    # values spread log-uniformly over [smallest/2, s] (shifted), plus arbitrary ones
    y = float(s) * torch.exp2(-(1.25 - torch.from_numpy(unit).double()) / 1.25 * (octaves + 1))
    x = torch.cat([(y - shift).float(), torch.from_numpy(raw), t([0.0, -shift, float(s) - shift])])
    codes = codes_fn(x, bits, s, shift=shift)
    fake = fake_fn(x, bits, s, shift=shift)
    assert int(codes.min()) >= 0 and int(codes.max()) <= top
    assert torch.equal(deq_fn(codes, bits, s, shift=shift), fake)
    # inside [smallest, s] the value is within half a code of x, in the log domain: |log2(x̂/x)| <= 1/(2q)
    xs = x.double() + shift
    vs = fake.double() + shift
    inside = (xs >= smallest * (1 + 1e-6)) & (xs <= float(s)) & (vs > 0)
    if signed:  # the shifted value is rounded in float32: allow its rounding error relative to the shift
        inside &= xs >= 1e-4
    err = (torch.log2(vs[inside]) - torch.log2(xs[inside])).abs()
    tol = 1e-5 + (2e-7 * shift / xs[inside] if signed else 0.0)
    assert torch.all(err <= 1 / (2 * q) + tol)
    # monotone non-decreasing; never above s - shift nor below -shift
    order = torch.argsort(x)
    assert torch.all(torch.diff(fake[order]) >= 0)
    assert float(fake.max()) <= float(s) - shift + 1e-6 and float(fake.min()) >= -shift - 1e-6


@PROPERTY
@given(kind=_KINDS, q=st.sampled_from(ADALOG_Q), bits=st.integers(2, 16), signed=st.booleans(),
       scale=st.floats(2.0**-12, 4.0, width=32))
def test_every_code_dequantizes_alike_on_every_face(kind, q, bits, signed, scale):
    cls = {"log2": Log2Quantizer, "log_sqrt2": LogSqrt2Quantizer, "adalog": AdaLogQuantizer}[kind]
    params = {"scale": t(scale), **({"q": t(q)} if kind == "adalog" else {})}
    module = cls(bits, signed=signed).set(**params)
    codes = torch.arange(0, 2**bits, dtype=torch.int32)
    values = module.dequantize(codes)
    q_used, _, deq_fn, fake_fn = _pure(kind, q)
    assert torch.equal(values, deq_fn(codes, bits, t(scale), shift=module.shift))
    assert torch.equal(values[-1], t(0.0) - module.shift)
    assert torch.all(torch.diff(values) <= 0)  # larger codes, smaller values
    if not signed:  # each level quantizes back to itself (where float32 keeps its full precision)
        keep = values >= 2.0**-120
        assert torch.equal(fake_fn(values[keep], bits, t(scale), shift=0.0), values[keep])


# ----------------------------------------------------------------------------- modules


def test_module_disabled_identity_then_set():
    q = Log2Quantizer(4)
    x = t([0.5, 0.2, 0.0])
    assert not q.enabled and not q.calibrated and torch.equal(q(x), x)
    assert q.set(scale=t(0.5)) is q and q.enabled and q.calibrated
    assert torch.equal(q(x), t([0.5, 0.25, 0.0]))  # codes 0, 1, 15
    assert torch.equal(q.codes(x), i32([0, 1, 15]))
    q.set(scale=t(0.5), enabled=False)
    assert torch.equal(q(x), x)


def test_layouts_kinds_and_code_ranges():
    assert {"log2", "log-sqrt2", "adalog"} <= set(QUANTIZER_KINDS)
    assert QUANTIZER_KINDS["log2"] is Log2Quantizer and QUANTIZER_KINDS["adalog"] is AdaLogQuantizer
    names = [(Log2Quantizer, "log2"), (LogSqrt2Quantizer, "log_sqrt2"), (AdaLogQuantizer, "adalog")]
    for cls, name in names:
        assert list(cls.layouts) == [name, f"{name}_shifted"]
        assert cls(4).layout == name and cls(4, signed=True).layout == f"{name}_shifted"
        assert cls(4).code_range() == (0, 15) and cls(8, signed=True).code_range() == (0, 255)
        assert cls(2).bits == 2 and cls(16).bits == 16
        for bad in (1, 17, 2.5):
            with pytest.raises(ValueError):
                cls(bad)
    with pytest.raises(ValueError, match="unknown layout 'log3'"):
        quantizer_for_layout("log3", 4, {})


def test_set_checks_parameters_and_a_failed_set_changes_nothing():
    q = AdaLogQuantizer(4)
    assert q.params().keys() == {"scale", "q"} and float(q.q) == 2.0 and float(q.scale) == 1.0
    with pytest.raises(TypeError, match="takes q, scale"):
        q.set(scale=t(0.5))
    for bad_q in (0.3, 0.0, 20.0):
        with pytest.raises(ValueError, match="multiple of 1/4"):
            q.set(scale=t(0.5), q=bad_q)
    with pytest.raises(ValueError, match="finite and positive"):
        q.set(scale=t(-1.0), q=1.5)
    assert float(q.q) == 2.0 and float(q.scale) == 1.0 and not q.calibrated and not q.enabled
    q.set(scale=t(0.5), q=1.25)
    assert q.q.dtype == torch.float32 and float(q.q) == 1.25


def test_minmax_params_and_search_spaces_by_hand():
    stats = {"absmax": t(0.9), "max": t(3.0), "min": t(-0.17)}
    # unsigned (post-softmax): s stays 1 unless searched; searched, it starts at the largest value
    assert torch.equal(Log2Quantizer(4).minmax_params(stats)["scale"], t(1.0))
    assert torch.equal(Log2Quantizer(4, search_scale=True).minmax_params(stats)["scale"], t(0.9))
    assert torch.equal(LogSqrt2Quantizer(4).minmax_params(stats)["scale"], t(0.9))  # log√2 searches s
    # signed (post-GELU): the largest shifted value, 3 + 0.16997, maps to code 0
    assert float(Log2Quantizer(4, signed=True).minmax_params(stats)["scale"]) == pytest.approx(3.16997124)
    p = AdaLogQuantizer(4).minmax_params({"absmax": t([1.0, 0.5, 0.25])})  # one per head
    assert torch.equal(p["scale"], t([1.0, 1.0, 1.0])) and torch.equal(p["q"], t([2.0, 2.0, 2.0]))
    assert Log2Quantizer(4).search_space() == {}
    assert Log2Quantizer(4, signed=True).search_space() == {"scale": None}
    assert LogSqrt2Quantizer(4).search_space() == {"scale": None}
    assert LogSqrt2Quantizer(4, search_scale=False).search_space() == {}
    space = AdaLogQuantizer(4).search_space()
    assert list(space) == ["q"] and torch.equal(space["q"], t(ADALOG_Q))
    assert list(AdaLogQuantizer(4, signed=True).search_space()) == ["q", "scale"]


def test_steps_levels_labels_and_code_fields_by_hand():
    l2 = Log2Quantizer(3).set(scale=t(1.0))
    assert l2.steps() == {"scale": 1.0, "ratio": 0.5}
    assert l2.level_groups()["log2 levels"].tolist() == [1, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0]
    assert l2.code_fields(6) == {"exponent": 6, "zero": 0, "value": 0.015625}
    assert l2.code_fields(7)["zero"] == 1 and "log2 3-bit, s=1" == l2.label()
    ls = LogSqrt2Quantizer(3, signed=True).set(scale=t(2.0))
    # code 3: shift 1, odd -> 2 · 2^-1 / √2 - 0.16997 = 0.70711 - 0.16997
    fields = ls.code_fields(3)
    assert (fields["shift"], fields["odd"], fields["zero"]) == (1, 1, 0)
    assert fields["value"] == pytest.approx(2 ** -0.5 - GELU_SHIFT, rel=1e-6)
    assert ls.level_groups()["log√2 levels"][-1] == pytest.approx(-GELU_SHIFT)
    assert "shifted by 0.17" in ls.label() and ls.steps()["ratio"] == pytest.approx(2 ** -0.5)
    ada = AdaLogQuantizer(4).set(scale=t(1.0), q=0.75)
    # code 7: 4·7 = 28 = 9·3 + 1 -> shift 9, table index 1
    assert {k: ada.code_fields(7)[k] for k in ("shift", "table index", "zero")} == {"shift": 9, "table index": 1,
                                                                                    "zero": 0}
    assert "base 2^(1/0.75)" in ada.label() and ada.steps()["ratio"] == pytest.approx(2 ** (-4 / 3))


def test_build_and_layout_round_trip_keep_signedness():
    for layout in ("log2", "log2_shifted", "log_sqrt2", "log_sqrt2_shifted", "adalog", "adalog_shifted"):
        params = {"scale": t(0.7), "q": t(1.5), "m": t(3)}  # extra parameters are ignored
        q = quantizer_for_layout(layout, 5, params)
        assert q.layout == layout and q.signed == layout.endswith("_shifted") and q.calibrated and q.enabled
        assert float(q.scale) == pytest.approx(0.7)
    assert not Log2Quantizer.build(4, scale=t(1.0)).signed  # unsigned unless asked


def test_fake_gradient_is_straight_through():
    x = t([0.3, 0.01, 2.0]).requires_grad_()
    y = AdaLogQuantizer(4).set(scale=t(1.0), q=1.5)(x)
    y.sum().backward()
    assert torch.equal(x.grad, t([1.0, 1.0, 1.0]))
    with torch.no_grad():
        assert torch.equal(y.detach(), adalog_fake(x.detach(), 4, t(1.0), 1.5))
    assert not log2_fake(t([0.3]), 4).requires_grad
