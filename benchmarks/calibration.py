"""Benchmark calibration: time against one float forward+backward pass, memory, accuracy, eval speed.

    python benchmarks/calibration.py --model vit_tiny_patch16_224 --method ptq4vit --w-bits 8 --a-bits 8 \
        [--search grid|coarse_to_fine|coarse_to_fine_local] [--outlier-rows S] [--max-tokens N|0] [--chunks K] [--val-limit N] [--output FILE.json]

Data comes from PTQLIB_DATA like the command line (``--random-init`` for models without local
weights). Prints the figures and appends a row to ``benchmarks/results/calibration.csv`` with the
machine described. ``fwd_bwd_seconds`` is one forward and one backward pass of the float model
over the calibration images as one batch, same thread count, after one warm-up run (the median
of three).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from ptqlib.engine.capture import task_loss
from ptqlib.errors import PtqlibError
from ptqlib.engine.methods import get_method
from ptqlib.app.pipeline import RunSpec, prepare, run_method
from ptqlib.io.files import check_writable, csv_text, write_json, write_text

RESULTS = Path(__file__).parent / "results" / "calibration.csv"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__}; {torch.get_num_threads()} threads"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fwd_bwd_seconds(model: torch.nn.Module, images: torch.Tensor) -> float:
    """One float forward+backward over ``images`` as one batch, after a warm-up run: the median
    of three such passes (a single pass varied by 30 % between runs on the 2-core machine)."""
    def once() -> float:
        x = images.clone().requires_grad_(True)
        t = time.perf_counter()
        task_loss(model(x), "pseudo_label_ce").backward()
        return time.perf_counter() - t

    model.zero_grad(set_to_none=True)
    once()
    times = []
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        times.append(once())
    model.zero_grad(set_to_none=True)
    return sorted(times)[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--method", default="ptq4vit")
    p.add_argument("--w-bits", type=int, default=8)
    p.add_argument("--a-bits", type=int, default=8)
    p.add_argument("--search", choices=("grid", "coarse_to_fine", "coarse_to_fine_local"))
    p.add_argument("--outlier-rows", type=float, help="share of fisher rows taken by input magnitude")
    p.add_argument("--max-tokens", type=int, help="0 = all tokens")
    p.add_argument("--chunks", type=int)
    p.add_argument("--micro-batch", type=int, default=8, help="calibration images per capture pass (default 8; 0 = all at once)")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--val-limit", type=int)
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy and throughput part")
    p.add_argument("--output", type=Path)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("search", args.search), ("chunks", args.chunks),
                                   ("outlier_rows", args.outlier_rows)) if v is not None}
    if args.max_tokens is not None:
        overrides["max_tokens"] = args.max_tokens or None
    try:
        config = get_method(args.method, args.w_bits, args.a_bits, **overrides)
        spec = RunSpec(model=args.model, random_init=args.random_init, calib_size=args.calib_size,
                       val_limit=args.val_limit, micro_batch=args.micro_batch or None)
        for path in (RESULTS, args.output):
            if path is not None:
                check_writable(path)
        prepared = prepare(spec, evaluate_float=False)
    except PtqlibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.no_eval:
        prepared.val = None
    rss_before = peak_rss_mb()
    if prepared.val is not None:
        from ptqlib.io.evaluate import evaluate

        prepared.fp = evaluate(prepared.model, prepared.loader(), desc="float")
    result = run_method(prepared, config).result
    peak_calib = peak_rss_mb()  # before the fwd+bwd timing, whose own peak would mask calibration's
    fb = fwd_bwd_seconds(prepared.model, prepared.calib_images)
    row = {
        "model": args.model, "method": config.method, "w_bits": config.w_bits, "a_bits": config.a_bits,
        "search": config.search, "stride": config.stride, "refine": config.refine,
        "max_tokens": config.max_tokens, "outlier_rows": config.outlier_rows, "chunks": config.chunks,
        "calib_images": result["calib_images"], "fwd_bwd_seconds": round(fb, 2),
        "calib_seconds": result["calib_seconds"], "calib_over_fwd_bwd": round(result["calib_seconds"] / fb, 1),
        "candidate_evaluations": result["candidate_evaluations"], "capture_passes": result["capture_passes"],
        "micro_batch": args.micro_batch,
        "peak_rss_mb": round(peak_calib), "peak_rss_before_calib_mb": round(rss_before),
        "top1": result.get("top1"), "fp_top1": result.get("fp_top1"), "eval_images": result.get("eval_images"),
        "eval_seconds": result.get("eval_seconds"), "fp_eval_seconds": result.get("fp_eval_seconds"),
        "machine": machine(), "date": time.strftime("%Y-%m-%d"),
    }
    if row["eval_seconds"] and row["fp_eval_seconds"]:
        row["eval_over_fp"] = round(row["eval_seconds"] / row["fp_eval_seconds"], 2)
    for k, v in row.items():
        print(f"{k:>26}: {v}")
    try:
        append_row(RESULTS, row)
        if args.output:
            write_json(args.output, row)
    except PtqlibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def append_row(path: Path, row: dict[str, object]) -> None:
    """Add ``row`` to the CSV table at ``path`` (in that table's columns and line endings),
    rewriting the file atomically."""
    old = path.read_bytes().decode() if path.exists() else ""
    if not old:
        write_text(path, csv_text([row]))
        return
    header = old.split("\n", 1)[0]
    end = "\r\n" if header.endswith("\r") else "\n"
    line = csv_text([row], next(csv.reader([header.rstrip("\r")]))).split("\n")[1]
    write_text(path, old + ("" if old.endswith("\n") else end) + line + end)


if __name__ == "__main__":
    raise SystemExit(main())
