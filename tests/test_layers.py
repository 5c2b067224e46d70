"""The import direction of the layers (``[tool.importlinter]`` in pyproject.toml), checked by the linter.

``ptqlib.app`` and ``ptqlib.lab`` sit on top and never import each other; below them ``ptqlib.io``,
then ``ptqlib.engine``, then ``ptqlib.core``; the core and the engine never import matplotlib,
seaborn, pandas or ipywidgets. Run ``lint-imports`` by hand for the same report.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_layers_import_only_downwards():
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the dev extras (pip install -e '.[dev]')")
    run = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, f"import contracts broken:\n{run.stdout}\n{run.stderr}"
    assert "0 broken" in run.stdout
