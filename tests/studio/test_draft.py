"""Draft mode: slider moves render fewer steps, the Generate button the full recipe; and why diffusers'
caching hooks are left out (checked in the installed diffusers source)."""

import inspect

import pytest

from helpers.studio import draft
from helpers.studio.view import Studio

FULL = dict(prompt="a fox", negative_prompt="", guidance_scale=3.5, num_inference_steps=28, seed=1,
            height=1024, width=768)


class _Turbo:
    class load_info:  # noqa: N801  (the attribute path a loaded pipeline has)
        class plan:  # noqa: N801
            preset = "sd35-large-turbo"


def test_draft_settings_halve_the_steps_and_keep_turbos_four():
    assert draft.draft_settings(FULL) == dict(FULL, num_inference_steps=14)  # the size is kept by default
    assert draft.draft_settings(dict(FULL, num_inference_steps=6))["num_inference_steps"] == 4  # at least 4
    assert draft.draft_settings(dict(FULL, num_inference_steps=3))["num_inference_steps"] == 3  # never more
    assert draft.draft_settings(dict(FULL, num_inference_steps=4), _Turbo())["num_inference_steps"] == 4
    smaller = draft.draft_settings(FULL, size_fraction=0.75)
    assert (smaller["height"], smaller["width"]) == (768, 576)
    with pytest.raises(ValueError, match="size_fraction must be a fraction"):
        draft.draft_settings(FULL, size_fraction=1.5)


def test_a_slider_move_renders_the_draft_and_generate_the_full_recipe(tiny_pipe, tmp_path):
    studio = Studio(tiny_pipe, save_dir=tmp_path / "saved", draft=True)
    try:
        studio.auto.value = True
        studio.steps.value = 10
        studio.wait_idle(60)
        assert studio.current.recipe["num_inference_steps"] == 5  # the draft of 10 steps
        studio.generate_button.click()
        studio.wait_idle(60)
        assert studio.current.recipe["num_inference_steps"] == 10 and studio.generations == 2
    finally:
        studio.cancel()
        studio.wait_idle(30)
    with pytest.raises(TypeError, match="draft must be True or False"):
        Studio(tiny_pipe, draft="yes")


def test_diffusers_caching_hooks_cannot_reach_sd3_through_the_public_api():
    """diffusers' FirstBlockCache, FasterCache, MagCache and TaylorSeer are enabled with
    `transformer.enable_cache(config)` (CacheMixin) and need the pipeline to set a cache context:
    SD3's transformer has no CacheMixin and its pipeline sets no context (Flux's has both)."""
    from diffusers import (
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from diffusers.models.cache_utils import CacheMixin

    assert not issubclass(SD3Transformer2DModel, CacheMixin) and not hasattr(SD3Transformer2DModel, "enable_cache")
    assert "cache_context" not in inspect.getsource(StableDiffusion3Pipeline.__call__)
    assert issubclass(FluxTransformer2DModel, CacheMixin) and "cache_context" in inspect.getsource(FluxPipeline.__call__)
