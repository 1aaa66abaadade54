"""The studio in a real browser: JupyterLab + Debian's Chromium driven by Playwright.

Needs `apt-get install -y chromium` and `pip install playwright==1.65.2` (Playwright's own browser
download is not used). It runs notebook 06 once more, in its own live kernel, although
tests/notebooks/test_notebook_06_studio.py executes it too: that run only leaves outputs to read,
while this one needs a kernel that answers the browser's clicks (no executed copy can be driven).
Set SD35_STUDIO_SCREENSHOT=images/studio.png to also save a screenshot:
    SD35_STUDIO_SCREENSHOT=images/studio.png .venv/bin/python -m pytest tests/studio/test_studio_browser.py
"""

from __future__ import annotations

import base64
import io
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

REPO = Path(__file__).resolve().parents[2]  # tests/studio/ -> the repository
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


# Appended to the notebook copy: steps slowed down (only for runs of more than 30 steps) so that the
# browser can click Cancel mid-run; the stand-in alone makes 60 steps in a blink.
SLOW_STEPS_CELL = (
    "# added by the browser test: long runs are slowed down so that Cancel can be clicked mid-run\n"
    "import time\n"
    "studio.progress.observe(lambda change: time.sleep(0.25) if studio.steps.value > 30 else None, names='value')\n"
)


def _notebook_copy(folder: Path) -> Path:
    """notebooks/06_studio.ipynb with its parameters set for the stand-in (as papermill would)."""
    nb = json.loads((REPO / "notebooks" / "06_studio.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            cell["source"] = source + '\n# injected by the browser test\nSTAND_IN = True\nMODEL = "tiny"\n'
    nb["cells"].append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                        "source": SLOW_STEPS_CELL})
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


STUDIO = ".sd35-studio"
IMAGE = f"{STUDIO} .sd35-studio-image"
RECIPE = f"{STUDIO} .sd35-studio-recipe"
MESSAGE = f"{STUDIO} .sd35-studio-message"
PROGRESS = f"{STUDIO} .sd35-studio-progress"
# The image element as the reader sees it: its box on screen, its pixel size, and whether it is broken.
IMAGE_STATE = """img => ({
    x: img.getBoundingClientRect().x - img.closest('.sd35-studio').getBoundingClientRect().x,
    y: img.getBoundingClientRect().y - img.closest('.sd35-studio').getBoundingClientRect().y,
    width: img.getBoundingClientRect().width, height: img.getBoundingClientRect().height,
    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, complete: img.complete,
})"""
# The bytes the page shows (the widget's blob: URL), base64-encoded.
IMAGE_BYTES = """async img => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let text = '';
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
}"""
# Elements whose text is cut off (wider content than box) inside the history strip.
CUT_OFF = """strip => Array.from(strip.querySelectorAll('button, .widget-html-content, .widget-html-content *'))
    .filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.innerText)"""


def _recipe_text(page) -> str:
    return page.locator(RECIPE).inner_text(timeout=5_000)


def _image_src(page) -> str:
    return page.locator(IMAGE).get_attribute("src", timeout=5_000) or ""


def _image_state(page) -> dict:
    return page.locator(IMAGE).evaluate(IMAGE_STATE)


def _shown_image(page):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(page.locator(IMAGE).evaluate(IMAGE_BYTES)))).convert("RGB")


