"""Every notebook: clean, valid, laid out the same way, linted, token-free, and tested."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools.navigation import GITHUB, NOTEBOOKS, REPO, SETUP_CELL, SETUP_MARKER

NOTEBOOK_PATHS = sorted((REPO / "notebooks").glob("*.ipynb"))
TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{30,}")


def read(path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOK_PATHS] == [name for name, _, _ in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_committed_clean_and_valid(path):
    nb = read(path)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_layout(path):
    cells = read(path).cells
    title = cells[1].source
    assert title.startswith("# ") and "Prerequisites" in title, "title, goal and prerequisites first"
    parameters = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "STAND_IN = None" in parameters[0].source
    assert cells.index(parameters[0]) < 4, "the parameters cell sits at the top"
    assert any(c.source.startswith(SETUP_MARKER) for c in cells[:5])
    closing = [c for c in cells[-2:] if c.cell_type == "markdown" and "What you learned" in c.source]
    assert closing, "a 'What you learned' summary closes the notebook (before or after the exercises)"


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_ends_with_two_or_three_exercises(path):
    sections = [c.source for c in read(path).cells[-2:] if c.cell_type == "markdown" and c.source.startswith("## Exercises")]
    assert sections, f"{path.name}: end with an '## Exercises' section (d2l style)"
    items = re.findall(r"^\d+\. (.*)$", sections[0], re.M)
    assert 2 <= len(items) <= 3, f"{path.name}: two or three numbered exercises, not {len(items)}"
    # Each says first what it needs, in one style: "*(GPU ...)*", "*(Stand-in or GPU ...)*", "*(Any machine ...)*".
    unlabelled = [e[:60] for e in items if not re.match(r"\*\((GPU|Stand-in|Any machine)\b[^)]*\)\*", e)]
    assert unlabelled == [], f"{path.name}: exercises that do not say what they need: {unlabelled}"


def test_setup_cell_is_the_generated_one_everywhere():
    stale = [p.name for p in NOTEBOOK_PATHS
             if [c.source for c in read(p).cells if c.source.startswith(SETUP_MARKER)] != [SETUP_CELL]]
    assert stale == [], "run: .venv/bin/python -m tools.navigation"
    # The clone URL and the Colab badges point at the same repository.
    assert f'"https://github.com/{GITHUB}"' in SETUP_CELL


def test_setup_cell_installs_colab_requirements_on_colab_only_and_silences_before_importing():
    assert '"requirements-colab.txt" if "google.colab" in sys.modules else "requirements.txt"' in SETUP_CELL
    lines = SETUP_CELL.splitlines()
    first_import = next(i for i, line in enumerate(lines) if "import helpers" in line)
    silenced = [i for i, line in enumerate(lines) if ".setLevel(logging.ERROR)" in line]
    assert silenced and max(silenced) < first_import  # visible in the cell, not inside `helpers`
    compile(SETUP_CELL, "set-up cell", "exec")


def test_notebook_outputs_folder_is_ignored_by_git():
    """The set-up cell's OUTPUT folder, under notebooks/ as JupyterLab runs them, is git-ignored."""
    assert 'OUTPUT = Path("outputs")' in SETUP_CELL
    probe = "notebooks/outputs/figures/any.png"
    done = subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO)
    assert done.returncode == 0, f"{probe} would show in git status"


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_links_between_notebooks_resolve(path):
    for cell in read(path).cells:
        if cell.cell_type != "markdown":
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", cell.source):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_every_notebook_has_a_test_module_that_executes_it(path):
    module = REPO / "tests" / "notebooks" / f"test_notebook_{path.stem}.py"
    assert module.is_file(), f"add {module.relative_to(REPO)}"
    assert f'"{path.name}"' in module.read_text()


def test_ruff_is_clean_over_helpers_tests_notebooks_and_benchmarks():
    targets = [t for t in ("helpers", "tests", "notebooks", "benchmarks") if (REPO / t).exists()]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", *targets], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_token_shaped_string_in_the_repository():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    offenders = []
    for name in filter(None, files.stdout.split("\0")):
        path = Path(REPO / name)
        if path.is_file() and path.suffix not in {".png", ".jpg", ".safetensors"}:
            if TOKEN_SHAPE.search(path.read_text(errors="ignore")):
                offenders.append(name)
    assert offenders == []


