"""Accuracy tables that survive a restart: calibrate and evaluate a set of configs, with results
cached as JSON, keyed by the config, the model and data, and the engine's source fingerprint.

* :func:`run_configs` — calibrate and evaluate a dict of configs (cached; reuses the main job's
  ``results/<model>.json`` where it matches).
* :func:`engine_fingerprint` — a hash of the modules that decide a calibration's result.
* :func:`main_job_results` — the main job's records, when still valid for this engine.
* :func:`official_results` — the official code's numbers on the same data, when present.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..engine.config import PTQConfig
from ..io.files import write_json
from ..io.provenance import engine_fingerprint
from ..engine.wrap import quantize_model

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["engine_fingerprint", "run_configs", "main_job_results", "official_results",
           "METHOD_NAMES", "with_references"]

#: How the tables name the methods.
METHOD_NAMES = {"baseptq": "BasePTQ", "ptq4vit": "PTQ4ViT", "minmax": "min-max"}


def _cache_key(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _config_key(config: PTQConfig | Mapping[str, Any]) -> str:
    return json.dumps(config.to_dict() if isinstance(config, PTQConfig) else dict(config), sort_keys=True)


def main_job_results(path: str | Path, *, model_name: str, calib_images: int, val_images: int) -> dict[str, dict[str, Any]]:
    """The records of the main job (``python -m ptqlib reproduce``: ``results/<model>.json``) that
    can stand in for a calibration here, keyed by their config.

    A record qualifies when it is for ``model_name`` with real weights, ``calib_images`` calibration
    and ``val_images`` validation images, and was computed by the current engine (its ``engine``
    fingerprint equals :func:`engine_fingerprint`). Returns ``{}`` when the file is absent.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(records, list):
        return {}
    records = [r for r in records if isinstance(r, dict) and r.get("engine") == engine_fingerprint()]
    out = {}
    for r in records:
        if (r.get("model") == model_name and not r.get("random_init") and r.get("calib_images") == calib_images
                and r.get("eval_images") == val_images and isinstance(r.get("config"), dict) and "top1" in r):
            out[_config_key(r["config"])] = {"top1": float(r["top1"]), "top5": float(r["top5"]),
                                             "images": int(r["eval_images"]), "calib_seconds": r.get("calib_seconds"),
                                             "eval_seconds": r.get("eval_seconds")}
    return out


def _calibrate_and_evaluate(model: nn.Module, calib_images: Tensor, loader: DataLoader, config: PTQConfig, *,
                            calib_labels: Tensor | None, name: str, progress: bool) -> dict[str, Any]:
    from ..engine.calibrate import calibrate
    from ..io.evaluate import evaluate

    torch.manual_seed(config.seed)
    qmodel = quantize_model(copy.deepcopy(model), config)
    report = calibrate(qmodel, calib_images, config, labels=calib_labels, progress=progress)
    acc = evaluate(qmodel, loader, desc=name, progress=progress)
    return {"top1": acc.top1, "top5": acc.top5, "images": acc.images,
            "calib_seconds": report.seconds, "eval_seconds": acc.seconds}


def run_configs(
    model: nn.Module,
    calib_images: Tensor,
    val: Dataset,
    configs: Mapping[str, PTQConfig],
    *,
    calib_labels: Tensor | None = None,
    cache_dir: str | Path | None = None,
    cache_tag: Mapping[str, Any] | None = None,
    reuse: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 100,
    progress: bool = True,
) -> "pd.DataFrame":
    """Calibrate a copy of ``model`` with each config and evaluate it on ``val``.

    Identical configs run once. With ``cache_dir``, each result is stored as JSON under a key
    made of the config, ``cache_tag`` (describe the model and data there), the image counts and
    :func:`engine_fingerprint`, and read back instead of recomputed. ``reuse`` (from
    :func:`main_job_results`) supplies results by config before anything is computed.

    Returns one row per name: top-1, top-5, calibration and evaluation seconds, and where the
    row came from (``source``: ``computed``, ``cache`` or ``main job``; ``cached`` is True unless
    computed now).
    """
    import pandas as pd

    loader = DataLoader(val, batch_size=batch_size, shuffle=False)
    done: dict[str, dict[str, Any]] = {}
    rows = []
    cache = Path(cache_dir) if cache_dir else None
    reuse = dict(reuse or {})
    for name, config in configs.items():
        key = _cache_key({"config": config.to_dict(), "tag": dict(cache_tag or {}), "engine": engine_fingerprint(),
                          "calib": int(calib_images.shape[0]), "val": len(val)})
        path = None if cache is None else cache / f"{key}.json"
        if key in done:
            result = dict(done[key])
        elif path is not None and path.exists():
            result = {**json.loads(path.read_text()), "source": "cache"}
        elif _config_key(config) in reuse:
            result = {**reuse[_config_key(config)], "source": "main job"}
        else:
            result = {**_calibrate_and_evaluate(model, calib_images, loader, config, calib_labels=calib_labels,
                                                name=name, progress=progress), "source": "computed"}
            if path is not None:
                write_json(path, {k: v for k, v in result.items() if k != "source"})
        done.setdefault(key, dict(result))
        result["cached"] = result["source"] != "computed"
        rows.append({"name": name, "method": config.method, "w_bits": config.w_bits, "a_bits": config.a_bits,
                     "metric": config.metric, "twin_softmax": config.twin_softmax, "twin_gelu": config.twin_gelu,
                     "grad_loss": config.grad_loss if config.metric == "hessian" else "",
                     **result})
    return pd.DataFrame(rows)


def official_results(path: str | Path) -> "pd.DataFrame | None":
    """The table of ``official-ptq4vit-results.md`` (the official code run on the same data), or
    None when the file is absent. Columns: configuration, method, w_bits, a_bits, top1, top5."""
    import re

    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.match(r"^\d+(\.\d+)?$", cells[1]):
            continue
        m = re.match(r"(\w+)\s+W(\d+)A(\d+)", cells[0])
        method = "float" if cells[0].startswith("float") else (m.group(1).lower() if m else cells[0])
        rows.append({"configuration": cells[0], "method": method,
                     "w_bits": int(m.group(2)) if m else 32, "a_bits": int(m.group(3)) if m else 32,
                     "top1": float(cells[1]), "top5": float(cells[2])})
    return pd.DataFrame(rows) if rows else None


def with_references(table: "pd.DataFrame", paper: Any = None, official: "pd.DataFrame | None" = None) -> "pd.DataFrame":
    """A copy of a :func:`run_configs` table with ``bits`` (``W8A8``), ``method name`` and, where
    known, the reference numbers beside each row: ``paper top-1`` and ``paper drop`` from a
    :class:`~ptqlib.models.PaperModel` (its ``base_w6a6``-style fields), ``official code top-1``
    from :func:`official_results` (matched by method and bit-widths)."""
    out = table.copy()
    out["bits"] = "W" + out["w_bits"].astype(str) + "A" + out["a_bits"].astype(str)
    out["method name"] = out["method"].map(lambda m: METHOD_NAMES.get(m, m))
    keys = list(zip(out["method"], out["w_bits"], out["a_bits"]))
    if paper is not None:
        out["paper top-1"] = [getattr(paper, f"{'base' if m == 'baseptq' else m}_w{w}a{a}", None) for m, w, a in keys]
        out["paper drop"] = paper.fp_top1 - out["paper top-1"].astype(float)
    if official is not None:
        lookup = {(r.method, r.w_bits, r.a_bits): r.top1 for r in official.itertuples()}
        out["official code top-1"] = [lookup.get(k) for k in keys]
    return out
