"""The reference results and the README's results table made from them: one source of truth.

``results/reference/<model>.json`` (committed) holds the main job's records (``python -m ptqlib
reproduce`` writes ``results/<model>.json``; ``python -m ptqlib report --promote`` copies it here,
checked). ``results/reference/official_ptq4vit.csv`` beside it holds the few numbers of the official
PTQ4ViT code the table quotes, copied from ``$PTQLIB_DATA/official-ptq4vit-results.md`` (not
committed). The README's table is rendered from these two files and nothing else, and a test
checks that the committed README equals the rendering.

* :func:`promote` — check a main-job result file and write it into the reference folder;
* :func:`results_markdown` / :func:`render_reference` — the README's table, every ptqlib top-1
  with its 95 % bootstrap interval over the images;
* :func:`draws_markdown` / :func:`render_draws` — the README's calibration-draw table: top-1 over
  a sweep's calibration draws (``results/reference/sweeps/<name>.jsonl``, a sweep's table promoted
  by ``report --promote``), mean ± std, range, and draw 0 (the standard ``calib32.txt``);
* :func:`experiments_markdown` / :func:`render_experiments` — the README's experiment tables (the
  paper's claims checked, metric comparison, ablation, calibration-set size, a fair base PTQ, one
  machine's rounding) from :mod:`ptqlib.io.experiments`, the functions notebook 04 shows;
* :func:`update_readme` — rewrite the part of a README between a table's markers;
* :func:`check_reference` — a fresh run against the reference record of the same configuration,
  paired on the images (McNemar), so the main job can say when it differs beyond noise.
"""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..core.stats import ALPHA, Comparison, compare, top1_interval
from ..errors import PtqlibError
from ..io.files import write_text
from ..io.jsonl import current_records

__all__ = ["REFERENCE_DIR", "OFFICIAL_CSV", "OFFICIAL_COLUMNS", "BEGIN", "END", "METHOD_NAMES", "TABLE_METHODS",
           "OfficialResult", "ReferenceCheck", "reference_path", "check_records", "load_records", "reference_records",
           "promote", "load_official", "results_markdown", "render_reference", "readme_table", "replace_table",
           "update_readme", "find_reference", "check_reference", "DRAWS_BEGIN", "DRAWS_END", "draws_markdown",
           "render_draws", "promote_sweep", "EXPERIMENTS_BEGIN", "EXPERIMENTS_END", "frame_markdown",
           "experiments_markdown", "render_experiments", "SUCCESSORS_BEGIN", "SUCCESSORS_END", "successors_markdown",
           "render_successors"]

#: The committed reference folder (relative to the repository root, where the commands run).
REFERENCE_DIR = Path("results/reference")
#: The official code's numbers the README quotes, in the reference folder.
OFFICIAL_CSV = "official_ptq4vit.csv"
OFFICIAL_COLUMNS = ("model", "method", "w_bits", "a_bits", "top1", "calib_seconds", "source")
#: The README's markers around the generated table.
BEGIN = "<!-- results-table:begin -->"
END = "<!-- results-table:end -->"
DRAWS_BEGIN = "<!-- draws-table:begin -->"
DRAWS_END = "<!-- draws-table:end -->"
EXPERIMENTS_BEGIN = "<!-- experiments:begin -->"
EXPERIMENTS_END = "<!-- experiments:end -->"
SUCCESSORS_BEGIN = "<!-- successors:begin -->"
SUCCESSORS_END = "<!-- successors:end -->"
#: How the table names the methods, and their row order (others follow, sorted).
METHOD_NAMES = {"ptq4vit": "PTQ4ViT", "baseptq": "BasePTQ", "minmax": "min-max"}
TABLE_METHODS = ("ptq4vit", "baseptq")