def _run_menu(page, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def test_studio_in_jupyterlab(lab):
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    from helpers.generation.png_metadata import read_png_recipe

    base, token, root = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/lab/tree/06_studio.ipynb?token={token}", timeout=60_000)
            status = page.locator(".jp-StatusBar-Widget").get_by_text(IDLE)
            expect(status).to_be_visible(timeout=60_000)

            # Up to the studio's display, not its scripted click: the panel before its first image.
            page.locator(".jp-CodeCell", has_text="studio.generate_button.click()").first.locator(".jp-InputPrompt").click()  # the first clicking cell: the scripted image
            _run_menu(page, "Run All Above Selected Cell")
            expect(page.locator(IMAGE)).to_be_visible(timeout=90_000)
            expect(status).to_be_visible(timeout=60_000)
            before = _image_state(page)  # item 14: a blank image reserves the space, no broken-image icon
            assert before["complete"] and before["naturalWidth"] == before["naturalHeight"] == 64, before
            assert (before["width"], before["height"]) == (384, 384), before

            _run_menu(page, "Run Selected Cell and All Below")
            # The notebook's scripted click renders one image, the one-lock cell a second; then the summary cell runs.
            expect(page.locator(RECIPE)).to_contain_text("generated in", timeout=90_000)
            expect(page.get_by_text(re.compile(r"Generated \d+ image"))).to_be_visible(timeout=60_000)
            expect(status).to_be_visible(timeout=60_000)
            # The A/B section below it ran last: bring the studio back into view (JupyterLab hides off-screen cells).
            page.locator(RECIPE).scroll_into_view_if_needed()
            expect(page.locator(RECIPE)).to_contain_text("generated in", use_inner_text=True)
            first = _image_state(page)  # no layout jump: the first image takes the placeholder's box exactly
            assert {k: first[k] for k in ("x", "y", "width", "height")} == {k: before[k] for k in ("x", "y", "width", "height")}
            before_recipe, before_src = _recipe_text(page), _image_src(page)
            assert re.search(r"guidance\s+3\.5", before_recipe), before_recipe

            sliders = page.locator(f"{STUDIO} .widget-slider")
            track = sliders.first.locator(".noUi-target").bounding_box()
            assert track["width"] >= 3 * 101, track  # guidance 0-10 in 0.1 steps: at least 3 px per value
            handle = sliders.first.locator(".noUi-handle")
            handle.focus()
            for _ in range(5):  # +0.5 in steps of 0.1; sent when the key is released
                handle.press("ArrowRight")
            expect(page.locator(f"{STUDIO} .widget-readout").first).to_have_text("4.0", timeout=10_000)

            generate = page.locator(f"{STUDIO} button", has_text="Generate")
            generate.click()
            expect(page.locator(RECIPE)).to_contain_text("4.0", timeout=60_000)
            expect(page.locator(RECIPE)).to_contain_text("generated in", timeout=60_000)
            after_recipe, after_src = _recipe_text(page), _image_src(page)
            assert after_recipe != before_recipe and re.search(r"guidance\s+4(\.0)?\b", after_recipe), after_recipe
            assert after_src and after_src != before_src
            expect(page.locator(MESSAGE)).to_have_text("")
            assert page.get_by_text("Error displaying widget").count() == 0

            # Item 9: a landscape image keeps its aspect ratio. Item 14: history shows the whole seed.
            big_seed = "4294967295"
            page.locator(f"{STUDIO} select").select_option(label="80x48")
            seed = page.locator(f"{STUDIO} .widget-inline-hbox", has_text="Seed").locator("input")
            seed.fill(big_seed)
            seed.press("Enter")
            generate.click()
            expect(page.locator(RECIPE)).to_contain_text(big_seed, timeout=60_000)
            expect(page.locator(RECIPE)).to_contain_text("generated in", timeout=60_000)
            landscape = _image_state(page)
            assert (landscape["naturalWidth"], landscape["naturalHeight"]) == (80, 48), landscape
            assert landscape["width"] == 384 and abs(landscape["height"] - 384 * 48 / 80) < 1, landscape
            history = page.locator(f"{STUDIO} .sd35-studio-history")
            # two from the notebook, two clicked here; the history row follows the recipe text by a message or
            # two, so wait for it (a bare count once read 3 in a busy run)
            expect(history.locator(".widget-vbox")).to_have_count(4, timeout=10_000)
            assert big_seed in history.locator(".widget-vbox").first.inner_text()
            assert history.evaluate(CUT_OFF) == []

            shot = os.environ.get("SD35_STUDIO_SCREENSHOT")
            if shot:
                Path(shot).parent.mkdir(parents=True, exist_ok=True)
                page.locator(STUDIO).screenshot(path=shot)

            # Item 10: after Cancel, the panel shows what Save writes (not the half-finished preview).
            steps = sliders.nth(1).locator(".noUi-handle")
            steps.focus()
            steps.press("End")
            expect(page.locator(f"{STUDIO} .widget-readout").nth(1)).to_have_text("60", timeout=10_000)
            generate.click()
            expect(page.locator(PROGRESS)).to_contain_text(re.compile(r"step [3-9]/60"), timeout=60_000)
            assert (_image_state(page)["naturalWidth"], _image_state(page)["naturalHeight"]) == (10, 6)  # the preview
            page.locator(f"{STUDIO} button", has_text="Cancel").click()
            expect(page.locator(MESSAGE)).to_contain_text("Cancelled", timeout=60_000)
            message = page.locator(MESSAGE).inner_text()
            assert len(re.findall("cancel", message, re.IGNORECASE)) == 1, message  # said once
            shown, recipe = _shown_image(page), _recipe_text(page)
            assert big_seed in recipe and "80x48" in recipe, recipe
            page.locator(f"{STUDIO} button", has_text="Save PNG").click()
            expect(page.locator(MESSAGE)).to_contain_text("Saved", timeout=30_000)
            saved_path = root / page.locator(f"{MESSAGE} code").inner_text()
            with Image.open(saved_path) as saved:
                assert saved.convert("RGB").tobytes() == shown.tobytes()
            assert read_png_recipe(saved_path)[1]["seed"] == int(big_seed)
        finally:
            browser.close()
