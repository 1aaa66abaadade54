"""The widget calls that differ between ipywidgets 7 (Colab's) and 8 (this project's lock), done
the way both accept, so every panel displays and titles its sections on either (scrolling areas use
`Layout(overflow=...)`, which both have: 8 dropped `overflow_x`/`overflow_y`)."""

from __future__ import annotations

import ipywidgets as widgets


def titled_accordion(children, titles) -> widgets.Accordion:
    """A collapsed Accordion with `titles`: `set_title` works on ipywidgets 7 (Colab) and 8, where
    7 silently drops 8's `titles=` argument."""
    accordion = widgets.Accordion(children=children, selected_index=None)
    for index, title in enumerate(titles):
        accordion.set_title(index, title)
    return accordion


class ShowsWidget:
    """Displays `self.widget` as its own: ipywidgets 8 widgets display through `_repr_mimebundle_`,
    ipywidgets 7 ones (Colab's) through `_ipython_display_`; whichever the installed one offers."""

    if hasattr(widgets.Widget, "_repr_mimebundle_"):
        def _repr_mimebundle_(self, **kwargs):
            return self.widget._repr_mimebundle_(**kwargs)
    else:
        def _ipython_display_(self, **kwargs):
            return self.widget._ipython_display_(**kwargs)
