"""Bad generation inputs refused before any denoising: embeddings, callbacks, recipes, huge numbers."""

import pytest

import helpers
from helpers.generation.text_to_image import RECIPE_KEYS, recipe_arguments


@pytest.mark.parametrize("recipe,error,message", [
    (None, TypeError, "recipe must be a dict"),
    ([["prompt", "a cat"]], TypeError, "recipe must be a dict"),
    ({"prompt": "a cat"}, ValueError, "recipe lacks negative_prompt, guidance_scale"),
])
def test_recipe_arguments_says_what_is_wrong(recipe, error, message):
    with pytest.raises(error, match=message):
        recipe_arguments(recipe)


def test_recipe_arguments_of_a_real_recipe(tiny_pipe):
    result = helpers.generate(tiny_pipe, "a cat", num_inference_steps=1)
    assert list(recipe_arguments(result.recipe)) == list(RECIPE_KEYS)


@pytest.mark.parametrize("value", [10**400, -10**400], ids=["10**400", "-10**400"])
def test_a_huge_guidance_is_refused_clearly(tiny_pipe, value):
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        helpers.generate(tiny_pipe, "a cat", guidance_scale=value)
