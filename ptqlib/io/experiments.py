"""The paper's experiments read back from the committed result tables, with their statistics.

Notebook 04 shows what the main job and the sweeps computed; it recomputes nothing. The tables
live in ``results/reference/`` (committed, each record with every image's predicted class):

====================================================  ================================================
``vit_tiny_patch16_224.json``                         the main job: BasePTQ and PTQ4ViT, W8A8/W6A6/W4A4
``official_ptq4vit.csv``                              the official PTQ4ViT code on the same model and images
``sweeps/vit_tiny_statistics.jsonl``                  ten 32-image calibration draws, W8A8 and W6A6
``sweeps/vit_tiny_statistics_whole_output.jsonl``     the same draws of the base PTQ with the whole-output cosine
``sweeps/vit_tiny_paper.jsonl``                       metric comparison and ablation, W8A8 and W6A6
``sweeps/vit_tiny_calib_size.jsonl``                  8 / 16 / 32 / 64 / 128 calibration images, W6A6
``sweeps/vit_tiny_baseline.jsonl``                    BasePTQ against the official base PTQ, one change at a time
``sweeps/vit_tiny_stability.jsonl``                   last-bit jitter of the calibration images; tie rule
``sweeps/vit_tiny_successors.jsonl``                  PTQ4ViT and its successors' quantizers, W8A8/W6A6/W4A4
``machines.csv``                                      the same command's top-1 on other machines (no images)
====================================================  ================================================

Every top-1 comes with its 95 % bootstrap interval over the images; every comparison of two
configurations on the same images with the paired difference, its interval, the exact McNemar
p-value and a verdict (:mod:`ptqlib.core.stats`). :func:`claims` is the paper's claims, checked.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.stats import compare, difference_interval, top1_interval, within
from .jsonl import read_records
from .models import PAPER_MODELS

__all__ = ["REFERENCE", "Tables", "display_name", "load_tables", "correct", "accuracy_row", "pair_row", "main_table",
           "draws_table", "metric_table", "ablation_table", "calib_size_table", "baseline_table",
           "stability_table", "claims", "verdict_counts", "sentences", "draws_long", "calib_size_long", "ABLATION_ROWS", "METRIC_ROWS", "OFFICIAL_BASEPTQ_W6A6",
           "TIMM_FULL_VAL_TOP1", "paper_drops", "machines_table", "SUCCESSOR_ROWS", "PUBLISHED_SUCCESSORS",
           "PUBLISHED_FLOAT", "OFFICIAL_REPQ", "SUCCESSOR_TARGETS", "successors_table", "best_successor",
           "successor_claims", "RESIDUAL_SENSITIVITY", "residual_sensitivity", "SUCCESSOR_PAIRS", "STATISTICS",
           "draw_records"]

#: The committed reference folder, relative to the repository root.
REFERENCE = Path("results/reference")
#: The ablation's rows: variant name -> (Hessian-guided metric, twin softmax, twin GELU).
ABLATION_ROWS = {"ablation-base": (False, False, False), "ablation-hessian": (True, False, False),
                 "ablation-twin-softmax": (False, True, False), "ablation-twin-gelu": (False, False, True),
                 "ptq4vit": (True, True, True)}
#: The metric comparison's rows: variant name -> the metric PTQ4ViT searches with.
METRIC_ROWS = {"ptq4vit": "hessian", "ptq4vit-mse": "mse", "ptq4vit-cosine": "cosine",
               "ptq4vit-pearson": "pearson", "ptq4vit-l1": "l1"}
#: The official code's base PTQ on the same model and images (official-ptq4vit-results.md).
OFFICIAL_BASEPTQ_W6A6 = 63.15
#: timm's top-1 of this checkpoint on the full 50,000-image ImageNet validation set (timm's
#: results table); the 1300-image subset here is easier, so compare drops, not absolute top-1.
TIMM_FULL_VAL_TOP1 = 75.5
_NAMES = {"ptq4vit": "PTQ4ViT", "baseptq": "BasePTQ", "float": "float"}

#: The successors sweep's rows (variant name -> what it is), in table order.
SUCCESSOR_ROWS = {
    "ptq4vit": "PTQ4ViT (twin uniform)",
    "repq": "RepQ-ViT quantizers",
    "adalog": "AdaLog quantizers",
    "adalog-head": "AdaLog quantizers + per-head matmul scales",
    "adalog-erq": "AdaLog quantizers + ERQ ridge correction",
    "combined": "AdaLog + ERQ + per-head matmul scales",
}
#: The successors sweep's paired comparisons: (A, B, the claim "A beats B").
SUCCESSOR_PAIRS = (
    ("repq", "ptq4vit", "RepQ-ViT quantizers beat PTQ4ViT"),
    ("adalog", "ptq4vit", "AdaLog quantizers beat PTQ4ViT"),
    ("adalog", "repq", "AdaLog quantizers beat RepQ-ViT quantizers"),
    ("adalog-head", "adalog", "per-head matmul scales help AdaLog"),
    ("adalog-erq", "adalog", "ERQ ridge correction helps AdaLog"),
    ("combined", "adalog-head", "ERQ ridge correction helps AdaLog + per-head scales"),
)
#: The successors' published top-1 (calibration only, 32 images): ViT-S/224 (float 81.39) and
#: DeiT-T/224 (float 72.21); ERQ publishes W4A4 only here.
PUBLISHED_FLOAT = {"ViT-S": 81.39, "DeiT-T": 72.21}
PUBLISHED_SUCCESSORS = {
    ("ptq4vit", "W4A4"): (42.57, 36.96), ("repq", "W4A4"): (65.05, 57.43), ("erq", "W4A4"): (68.91, 60.29),
    ("adalog", "W4A4"): (72.75, 63.52), ("ptq4vit", "W6A6"): (78.63, 69.68), ("repq", "W6A6"): (80.43, 70.76),
    ("adalog", "W6A6"): (80.91, 71.38),
}
#: The official RepQ-ViT code on this model and these images (shared/data/peer-repq-vit-results.md).
OFFICIAL_REPQ = {"W8A8": 80.62, "W6A6": 79.38, "W4A4": 32.77}
#: The successors' targets: the drop from float that the best configuration should stay within.
SUCCESSOR_TARGETS = {"W8A8": 0.5, "W6A6": 1.0, "W4A4": 10.0}
_SUCCESSORS = "vit_tiny_successors"
#: The calibration-draw tables: the statistics sweep (BasePTQ, PTQ4ViT, float), then the base PTQ
#: with the whole-output cosine on the same draws (``sweeps/vit_tiny_statistics_whole_output.toml``).
STATISTICS = ("vit_tiny_statistics", "vit_tiny_statistics_whole_output")


def display_name(record: Mapping[str, Any]) -> str:
    """How tables name a record's method: ``PTQ4ViT``, ``BasePTQ``, a variant's own name; a base PTQ
    computed before the preset scored the cosine per token (its config says ``metric="cosine"``)
    is ``BasePTQ (whole-output cosine)``."""
    method = str(record.get("method"))
    config = record.get("config") or {}
    if method == "baseptq" and config.get("metric") == "cosine":
        return "BasePTQ (whole-output cosine)"
    return _NAMES.get(method, method)


def correct(record: Mapping[str, Any]) -> np.ndarray:
    """Per-image outcomes (predicted class == label) of a record."""
    return np.asarray(record["predictions"]) == np.asarray(record["labels"])


def _bits(record: Mapping[str, Any]) -> str:
    return "float" if record.get("w_bits") is None else f"W{record['w_bits']}A{record['a_bits']}"


@dataclass
class Tables:
    """The committed tables (absent ones empty): ``main`` (main job), ``official`` (the official
    code's rows), ``sweeps[name]`` (a promoted sweep's records)."""

    folder: Path
    main: list[dict[str, Any]]
    official: pd.DataFrame
    sweeps: dict[str, list[dict[str, Any]]]
    machines: pd.DataFrame

    def sweep(self, name: str) -> list[dict[str, Any]]:
        return self.sweeps.get(name, [])

    def find(self, table: str, method: str, bits: str, *, draw: int | None = 0, jitter: int = 0,
             calib_size: int | None = None) -> dict[str, Any] | None:
        """The record of ``method`` at ``bits`` in the main table (``table='main'``) or a sweep."""
        records = self.main if table == "main" else self.sweep(table)
        for r in records:
            if r.get("method") != method or _bits(r) != bits:
                continue
            if table != "main" and method != "float":
                if draw is not None and r.get("draw") != draw:
                    continue
                if int(r.get("jitter") or 0) != jitter:
                    continue
                if calib_size is not None and r.get("calib_images") != calib_size:
                    continue
            return r
        return None

    @property
    def float_record(self) -> dict[str, Any] | None:
        """The float model's evaluation on the same images (from the statistics sweep)."""
        for name in ("vit_tiny_statistics", "vit_tiny_paper"):
            r = self.find(name, "float", "float")
            if r is not None:
                return r
        return None


