"""Measuring over many images: grids, CLIP scores, paired statistics and batch studies.

Taught in notebooks 04 (guidance) and 05 (negative prompts).
"""

from .clip_score import ClipScorer, clip_model_id
from .grids import for_display, image_grid, xy_grid

__all__ = ["ClipScorer", "clip_model_id", "for_display", "image_grid", "xy_grid"]
