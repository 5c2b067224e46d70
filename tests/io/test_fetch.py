"""Tests for ptqlib.io.fetch: the public data folder downloaded from a real HTTP server on 127.0.0.1.

A thread serves a generated "upstream" data folder (a tiny safetensors file and a few JPEGs) with
HTTP ``Range`` support; a manifest built from it is fetched through ``mirror``. The server can
drop a file half-way (it sends the right ``Content-Length`` and closes after half the bytes) and
logs every request with its ``Range`` header.
"""
from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import safetensors.torch
import torch
from helpers import write_image

import ptqlib
from ptqlib.errors import PtqlibError
from ptqlib.io import data as data_module
from ptqlib.io import fetch
from ptqlib.io.data import DataPaths, LabeledImages, data_root
from ptqlib.io.fetch import (ChecksumError, ManifestEntry, OfflineError, build_manifest, data_complete, fetch_data,
                             load_manifest, manifest_text, verify_data)
from ptqlib.io.models import find_checkpoint

REPO_DATA = Path(ptqlib.__file__).resolve().parents[1] / "data"
#: The generated pool: file name -> ImageNet class index (sorted-wnid order).
POOL = {"n01443537_goldfish.JPEG": 1, "n01491361_tiger_shark.JPEG": 3, "n01494475_hammerhead.JPEG": 4,
        "n01496331_electric_ray.JPEG": 5}
CALIB = ["n01494475_hammerhead.JPEG", "n01443537_goldfish.JPEG"]  # the generated calib32.txt (2 names)


@dataclass
class Served:
    """The running server: its ``url``, the ``upstream`` folder it serves, the ``manifest`` file
    (``calib32.txt`` beside it), the request ``log`` (path, Range header) and the paths to ``cut``
    (dropped half-way, once each)."""

    url: str
    upstream: Path
    manifest: Path
    log: list[tuple[str, str | None]] = field(default_factory=list)
    cut: set[str] = field(default_factory=set)


