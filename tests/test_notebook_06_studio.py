"""Notebook 04 runs top to bottom on the stand-in and shows the studio with one scripted image."""

import re

import pytest
from notebook_harness import cell_outputs_text, run_notebook

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb04")
    return out, run_notebook("06_studio.ipynb", out, MODEL="tiny")


def test_studio_is_displayed_as_a_widget(executed):
    _, nb = executed
    views = [o for c in nb["cells"] for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 2  # the studio and the A/B studio


def test_scripted_generation_and_computed_summary(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "GenerationResult(tiny, 64x64" in text
    m = re.search(r"Generated \*\*(\d+)\*\* image\(s\); \*\*(\d+)\*\* request\(s\) were answered from the cache", text)
    assert m and (int(m.group(1)), int(m.group(2))) == (1, 0)
    assert "the text encoders ran **1** time(s)" in text


def test_ab_section_shows_a_computed_pair(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    pairs = re.findall(r"Same prompt, seed 0, guidance ([\d.]+), 4 steps, 64x64; only the negative prompts differ: (.+)\.", text)
    assert [g for g, _ in pairs] == ["3.5", "1"]
    assert re.fullmatch(r"the mean absolute pixel difference is \*\*\d+\.\d\d\*\* \(0-255 scale\)", pairs[0][1])
    assert pairs[1][1] == "the two images are **byte-identical**"  # guidance 1: the negative branch is not run