def load_tables(folder: str | Path = REFERENCE, model: str = "vit_tiny_patch16_224") -> Tables:
    """Read every committed table under ``folder``."""
    folder = Path(folder)
    main_path = folder / f"{model}.json"
    main = json.loads(main_path.read_text()) if main_path.is_file() else []
    official_path = folder / "official_ptq4vit.csv"
    official = pd.read_csv(official_path) if official_path.is_file() else pd.DataFrame(
        columns=["model", "method", "w_bits", "a_bits", "top1", "calib_seconds", "source"])
    sweeps = {p.stem: read_records(p)[0].records for p in sorted((folder / "sweeps").glob("*.jsonl"))}
    machines_path = folder / "machines.csv"
    machines = pd.read_csv(machines_path) if machines_path.is_file() else pd.DataFrame(
        columns=["machine", "cpu", "method", "metric", "w_bits", "a_bits", "top1", "source"])
    return Tables(folder, main, official, sweeps, machines)


def machines_table(t: Tables) -> pd.DataFrame:
    """The same configuration's top-1 on each machine: ``machines.csv`` (other machines: method,
    its search metric, bits, top-1) beside this machine's record of the same method, metric and
    bits (the main job's, else draw 0 of the statistics sweep); one row per configuration, one
    column per machine, and the spread (max − min)."""
    if not len(t.machines):
        return pd.DataFrame()
    mine = t.main + [r for r in draw_records(t) if r.get("draw") == 0]
    rows = []
    for (method, metric, w, a), group in t.machines.groupby(["method", "metric", "w_bits", "a_bits"], sort=False):
        r = next((r for r in mine if r["method"] == method and (r.get("config") or {}).get("metric") == metric
                  and r["w_bits"] == w and r["a_bits"] == a), None)
        name = display_name({"method": method, "config": {"metric": metric}})
        row = {"config": f"{name} W{w}A{a}"}
        if r is not None:
            row["this machine"] = float(r["top1"])
        for _, m in group.iterrows():
            row[f"{m.machine} ({m.cpu})"] = float(m.top1)
        values = [v for k, v in row.items() if k != "config"]
        row["spread"] = round(max(values) - min(values), 2) if len(values) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_row(record: Mapping[str, Any], fp: Mapping[str, Any] | None = None, **label: Any) -> dict[str, Any]:
    """``label`` columns, then top-1 with its 95 % interval over the images, and the drop against
    ``fp`` with its paired 95 % interval (the float model on the same images: far narrower)."""
    ci = top1_interval(correct(record))
    row = {**label, "top-1": round(float(record["top1"]), 2), "95% CI": f"{ci.low:.2f}–{ci.high:.2f}"}
    if fp is not None:
        d = difference_interval(correct(fp), correct(record))
        row["drop"] = round(float(fp["top1"]) - float(record["top1"]), 2)
        row["drop 95% CI"] = f"{d.low:.2f}–{d.high:.2f}"
    if record.get("calib_seconds") is not None:
        row["calib s"] = round(float(record["calib_seconds"]), 1)
    return row


