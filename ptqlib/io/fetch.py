"""The public data folder: download it, check it, and the paper's table as a file.

``python -m ptqlib data fetch`` fills a data folder (default: the repository's ``data/``,
:data:`ptqlib.io.data.DEFAULT_DATA_DIR`) with what anyone may download:

* ``weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors``: timm's ViT-Tiny
  (``model.safetensors`` of ``timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k`` on the Hugging
  Face hub, Apache-2.0);
* ``imagenet-calib/images/*.JPEG``: the 200 images of the public GitHub repository
  ``EliSchwartz/imagenet-sample-images`` (one image per class) that form the calibration pool,
  with ``labels.txt`` written here (class index = the wnid's place among the 1000 sorted wnids,
  from ``timm.data.ImageNetInfo``) and ``calib32.txt`` (the standard 32, copied from beside the
  manifest);
* ``imagenet-sample-val/``: the pool's 168 images outside ``calib32.txt`` (hard links, or copies),
  with their ``labels.txt``: an evaluation set disjoint from the standard calibration images, for
  people without ImageNet (:class:`~ptqlib.io.data.DataPaths` uses it when there is no
  ``imagenet-val-1300/``).

What is downloaded is listed in the manifest (``data/manifest.json``): per file its destination
below the data folder, its URL, its size and its sha256. A download goes to ``<file>.part`` and is
renamed into place only once its size and checksum match, so an interrupted fetch leaves no
half-written file under its real name; the next fetch resumes the ``.part`` file with an HTTP
``Range`` request (a dropped connection is also resumed at once, a few times). A mirror
(``--mirror URL`` or ``$PTQLIB_DATA_MIRROR``) is a web server holding a copy of a data folder:
each file is then fetched from ``<mirror>/<destination>`` instead of its URL (``python -m
http.server`` in a complete data folder is one).

Every failure is one :class:`~ptqlib.errors.PtqlibError` line saying which file, what went wrong
and what to do; :class:`OfflineError` (nothing reachable) and :class:`ChecksumError` (a file that
is not the one the manifest names) are its subclasses.

The paper's results table (``ptqlib.io.models.PAPER_MODELS``) is written as ``data/paper_ptq4vit.csv``
by :func:`paper_csv_text`, with its source in every row.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import PtqlibError
from . import data as _data
from .data import SAMPLE_VAL_DIR
from .files import csv_text, write_text

__all__ = [
    "MIRROR_ENV",
    "MANIFEST_NAME",
    "CALIB32_NAME",
    "PAPER_CSV_NAME",
    "PAPER_SOURCE",
    "WEIGHTS_PATH",
    "WEIGHTS_URL",
    "SAMPLE_BASE_URL",
    "CALIB_IMAGES",
    "OfflineError",
    "ChecksumError",
    "ManifestEntry",
    "Manifest",
    "FetchResult",
    "default_manifest_path",
    "load_manifest",
    "build_manifest",
    "manifest_text",
    "fetch_data",
    "verify_data",
    "data_complete",
    "imagenet_class_index",
    "paper_csv_text",
]

#: The environment variable naming a mirror (as ``--mirror``).
MIRROR_ENV = "PTQLIB_DATA_MIRROR"
#: The manifest's file name, beside ``calib32.txt`` in the repository's ``data/``.
MANIFEST_NAME = "manifest.json"
#: The standard 32 calibration images (file names, one a line), beside the manifest.
CALIB32_NAME = "calib32.txt"
#: The paper's table as CSV, beside the manifest.
PAPER_CSV_NAME = "paper_ptq4vit.csv"
#: Where the paper's numbers come from (the ``source`` column of :func:`paper_csv_text`).
PAPER_SOURCE = ("Yuan et al., PTQ4ViT, ECCV 2022 (arXiv:2111.12293), ImageNet top-1 results table; "
                "same runs to 3 decimals in github.com/hahnyuan/PTQ4ViT README")
#: The weights' place in a data folder and their upstream URL.
WEIGHTS_PATH = "weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
WEIGHTS_URL = "https://huggingface.co/timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k/resolve/main/model.safetensors"
#: The public ImageNet sample (one image per class): ``<SAMPLE_BASE_URL>/<file name>``.
SAMPLE_BASE_URL = "https://raw.githubusercontent.com/EliSchwartz/imagenet-sample-images/master"
#: The calibration pool's folder in a data folder (images in ``images/``).
CALIB_IMAGES = "imagenet-calib/images"

_USER_AGENT = "ptqlib-data-fetch/1 (+python urllib)"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_WNID_NAME = re.compile(r"^(n\d{8})_\S+\.JPEG$")
_FIX = "restore it with git (git checkout data/manifest.json) or regenerate it"


class OfflineError(PtqlibError):
    """No server could be reached (no network, a wrong mirror, a name that does not resolve).

    Attributes:
        host: the server that could not be reached.
        reason: what the network layer said.
    """

    def __init__(self, message: str, host: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.reason = reason


class ChecksumError(PtqlibError):
    """A downloaded or present file whose size or sha256 is not the manifest's."""


