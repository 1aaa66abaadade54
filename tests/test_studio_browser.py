"""The studio in a real browser: JupyterLab + Debian's Chromium driven by Playwright.

Needs `apt-get install -y chromium` and `pip install playwright==1.65.2` (Playwright's own browser
download is not used). Set SD35_STUDIO_SCREENSHOT=images/studio.png to also save a screenshot:
    SD35_STUDIO_SCREENSHOT=images/studio.png .venv/bin/python -m pytest tests/test_studio_browser.py
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (
    "The browser test needs Debian's Chromium and Python Playwright: "
    "`apt-get update && apt-get install -y chromium` and `pip install playwright==1.65.2` "
    "(no `playwright install`: the test launches /usr/bin/chromium)."
)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IDLE = "Python 3 (ipykernel) | Idle"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_copy(folder: Path) -> Path:
    """notebooks/06_studio.ipynb with its parameters set for the stand-in (as papermill would)."""
    nb = json.loads((REPO / "notebooks" / "06_studio.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            cell["source"] = source + '\n# injected by the browser test\nSTAND_IN = True\nMODEL = "tiny"\n'
    path = folder / "06_studio.ipynb"
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture
def lab(tmp_path, tiny_dir):
    """A JupyterLab server on 127.0.0.1 with a random token, serving a copy of the notebook."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found. {INSTALL_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(f"Python package playwright is not installed. {INSTALL_HINT}")
    root = tmp_path / "root"
    root.mkdir()
    _notebook_copy(root)
    port, token = _free_port(), secrets.token_hex(16)
    # No "get Jupyter news?" toast over the page (nor its network request).
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "SD35_TINY_DIR": str(tiny_dir),
        "OMP_NUM_THREADS": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
    }
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = open(tmp_path / "jupyter.log", "wb")
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyter.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield base, token, root
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # its own session: the kernel goes too
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=15)
        log.close()


def _recipe_text(page) -> str:
    return page.locator(".sd35-studio .sd35-studio-recipe").inner_text(timeout=5_000)


def _image_src(page) -> str:
    return page.locator(".sd35-studio .sd35-studio-image").get_attribute("src", timeout=5_000) or ""


def test_studio_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    base, token, root = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/lab/tree/06_studio.ipynb?token={token}", timeout=60_000)
            status = page.locator(".jp-StatusBar-Widget").get_by_text(IDLE)
            expect(status).to_be_visible(timeout=60_000)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            # The notebook's scripted click renders one image; then the summary cell runs.
            expect(page.locator(".sd35-studio .sd35-studio-recipe")).to_contain_text("generated in", timeout=90_000)
            expect(page.get_by_text(re.compile(r"Generated \d+ image"))).to_be_visible(timeout=60_000)
            expect(status).to_be_visible(timeout=60_000)
            # The A/B section below it ran last: bring the studio back into view (JupyterLab hides off-screen cells).
            page.locator(".sd35-studio .sd35-studio-recipe").scroll_into_view_if_needed()
            expect(page.locator(".sd35-studio .sd35-studio-recipe")).to_contain_text("generated in", use_inner_text=True)
            before_recipe, before_src = _recipe_text(page), _image_src(page)
            assert re.search(r"guidance\s+3\.5", before_recipe), before_recipe

            handle = page.locator(".sd35-studio .widget-slider").first.locator(".noUi-handle")
            handle.focus()
            for _ in range(5):  # +0.5 in steps of 0.1; sent when the key is released
                handle.press("ArrowRight")
            expect(page.locator(".sd35-studio .widget-readout").first).to_have_text("4.0", timeout=10_000)

            page.locator(".sd35-studio button", has_text="Generate").click()
            expect(page.locator(".sd35-studio .sd35-studio-recipe")).to_contain_text("4.0", timeout=60_000)
            expect(page.locator(".sd35-studio .sd35-studio-recipe")).to_contain_text("generated in", timeout=60_000)
            after_recipe, after_src = _recipe_text(page), _image_src(page)
            assert after_recipe != before_recipe and re.search(r"guidance\s+4(\.0)?\b", after_recipe), after_recipe
            assert after_src and after_src != before_src
            expect(page.locator(".sd35-studio .sd35-studio-message")).to_have_text("")
            assert page.get_by_text("Error displaying widget").count() == 0

            shot = os.environ.get("SD35_STUDIO_SCREENSHOT")
            if shot:
                Path(shot).parent.mkdir(parents=True, exist_ok=True)
                page.locator(".sd35-studio").screenshot(path=shot)
        finally:
            browser.close()