def pair_row(a: Mapping[str, Any], b: Mapping[str, Any], *, expect: int = 1, margin: float | None = None,
             **label: Any) -> dict[str, Any]:
    """``label`` columns, then A − B in points with its 95 % interval, the images only A / only B
    gets right, the p-value (McNemar; with ``margin`` the z-test of "A at most ``margin`` below
    B") and the verdict."""
    ca, cb = correct(a), correct(b)
    c = within(ca, cb, margin) if margin is not None else compare(ca, cb, expect=expect)
    return {**label, "effect": round(c.difference.estimate, 2),
            "95% CI": f"{c.difference.low:+.2f} … {c.difference.high:+.2f}", "only A": c.test.wins,
            "only B": c.test.losses, "p": float(f"{c.test.p_value:.3g}"), "verdict": c.verdict}


def paper_drops(method: str, bits: str) -> tuple[float, float, float] | None:
    """The paper's drop from float for ``method`` at ``bits``: on ViT-S/224 (its smallest 16-pixel
    ViT; it has no ViT-Tiny) and the smallest and largest over its eleven models."""
    attr = f"{'base' if method == 'baseptq' else method}_{bits.lower()}"
    drops = {m.key: round(m.fp_top1 - getattr(m, attr), 2) for m in PAPER_MODELS if hasattr(m, attr)}
    if not drops:
        return None
    return drops["ViT-S/224"], min(drops.values()), max(drops.values())


