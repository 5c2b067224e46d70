"""Sweeps (``ptqlib.app.sweep``, ``reproduce --sweep``): the file and its run keys, the results
table, and running a sweep in process and under submitit's ``LocalExecutor`` (``--executor
local:N``: every job a real separate process, as on Slurm), which must give the in-process
results, resume after a worker is killed mid-run computing each run once, and name a failed job
with its log while the others go on.

Everything runs on timm's tiny ``test_vit`` with random weights and a handful of generated images.
The local-executor test starts real Python processes (about 15 s each to import torch on the
2-core machine), so it is marked slow.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ptqlib import PtqlibError
from ptqlib.app.cli import main
from ptqlib.app.sweep import Executor, SlurmOptions, Settings, Sweep, SweepFiles, _minutes, load_sweep
from ptqlib.io.jsonl import append_record, current_records, read_records
from ptqlib.io.provenance import engine_fingerprint

from helpers import random_image_folder

ROOT = Path(__file__).resolve().parents[2]

SWEEP = """
models = ["test_vit"]
methods = ["minmax"]
bits = ["8/8", "6/6"]
draws = 2
calib_size = 4
random_init = true
float = false
data = "{data}"
"""


pytestmark = pytest.mark.usefixtures("without_data")  # explicit paths only


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder like the shared one: 8 calibration images (calib32.txt names 4 of them) and 4
    validation images, random pixels, no weights."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for sub, prefix, n in (("imagenet-calib", "cal", 8), ("imagenet-val-1300", "val", 4)):
        random_image_folder(root / sub, {f"{prefix}{i}.JPEG": i * 7 for i in range(n)}, rng=rng)
    (root / "imagenet-calib" / "calib32.txt").write_text("cal5.JPEG\ncal3.JPEG\ncal1.JPEG\ncal7.JPEG\n")
    return root


@pytest.fixture(scope="module")
def sweep_file(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "tiny.toml"
    path.write_text(SWEEP.format(data=data))
    return path


def _table(folder: Path, name: str = "tiny") -> list[dict]:
    records, _ = read_records(folder / "sweeps" / f"{name}.jsonl")
    return records.records


# ---------------------------------------------------------------------------------- the sweep as data


def test_file_and_command_line_lists_give_the_same_stable_keys(sweep_file: Path, data: Path) -> None:
    from_file = load_sweep(sweep_file)
    from_lists = Sweep.from_lists("other-name", ["test_vit"], ["minmax"], [(8, 8), "6/6"], 2, calib_size=4,
                                  random_init=True, include_float=False, data=data)
    runs = from_file.runs()
    assert [r.label.split(" ", 1)[1] for r in runs] == [
        "test_vit minmax W8A8 draw 0", "test_vit minmax W6A6 draw 0",
        "test_vit minmax W8A8 draw 1", "test_vit minmax W6A6 draw 1"]
    assert [r.key for r in runs] == [r.key for r in from_lists.runs()]  # not the name, not the data's place
    assert [r.key for r in runs] == [r.key for r in load_sweep(sweep_file).runs()]
    assert len({r.key for r in runs}) == 4
    # a run's key follows what decides its result, and only that
    assert from_file.replace(draws=[1]).runs()[0].key == runs[2].key
    assert from_file.replace(models=["test_vit"], bits=["8/8"]).runs()[0].key == runs[0].key
    for change in ({"val_limit": 3}, {"calib_size": 2}, {"config": {"chunks": 2}}, {"random_init": False}):
        assert from_file.replace(**change).runs()[0].key != runs[0].key, change
    with_float = from_file.replace(include_float=True).runs()
    assert with_float[0].method == "float" and len(with_float) == 5
    # per-method overrides reach only their method; 0 means None for an optional integer
    mixed = Sweep.from_lists("m", ["test_vit"], ["minmax", "baseptq"], ["8/8"],
                             method_config={"baseptq": {"max_tokens": 0, "n": 10}})
    configs = {r.method: r.config for r in mixed.runs() if r.config}
    assert configs["baseptq"]["max_tokens"] is None and configs["baseptq"]["n"] == 10
    assert configs["minmax"]["max_tokens"] == 1024
    # command-line method settings (config=) win over the file's per-method ones
    cli = mixed.replace(config={"n": 20, "chunks": 2})
    assert {r.method: (r.config["n"], r.config["chunks"]) for r in cli.runs() if r.config} == {"minmax": (20, 2), "baseptq": (20, 2)}
    assert cli.method_config["baseptq"] == {"max_tokens": None}


def test_the_committed_sweep_files_load_and_each_committed_table_has_its_file() -> None:
    files = sorted((ROOT / "sweeps").glob("*.toml"))
    for path in files:
        sweep = load_sweep(path)
        keys = [run.key for run in sweep.runs()]
        assert keys and len(set(keys)) == len(keys), path.name  # every run its own key
    tables = {p.stem for p in (ROOT / "results" / "reference" / "sweeps").glob("*.jsonl")}
    assert tables <= {load_sweep(path).name for path in files}  # each promoted table can be rerun


def test_each_mistake_in_a_sweep_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('models = ["test_vit", "no_such_model"]\nmethods = ["ptq5vit"]\nbits = ["8/8", "8-8", "1/8"]\n'
                   'draws = 0\nmethod = "x"\n[config]\nserach = "grid"\nw_bits = 4\n[config.ptq4vit2]\nn = 3\n')
    with pytest.raises(PtqlibError) as e:
        load_sweep(bad)
    lines = str(e.value).splitlines()
    assert all(line.startswith(f"{bad}: ") for line in lines)
    for expected in ("unknown timm model 'no_such_model'", "unknown method 'ptq5vit' (did you mean 'ptq4vit'?)",
                     "bad bits '8-8'", "bad bits '1/8'", "'draws' must be", "unknown key 'method' (did you mean 'methods'?)",
                     "unknown config field config.serach (did you mean 'search'?)", "config.w_bits cannot be set",
                     "[config.ptq4vit2] names no method"):
        assert sum(expected in line for line in lines) == 1, (expected, lines)
    assert len(lines) == 9
    assert main(["reproduce", "--sweep", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 9
    assert main(["reproduce", "--sweep", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["reproduce", "--sweep", str(bad), "--executor", "cluster"]) == 2  # the file is read first
    with pytest.raises(PtqlibError, match="unknown executor 'cluster'"):
        Executor.parse("cluster")
    assert (Executor.parse("local:3").workers, str(Executor.parse("local")), _minutes("1-02:30")) == (3, "local:1", 1590)


def test_slurm_options_reach_the_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``--executor slurm`` asks of sbatch (the script submitit writes; nothing is submitted)."""
    from ptqlib.app.sweep import _submitit_executor

    sweep = Sweep.from_lists("s", ["test_vit"], ["minmax"], ["8/8"])
    files = SweepFiles.under(tmp_path, "s")
    options = SlurmOptions(partition="gpu", gpus=1, cpus=8, mem_gb=31.5, time_min=_minutes("4:00:00"),
                           array_parallelism=16, extra={"account": "abc"})
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun: one clear line
    with pytest.raises(PtqlibError, match="--executor slurm needs Slurm on this machine"):
        _submitit_executor(Executor("slurm"), files, Settings(), options, sweep)
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    executor = _submitit_executor(Executor("slurm"), files, Settings(device="cuda"), options, sweep)
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=240",
                 "--account=abc", "--job-name=ptqlib-s", f"--error={files.jobs}/%j/%j_0_log.err"):
        assert f"#SBATCH {line}\n" in script, line
    assert executor._executor.parameters["array_parallelism"] == 16


