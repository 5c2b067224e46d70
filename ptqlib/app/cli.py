"""Command line: ``python -m ptqlib {quantize,reproduce,sensitivity,evaluate,export,models} ...``.

Every mistake ends in one line ``error: <what is wrong; what to do>`` and exit code 2; ``--debug``
shows the stack trace instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import PtqlibError

__all__ = ["main", "build_parser"]

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
_share = _checked(float, lambda v: 0.0 <= v <= 1.0, "expected a share from 0 to 1")


def _tokens(text: str) -> int:
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


def _add_method_args(p: argparse.ArgumentParser, single: bool) -> None:
    if single:
        p.add_argument("--method", default="ptq4vit", help="minmax, baseptq or ptq4vit")
        p.add_argument("--w-bits", type=_bits, default=8)
        p.add_argument("--a-bits", type=_bits, default=8)
    p.add_argument("--search", choices=("grid", "coarse_to_fine", "coarse_to_fine_local"), help="candidate search strategy")
    p.add_argument("--max-tokens", type=_tokens, help="rows per layer used to score candidates (0 = all; default 1024)")
    p.add_argument("--metric", choices=("mse", "l1", "hessian", "cosine", "pearson"), help="override the method's metric")
    p.add_argument("--grad-loss", choices=("pseudo_label_ce", "label_ce", "official_kl"), help="loss behind the Hessian metric")
    p.add_argument("--grad-norm", choices=("none", "image", "channel"), help="normalisation of the Hessian metric's gradients")
    p.add_argument("--row-select", choices=("fisher", "random"), help="which rows --max-tokens keeps")
    p.add_argument("--outlier-rows", type=_share, help="share of the fisher rows taken by largest input magnitude (default 0.125)")
    p.add_argument("--matmul-granularity", choices=("tensor", "head"), help="scales of the matmul operands")
    p.add_argument("--order", choices=("parallel", "sequential"), help="calibration order")
    p.add_argument("--chunks", type=_positive, help="capture passes (memory/time trade-off)")


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
    r.add_argument("--methods", default=",".join(REPRODUCE_METHODS), help="comma-separated methods")
    r.add_argument("--bits", default=",".join(f"{w}/{a}" for w, a in REPRODUCE_BITS), help="comma-separated W/A pairs, e.g. 8/8,6/6")
    r.add_argument("--output-dir", type=Path, default=Path("results"))
    r.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity table")
    r.add_argument("--sensitivity-images", type=_positive, default=500,
                   help="validation images for the sensitivity table (the first N; default 500)")

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

    sub.add_parser("models", help="the paper's models, their timm tags and the paper's accuracy")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("search", "max_tokens", "metric", "grad_loss", "grad_norm", "row_select", "outlier_rows", "matmul_granularity", "order", "chunks")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if out.get("max_tokens") == 0:
        out["max_tokens"] = None  # 0 means every row
    out["seed"] = args.seed
    return out


def _spec(args: argparse.Namespace):
    from .pipeline import RunSpec

    _check_device(args.device)
    return RunSpec(model=args.model, checkpoint=args.checkpoint, random_init=args.random_init, data=args.data,
                   calib_dir=args.calib_dir, calib_list=args.calib_list, calib_size=args.calib_size,
                   val_dir=args.val_dir, val_limit=args.val_limit, seed=args.seed, device=args.device,
                   batch_size=args.batch_size, workers=args.workers, micro_batch=args.micro_batch or None,
                   max_memory=args.max_memory, skip_corrupt=args.skip_corrupt)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise PtqlibError(f"cannot write {path}: {e.strerror or e}; choose a writable output path") from None


def _check_writable(path: Path) -> None:
    """Fail now, before any work, when ``path`` cannot be created; leaves no file behind."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as e:
        raise PtqlibError(f"cannot write {path}: {e.strerror or e}; choose a writable output path") from None
    if not existed:
        path.unlink()


SAVED_INFO = ("seed", "calib_images", "calib_files", "top1", "top5", "eval_images", "fp_top1", "skipped_images")


def _note_skipped(accuracy) -> None:
    """Print how many images an evaluation skipped (with a few names), if any."""
    from ..io.evaluate import skipped_note

    note = None if accuracy is None else skipped_note(accuracy)
    if note:
        print(note, flush=True)


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    import pandas as pd

    return pd.DataFrame(rows)[list(columns)].to_string(index=False)


