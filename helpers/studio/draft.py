"""Draft mode: faster images while the sliders move; the final render is the full recipe.

`Studio(pipe, draft=True)` renders every automatic (slider) request with `draft_settings`: half the
steps (at least 4; a Turbo pipeline keeps its 4), and optionally a smaller image. The Generate button
renders the full recipe. benchmarks/draft_mode.py measures each lever for speed and for fidelity
against the full image (PSNR and SSIM, scikit-image). The default is picked from its stand-in rows
(benchmarks/results/draft_mode/stand-in-cpu.md): half the steps gave 2.1x at SSIM 0.999, while a
3/4-side image gave 1.2x and moved the picture (SSIM 0.09), so the size is kept unless asked
(`size_fraction`); a GPU, where the transformer's tokens dominate, should measure it again. On the
stand-in's random weights the fidelity figures say little about the trained model's images.

diffusers' caching hooks (FirstBlockCache, FasterCache, MagCache, TaylorSeer) are left out: in
diffusers 0.42 `SD3Transformer2DModel` has no `CacheMixin` (no `enable_cache`) and the SD3 pipeline
sets no cache context, so none can be applied through the public API (tests/studio/test_draft.py
checks both in the installed source).
"""

from __future__ import annotations

DRAFT_STEP_FRACTION = 0.5  # of the recipe's steps (at least DRAFT_MIN_STEPS)
DRAFT_MIN_STEPS = 4
DRAFT_SIZE_FRACTION = 1.0  # of each side, down to a multiple of SIZE_MULTIPLE (see the module docstring)
SIZE_MULTIPLE = 16
TURBO_STEPS = 4  # a Turbo pipeline's steps: draft changes only the size


def is_turbo(pipe) -> bool:
    """Whether `pipe` was loaded from SD3.5 Large Turbo (its load_info's preset)."""
    plan = getattr(getattr(pipe, "load_info", None), "plan", None)
    return "turbo" in str(getattr(plan, "preset", "")).lower()


def draft_settings(settings: dict, pipe=None, *, step_fraction: float = DRAFT_STEP_FRACTION,
                   size_fraction: float = DRAFT_SIZE_FRACTION) -> dict:
    """`settings` (the studio's generate arguments) as a draft: fewer steps (not on Turbo's 4), and
    each side times `size_fraction`."""
    for name, value in (("step_fraction", step_fraction), ("size_fraction", size_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"{name} must be a fraction in (0, 1], not {value!r}.")
    steps = int(settings["num_inference_steps"])
    if not (pipe is not None and is_turbo(pipe) and steps <= TURBO_STEPS):
        steps = min(steps, max(DRAFT_MIN_STEPS, round(steps * step_fraction)))

    def side(pixels: int) -> int:
        return max(SIZE_MULTIPLE, int(pixels * size_fraction) // SIZE_MULTIPLE * SIZE_MULTIPLE)

    return dict(settings, num_inference_steps=steps, height=side(settings["height"]), width=side(settings["width"]))
