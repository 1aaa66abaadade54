"""The interactive studio: sliders that drive live generation inline. Taught in notebook 06.

`engine` holds the queue, worker thread, cancel, caches and history (no widgets); `view.Studio`
is the widget panel over one engine; `ab.ABStudio` puts two of them side by side.
"""

from .ab import ABStudio
from .view import Studio

__all__ = ["ABStudio", "Studio"]
