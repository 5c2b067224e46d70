"""Shared test fixtures (the real data folder from ``PTQLIB_DATA``, tiny synthetic images) and the
``slow`` marker: tests marked ``@pytest.mark.slow`` are skipped unless ``--run-slow`` is given,
``-m`` selects them by name, or ``CI=true`` (CI runs everything)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ptqlib.io.data import DataPaths

from helpers import write_image

SLOW_SKIP_REASON = "slow test: run it with --run-slow (./run.sh test --run-slow) or CI=true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (the default under CI=true)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the slow tests for fast local runs; CI (``CI=true``) and ``--run-slow`` run them, and so
    does a ``-m`` expression that names the marker (``-m slow``)."""
    if config.getoption("--run-slow") or os.environ.get("CI") == "true" or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason=SLOW_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> DataPaths:
    """The real data folder named by ``PTQLIB_DATA``.

    Skips when it is unset, except under CI (``CI=true``), where a missing data folder fails:
    CI must never silently skip the real-data tests.
    """
    root = os.environ.get("PTQLIB_DATA")
    if not root or not Path(root).is_dir():
        message = f"PTQLIB_DATA is {'unset' if not root else f'{root!r}, not a directory'}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the real-data tests")
        pytest.skip(f"{message}; set it to the shared data folder to run the real-data tests")
    return DataPaths.from_root(root)


@pytest.fixture
def without_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """No data folder: explicit paths only (the data folder would add the 1300 real validation
    images and the real weights to a test's run). ``PTQLIB_DATA`` set but empty turns off the
    repository's ``data/`` too, which holds data wherever ``python -m ptqlib data fetch`` ran."""
    monkeypatch.setenv("PTQLIB_DATA", "")


@pytest.fixture
def labeled_folder(tmp_path: Path) -> Path:
    """``labels.txt`` + ``images/`` with RGB, grayscale, CMYK and RGBA (PNG) images."""
    names = {"a_rgb.JPEG": ("RGB", 3), "b_gray.JPEG": ("L", 1), "c_cmyk.JPEG": ("CMYK", 999),
             "d_rgba.png": ("RGBA", 0)}
    for name, (mode, _) in names.items():
        write_image(tmp_path / "images" / name, mode)
    lines = [f"{name} {label}" for name, (_, label) in names.items()]
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n\n")
    return tmp_path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one torch thread is as fast, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