class _Handler(http.server.BaseHTTPRequestHandler):
    served: Served

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        wanted = self.headers.get("Range")
        self.served.log.append((rel, wanted))
        file = self.served.upstream / rel
        if not file.is_file():
            self.send_error(404)
            return
        body, start = file.read_bytes(), 0
        if wanted:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if rel in self.served.cut:  # promise everything, send half, hang up
            self.served.cut.discard(rel)
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def _write_upstream(folder: Path) -> None:
    """A data folder like the shared one, tiny: the weights and the four pool images."""
    weights = folder / fetch.WEIGHTS_PATH
    weights.parent.mkdir(parents=True)
    safetensors.torch.save_file({"w": torch.arange(60_000, dtype=torch.float32), "b": torch.ones(3)}, str(weights))
    for color, name in enumerate(POOL):
        write_image(folder / fetch.CALIB_IMAGES / name, color=color + 1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    upstream, notes = tmp_path / "upstream", tmp_path / "notes"
    _write_upstream(upstream)
    notes.mkdir()
    (notes / "manifest.json").write_text(manifest_text(build_manifest(upstream)))
    (notes / "calib32.txt").write_text("\n".join(CALIB) + "\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Served(f"http://127.0.0.1:{server.server_address[1]}", upstream, notes / "manifest.json")
    server.RequestHandlerClass = type("Handler", (_Handler,), {"served": state})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _fetch(served: Served, root: Path, **kwargs):
    lines: list[str] = []
    result = fetch_data(root, manifest=served.manifest, mirror=served.url, report=lines.append, timeout=5,
                        tty=False, **kwargs)
    return result, lines


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fetch_fills_the_layout_that_ptqlib_io_data_reads(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    result, lines = _fetch(served, root)
    assert len(result.downloaded) == 5 and result.present == () and result.verified
    assert (result.calib_images, result.val_images) == (4, 2)
    assert lines[0].startswith("fetching 5 files") and "127.0.0.1" in lines[0] and lines[-1].startswith("  100 %")
    paths = DataPaths.from_root(root)
    assert paths.val_dir == root / "imagenet-sample-val"  # no imagenet-val-1300/: the public sample
    calib = LabeledImages(paths.calib_dir)
    assert {p.name: label for p, label in calib.samples} == POOL
    assert (root / "imagenet-calib" / "calib32.txt").read_text().split() == CALIB
    val = LabeledImages(paths.val_dir)
    assert {p.name: label for p, label in val.samples} == {n: POOL[n] for n in POOL if n not in CALIB}
    weights = find_checkpoint("vit_tiny_patch16_224", root)
    assert weights == root / fetch.WEIGHTS_PATH
    assert safetensors.torch.load_file(str(weights))["w"].shape == (60_000,)
    assert not list(root.rglob("*.part")) and data_complete(root, served.manifest)
    assert verify_data(root, served.manifest) == []
    again, lines = _fetch(served, root)  # nothing left to download; the present files are checked
    assert again.downloaded == () and len(again.present) == 5 and lines == []


def test_dropped_connection_resumes_with_a_range_request(served: Served, tmp_path: Path) -> None:
    served.cut.add(fetch.WEIGHTS_PATH)
    size = (served.upstream / fetch.WEIGHTS_PATH).stat().st_size
    result, _ = _fetch(served, tmp_path / "data")
    requests = [wanted for path, wanted in served.log if path == fetch.WEIGHTS_PATH]
    assert requests == [None, f"bytes={size // 2}-"]
    assert fetch.WEIGHTS_PATH in result.downloaded and verify_data(tmp_path / "data", served.manifest) == []


def test_partial_file_of_an_earlier_fetch_is_resumed(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    body = (served.upstream / fetch.WEIGHTS_PATH).read_bytes()
    part = root / (fetch.WEIGHTS_PATH + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    _, lines = _fetch(served, root)
    assert (fetch.WEIGHTS_PATH, "bytes=1000-") in served.log and "resuming" in lines[0]
    assert (root / fetch.WEIGHTS_PATH).read_bytes() == body and not part.exists()
    whole = root / fetch.CALIB_IMAGES / (CALIB[0] + ".part")  # a part already complete: nothing to fetch
    (root / fetch.CALIB_IMAGES / CALIB[0]).rename(whole)
    _fetch(served, root)
    assert (root / fetch.CALIB_IMAGES / CALIB[0]).is_file() and not whole.exists()


def test_checksum_mismatch_is_one_line_and_leaves_no_file(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    image = served.upstream / fetch.CALIB_IMAGES / CALIB[1]
    write_image(image, color=9)  # upstream changed after the manifest was made
    with pytest.raises(ChecksumError) as caught:
        _fetch(served, root)
    line = _one_line(caught.value)
    assert f"{fetch.CALIB_IMAGES}/{CALIB[1]}" in line and "expected" in line and "got" in line
    assert "python -m ptqlib data fetch" in line
    assert not (root / fetch.CALIB_IMAGES / CALIB[1]).exists() and not list(root.rglob("*.part"))
    result, lines = _fetch(served, tmp_path / "unchecked", verify=False)  # --no-verify keeps it, and says so
    assert len(result.downloaded) == 5 and "NOT checked" in lines[-1]


def test_a_present_file_that_differs_is_named(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _fetch(served, root)
    (root / fetch.WEIGHTS_PATH).write_bytes(b"not the weights")
    with pytest.raises(ChecksumError, match="delete it") as caught:
        _fetch(served, root)
    assert str(root / fetch.WEIGHTS_PATH) in _one_line(caught.value)
    assert verify_data(root, served.manifest) == [f"{fetch.WEIGHTS_PATH} has 15 bytes, not "
                                                  f"{(served.upstream / fetch.WEIGHTS_PATH).stat().st_size}"]
    assert not data_complete(root, served.manifest)


def test_offline_is_one_line_that_says_what_to_do(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    lines: list[str] = []
    with pytest.raises(OfflineError) as caught:
        fetch_data(root, manifest=served.manifest, mirror=f"http://127.0.0.1:{_free_port()}", report=lines.append,
                   timeout=2, tty=False)
    line = _one_line(caught.value)
    assert line.startswith("cannot reach 127.0.0.1:") and "network" in line and "PTQLIB_DATA" in line
    assert lines == [] and list(root.iterdir()) == []  # nothing said, no folders left behind


def test_missing_file_on_the_server_is_one_line(served: Served, tmp_path: Path) -> None:
    (served.upstream / fetch.CALIB_IMAGES / CALIB[0]).unlink()
    with pytest.raises(PtqlibError, match="HTTP 404") as caught:
        _fetch(served, tmp_path / "data")
    assert CALIB[0] in _one_line(caught.value)


def test_urls_of_the_manifest_and_the_mirror_variable(served: Served, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.loads(served.manifest.read_text())
    for item in document["files"]:  # upstream URLs that point at the test server (no mirror)
        item["url"] = f"{served.url}/{urllib.parse.quote(item['path'])}"
    direct = served.manifest.with_name("direct.json")
    direct.write_text(json.dumps(document))
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    assert len(fetch_data(tmp_path / "a", manifest=direct, report=None).downloaded) == 5
    monkeypatch.setenv(fetch.MIRROR_ENV, served.url)
    assert len(fetch_data(tmp_path / "b", manifest=served.manifest, report=None).downloaded) == 5
    with pytest.raises(PtqlibError, match="not an http"):
        fetch_data(tmp_path / "c", manifest=served.manifest, mirror="ftp://example.org", report=None)


@pytest.mark.parametrize("files, expected", [
    ([], "no 'files' list"),
    ([{"path": "../x", "url": "http://h/x", "size": 1, "sha256": "0" * 64}], "not a plain relative path"),
    ([{"path": "x", "url": "file:///x", "size": 1, "sha256": "0" * 64}], "not an http"),
    ([{"path": "x", "url": "http://h/x", "size": -1, "sha256": "0" * 64}], "not a byte count"),
    ([{"path": "x", "url": "http://h/x", "size": 1, "sha256": "abc"}], "64 lower-case hex"),
    ([{"path": "x", "url": "http://h/x", "size": 1}], "expected the keys"),
])
def test_bad_manifest_is_one_line(files: list, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": files}))
    with pytest.raises(PtqlibError, match=expected) as caught:
        load_manifest(path)
    _one_line(caught.value)
    with pytest.raises(PtqlibError, match="no data manifest"):
        load_manifest(tmp_path / "missing.json")


def test_default_data_folder_is_the_repositorys_data(served: Served, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTQLIB_DATA", raising=False)
    assert data_module.DEFAULT_DATA_DIR == REPO_DATA and fetch.default_manifest_path() == REPO_DATA / "manifest.json"
    default = tmp_path / "repo" / "data"
    default.mkdir(parents=True)
    (default / "README.md").write_text("notes only")
    monkeypatch.setattr(data_module, "DEFAULT_DATA_DIR", default)
    assert data_root() is None  # the committed notes are not data
    fetch_data(manifest=served.manifest, mirror=served.url, report=None)  # no root: the default
    assert data_root() == default and DataPaths.from_root(data_root()).calib_list.is_file()
    monkeypatch.setenv("PTQLIB_DATA", str(tmp_path))  # PTQLIB_DATA still wins
    assert data_root() == tmp_path
    monkeypatch.setenv("PTQLIB_DATA", "")  # set but empty: no data folder at all
    assert data_root() is None


def test_committed_data_folder_holds_only_small_notes() -> None:
    ignored = (REPO_DATA / ".gitignore").read_text().split()
    assert {"/weights/", "/imagenet-*/", "*.part"} <= set(ignored)
    manifest = load_manifest()
    assert manifest.entries[0] == ManifestEntry(fetch.WEIGHTS_PATH, fetch.WEIGHTS_URL, manifest.entries[0].size,
                                                manifest.entries[0].sha256)
    assert len(manifest.calib_names()) == 200
    for entry in manifest.entries[1:]:
        assert entry.url == f"{fetch.SAMPLE_BASE_URL}/{urllib.parse.quote(entry.path.rsplit('/', 1)[1])}"
    calib32 = (REPO_DATA / "calib32.txt").read_text().split()
    assert len(calib32) == 32 and set(calib32) <= set(manifest.calib_names())


def test_committed_paper_table_is_the_packages() -> None:
    assert (REPO_DATA / fetch.PAPER_CSV_NAME).read_text() == fetch.paper_csv_text(), \
        "data/paper_ptq4vit.csv differs from ptqlib.io.models.PAPER_MODELS: run python -m ptqlib data paper-csv"


def test_committed_manifest_matches_the_shared_copies(shared_data: DataPaths) -> None:
    """The checksums were computed from the shared copies; they must still describe them."""
    assert load_manifest().entries == tuple(build_manifest(shared_data.root))
    assert (REPO_DATA / "calib32.txt").read_text().split() == shared_data.calib_list.read_text().split()
    labels = fetch._labels_text(load_manifest().calib_names(), fetch.imagenet_class_index())
    assert labels.split() == (shared_data.calib_dir / "labels.txt").read_text().split()


def test_a_folder_that_cannot_be_written_is_one_line(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "weights").write_text("a file where the weights folder belongs")
    with pytest.raises(PtqlibError, match="cannot write") as caught:
        _fetch(served, root)
    assert "--root DIR" in _one_line(caught.value)
