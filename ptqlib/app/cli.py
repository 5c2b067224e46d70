"""Command line: ``python -m ptqlib {quantize,reproduce,sensitivity,evaluate,export,report,models,data} ...``.

Every mistake ends in one line ``error: <what is wrong; what to do>`` and exit code 2; ``--debug``
shows the stack trace instead.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..engine.config import PTQConfig, choices, config_fields
from ..errors import PtqlibError
from ..io.files import check_writable, write_csv, write_json, write_text

if TYPE_CHECKING:
    from .pipeline import MethodRun, RunSpec

__all__ = ["main", "build_parser", "CONFIG_FLAGS", "OWN_FLAGS", "REPRODUCE_METHODS", "REPRODUCE_BITS"]

#: The main job (``reproduce``): its methods and (weight, activation) bit-widths.
REPRODUCE_METHODS = ("baseptq", "ptq4vit")
REPRODUCE_BITS = ((8, 8), (6, 6), (4, 4))


def _checked(convert, ok, what: str):
    """An argparse type: ``convert(text)``, accepted when ``ok(value)``; ``what`` names it in the error."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{what}, got {value}")
        return value
    return parse


def _int_at_least(lo: int, what: str):
    """An argparse type: an integer >= ``lo``; ``what`` names it in the error message."""
    return _checked(int, lambda v: v >= lo, f"expected {what}")


_bits = _checked(int, lambda v: 2 <= v <= 16, "bit-width must be an integer from 2 to 16")
_positive = _int_at_least(1, "a positive integer")
_non_negative = _int_at_least(0, "a whole number >= 0")


def _check_device(name: str) -> None:
    """PtqlibError unless torch can use device ``name`` here (before any work is done)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise PtqlibError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise PtqlibError(f"device {name} is not available (this machine has {found} CUDA devices); use --device cpu")


_gigabytes = _checked(float, lambda v: 0 < v < float("inf"), "expected a positive memory size in GB such as 8 or 0.5")
_number = _checked(float, math.isfinite, "expected a number")
_integer = _checked(int, lambda v: True, "expected a whole number")


def _tokens(text: str) -> int:
    """An argparse type: a positive integer, or 0 (which the caller reads as "all")."""
    value = _positive(text) if text.strip() != "0" else 0
    return value


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name, optionally with a tag (name.tag)")
    p.add_argument("--checkpoint", type=Path, help=".safetensors or .pth weights (default: PTQLIB_DATA/weights, else timm download)")
    p.add_argument("--random-init", action="store_true", help="random weights (structure tests, teaching)")
    p.add_argument("--data", type=Path, help="data folder laid out like shared/data (default: $PTQLIB_DATA)")
    p.add_argument("--calib-dir", type=Path, help="calibration images: labels.txt + images, or <wnid>/ folders")
    p.add_argument("--calib-list", type=Path, help="file names of the calibration images, one a line")
    p.add_argument("--calib-size", type=_positive, default=32, help="number of calibration images (default 32)")
    p.add_argument("--val-dir", type=Path, help="validation images: labels.txt + images, or ImageNet val/<wnid>/")
    p.add_argument("--val-limit", type=_positive, help="evaluate only the first N validation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--batch-size", type=_positive, default=64, help="evaluation batch size")
    p.add_argument("--workers", type=_non_negative, default=0, help="data-loading worker processes")
    p.add_argument("--micro-batch", type=_tokens, default=8,
                   help="calibration images per capture pass: less memory, same scales (default 8; 0 = all at once)")
    p.add_argument("--max-memory", type=_gigabytes, metavar="GB",
                   help="memory calibration may use (default: what is available); more capture passes if needed")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out validation images that cannot be decoded (counted, named and recorded in the result) "
                        "instead of stopping; calibration images must all be readable")


#: PTQConfig fields with flags of their own (``--method``, ``--w-bits``, ``--a-bits``, ``--seed``).
OWN_FLAGS = ("method", "w_bits", "a_bits", "seed")


def _optional(hint: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def _flag_options(hint: Any) -> dict[str, Any]:
    """argparse options for a PTQConfig field of type ``hint``: choices for a Literal, ``--x/--no-x``
    for a bool, a checked number otherwise; an optional integer takes 0 for None."""
    values = choices(hint)
    if values:
        return {"choices": values, "type": type(values[0])}
    base, optional = _optional(hint)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if base is int:
        return {"type": _tokens if optional else _integer, "metavar": "N"}
    if base is float:
        return {"type": _number, "metavar": "X"}
    return {"type": base}


class _Flag(typing.NamedTuple):
    """One generated method-setting flag: the PTQConfig field, the flag and its argparse options."""

    field: str
    flag: str
    options: dict[str, Any]
    zero_is_none: bool  # an optional integer: 0 on the command line means None


def _config_flags() -> list[_Flag]:
    """One flag per PTQConfig field but ``OWN_FLAGS``, with the field's help and type."""
    flags = []
    for f, hint in config_fields():
        if f.name in OWN_FLAGS:
            continue
        options = _flag_options(hint)
        zero_is_none = options.get("type") is _tokens
        help_text = f.metadata.get("help", "").replace("%", "%%") + (" (0 = None)" if zero_is_none else "")
        flags.append(_Flag(f.name, "--" + f.name.replace("_", "-"), {**options, "default": None, "help": help_text},
                           zero_is_none))
    return flags


