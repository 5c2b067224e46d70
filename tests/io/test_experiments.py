"""The paper's experiments read back from result tables (``ptqlib.io.experiments``): hand-built
records with known per-image outcomes, so every count, p-value and verdict is known in advance;
then the committed tables against what the README and notebook 04 show."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ptqlib.core.stats import sign_test
from ptqlib.io import experiments as ex

from helpers import result_record

ROOT = Path(__file__).resolve().parents[2]
N = 200


def _write(folder: Path, main: list[dict[str, Any]], sweeps: dict[str, list[dict[str, Any]]]) -> Path:
    (folder / "sweeps").mkdir(parents=True)
    (folder / "vit_tiny_patch16_224.json").write_text(json.dumps(main))
    for name, records in sweeps.items():
        (folder / "sweeps" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "official_ptq4vit.csv").write_text("model,method,w_bits,a_bits,top1,calib_seconds,source\n"
                                                 "vit_tiny_patch16_224,ptq4vit,8,8,81.00,2397,x\n")
    return folder


@pytest.fixture
def tables(tmp_path: Path) -> ex.Tables:
    everything = set(range(N))
    fp = result_record("float", None, everything - set(range(10)))                 # 190 right: 95 %
    main = [result_record("ptq4vit", 8, everything - set(range(12))),              # 188: float alone right on 2
            result_record("baseptq", 8, everything - set(range(40))),              # 160
            result_record("ptq4vit", 6, everything - set(range(30))),
            result_record("baseptq", 6, set(range(100, 200)) - {150})]
    draws = [fp] + [result_record(m, b, everything - set(range(k)), draw=d)
                    for d, k in enumerate((10, 20, 30)) for m in ("ptq4vit", "baseptq") for b in (8, 6)]
    paper = [result_record("ablation-base", 6, everything - set(range(60)), draw=0),
             result_record("ablation-hessian", 6, everything - set(range(50)), draw=0),     # 10 wins, 0 losses
             result_record("ablation-twin-softmax", 6, everything - set(range(60)) - {199} | {0}, draw=0),  # 1 : 1
             result_record("ptq4vit", 6, everything - set(range(30)), draw=0),
             result_record("ptq4vit-mse", 6, everything - set(range(30, 60)), draw=0)]   # 30 : 30
    return ex.load_tables(_write(tmp_path, main, {"vit_tiny_statistics": draws, "vit_tiny_paper": paper}))


def test_claims_carry_hand_known_counts_p_values_and_verdicts(tables: ex.Tables) -> None:
    claims = ex.claims(tables).set_index("claim")
    w8 = claims.loc["PTQ4ViT beats base PTQ at W8A8"]
    assert (w8["only A"], w8["only B"], w8["effect"]) == (28, 0, 14.0)
    assert w8["p"] == float(f"{sign_test(28, 0).p_value:.3g}") and w8["verdict"] == "holds"
    h = claims.loc["the Hessian-guided metric beats cosine (W6A6, ablation)"]
    assert (h["only A"], h["only B"], h["effect"], h["verdict"]) == (10, 0, 5.0, "holds")
    s = claims.loc["twin-uniform softmax helps (W6A6, ablation)"]
    assert (s["only A"], s["only B"], s["p"], s["verdict"]) == (1, 1, 1.0, "inconclusive")
    m = claims.loc["Hessian-guided beats mse in PTQ4ViT (W6A6)"]
    assert (m["only A"], m["only B"], m["effect"], m["verdict"]) == (30, 30, 0.0, "inconclusive")
    # 1 point below float on 200 images (2 images), margin 0.5: the data cannot tell
    near = claims.loc["PTQ4ViT at W8A8 is less than 0.5 points below float"]
    assert (near["effect"], near["only A"], near["only B"], near["verdict"]) == (-1.0, 0, 2, "inconclusive")
    assert ex.verdict_counts(ex.claims(tables)) == {"holds": 3, "fails": 0, "inconclusive": 3}
    assert "twin-uniform GELU" not in " ".join(claims.index)  # its table row is missing: left out


def test_main_table_drops_paired_intervals_and_references(tables: ex.Tables) -> None:
    main = ex.main_table(tables).set_index(["method", "bits"])
    row = main.loc[("PTQ4ViT", "W8A8")]
    assert row["drop"] == 1.0 and row["official code"] == 81.0
    lo, hi = (float(v) for v in row["drop 95% CI"].split("–"))
    assert lo <= 1.0 <= hi
    top_lo, top_hi = (float(v) for v in row["95% CI"].split("–"))
    assert top_hi - top_lo > hi - lo  # paired (two discordant images) beats one top-1's interval
    assert row["paper drop ViT-S/224"] == pytest.approx(81.39 - 81.00)  # the paper's Table 3
    assert ex.paper_drops("baseptq", "W4A4") is None  # the paper has no 4-bit rows


def test_draw_table_and_sentences(tables: ex.Tables) -> None:
    d = ex.draws_table(tables).set_index(["method", "bits"])
    row = d.loc[("PTQ4ViT", "W6A6")]
    assert (row["draws"], row["mean"], row["std"], row["min"], row["max"]) == (3, 90.0, 5.0, 85.0, 95.0)
    lines = ex.sentences(tables)
    assert lines[0] == "float ViT-Tiny: 95.00 % top-1 on 200 validation images"
    assert "PTQ4ViT W6A6 over 3 calibration draws: 90.00 ± 5.00 (range 85.00–95.00)" in lines


def test_draw_tables_of_two_sweeps_count_each_run_once(tmp_path: Path) -> None:
    everything = set(range(N))
    whole = {"config": {"metric": "cosine"}}
    stats = [result_record("baseptq", 6, everything - set(range(k)), draw=d, key=f"b{d}", config={"metric": "cosine_token"})
             for d, k in enumerate((40, 60))]
    older = [result_record("baseptq", 6, everything - set(range(k)), draw=d, key=f"w{d}", **whole)
             for d, k in enumerate((100, 80, 90))] + [stats[1]]  # a run in both tables counts once
    t = ex.load_tables(_write(tmp_path, [], {"vit_tiny_statistics": stats, "vit_tiny_statistics_whole_output": older}))
    d = ex.draws_table(t).set_index(["method", "bits"])
    # per token: 80 %, 70 %; whole output: 50 %, 60 %, 55 %
    assert (d.loc[("BasePTQ", "W6A6"), ["draws", "mean", "min", "max", "draw 0 (calib32)"]].tolist()
            == [2, 75.0, 70.0, 80.0, 80.0])
    assert (d.loc[("BasePTQ (whole-output cosine)", "W6A6"), ["draws", "mean", "std", "min", "max"]].tolist()
            == [3, 55.0, 5.0, 50.0, 60.0])
    assert len(ex.draws_long(t)) == 5 and len(ex.draws_table(t, "vit_tiny_statistics")) == 1


@pytest.fixture
def successors(tmp_path: Path) -> ex.Tables:
    everything = set(range(N))
    fp = result_record("float", None, everything - set(range(10)))                       # 95 %
    rows = [fp,
            result_record("ptq4vit", 4, everything - set(range(150)), draw=0),            # 25 %
            result_record("adalog", 4, everything - set(range(60)), draw=0),              # 70 %: 90 wins, 0 losses
            result_record("repq", 4, everything - set(range(61)), draw=0),                # 69.5 %
            result_record("ptq4vit", 8, everything - set(range(11)), draw=0),             # 94.5 %: 1 below float
            result_record("adalog", 8, everything - set(range(10)), draw=0)]              # 95 %: float's images
    return ex.load_tables(_write(tmp_path, [], {"vit_tiny_statistics": [fp], "vit_tiny_successors": rows}))


def test_successors_table_beside_the_published_drops(successors: ex.Tables) -> None:
    t = ex.successors_table(successors).set_index(["bits", "method"])
    row = t.loc[("W4A4", "AdaLog quantizers")]
    assert (row["top-1"], row["drop"]) == (70.0, 25.0)
    assert row["published drop ViT-S"] == round(81.39 - 72.75, 2) and row["published drop DeiT-T"] == round(72.21 - 63.52, 2)
    assert t.loc[("W4A4", "RepQ-ViT quantizers")]["official code"] == ex.OFFICIAL_REPQ["W4A4"] == 32.77
    assert list(t.index.get_level_values("bits")) == ["W8A8", "W8A8", "W4A4", "W4A4", "W4A4"]
    assert ex.best_successor(successors, "W4A4")["method"] == "adalog"
    assert ex.best_successor(successors, "W6A6") is None


def test_successor_targets_and_comparisons_by_hand(successors: ex.Tables) -> None:
    c = ex.successor_claims(successors).set_index("claim")
    # W8A8: the best (AdaLog, float's exact images) is 0 points below: within 0.5 holds
    w8 = c.loc["best at W8A8 (AdaLog quantizers) is at most 0.5 points below float"]
    assert (w8["effect"], w8["verdict"]) == (0.0, "holds")
    # W4A4: 25 points below float, far beyond 10: fails
    assert c.loc["best at W4A4 (AdaLog quantizers) is at most 10 points below float"]["verdict"] == "fails"
    # AdaLog vs PTQ4ViT at W4A4: 90 images only AdaLog gets right, none only PTQ4ViT: McNemar p = 2 / 2^90
    a = c.loc["AdaLog quantizers beat PTQ4ViT at W4A4"]
    assert (a["only A"], a["only B"], a["verdict"]) == (90, 0, "holds")
    assert a["p"] == pytest.approx(sign_test(90, 0).p_value, rel=1e-3)
    assert "RepQ-ViT quantizers beat PTQ4ViT at W8A8" not in c.index  # no repq W8A8 row


@pytest.mark.parametrize("section", ["experiments", "successors"])
def test_the_committed_readme_shows_the_committed_tables(section: str) -> None:
    from ptqlib.app import report

    begin, end = getattr(report, f"{section.upper()}_BEGIN"), getattr(report, f"{section.upper()}_END")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rendered = getattr(report, f"render_{section}")(ROOT / "results" / "reference")
    assert begin in readme
    first, last = readme.index(begin) + len(begin) + 1, readme.index(end)
    assert readme[first:last] == rendered, f"README.md's {section} tables are stale; run: python -m ptqlib report --readme README.md"


def test_notebook_04_prints_the_numbers_of_the_committed_tables() -> None:
    """Notebook 04's committed outputs hold exactly the statements the committed tables give."""
    nb = json.loads((ROOT / "notebooks" / "04_imagenet_evaluation.ipynb").read_text(encoding="utf-8"))
    text = "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     + "".join(o.get("data", {}).get("text/html", ""))
                     for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    t = ex.load_tables(ROOT / "results" / "reference")
    for line in ex.sentences(t):
        assert line in text, f"notebook 04 does not show {line!r}; re-execute it (README, Notebooks)"
    claims = ex.claims(t)
    for claim, verdict in zip(claims["claim"], claims["verdict"]):
        assert claim in text and verdict in text


def test_residual_sensitivity_puts_the_costliest_groups_first(successors: ex.Tables) -> None:
    assert ex.residual_sensitivity(successors).empty  # not committed: nothing to show
    (successors.folder / ex.RESIDUAL_SENSITIVITY).write_text(
        "quantized,quantizers,top1,top5,top1_drop\n"
        "qkv input,12,80.0,95.0,2.0\nfc2 input,12,60.0,80.0,22.0\nproj input,12,75.0,90.0,7.0\n"
        "all weights,50,78.0,93.0,4.0\nall activations,60,50.0,70.0,32.0\neverything,110,40.0,60.0,42.0\n")
    r = ex.residual_sensitivity(successors, top=2)
    assert list(r["quantizers switched on"]) == ["fc2 input", "proj input", "all weights", "all activations",
                                                  "everything"]
    assert list(r["drop"]) == [22.0, 7.0, 4.0, 32.0, 42.0] and list(r.columns) == [
        "quantizers switched on", "count", "top-1", "drop"]