def test_table_appends_whole_records_and_ignores_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    append_record(path, {"key": "a", "top1": 1.0})
    with open(path, "ab") as f:  # a writer killed half-way through its line
        f.write(b'{"key": "b", "top1"')
    records, offset = read_records(path)
    assert [r["key"] for r in records.records] == ["a"] and records.bad_lines == 0  # still being written?
    append_record(path, {"key": "c", "top1": 3.0})
    records, _ = read_records(path)
    assert [r["key"] for r in records.records] == ["a", "c"] and records.bad_lines == 1
    more, end = read_records(path, offset=offset)  # following a growing table
    assert [r["key"] for r in more.records] == ["c"] and end == path.stat().st_size
    engine = engine_fingerprint()
    for record in ({"key": "d", "engine": engine, "top1": 1}, {"key": "d", "engine": engine, "top1": 2},
                   {"key": "e", "engine": "an-older-engine"}):
        append_record(path, record)
    assert current_records(path) == [{"key": "d", "engine": engine, "top1": 1}]  # for notebooks and reports


# ---------------------------------------------------------------------------------- running a sweep


def test_inprocess_sweep_records_each_run_once_and_resumes(sweep_file: Path, tmp_path: Path, capsys,
                                                           one_torch_thread) -> None:
    args = ["reproduce", "--sweep", str(sweep_file), "--output-dir", str(tmp_path), "--no-progress"]
    assert main([*args, "--draws", "1"]) == 0  # a subset first: the draw-0 runs
    out = capsys.readouterr().out
    assert "sweep tiny: 2 runs, 0 done before, 2 to run" in out and "2 computed now" in out
    assert "[1/2] " in out and "test_vit minmax W8A8 draw 0: top-1 " in out
    assert main(args) == 0  # the whole sweep: only draw 1 is computed
    out = capsys.readouterr().out
    assert "4 runs, 2 done before, 2 to run" in out and "2 computed now, 2 done before, 0 failed" in out
    assert "0.00 ± 0.00" in out  # the summary: mean ± std over the two draws
    records = _table(tmp_path)
    keys = [r.key for r in load_sweep(sweep_file).runs()]
    assert sorted(r["key"] for r in records) == sorted(keys)
    for r in records:
        assert len(r["predictions"]) == len(r["labels"]) == 4 and len(r["calib_files"]) == 4
        assert r["calib_files"] == (["cal5.JPEG", "cal3.JPEG", "cal1.JPEG", "cal7.JPEG"] if r["draw"] == 0
                                    else r["calib_files"]) and r["sweep"] == "tiny"
    draw1 = [r["calib_files"] for r in records if r["draw"] == 1]
    assert draw1[0] == draw1[1] != records[0]["calib_files"]  # one seeded sample per draw
    csv = (tmp_path / "sweeps" / "tiny.csv").read_text().splitlines()
    assert csv[0].startswith("key,model,method,w_bits,a_bits,draw") and len(csv) == 5
    assert len((tmp_path / "sweeps" / "tiny_summary.csv").read_text().splitlines()) == 3
    assert main(args) == 0
    assert "0 computed now, 4 done before" in capsys.readouterr().out
    assert main([*args, "--status"]) == 0
    assert "4 runs: 4 done, 0 failed, 0 running, 0 interrupted, 0 not started" in capsys.readouterr().out


