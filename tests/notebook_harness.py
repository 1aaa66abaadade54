"""Execute a notebook from notebooks/ on the stand-in, the way the README's main job does.

The kernel gets the test-only bitsandbytes CPU shim through `tests/kernel_site/sitecustomize.py`,
so NF4 cells really quantize on CI; nothing in the notebooks knows about it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tools.run_notebooks import NOTEBOOKS, execute_notebook

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def run_notebook(name: str, output_dir: Path, bnb_cpu_shim: bool = True, **parameters) -> dict:
    """Run notebooks/<name> with STAND_IN=True plus `parameters`; return the executed notebook.

    `bnb_cpu_shim=False` runs the kernel as a reader without a GPU has it: diffusers refuses NF4."""
    env_before = dict(os.environ)
    site = [str(TESTS / "kernel_site")] if bnb_cpu_shim else []
    os.environ["PYTHONPATH"] = os.pathsep.join([*site, str(REPO)])
    os.environ.pop("MPLBACKEND", None)  # kernels draw inline, as for readers (the tests set Agg)
    try:
        out = execute_notebook(NOTEBOOKS / name, output_dir, {"STAND_IN": True, **parameters}, timeout=600)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    text = out.read_text()
    # No executed output may ever contain something shaped like a Hugging Face token.
    assert not re.search(r"hf_[A-Za-z0-9]{30,}", text), f"token-shaped string in {name}'s outputs"
    return json.loads(text)


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