#: What every reference record needs (the per-image outcomes make paired comparisons possible).
_REQUIRED = ("model", "method", "w_bits", "a_bits", "top1", "eval_images", "predictions", "labels")
#: What makes a fresh record comparable with a reference record: the same configuration on the same images.
_MATCH = ("model", "method", "w_bits", "a_bits", "calib_files", "eval_images")


def _name(record: Mapping[str, Any]) -> str:
    """``PTQ4ViT W6A6``: how a record's configuration is named in tables and messages."""
    method = str(record.get("method"))
    return f"{METHOD_NAMES.get(method, method)} W{record.get('w_bits')}A{record.get('a_bits')}"


def reference_path(folder: str | Path, model: str) -> Path:
    """The reference file of timm model ``model`` in ``folder`` (a ``/`` in the name becomes ``_``,
    as for the main job's ``results/<model>.json``)."""
    return Path(folder) / f"{model.replace('/', '_')}.json"


def _correct(record: Mapping[str, Any]) -> np.ndarray:
    """Per image: whether the record's prediction equals the label."""
    return np.asarray(record["predictions"]) == np.asarray(record["labels"])


def check_records(records: Any, source: str | Path) -> list[dict[str, Any]]:
    """``records`` if they can serve as reference results, else a one-line PtqlibError naming ``source``.

    They must be a non-empty list of result records of one model, one per method and bit-width,
    each with every image's prediction and label (``eval_images`` of each) and a ``top1`` that
    equals the share of correct predictions.
    """
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise PtqlibError(f"{source} holds no result records (expected the JSON list the main job writes)")
    seen: set[tuple[Any, Any, Any]] = set()
    for r in records:
        _check_record(r, source)
        key = (r["method"], r["w_bits"], r["a_bits"])
        if key in seen:
            raise PtqlibError(f"{source} holds two {_name(r)} records; keep one per method and bit-width")
        seen.add(key)
    models = sorted({str(r["model"]) for r in records})
    if len(models) > 1:
        raise PtqlibError(f"{source} mixes models ({', '.join(models)}); a reference file is for one model")
    return records


def _check_record(r: Mapping[str, Any], source: str | Path, required: Sequence[str] = _REQUIRED) -> None:
    """A one-line PtqlibError unless ``r`` has ``required`` fields, every image's prediction and
    label, and a top-1 equal to the share of correct predictions."""
    missing = [k for k in required if r.get(k) is None]
    if missing:
        raise PtqlibError(f"{source}: the {_name(r)} record lacks {', '.join(missing)}; rerun the main job "
                          "(python -m ptqlib reproduce), which records every image's prediction and label")
    predictions, labels, n = r["predictions"], r["labels"], r["eval_images"]
    if not (isinstance(predictions, list) and isinstance(labels, list) and len(predictions) == len(labels) == n
            and n > 0 and all(isinstance(v, int) for v in (*predictions, *labels))):
        raise PtqlibError(f"{source}: the {_name(r)} record's predictions and labels are not {n} class indices "
                          "each; use a result file written by the main job")
    measured = 100 * float(_correct(r).mean())
    if abs(measured - float(r["top1"])) > 0.006:
        raise PtqlibError(f"{source}: the {_name(r)} record says top-1 {r['top1']} but its predictions give "
                          f"{measured:.2f}; use a result file written by the main job")


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The checked records (:func:`check_records`) of a result file."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PtqlibError(f"{path} does not exist; run the main job (python -m ptqlib reproduce) or promote its "
                          "result (python -m ptqlib report --promote results/<model>.json)") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise PtqlibError(f"cannot read {path}: {reason}; use a result file written by the main job") from None
    return check_records(records, path)


def reference_records(folder: str | Path, model: str) -> list[dict[str, Any]]:
    """The reference records of ``model`` in ``folder``; ``[]`` when it has none."""
    path = reference_path(folder, model)
    return load_records(path) if path.is_file() else []