VARIANTS = """
models = ["test_vit"]
methods = ["minmax", "baseptq-mse"]
bits = ["6/6"]
calib_size = [2, 4]
jitter = [0, 1]
random_init = true
float = false
data = "{data}"
[config]
n = 8
[variants.baseptq-mse]
method = "baseptq"
metric = "mse"
"""


def test_variants_calibration_sizes_and_jitter(data: Path, tmp_path: Path, capsys, one_torch_thread) -> None:
    """A variant is its preset with fields changed, under its own name; each calibration size and
    jitter is a run of its own; keys without jitter are those of a sweep that never named it."""
    path = tmp_path / "v.toml"
    path.write_text(VARIANTS.format(data=data))
    sweep = load_sweep(path)
    runs = sweep.runs()
    assert len(runs) == 2 * 2 * 2 and len({r.key for r in runs}) == 8
    labels = [r.label.split(" ", 1)[1] for r in runs]
    assert labels[:4] == ["test_vit minmax W6A6 draw 0 (2 images)", "test_vit minmax W6A6 draw 0 jitter 1 (2 images)",
                          "test_vit baseptq-mse W6A6 draw 0 (2 images)",
                          "test_vit baseptq-mse W6A6 draw 0 jitter 1 (2 images)"]
    variant = next(r for r in runs if r.method == "baseptq-mse")
    preset = sweep.config_for("baseptq", 6, 6).to_dict()
    assert {k: v for k, v in variant.config.items() if variant.config[k] != preset[k]} == {"metric": "mse",
                                                                                         "method": "baseptq-mse"}
    assert variant.config["n"] == 8  # [config] reaches the variant too
    plain = Sweep.from_lists("p", ["test_vit"], ["minmax"], ["6/6"], 1, calib_size=4, random_init=True,
                             include_float=False, data=data, config={"n": 8})
    assert plain.runs()[0].key == next(r.key for r in runs if r.method == "minmax" and r.calib_size == 4
                                       and not r.jitter)
    assert sweep.replace(jitters=[0]).runs()[0].key == runs[0].key
    bad = tmp_path / "bad.toml"
    bad.write_text(VARIANTS.format(data=data).replace('method = "baseptq"', 'method = "base"')
                   .replace("jitter = [0, 1]", "jitter = [-1]"))
    with pytest.raises(PtqlibError) as e:
        load_sweep(bad)
    assert "[variants.baseptq-mse] needs method" in str(e.value) and "'jitter' must be" in str(e.value)

    assert main(["reproduce", "--sweep", str(path), "--output-dir", str(tmp_path), "--no-progress"]) == 0
    records = {(r["method"], r["calib_size"], r["jitter"]): r for r in _table(tmp_path, "v")}
    assert len(records) == 8
    assert len(records[("minmax", 2, 0)]["calib_files"]) == 2 and records[("minmax", 4, 0)]["calib_images"] == 4
    assert records[("baseptq-mse", 4, 0)]["config"]["metric"] == "mse"
    summary = (tmp_path / "sweeps" / "v_summary.csv").read_text().splitlines()
    assert summary[0].split(",")[:5] == ["model", "method", "bits", "calib_images", "draws"]
    assert len(summary) == 1 + 4  # per method and size; the jitters are its spread