RESULT_COLUMNS = ("method", "w_bits", "a_bits", "top1", "top5", "fp_top1", "calib_seconds", "eval_seconds")


def _cmd_quantize(args: argparse.Namespace) -> int:
    from ..engine.methods import get_method
    from .pipeline import prepare, run_method

    config = get_method(args.method, args.w_bits, args.a_bits, **_overrides(args))
    if args.output is not None:
        _write(args.output, "")  # fail before the work, not after
    if args.save is not None:
        _check_writable(args.save)
    prepared = prepare(_spec(args), evaluate_float=not args.no_fp, progress=not args.no_progress)
    result = run_method(prepared, config, progress=not args.no_progress)
    cols = [c for c in RESULT_COLUMNS if c in result]
    print(_table([result], cols))
    _note_skipped(prepared.extra.get("last_accuracy"))
    if args.save is not None:
        from ..io.checkpoints import save_quantized

        info = {k: result.get(k) for k in SAVED_INFO}
        info["val_limit"] = args.val_limit
        save_quantized(prepared.extra["last_model"], args.save, config, model_name=args.model, checkpoint=prepared.checkpoint,
                       random_init=args.random_init, init_seed=args.seed, info=info)
        result["saved"] = str(args.save)
        print(f"wrote {args.save}")
    if args.output is not None:
        _write(args.output, json.dumps(result, indent=2) + "\n")
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


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ..engine.methods import get_method
    from ..io.models import paper_model
    from .pipeline import prepare, run_method
    from .sensitivity import sensitivity

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    pairs = _parse_bits(args.bits)
    configs = [get_method(m, w, a, **_overrides(args)) for m in methods for w, a in pairs]
    out_dir: Path = args.output_dir
    _write(out_dir / ".write-test", "")
    (out_dir / ".write-test").unlink()
    progress = not args.no_progress
    prepared = prepare(_spec(args), progress=progress)
    if prepared.val is None:
        raise PtqlibError("no validation images: pass --val-dir DIR or set PTQLIB_DATA to a folder holding imagenet-val-1300/")
    fp = prepared.fp
    print(f"float {args.model}: top-1 {fp.top1:.2f} %, top-5 {fp.top5:.2f} % on {fp.images} images")
    _note_skipped(fp)
    results = []
    stem = args.model.replace("/", "_")
    for config in configs:
        result = run_method(prepared, config, progress=progress)
        results.append(result)
        print(f"{config.method} W{config.w_bits}A{config.a_bits}: top-1 {result['top1']:.2f} % "
              f"(float {result['fp_top1']:.2f}), calibration {result['calib_seconds']:.1f} s", flush=True)
        _write(out_dir / f"{stem}.json", json.dumps(results, indent=2) + "\n")
    import pandas as pd

    paper = paper_model(args.model)
    table = pd.DataFrame(results)[list(RESULT_COLUMNS) + ["eval_images"]]
    if paper is not None:
        table["paper_top1"] = [getattr(paper, f"{'base' if r['method'] == 'baseptq' else r['method']}_w{r['w_bits']}a{r['a_bits']}", None)
                               for r in results]
    _write(out_dir / f"{stem}.csv", table.to_csv(index=False))
    print()
    print(table.to_string(index=False))
    print(f"\nwrote {out_dir / (stem + '.csv')} and {out_dir / (stem + '.json')}")
    if not args.no_sensitivity:
        config = get_method("ptq4vit", 8, 8, **_overrides(args))
        run_method(prepared, config, progress=progress)
        model = prepared.extra.pop("last_model")
        from torch.utils.data import Subset

        from ..io.data import make_loader
        from ..io.evaluate import evaluate
        from ..engine.wrap import quantization_disabled

        n = min(args.sensitivity_images, len(prepared.val))
        loader = make_loader(Subset(prepared.val, range(n)), batch_size=args.batch_size, workers=args.workers,
                             skip_corrupt=args.skip_corrupt)
        with quantization_disabled(model):
            fp_n = evaluate(model, loader, device=args.device, desc="float", progress=progress)
        print(f"\nper-layer sensitivity, PTQ4ViT W8A8, first {n} images (float {fp_n.top1:.2f} %; "
              "only the named quantizers on):")
        rows = sensitivity(model, loader, fp=fp_n, device=args.device, progress=progress)
        _write(out_dir / f"{stem}_sensitivity_w8a8.csv", pd.DataFrame(rows).to_csv(index=False))
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..engine.methods import get_method
    from .pipeline import prepare, run_method
    from .sensitivity import sensitivity

    config = get_method(args.method, args.w_bits, args.a_bits, **_overrides(args))
    prepared = prepare(_spec(args), progress=not args.no_progress)
    if prepared.val is None:
        raise PtqlibError("no validation images: pass --val-dir DIR or set PTQLIB_DATA")
    run_method(prepared, config, progress=not args.no_progress)
    rows = sensitivity(prepared.extra.pop("last_model"), prepared.loader(), fp=prepared.fp, device=args.device,
                       progress=not args.no_progress)
    _note_skipped(prepared.fp)
    print(f"float top-1 {prepared.fp.top1:.2f} %; {config.method} W{config.w_bits}A{config.a_bits}, one group at a time:")
    print(pd.DataFrame(rows).to_string(index=False))
    if args.output is not None:
        _write(args.output, pd.DataFrame(rows).to_csv(index=False))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..io.models import PAPER_MODELS

    print(_table([asdict(m) for m in PAPER_MODELS], list(asdict(PAPER_MODELS[0]))))
    return 0