def _reference_json(records: Sequence[Mapping[str, Any]]) -> str:
    """JSON with one field a line: the per-image lists stay on one line each, so the file stays
    small and a diff shows which fields changed."""
    blocks = []
    for r in records:
        fields = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in r.items())
        blocks.append("  {\n" + fields + "\n  }")
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def promote(source: str | Path, folder: str | Path = REFERENCE_DIR) -> tuple[Path, str]:
    """Check the main job's result file ``source`` and write it, whole, as the reference of its
    model in ``folder`` (atomically; an earlier reference of that model is replaced).

    Returns:
        The reference file written and the model it is for.
    """
    records = load_records(source)
    model = str(records[0]["model"])
    return write_text(reference_path(folder, model), _reference_json(records)), model


@dataclass(frozen=True)
class OfficialResult:
    """One number of the official code, and the file it was copied from."""

    model: str
    method: str
    w_bits: int
    a_bits: int
    top1: float
    calib_seconds: float | None
    source: str


def load_official(path: str | Path, model: str | None = None) -> list[OfficialResult]:
    """The official code's results in the CSV ``path`` (columns :data:`OFFICIAL_COLUMNS`), for
    ``model`` only when given; ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PtqlibError(f"cannot read {path}: {error}; keep its columns {', '.join(OFFICIAL_COLUMNS)}") from None
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            seconds = row["calib_seconds"]
            result = OfficialResult(model=row["model"], method=row["method"], w_bits=int(row["w_bits"]),
                                    a_bits=int(row["a_bits"]), top1=float(row["top1"]),
                                    calib_seconds=float(seconds) if seconds else None, source=row["source"])
        except (KeyError, TypeError, ValueError):
            raise PtqlibError(f"{path} line {i} is not a result row; keep the columns "
                              f"{', '.join(OFFICIAL_COLUMNS)}") from None
        if model is None or result.model == model:
            out.append(result)
    return out


def _seconds(values: Sequence[float | None]) -> str:
    """``32–43 s`` (the range over a method's bit-widths), ``942 s``, or ``—`` when none is known."""
    known = sorted(round(float(v)) for v in values if v is not None)
    if not known:
        return "—"
    low, high = known[0], known[-1]
    return f"{low} s" if low == high else f"{low}–{high} s"


def results_markdown(records: Sequence[Mapping[str, Any]], official: Sequence[OfficialResult] = ()) -> str:
    """The README's results table: one row per method for ptqlib (``records``) and one for the
    official code where ``official`` has its numbers; a column per bit-width (most bits first)
    and the calibration time. A ptqlib cell is the top-1 with its 95 % bootstrap interval over the
    images (``81.92 [80.5, 83.4]``); in each bit-width the official code was run at, the best
    top-1 is bold.
    """
    check_records(list(records), "the reference records")
    bits = sorted({(r["w_bits"], r["a_bits"]) for r in records} | {(o.w_bits, o.a_bits) for o in official},
                  reverse=True)
    present = {r["method"] for r in records} | {o.method for o in official}
    methods = [m for m in TABLE_METHODS if m in present] + sorted(present - set(TABLE_METHODS))
    ours = {(r["method"], r["w_bits"], r["a_bits"]): r for r in records}
    theirs = {(o.method, o.w_bits, o.a_bits): o for o in official}
    best = {}
    for w, a in bits:
        if any(key[1:] == (w, a) for key in theirs):
            values = [float(r["top1"]) for k, r in ours.items() if k[1:] == (w, a)]
            best[w, a] = round(max(values + [o.top1 for k, o in theirs.items() if k[1:] == (w, a)]), 2)

    def number(top1: float, w: int, a: int) -> str:
        text = f"{top1:.2f}"
        return f"**{text}**" if best.get((w, a)) == round(top1, 2) else text

    lines = ["| method | " + " | ".join(f"W{w}A{a}" for w, a in bits) + " | calibration |",
             "|---|" + "---|" * (len(bits) + 1)]
    for method in methods:
        name = METHOD_NAMES.get(method, method)
        mine = [ours.get((method, w, a)) for w, a in bits]
        if any(mine):
            cells = []
            for (w, a), r in zip(bits, mine):
                if r is None:
                    cells.append("—")
                    continue
                ci = top1_interval(_correct(r))
                cells.append(f"{number(float(r['top1']), w, a)} [{ci.low:.1f}, {ci.high:.1f}]")
            seconds = _seconds([r.get("calib_seconds") for r in mine if r is not None])
            lines.append(f"| ptqlib {name} | " + " | ".join(cells) + f" | {seconds} |")
        official_row = [theirs.get((method, w, a)) for w, a in bits]
        if any(official_row):
            cells = ["—" if o is None else number(o.top1, w, a) for (w, a), o in zip(bits, official_row)]
            seconds = _seconds([o.calib_seconds for o in official_row if o is not None])
            lines.append(f"| official {name} code | " + " | ".join(cells) + f" | {seconds} |")
    return "\n".join(lines) + "\n"


def render_reference(folder: str | Path = REFERENCE_DIR, model: str = "vit_tiny_patch16_224") -> str:
    """The README's table of ``model`` from the reference folder: ``<model>.json`` and the
    official numbers of ``official_ptq4vit.csv``."""
    records = load_records(reference_path(folder, model))
    return results_markdown(records, load_official(Path(folder) / OFFICIAL_CSV, model))


def draws_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per method and bit-width of a sweep's records: the number of calibration draws,
    top-1 mean ± sample std, min – max, and the top-1 of draw 0 (the standard calibration list)."""
    from ..io.experiments import display_name

    groups: dict[tuple[str, int, int], list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("method") != "float":
            groups.setdefault((display_name(r), r["w_bits"], r["a_bits"]), []).append(r)
    if not groups:
        raise PtqlibError("the sweep has no quantized runs to tabulate; run it first (python -m ptqlib reproduce --sweep FILE)")
    order = {METHOD_NAMES.get(m, m): i for i, m in enumerate(TABLE_METHODS)}
    lines = ["| method | bits | draws | top-1 mean ± std | min – max | draw 0 (calib32) |", "|---|---|---|---|---|---|"]
    for (method, w, a), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], -kv[0][1], -kv[0][2])):
        top1 = [float(r["top1"]) for r in rs]
        std = f" ± {statistics.stdev(top1):.2f}" if len(top1) > 1 else ""
        first = [float(r["top1"]) for r in rs if r.get("draw") == 0]
        lines.append(f"| {method} | W{w}A{a} | {len(rs)} | {statistics.fmean(top1):.2f}{std} | "
                     f"{min(top1):.2f} – {max(top1):.2f} | {f'{first[0]:.2f}' if first else '—'} |")
    return "\n".join(lines) + "\n"


def render_draws(folder: str | Path = REFERENCE_DIR, sweeps: str | Sequence[str] | None = None) -> str | None:
    """The draw table of the promoted sweeps ``sweeps`` (default: the calibration-draw tables,
    :data:`ptqlib.io.experiments.STATISTICS`), in order; None when the reference folder has none."""
    from ..io.experiments import STATISTICS, draw_records, load_tables

    tables = load_tables(folder)
    names = STATISTICS if sweeps is None else (sweeps,) if isinstance(sweeps, str) else sweeps
    if not any(name in tables.sweeps for name in names):
        return None
    return draws_markdown(draw_records(tables, names))


def frame_markdown(frame: Any) -> str:
    """A pandas DataFrame as a Markdown table (empty cells for missing values)."""
    import pandas as pd

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 0.01 and v != 0 else f"{v:.2f}"
        return str(v).replace("|", "\\|")

    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def experiments_markdown(tables: Any) -> str:
    """The README's experiment section from :class:`ptqlib.io.experiments.Tables` (the parts whose
    tables are present)."""
    from ..io import experiments as ex

    parts = []

    def add(title: str, frame: Any, note: str = "") -> None:
        if frame is not None and len(frame):
            parts.append(f"**{title}**{(' ' + note) if note else ''}\n\n{frame_markdown(frame)}")

    add("The paper's claims, checked", ex.claims(tables),
        "(effect = A − B in points with its paired 95 % interval; p: exact McNemar test, or for the 0.5-point "
        "claim a z-test against −0.5):")
    metrics, metric_pairs = ex.metric_table(tables)
    add("Metric comparison", metrics, "(PTQ4ViT with each search metric; drop from float with its paired interval):")
    add("... each metric against the Hessian-guided one", metric_pairs)
    ablation, ablation_pairs = ex.ablation_table(tables)
    add("Ablation", ablation, "(cosine and uniform quantizers as the base, each ingredient alone, all three):")
    add("... each row against the base", ablation_pairs)
    add("Calibration-set size", ex.calib_size_table(tables), "(PTQ4ViT W6A6, draw 0):")
    add("A fair base PTQ", ex.baseline_table(tables), "(BasePTQ W6A6 with each of the official code's choices):")
    add("The same command on other machines", ex.machines_table(tables), "(top-1; `results/reference/machines.csv`):")
    add("One machine's rounding", ex.stability_table(tables),
        "(W6A6, calibration images perturbed in the last bit; tie rule):")
    return "\n".join(parts)


def successors_markdown(tables: Any) -> str:
    """The README's section on PTQ4ViT's successors (``vit_tiny_successors``): the table beside the
    published drops, then the targets and each method against PTQ4ViT, paired."""
    from ..io import experiments as ex

    parts = []
    table = ex.successors_table(tables)
    if len(table):
        parts.append("**PTQ4ViT and its successors' quantizers** (drop from float with its paired 95 % interval; "
                     "published drops are on ViT-S / DeiT-T, full ImageNet; official code: the official "
                     "RepQ-ViT code on this model and these images):\n\n" + frame_markdown(table))
    claims = ex.successor_claims(tables)
    if len(claims):
        parts.append("**Targets and comparisons** (targets: a one-sided paired z-test of \"at most m points below "
                     "float\" for the best row, chosen on these images; comparisons: exact McNemar test):\n\n"
                     + frame_markdown(claims))
    residual = ex.residual_sensitivity(tables)
    if len(residual):
        parts.append("**Where W4A4 still loses** (`combined` W4A4, one quantizer group switched on at a time, the "
                     f"costliest first; first validation images; `results/reference/{ex.RESIDUAL_SENSITIVITY}`):\n\n"
                     + frame_markdown(residual))
    return "\n".join(parts)


def render_successors(folder: str | Path = REFERENCE_DIR) -> str:
    """:func:`successors_markdown` of the reference folder."""
    from ..io.experiments import load_tables

    return successors_markdown(load_tables(folder))


def render_experiments(folder: str | Path = REFERENCE_DIR) -> str:
    """:func:`experiments_markdown` of the reference folder."""
    from ..io.experiments import load_tables

    return experiments_markdown(load_tables(folder))


def promote_sweep(source: str | Path, folder: str | Path = REFERENCE_DIR) -> Path:
    """Copy a sweep's table (``results/sweeps/<name>.jsonl``: one record per line) into
    ``<folder>/sweeps/``: the records of the current engine, one per run key, each checked like a
    main-job record (the float runs have no bit-widths)."""
    source = Path(source)
    records = current_records(source)
    if not records:
        raise PtqlibError(f"{source} holds no record of this engine; run the sweep first (python -m ptqlib reproduce --sweep FILE)")
    for r in records:
        _check_record(r, source, [k for k in _REQUIRED if not (r.get("method") == "float" and k.endswith("_bits"))])
    out = Path(folder) / "sweeps" / source.name
    write_text(out, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return out


def _bounds(text: str, source: str | Path, begin: str = BEGIN, end: str = END) -> tuple[int, int]:
    """Where the generated part of ``text`` starts (after the begin marker's line) and ends (at the end marker)."""
    for marker in (begin, end):
        if text.count(marker) != 1:
            found = "no" if marker not in text else "more than one"
            raise PtqlibError(f"{source} has {found} {marker} line; mark the table with one {begin} line "
                              f"before it and one {end} line after it")
    first, last = text.index(begin) + len(begin), text.index(end)
    if first > last:
        raise PtqlibError(f"{source}: {end} comes before {begin}; put the begin marker before the table")
    if text[first:first + 1] == "\n":
        first += 1
    return first, last


def readme_table(text: str, source: str | Path = "the README") -> str:
    """The part of a README's ``text`` between the results-table markers (the table, as rendered)."""
    start, end = _bounds(text, source)
    return text[start:end]


def replace_table(text: str, table: str, source: str | Path = "the README",
                  markers: tuple[str, str] = (BEGIN, END)) -> str:
    """``text`` with the part between a table's markers (default: the results table's) replaced by ``table``."""
    start, end = _bounds(text, source, *markers)
    return text[:start] + table + text[end:]


def update_readme(path: str | Path, table: str, markers: tuple[str, str] = (BEGIN, END)) -> bool:
    """Rewrite the table between the markers of the README at ``path`` (atomically; the rest of
    the file stays byte for byte). Returns whether it changed."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise PtqlibError(f"cannot read {path}: {reason}; name the README with --readme") from None
    new = replace_table(text, table, path, markers)
    if new == text:
        return False
    write_text(path, new)
    return True


def find_reference(result: Mapping[str, Any], reference: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The reference record of ``result``'s configuration on the same images (same model and
    weights kind, method, bits, calibration files, evaluated images and labels), or None."""
    if result.get("labels") is None:
        return None
    for r in reference:
        same_weights = bool(r.get("random_init")) == bool(result.get("random_init"))
        if all(r.get(k) == result.get(k) for k in _MATCH) and same_weights and r.get("labels") == result["labels"]:
            return r
    return None


@dataclass(frozen=True)
class ReferenceCheck:
    """A fresh run against its reference record: ``comparison`` is fresh minus reference, paired
    on the images; ``notes`` say what else differs (the engine, settings of the recipe)."""

    name: str
    top1: float
    reference_top1: float
    comparison: Comparison
    notes: tuple[str, ...] = ()

    @property
    def within_noise(self) -> bool:
        """Whether the exact McNemar test finds no difference at the 5 % level."""
        return self.comparison.test.p_value >= ALPHA

    def line(self) -> str:
        """``PTQ4ViT W6A6: 77.85 vs reference 78.31 (-0.46 [-1.2, 0.3]), McNemar p=0.21: within noise``."""
        d = self.comparison.difference
        verdict = "within noise" if self.within_noise else "differs from the reference beyond noise"
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (f"{self.name}: {self.top1:.2f} vs reference {self.reference_top1:.2f} ({d.estimate:+.2f} "
                f"[{d.low:.1f}, {d.high:.1f}]), McNemar p={self.comparison.test.p_value:.2g}: {verdict}{notes}")


def check_reference(result: Mapping[str, Any], reference: Sequence[Mapping[str, Any]]) -> ReferenceCheck | None:
    """Compare a fresh result record with the reference record of the same configuration
    (:func:`find_reference`), image by image; None when the reference has none."""
    ref = find_reference(result, reference)
    if ref is None:
        return None
    notes = []
    if result.get("engine") != ref.get("engine"):
        notes.append("the engine changed since the reference")
    mine, theirs = result.get("config") or {}, ref.get("config") or {}
    changed = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
    if changed:
        notes.append(f"settings differ: {', '.join(changed)}")
    return ReferenceCheck(_name(result), float(result["top1"]), float(ref["top1"]),
                          compare(_correct(result), _correct(ref)), tuple(notes))
