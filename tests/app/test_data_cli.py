"""The ``data`` command (fetch, verify, paper-csv) and the main job on a fresh clone without data.

The mirror is Python's own ``http.server`` serving a generated data folder, as a user would serve
a complete data folder for others; "offline" is a port nothing listens on.
"""
from __future__ import annotations

import functools
import json
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import write_image

from ptqlib.app.cli import main
from ptqlib.app.jobs import ensure_data
from ptqlib.io import data as data_module
from ptqlib.io import fetch

NAMES = ["n01443537_goldfish.JPEG", "n01491361_tiger_shark.JPEG", "n01494475_hammerhead.JPEG"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(url, manifest)``: a generated data folder served on 127.0.0.1, and its manifest (with a
    ``calib32.txt`` of one name beside it)."""
    upstream = tmp_path / "upstream"
    (upstream / "weights").mkdir(parents=True)
    safetensors.torch.save_file({"w": torch.zeros(1000)}, str(upstream / fetch.WEIGHTS_PATH))
    for color, name in enumerate(NAMES):
        write_image(upstream / fetch.CALIB_IMAGES / name, color=color + 1)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "manifest.json").write_text(fetch.manifest_text(fetch.build_manifest(upstream)))
    (notes / "calib32.txt").write_text(NAMES[0] + "\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(upstream)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", notes / "manifest.json"
    server.shutdown()
    server.server_close()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _error_line(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return captured.out, lines[0]


def test_fetch_then_verify(mirror: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    url, manifest = mirror
    root = tmp_path / "data"
    assert main(["data", "fetch", "--root", str(root), "--mirror", url, "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fetching 4 files") and "downloaded 4 files" in out
    assert "3 calibration images" in out and "2 evaluation images" in out
    assert main(["data", "verify", "--root", str(root), "--manifest", str(manifest)]) == 0
    assert "all 4 files" in capsys.readouterr().out
    (root / fetch.CALIB_IMAGES / NAMES[2]).unlink()
    assert main(["data", "verify", "--root", str(root), "--manifest", str(manifest)]) == 2
    _, line = _error_line(capsys)
    assert f"1 of 4 files in {root}" in line and NAMES[2] in line and "python -m ptqlib data fetch" in line


def test_server_without_range_support_restarts_a_partial_file(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, manifest = mirror  # http.server ignores Range: the whole file comes again and replaces the part
    part = tmp_path / "data" / fetch.CALIB_IMAGES / (NAMES[1] + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes")
    fetch.fetch_data(tmp_path / "data", manifest=manifest, mirror=url, report=None)
    assert not part.exists() and fetch.verify_data(tmp_path / "data", manifest) == []


def test_fetch_offline_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "--root", str(tmp_path / "data"), "--mirror", _dead_url()]) == 2
    out, line = _error_line(capsys)
    assert out == "" and "cannot reach 127.0.0.1" in line and "PTQLIB_DATA" in line and "network" in line


def test_bad_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "--root", str(tmp_path), "--mirror", "not a url"]) == 2
    assert "not an http(s) URL" in _error_line(capsys)[1]
    assert main(["data", "fetch", "--root", str(tmp_path), "--manifest", str(tmp_path / "none.json")]) == 2
    assert "no data manifest" in _error_line(capsys)[1]


def test_main_job_on_a_fresh_clone_without_network_says_how_to_get_the_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    fresh = tmp_path / "clone" / "data"  # what a clone has: notes, no weights, no images
    fresh.mkdir(parents=True)
    (fresh / "README.md").write_text("notes")
    monkeypatch.setattr(data_module, "DEFAULT_DATA_DIR", fresh)
    monkeypatch.setenv(fetch.MIRROR_ENV, _dead_url())
    code = main(["reproduce", "--output-dir", str(tmp_path / "results"), "--reference-dir", str(tmp_path / "none"),
                 "--no-progress"])
    out, line = _error_line(capsys)
    assert code == 2 and out == ""
    assert "python -m ptqlib data fetch" in line and "PTQLIB_DATA" in line and str(fresh) in line
    assert sorted(p.name for p in fresh.iterdir()) == ["README.md"]  # nothing half-made left behind


def test_main_job_fetches_missing_data_first(mirror: tuple[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, manifest = mirror
    fresh = tmp_path / "data"
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    monkeypatch.setattr(data_module, "DEFAULT_DATA_DIR", fresh)
    monkeypatch.setattr(fetch, "default_manifest_path", lambda: manifest)
    monkeypatch.setenv(fetch.MIRROR_ENV, url)
    lines: list[str] = []
    assert ensure_data(None, report=lines.append) == fresh
    assert lines[0].startswith("no data yet") and lines[1].startswith("fetching 4 files")
    assert data_module.data_root() == fresh
    assert ensure_data(None, report=lines.append) is None  # complete now: nothing to do
    assert ensure_data(None, val_dir=tmp_path) is None  # named images: not our business
    monkeypatch.setenv("PTQLIB_DATA", str(tmp_path))
    assert ensure_data(None) is None  # PTQLIB_DATA wins


def test_paper_csv_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "paper.csv"
    assert main(["data", "paper-csv", "--output", str(out)]) == 0
    assert out.read_text() == fetch.paper_csv_text() and f"wrote {out}" in capsys.readouterr().out


def test_main_job_on_a_fresh_clone_fetches_then_runs_on_the_fetched_data(
        mirror: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The loopback server stands in for the network: the main job fills data/ and calibrates and
    evaluates on it (random weights of timm's tiny test_vit: the structure, not an accuracy)."""
    url, manifest = mirror
    fresh = tmp_path / "clone" / "data"
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    monkeypatch.setattr(data_module, "DEFAULT_DATA_DIR", fresh)
    monkeypatch.setattr(fetch, "default_manifest_path", lambda: manifest)
    monkeypatch.setenv(fetch.MIRROR_ENV, url)
    out_dir = tmp_path / "results"
    code = main(["reproduce", "--model", "test_vit", "--random-init", "--methods", "minmax", "--bits", "8/8",
                 "--calib-size", "1", "--no-sensitivity", "--output-dir", str(out_dir),
                 "--reference-dir", str(tmp_path / "none"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no data yet" in out
    records = json.loads((out_dir / "test_vit.json").read_text())
    assert records[0]["eval_images"] == len(NAMES) - 1  # the sample's images outside calib32.txt
    assert records[0]["calib_files"] == [NAMES[0]]     # calib32.txt of the fetched folder
