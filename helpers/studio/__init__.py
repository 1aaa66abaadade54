"""The interactive studio: sliders that drive live generation inline. Taught in notebook 06."""

from .view import ABStudio, Studio

__all__ = ["ABStudio", "Studio"]
