"""Append-only tables of JSON records, one record a line, safe for concurrent writers.

A sweep's results table (``results/sweeps/<name>.jsonl``) grows by one record per finished run,
written by whichever process ran it: the command itself, a local worker process or a Slurm job
on another node. Why appending, and not the write-a-temporary-file-and-rename of
:mod:`ptqlib.io.files`:

* a rename replaces the whole file, so two workers finishing at once would each read the table,
  add their record and rename, and one record would be lost; it needs a lock anyway, and then
  rewrites the whole table (hundreds of records, each with every image's prediction) per run;
* an append under an exclusive POSIX lock (:func:`fcntl.lockf`, which also works on NFS through
  its lock manager, where Slurm jobs on different nodes share the results folder) costs one
  record, and needs no parent process alive to collect results: a Slurm job records its own run;
* a record is written in one ``write`` of a complete line, then flushed and ``fsync``-ed before
  the lock is released. A process killed in the middle of that write leaves at most a torn last
  line without its newline: :func:`read_records` ignores a line that does not parse (and counts
  it), and the next :func:`append_record` first ends such a line, so the torn fragment never
  glues onto a good record.

So a record is in the table completely or not at all, as far as readers are concerned, and a run
is done exactly when its record is there. Readers never take the lock.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import PtqlibError

__all__ = ["append_record", "read_records", "current_records", "Records", "locked"]


@contextmanager
def locked(path: str | Path) -> Iterator[Any]:
    """``path`` opened for appending (and reading), under an exclusive POSIX lock; created with
    its folders if needed. Other :func:`append_record` calls on the same file wait meanwhile."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")
    except OSError as error:
        raise PtqlibError(f"cannot write {path}: {error.strerror or error}; choose a writable output path") from None
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path``, atomically for readers (see the module).

    The JSON is made first, so a record that cannot be serialized raises ``TypeError`` and
    writes nothing.
    """
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    with locked(path) as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        if end:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":  # a writer died mid-line: end its fragment first
                line = b"\n" + line
        handle.seek(0, os.SEEK_END)
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class Records:
    """What :func:`read_records` found: the records in file order and the number of lines that
    were not JSON objects (torn by a killed writer)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0


def read_records(path: str | Path, *, offset: int = 0) -> tuple[Records, int]:
    """The records of a table written by :func:`append_record`, from byte ``offset`` on.

    Returns the records and the offset to continue from (after the last complete line), so a
    process following a growing table reads each record once. A missing file has no records.
    """
    path = Path(path)
    out = Records()
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return out, offset
    end = data.rfind(b"\n") + 1  # a last line without its newline may still be being written
    for raw in data[:end].splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            out.bad_lines += 1
            continue
        if isinstance(record, dict):
            out.records.append(record)
        else:
            out.bad_lines += 1
    return out, offset + end


def current_records(path: str | Path, engine: str | None = None) -> list[dict[str, Any]]:
    """The records of a sweep's table computed by ``engine`` (default: this code's
    :func:`~ptqlib.io.provenance.engine_fingerprint`), the first per run key, in file order: what
    notebooks and reports should read (``pandas.DataFrame(current_records(path))``)."""
    from .provenance import engine_fingerprint

    engine = engine or engine_fingerprint()
    seen: set[Any] = set()
    out = []
    for record in read_records(path)[0].records:
        key = record.get("key")
        if record.get("engine") == engine and key not in seen:
            seen.add(key)
            out.append(record)
    return out
