"""Sweeps: many calibrations described as data, each run once, resumable, spread over processes or a cluster.

A sweep is models × methods × bit-widths × calibration draws, written as a small TOML file
(``sweeps/*.toml``) or as command-line lists (``reproduce --models ... --methods ... --bits ...
--draws N``); both build the same :class:`Sweep`::

    name = "vit_tiny_statistics"               # the results table's name (default: the file's)
    models = ["vit_tiny_patch16_224.augreg_in21k_ft_in1k"]
    methods = ["baseptq", "ptq4vit"]
    bits = ["8/8", "6/6"]                      # W/A pairs
    draws = 10                                 # calibration draws 0..9 (or a list: [0, 3, 7])
    calib_size = 32                            # or a list: [8, 16, 32, 64, 128] (a run per size)
    # jitter = [0, 1, 2]                       # last-bit perturbations of the calibration images (0: none)
    # val_limit = 500       float = true       random_init = false
    # data = "../shared/data"   calib_dir, calib_list, val_dir: as on the command line
    [config]                                   # any PTQConfig field, for every method
    # search = "grid"
    [config.ptq4vit]                           # ... or for one method
    # max_tokens = 0                           # 0 = None, as on the command line
    [variants.ptq4vit-mse]                     # a named variant of a preset, usable in 'methods'
    # method = "ptq4vit"                       # the preset it starts from (required)
    # metric = "mse"                           # ... and the PTQConfig fields it changes

**Variants.** A variant is a preset with some fields changed, under its own name: the name is
what its records call the method (and ``PTQConfig.method``), so a metric comparison or an
ablation is one sweep, e.g. ``methods = ["ptq4vit", "ptq4vit-mse"]``. Fields apply in this
order, later winning: the preset, ``[config]``, ``[config.<preset>]``, the variant's own.

**Draws.** Draw 0 calibrates on the standard list (``calib32.txt`` of the data folder, or
``calib_list``) when it holds at least ``calib_size`` names (its first ``calib_size``); draw d
(and draw 0 without such a list) on a random sample of ``calib_size`` images of the calibration
pool, seeded with d. Each record names
its calibration files (``calib_files``). With ``float = true`` (the default) every model's float
accuracy is one more run (method ``float``).

**Jitter.** ``jitter = [0, 1, 2]`` calibrates each run also on images perturbed in their last
bit (:func:`~ptqlib.app.pipeline.last_bit_jitter`, seeded with the jitter): the spread over
jitters is what another machine's rounding alone would move, next to the spread over draws.

**Keys.** Every run has a stable key (:func:`run_key`): a 12-hex-digit hash of the model, method,
bit-widths, draw, the complete config, the calibration size and list, the validation limit,
``random_init`` and :func:`~ptqlib.io.provenance.engine_fingerprint`. It does not depend on where
the data lives, on the device, or on the sweep's name or its other runs, so a run finished by
any sweep with the same table is never run again, and changing the engine's source makes every
run due again (records of earlier engines stay in the table, ignored).

**Table.** ``<output-dir>/sweeps/<name>.jsonl`` gets one complete record per finished run
(:mod:`ptqlib.io.jsonl`: appended under a file lock by whichever process ran it, a torn last
line ignored), with every image's prediction; ``<name>.csv`` (one row per run) and
``<name>_summary.csv`` (mean ± std over draws) are rendered from it at the end.
``<name>.events.jsonl`` logs each run's start (host, process, job) and failures (error, log
file); ``reproduce --status`` reads both and runs nothing. Resuming is skipping the keys
already in the table.

**Executors** (:func:`run_sweep`): ``inprocess`` (default) runs one after another here;
``local:N`` runs N jobs at a time as separate processes (submitit's ``LocalExecutor``, torch's
threads split between them); ``slurm`` submits a job array through ``submitit.AutoExecutor``
(partition, GPUs, CPUs, memory, time, array parallelism as options; ``--device cuda`` is passed
into the jobs). ``--group`` puts one run (default), one model's draw, or one model in a job.
A job that fails or is killed is named with its log file; the others go on.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import socket
import statistics
import sys
import time
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..engine.config import PTQConfig, config_fields
from ..engine.methods import METHODS, get_method
from ..errors import PtqlibError
from ..io.files import check_writable, write_csv
from ..io.jsonl import append_record, read_records
from ..io.provenance import engine_fingerprint

if TYPE_CHECKING:
    import argparse

    from .pipeline import Prepared, RunSpec

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["Sweep", "Run", "Settings", "SweepFiles", "Executor", "SlurmOptions", "SweepOutcome", "SweepStatus",
           "load_sweep", "run_key", "run_sweep", "sweep_status", "summarize", "execute_run", "run_group",
           "add_sweep_args", "sweep_requested", "cmd_sweep"]

#: The keys a sweep file may hold.
SWEEP_KEYS = ("name", "models", "methods", "bits", "draws", "calib_size", "jitter", "val_limit", "float",
              "random_init", "data", "calib_dir", "calib_list", "val_dir", "config", "variants")
#: The columns of ``<name>.csv`` (the JSON records hold more).
RUN_COLUMNS = ("key", "model", "method", "w_bits", "a_bits", "draw", "calib_images", "eval_images", "top1", "top5",
               "calib_seconds", "eval_seconds", "seconds", "device", "host", "engine", "finished")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BITS = re.compile(r"^\s*(?:[Ww](\d+)[Aa](\d+)|(\d+)\s*/\s*(\d+))\s*$")
_FIELD_HINTS = dict((f.name, hint) for f, hint in config_fields())
#: PTQConfig fields a sweep's lists decide (not settable under [config]).
_LISTED_FIELDS = ("method", "w_bits", "a_bits")


# ----------------------------------------------------------------------------------------------
# the sweep: what to compute


@dataclass(frozen=True)
class Run:
    """One calibration (or, with ``method == "float"``, the float model's evaluation) of a sweep."""

    key: str
    model: str
    method: str
    w_bits: int | None
    a_bits: int | None
    draw: int | None
    config: dict[str, Any] | None  # PTQConfig.to_dict(); None for the float run
    engine: str
    calib_size: int | None = None  # calibration images; None for the float run
    several_sizes: bool = field(default=False, compare=False)  # the sweep has several calib sizes: labels say which
    jitter: int = 0  # seed of the calibration images' last-bit perturbation (0: none)

    @property
    def bits(self) -> str:
        """``W8A8``, or ``float``."""
        return "float" if self.w_bits is None else f"W{self.w_bits}A{self.a_bits}"

    @property
    def label(self) -> str:
        """``<key> <model> <method> W8A8 draw 3`` (``<key> <model> float`` for the float run)."""
        if self.method == "float":
            return f"{self.key} {self.model} float"
        size = f" ({self.calib_size} images)" if self.several_sizes else ""
        jitter = f" jitter {self.jitter}" if self.jitter else ""
        return f"{self.key} {self.model} {self.method} {self.bits} draw {self.draw}{jitter}{size}"


def run_key(parts: dict[str, Any]) -> str:
    """The 12-hex-digit SHA-256 of ``parts`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Sweep:
    """What a sweep computes; see the module docstring for the file format.

    ``config`` holds PTQConfig overrides for every method, ``method_config`` per method (winning
    over ``config``). Paths are absolute. Build one with :func:`load_sweep` or :meth:`from_lists`.
    """

    name: str
    models: tuple[str, ...]
    methods: tuple[str, ...]
    bits: tuple[tuple[int, int], ...]
    draws: tuple[int, ...] = (0,)
    calib_sizes: tuple[int, ...] = (32,)
    jitters: tuple[int, ...] = (0,)
    val_limit: int | None = None
    include_float: bool = True
    random_init: bool = False
    data: Path | None = None
    calib_dir: Path | None = None
    calib_list: Path | None = None
    val_dir: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    method_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"method": preset, field: value}
    source: str = "command line"

    @property
    def calib_size(self) -> int:
        """The (first) calibration size."""
        return self.calib_sizes[0]

    @classmethod
    def from_lists(cls, name: str, models: Sequence[str], methods: Sequence[str],
                   bits: Sequence[tuple[int, int] | str], draws: int | Sequence[int] = 1, **rest: Any) -> "Sweep":
        """A sweep from Python or command-line lists, validated like a file."""
        table = {"name": name, "models": list(models), "methods": list(methods),
                 "bits": [b if isinstance(b, str) else f"{b[0]}/{b[1]}" for b in bits],
                 "draws": draws if isinstance(draws, int) else list(draws)}
        source = rest.pop("source", "command line")
        if "variants" in rest and not rest["variants"]:
            rest.pop("variants")
        config = rest.pop("config", None)
        method_config = rest.pop("method_config", None)
        for k, v in rest.items():
            table["float" if k == "include_float" else k] = str(v) if isinstance(v, Path) else v
        table = {k: v for k, v in table.items() if v is not None}
        if config or method_config:
            table["config"] = {**(config or {}), **(method_config or {})}
        return _parse(table, source)

    def replace(self, **changes: Any) -> "Sweep":
        """A copy with some fields changed, validated again (lists as for :meth:`from_lists`);
        ``config`` overrides win over every method's own, ``method_config`` merges per method."""
        table = _to_table(self)
        for k, v in changes.items():
            if k == "bits":
                v = [b if isinstance(b, str) else f"{b[0]}/{b[1]}" for b in v]
            elif k == "include_float":
                k = "float"
            elif k == "calib_sizes":
                k, v = "calib_size", list(v)
            elif k == "jitters":
                k, v = "jitter", list(v)
            elif k == "config":  # wins over the file's [config] and [config.<method>] alike
                old = table.get("config", {})
                table["config"] = {**{m: ({f: x for f, x in c.items() if f not in v} if isinstance(c, dict) else c)
                                      for m, c in old.items()}, **v}
                continue
            elif k == "method_config":
                config = table.setdefault("config", {})
                for method, values in v.items():
                    config[method] = {**config.get(method, {}), **values}
                continue
            elif isinstance(v, (tuple, Path)):
                v = list(v) if isinstance(v, tuple) else str(v)
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
        return _parse(table, self.source)

    def config_for(self, method: str, w_bits: int, a_bits: int) -> PTQConfig:
        """The recipe of one run: the method's preset (or variant's) with the sweep's overrides."""
        if method in self.variants:
            changes = dict(self.variants[method])
            preset = changes.pop("method")
            return get_method(preset, w_bits, a_bits, **{**self.config, **self.method_config.get(preset, {}),
                                                          **changes, "method": method})
        return get_method(method, w_bits, a_bits, **{**self.config, **self.method_config.get(method, {})})

    def runs(self) -> list[Run]:
        """Every run, ordered by model, then calibration size, draw, method and bits (the float run
        first per model)."""
        engine = engine_fingerprint()
        common = {"calib_list": self.calib_list.name if self.calib_list else None,
                  "val_limit": self.val_limit, "random_init": self.random_init, "engine": engine}
        several = len(self.calib_sizes) > 1
        out = []
        for model in self.models:
            if self.include_float:
                parts = {"model": model, "method": "float", "val_limit": self.val_limit,
                         "random_init": self.random_init, "engine": engine}
                out.append(Run(run_key(parts), model, "float", None, None, None, None, engine))
            for size in self.calib_sizes:
                for draw in self.draws:
                    for method in self.methods:
                        for w, a in self.bits:
                            config = self.config_for(method, w, a).to_dict()
                            for jitter in self.jitters:
                                parts = {**common, "calib_size": size, "model": model, "method": method,
                                         "w_bits": w, "a_bits": a, "draw": draw, "config": config}
                                if jitter:  # keys without jitter stay those of earlier sweeps
                                    parts["jitter"] = jitter
                                out.append(Run(run_key(parts), model, method, w, a, draw, config, engine, size,
                                               several, jitter))
        return out


def _to_table(sweep: Sweep) -> dict[str, Any]:
    """The file-shaped table of ``sweep`` (inverse of :func:`_parse`)."""
    table: dict[str, Any] = {"name": sweep.name, "models": list(sweep.models), "methods": list(sweep.methods),
                             "bits": [f"{w}/{a}" for w, a in sweep.bits], "draws": list(sweep.draws),
                             "calib_size": (sweep.calib_size if len(sweep.calib_sizes) == 1
                                            else list(sweep.calib_sizes)), "jitter": list(sweep.jitters),
                             "float": sweep.include_float,
                             "random_init": sweep.random_init}
    for k in ("val_limit", "data", "calib_dir", "calib_list", "val_dir"):
        v = getattr(sweep, k)
        if v is not None:
            table[k] = str(v) if isinstance(v, Path) else v
    config = {**sweep.config, **{m: dict(c) for m, c in sweep.method_config.items()}}
    if config:
        table["config"] = config
    if sweep.variants:
        table["variants"] = {name: dict(v) for name, v in sweep.variants.items()}
    return table


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_bits(item: Any) -> tuple[int, int] | None:
    m = _BITS.match(item) if isinstance(item, str) else None
    if not m:
        return None
    w, a = (int(g) for g in (m.groups()[:2] if m.group(1) else m.groups()[2:]))
    return (w, a) if 2 <= w <= 16 and 2 <= a <= 16 else None


def _known_model(name: str) -> bool:
    import timm

    from ..io.models import paper_model

    if ":" in name or paper_model(name) is not None:
        return True
    return timm.is_model(timm.models.split_model_name_tag(name)[0])


def _config_value(name: str, value: Any) -> Any:
    """A TOML value for PTQConfig field ``name``: 0 means None for an optional integer (TOML has no null)."""
    args = typing.get_args(_FIELD_HINTS[name])
    if int in args and type(None) in args and value == 0:
        return None
    return value


def _parse(table: dict[str, Any], source: str) -> Sweep:
    """Validate a sweep table; :class:`PtqlibError` with one line per mistake."""
    mistakes: list[str] = []
    for k in table:
        if k not in SWEEP_KEYS:
            mistakes.append(f"unknown key {k!r}{_suggest(k, SWEEP_KEYS)}; the keys are: {', '.join(SWEEP_KEYS)}")

    def strings(key: str) -> list[str]:
        value = table.get(key)
        if value is None:
            mistakes.append(f"{key!r} is missing; give a list such as {key} = [...]")
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            mistakes.append(f"{key!r} must be a non-empty list of names, got {value!r}")
            return []
        return [v.strip() for v in value]

    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        mistakes.append(f"'name' must be letters, digits, '.', '_' or '-' (it names the results file), got {name!r}")
    models = strings("models")
    for m in models:
        if not _known_model(m):
            mistakes.append(f"unknown timm model {m!r}; check the name (python -m ptqlib models lists the paper's)")
    variants: dict[str, dict[str, Any]] = {}
    raw_variants = table.get("variants", {})
    if not isinstance(raw_variants, dict) or not all(isinstance(v, dict) for v in raw_variants.values()):
        mistakes.append("'variants' must hold tables such as [variants.ptq4vit-mse] with method = \"ptq4vit\" "
                        f"and PTQConfig fields, got {raw_variants!r}")
        raw_variants = {}
    for vname, values in raw_variants.items():
        preset = values.get("method")
        if not _NAME.match(vname) or vname in METHODS:
            mistakes.append(f"variant name {vname!r} must be letters, digits, '.', '_' or '-' and not a preset's "
                            f"name ({', '.join(METHODS)})")
        elif preset not in METHODS:
            mistakes.append(f"[variants.{vname}] needs method = one of {', '.join(map(repr, METHODS))} (the preset "
                            f"it changes), got {preset!r}")
        else:
            variants[vname] = {"method": preset}
    methods = strings("methods")
    for m in methods:
        if m not in METHODS and m not in raw_variants:
            mistakes.append(f"unknown method {m!r}{_suggest(m, [*METHODS, *raw_variants])}; choose from: "
                            f"{', '.join([*METHODS, *raw_variants])} (or define [variants.{m}])")
    bits: list[tuple[int, int]] = []
    raw_bits = table.get("bits")
    if not isinstance(raw_bits, list) or not raw_bits:
        mistakes.append(f"'bits' must be a non-empty list of W/A pairs such as [\"8/8\", \"6/6\"], got {raw_bits!r}")
    else:
        for item in raw_bits:
            pair = _parse_bits(item)
            if pair is None:
                mistakes.append(f"bad bits {item!r}; write W/A with integers from 2 to 16, such as \"6/6\"")
            else:
                bits.append(pair)
    draws_value = table.get("draws", 1)
    draws: list[int] = []
    if _is_int(draws_value) and draws_value >= 1:
        draws = list(range(draws_value))
    elif isinstance(draws_value, list) and draws_value and all(_is_int(d) and d >= 0 for d in draws_value) \
            and len(set(draws_value)) == len(draws_value):
        draws = list(draws_value)
    else:
        mistakes.append(f"'draws' must be a count >= 1 (draws 0..N-1) or a list of distinct draw numbers >= 0, "
                        f"got {draws_value!r}")
    calib_size = table.get("calib_size", 32)
    sizes = calib_size if isinstance(calib_size, list) else [calib_size]
    if not (sizes and all(_is_int(c) and c >= 1 for c in sizes) and len(set(sizes)) == len(sizes)):
        mistakes.append(f"'calib_size' must be a whole number >= 1 or a list of distinct ones, got {calib_size!r}")
    jitter = table.get("jitter", [0])
    jitters = jitter if isinstance(jitter, list) else [jitter]
    if not (jitters and all(_is_int(j) and j >= 0 for j in jitters) and len(set(jitters)) == len(jitters)):
        mistakes.append(f"'jitter' must be a list of distinct seeds >= 0 (0: the images as they are), got {jitter!r}")
    val_limit = table.get("val_limit")
    if val_limit is not None and not (_is_int(val_limit) and val_limit >= 1):
        mistakes.append(f"'val_limit' must be a whole number >= 1 (leave it out for all images), got {val_limit!r}")
    for k in ("float", "random_init"):
        if k in table and not isinstance(table[k], bool):
            mistakes.append(f"{k!r} must be true or false, got {table[k]!r}")
    paths: dict[str, Path | None] = {}
    for k in ("data", "calib_dir", "calib_list", "val_dir"):
        v = table.get(k)
        if v is not None and not (isinstance(v, str) and v):
            mistakes.append(f"{k!r} must be a path, got {v!r}")
            v = None
        paths[k] = Path(v).expanduser().absolute() if v else None

    config: dict[str, Any] = {}
    method_config: dict[str, dict[str, Any]] = {}
    raw_config = table.get("config", {})
    if not isinstance(raw_config, dict):
        mistakes.append(f"'config' must be a table of PTQConfig fields, got {raw_config!r}")
        raw_config = {}
    settable = [n for n in _FIELD_HINTS if n not in _LISTED_FIELDS]

    def fields_of(where: str, values: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in values.items():
            if k in _LISTED_FIELDS:
                mistakes.append(f"{where}.{k} cannot be set there: the sweep's 'methods' and 'bits' lists decide it")
            elif k not in _FIELD_HINTS:
                mistakes.append(f"unknown config field {where}.{k}{_suggest(k, settable)}; "
                                "see python -m ptqlib quantize --help, 'method settings'")
            else:
                out[k] = _config_value(k, v)
        return out

    for vname, values in raw_variants.items():
        if vname in variants:
            variants[vname].update(fields_of(f"variants.{vname}", {k: v for k, v in values.items() if k != "method"}))
    for k, v in raw_config.items():
        if isinstance(v, dict):
            if k not in METHODS:
                mistakes.append(f"[config.{k}] names no method{_suggest(k, METHODS)}; "
                                f"per-method tables are [config.<method>] with a method from: {', '.join(METHODS)}")
            else:
                method_config[k] = fields_of(f"config.{k}", v)
        else:
            config.update(fields_of("config", {k: v}))

    if not mistakes:
        for method in methods:
            preset = variants[method]["method"] if method in variants else method
            changes = {k: v for k, v in variants.get(method, {}).items() if k != "method"}
            for w, a in bits[:1]:
                try:
                    get_method(preset, w, a, **{**config, **method_config.get(preset, {}), **changes})
                except PtqlibError as e:
                    mistakes.append(str(e).replace(f"method {preset!r}", f"method {method!r}"))
    if mistakes:
        raise PtqlibError("\n".join(f"{source}: {m}" for m in dict.fromkeys(mistakes)))
    return Sweep(name=name, models=tuple(dict.fromkeys(models)), methods=tuple(dict.fromkeys(methods)),
                 bits=tuple(dict.fromkeys(bits)), draws=tuple(draws), calib_sizes=tuple(sizes), jitters=tuple(jitters),
                 val_limit=val_limit,
                 include_float=table.get("float", True), random_init=table.get("random_init", False),
                 config=config, method_config=method_config, variants=variants, source=source, **paths)


def load_sweep(path: str | Path) -> Sweep:
    """The sweep in TOML file ``path`` (its name defaults to the file's stem); relative paths in it
    are taken from the current folder."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PtqlibError(f"sweep file {path} does not exist; pass a TOML file such as sweeps/vit_tiny_statistics.toml") from None
    except OSError as error:
        raise PtqlibError(f"cannot read sweep file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise PtqlibError(f"{path}: not valid TOML ({error}); fix the file") from None
    table.setdefault("name", path.stem)
    return _parse(table, str(path))


# ----------------------------------------------------------------------------------------------
# one run: what a worker does


@dataclass(frozen=True)
class Settings:
    """How runs compute (not part of their keys): device, batch size, loader workers, memory,
    torch threads (None: leave torch's), progress bars."""

    device: str = "cpu"
    batch_size: int = 64
    workers: int = 0
    micro_batch: int | None = 8
    max_memory: float | None = None
    skip_corrupt: bool = False
    threads: int | None = None
    progress: bool = False


@dataclass(frozen=True)
class SweepFiles:
    """Where a sweep's results go: ``<folder>/sweeps/<name>.jsonl`` (the table), ``.csv``,
    ``_summary.csv``, ``.events.jsonl`` and the job folder ``<name>.jobs/`` (submitit's logs)."""

    table: Path
    csv: Path
    summary: Path
    events: Path
    jobs: Path

    @classmethod
    def under(cls, folder: str | Path, name: str) -> "SweepFiles":
        base = Path(folder).absolute() / "sweeps"
        return cls(base / f"{name}.jsonl", base / f"{name}.csv", base / f"{name}_summary.csv",
                   base / f"{name}.events.jsonl", base / f"{name}.jobs")


def _run_spec(sweep: Sweep, run: Run, settings: Settings) -> "RunSpec":
    from ..io.data import DataPaths, data_root
    from .pipeline import RunSpec

    draw = run.draw if run.draw is not None else sweep.draws[0]
    calib_dir, calib_list = sweep.calib_dir, sweep.calib_list
    if draw > 0:  # a seeded sample of the pool, never the standard list
        calib_list = None
        if calib_dir is None:
            root = data_root(sweep.data)
            calib_dir = DataPaths.from_root(root).calib_dir if root is not None else None
    return RunSpec(model=run.model, random_init=sweep.random_init, data=sweep.data, calib_dir=calib_dir,
                   calib_list=calib_list, calib_size=run.calib_size or sweep.calib_size, val_dir=sweep.val_dir,
                   val_limit=sweep.val_limit, seed=0, calib_seed=draw, calib_jitter=run.jitter, device=settings.device,
                   batch_size=settings.batch_size, workers=settings.workers, micro_batch=settings.micro_batch,
                   max_memory=settings.max_memory, skip_corrupt=settings.skip_corrupt)


_PREPARED: list[tuple[Any, Any]] = []  # this process's last (RunSpec, Prepared): runs of one draw share it


def _prepared(spec: "RunSpec", progress: bool) -> "Prepared":
    from .pipeline import prepare

    if _PREPARED and _PREPARED[0][0] == spec:
        return _PREPARED[0][1]
    _PREPARED.clear()
    prepared = prepare(spec, evaluate_float=False, progress=progress)
    prepared.validation()
    _PREPARED.append((spec, prepared))
    return prepared


def _job_id() -> str | None:
    """This process's Slurm job (``array_task`` for an array) or submitit local job, else None."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")


def _job_log() -> str | None:
    """This submitit job's stderr log, or None outside one."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:  # noqa: BLE001 - a log path is a courtesy
        return None


def execute_run(run: Run, sweep: Sweep, settings: Settings) -> dict[str, Any]:
    """Compute one run and return its record (not yet in the table)."""
    from ..io.evaluate import skipped_record
    from ..io.provenance import versions
    from .pipeline import run_method

    start = time.perf_counter()
    here = engine_fingerprint()
    if run.engine != here:
        raise PtqlibError(f"the engine's source changed since the sweep was planned (fingerprint {run.engine}, "
                          f"here {here}); rerun the sweep command to plan it again")
    prepared = _prepared(_run_spec(sweep, run, settings), settings.progress)
    if run.method == "float":
        fp = prepared.float_accuracy(progress=settings.progress)
        record: dict[str, Any] = {
            "model": run.model, "checkpoint": str(prepared.checkpoint) if prepared.checkpoint else None,
            "random_init": sweep.random_init, "method": "float", "w_bits": None, "a_bits": None,
            "eval_images": fp.images, "top1": round(fp.top1, 2), "top5": round(fp.top5, 2),
            "eval_seconds": round(fp.seconds, 2), "skipped_images": skipped_record(fp),
            "predictions": list(fp.predictions), "labels": list(fp.labels), "engine": here, "seed": 0,
            "device": settings.device, "versions": versions()}
    else:
        record = run_method(prepared, PTQConfig(**run.config), progress=settings.progress).result
        for k in ("fp_top1", "fp_top5", "fp_eval_seconds"):  # the float run is a run of its own
            record.pop(k, None)
    record.update({"key": run.key, "sweep": sweep.name, "draw": run.draw, "jitter": run.jitter,
                   "calib_size": run.calib_size or sweep.calib_size,
                   "val_limit": sweep.val_limit, "seconds": round(time.perf_counter() - start, 2),
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
                   "pid": os.getpid(), "job": _job_id()})
    return record


def _line(run: Run, record: dict[str, Any]) -> str:
    return f"{run.label}: top-1 {record['top1']:.2f} % in {record['seconds']:.1f} s"


def _first_line(error: BaseException) -> str:
    """One line for ``error``: a PtqlibError's message, else ``Type: message``."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if isinstance(error, PtqlibError):
        return lines[0] if lines else type(error).__name__
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _job_error(error: BaseException | None) -> str:
    """One line for why a submitit job ended without recording its runs."""
    if error is None:
        return "the job ended without recording the run"
    text = str(error)
    if "has not produced any output" in text:
        return "the job ended without a result (killed, out of memory or out of time)"
    if "failed during processing with trace" in text:  # submitit's FailedJobError: the trace's last line
        trace = text.split("-" * 22)[1] if text.count("-" * 22) >= 2 else text
        lines = [line for line in trace.splitlines() if line.strip()]
        return lines[-1].strip() if lines else "the job failed"
    return _first_line(error)


def _run_and_record(run: Run, sweep: Sweep, settings: Settings, files: SweepFiles,
                    on_line: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Compute ``run``, append its record to the table; on an error, log a ``fail`` event. Returns
    the outcome (``key``, ``ok``, ``top1``/``seconds`` or ``error``/``log``) and the record."""
    log = _job_log()
    append_record(files.events, {"event": "start", "key": run.key, "time": time.time(), "host": socket.gethostname(),
                                 "pid": os.getpid(), "job": _job_id(), "log": log})
    try:
        record = execute_run(run, sweep, settings)
    except Exception as error:  # noqa: BLE001 - one failed run must not stop the others
        message = _first_line(error)
        if not isinstance(error, PtqlibError):
            traceback.print_exc()
        elif log is not None:  # in a job: its log says why
            print(f"error: {run.label}: {message}", file=sys.stderr, flush=True)
        append_record(files.events, {"event": "fail", "key": run.key, "time": time.time(), "error": message,
                                     "host": socket.gethostname(), "pid": os.getpid(), "job": _job_id(), "log": log})
        return {"key": run.key, "ok": False, "error": message, "log": log}, None
    append_record(files.table, record)
    on_line(_line(run, record))
    return {"key": run.key, "ok": True, "top1": record["top1"], "seconds": record["seconds"]}, record


def run_group(runs: Sequence[Run], sweep: Sweep, settings: Settings, files: SweepFiles) -> list[dict[str, Any]]:
    """A job's work: each of ``runs`` not yet in the table, one after another (what submitit runs)."""
    import torch

    torch.set_num_threads(settings.threads or max(1, len(os.sched_getaffinity(0))))
    done = {r.get("key") for r in read_records(files.table)[0].records}
    out = []
    for run in runs:
        if run.key in done:
            out.append({"key": run.key, "ok": True, "skipped": True})
            continue
        out.append(_run_and_record(run, sweep, settings, files, lambda line: print(line, flush=True))[0])
    return out


# ----------------------------------------------------------------------------------------------
# executors and the loop that follows them


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm requests for ``--executor slurm`` (None: the cluster's default)."""

    partition: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem_gb: float | None = None
    time_min: int = 24 * 60
    array_parallelism: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Executor:
    """``inprocess``, ``local`` (``workers`` processes at a time) or ``slurm``."""

    kind: str = "inprocess"
    workers: int = 1

    @classmethod
    def parse(cls, text: str) -> "Executor":
        text = text.strip()
        if text == "inprocess":
            return cls()
        if text == "slurm":
            return cls("slurm")
        m = re.fullmatch(r"local(?::(\d+))?", text)
        if m and (m.group(1) is None or int(m.group(1)) >= 1):
            return cls("local", int(m.group(1) or 1))
        raise PtqlibError(f"unknown executor {text!r}; use inprocess, local:N (N worker processes) or slurm")

    def __str__(self) -> str:
        return self.kind if self.kind != "local" else f"local:{self.workers}"


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: the sweep's runs, those done before, computed now and failed
    (``(run, error line, log path or None)``), the done records, the wall time."""

    runs: list[Run]
    done_before: list[str]
    computed: list[str]
    failed: list[tuple[Run, str, str | None]]
    records: list[dict[str, Any]]
    seconds: float


def _current(files: SweepFiles, runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """The table's records of ``runs`` by key (the first record of a key wins)."""
    keys = {r.key for r in runs}
    out: dict[str, dict[str, Any]] = {}
    for record in read_records(files.table)[0].records:
        if record.get("key") in keys:
            out.setdefault(record["key"], record)
    return out


def _last_events(files: SweepFiles, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The last event (``start`` or ``fail``) of each of ``keys`` that has one."""
    keys = set(keys)
    last: dict[str, dict[str, Any]] = {}
    for event in read_records(files.events)[0].records:
        if event.get("key") in keys:
            last[event["key"]] = event
    return last


def _running_here(files: SweepFiles, runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Runs whose last event is a start by a process on this host that is still alive (e.g. a
    local job left running by an earlier, killed command): their start events by key."""
    here = socket.gethostname()
    return {k: e for k, e in _last_events(files, [r.key for r in runs]).items()
            if e.get("event") == "start" and e.get("host") == here and isinstance(e.get("pid"), int)
            and e["pid"] != os.getpid() and _alive(e["pid"], e.get("time"))}


def _groups(todo: Sequence[Run], group: str, sweep: Sweep) -> list[list[Run]]:
    if group == "run":
        return [[r] for r in todo]
    by: dict[tuple, list[Run]] = {}
    for r in todo:
        draw = r.draw if r.draw is not None else sweep.draws[0]
        by.setdefault((r.model,) if group == "model" else (r.model, draw), []).append(r)
    return list(by.values())


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _submitit_executor(executor: Executor, files: SweepFiles, settings: Settings, slurm: SlurmOptions,
                       sweep: Sweep):
    try:
        import submitit
    except ModuleNotFoundError:
        raise PtqlibError("the local and slurm executors need submitit; pip install submitit") from None
    if executor.kind == "local":
        ex = submitit.LocalExecutor(folder=files.jobs)
        ex.update_parameters(timeout_min=7 * 24 * 60)  # its default would stop a run after 5 minutes
        return ex
    try:
        ex = submitit.AutoExecutor(folder=files.jobs / "%j", cluster="slurm")
    except RuntimeError as error:  # no srun here
        raise PtqlibError(f"--executor slurm needs Slurm on this machine ({error}); run the command on the "
                          "cluster's login node, or use --executor local:N") from None
    params: dict[str, Any] = {"timeout_min": slurm.time_min, "name": f"ptqlib-{sweep.name}", "nodes": 1,
                              "tasks_per_node": 1}
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    if slurm.gpus is not None:
        params["gpus_per_node"] = slurm.gpus
    if slurm.cpus is not None:
        params["cpus_per_task"] = slurm.cpus
    if slurm.mem_gb is not None:
        params["mem_gb"] = math.ceil(slurm.mem_gb)
    if slurm.array_parallelism is not None:
        params["slurm_array_parallelism"] = slurm.array_parallelism
    if slurm.extra:
        params["slurm_additional_parameters"] = dict(slurm.extra)
    ex.update_parameters(**params)
    return ex


def _follow(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    records, offset = read_records(path, offset=offset)
    return records.records, offset


def run_sweep(sweep: Sweep, files: SweepFiles, *, executor: Executor = Executor(), settings: Settings = Settings(),
              slurm: SlurmOptions = SlurmOptions(), group: str = "run", on_line: Callable[[str], None] = print,
              poll: float = 1.0) -> SweepOutcome:
    """Run every run of ``sweep`` not yet in its table, with ``executor``; print one line per
    finished or failed run through ``on_line``. Returns what happened (failures are not raised).
    """
    start = time.perf_counter()
    runs = sweep.runs()
    by_key = {r.key: r for r in runs}
    before = _current(files, runs)
    busy = _running_here(files, [r for r in runs if r.key not in before])
    todo = [r for r in runs if r.key not in before and r.key not in busy]
    check_writable(files.table)
    if busy:
        on_line(f"{len(busy)} runs are being computed by other processes here (pids "
                f"{', '.join(sorted({str(e['pid']) for e in busy.values()}))}): left to them; see --status")
    on_line(f"sweep {sweep.name}: {len(runs)} runs, {len(before)} done before, {len(todo)} to run"
            + (f" ({executor}, {len(_groups(todo, group, sweep))} jobs)" if todo and executor.kind != "inprocess"
               else "") + f"; table {files.table}")
    computed: list[str] = []
    failed: list[tuple[Run, str, str | None]] = []
    count = [0]

    def finished(run: Run, record: dict[str, Any] | None, error: str | None = None, log: str | None = None) -> None:
        count[0] += 1
        prefix = f"[{count[0]}/{len(todo)}]"
        if record is not None:
            computed.append(run.key)
            on_line(f"{prefix} {_line(run, record)}")
        else:
            failed.append((run, error or "failed", log))
            on_line(f"{prefix} FAILED {run.label}: {error}" + (f"; log: {log}" if log else ""))

    try:
        if executor.kind == "inprocess" and todo:
            for run in todo:
                outcome, record = _run_and_record(run, sweep, settings, files, lambda line: None)
                finished(run, record, outcome.get("error"))
        elif todo:
            _run_jobs(todo, sweep, files, executor, settings, slurm, group, by_key, finished, on_line, poll)
    finally:
        records = _current(files, runs)
        done = [records[r.key] for r in runs if r.key in records]
        if done:
            write_csv(files.csv, done, RUN_COLUMNS)
            write_csv(files.summary, summarize(done))
    return SweepOutcome(runs, list(before), computed, failed, done, time.perf_counter() - start)


def _run_jobs(todo: Sequence[Run], sweep: Sweep, files: SweepFiles, executor: Executor, settings: Settings,
              slurm: SlurmOptions, group: str, by_key: dict[str, Run], finished: Callable,
              on_line: Callable[[str], None], poll: float) -> None:
    """Submit the groups as submitit jobs (at most ``executor.workers`` at a time for ``local``) and
    report runs as their records (or failure events) appear; a job that ends without reporting a
    run (killed, out of memory, timed out) fails its runs, naming its log."""
    ex = _submitit_executor(executor, files, settings, slurm, sweep)
    if executor.kind == "local":
        settings = dataclasses.replace(settings, threads=settings.threads or max(1, _cores() // executor.workers))
    gpus = 0
    if executor.kind == "local" and settings.device.startswith("cuda"):
        import torch

        gpus = torch.cuda.device_count()
    pending = _groups(todo, group, sweep)
    waiting = {r.key for r in todo}
    running: dict[Any, list[Run]] = {}
    _, table_at = read_records(files.table)
    _, events_at = read_records(files.events)
    submitted = 0

    def report() -> None:
        nonlocal table_at, events_at
        records, table_at = _follow(files.table, table_at)
        for record in records:
            key = record.get("key")
            if key in waiting:
                waiting.discard(key)
                finished(by_key[key], record)
        events, events_at = _follow(files.events, events_at)
        for event in events:
            key = event.get("key")
            if event.get("event") == "fail" and key in waiting:
                waiting.discard(key)
                finished(by_key[key], None, event.get("error"), event.get("log"))

    def submit(groups: list[list[Run]]) -> None:
        nonlocal submitted
        for g in groups:
            if gpus and settings.device == "cuda":  # one GPU per job, in turn
                ex.update_parameters(gpus_per_node=1, visible_gpus=[submitted % gpus])
            elif gpus:
                ex.update_parameters(gpus_per_node=gpus)
            submitted += 1
            running[ex.submit(run_group, g, sweep, settings, files)] = g

    try:
        if executor.kind == "slurm":
            with ex.batch():  # one job array; Slurm runs --slurm-array-parallelism of it at a time
                for g in pending:
                    running[ex.submit(run_group, g, sweep, settings, files)] = g
            pending = []
            ids = sorted({str(j.job_id).split("_")[0] for j in running})
            on_line(f"submitted {len(running)} jobs to Slurm (job {', '.join(ids)}); logs in {files.jobs}")
        while pending or running:
            while pending and (executor.kind != "local" or len(running) < executor.workers):
                submit([pending.pop(0)])
            time.sleep(poll)
            report()
            for job in [j for j in running if j.done()]:
                g = running.pop(job)
                report()
                try:
                    error = job.exception()
                except Exception as e:  # noqa: BLE001 - a job without a result (killed) says so here
                    error = e
                lost = [r for r in g if r.key in waiting]
                if lost:
                    why = _job_error(error)
                    log = str(job.paths.stderr)
                    for r in lost:
                        waiting.discard(r.key)
                        append_record(files.events, {"event": "fail", "key": r.key, "time": time.time(),
                                                     "error": why, "job": str(job.job_id), "log": log})
                        finished(r, None, why, log)
        report()
    except KeyboardInterrupt:
        if executor.kind == "local":
            for job in running:
                job.cancel()
        else:
            ids = sorted({str(j.job_id) for j in running})
            print(f"the Slurm jobs keep running ({', '.join(ids)}) and record their runs; follow them with "
                  "--status, stop them with scancel", file=sys.stderr, flush=True)
        raise


# ----------------------------------------------------------------------------------------------
# status and summary


@dataclass
class SweepStatus:
    """A sweep's state from its table and events: ``done`` records by key, and for the missing
    runs their state (``failed``, ``running``, ``interrupted``, ``not started``) with a note."""

    runs: list[Run]
    done: dict[str, dict[str, Any]]
    missing: list[tuple[Run, str, str]]
    other_records: int
    bad_lines: int

    def counts(self) -> dict[str, int]:
        out = {"done": len(self.done)}
        for state in ("failed", "running", "interrupted", "not started"):
            out[state] = sum(1 for _, s, _ in self.missing if s == state)
        return out


def _alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` of this host exists and, given ``since`` (a start event's time), was
    already running then (so a recycled process id does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if since is not None:
        started = _process_start(pid)
        if started is not None:
            return started <= since + 1.0
    return True


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from Linux's /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def sweep_status(sweep: Sweep, files: SweepFiles) -> SweepStatus:
    """Which runs are done, failed, running, interrupted or not started (nothing is run)."""
    runs = sweep.runs()
    records = read_records(files.table)[0]
    keys = {r.key for r in runs}
    done: dict[str, dict[str, Any]] = {}
    for r in records.records:
        if r.get("key") in keys:
            done.setdefault(r["key"], r)
    last = _last_events(files, keys)
    here = socket.gethostname()
    missing = []
    for run in runs:
        if run.key in done:
            continue
        event = last.get(run.key)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(event["time"])) if event and "time" in event else ""
        if event is None:
            missing.append((run, "not started", ""))
        elif event.get("event") == "fail":
            note = f"{when}: {event.get('error')}" + (f"; log: {event['log']}" if event.get("log") else "")
            missing.append((run, "failed", note))
        else:
            where = f"on {event.get('host')} pid {event.get('pid')}" + (f" job {event['job']}" if event.get("job") else "")
            if event.get("host") == here and isinstance(event.get("pid"), int) and not _alive(event["pid"], event.get("time")):
                missing.append((run, "interrupted", f"started {when} {where}, which has ended"))
            else:
                missing.append((run, "running", f"started {when} {where}"
                                + ("" if event.get("host") == here else " (or interrupted)")))
    other = sum(1 for r in records.records if r.get("key") not in keys)
    return SweepStatus(runs, done, missing, other, records.bad_lines)


def _paper_top1(model: str, method: str, w: int | None, a: int | None) -> float | None:
    from ..io.models import paper_model

    paper = paper_model(model)
    if paper is None:
        return None
    if method == "float":
        return paper.fp_top1
    return getattr(paper, f"{'base' if method == 'baseptq' else method}_w{w}a{a}", None)


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model, method, bits and calibration size: the number of draws and top-1 mean ±
    std (sample std), min and max over them, the mean calibration time and, for the paper's models,
    the paper's top-1."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        size = None if r.get("method") == "float" else r.get("calib_images", r.get("calib_size"))
        groups.setdefault((r["model"], r["method"], r.get("w_bits"), r.get("a_bits"), size), []).append(r)
    rows = []
    for (model, method, w, a, size), rs in groups.items():
        top1 = [float(r["top1"]) for r in rs]
        std = statistics.stdev(top1) if len(top1) > 1 else None
        calib = [r["calib_seconds"] for r in rs if r.get("calib_seconds") is not None]
        rows.append({"model": model, "method": method, "bits": "float" if w is None else f"W{w}A{a}",
                     "calib_images": size, "draws": len(rs), "top1_mean": round(statistics.fmean(top1), 2),
                     "top1_std": None if std is None else round(std, 2),
                     "top1": f"{statistics.fmean(top1):.2f}" + ("" if std is None else f" ± {std:.2f}"),
                     "top1_min": min(top1), "top1_max": max(top1),
                     "calib_seconds": round(statistics.fmean(calib), 1) if calib else None,
                     "paper_top1": _paper_top1(model, method, w, a)})
    return rows


# ----------------------------------------------------------------------------------------------
# the command line: reproduce --sweep FILE / --models / --draws / --executor / --status


def add_sweep_args(p: "argparse.ArgumentParser") -> None:
    """The sweep flags of ``reproduce``."""
    g = p.add_argument_group(
        "sweeps", "run models x methods x bits x calibration draws, each once: resumable (a rerun skips what is in "
                  "the table), in this process, N local processes or on Slurm; results in "
                  "<output-dir>/sweeps/<name>.jsonl")
    g.add_argument("--sweep", type=Path, metavar="FILE", help="the sweep's TOML file (e.g. sweeps/vit_tiny_statistics.toml); "
                   "--models, --methods, --bits, --draws replace its lists")
    g.add_argument("--models", help="comma-separated timm models (default: --model)")
    g.add_argument("--draws", metavar="N|LIST", help="calibration draws: N (draws 0..N-1) or a list such as 0,3,7; "
                   "draw 0 is calib32.txt, draw d a random sample seeded with d")
    g.add_argument("--sweep-name", metavar="NAME", help="the results table's name (default: the file's name, else the "
                   "first model's)")
    g.add_argument("--no-float", action="store_true", help="leave out the float model's evaluation")
    g.add_argument("--executor", default="inprocess", metavar="inprocess|local:N|slurm",
                   help="where runs compute: here one by one (default), N local worker processes, or a Slurm job array")
    g.add_argument("--group", choices=("run", "draw", "model"), default="run",
                   help="one job per run (default), per model and draw, or per model (local:N, slurm)")
    g.add_argument("--status", action="store_true", help="print what is done, failed, running and missing; run nothing")
    s = p.add_argument_group("slurm", "requests for --executor slurm (via submitit); jobs run with --device")
    s.add_argument("--slurm-partition", metavar="NAME")
    s.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job (use with --device cuda)")
    s.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job (torch uses them all)")
    s.add_argument("--slurm-mem", type=float, metavar="GB", help="memory per job in GB")
    s.add_argument("--slurm-time", default="24:00:00", metavar="[D-]HH:MM[:SS]|MIN", help="time limit per job (default 24:00:00)")
    s.add_argument("--slurm-array-parallelism", type=int, metavar="N", help="at most N jobs of the array at once")
    s.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=abc or qos=high (repeatable)")


def sweep_requested(args: "argparse.Namespace") -> bool:
    """Whether ``reproduce`` runs a sweep (any sweep flag given) rather than the main job."""
    return bool(args.sweep or args.models or args.draws or args.status or args.sweep_name or args.no_float
                or args.executor != "inprocess")


def _minutes(text: str) -> int:
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?", text.strip())
    if text.strip().isdigit():
        return int(text)
    if not m:
        raise PtqlibError(f"--slurm-time takes minutes or [D-]HH:MM[:SS], got {text!r}")
    d, h, mnt, s = (int(x) if x else 0 for x in m.groups())
    return max(1, d * 1440 + h * 60 + mnt + math.ceil(s / 60))


def _draws(text: str) -> int | list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PtqlibError(f"--draws takes a count or a comma-separated list of draws, got {text!r}") from None
    return values[0] if "," not in text and len(values) == 1 else values


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]


def _sweep_from_args(args: "argparse.Namespace", overrides: dict[str, Any]) -> Sweep:
    overrides = {k: v for k, v in overrides.items() if not (k == "seed" and v == 0)}
    lists: dict[str, Any] = {}
    if args.models:
        lists["models"] = _split(args.models)
    if args.methods:
        lists["methods"] = _split(args.methods)
    if args.bits:
        lists["bits"] = _split(args.bits)
    if args.draws:
        lists["draws"] = _draws(args.draws)
    if args.sweep is not None:
        sweep = load_sweep(args.sweep)
        if args.calib_size != 32:
            raise PtqlibError("with --sweep, set calib_size in the sweep file, not with --calib-size")
        changes = dict(lists)
        for k in ("val_limit", "data", "calib_dir", "calib_list", "val_dir"):
            if getattr(args, k) is not None:
                changes[k] = getattr(args, k)
        if args.random_init:
            changes["random_init"] = True
        if args.no_float:
            changes["include_float"] = False
        if overrides:
            changes["config"] = overrides
        if args.sweep_name:
            changes["name"] = args.sweep_name
        return sweep.replace(**changes) if changes else sweep
    from .cli import REPRODUCE_BITS, REPRODUCE_METHODS

    models = lists.get("models") or [args.model]
    name = args.sweep_name or models[0].split(".")[0].replace("/", "_")
    return Sweep.from_lists(name, models, lists.get("methods") or list(REPRODUCE_METHODS),
                            lists.get("bits") or [f"{w}/{a}" for w, a in REPRODUCE_BITS], lists.get("draws", 1),
                            calib_size=args.calib_size, val_limit=args.val_limit, random_init=args.random_init,
                            include_float=not args.no_float, data=args.data, calib_dir=args.calib_dir,
                            calib_list=args.calib_list, val_dir=args.val_dir, config=overrides)


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    columns = [c for c in columns if c in frame and not (c == "paper_top1" and frame[c].isna().all())]
    print(frame[columns].fillna("").to_string(index=False), flush=True)


SUMMARY_COLUMNS = ("model", "method", "bits", "calib_images", "draws", "top1", "top1_min", "top1_max", "calib_seconds", "paper_top1")


def _with_data(sweep: Sweep) -> Sweep:
    """``sweep`` with its data folder resolved here (``$PTQLIB_DATA`` when the sweep names none), so
    jobs elsewhere read the same images; PtqlibError when it has no images at all."""
    from ..io.data import data_root

    root = data_root(sweep.data)
    if root is None and (sweep.calib_dir is None or sweep.val_dir is None):
        raise PtqlibError("no data for the sweep: set PTQLIB_DATA, pass --data DIR, or give data (or calib_dir and "
                          "val_dir) in the sweep file")
    return sweep if root is None else dataclasses.replace(sweep, data=root.absolute())


def cmd_sweep(args: "argparse.Namespace", overrides: dict[str, Any],
              check_device: Callable[[str], None] | None = None) -> int:
    """``reproduce`` with sweep flags: run the sweep (or print its ``--status``)."""
    sweep = _sweep_from_args(args, overrides)
    files = SweepFiles.under(args.output_dir, sweep.name)
    if args.status:
        status = sweep_status(sweep, files)
        counts = status.counts()
        print(f"sweep {sweep.name} ({sweep.source}): {len(status.runs)} runs: "
              + ", ".join(f"{n} {state}" for state, n in counts.items()) + f"; table {files.table}")
        if status.other_records:
            print(f"(the table holds {status.other_records} records of other runs: other settings or an earlier engine)")
        if status.bad_lines:
            print(f"(the table has {status.bad_lines} unreadable lines, from writers killed mid-line; ignored)")
        if status.missing:
            print("missing:")
            for run, state, note in status.missing:
                print(f"  {run.label}: {state}" + (f" ({note})" if note else ""))
        if status.done:
            print()
            _print_table(summarize([status.done[r.key] for r in status.runs if r.key in status.done]), SUMMARY_COLUMNS)
        return 0
    executor = Executor.parse(args.executor)
    if executor.kind != "slurm" and check_device is not None:
        check_device(args.device)
    sweep = _with_data(sweep)
    extra = {}
    for item in args.slurm_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PtqlibError(f"--slurm-option takes KEY=VALUE, got {item!r}")
        extra[key.strip().lstrip("-")] = value.strip()
    slurm = SlurmOptions(partition=args.slurm_partition, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
                         mem_gb=args.slurm_mem, time_min=_minutes(args.slurm_time),
                         array_parallelism=args.slurm_array_parallelism, extra=extra)
    if executor.kind == "slurm" and slurm.gpus and not args.device.startswith("cuda"):
        print("note: --slurm-gpus without --device cuda: the jobs will compute on the CPU", flush=True)
    settings = Settings(device=args.device, batch_size=args.batch_size, workers=args.workers,
                        micro_batch=args.micro_batch or None, max_memory=args.max_memory,
                        skip_corrupt=args.skip_corrupt, progress=not args.no_progress and executor.kind == "inprocess")
    outcome = run_sweep(sweep, files, executor=executor, settings=settings, slurm=slurm, group=args.group,
                        on_line=lambda line: print(line, flush=True),
                        poll=1.0 if executor.kind != "slurm" else 15.0)
    print(f"\nsweep {sweep.name}: {len(outcome.runs)} runs: {len(outcome.computed)} computed now, "
          f"{len(outcome.done_before)} done before, {len(outcome.failed)} failed ({outcome.seconds:.0f} s)")
    if outcome.records:
        _print_table(summarize(outcome.records), SUMMARY_COLUMNS)
        print(f"wrote {files.csv} and {files.summary} (every record: {files.table})")
    if outcome.failed:
        raise PtqlibError(f"{len(outcome.failed)} of {len(outcome.runs)} runs failed (each named above with its "
                          "error and log); fix the cause and rerun the same command: it runs only what is missing")
    return 0
