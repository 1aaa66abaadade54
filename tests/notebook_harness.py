"""Execute a notebook from notebooks/ on the stand-in, the way the README's main job does.

The kernel gets the test-only bitsandbytes CPU shim through `tests/kernel_site/sitecustomize.py`,
so NF4 cells really quantize on CI; nothing in the notebooks knows about it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import traceback
from pathlib import Path

from filelock import FileLock

from tools.run_notebooks import NOTEBOOKS, execute_notebook

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Each cell of a stand-in notebook finishes in seconds (the slowest, a study or a compile, in about
# a minute on 2 busy cores). A stalled cell fails after this many seconds, naming itself and with
# every kernel thread's stack, instead of running into the test's own timeout. (The 600 s stall of
# notebook 06's `@interact` cell was the runner's, not the kernel's: tools.run_notebooks now polls
# its kernel in 1 s slices.)
CELL_TIMEOUT = int(os.environ.get("SD35_CELL_TIMEOUT", "240"))


def run_notebook(name: str, output_dir: Path, bnb_cpu_shim: bool = True, **parameters) -> dict:
    """Run notebooks/<name> with STAND_IN=True plus `parameters`; return the executed notebook.

    `bnb_cpu_shim=False` runs the kernel as a reader without a GPU has it: diffusers refuses NF4."""
    env_before = dict(os.environ)
    site = [str(TESTS / "kernel_site")] if bnb_cpu_shim else []
    os.environ["PYTHONPATH"] = os.pathsep.join([*site, str(REPO)])
    os.environ.pop("MPLBACKEND", None)  # kernels draw inline, as for readers (the tests set Agg)
    try:
        out = execute_notebook(NOTEBOOKS / name, output_dir, {"STAND_IN": True, **parameters}, timeout=CELL_TIMEOUT)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    text = out.read_text()
    # No executed output may ever contain something shaped like a Hugging Face token.
    assert not re.search(r"hf_[A-Za-z0-9]{30,}", text), f"token-shaped string in {name}'s outputs"
    return json.loads(text)


def _session_root(tmp_path_factory) -> Path:
    """A folder of this test session shared by its pytest-xdist workers (each worker's basetemp is
    a subfolder of the session's), or the session's own basetemp without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def executed_once(name: str, tmp_path_factory, bnb_cpu_shim: bool = True, **parameters) -> tuple[Path, dict]:
    """(output folder, executed notebook) of `run_notebook(name, ...)`, executed once per test
    session whichever test or worker asks first; the others wait for it (a file lock) and read the
    same outputs. For tests that only read what the notebook printed and wrote.

    A failed execution is not retried by the next test: it fails too, with the first one's error."""
    key = hashlib.sha256(repr((name, bnb_cpu_shim, sorted(parameters.items()))).encode()).hexdigest()[:12]
    root = _session_root(tmp_path_factory) / "executed-notebooks" / f"{Path(name).stem}-{key}"
    root.parent.mkdir(parents=True, exist_ok=True)
    out, failed = root / "out", root / "FAILED.txt"
    with FileLock(str(root) + ".lock"):
        if failed.is_file():
            raise RuntimeError(f"{name} failed when an earlier test executed it:\n{failed.read_text()}")
        if not (out / name).is_file():
            try:
                run_notebook(name, out, bnb_cpu_shim=bnb_cpu_shim, **parameters)
            except BaseException:
                root.mkdir(parents=True, exist_ok=True)
                failed.write_text(traceback.format_exc()[-20000:])
                raise
    return out, json.loads((out / name).read_text())


def cell_outputs_text(notebook: dict) -> str:
    """All text the executed notebook printed or displayed, joined."""
    parts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if "text" in output:
                parts.append("".join(output["text"]))
            for key in ("text/plain", "text/markdown", "text/html"):
                if key in output.get("data", {}):
                    parts.append("".join(output["data"][key]))
    return "\n".join(parts)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _widget_states(notebook: dict) -> dict:
    return notebook["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})


def _tqdm_bar(states: dict, model_id) -> list[dict] | None:
    """The states of a tqdm notebook bar's three parts (label, bar, counts), or None if `model_id` is
    something else."""
    parts = [states.get(ref.replace("IPY_MODEL_", ""), {})
             for ref in states.get(model_id, {}).get("state", {}).get("children", [])]
    return parts if [p.get("model_name") for p in parts] == ["HTMLModel", "FloatProgressModel", "HTMLModel"] else None


def _view_id(output: dict):
    return output.get("data", {}).get(WIDGET_VIEW, {}).get("model_id")


def progress_bars(notebook: dict, cell: dict | None = None) -> list[dict]:
    """tqdm's notebook bars (a reader's kernel shows tqdm.auto as widgets) in `cell`, or in the whole
    notebook: {"text": "plans: 100%", "value": 7.0, "max": 7.0} each, from the saved widget state."""
    states, bars = _widget_states(notebook), []
    for c in [cell] if cell is not None else notebook["cells"]:
        for output in c.get("outputs", []):
            parts = _tqdm_bar(states, _view_id(output))
            if parts is not None:
                label, bar = parts[0]["state"], parts[1]["state"]
                bars.append({"text": label["value"].replace("\u2007", " "), "value": bar["value"], "max": bar["max"]})
    return bars


def widget_views(notebook: dict) -> list[dict]:
    """The widget outputs other than tqdm's progress bars (interact apps, studios)."""
    states = _widget_states(notebook)
    return [o for c in notebook["cells"] for o in c.get("outputs", [])
            if _view_id(o) is not None and _tqdm_bar(states, _view_id(o)) is None]