#: The method-setting flags, one per PTQConfig field (``{field: flag}``), generated from the config.
CONFIG_FLAGS: dict[str, str] = {f.field: f.flag for f in _config_flags()}


def _add_method_args(p: argparse.ArgumentParser, single: bool) -> None:
    if single:
        p.add_argument("--method", default="ptq4vit", help="minmax, baseptq or ptq4vit")
        p.add_argument("--w-bits", type=_bits, default=8)
        p.add_argument("--a-bits", type=_bits, default=8)
    group = p.add_argument_group("method settings", "each replaces the value the method sets (default: the method's)")
    for f in _config_flags():
        group.add_argument(f.flag, dest=f.field, **f.options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ptqlib", description="Post-training quantization of vision transformers.")
    parser.add_argument("--debug", action="store_true", help="show stack traces")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="calibrate one method and evaluate it")
    _add_data_args(q)
    _add_method_args(q, single=True)
    q.add_argument("--output", type=Path, help="write the result as JSON here")
    q.add_argument("--no-fp", action="store_true", help="skip the float evaluation")
    q.add_argument("--save", type=Path, metavar="PATH", help="save the calibrated model (scales + header) as .safetensors")

    r = sub.add_parser("reproduce", help="the main job: BasePTQ and PTQ4ViT at W8A8, W6A6, W4A4 next to float")
    _add_data_args(r)
    _add_method_args(r, single=False)
    r.add_argument("--methods", help="comma-separated methods (default: %s)" % ",".join(REPRODUCE_METHODS))
    r.add_argument("--bits", help="comma-separated W/A pairs, e.g. 8/8,6/6 (default: %s)"
                   % ",".join(f"{w}/{a}" for w, a in REPRODUCE_BITS))
    r.add_argument("--output-dir", type=Path, default=Path("results"))
    r.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity table")
    r.add_argument("--sensitivity-images", type=_positive, default=500,
                   help="validation images for the sensitivity table (the first N; default 500)")
    r.add_argument("--reference-dir", type=Path, default=Path("results/reference"), metavar="DIR",
                   help="compare each run image by image with the record of the same configuration in "
                        "DIR/<model>.json, if any (default results/reference)")
    from .sweep import add_sweep_args  # reproduce --sweep FILE / --draws / --executor / --status

    add_sweep_args(r)

    s = sub.add_parser("sensitivity", help="top-1 with one kind of quantizer switched on at a time")
    _add_data_args(s)
    _add_method_args(s, single=True)
    s.add_argument("--output", type=Path, help="write the table as CSV here")

    e = sub.add_parser("evaluate", help="evaluate a model saved by 'quantize --save' (no recalibration)")
    e.add_argument("--quantized", type=Path, required=True, metavar="PATH", help="the file written by quantize --save")
    e.add_argument("--checkpoint", type=Path, help="float weights (default: the checkpoint recorded in the file)")
    e.add_argument("--data", type=Path, help="data folder laid out like shared/data (default: $PTQLIB_DATA)")
    e.add_argument("--val-dir", type=Path, help="validation images: labels.txt + images, or ImageNet val/<wnid>/")
    e.add_argument("--val-limit", type=_positive, help="evaluate only the first N validation images")
    e.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    e.add_argument("--batch-size", type=_positive, default=64, help="evaluation batch size")
    e.add_argument("--workers", type=_non_negative, default=0, help="data-loading worker processes")
    e.add_argument("--no-progress", action="store_true", help="hide progress bars")
    e.add_argument("--skip-corrupt", action="store_true",
                   help="leave out validation images that cannot be decoded (counted, named and recorded in the "
                        "result) instead of stopping")
    e.add_argument("--output", type=Path, help="write the result as JSON here")

    x = sub.add_parser("export", help="write a saved model's weights (and activations) as k-bit integer codes",
                       description="Write the integer codes of a model saved by 'quantize --save': every quantized "
                                   "weight as k-bit codes with its scales, and with --activations N the activation "
                                   "codes of N images. Layouts (also in the file's header): uniform: k-bit integer "
                                   "q, value q*scale; twin_softmax / twin_gelu: bit k-1 is the range / sign bit, "
                                   "bits 0..k-2 the magnitude.")
    x.add_argument("--quantized", type=Path, required=True, metavar="PATH", help="the file written by quantize --save")
    x.add_argument("--output", type=Path, required=True, metavar="PATH",
                   help="the .safetensors file to write, or an existing folder (then <name>.int.safetensors in it)")
    x.add_argument("--activations", type=_non_negative, default=0, metavar="N",
                   help="also export the activation codes of N images (default 0: weights only)")
    x.add_argument("--image-dir", type=Path, help="where those images come from (default: the calibration folder "
                                                  "of $PTQLIB_DATA, in the order the model was calibrated with)")
    x.add_argument("--checkpoint", type=Path, help="float weights (default: the checkpoint recorded in the file)")
    x.add_argument("--data", type=Path, help="data folder laid out like shared/data (default: $PTQLIB_DATA)")
    x.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")

    t = sub.add_parser("report", help="the README's results table from the reference results (results/reference/)",
                       description="Print the README's results table, rendered from DIR/<model>.json (the main "
                                   "job's records) and DIR/official_ptq4vit.csv (the official code's numbers); "
                                   "--promote makes a main-job result the reference first, --readme rewrites the "
                                   "table between the README's results-table markers.")
    t.add_argument("--promote", type=Path, metavar="JSON",
                   help="check this main-job result (results/<model>.json) and make it the reference of its model, "
                        "or a sweep's table (results/sweeps/<name>.jsonl: the calibration-draw table)")
    t.add_argument("--reference-dir", type=Path, default=Path("results/reference"), metavar="DIR",
                   help="the reference folder (default results/reference)")
    t.add_argument("--model", default="vit_tiny_patch16_224",
                   help="whose table (default vit_tiny_patch16_224; with --promote: the promoted file's model)")
    t.add_argument("--readme", type=Path, metavar="PATH",
                   help="rewrite the table between the <!-- results-table:begin/end --> lines of this file")

    sub.add_parser("models", help="the paper's models, their timm tags and the paper's accuracy")
    _add_data_command(sub)
    return parser