def test_a_failed_run_is_named_and_the_rest_go_on(data: Path, tmp_path: Path, capsys, one_torch_thread) -> None:
    """test_resnet has no attention to quantize: its run fails, test_vit's still runs; a rerun retries only it."""
    args = ["reproduce", "--models", "test_resnet,test_vit", "--methods", "minmax", "--bits", "8/8",
            "--no-float", "--random-init", "--calib-size", "4", "--data", str(data), "--sweep-name", "mixed",
            "--output-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "FAILED " in captured.out and " test_resnet minmax W8A8 draw 0: " in captured.out
    assert "test_vit minmax W8A8 draw 0: top-1" in captured.out
    assert captured.err.startswith("error: 1 of 2 runs failed") and captured.err.count("\n") == 1
    assert [r["model"] for r in _table(tmp_path, "mixed")] == ["test_vit"]
    assert main([*args, "--status"]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 1 done, 1 failed" in out and "test_resnet minmax W8A8 draw 0: failed" in out
    assert main(args) == 2
    assert "0 computed now, 1 done before, 1 failed" in capsys.readouterr().out


def test_a_run_being_computed_by_a_live_process_here_is_left_to_it(data: Path, tmp_path: Path) -> None:
    """A local job left running by a killed command keeps its run: a rerun does not start it twice."""
    from ptqlib.app.sweep import run_sweep

    sweep = Sweep.from_lists("busy", ["test_vit"], ["minmax"], ["8/8"], 1, include_float=False, data=data)
    files = SweepFiles.under(tmp_path, "busy")
    worker = subprocess.Popen(["sleep", "60"])
    try:
        append_record(files.events, {"event": "start", "key": sweep.runs()[0].key, "time": time.time(),
                                     "host": os.uname().nodename, "pid": worker.pid})
        lines: list[str] = []
        outcome = run_sweep(sweep, files, on_line=lines.append)
        assert outcome.computed == [] and "1 runs are being computed by other processes here" in lines[0]
        assert "0 to run" in lines[1]
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.slow
def test_local_executor_matches_inprocess_and_resumes_after_a_killed_worker(sweep_file: Path, tmp_path: Path,
                                                                            capsys, one_torch_thread) -> None:
    """``--executor local:2 --group draw``: two jobs, each a real process. One is killed mid-run; the
    other finishes; the killed one's runs are named FAILED with the job's log; ``--status`` says so;
    a rerun computes exactly those; every record equals the in-process run's."""
    reference_dir = tmp_path / "inprocess"
    assert main(["reproduce", "--sweep", str(sweep_file), "--output-dir", str(reference_dir), "--no-progress"]) == 0
    capsys.readouterr()
    reference = {r["key"]: r for r in _table(reference_dir)}

    out_dir = tmp_path / "local"
    files = SweepFiles.under(out_dir, "tiny")
    files.table.parent.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "PTQLIB_DATA"}
    command = [sys.executable, "-m", "ptqlib", "reproduce", "--sweep", str(sweep_file), "--output-dir", str(out_dir),
               "--executor", "local:2", "--group", "draw", "--no-progress"]
    # Hold the table's lock: the workers compute, then wait to record, so the kill lands mid-run.
    with open(files.table, "a+b") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        sweep = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            deadline = time.monotonic() + 240
            starts: dict[int, list[str]] = {}
            while len(starts) < 2 and time.monotonic() < deadline and sweep.poll() is None:
                time.sleep(0.2)
                for e in read_records(files.events)[0].records:
                    if e["event"] == "start":
                        starts.setdefault(e["pid"], []).append(e["key"])
            assert len(starts) == 2, (starts, sweep.poll())
            assert main(["reproduce", "--sweep", str(sweep_file), "--output-dir", str(out_dir), "--status"]) == 0
            assert "4 runs: 0 done, 0 failed, 2 running, 0 interrupted, 2 not started" in capsys.readouterr().out
            victim = min(starts)
            os.kill(victim, signal.SIGKILL)
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)
        stdout, stderr = sweep.communicate(timeout=240)
    assert sweep.returncode == 2, (stdout, stderr)
    runs = {r.key: r for r in load_sweep(sweep_file).runs()}
    killed_draw = runs[starts[victim][0]].draw
    killed = [k for k, r in runs.items() if r.draw == killed_draw]
    failed_lines = [line for line in stdout.splitlines() if " FAILED " in line]
    assert sorted(line.split()[2] for line in failed_lines) == sorted(killed), stdout
    log = failed_lines[0].rsplit("log: ", 1)[1]
    assert "the job ended without a result" in failed_lines[0] and Path(log).is_file()
    assert "2 computed now, 0 done before, 2 failed" in stdout
    assert stderr.strip().splitlines()[-1].startswith("error: 2 of 4 runs failed")
    assert sorted(r["key"] for r in _table(out_dir)) == sorted(set(runs) - set(killed))

    assert main(["reproduce", "--sweep", str(sweep_file), "--output-dir", str(out_dir), "--status"]) == 0
    status = capsys.readouterr().out
    assert "4 runs: 2 done, 2 failed" in status and status.count(f"log: {files.jobs}") == 2

    # rerun, one job per model, with test_resnet added (its runs fail in their job: no attention to
    # quantize): only the killed job's runs are computed, in a separate process; the failures are named
    assert main(["reproduce", "--sweep", str(sweep_file), "--output-dir", str(out_dir), "--executor", "local:2",
                 "--models", "test_vit,test_resnet", "--group", "model", "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert "6 to run (local:2, 2 jobs)" in out and "2 computed now, 2 done before, 4 failed" in out
    failed_lines = [line for line in out.splitlines() if " FAILED " in line]
    assert len(failed_lines) == 4 and all(" test_resnet minmax " in line for line in failed_lines)
    log = Path(failed_lines[0].rsplit("log: ", 1)[1])
    assert "ResNet has no timm Attention" in failed_lines[0] and "ResNet has no timm Attention" in log.read_text()
    records = _table(out_dir)
    assert sorted(r["key"] for r in records) == sorted(runs)  # each run recorded once
    for r in records:
        ref = reference[r["key"]]
        assert (r["top1"], r["predictions"], r["calib_files"], r["config"]) == \
            (ref["top1"], ref["predictions"], ref["calib_files"], ref["config"])
        assert r["job"] and r["pid"] != os.getpid()
