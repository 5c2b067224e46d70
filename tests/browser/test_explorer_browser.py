"""Real-browser test: JupyterLab on loopback, headless Chromium driven by Playwright.

It copies notebook 01 (without its outputs) into a temporary folder, starts JupyterLab there (no
token, 127.0.0.1, a free port, its own settings and runtime folders), opens the notebook, runs every
cell in smoke mode (``PTQLIB_MODE=smoke``) and waits until every code cell has run, checks that the
activation explorer renders, moves its block slider one step with the keyboard (focus on the
slider's handle, ArrowLeft) and checks that the summary names the new block and the picture is
redrawn.

Needs Debian's ``chromium`` (or ``PTQLIB_CHROMIUM=/path/to/chrome``) and the ``playwright`` Python
package; never ``playwright install`` (no browser downloads). Skipped with a reason when either is
missing, except under CI (``CI=true``), where it fails instead.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_activation_distributions.ipynb"
CHROMIUM = os.environ.get("PTQLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
RUN_TIMEOUT_S = float(os.environ.get("PTQLIB_BROWSER_TIMEOUT", "300"))

pytestmark = pytest.mark.slow


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test (.ci/run installs chromium and playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_api():
    if not CHROMIUM or not Path(CHROMIUM).exists():
        _unavailable("no chromium executable (apt-get install chromium, or set PTQLIB_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright)")
    with sync_playwright() as p:
        yield p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.status


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    # the committed copy without its outputs: every prompt starts empty, so "every cell has run" is unambiguous
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (root / NOTEBOOK.name).write_text(json.dumps(nb))
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # render every cell (no windowing), so the explorer's output is in the page wherever it is
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port = _free_port()
    env = {**os.environ, "PTQLIB_MODE": "smoke", "PTQLIB_FIGURES": str(root / "figures"),
           "JUPYTER_CONFIG_DIR": str(root / ".config"), "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"), "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces")}
    log = open(root / "jupyter.log", "w")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--allow-root", "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
           f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{(root / 'jupyter.log').read_text()[-3000:]}")
            try:
                if _get(f"{url}/api/status") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not start in 90 s:\n{(root / 'jupyter.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "root": root}
    finally:
        proc.terminate()  # SIGTERM: the server shuts its kernels down, then exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


#: True once every code cell has run (a number in every prompt, none queued or running), or once a
#: cell has failed (a traceback; JupyterLab then drops the queued cells).
RUN_FINISHED = r"""() => {
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
        .map(e => e.textContent.trim());
    const failed = [...document.querySelectorAll(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")]
        .some(e => e.textContent.includes('Traceback'));
    if (prompts.some(p => p.includes('*'))) return false;
    return failed || (prompts.length > 0 && prompts.every(p => /\[\d+\]/.test(p)));
}"""


def test_explorer_renders_and_block_slider_redraws(playwright_api, lab, tmp_path):
    # a fresh profile (user-data-dir) for every run; Playwright's own browser download is never used
    context = playwright_api.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000})
    page = context.pages[0] if context.pages else context.new_page()
    shot = lab["root"] / "failure.png"
    try:
        page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK.name}", timeout=60_000)
        page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                               timeout=60_000)
        # wait for the kernel, then run every cell
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.connectionStatus === 'connected'"
            " && w.sessionContext.session.kernel.status === 'idle'; }", timeout=90_000)
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        page.wait_for_function("() => [...document.querySelectorAll('.jp-Notebook .jp-InputArea-prompt')]"
                               ".some(e => e.textContent.includes('*') || /\\[\\d+\\]/.test(e.textContent))",
                               timeout=60_000)  # the run has started
        page.wait_for_function(RUN_FINISHED, timeout=RUN_TIMEOUT_S * 1000, polling=1000)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] >> text=Traceback")
        assert errors.count() == 0, "a cell raised an error"

        # the activation explorer (the one with a layer selector; the scale explorer follows it)
        explorer = page.locator(".ptqlib-explorer").filter(has=page.locator(".ptqlib-layer"))
        explorer.wait_for(state="visible", timeout=30_000)
        image = explorer.locator("img.ptqlib-explorer-image")
        summary = explorer.locator(".ptqlib-explorer-summary")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                               timeout=30_000)
        before_src = image.get_attribute("src")
        before_text = summary.inner_text()
        assert "block 5" in before_text and "post-softmax" in before_text

        # the block is a slider: focus its handle and step it left with the keyboard
        handle = explorer.locator(".ptqlib-block .noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("(el) => el.innerText.includes('block 4 ')", arg=summary.element_handle(),
                               timeout=60_000)
        page.wait_for_function("([img, old]) => img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0",
                               arg=[image.element_handle(), before_src], timeout=60_000)
        assert image.get_attribute("src") != before_src
        assert "block 4" in summary.inner_text() and "post-softmax" in summary.inner_text()
        assert explorer.locator(".ptqlib-block .widget-readout").inner_text().strip() == "4"
    except Exception:
        page.screenshot(path=str(shot), full_page=False)
        print(f"screenshot: {shot}\njupyter log:\n{(lab['root'] / 'jupyter.log').read_text()[-4000:]}")
        raise
    finally:
        context.close()
