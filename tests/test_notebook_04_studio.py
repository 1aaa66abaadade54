"""Notebook 04 runs top to bottom on the stand-in and shows the studio with one scripted image."""

import re

import pytest
from notebook_harness import cell_outputs_text, run_notebook

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb04")
    return out, run_notebook("04_studio.ipynb", out, MODEL="tiny")


def test_studio_is_displayed_as_a_widget(executed):
    _, nb = executed
    views = [o for c in nb["cells"] for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1


def test_scripted_generation_and_computed_summary(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "GenerationResult(tiny, 64x64" in text
    m = re.search(r"Generated \*\*(\d+)\*\* image\(s\); \*\*(\d+)\*\* request\(s\) were answered from the cache", text)
    assert m and (int(m.group(1)), int(m.group(2))) == (1, 0)
    assert "the text encoders ran **1** time(s)" in text
