"""Atomic output files: a write is whole or absent, a failed one leaves the old file, checks touch nothing."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ptqlib.errors import PtqlibError
from ptqlib.io.files import check_writable, csv_text, write_atomic, write_csv, write_json, write_text

OLD = b'{"top1": 81.92}\n'


def _folder_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_creates_parents_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "r.json"
    write_json(path, {"top1": 1.5, "files": ["x"]})
    assert path.read_text() == '{\n  "top1": 1.5,\n  "files": [\n    "x"\n  ]\n}\n'
    write_json(path, [1, 2])
    assert json.loads(path.read_text()) == [1, 2]
    assert _folder_listing(path.parent) == ["r.json"]  # no temporary file left


def test_failed_rename_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(OLD)

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(PtqlibError) as error:
        write_json(path, {"top1": 0.1})
    assert str(error.value) == f"cannot write {path}: No space left on device; choose a writable output path"
    assert path.read_bytes() == OLD
    assert _folder_listing(tmp_path) == ["r.json"]


def test_writer_that_fails_half_way_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "q.bin"
    path.write_bytes(OLD)

    def half(tmp: Path) -> None:
        tmp.write_bytes(b"half of it")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not an OS error: propagates as it is
        write_atomic(path, half)
    assert path.read_bytes() == OLD
    assert _folder_listing(tmp_path) == ["q.bin"]

    class EncoderError(Exception):
        pass

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise EncoderError("header too large\nmore detail")

    with pytest.raises(PtqlibError, match=r"cannot write .*q\.bin: header too large; choose a writable output path"):
        write_atomic(path, broken, errors=(EncoderError,))
    assert path.read_bytes() == OLD


def test_unserializable_json_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(OLD)
    with pytest.raises(TypeError):
        write_json(path, {"model": object()})
    assert path.read_bytes() == OLD and _folder_listing(tmp_path) == ["r.json"]


def test_replacing_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(OLD)
    path.chmod(0o640)
    write_text(path, "a\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "a\n"


def test_check_writable_touches_nothing(tmp_path: Path) -> None:
    existing = tmp_path / "r.json"
    existing.write_bytes(OLD)
    os.utime(existing, (1_000_000, 1_000_000))
    assert check_writable(existing) == existing
    assert existing.read_bytes() == OLD and existing.stat().st_mtime == 1_000_000
    check_writable(tmp_path / "new" / "deeper" / "r.json")
    assert _folder_listing(tmp_path) == ["r.json"]  # neither the file nor its folders were created


def test_check_writable_refuses_what_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PtqlibError, match=rf"cannot write {blocker / 'x' / 'r.json'}: .*not a directory; "
                                          "choose a writable output path"):
        check_writable(blocker / "x" / "r.json")
    with pytest.raises(PtqlibError, match="Is a directory"):
        check_writable(tmp_path)
    with pytest.raises(PtqlibError, match="Is a directory"):
        write_text(tmp_path, "x")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(PtqlibError, match="Permission denied"):
                check_writable(locked / "r.json")
            with pytest.raises(PtqlibError, match="Permission denied"):
                write_json(locked / "r.json", {})
        finally:
            locked.chmod(0o700)
        assert _folder_listing(locked) == []


def test_csv_rows_and_columns(tmp_path: Path) -> None:
    rows = [{"method": "ptq4vit", "top1": 81.92, "paper_top1": None}, {"method": "baseptq", "top1": 79.6, "extra": 1}]
    assert csv_text(rows) == "method,top1,paper_top1,extra\nptq4vit,81.92,,\nbaseptq,79.6,,1\n"
    assert csv_text(rows, ["top1", "method"]) == "top1,method\n81.92,ptq4vit\n79.6,baseptq\n"
    assert write_csv(tmp_path / "t.csv", rows, ["method"]).read_text() == "method\nptq4vit\nbaseptq\n"