def main_table(t: Tables) -> pd.DataFrame:
    """The main job's configurations: top-1 with its interval, the drop against float, and the
    official code's top-1 on the same model and images (the paper has no ViT-Tiny row)."""
    fp = t.float_record
    rows = []
    if fp is not None:
        rows.append(accuracy_row(fp, None, method="float", bits="float"))
    for r in sorted(t.main, key=lambda r: (-r["w_bits"], r["method"] != "baseptq")):
        row = accuracy_row(r, fp, method=display_name(r), bits=_bits(r))
        off = t.official[(t.official.method == r["method"]) & (t.official.w_bits == r["w_bits"])
                         & (t.official.a_bits == r["a_bits"])]
        row["official code"] = float(off.top1.iloc[0]) if len(off) else None
        drops = paper_drops(r["method"], _bits(r))
        row["paper drop ViT-S/224"] = drops[0] if drops else None
        row["paper drop, 11 models"] = f"{drops[1]:.2f}–{drops[2]:.2f}" if drops else None
        rows.append(row)
    return pd.DataFrame(rows)


def draw_records(t: Tables, names: str | Sequence[str] = STATISTICS) -> list[dict[str, Any]]:
    """The quantized records of the sweeps ``names`` (one name or several), in order; a run (its
    key) in two of them counts once."""
    names = (names,) if isinstance(names, str) else names
    out, seen = [], set()
    for r in (r for name in names for r in t.sweep(name) if r.get("method") != "float"):
        key = r.get("key")
        if key is None or key not in seen:
            seen.add(key)
            out.append(r)
    return out


