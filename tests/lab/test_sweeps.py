"""ptqlib.lab.sweeps: scale sweeps scored by every metric and by the task loss, and how the
metrics' picks agree with the task loss's."""
from __future__ import annotations

import pytest
import torch

from ptqlib.errors import PtqlibError
from ptqlib.lab import sweeps


def test_tail_runner_equals_the_full_model(model, images):
    from ptqlib.engine.config import PTQConfig
    from ptqlib.engine.wrap import quantize_model

    import copy

    wrapped = quantize_model(copy.deepcopy(model), PTQConfig())
    with torch.inference_mode():
        full = wrapped(images).float()
    for site in ("blocks.0.attn.qkv", "blocks.4.mlp.fc2", "head"):
        tail = sweeps._Tail(wrapped, site, images, batch=1)
        assert tail.cached is not None
        assert torch.allclose(tail.logits(), full, atol=1e-5)


def test_sweep_scales_and_agreement(model, images):
    targets = [sweeps.SweepTarget("blocks.1.attn.qkv", "weight"), sweeps.SweepTarget("blocks.2.mlp.fc2", "input"),
               sweeps.SweepTarget("blocks.3.attn.matmul_av", "a")]
    mults = torch.tensor([0.1, 0.5, 1.0])
    sweep = sweeps.sweep_scales(model, images, targets, bits=[4, 12], multipliers=mults,
                           grad_losses={"hessian": "pseudo_label_ce", "hessian (official KL)": "official_kl"},
                           max_tokens=32, batch=2, progress=False)
    t = sweep.table
    assert len(t) == 3 * 2 * 3
    assert sweep.metrics == ["mse", "cosine", "pearson", "l1", "hessian", "hessian (official KL)"]
    assert (t["task_kl"] >= -1e-6).all()
    # 12 bits at the min-max scale barely changes the outputs; 4 bits at 0.1x does
    fine = t[(t.bits == 12) & t.multiplier.between(0.99, 1.01)]["task_kl"]
    coarse = t[(t.bits == 4) & t.multiplier.between(0.09, 0.11)]["task_kl"]
    assert len(fine) == len(coarse) == 3
    assert fine.max() < coarse.min()
    g_ours = sweep.grads["hessian"]["blocks.1.attn.qkv"].abs().mean()
    g_off = sweep.grads["hessian (official KL)"]["blocks.1.attn.qkv"].abs().mean()
    assert g_off < 1e-4 * g_ours  # the official KL gradient vanishes
    agree = sweeps.metric_agreement(sweep)
    assert len(agree) == 3 * 2 * len(sweep.metrics)
    for _, row in agree.iterrows():
        assert all(any(x == pytest.approx(m) for m in mults.tolist()) for x in (row.picked, row.optimum))
        assert row.loss_ratio >= 1 - 1e-9  # nothing beats the task loss's own optimum
        assert row.log2_distance >= 0 and (row.log2_distance < 1e-9) == (row.picked == row.optimum)


def test_metric_agreement_on_a_hand_made_sweep():
    import pandas as pd

    # one target at 4 bits, three multipliers; the task loss is lowest at 0.5
    table = pd.DataFrame({"target": ["t"] * 3, "bits": [4] * 3, "multiplier": [0.25, 0.5, 1.0],
                          "task_kl": [0.3, 0.1, 0.2], "mse": [0.9, 0.5, 0.1], "cosine": [0.5, 0.2, 0.4]})
    agree = sweeps.metric_agreement(sweeps.ScaleSweep(table=table, metrics=["mse", "cosine"])).set_index("metric")
    assert list(agree["layer"]) == ["t @4b", "t @4b"] and list(agree["optimum"]) == [0.5, 0.5]
    # mse picks 1.0: one octave from 0.5, task loss 0.2 against 0.1; its ranks (3, 2, 1) against the
    # task's (3, 1, 2): Spearman 1 - 6 * (0 + 1 + 1) / (3 * (9 - 1)) = 0.5
    assert agree.loc["mse", "picked"] == 1.0 and agree.loc["mse", "log2_distance"] == pytest.approx(1.0)
    assert agree.loc["mse", "loss_ratio"] == pytest.approx(2.0) and agree.loc["mse", "spearman"] == pytest.approx(0.5)
    # cosine picks the optimum itself and ranks the candidates as the task loss does
    assert agree.loc["cosine", "picked"] == 0.5 and agree.loc["cosine", "log2_distance"] == 0.0
    assert agree.loc["cosine", "loss_ratio"] == pytest.approx(1.0) and agree.loc["cosine", "spearman"] == pytest.approx(1.0)