@dataclass(frozen=True)
class ManifestEntry:
    """One file of the data folder: ``path`` below it (POSIX, relative), ``url`` to download it
    from, its ``size`` in bytes and its ``sha256`` (hex)."""

    path: str
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The files to download (:class:`ManifestEntry`), read from ``source``."""

    source: Path
    entries: tuple[ManifestEntry, ...]

    @property
    def total_size(self) -> int:
        """Bytes of all files together."""
        return sum(e.size for e in self.entries)

    def calib_names(self) -> list[str]:
        """The calibration pool's file names (entries below ``imagenet-calib/images/``), sorted."""
        prefix = CALIB_IMAGES + "/"
        return sorted(e.path[len(prefix):] for e in self.entries if e.path.startswith(prefix))


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_data` did: the data ``root``, the files ``downloaded`` and those already
    ``present``, the bytes received, and the number of calibration and evaluation images."""

    root: Path
    downloaded: tuple[str, ...]
    present: tuple[str, ...]
    received_bytes: int
    calib_images: int
    val_images: int
    verified: bool


# ----------------------------------------------------------------------------- the manifest


def default_manifest_path() -> Path:
    """The repository's ``data/manifest.json`` (it travels with a clone, not with a wheel)."""
    return Path(__file__).resolve().parents[2] / "data" / MANIFEST_NAME


def _check_relative(path: str, where: str) -> str:
    pure = Path(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or path != pure.as_posix():
        raise PtqlibError(f"{where}: path {path!r} is not a plain relative path below the data folder; {_FIX}")
    return path


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read and check a manifest (default: :func:`default_manifest_path`).

    Args:
        path: the manifest file.
    """
    path = Path(path) if path is not None else default_manifest_path()
    if not path.is_file():
        raise PtqlibError(f"no data manifest at {path}: run from a clone of the repository (its data/ holds "
                          f"{MANIFEST_NAME}) or pass --manifest FILE")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PtqlibError(f"cannot read the data manifest {path} ({error}); {_FIX}") from None
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list) or not files:
        raise PtqlibError(f"data manifest {path} has no 'files' list; {_FIX}")
    entries, seen = [], set()
    for number, item in enumerate(files, start=1):
        where = f"data manifest {path}, file {number}"
        if not isinstance(item, dict) or set(item) != {f.name for f in fields(ManifestEntry)}:
            raise PtqlibError(f"{where}: expected the keys path, url, size, sha256, got {item!r}; {_FIX}")
        entry_path = _check_relative(str(item["path"]), where)
        url, size, digest = item["url"], item["size"], item["sha256"]
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise PtqlibError(f"{where}: url {url!r} is not an http(s) URL; {_FIX}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PtqlibError(f"{where}: size {size!r} is not a byte count; {_FIX}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise PtqlibError(f"{where}: sha256 {digest!r} is not 64 lower-case hex digits; {_FIX}")
        if entry_path in seen:
            raise PtqlibError(f"{where}: {entry_path} is listed twice; {_FIX}")
        seen.add(entry_path)
        entries.append(ManifestEntry(entry_path, url, size, digest))
    return Manifest(path, tuple(entries))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(source: str | Path) -> list[ManifestEntry]:
    """The manifest entries of a complete data folder ``source``: its weights
    (:data:`WEIGHTS_PATH`, from :data:`WEIGHTS_URL`) and every ``imagenet-calib/images/*.JPEG``
    (from :data:`SAMPLE_BASE_URL`), with sizes and checksums computed from those files.

    Args:
        source: a data folder laid out like the shared one (e.g. ``$PTQLIB_DATA``).
    """
    source = Path(source)
    weights = source / WEIGHTS_PATH
    images = source / CALIB_IMAGES
    if not weights.is_file() or not images.is_dir():
        raise PtqlibError(f"{source} lacks {WEIGHTS_PATH} or {CALIB_IMAGES}/; point it at a complete data folder")
    entries = [ManifestEntry(WEIGHTS_PATH, WEIGHTS_URL, weights.stat().st_size, _sha256(weights))]
    for image in sorted(images.iterdir()):
        if image.is_file() and image.suffix == ".JPEG":
            url = f"{SAMPLE_BASE_URL}/{urllib.parse.quote(image.name)}"
            entries.append(ManifestEntry(f"{CALIB_IMAGES}/{image.name}", url, image.stat().st_size, _sha256(image)))
    return entries


def manifest_text(entries: Sequence[ManifestEntry]) -> str:
    """The manifest file for ``entries``: JSON with one file a line (small diffs)."""
    head = {
        "format": 1,
        "about": "files of the public data folder (python -m ptqlib data fetch): path below the data folder, "
                 "upstream URL, size in bytes, sha256; see data/README.md",
        "checksums": "computed from the development copies of these files, not checked against the upstream "
                     "servers (the development machine has no internet)",
    }
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = [f"    {json.dumps(asdict(e))}" for e in entries]
    return "{\n" + "\n".join(lines) + '\n  "files": [\n' + ",\n".join(rows) + "\n  ]\n}\n"


def imagenet_class_index() -> dict[str, int]:
    """``{wnid: class index}`` for the 1000 ImageNet-1k classes (sorted-wnid order, from timm)."""
    import timm.data

    return {wnid: i for i, wnid in enumerate(timm.data.ImageNetInfo().label_names())}


def _labels_text(names: Sequence[str], index: dict[str, int]) -> str:
    lines = []
    for name in names:
        match = _WNID_NAME.match(name)
        if match is None or match.group(1) not in index:
            raise PtqlibError(f"image {name} does not start with an ImageNet-1k wnid (n01440764_...); "
                              "fix the manifest's file names")
        lines.append(f"{name} {index[match.group(1)]}\n")
    return "".join(lines)


# ----------------------------------------------------------------------------- progress


class _Progress:
    """Bytes in place of ``total`` (``done``, starting from what partial files already hold) and
    bytes received over the network (``received``): a tqdm bar on a terminal, else a plain line per
    tenth done and one per large file."""

    def __init__(self, total: int, done: int, report: Callable[[str], None], tty: bool, header: str) -> None:
        self.total, self.done, self.received, self.report, self.bar = max(total, 1), done, 0, report, None
        self.step = min(10, done * 10 // self.total)
        self.tty, self.header, self.started = tty, header, False

    def start(self) -> None:
        """A server answered: say what is being fetched (once), so that a fetch that cannot reach
        anything prints nothing but its error."""
        if self.started:
            return
        self.started = True
        self.report(self.header)
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="data fetch")

    def rewind(self, size: int) -> None:
        """``size`` bytes of a partial file were thrown away."""
        self.done -= size
        if self.bar is not None:
            self.bar.update(-size)

    def update(self, received: int) -> None:
        self.done += received
        self.received += received
        if self.bar is not None:
            self.bar.update(received)
            return
        step = min(10, self.done * 10 // self.total)
        if step > self.step:
            self.step = step
            self.report(f"  {step * 10:3d} % ({_mb(self.done)} of {_mb(self.total)})")

    def file_done(self, path: str, size: int) -> None:
        if self.bar is None and size >= 4 * _CHUNK:
            self.report(f"  {path}: {_mb(size)}, checksum ok")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# ----------------------------------------------------------------------------- downloading


def _offline(url: str, path: str, reason: object, root: Path) -> OfflineError:
    host = urllib.parse.urlsplit(url).netloc or url
    reason = getattr(reason, "reason", reason)
    reason = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return OfflineError(f"cannot reach {host} to download {path} ({reason}): check the network (or the mirror: "
                        f"--mirror URL / {MIRROR_ENV}), set PTQLIB_DATA to a folder laid out as in data/README.md, "
                        f"or place the files in {root} yourself (python -m ptqlib data verify checks them)",
                        host, str(reason))


def _cannot_write(path: Path, error: OSError) -> PtqlibError:
    return PtqlibError(f"cannot write {path} ({error.strerror or error}): free some disk space, or pass --root DIR "
                       "with a writable folder")


def _get(url: str, part: Path, entry: ManifestEntry, *, timeout: float, progress: _Progress,
         root: Path, verify: bool) -> bool:
    """One request for the rest of ``part``; True when the server said the file is complete."""
    have = part.stat().st_size if part.exists() else 0
    if verify and have >= entry.size:
        if have > entry.size:  # longer than the file can be: start again
            part.unlink()
            progress.rewind(have)
            have = 0
        else:
            progress.start()
            return True
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing after the bytes we have: the part is whole
            progress.start()
            return True
        raise PtqlibError(f"HTTP {error.code} ({error.reason}) for {url} while downloading {entry.path}: the file "
                          "is not there; check the URL or the mirror, or place the file yourself") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise _offline(url, entry.path, error, root) from None
    progress.start()
    with response:
        mode = "wb"
        if have and response.status == 206:
            if not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                part.unlink()  # not the range asked for: start again from the first byte
                progress.rewind(have)
                return False
            mode = "ab"
        elif have:  # the server ignored the range and sends the whole file
            progress.rewind(have)
        length = response.headers.get("Content-Length")
        expected = (have if mode == "ab" else 0) + int(length) if length and length.isdigit() else None
        try:  # the folders only now: a fetch that reaches nothing leaves none behind
            part.parent.mkdir(parents=True, exist_ok=True)
            out = open(part, mode)
        except OSError as error:
            raise _cannot_write(part, error) from None
        with out:
            while True:
                block = response.read(_CHUNK)  # a dropped connection raises here (resumed by the caller)
                if not block:
                    break
                try:
                    out.write(block)
                except OSError as error:
                    raise _cannot_write(part, error) from None
                progress.update(len(block))
    size = part.stat().st_size
    if verify:
        return size >= entry.size
    return expected is None or size >= expected


def _download(entry: ManifestEntry, root: Path, url: str, *, timeout: float, retries: int,
              progress: _Progress, verify: bool) -> None:
    """Download ``entry`` to ``root/entry.path`` through ``<path>.part``, resuming and verifying."""
    dest = root / entry.path
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            if _get(url, part, entry, timeout=timeout, progress=progress, root=root, verify=verify):
                break
        except (OSError, http.client.HTTPException) as error:  # the connection dropped mid-file
            if attempt == retries:
                raise PtqlibError(f"the download of {entry.path} broke off ({error}) {retries + 1} times; run "
                                  f"python -m ptqlib data fetch again to resume {part.name}") from None
    else:
        have = part.stat().st_size if part.exists() else 0
        raise PtqlibError(f"the download of {entry.path} stopped at {have} of {entry.size} bytes {retries + 1} "
                          f"times; run python -m ptqlib data fetch again to resume {part.name}")
    if verify:
        size, digest = part.stat().st_size, _sha256(part)
        if size != entry.size or digest != entry.sha256:
            part.unlink()
            raise ChecksumError(f"{entry.path} from {url} is not the file of the manifest (expected {entry.size} "
                                f"bytes, sha256 {entry.sha256}; got {size} bytes, sha256 {digest}); the download "
                                "was deleted: run python -m ptqlib data fetch again, and if it fails the same way "
                                "the file upstream (or on the mirror) changed: report it, or pass --no-verify to "
                                "keep it unchecked")
    os.replace(part, dest)
    progress.file_done(entry.path, entry.size)


def _check_present(entry: ManifestEntry, dest: Path, verify: bool) -> None:
    """PtqlibError when a file already in place is not the manifest's."""
    if not verify:
        return
    size = dest.stat().st_size
    digest = _sha256(dest) if size == entry.size else "(not computed)"
    if size != entry.size or digest != entry.sha256:
        raise ChecksumError(f"{dest} is already there but is not the file of the manifest (expected {entry.size} "
                            f"bytes, sha256 {entry.sha256}; got {size} bytes, sha256 {digest}): delete it and run "
                            "python -m ptqlib data fetch again")


def _mirror_url(mirror: str, entry: ManifestEntry) -> str:
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(entry.path)}"


def _check_mirror(mirror: str | None) -> str | None:
    mirror = mirror if mirror else os.environ.get(MIRROR_ENV) or None
    if mirror is not None:
        parts = urllib.parse.urlsplit(mirror)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PtqlibError(f"mirror {mirror!r} is not an http(s) URL; pass e.g. --mirror http://host:8000/data")
    return mirror


# ----------------------------------------------------------------------------- the layout


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        if target.stat().st_size == source.stat().st_size:
            return
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_layout(root: Path, manifest: Manifest) -> tuple[int, int]:
    """``imagenet-calib/labels.txt`` and ``calib32.txt``, and ``imagenet-sample-val/``; returns the
    number of calibration and evaluation images."""
    names = manifest.calib_names()
    if not names:
        return 0, 0
    calib32_source = manifest.source.parent / CALIB32_NAME
    if not calib32_source.is_file():
        raise PtqlibError(f"no {CALIB32_NAME} beside the manifest {manifest.source}: restore it with git "
                          f"(git checkout data/{CALIB32_NAME})")
    calib32 = [line.strip() for line in calib32_source.read_text().splitlines() if line.strip()]
    missing = sorted(set(calib32) - set(names))
    if missing:
        raise PtqlibError(f"{calib32_source} names {len(missing)} images the manifest does not list "
                          f"({', '.join(missing[:3])}); fix the list or the manifest")
    index = imagenet_class_index()
    calib = root / "imagenet-calib"
    write_text(calib / "labels.txt", _labels_text(names, index))
    write_text(calib / CALIB32_NAME, "".join(f"{name}\n" for name in calib32))
    chosen = set(calib32)
    val_names = [name for name in names if name not in chosen]
    val = root / SAMPLE_VAL_DIR
    (val / "images").mkdir(parents=True, exist_ok=True)
    for name in val_names:
        _link_or_copy(calib / "images" / name, val / "images" / name)
    write_text(val / "labels.txt", _labels_text(val_names, index))
    return len(names), len(val_names)


def fetch_data(
    root: str | Path | None = None,
    *,
    manifest: str | Path | Manifest | None = None,
    mirror: str | None = None,
    verify: bool = True,
    timeout: float = 30.0,
    retries: int = 3,
    report: Callable[[str], None] | None = print,
    tty: bool | None = None,
) -> FetchResult:
    """Download what is missing of the manifest's files into ``root`` and write the layout around them.

    Files already in place are checked (size and sha256) and kept; a ``.part`` file is resumed.

    Args:
        root: the data folder (default: :data:`ptqlib.io.data.DEFAULT_DATA_DIR`, the repository's
            ``data/``); created if needed.
        manifest: the manifest (a path or a loaded :class:`Manifest`; default: the repository's).
        mirror: fetch ``<mirror>/<path>`` instead of each file's URL (default: ``$PTQLIB_DATA_MIRROR``).
        verify: check sizes and checksums (off only for a manifest known to be stale).
        timeout: seconds to wait for a server before giving up.
        retries: how often a dropped connection is resumed at once.
        report: prints a line (None: silent).
        tty: draw a progress bar instead of lines (default: whether stdout is a terminal).
    """
    root = Path(root) if root is not None else _data.DEFAULT_DATA_DIR
    loaded = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    mirror = _check_mirror(mirror)
    say = report if report is not None else (lambda line: None)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PtqlibError(f"cannot create the data folder {root} ({error.strerror or error}); pass --root DIR "
                          "with a writable folder") from None
    present, missing = [], []
    for entry in loaded.entries:
        dest = root / entry.path
        if dest.is_file():
            _check_present(entry, dest, verify)
            present.append(entry)
        else:
            missing.append(entry)
    received = 0
    if missing:
        need = sum(e.size for e in missing)
        parts = [root / (e.path + ".part") for e in missing]
        resumed = sum(min(p.stat().st_size, e.size) for p, e in zip(parts, missing) if p.is_file())
        hosts = sorted({urllib.parse.urlsplit(mirror or e.url).netloc for e in missing})
        header = (f"fetching {len(missing)} files ({_mb(need)}) into {root} from {', '.join(hosts)}"
                  + (f"; {len(present)} already there" if present else "")
                  + (f"; resuming {_mb(resumed)} of partial downloads" if resumed else ""))
        progress = _Progress(need, resumed, say, sys.stdout.isatty() if tty is None else tty, header)
        try:
            for entry in missing:
                url = _mirror_url(mirror, entry) if mirror else entry.url
                _download(entry, root, url, timeout=timeout, retries=retries, progress=progress, verify=verify)
        finally:
            progress.close()
        received = progress.received
    calib_images, val_images = _write_layout(root, loaded)
    if not verify:
        say("sizes and checksums were NOT checked (--no-verify)")
    return FetchResult(root, tuple(e.path for e in missing), tuple(e.path for e in present), received,
                       calib_images, val_images, verify)


def verify_data(root: str | Path | None = None, manifest: str | Path | Manifest | None = None) -> list[str]:
    """The manifest's files that are missing from ``root`` or differ from it (one note each);
    ``[]`` when every file matches.

    Args:
        root: the data folder (default: the repository's ``data/``).
        manifest: the manifest (default: the repository's).
    """
    root = Path(root) if root is not None else _data.DEFAULT_DATA_DIR
    loaded = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    problems = []
    for entry in loaded.entries:
        dest = root / entry.path
        if not dest.is_file():
            problems.append(f"{entry.path} missing")
        elif dest.stat().st_size != entry.size:
            problems.append(f"{entry.path} has {dest.stat().st_size} bytes, not {entry.size}")
        elif _sha256(dest) != entry.sha256:
            problems.append(f"{entry.path} has another sha256")
    return problems


def data_complete(root: str | Path | None = None, manifest: str | Path | Manifest | None = None) -> bool:
    """Whether ``root`` holds every file of the manifest (by size; no checksums) and the labels a
    fetch writes: a quick test of whether a fetch has finished there.

    Args:
        root: the data folder (default: the repository's ``data/``).
        manifest: the manifest (default: the repository's).
    """
    root = Path(root) if root is not None else _data.DEFAULT_DATA_DIR
    loaded = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    needed = [root / "imagenet-calib" / "labels.txt", root / "imagenet-calib" / CALIB32_NAME,
              root / SAMPLE_VAL_DIR / "labels.txt"] if loaded.calib_names() else []
    return all(p.is_file() for p in needed) and all(
        (root / e.path).is_file() and (root / e.path).stat().st_size == e.size for e in loaded.entries)


# ----------------------------------------------------------------------------- the paper's table


def paper_csv_text() -> str:
    """The paper's table (``ptqlib.io.models.PAPER_MODELS``) as CSV, with a ``source`` column;
    ``data/paper_ptq4vit.csv`` holds exactly this text (a test checks it)."""
    from .models import PAPER_MODELS

    rows = []
    for model in PAPER_MODELS:
        row = {k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in asdict(model).items()}
        rows.append({**row, "source": PAPER_SOURCE})
    return csv_text(rows)