def _add_data_command(sub: Any) -> None:
    """``data fetch`` / ``data verify`` / ``data paper-csv``: the public data folder (``ptqlib.io.fetch``)."""
    d = sub.add_parser("data", help="the public data folder: download it (fetch), check it (verify), the paper's table",
                       description="The data folder the other commands read when neither --data nor PTQLIB_DATA "
                                   "names one: the repository's data/. 'fetch' downloads the public ViT-Tiny weights "
                                   "and a public ImageNet sample into it (see data/README.md).")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download the public weights and images (resumable, checksummed)",
                        description="Download what data/manifest.json lists and is not yet in the data folder: the "
                                    "ViT-Tiny weights from the Hugging Face hub and 200 ImageNet sample images "
                                    "(calibration pool; the 168 outside calib32.txt become imagenet-sample-val/). "
                                    "Interrupted downloads resume from their .part files; every file is checked "
                                    "against its size and sha256.")
    f.add_argument("--root", type=Path, metavar="DIR", help="the data folder to fill (default: the repository's data/)")
    f.add_argument("--mirror", metavar="URL",
                   help="fetch <URL>/<path> (a web server holding a copy of a data folder) instead of each file's "
                        "upstream URL (default: $PTQLIB_DATA_MIRROR)")
    f.add_argument("--manifest", type=Path, metavar="FILE", help="the list of files (default: data/manifest.json)")
    f.add_argument("--timeout", type=_checked(float, lambda v: 0 < v < float("inf"), "expected seconds > 0"),
                   default=30.0, metavar="S", help="seconds to wait for a server (default 30)")
    f.add_argument("--no-verify", action="store_true",
                   help="do not check sizes and checksums (only when upstream changed a file and the manifest "
                        "is stale)")
    v = dsub.add_parser("verify", help="check the data folder's files against the manifest (size and sha256)")
    v.add_argument("--root", type=Path, metavar="DIR", help="the data folder (default: the repository's data/)")
    v.add_argument("--manifest", type=Path, metavar="FILE", help="the list of files (default: data/manifest.json)")
    c = dsub.add_parser("paper-csv", help="write the paper's table (ptqlib.io.models.PAPER_MODELS) as CSV")
    c.add_argument("--output", type=Path, metavar="PATH", help="default: data/paper_ptq4vit.csv of the repository")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The method settings given on the command line (0 for an optional integer means None), and the seed."""
    out: dict[str, Any] = {}
    for f in _config_flags():
        value = getattr(args, f.field, None)
        if value is not None:
            out[f.field] = None if f.zero_is_none and value == 0 else value
    out["seed"] = args.seed
    return out


def _config(args: argparse.Namespace, method: str, w_bits: int, a_bits: int) -> PTQConfig:
    from ..engine.methods import get_method

    return get_method(method, w_bits, a_bits, **_overrides(args))


def _spec(args: argparse.Namespace) -> RunSpec:
    from .pipeline import RunSpec

    _check_device(args.device)
    return RunSpec(model=args.model, checkpoint=args.checkpoint, random_init=args.random_init, data=args.data,
                   calib_dir=args.calib_dir, calib_list=args.calib_list, calib_size=args.calib_size,
                   val_dir=args.val_dir, val_limit=args.val_limit, seed=args.seed, device=args.device,
                   batch_size=args.batch_size, workers=args.workers, micro_batch=args.micro_batch or None,
                   max_memory=args.max_memory, skip_corrupt=args.skip_corrupt)


def _check_outputs(*paths: Path | None) -> None:
    """Fail before any work when an output could not be written (nothing is created or emptied)."""
    for path in paths:
        if path is not None:
            check_writable(path)


def _note_skipped(accuracy) -> None:
    """Print how many images an evaluation skipped (with a few names), if any."""
    from ..io.evaluate import skipped_note

    note = None if accuracy is None else skipped_note(accuracy)
    if note:
        print(note, flush=True)


def _table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows)
    return (frame if columns is None else frame[list(columns)]).to_string(index=False)


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .jobs import RESULT_COLUMNS, save_run
    from .pipeline import prepare, run_method

    config = _config(args, args.method, args.w_bits, args.a_bits)
    _check_outputs(args.output, args.save)
    prepared = prepare(_spec(args), evaluate_float=not args.no_fp, progress=not args.no_progress)
    run = run_method(prepared, config, progress=not args.no_progress)
    print(_table([run.result], [c for c in RESULT_COLUMNS if c in run.result]))
    _note_skipped(run.accuracy)
    if args.save is not None:
        save_run(run, prepared, args.save)
        run.result["saved"] = str(args.save)
        print(f"wrote {args.save}")
    if args.output is not None:
        write_json(args.output, run.result)
        print(f"wrote {args.output}")
    return 0


def _parse_bits(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in text.split(","):
        try:
            w, a = (int(v) for v in item.strip().split("/"))
        except ValueError:
            raise PtqlibError(f"--bits takes W/A pairs like 8/8,6/6; got {item!r}") from None
        for v in (w, a):
            if not 2 <= v <= 16:
                raise PtqlibError(f"bit-widths must be integers from 2 to 16; got {item!r}")
        pairs.append((w, a))
    return pairs


def _print_run(run: MethodRun) -> None:
    r = run.result
    print(f"{r['method']} W{r['w_bits']}A{r['a_bits']}: top-1 {r['top1']:.2f} % (float {r['fp_top1']:.2f}), "
          f"calibration {r['calib_seconds']:.1f} s", flush=True)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .jobs import ReproducePaths, ensure_data, reproduce, reproduce_sensitivity
    from .pipeline import prepare
    from .report import reference_path, reference_records
    from .sweep import cmd_sweep, sweep_requested

    if sweep_requested(args):
        return cmd_sweep(args, _overrides(args), check_device=_check_device)
    methods = [m.strip() for m in (args.methods or ",".join(REPRODUCE_METHODS)).split(",") if m.strip()]
    bits = args.bits or ",".join(f"{w}/{a}" for w, a in REPRODUCE_BITS)
    configs = [_config(args, m, w, a) for m in methods for w, a in _parse_bits(bits)]
    sensitivity_config = None if args.no_sensitivity else _config(args, "ptq4vit", 8, 8)
    paths = ReproducePaths.under(args.output_dir, args.model)
    paths.check_writable(sensitivity=not args.no_sensitivity)
    reference = reference_records(args.reference_dir, args.model)
    progress = not args.no_progress
    ensure_data(args.data, calib_dir=args.calib_dir, val_dir=args.val_dir)
    prepared = prepare(_spec(args), progress=progress)
    fp = prepared.float_accuracy(progress=progress)
    print(f"float {args.model}: top-1 {fp.top1:.2f} %, top-5 {fp.top5:.2f} % on {fp.images} images")
    _note_skipped(fp)
    if reference:
        print(f"each run is compared with its record in {reference_path(args.reference_dir, args.model)}, if any")
    rows = reproduce(prepared, configs, paths, progress=progress, on_run=_print_run, reference=reference,
                     on_reference=lambda check: print(check.line(), flush=True))
    print()
    print(_table(rows))
    print(f"\nwrote {paths.csv} and {paths.json}")
    if sensitivity_config is not None:
        table = reproduce_sensitivity(prepared, sensitivity_config, args.sensitivity_images, paths.sensitivity,
                                      progress=progress)
        print(f"\nper-layer sensitivity, PTQ4ViT W8A8, first {table.images} images (float {table.fp.top1:.2f} %; "
              "only the named quantizers on):")
        print(_table(table.rows))
        print(f"wrote {paths.sensitivity}")
    return 0


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from .pipeline import prepare, run_method
    from .sensitivity import sensitivity

    config = _config(args, args.method, args.w_bits, args.a_bits)
    _check_outputs(args.output)
    progress = not args.no_progress
    prepared = prepare(_spec(args), progress=progress)
    fp = prepared.float_accuracy(progress=progress)
    run = run_method(prepared, config, progress=progress)
    rows = sensitivity(run.model, prepared.loader(), fp=fp, device=args.device, progress=progress)
    _note_skipped(fp)
    print(f"float top-1 {fp.top1:.2f} %; {config.method} W{config.w_bits}A{config.a_bits}, one group at a time:")
    print(_table(rows))
    if args.output is not None:
        write_csv(args.output, rows)
        print(f"wrote {args.output}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import (DRAWS_BEGIN, DRAWS_END, EXPERIMENTS_BEGIN, EXPERIMENTS_END, SUCCESSORS_BEGIN, SUCCESSORS_END,
                         promote, promote_sweep, render_draws, render_experiments, render_reference, render_successors,
                         update_readme)

    model = args.model
    if args.promote is not None and args.promote.suffix == ".jsonl":  # a sweep's table
        print(f"wrote {promote_sweep(args.promote, args.reference_dir)}")
    elif args.promote is not None:
        written, model = promote(args.promote, args.reference_dir)
        print(f"wrote {written}")
    table = render_reference(args.reference_dir, model)
    draws = render_draws(args.reference_dir)
    print(table, end="")
    if draws is not None:
        print("\n" + draws, end="")
    if args.readme is not None:
        changed = update_readme(args.readme, table)
        if draws is not None:
            changed = update_readme(args.readme, draws, (DRAWS_BEGIN, DRAWS_END)) or changed
        experiments = render_experiments(args.reference_dir)
        if experiments and EXPERIMENTS_BEGIN in Path(args.readme).read_text(encoding="utf-8"):
            changed = update_readme(args.readme, experiments, (EXPERIMENTS_BEGIN, EXPERIMENTS_END)) or changed
        successors = render_successors(args.reference_dir)
        if successors and SUCCESSORS_BEGIN in Path(args.readme).read_text(encoding="utf-8"):
            changed = update_readme(args.readme, successors, (SUCCESSORS_BEGIN, SUCCESSORS_END)) or changed
        print(f"{'rewrote the tables in' if changed else 'the tables are up to date in'} {args.readme}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..io.models import PAPER_MODELS

    print(_table([asdict(m) for m in PAPER_MODELS], list(asdict(PAPER_MODELS[0]))))
    return 0


def _export_images(args: argparse.Namespace, header: dict[str, Any], root: Path | None, model):
    """The first ``--activations`` images to push through the model for the activation codes."""
    import torch

    from ..io.data import DataPaths, LabeledImages, model_transform

    n = args.activations
    transform = model_transform(model)
    if args.image_dir is not None:
        folder, files = args.image_dir, None
    elif root is not None:
        folder = DataPaths.from_root(root).calib_dir
        listed = (header.get("info") or {}).get("calib_files") or []
        files = listed[:n] if len(listed) >= n else None
    else:
        raise PtqlibError("--activations needs images but none were named; pass --image-dir DIR or set PTQLIB_DATA to a folder holding "
                          "imagenet-calib/")
    dataset = LabeledImages(folder, transform=transform, files=files, limit=None if files else n)
    if len(dataset) < n:
        raise PtqlibError(f"--activations {n} asks for more than the {len(dataset)} images in {folder}; "
                          "pass a smaller count")
    return torch.stack([dataset[i][0] for i in range(n)])


def _export_target(args: argparse.Namespace) -> Path:
    out: Path = args.output
    if out.is_dir():
        out = out / f"{args.quantized.name.removesuffix('.safetensors')}.int.safetensors"
    if out.resolve() == args.quantized.resolve():
        raise PtqlibError(f"--output {out} is the quantized model file itself; choose another path")
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    from ..io.checkpoints import export_integers, load_quantized, read_header
    from ..io.data import data_root

    _check_device(args.device)
    header = read_header(args.quantized)
    out = _export_target(args)
    check_writable(out)
    root = data_root(args.data)
    model = load_quantized(args.quantized, checkpoint=args.checkpoint, data_root=root, device=args.device)
    images = _export_images(args, header, root, model) if args.activations else None
    try:
        written = export_integers(model, out, images, config=PTQConfig(**header["config"]), device=args.device)
    except RuntimeError as error:  # a quantizer used twice per forward (no single tensor to export)
        raise PtqlibError(f"cannot export the activations of {header['model']} ({error}); "
                          "export the weights only (--activations 0)") from None
    entries = written["tensors"].values()
    parts = []
    for kind, bits in (("weight", header["w_bits"]), ("activation", header["a_bits"])):
        chosen = [e for e in entries if e["kind"] == kind]
        if chosen or kind == "weight":
            layouts = ", ".join(sorted({e["layout"] for e in chosen})) or "none"
            parts.append(f"{len(chosen)} {kind} tensors ({bits}-bit: {layouts})")
    size = out.stat().st_size / 2**20
    source = f" of {args.activations} image{'s' if args.activations != 1 else ''}" if args.activations else ""
    twin = any(e["layout"].startswith("twin") for e in entries)
    print(f"wrote {out} ({size:.1f} MiB): {' and '.join(parts)}{source}, {header['method']} "
          f"W{header['w_bits']}A{header['a_bits']} {header['model']}; layouts in the file's header"
          + (" (twin: bit k-1 = range/sign bit, bits 0..k-2 = magnitude)" if twin else ""))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .jobs import evaluate_saved

    _check_device(args.device)
    _check_outputs(args.output)
    done = evaluate_saved(args.quantized, checkpoint=args.checkpoint, data=args.data, val_dir=args.val_dir,
                          val_limit=args.val_limit, device=args.device, batch_size=args.batch_size,
                          workers=args.workers, skip_corrupt=args.skip_corrupt, progress=not args.no_progress)
    result = done.result
    print(_table([result], ["method", "w_bits", "a_bits", "top1", "top5", "eval_images", "saved_top1"]))
    _note_skipped(done.accuracy)
    if done.same_as_saved is not None:
        print(f"top-1 {'equals' if done.same_as_saved else 'differs from'} the {result['saved_top1']:.2f} % "
              "measured when the model was saved")
    if args.output is not None:
        write_json(args.output, result)
        print(f"wrote {args.output}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from ..io import fetch

    if args.data_command == "paper-csv":
        out = args.output or fetch.default_manifest_path().with_name(fetch.PAPER_CSV_NAME)
        write_text(out, fetch.paper_csv_text())
        print(f"wrote {out}")
        return 0
    root = args.root
    if args.data_command == "verify":
        from ..io.data import DEFAULT_DATA_DIR

        root = root or DEFAULT_DATA_DIR
        manifest = fetch.load_manifest(args.manifest)
        problems = fetch.verify_data(root, manifest)
        if problems:
            raise PtqlibError(f"{len(problems)} of {len(manifest.entries)} files in {root} are missing or differ from "
                              f"the manifest ({'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}): run "
                              "python -m ptqlib data fetch")
        print(f"all {len(manifest.entries)} files in {root} match {manifest.source}")
        return 0
    done = fetch.fetch_data(root, manifest=args.manifest, mirror=args.mirror, verify=not args.no_verify,
                            timeout=args.timeout)
    got = f"downloaded {len(done.downloaded)} files ({done.received_bytes / 1e6:.1f} MB)" if done.downloaded \
        else "nothing to download"
    print(f"{got}; {done.root} holds the weights, {done.calib_images} calibration images (imagenet-calib/, "
          f"calib32.txt) and {done.val_images} evaluation images (imagenet-sample-val/)")
    if os.environ.get("PTQLIB_DATA"):
        print(f"note: PTQLIB_DATA={os.environ['PTQLIB_DATA']} wins over {done.root}; unset it to use these files")
    return 0


COMMANDS = {"quantize": _cmd_quantize, "reproduce": _cmd_reproduce, "sensitivity": _cmd_sensitivity,
            "evaluate": _cmd_evaluate, "export": _cmd_export, "report": _cmd_report, "models": _cmd_models,
            "data": _cmd_data}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PtqlibError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory; use --micro-batch 2 or --chunks 4 to calibrate in smaller pieces", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
