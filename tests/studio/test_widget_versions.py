"""The studio panels on the installed ipywidgets (8 here): they display as widgets, their log
sections carry titles and their scrolling areas scroll. ipywidgets 7 (Colab's) is proven by the
Colab twin (tests/tools/test_colab_twin.py), which runs the same checks there."""

import ipywidgets as widgets
import pytest
from IPython.core.interactiveshell import InteractiveShell

from helpers.studio.ab import ABStudio
from helpers.studio.view import Studio
from helpers.studio.widget_versions import titled_accordion

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


@pytest.fixture(params=["studio", "ab"])
def panel(request, tiny_pipe, tmp_path):
    panel = Studio(tiny_pipe, save_dir=tmp_path) if request.param == "studio" else ABStudio(tiny_pipe, save_dir=tmp_path)
    yield panel
    panel.cancel()
    panel.wait_idle(30)


def test_panels_display_as_widgets_through_ipythons_formatter(panel):
    data, _ = InteractiveShell.instance().display_formatter.format(panel)
    assert data[WIDGET_VIEW]["model_id"] == panel.widget.model_id


def test_panels_log_sections_have_titles_and_start_closed(panel):
    accordions = [w for w in _all_widgets(panel.widget) if isinstance(w, widgets.Accordion)]
    titles = [[a.get_title(i) for i in range(len(a.children))] for a in accordions]
    expected = [["Log (tracebacks)"]] if isinstance(panel, Studio) else [["Log A (tracebacks)", "Log B (tracebacks)"]]
    assert titles == expected
    assert all(a.selected_index is None for a in accordions)


def test_scrolling_areas_use_overflow_which_both_versions_have(tiny_pipe, tmp_path):
    # ipywidgets 8 ignores overflow_x/overflow_y: the history strip and the log would never scroll.
    studio = Studio(tiny_pipe, save_dir=tmp_path)
    assert studio.history_strip.layout.overflow == "auto"
    assert studio.log.layout.overflow == "auto" and studio.log.layout.max_height == "200px"


def test_titled_accordion_titles_every_child():
    accordion = titled_accordion([widgets.Output(), widgets.Output()], ["one", "two"])
    assert [accordion.get_title(0), accordion.get_title(1)] == ["one", "two"]
    assert accordion.selected_index is None
