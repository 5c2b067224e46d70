"""Output files written whole or not at all, with one clear line when the path is not writable.

Every result file (JSON, CSV, saved models) is written to a temporary file in the same folder
and then renamed over the target with :func:`os.replace`, which is atomic on one file system: a
run that fails or is interrupted half-way leaves the previous file as it was, never an empty or
truncated one. :func:`check_writable` lets a command fail before hours of work, without touching
an existing file and without leaving a new one behind.

OS errors become :class:`~ptqlib.errors.PtqlibError` with the message
``cannot write PATH: reason; choose a writable output path``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import PtqlibError

__all__ = ["write_atomic", "write_text", "write_json", "write_csv", "csv_text", "check_writable"]


def _cannot_write(path: Path, error: BaseException) -> PtqlibError:
    reason = getattr(error, "strerror", None) or (str(error).strip().splitlines() or [type(error).__name__])[0]
    return PtqlibError(f"cannot write {path}: {reason}; choose a writable output path")


def _temporary_beside(path: Path) -> Path:
    """A new, empty file in ``path``'s folder (created with the usual permissions, umask applied)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "xb"):
                return tmp
        except FileExistsError:
            continue


def write_atomic(path: str | Path, write: Callable[[Path], None], *,
                 errors: tuple[type[BaseException], ...] = ()) -> Path:
    """Have ``write(tmp)`` fill a temporary file beside ``path``, then rename it to ``path``.

    Parent folders are created. If anything fails before the rename, the temporary file is
    removed and ``path`` is left as it was. ``OSError`` and the exception types in ``errors``
    (e.g. a serializer's own write error) become one-line :class:`PtqlibError`; other
    exceptions propagate unchanged.

    Args:
        path: the file to create or replace.
        write: writes the complete content to the path it is given.
        errors: further exception types that mean "could not write".

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_beside(path)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if path.is_file():  # the new file keeps the permissions of the one it replaces
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
        tmp = None
    except (OSError, *errors) as error:
        raise _cannot_write(path, error) from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` as UTF-8, line endings as given, to ``path`` atomically; see :func:`write_atomic`."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as indented JSON with a final newline to ``path`` atomically.

    The JSON is made before anything is written, so data that cannot be serialized raises
    ``TypeError`` and leaves ``path`` untouched.
    """
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text with a header line: ``columns`` (default: the keys of the first row, then any new
    keys in order of appearance); a missing or None value is an empty field."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV (see :func:`csv_text`) to ``path`` atomically."""
    return write_text(path, csv_text(rows, columns))


def check_writable(path: str | Path) -> Path:
    """Fail now, before any work, unless :func:`write_atomic` could create or replace ``path``.

    Nothing lasting is created and an existing file is not opened for writing: the check finds
    the nearest existing folder on the way to ``path`` and creates and removes a temporary file
    there (which also catches read-only file systems that permission bits do not show).

    Raises:
        PtqlibError: ``cannot write PATH: reason; choose a writable output path``.
    """
    path = Path(path)
    if path.is_dir():
        raise _cannot_write(path, IsADirectoryError(21, "Is a directory"))
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise _cannot_write(path, NotADirectoryError(20, f"{folder} is not a directory"))
    try:
        _temporary_beside(folder / path.name).unlink()
    except OSError as error:
        raise _cannot_write(path, error) from None
    return path
