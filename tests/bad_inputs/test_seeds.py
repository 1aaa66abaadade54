"""Class 5: a seed is either refused everywhere or gives its own image. torch's CPU generator
keeps a seed's low 32 bits, so seeds stop at 2**32 - 1, and generate, the studio, studies and
saved recipes all agree on which seeds they take."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import helpers
from helpers.generation.png_metadata import check_recipe
from helpers.generation.validation import MAX_SEED, check_seed
from helpers.studies.jobs import Condition, plan_jobs

SEEDS = st.one_of(st.integers(0, MAX_SEED), st.integers(MAX_SEED + 1, 2**64), st.integers(-(2**64), -1))
RECIPE = {"prompt": "a cat", "negative_prompt": None, "guidance_scale": 3.5, "num_inference_steps": 4,
          "height": 16, "width": 16}


def _accepted(call) -> bool:
    try:
        call()
    except ValueError as e:
        assert "seed must be between 0 and 4294967295" in str(e), e
        return False
    return True


@given(seed=SEEDS)
def test_every_surface_agrees_on_which_seeds_it_takes(seed):
    valid = 0 <= seed <= 2**32 - 1
    assert _accepted(lambda: check_seed(seed)) is valid
    assert _accepted(lambda: check_recipe({**RECIPE, "seed": seed})) is valid
    assert _accepted(lambda: plan_jobs([Condition("c", "a cat")], ["tiny"], [seed], guidance_scale=3.5,
                                       num_inference_steps=4, height=16, width=16)) is valid


@given(a=st.integers(0, MAX_SEED), b=st.integers(0, MAX_SEED))
def test_two_accepted_seeds_draw_different_noise(a, b):
    noise = [torch.randn(16, generator=torch.Generator("cpu").manual_seed(s)) for s in (a, b)]
    assert torch.equal(*noise) is (a == b)


def test_the_aliasing_seed_is_refused_before_any_image(tiny_pipe, tmp_path):
    from helpers.studio.view import Studio

    calls = []
    tiny_pipe.transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match="seed must be between 0 and 4294967295.*32 bits"):
        helpers.generate(tiny_pipe, "a cat", seed=5 + 2**32, num_inference_steps=1)
    studio = Studio(tiny_pipe, save_dir=tmp_path / "saved")
    try:
        studio.seed.value = 5 + 2**32
        studio.generate_button.click()
        studio.wait_idle(30)
        assert studio.current is None and "seed must be between 0 and 4294967295" in studio.message.value
    finally:
        studio.cancel()
        studio.wait_idle(30)
    assert calls == []  # no denoising step ran
    largest = helpers.generate(tiny_pipe, "a cat", seed=MAX_SEED, num_inference_steps=1)
    assert largest.recipe["seed"] == MAX_SEED