def _load_saved(args: argparse.Namespace, header: dict[str, Any], root: Path | None):
    """The model saved in ``args.quantized``, on the float weights of ``--checkpoint``, the recorded
    checkpoint, the data folder's weights or timm's download (in that order)."""
    from ..io.checkpoints import load_quantized
    from ..io.models import find_checkpoint

    checkpoint = args.checkpoint
    recorded = header.get("checkpoint")
    if checkpoint is None and not header.get("random_init") and not (recorded and Path(recorded).is_file()):
        checkpoint = find_checkpoint(header["model"], root)
    return load_quantized(args.quantized, checkpoint=checkpoint, device=args.device)


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
    from ..io.data import data_root
    from ..engine.config import PTQConfig
    from ..io.checkpoints import export_integers, read_header

    _check_device(args.device)
    header = read_header(args.quantized)
    out = _export_target(args)
    _check_writable(out)  # fail before the work, not after
    root = data_root(args.data)
    model = _load_saved(args, header, root)
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
    from ..io.data import DataPaths, LabeledImages, data_root, make_loader, model_transform
    from ..io.evaluate import evaluate, skipped_record
    from ..io.checkpoints import read_header
    from ..io.provenance import versions

    _check_device(args.device)
    header = read_header(args.quantized)
    if args.output is not None:
        _write(args.output, "")  # fail before the work, not after
    root = data_root(args.data)
    paths = DataPaths.from_root(root) if root is not None else None
    val_dir = args.val_dir or (paths.val_dir if paths else None)
    if val_dir is None:
        raise PtqlibError("no validation images: pass --val-dir DIR or set PTQLIB_DATA to a folder holding imagenet-val-1300/")
    model = _load_saved(args, header, root)
    val = LabeledImages(val_dir, transform=model_transform(model), limit=args.val_limit)
    desc = f"{header['method']} W{header['w_bits']}A{header['a_bits']}"
    acc = evaluate(model, make_loader(val, args.batch_size, args.workers, skip_corrupt=args.skip_corrupt),
                   device=args.device, desc=desc, progress=not args.no_progress)
    saved = header.get("info") or {}
    result = {"model": header["model"], "quantized": str(args.quantized), "method": header["method"],
              "w_bits": header["w_bits"], "a_bits": header["a_bits"], "eval_images": acc.images,
              "top1": round(acc.top1, 2), "top5": round(acc.top5, 2), "eval_seconds": round(acc.seconds, 2),
              "skipped_images": skipped_record(acc), "saved_top1": saved.get("top1"), "saved_eval_images": saved.get("eval_images"),
              "seed": saved.get("seed"), "calib_files": saved.get("calib_files"), "config": header["config"],
              "versions": versions(), "saved_versions": header.get("versions")}
    print(_table([result], ["method", "w_bits", "a_bits", "top1", "top5", "eval_images", "saved_top1"]))
    _note_skipped(acc)
    if saved.get("top1") is not None and saved.get("eval_images") == acc.images:
        same = result["top1"] == saved["top1"]
        print(f"top-1 {'equals' if same else 'differs from'} the {saved['top1']:.2f} % measured when the model was saved")
    if args.output is not None:
        _write(args.output, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


COMMANDS = {"quantize": _cmd_quantize, "reproduce": _cmd_reproduce, "sensitivity": _cmd_sensitivity,
            "evaluate": _cmd_evaluate, "export": _cmd_export, "models": _cmd_models}


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