def test_every_committed_image_is_shown_in_the_readme():
    readme = (REPO / "README.md").read_text()
    images = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "images").iterdir() if p.is_file())
    assert images, "images/ holds the README's screenshot"
    assert [i for i in images if f"]({i})" not in readme] == []


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_grids_are_shown_downscaled(path):
    """A grid of 1024 px tiles is thousands of pixels wide: notebooks save it at full resolution and
    show `grids.for_display(...)` of it, never the grid itself."""
    for cell in read(path).cells:
        if cell.cell_type != "code":
            continue
        assert not re.search(r"(?<!for_)display\((helpers\.)?(image_grid|xy_grid)\(", cell.source), (path.name, cell.source[:200])
        last = cell.source.rstrip().splitlines()[-1] if cell.source.strip() else ""
        assert not re.match(r"^(helpers\.)?image_grid\(|^grid$", last), (path.name, last)


# Prose: the markdown cells a reader reads, the generated navigation bar aside.
PROSE_LIMIT = 900  # words per notebook (issue 25 §5): what a learner needs when they need it, the rest linked


def prose_cells(path):
    return [c.source for c in read(path).cells if c.cell_type == "markdown" and not c.source.startswith("<!-- navigation")]


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_prose_stays_within_the_reading_load(path):
    words = sum(len(source.split()) for source in prose_cells(path))
    assert words <= PROSE_LIMIT, f"{path.name}: {words} words of prose, over {PROSE_LIMIT}"


# A figure: a number with a unit of time, memory, share or ratio ("18 s", "15.0 GiB", "12%", "3.7x").
# Names that hold digits ("SD3.5", "bf16", "Q4_0", "4-bit", "sm_89") and inline code are not figures.
FIGURE = re.compile(r"(?<![\w.\-/])\d[\d,]*(?:\.\d+)?\s?(?:s|ms|min|minutes|seconds|GB|GiB|MB|MiB|KiB|TB|%|bytes?|bits?|x)"
                    r"(?![\w])")
LINK = re.compile(r"\]\(([^)\s]+)[^)]*\)")


def unsourced_figures(markdown: str) -> list[str]:
    """The paragraphs (or list items) of `markdown` that state a figure without a link in them: a
    figure in prose must be quoted with its source, or point at the measurement file or code it
    comes from (computed figures belong in a cell's output, not in the prose)."""
    found = []
    for block in re.split(r"\n\s*\n", markdown):
        for item in re.split(r"\n(?=\s*(?:[-*]|\d+\.) )", block):
            bare = LINK.sub("]", re.sub(r"`[^`]*`", "", item))
            if FIGURE.search(bare) and not LINK.search(item):
                found.append(item.strip()[:100])
    return found


def test_a_figure_without_a_source_is_found_and_one_with_a_link_is_not():
    assert unsourced_figures("NF4 takes 18 s on an H100.") == ["NF4 takes 18 s on an H100."]
    assert unsourced_figures("- fast\n- NF4 saves 70%") == ["- NF4 saves 70%"]
    assert unsourced_figures("The [toolkit](https://example.org/readme) gives 18 s.") == []
    assert unsourced_figures("The run in [results](../benchmarks/results) took 3.5 GiB.") == []
    assert unsourced_figures("SD3.5 in 4-bit NF4, bf16 and `18 s` in code, Q4_0, sm_89") == []


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_every_figure_in_the_prose_is_sourced(path):
    """The README's promise: a number in a notebook's text is computed by a cell, read from a named
    measurement file, or quoted with its source. Cells print the first two; the prose, which no cell
    computes, may state a figure only with a link to where it comes from."""
    offenders = [item for source in prose_cells(path) for item in unsourced_figures(source)]
    assert offenders == [], f"{path.name}: figures in prose without a source: {offenders}"


def test_the_readme_states_the_numbers_rule_exactly():
    readme = " ".join((REPO / "README.md").read_text().split())
    assert ("Every number in a notebook's text is computed by a cell of that notebook on your machine, read by a "
            "cell from a named measurement file (`benchmarks/results/`, committed GPU runs), or quoted with a link "
            "to its source; a test holds the prose between cells to this for every figure (seconds, bytes, "
            "percentages, ratios).") in readme
    assert "every number in a notebook's text is computed by a cell of that notebook, on your machine" not in readme
    # The measurement files it names are the ones notebooks read.
    assert sorted((REPO / "benchmarks" / "results").glob("*.json"))
