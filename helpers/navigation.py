"""The notebooks' reading order, and the navigation bar generated from it.

`NOTEBOOKS` is the single source of truth for titles, Colab badges and prev/next links (as in
the Python Data Science Handbook's tools). `python -m helpers.navigation` rewrites every
notebook's first cell and the README's generated sections (the notebook table and the GPU memory
guide, computed by the same code notebook 01 runs); the tests fail when any of them is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
GITHUB = "sd35-notebooks/sd35-notebooks"
MARKER = "<!-- navigation -->"

NOTEBOOKS = [
    ("01_quantized_loading.ipynb", "Loading SD3.5 Large in 4-bit NF4", "what NF4 saves, what it costs, when to offload"),
    ("02_guidance_scale.ipynb", "Tuning guidance_scale", "sweeps, CLIP-scored adherence and a recommendation per model"),
    ("03_negative_prompts.ipynb", "Negative-prompt experiments", "measured over seeds, NF4 vs bf16, positive prompting for placement"),
    ("04_studio.ipynb", "The interactive studio", "sliders, live preview, cancel, cache, history and PNG recipes"),
]


def colab_url(filename: str) -> str:
    return f"https://colab.research.google.com/github/{GITHUB}/blob/main/notebooks/{filename}"


def colab_badge(filename: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(filename)})"


def heading(index: int) -> str:
    """The H1 a notebook must start its title cell with: '# 01 · Title'."""
    filename, title, _ = NOTEBOOKS[index]
    return f"# {filename[:2]} · {title}"


def navigation_cell(index: int) -> str:
    """Markdown for notebook `index`'s first cell: badge, then previous · contents · next."""
    filename = NOTEBOOKS[index][0]
    links = []
    if index > 0:
        prev_file, prev_title, _ = NOTEBOOKS[index - 1]
        links.append(f"[< {prev_file[:2]} · {prev_title}]({prev_file})")
    links.append("[Contents](../README.md#the-notebooks)")
    if index + 1 < len(NOTEBOOKS):
        next_file, next_title, _ = NOTEBOOKS[index + 1]
        links.append(f"[{next_file[:2]} · {next_title} >]({next_file})")
    return f"{MARKER}\n{colab_badge(filename)}\n\n" + " | ".join(links)


def readme_table() -> str:
    """The README's list of notebooks, each with its Colab badge."""
    rows = ["| # | Notebook | What you do | Colab |", "|---|---|---|---|"]
    for filename, title, summary in NOTEBOOKS:
        rows.append(f"| {filename[:2]} | [{title}](notebooks/{filename}) | {summary} | {colab_badge(filename)} |")
    return "\n".join(rows)


def vram_guide_section() -> str:
    """The README's memory guide: what `load_pipeline(offload="auto")` does on common machines
    (helpers.hardware_profiles), computed by the real planner."""
    from .hardware_profiles import markdown, profile_plans

    return (
        "What `load_pipeline(model, offload=\"auto\")` does on the machines readers use, decided by the\n"
        "real planner with only its device queries answered for each machine (`helpers.hardware_profiles`).\n"
        "Weights are exact (every component counted at full size on PyTorch's `meta` device,\n"
        "`helpers.memory_model`); working memory and host-RAM peaks rest on assumptions named there, which\n"
        "a GPU run measures. GPU memory and host RAM are the plan's peaks; notebook 01 measures your own.\n\n"
        + markdown(profile_plans())
    )


GPU_RESULTS = REPO / "benchmarks" / "results"
GPU_COLUMNS = {"plan": "plan", "status": "status", "load_s": "load (s)", "gpu_after_load_bytes": "GPU memory after load",
               "peak_allocated_bytes": "peak while generating", "s_per_image": "s / image"}


def gpu_results_section() -> str:
    """The README's "Measured on a GPU" tables, one per results file `make gpu-check` committed."""
    import json

    from .loading_plans import markdown_table

    parts = []
    for file in sorted(GPU_RESULTS.glob("*.json")):
        data = json.loads(file.read_text())
        meta, rows = data["meta"], data["rows"]
        short = [dict(r, status=r["status"].split(":")[0] if r["status"].startswith("failed") else r["status"])
                 for r in rows]
        parts.append(
            f"Measured on {meta['device']}, random weights ({meta['size']}x{meta['size']}, {meta['steps']} steps, "
            f"{meta['date'][:10]}, torch {meta['versions']['torch']}, diffusers {meta['versions']['diffusers']}, "
            f"bitsandbytes {meta['versions']['bitsandbytes']}); details and the planner comparison in "
            f"[{file.with_suffix('.md').relative_to(REPO)}]({file.with_suffix('.md').relative_to(REPO)}):\n\n"
            + markdown_table(short, GPU_COLUMNS)
        )
    return "\n\n".join(parts) or "No GPU results are committed yet: run `make gpu-check` on a CUDA GPU."


README_SECTIONS = {"notebooks": readme_table, "vram-guide": vram_guide_section, "gpu-check": gpu_results_section}


def _section(name: str) -> str:
    return f"<!-- {name}:start -->\n{README_SECTIONS[name]()}\n<!-- {name}:end -->"


def stale(notebooks_dir: Path = REPO / "notebooks", readme: Path = REPO / "README.md") -> list[str]:
    """What `--write` would change: a list of 'file: reason' strings (empty when current)."""
    problems = []
    for index, (filename, _, _) in enumerate(NOTEBOOKS):
        path = notebooks_dir / filename
        if not path.is_file():
            problems.append(f"{filename}: listed in NOTEBOOKS but missing")
            continue
        cells = nbformat.read(path, as_version=4).cells
        if not cells or cells[0].cell_type != "markdown" or cells[0].source != navigation_cell(index):
            problems.append(f"{filename}: navigation cell is stale")
        if len(cells) < 2 or not cells[1].source.startswith(heading(index)):
            problems.append(f"{filename}: title cell must start with {heading(index)!r}")
    listed = {f for f, _, _ in NOTEBOOKS}
    for path in sorted(notebooks_dir.glob("*.ipynb")):
        if path.name not in listed:
            problems.append(f"{path.name}: not listed in helpers/navigation.py NOTEBOOKS")
    text = readme.read_text() if readme.is_file() else ""
    for name in README_SECTIONS:
        if _section(name) not in text:
            problems.append(f"README.md: generated section {name!r} is stale")
    return problems


def write(notebooks_dir: Path = REPO / "notebooks", readme: Path = REPO / "README.md") -> None:
    """Regenerate every navigation cell, title heading and the README table in place."""
    for index, (filename, _, _) in enumerate(NOTEBOOKS):
        path = notebooks_dir / filename
        if not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        cell = nbformat.v4.new_markdown_cell(navigation_cell(index))
        if nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(MARKER):
            cell.id = nb.cells[0].get("id", cell.id)
            nb.cells[0] = cell
        else:
            nb.cells.insert(0, cell)
        title = nb.cells[1]
        first, _, rest = title.source.partition("\n")
        if first.startswith("# "):
            title.source = heading(index) + ("\n" + rest if rest else "")
        nbformat.write(nb, path)
    text = readme.read_text()
    for name in README_SECTIONS:
        pattern = re.compile(re.escape(f"<!-- {name}:start -->") + ".*?" + re.escape(f"<!-- {name}:end -->"), re.S)
        text = pattern.sub(lambda _, name=name: _section(name), text)
    readme.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report what is stale (exit 1 if any)")
    args = parser.parse_args(argv)
    if not args.check:
        write()
    problems = stale()
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