def draws_table(t: Tables, names: str | Sequence[str] = STATISTICS) -> pd.DataFrame:
    """Top-1 over the calibration draws of one sweep or several per method and bits: mean ± std,
    range, draw 0."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in draw_records(t, names):
        groups.setdefault((display_name(r), _bits(r)), []).append(r)
    rows = []
    for (method, bits), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        top1 = [float(r["top1"]) for r in rs]
        draw0 = next((float(r["top1"]) for r in rs if r.get("draw") == 0), None)
        rows.append({"method": method, "bits": bits, "draws": len(top1),
                     "mean": round(statistics.fmean(top1), 2),
                     "std": round(statistics.stdev(top1), 2) if len(top1) > 1 else None,
                     "min": min(top1), "max": max(top1), "draw 0 (calib32)": draw0})
    return pd.DataFrame(rows)


def draws_long(t: Tables, names: str | Sequence[str] = STATISTICS) -> pd.DataFrame:
    """One row per run of one sweep or several (method, bits, draw, top-1): for strip plots."""
    return pd.DataFrame([{"method": display_name(r), "bits": _bits(r), "draw": r.get("draw"),
                          "top-1": float(r["top1"])} for r in draw_records(t, names)])


def _variant_rows(t: Tables, table: str, names: Mapping[str, Any], bits: Sequence[str],
                  label: Any) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    fp = t.float_record
    rows, found = [], {}
    for b in bits:
        for name in names:
            r = t.find(table, name, b)
            if r is None:
                continue
            found[(name, b)] = r
            rows.append(accuracy_row(r, fp, bits=b, **label(name)))
    return rows, found


def metric_table(t: Tables, bits: Sequence[str] = ("W8A8", "W6A6")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PTQ4ViT calibrated with each metric: top-1 per metric and bits, and each metric against the
    Hessian-guided one on the same images (the paper's claim: Hessian-guided is best)."""
    rows, found = _variant_rows(t, "vit_tiny_paper", METRIC_ROWS, bits, lambda n: {"metric": METRIC_ROWS[n]})
    pairs = [pair_row(found[("ptq4vit", b)], found[(n, b)], bits=b, comparison=f"hessian vs {METRIC_ROWS[n]}")
             for b in bits for n in METRIC_ROWS if n != "ptq4vit" and (n, b) in found and ("ptq4vit", b) in found]
    return pd.DataFrame(rows), pd.DataFrame(pairs)


