"""The notebooks: each one runs top to bottom in smoke mode (executed here in memory, never
written back, figures into a temporary folder; ``PTQLIB_MODE=smoke pytest --nbmake notebooks/``
does the same from the command line), and static checks of the committed copies.

The committed copies must be executed top to bottom in real mode, without errors, with small
outputs (no embedded data, images under 300 KB), every published figure present in ``figures/``,
a ``parameters`` cell driven by the environment, and a static figure beside every widget.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
FIGURE_DIR = ROOT / "figures"
EXPECTED = ["00_primer.ipynb", "01_activation_distributions.ipynb", "02_metric_comparison.ipynb",
            "03_twin_uniform_calibration.ipynb", "04_imagenet_evaluation.ipynb", "05_after_ptq4vit.ipynb"]
MAX_IMAGE_BYTES = 300_000
MAX_NOTEBOOK_BYTES = 3_000_000
PUBLISHED = re.compile(r"figures/([\w.\-]+\.png)")
LOCAL_PATHS = ("/work/", "/home/", "/root/", "/tmp/", "/Users/", "C:\\\\")


def _load(name: str) -> dict:
    return json.loads((NOTEBOOK_DIR / name).read_text())


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _text_outputs(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
        for mime in ("text/plain", "text/html", "text/markdown"):
            data = out.get("data", {}).get(mime)
            if data is not None:
                parts.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_runs_top_to_bottom_in_smoke_mode(name, tmp_path, monkeypatch):
    """Smoke mode: tiny sizes, real data where ``PTQLIB_DATA`` has it (else random weights); the
    committed file and figures/ stay untouched."""
    path = NOTEBOOK_DIR / name
    before = path.read_bytes()
    figures_before = {p.name: p.stat().st_mtime_ns for p in FIGURE_DIR.glob("*.png")}
    monkeypatch.setenv("PTQLIB_MODE", "smoke")
    monkeypatch.setenv("PTQLIB_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.reads(before.decode(), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    text = "\n".join(_text_outputs(c) for c in _code_cells(nb))
    assert "mode smoke" in text
    saved = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert saved and saved == set(PUBLISHED.findall(text)), "every figure is saved (in PTQLIB_FIGURES) and named"
    assert path.read_bytes() == before, "executing must not write the notebook back"
    assert {p.name: p.stat().st_mtime_ns for p in FIGURE_DIR.glob("*.png")} == figures_before


def test_the_four_notebooks_exist():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_parameters_cell_reads_the_environment(name):
    code = _code_cells(_load(name))
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0], "the first code cell, and only it, is tagged 'parameters'"
    src = _source(tagged[0])
    for var in ("PTQLIB_MODE", "PTQLIB_DATA", "PTQLIB_FIGURES"):
        assert f'os.environ.get("{var}"' in src, var


@pytest.mark.parametrize("name", EXPECTED)
def test_modes_change_sizes_not_the_code_path(name):
    allowed = ("assert MODE in", "allow_random=SMOKE", 'print(f"ptqlib')
    for cell in _code_cells(_load(name))[1:]:
        for line in _source(cell).splitlines():
            if re.search(r"\b(SMOKE|MODE)\b", line):
                assert any(a in line for a in allowed), f"{name}: mode-dependent code outside the parameters cell: {line!r}"


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_copy_is_executed_in_real_mode_without_errors(name):
    nb = _load(name)
    code = _code_cells(nb)
    counts = [c.get("execution_count") for c in code if _source(c).strip()]
    assert None not in counts, "every code cell is executed"
    assert counts == sorted(counts) and counts[0] == 1, "executed top to bottom in one run"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{name}: {out.get('ename')}: {out.get('evalue')}"
    text = "\n".join(_text_outputs(c) for c in code)
    assert "mode real" in text, "the committed copy shows real-mode outputs"
    assert "RANDOM" not in text, "the committed copy uses the real weights"


@pytest.mark.parametrize("name", EXPECTED)
def test_outputs_are_small_and_portable(name):
    path = NOTEBOOK_DIR / name
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    nb = _load(name)
    assert "widgets" not in nb.get("metadata", {}), "no embedded widget state (the static figures stand in)"
    for cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png is not None:
                assert len(base64.b64decode("".join(png) if isinstance(png, list) else png)) < MAX_IMAGE_BYTES
            for mime in out.get("data", {}):
                assert mime.split("/")[0] in ("text", "image", "application"), mime
                assert not mime.startswith("application/") or mime in (
                    "application/vnd.jupyter.widget-view+json", "application/json"), mime
        text = _text_outputs(cell)
        for local in LOCAL_PATHS:
            assert local not in text, f"{name}: a local path ({local}) leaked into the outputs"


@pytest.mark.parametrize("name", EXPECTED)
def test_published_figures_are_in_the_figures_folder(name):
    text = "\n".join(_text_outputs(c) for c in _code_cells(_load(name)))
    published = set(PUBLISHED.findall(text))
    assert published, f"{name} publishes figures"
    for png in published:
        path = FIGURE_DIR / png
        assert path.is_file(), f"{png} is missing from figures/"
        assert path.stat().st_size < MAX_IMAGE_BYTES, f"{png} is {path.stat().st_size} bytes"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_belongs_to_a_notebook():
    text = "\n".join(_text_outputs(c) for name in EXPECTED for c in _code_cells(_load(name)))
    published = set(PUBLISHED.findall(text))
    stale = sorted(p.name for p in FIGURE_DIR.glob("*.png") if p.name not in published)
    assert not stale, f"figures no notebook produces: {stale}"


@pytest.mark.parametrize("name", EXPECTED)
def test_every_widget_has_a_static_figure_beside_it(name):
    code = _code_cells(_load(name))
    for i, cell in enumerate(code):
        if re.search(r"widgets\.\w+Explorer\(", _source(cell)):
            assert any(o.get("data", {}).get("application/vnd.jupyter.widget-view+json") for o in cell["outputs"])
            following = code[i + 1]
            assert any("image/png" in o.get("data", {}) for o in following["outputs"]), \
                f"{name}: the cell after a widget shows its static figure"
