"""Navigation bars, titles and the README table are generated from one list and kept current."""

import shutil

import nbformat

from tools import navigation


def test_every_notebook_bar_title_and_readme_table_is_current():
    assert navigation.stale() == [], "run: .venv/bin/python -m tools.navigation"


def test_bar_links_neighbours_and_badge():
    first, middle = navigation.navigation_cell(0), navigation.navigation_cell(1)
    assert "colab-badge.svg" in first and navigation.colab_url(navigation.NOTEBOOKS[0][0]) in first
    assert "< " not in first and f"({navigation.NOTEBOOKS[1][0]})" in first
    assert f"({navigation.NOTEBOOKS[0][0]})" in middle and f"({navigation.NOTEBOOKS[2][0]})" in middle


def test_write_repairs_a_stale_copy(tmp_path):
    notebooks, readme = tmp_path / "notebooks", tmp_path / "README.md"
    shutil.copytree(navigation.REPO / "notebooks", notebooks)
    readme.write_text("intro\n<!-- notebooks:start -->\nold\n<!-- notebooks:end -->\n"
                      "<!-- vram-guide:start -->\n<!-- vram-guide:end -->\n"
                      "<!-- gpu-check:start -->\n<!-- gpu-check:end -->\n")
    path = notebooks / navigation.NOTEBOOKS[1][0]
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = navigation.MARKER + "\nold bar"
    nbformat.write(nb, path)
    other = notebooks / navigation.NOTEBOOKS[2][0]
    nb = nbformat.read(other, as_version=4)
    setup = next(c for c in nb.cells if c.source.startswith(navigation.SETUP_MARKER))
    setup.source = setup.source.replace("requirements-colab.txt", "requirements.txt")
    nbformat.write(nb, other)
    assert f"{other.name}: set-up cell is stale or missing" in navigation.stale(notebooks, readme)
    assert len(navigation.stale(notebooks, readme)) == 5  # bar, set-up cell and 3 README sections
    navigation.write(notebooks, readme)
    assert navigation.stale(notebooks, readme) == []
    assert readme.read_text().startswith("intro\n")