def ablation_table(t: Tables, bits: Sequence[str] = ("W8A8", "W6A6")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's ablation: base (cosine, uniform quantizers) with each ingredient added alone,
    and all three; each row against the base on the same images."""
    def label(name: str) -> dict[str, str]:
        h, s, g = ABLATION_ROWS[name]
        return {"Hessian": "✓" if h else "", "twin softmax": "✓" if s else "", "twin GELU": "✓" if g else ""}

    rows, found = _variant_rows(t, "vit_tiny_paper", ABLATION_ROWS, bits, label)
    pairs = [pair_row(found[(n, b)], found[("ablation-base", b)], bits=b, row=n.replace("ablation-", "+ ")
                      .replace("ptq4vit", "all three"))
             for b in bits for n in ABLATION_ROWS if n != "ablation-base" and (n, b) in found
             and ("ablation-base", b) in found]
    return pd.DataFrame(rows), pd.DataFrame(pairs)


def calib_size_table(t: Tables) -> pd.DataFrame:
    """PTQ4ViT W6A6 per calibration-set size over its draws: top-1 mean ± std, range, draw 0 with its
    paired drop interval, and the mean calibration time."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for r in t.sweep("vit_tiny_calib_size"):
        groups.setdefault(int(r["calib_images"]), []).append(r)
    rows = []
    for size, rs in sorted(groups.items()):
        top1 = [float(r["top1"]) for r in rs]
        first = next((r for r in rs if r.get("draw") == 0), None)
        row = {"images": size, "draws": len(rs), "mean": round(statistics.fmean(top1), 2),
               "std": round(statistics.stdev(top1), 2) if len(top1) > 1 else None,
               "min": min(top1), "max": max(top1)}
        if first is not None:
            row.update({"draw 0": float(first["top1"]),
                        "draw 0 drop 95% CI": accuracy_row(first, t.float_record).get("drop 95% CI")
                        if t.float_record is not None else None})
        secs = [float(r["calib_seconds"]) for r in rs if r.get("calib_seconds") is not None]
        row["calib s (mean)"] = round(statistics.fmean(secs), 1) if secs else None
        rows.append(row)
    return pd.DataFrame(rows)


def calib_size_long(t: Tables) -> pd.DataFrame:
    """One row per run of the calibration-size sweep (images, draw, top-1): for strip plots."""
    return pd.DataFrame([{"images": int(r["calib_images"]), "draw": r.get("draw"), "top-1": float(r["top1"])}
                         for r in t.sweep("vit_tiny_calib_size")])


def _baseline_label(r: Mapping[str, Any]) -> str:
    c = r["config"]
    parts = ["cosine per token" if c["metric"] == "cosine_token" else f"{c['metric']} over the whole output",
             "all rows" if c["max_tokens"] is None else f"{c['max_tokens']} rows",
             "exhaustive grid" if c["search"] == "grid" else c["search"].replace("_", "-")]
    return ", ".join(parts)


def baseline_table(t: Tables) -> pd.DataFrame:
    """BasePTQ W6A6 with each of the official base PTQ's choices (labelled by the config each record
    holds), each against the whole-output cosine on 1024 rows (the base PTQ this project first
    shipped) on the same images, beside the official code's top-1."""
    records = [r for r in t.sweep("vit_tiny_baseline") if int(r.get("jitter") or 0) == 0]
    base = next((r for r in records if r["config"]["metric"] == "cosine" and r["config"]["max_tokens"] is not None
                 and r["config"]["search"] != "grid"), None)
    rows = []
    for r in records:
        row = accuracy_row(r, t.float_record, variant=r["method"], config=_baseline_label(r))
        if base is not None and r is not base:
            p = pair_row(r, base)
            row.update({"vs whole-output cosine": p["effect"], "p": p["p"], "verdict": p["verdict"]})
        row["official code"] = OFFICIAL_BASEPTQ_W6A6
        rows.append(row)
    return pd.DataFrame(rows)


def stability_table(t: Tables) -> pd.DataFrame:
    """Per method: top-1 at each last-bit jitter of the calibration images, the spread over the
    jitters, how many validation images change their outcome against jitter 0, and for a variant
    (``ptq4vit-ties``, ``ptq4vit-float64``) how many quantizers got other parameters than its
    preset on the same images (from the records' ``scales`` digests: exact equality; across
    jitters the min-max start values move with the images, so digests are compared only on the
    same images); next to the spread over calibration draws."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in t.sweep("vit_tiny_stability"):
        groups.setdefault(r["method"], []).append(r)
    draws = {(row["method"], row["bits"]): row for row in draws_table(t).to_dict("records")}
    rows = []
    for method, rs in groups.items():
        rs = sorted(rs, key=lambda r: int(r.get("jitter") or 0))
        top1 = [float(r["top1"]) for r in rs]
        ref = next((r for r in rs if not r.get("jitter")), None)
        flips = [int((correct(r) != correct(ref)).sum()) for r in rs if ref is not None and r is not ref]
        base = method.split("-")[0]
        preset = {int(r.get("jitter") or 0): r for r in groups.get(base, [])} if base != method else {}
        differ = [sum(r["scales"][q] != preset[int(r.get("jitter") or 0)]["scales"].get(q) for q in r["scales"])
                  for r in rs if int(r.get("jitter") or 0) in preset and "scales" in r
                  and "scales" in preset[int(r.get("jitter") or 0)]]
        d = draws.get((_NAMES.get(base, base), _bits(rs[0])))
        rows.append({"method": method, "bits": _bits(rs[0]), "jitters": len(rs),
                     "top-1 per jitter": " / ".join(f"{v:.2f}" for v in top1),
                     "range": round(max(top1) - min(top1), 2),
                     "images changed vs jitter 0": " / ".join(map(str, flips)) or None,
                     f"quantizers unlike {base} (of {len(rs[0].get('scales', {}))})":
                         " / ".join(map(str, differ)) if differ else None,
                     "std over 10 draws": d["std"] if d else None})
    return pd.DataFrame(rows)


def _published_key(name: str) -> str | None:
    return "erq" if name.endswith("-erq") else None if name.endswith("-head") else name


def successors_table(t: Tables, bits: Sequence[str] = ("W8A8", "W6A6", "W4A4")) -> pd.DataFrame:
    """PTQ4ViT and its successors' quantizers on ViT-Tiny: top-1 with its interval, the drop from
    float with its paired interval, calibration seconds, beside the published drops (ViT-S, DeiT-T;
    other models, so compare drops) and the official RepQ-ViT code's top-1 on these images."""
    fp = t.float_record
    rows = []
    for b in bits:
        for name, label in SUCCESSOR_ROWS.items():
            r = t.find(_SUCCESSORS, name, b)
            if r is None:
                continue
            row = accuracy_row(r, fp, method=label, bits=b)
            pub = PUBLISHED_SUCCESSORS.get((_published_key(name), b))
            row["published drop ViT-S"] = round(PUBLISHED_FLOAT["ViT-S"] - pub[0], 2) if pub else None
            row["published drop DeiT-T"] = round(PUBLISHED_FLOAT["DeiT-T"] - pub[1], 2) if pub else None
            row["official code"] = OFFICIAL_REPQ.get(b) if name == "repq" else None
            rows.append(row)
    return pd.DataFrame(rows)


#: The best W4A4 configuration's sensitivity table (``python -m ptqlib sensitivity --method combined
#: --w-bits 4 --a-bits 4 --val-limit 500 --output ...``), committed beside the sweeps.
RESIDUAL_SENSITIVITY = "vit_tiny_combined_w4a4_sensitivity.csv"


def residual_sensitivity(t: Tables, top: int = 8) -> pd.DataFrame:
    """Where the ``combined`` preset still loses at W4A4: its quantizer groups switched on one at a
    time (first validation images), the ``top`` costliest groups first, then all weights, all
    activations and everything; empty when the table is not committed."""
    path = t.folder / RESIDUAL_SENSITIVITY
    if not path.is_file():
        return pd.DataFrame()
    frame = pd.read_csv(path)
    totals = ("all weights", "all activations", "everything")
    groups = frame[~frame["quantized"].isin(totals)].sort_values("top1_drop", ascending=False).head(top)
    out = pd.concat([groups, frame[frame["quantized"].isin(totals)]])
    return out.rename(columns={"quantized": "quantizers switched on", "quantizers": "count", "top1": "top-1",
                               "top1_drop": "drop"})[["quantizers switched on", "count", "top-1", "drop"]]


def best_successor(t: Tables, bits: str) -> dict[str, Any] | None:
    """The successors sweep's best record at ``bits`` (highest top-1)."""
    found = [r for n in SUCCESSOR_ROWS if (r := t.find(_SUCCESSORS, n, bits)) is not None]
    return max(found, key=lambda r: float(r["top1"])) if found else None


def successor_claims(t: Tables) -> pd.DataFrame:
    """The successors' targets (the best configuration at most 0.5 / 1.0 / 10 points below float,
    a one-sided paired z-test), then :data:`SUCCESSOR_PAIRS` on the same images (McNemar): each
    successor against PTQ4ViT, and each addition to AdaLog's quantizers against AdaLog without it.
    The best is picked on these images, so its target verdict leans optimistic."""
    fp = t.float_record
    out = []
    for b, margin in SUCCESSOR_TARGETS.items():
        best = best_successor(t, b)
        if best is not None and fp is not None:
            out.append(pair_row(best, fp, margin=margin, claim=f"best at {b} ({SUCCESSOR_ROWS[best['method']]}) is at "
                                f"most {margin:g} points below float"))
    for b in SUCCESSOR_TARGETS:
        for a, base, claim in SUCCESSOR_PAIRS:
            ra, rb = t.find(_SUCCESSORS, a, b), t.find(_SUCCESSORS, base, b)
            if ra is not None and rb is not None:
                out.append(pair_row(ra, rb, claim=f"{claim} at {b}"))
    frame = pd.DataFrame(out)
    if len(frame):
        frame = frame[["claim", "effect", "95% CI", "only A", "only B", "p", "verdict"]]
    return frame


def claims(t: Tables) -> pd.DataFrame:
    """The paper's claims on this model and these images: per claim the paper's statement, the
    measured effect (points, A − B), its 95 % interval, the p-value and the verdict. Rows whose
    tables are missing are left out."""
    fp = t.float_record
    out = []

    def add(claim: str, paper: str, a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, **kw: Any) -> None:
        if a is not None and b is not None:
            out.append(pair_row(a, b, claim=claim, paper=paper, **kw))

    for bits in ("W8A8", "W6A6"):
        add(f"PTQ4ViT beats base PTQ at {bits}", "yes, every model (Table 3)", t.find("main", "ptq4vit", bits),
            t.find("main", "baseptq", bits))
    add("PTQ4ViT at W8A8 is less than 0.5 points below float", "yes, every model (abstract: 'less than 0.5%')",
        t.find("main", "ptq4vit", "W8A8"), fp, margin=0.5)
    for bits in ("W8A8", "W6A6"):
        base = t.find("vit_tiny_paper", "ablation-base", bits)
        add(f"the Hessian-guided metric beats cosine ({bits}, ablation)", "yes (Table 5)",
            t.find("vit_tiny_paper", "ablation-hessian", bits), base)
        add(f"twin-uniform softmax helps ({bits}, ablation)", "yes (Table 5)",
            t.find("vit_tiny_paper", "ablation-twin-softmax", bits), base)
        add(f"twin-uniform GELU helps ({bits}, ablation)", "yes (Table 5)",
            t.find("vit_tiny_paper", "ablation-twin-gelu", bits), base)
    for name, metric in METRIC_ROWS.items():
        if name != "ptq4vit":
            add(f"Hessian-guided beats {metric} in PTQ4ViT (W6A6)", "Hessian-guided is the best metric (Sec. 4.2)",
                t.find("vit_tiny_paper", "ptq4vit", "W6A6"), t.find("vit_tiny_paper", name, "W6A6"))
    frame = pd.DataFrame(out)
    if len(frame):
        frame = frame[["claim", "paper", "effect", "95% CI", "only A", "only B", "p", "verdict"]]
    return frame


def verdict_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many claims hold, fail and are inconclusive."""
    return {v: int((frame["verdict"] == v).sum()) for v in ("holds", "fails", "inconclusive")} if len(frame) else {}


def sentences(t: Tables) -> list[str]:
    """The notebook's statements with numbers, computed from the tables (a test checks that the
    committed notebook prints exactly these)."""
    lines = []
    fp = t.float_record
    if fp is not None:
        lines.append(f"float ViT-Tiny: {float(fp['top1']):.2f} % top-1 on {fp['eval_images']} validation images")
    d = draws_table(t)
    for row in d.to_dict("records"):
        lines.append(f"{row['method']} {row['bits']} over {row['draws']} calibration draws: "
                     f"{row['mean']:.2f} ± {row['std']:.2f} (range {row['min']:.2f}–{row['max']:.2f})")
    for r in t.sweep("vit_tiny_baseline"):
        if r["config"]["metric"] == "cosine_token" and r["config"]["max_tokens"] is not None \
                and r["config"]["search"] != "grid":
            lines.append(f"BasePTQ W6A6 with the cosine per token (the official code's metric): {float(r['top1']):.2f} % "
                         f"against the official code's {OFFICIAL_BASEPTQ_W6A6:.2f} %")
    c = claims(t)
    if len(c):
        counts = verdict_counts(c)
        lines.append(f"paper claims checked: {len(c)}; " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return lines
