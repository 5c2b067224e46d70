"""Benchmark a sweep's executors: the same sweep run from scratch with 1 and N local workers (and in process).

    python benchmarks/sweep.py sweeps/smoke_test_vit.toml [--workers N] [--executors local:1,local:N,inprocess]
        [--draws N] [--data DIR] [--keep DIR] [-- more reproduce flags]

``--draws N`` runs the sweep's first N calibration draws only (its other lists unchanged): a
subset of the same runs, whose wall time scales to the whole sweep by its number of runs.
``--keep DIR`` copies the first executor's results table (``<name>.jsonl``, ``.csv``,
``_summary.csv``) into DIR, so the benchmark's runs can be promoted like any sweep's; it refuses a
DIR that already holds them.

Each executor runs the whole sweep (``python -m ptqlib reproduce --sweep FILE --executor E``) into a
fresh temporary results folder, so nothing is skipped; the wall time is measured around that command.
Prints and appends one row per executor to ``benchmarks/results/sweep.csv`` (wall seconds, runs per
hour, speed-up over the first executor (local:1), the summed per-run compute seconds, whether every run's
top-1 and per-image predictions equal the first executor's, the machine and its load average) and
writes all rows to ``benchmarks/results/sweep_<name>.json``.

Data: ``--data``, else ``$PTQLIB_DATA``, else a generated folder of random images (enough for
random-weight models such as ``test_vit``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import append_row  # noqa: E402  (benchmarks/ is not a package)

from ptqlib.app.sweep import SweepFiles, load_sweep  # noqa: E402
from ptqlib.errors import PtqlibError  # noqa: E402
from ptqlib.io.files import write_json  # noqa: E402
from ptqlib.io.jsonl import read_records  # noqa: E402
from ptqlib.io.provenance import engine_fingerprint  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def synthetic_data(folder: Path, calib: int = 16, val: int = 32) -> Path:
    """A data folder of random 64 px images laid out like the shared one (no weights, no calib32.txt)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub, n in (("imagenet-calib", calib), ("imagenet-val-1300", val)):
        (folder / sub / "images").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / sub / "images" / f"{i}.JPEG")
        (folder / sub / "labels.txt").write_text("".join(f"{i}.JPEG {(i * 37) % 1000}\n" for i in range(n)))
    return folder


def _kept(files: SweepFiles) -> tuple[Path, ...]:
    """The files ``--keep`` copies: the table, its CSV and its summary."""
    return files.table, files.csv, files.summary


def run_once(sweep_file: Path, executor: str, data: Path, extra: list[str], keep: Path | None = None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ptqlib-sweep-bench-") as tmp:
        command = [sys.executable, "-m", "ptqlib", "reproduce", "--sweep", str(sweep_file), "--output-dir", tmp,
                   "--executor", executor, "--data", str(data), "--no-progress", *extra]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        sys.stdout.write(done.stdout)
        if done.returncode != 0:
            raise PtqlibError(f"{executor}: reproduce exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        name = load_sweep(sweep_file).name
        files = SweepFiles.under(tmp, name)
        records = read_records(files.table)[0].records
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for path in _kept(files):
                shutil.copy2(path, keep / path.name)
    return {"wall": wall, "records": {r["key"]: r for r in records}, "load": (load_before, load_after)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="the sweep's TOML file")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="N (default: the cores)")
    p.add_argument("--executors", help="comma-separated executors (default local:1,local:N,inprocess)")
    p.add_argument("--data", type=Path, help="data folder (default $PTQLIB_DATA, else generated images)")
    p.add_argument("--note", default="", help="a remark stored with the rows")
    p.add_argument("--keep", type=Path, help="copy the first executor's results table into this folder")
    p.add_argument("--draws", type=int, help="only the first N calibration draws (default: the sweep's)")
    args = p.parse_args(argv)
    executors = (args.executors or f"local:1,local:{args.workers},inprocess").split(",")
    try:
        sweep = load_sweep(args.sweep)
        if args.draws is not None:
            sweep = sweep.replace(draws=args.draws)
            extra = ["--draws", str(args.draws), *extra]
        runs = sweep.runs()
        if args.keep is not None and any((args.keep / p.name).exists() for p in _kept(SweepFiles.under(".", sweep.name))):
            raise PtqlibError(f"{args.keep} already holds a {sweep.name} table; pass another --keep folder "
                              "(the benchmark never overwrites results)")
        with tempfile.TemporaryDirectory(prefix="ptqlib-sweep-data-") as tmp:
            data = args.data or (Path(os.environ["PTQLIB_DATA"]) if os.environ.get("PTQLIB_DATA") else None)
            data_note = str(data) if data else "generated random images"
            data = data or synthetic_data(Path(tmp))
            rows, first = [], None
            for executor in executors:
                print(f"== {executor}", flush=True)
                got = run_once(args.sweep.resolve(), executor.strip(), data, extra, args.keep if first is None else None)
                records = got["records"]
                if set(records) != {r.key for r in runs}:
                    raise PtqlibError(f"{executor}: the table holds {len(records)} of the sweep's {len(runs)} runs")
                first = first or got
                same = all((r["top1"], r["predictions"]) == (first["records"][k]["top1"], first["records"][k]["predictions"])
                           for k, r in records.items())
                workers = 1 if executor == "inprocess" else int(executor.split(":")[1]) if ":" in executor else 1
                rows.append({
                    "sweep": sweep.name if args.draws is None else f"{sweep.name} (draws 0-{args.draws - 1})",
                    "runs": len(runs), "executor": executor, "workers": workers,
                    "threads_per_worker": max(1, len(os.sched_getaffinity(0)) // workers) if executor != "inprocess" else "torch default",
                    "wall_seconds": round(got["wall"], 1), "runs_per_hour": round(3600 * len(runs) / got["wall"], 1),
                    "speedup": round(first["wall"] / got["wall"], 2),
                    "run_seconds_sum": round(sum(r["seconds"] for r in records.values()), 1),
                    "same_results": same, "load_before": round(got["load"][0], 2), "load_after": round(got["load"][1], 2),
                    "data": data_note, "machine": f"{cpu_name()}; {len(os.sched_getaffinity(0))} cores",
                    "engine": engine_fingerprint(), "date": time.strftime("%Y-%m-%d"), "note": args.note})
                print({k: v for k, v in rows[-1].items() if k not in ("machine", "engine", "date", "note")}, flush=True)
        for row in rows:
            append_row(RESULTS / "sweep.csv", row)
        write_json(RESULTS / f"sweep_{sweep.name}.json", rows)
    except PtqlibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {RESULTS / 'sweep.csv'} and {RESULTS / f'sweep_{sweep.name}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
