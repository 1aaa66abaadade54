"""Every notebook on a twin of Google Colab's runtime (tools/colab_twin.py): Colab's published
package list in a Python 3.13 venv, `google.colab` importable, the repository cloned into a folder
standing for /content, and the notebooks' own set-up cell installing requirements-colab.txt.

The first run builds the twin (about 3.5 GB downloaded once, then cached outside the repository);
each run then takes minutes. Without Python 3.13 these tests fail, saying how to get it."""

import os
import re

import nbformat
import pytest

from tools import colab_twin
from tools.navigation import REPO, SETUP_MARKER

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory):
    if colab_twin.find_python313() is None:
        where = "CI must provide it (CI=true). " if os.environ.get("CI") == "true" else ""
        pytest.fail(f"No Python 3.13 for the Colab twin. {where}{colab_twin.INSTALL_HINT}")
    out = tmp_path_factory.mktemp("colab-twin")
    results = colab_twin.run_notebooks(out)
    return [dict(r, nb=nbformat.read(r["executed"], as_version=4) if r["executed"].is_file() else None) for r in results]


def _text(outputs) -> str:
    parts = []
    for output in outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        else:
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def _setup_output(nb) -> str:
    return _text(next(c for c in nb.cells if c.source.startswith(SETUP_MARKER)).outputs)


def test_every_notebook_runs_on_the_colab_twin(twin_run):
    assert [r["notebook"] for r in twin_run] == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    failed = {r["notebook"]: r["error"][-3000:] for r in twin_run if r["error"]}
    assert not failed


def test_every_notebook_plans_as_a_free_t4_and_says_when_t5_is_dropped(twin_run):
    from helpers.loading.machine_fit import T5_DROPPED

    assert sum(len(r["loads"]) for r in twin_run) >= 5, "SD35_AS_MACHINE did not reach the twin's kernels"
    for r in twin_run:
        printed = "".join(_text(c.outputs) for c in r["nb"].cells if c.cell_type == "code") if r["nb"] else ""
        for entry in r["loads"]:
            assert entry["profile"] == colab_twin.AS_MACHINE and entry["plan"]["device"] == "cuda", entry
            assert entry["plan"]["fits"] or r["notebook"].startswith("02"), (r["notebook"], entry)  # 02: a table row
            if entry["plan"]["t5"] == "dropped" and not entry["options"].get("drop_t5"):  # never silently (asked for: not silent)
                assert T5_DROPPED in printed, (r["notebook"], entry)
        made = {entry["plan"]["words"] for entry in r["loads"]}
        for plan in re.findall(r"^Plan: (.+)$", printed, re.M):
            assert plan in made, (r["notebook"], plan, made)


def test_no_cell_shows_an_error(twin_run):
    # A failed display (ipywidgets 7 has no _repr_mimebundle_) shows a traceback but fails no cell.
    shown = {r["notebook"]: _text([o]) for r in twin_run if r["nb"] for c in r["nb"].cells if c.cell_type == "code"
             for o in c.outputs if o.output_type == "error"}
    assert not shown


def test_setup_cell_installs_what_colab_lacks_without_pip_errors_or_restart(twin_run):
    first = _setup_output(twin_run[0]["nb"])
    assert "Installing from requirements-colab.txt" in first  # Colab's diffusers 0.39 is too old
    assert re.search(r"diffusers 0\.39\.0 -> 0\.\d+", first), first
    assert not [line for line in first.splitlines() if "ERROR" in line], first
    assert "restart" not in first.lower(), first
    assert re.search(r"Outputs go to \S*/content/outputs: Colab deletes them", first), first  # /content: a temp folder here
    for r in twin_run[1:]:  # the same runtime: everything is current now, so the cell installs nothing
        later = _setup_output(r["nb"])
        assert "Installing" not in later and "restart" not in later.lower(), (r["notebook"], later)


def test_studio_and_ab_studio_display_as_widgets_on_colabs_ipywidgets(twin_run):
    shown = []
    for r in twin_run:
        for cell in r["nb"].cells if r["nb"] else []:
            m = re.search(r"^(\w+) = helpers\.(Studio|ABStudio)\(", cell.source, re.M)
            if m and cell.source.strip().splitlines()[-1] == m.group(1):
                views = [o for o in cell.outputs if WIDGET_VIEW in o.get("data", {})]
                shown.append((r["notebook"], m.group(2), len(views)))
    assert {kind for _, kind, _ in shown} == {"Studio", "ABStudio"}, shown
    assert all(count == 1 for _, _, count in shown), shown


def test_colab_list_pins_drop_local_versions_and_links(tmp_path):
    listed = tmp_path / "pip-freeze.gpu.txt"
    listed.write_text("# comment\ntorch==2.11.0+cu128\nIPython==7.34.0\nfoo @ git+https://example.org/foo\n")
    assert colab_twin.colab_pins(listed) == {"torch": "2.11.0", "ipython": "7.34.0"}


def test_a_new_colab_list_gives_a_new_twin(tmp_path):
    listed = tmp_path / "pip-freeze.gpu.txt"
    listed.write_text("torch==2.11.0\n")
    before = colab_twin.twin_path(listed)
    listed.write_text("torch==2.12.0\n")
    assert colab_twin.twin_path(listed) != before


def test_studio_titles_and_scrolling_hold_on_colabs_ipywidgets(twin_run):
    # The widget state the kernel left in notebook 06: ipywidgets 7 keeps titles in `_titles`.
    nb = next(r["nb"] for r in twin_run if r["notebook"].startswith("06_"))
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    titles = [m["state"].get("_titles") or {str(i): t for i, t in enumerate(m["state"].get("titles", ()))}
              for m in state if m["model_name"] == "AccordionModel"]
    assert {"0": "Log (tracebacks)"} in titles and {"0": "Log A (tracebacks)", "1": "Log B (tracebacks)"} in titles
    layouts = [m["state"] for m in state if m["model_name"] == "LayoutModel"]
    assert sum(layout.get("overflow") == "auto" for layout in layouts) >= 2  # history strip and log
    assert not [layout for layout in layouts if layout.get("overflow_x") or layout.get("overflow_y")]
