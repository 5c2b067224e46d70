"""The README's results table and the committed reference results it is made from.

* the rendering of small hand-made records is exactly the expected markdown;
* the committed README's table is the rendering of the committed ``results/reference/`` (no data
  needed): the test that fails when the README and the result tables disagree;
* promoting a main-job result, rewriting only the marked part of a README, the one-line errors;
* a fresh run against its reference record: within noise or beyond it (exact McNemar).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ptqlib import PtqlibError
from ptqlib.app.cli import main
from ptqlib.app.report import (BEGIN, DRAWS_BEGIN, DRAWS_END, END, OFFICIAL_CSV, check_reference, draws_markdown,
                               find_reference, load_official, promote, promote_sweep, readme_table, reference_path,
                               render_draws, render_reference, replace_table, results_markdown, update_readme)

ROOT = Path(__file__).resolve().parents[2]
MODEL = "vit_tiny_patch16_224"


def _record(method: str, bits: int, correct: int, n: int = 10, *, seconds: float = 10.0,
            **extra: Any) -> dict[str, Any]:
    """A main-job record on ``n`` images (labels 0..n-1) of which the first ``correct`` are right."""
    labels = list(range(n))
    predictions = labels[:correct] + [(y + 1) % 1000 for y in labels[correct:]]
    record = {"model": "m", "random_init": False, "method": method, "w_bits": bits, "a_bits": bits,
              "calib_images": 2, "calib_seconds": seconds, "eval_images": n, "fp_top1": 90.0,
              "top1": round(100 * correct / n, 2), "top5": 100.0, "predictions": predictions, "labels": labels,
              "engine": "e1", "seed": 0, "config": {"method": method, "w_bits": bits, "metric": "hessian"},
              "calib_files": ["a.JPEG", "b.JPEG"]}
    record.update(extra)
    return record


RECORDS = [_record("baseptq", 8, 5, seconds=11.4), _record("baseptq", 6, 0, seconds=12.6),
           _record("ptq4vit", 8, 9, seconds=31.5), _record("ptq4vit", 6, 10, seconds=40.2),
           _record("ptq4vit", 4, 3, seconds=43.0)]
OFFICIAL = """model,method,w_bits,a_bits,top1,calib_seconds,source
m,ptq4vit,8,8,95.00,2397,official.md
m,ptq4vit,6,6,75.77,2151,official.md
m,baseptq,6,6,63.15,942,official.md
other,ptq4vit,4,4,99.00,1,official.md
"""
# By hand: 9/10 correct is 90.00, bootstrap (BCa, seed 0) 95 % interval [51.7, 100.0]; 10/10 and 0/10
# have no spread; the best W8A8 is the official 95.00, the best W6A6 ptqlib's 100.00; W4A4, where
# the official code was not run, has no bold; BasePTQ has no W4A4 record.
EXPECTED = """\
| method | W8A8 | W6A6 | W4A4 | calibration |
|---|---|---|---|---|
| ptqlib PTQ4ViT | 90.00 [51.7, 100.0] | **100.00** [100.0, 100.0] | 30.00 [10.0, 60.0] | 32–43 s |
| official PTQ4ViT code | **95.00** | 75.77 | — | 2151–2397 s |
| ptqlib BasePTQ | 50.00 [20.0, 80.0] | 0.00 [0.0, 0.0] | — | 11–13 s |
| official BasePTQ code | — | 63.15 | — | 942 s |
"""


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    """A reference folder made from the hand-made records: promoted main-job JSON and the official CSV."""
    source = tmp_path / "results" / "m.json"
    source.parent.mkdir()
    source.write_text(json.dumps(RECORDS))
    folder = tmp_path / "reference"
    assert promote(source, folder) == (folder / "m.json", "m")
    (folder / OFFICIAL_CSV).write_text(OFFICIAL)
    return folder


def test_the_table_of_hand_made_records_is_exactly_as_expected(reference: Path) -> None:
    assert render_reference(reference, "m") == EXPECTED
    assert json.loads((reference / "m.json").read_text()) == RECORDS  # promoted whole
    assert [o.top1 for o in load_official(reference / OFFICIAL_CSV, "m")] == [95.0, 75.77, 63.15]
    assert results_markdown(RECORDS[2:3]) == ("| method | W8A8 | calibration |\n|---|---|---|\n"
                                             "| ptqlib PTQ4ViT | 90.00 [51.7, 100.0] | 32 s |\n")


def test_the_committed_readme_agrees_with_the_committed_reference_results(monkeypatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    folder = ROOT / "results" / "reference"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table(readme) == render_reference(folder, MODEL), (
        "README.md's results table is not the one results/reference/ gives; "
        "run: python -m ptqlib report --readme README.md")
    fp = json.loads(reference_path(folder, MODEL).read_text())[0]["fp_top1"]
    assert f"float {fp:.2f})" in readme  # the sentence introducing the table
    draws = render_draws(folder)
    if draws is not None:  # the calibration-draw table, from the promoted sweep
        start, end = readme.index(DRAWS_BEGIN) + len(DRAWS_BEGIN) + 1, readme.index(DRAWS_END)
        assert readme[start:end] == draws, "README.md's draw table is stale; run: python -m ptqlib report --readme README.md"


def _sweep_record(method: str, bits: int, draw: int, correct: int, key: str) -> dict[str, Any]:
    return _record(method, bits, correct, draw=draw, key=key, engine="e-sweep")


def test_the_draw_table_of_hand_made_sweep_records() -> None:
    records = [_sweep_record("ptq4vit", 6, d, c, f"p{d}") for d, c in enumerate((7, 9, 8))]
    records += [_sweep_record("baseptq", 8, d, c, f"b{d}") for d, c in enumerate((5, 6))]
    records.append({**_record("float", 8, 9, key="f"), "method": "float", "w_bits": None, "a_bits": None})
    # PTQ4ViT W6A6: 70, 90, 80 -> mean 80, sample std 10; BasePTQ W8A8: 50, 60 -> 55 ± 7.07; float left out
    assert draws_markdown(records) == (
        "| method | bits | draws | top-1 mean ± std | min – max | draw 0 (calib32) |\n"
        "|---|---|---|---|---|---|\n"
        "| PTQ4ViT | W6A6 | 3 | 80.00 ± 10.00 | 70.00 – 90.00 | 70.00 |\n"
        "| BasePTQ | W8A8 | 2 | 55.00 ± 7.07 | 50.00 – 60.00 | 50.00 |\n")
    with pytest.raises(PtqlibError, match="no quantized runs"):
        draws_markdown(records[-1:])


def test_the_readme_draw_table_joins_the_statistics_tables(tmp_path: Path) -> None:
    (tmp_path / "sweeps").mkdir()
    assert render_draws(tmp_path) is None  # nothing promoted: no table
    whole = [_sweep_record("baseptq", 6, d, c, f"w{d}") for d, c in enumerate((5, 6))]
    for r in whole:
        r["config"] = {**r["config"], "metric": "cosine"}
    (tmp_path / "sweeps" / "vit_tiny_statistics_whole_output.jsonl").write_text("".join(json.dumps(r) + "\n" for r in whole))
    only_whole = render_draws(tmp_path)
    assert only_whole is not None and only_whole.splitlines()[2] == "| BasePTQ (whole-output cosine) | W6A6 | 2 | 55.00 ± 7.07 | 50.00 – 60.00 | 50.00 |"
    stats = [_sweep_record("ptq4vit", 6, d, c, f"p{d}") for d, c in enumerate((7, 9))]
    (tmp_path / "sweeps" / "vit_tiny_statistics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stats))
    assert render_draws(tmp_path).splitlines()[2:] == [
        "| PTQ4ViT | W6A6 | 2 | 80.00 ± 14.14 | 70.00 – 90.00 | 70.00 |", only_whole.splitlines()[2]]
    assert render_draws(tmp_path, "vit_tiny_statistics").count("\n") == 3


def test_promote_sweep_keeps_one_checked_record_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ptqlib.io.jsonl as jsonl

    monkeypatch.setattr("ptqlib.io.provenance.engine_fingerprint", lambda: "e-sweep")
    table = tmp_path / "sweeps" / "s.jsonl"
    good = [_sweep_record("ptq4vit", 6, d, 8, f"k{d}") for d in range(2)]
    for r in good + [good[0]]:  # a run recorded twice: the first record counts
        jsonl.append_record(table, r)
    out = promote_sweep(table, tmp_path / "ref")
    assert out == tmp_path / "ref" / "sweeps" / "s.jsonl"
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == ["k0", "k1"]
    text = replace_table(f"a\n{DRAWS_BEGIN}\nold\n{DRAWS_END}\nb\n", "new\n", markers=(DRAWS_BEGIN, DRAWS_END))
    assert text == f"a\n{DRAWS_BEGIN}\nnew\n{DRAWS_END}\nb\n"
    jsonl.append_record(table, {**good[0], "key": "bad", "top1": 99.0})
    with pytest.raises(PtqlibError, match="says top-1 99.0 but its predictions give 80.00"):
        promote_sweep(table, tmp_path / "ref")


def test_report_promotes_and_rewrites_only_the_marked_part_of_the_readme(reference: Path, tmp_path: Path,
                                                                        capsys) -> None:
    readme = tmp_path / "README.md"
    before, after = "# title\n\nintro\r\n\n", "\ntext after\n"
    readme.write_bytes(f"{before}{BEGIN}\n| old |\n{END}{after}".encode())
    source = tmp_path / "results" / "m.json"
    assert main(["report", "--promote", str(source), "--reference-dir", str(reference), "--readme", str(readme)]) == 0
    out = capsys.readouterr().out
    assert out == f"wrote {reference / 'm.json'}\n{EXPECTED}rewrote the tables in {readme}\n"
    assert readme.read_bytes().decode() == f"{before}{BEGIN}\n{EXPECTED}{END}{after}"
    assert update_readme(readme, EXPECTED) is False  # already up to date: not rewritten
    assert main(["report", "--reference-dir", str(reference), "--model", "m", "--readme", str(readme)]) == 0
    assert capsys.readouterr().out.endswith(f"the tables are up to date in {readme}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "reference", "results"]  # no temporary files


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("predictions"), "the PTQ4ViT W8A8 record lacks predictions; rerun the main job"),
    (lambda r: r.update(top1=91.0), "the PTQ4ViT W8A8 record says top-1 91.0 but its predictions give 90.00"),
    (lambda r: r.update(labels=r["labels"][:5]), "predictions and labels are not 10 class indices each"),
    (lambda r: r.update(method="baseptq"), "holds two BasePTQ W8A8 records"),
    (lambda r: r.update(model="other"), "mixes models (m, other)"),
])
def test_promote_refuses_records_that_cannot_serve_as_reference(change, message: str, tmp_path: Path,
                                                                 capsys) -> None:
    records = json.loads(json.dumps(RECORDS))
    change(records[2])
    source = tmp_path / "m.json"
    source.write_text(json.dumps(records))
    assert main(["report", "--promote", str(source), "--reference-dir", str(tmp_path / "ref")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {source}") and message in err and err.count("\n") == 1
    assert not (tmp_path / "ref").exists()


def test_report_errors_are_one_line(reference: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", "--reference-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'none' / MODEL}.json does not exist; run the main job")
    readme = tmp_path / "README.md"
    for text, found in (("no markers\n", "has no"), (f"{BEGIN}\n{BEGIN}\n{END}\n", "has more than one"),
                        (f"{END}\n{BEGIN}\n", "comes before")):
        readme.write_text(text)
        assert main(["report", "--reference-dir", str(reference), "--model", "m", "--readme", str(readme)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {readme}") and found in err and err.count("\n") == 1
        assert readme.read_text() == text
    (reference / OFFICIAL_CSV).write_text("model,method\nm,ptq4vit\n")
    with pytest.raises(PtqlibError, match="line 2 is not a result row; keep the columns model, method, w_bits"):
        render_reference(reference, "m")


def test_a_fresh_run_like_the_reference_is_within_noise() -> None:
    ref = _record("ptq4vit", 6, 80, n=100)
    check = check_reference(_record("ptq4vit", 6, 80, n=100), [_record("ptq4vit", 8, 80, n=100), ref])
    assert check is not None and check.within_noise
    assert check.line() == "PTQ4ViT W6A6: 80.00 vs reference 80.00 (+0.00 [0.0, 0.0]), McNemar p=1: within noise"
    # two images lost (80 -> 78): the paired test cannot tell that from noise
    check = check_reference(_record("ptq4vit", 6, 78, n=100), [ref])
    assert check is not None and check.within_noise and check.comparison.test.p_value == 0.5
    assert check.line() == ("PTQ4ViT W6A6: 78.00 vs reference 80.00 (-2.00 [-7.0, 0.0]), McNemar p=0.5: "
                            "within noise")


def test_a_fresh_run_worse_than_the_reference_beyond_noise_says_so() -> None:
    ref = _record("ptq4vit", 6, 80, n=100)
    fresh = _record("ptq4vit", 6, 65, n=100, engine="e2", config={**ref["config"], "metric": "mse"})
    check = check_reference(fresh, [ref])
    assert check is not None and not check.within_noise
    assert check.comparison.test.wins == 0 and check.comparison.test.losses == 15
    assert check.line() == ("PTQ4ViT W6A6: 65.00 vs reference 80.00 (-15.00 [-23.0, -9.0]), McNemar p=6.1e-05: "
                            "differs from the reference beyond noise (the engine changed since the reference; "
                            "settings differ: metric)")


@pytest.mark.parametrize("field, value", [("eval_images", 99), ("calib_files", ["c.JPEG"]), ("model", "other"),
                                          ("a_bits", 8), ("method", "baseptq"), ("random_init", True),
                                          ("labels", list(range(1, 101)))])
def test_only_the_same_configuration_on_the_same_images_is_compared(field: str, value: Any) -> None:
    ref = _record("ptq4vit", 6, 80, n=100)
    assert find_reference(_record("ptq4vit", 6, 80, n=100), [ref]) is ref
    fresh = {**_record("ptq4vit", 6, 80, n=100), field: value}
    assert find_reference(fresh, [ref]) is None and check_reference(fresh, [ref]) is None