def test_sweep_rejects_unknown_sites(model, images):
    with pytest.raises(PtqlibError, match="no quantized site"):
        sweeps.sweep_scales(model, images, [sweeps.SweepTarget("blocks.99.mlp.fc2", "input")], progress=False)


def test_compare_metrics_tests_the_claim_with_the_sign_test():
    import pandas as pd

    from ptqlib.core.stats import sign_test

    rows = []
    # hessian closer in 8 sweeps, farther in 1, as close in 2 (the same pick, or as far on the other side)
    dists = [(0.0, 1.0)] * 8 + [(0.5, 0.0), (0.5, 0.5), (0.25, 0.25)]
    for i, (d_h, d_m) in enumerate(dists):
        rows.append({"layer": f"l{i} @4b", "metric": "hessian", "log2_distance": d_h, "loss_ratio": 1 + d_h})
        rows.append({"layer": f"l{i} @4b", "metric": "mse", "log2_distance": d_m, "loss_ratio": 1 + d_m})
    agree = pd.DataFrame(rows)
    c = sweeps.compare_metrics(agree, "hessian", "mse")
    assert (c["closer"], c["same"], c["farther"]) == (8, 2, 1)
    assert c["p_value"] == pytest.approx(sign_test(8, 1).p_value) == pytest.approx(2 * (1 + 9) / 2**9)
    assert c["verdict"] == "holds"
    assert sweeps.compare_metrics(agree, "mse", "hessian")["verdict"] == "fails"
    assert sweeps.compare_metrics(agree, "mse", "mse")["verdict"] == "inconclusive (p ≥ 0.05)"
    few = agree[agree.layer.isin(["l0 @4b", "l1 @4b", "l8 @4b"])]
    c = sweeps.compare_metrics(few, "hessian", "mse")  # 2 closer, 1 farther: p = 1
    assert (c["closer"], c["farther"], c["p_value"], c["verdict"]) == (2, 1, 1.0, "inconclusive (p ≥ 0.05)")
    assert sweeps.claim_line(c) == ("hessian picks closer than mse: closer in 2, farther in 1, same in 0 sweeps; "
                                    "sign test p = 1.00: inconclusive (p ≥ 0.05)")
    assert c["mean log2 distance"] == pytest.approx(0.5 / 3) and c["loss ratio (other)"] == pytest.approx(2 ** (2 / 3))
    summary = sweeps.agreement_summary(agree.assign(spearman=0.5))
    assert summary.loc["hessian", "optimum_hits"] == 8 and summary.loc["mse", "cases"] == 11


def test_same_pick_groups_and_signed_offsets():
    import pandas as pd

    # two targets; a and b pick alike in both, c only in the first; the task loss is lowest at 0.5
    table = pd.DataFrame({"target": ["t"] * 3 + ["u"] * 3, "bits": [4] * 6, "multiplier": [0.25, 0.5, 1.0] * 2,
                          "task_kl": [0.3, 0.1, 0.2] * 2, "a": [3, 2, 1, 1, 2, 3], "b": [30, 20, 10, 1, 5, 9],
                          "c": [3, 2, 1, 3, 2, 1]})
    sweep = sweeps.ScaleSweep(table=table, metrics=["a", "b", "c"])
    assert sweeps.same_pick_groups(sweep) == [["a", "b"]]
    agree = sweeps.metric_agreement(sweep).set_index(["layer", "metric"])
    assert agree.loc[("t @4b", "a"), "log2_offset"] == pytest.approx(1.0)  # picks 1.0: one octave too large
    assert agree.loc[("u @4b", "a"), "log2_offset"] == pytest.approx(-1.0)
    assert (agree["log2_distance"] == agree["log2_offset"].abs()).all()


def test_sweep_takes_any_metric_by_name(model, images):
    """The official per-token cosine is one more column, no code of its own."""
    sweep = sweeps.sweep_scales(model, images, [sweeps.SweepTarget("blocks.1.attn.qkv", "weight")], bits=[4],
                                multipliers=torch.tensor([0.3, 1.0]), metrics=("cosine", "cosine_token"),
                                max_tokens=16, batch=2, progress=False)
    assert sweep.metrics == ["cosine", "cosine_token"]
    assert (sweep.table["cosine_token"] >= 0).all() and not sweep.table["cosine_token"].equals(sweep.table["cosine"])
