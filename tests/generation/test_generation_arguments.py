"""Bad generation inputs refused before any denoising: embeddings, callbacks, recipes, huge numbers."""

import dataclasses

import pytest
import torch

import helpers
from helpers.generation.prompt_embeddings import encode_prompt
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


@pytest.fixture
def embeddings(tiny_pipe):
    return encode_prompt(tiny_pipe, "a cat", "a dog")


def _counting_steps(pipe, monkeypatch):
    """Count the transformer's forward passes: a refusal must come before the first one."""
    calls = []
    original = pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize("field", ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                   "negative_pooled_prompt_embeds"])
def test_nan_embeddings_are_refused_before_denoising(tiny_pipe, embeddings, field, monkeypatch):
    steps = _counting_steps(tiny_pipe, monkeypatch)
    bad = dataclasses.replace(embeddings, **{field: getattr(embeddings, field) * float("nan")})
    with pytest.raises(ValueError, match=f"embeddings.{field} holds non-finite values"):
        helpers.generate(tiny_pipe, embeddings=bad, num_inference_steps=2)
    assert steps == []


def _shapes(embeddings, width, pooled_width):
    return {
        "wrong width": dict(prompt_embeds=torch.zeros(1, 333, width + 1)),
        "batch of 2": dict(prompt_embeds=embeddings.prompt_embeds.repeat(2, 1, 1),
                           negative_prompt_embeds=embeddings.negative_prompt_embeds.repeat(2, 1, 1)),
        "mismatched lengths": dict(negative_prompt_embeds=embeddings.negative_prompt_embeds[:, :100]),
        "2-D text": dict(prompt_embeds=embeddings.prompt_embeds[0]),
        "pooled width": dict(pooled_prompt_embeds=torch.zeros(1, pooled_width + 3)),
        "pooled batch": dict(negative_pooled_prompt_embeds=torch.zeros(2, pooled_width)),
    }


@pytest.mark.parametrize("case,message", [
    ("wrong width", r"embeddings.prompt_embeds has shape \(1, 333, 65\); this pipeline needs \(1, tokens, 64\)"),
    ("batch of 2", r"embeddings.prompt_embeds has shape \(2, 333, 64\); this pipeline needs \(1, tokens, 64\)"),
    ("mismatched lengths", r"negative_prompt_embeds has shape \(1, 100, 64\) but prompt_embeds \(1, 333, 64\)"),
    ("2-D text", r"embeddings.prompt_embeds has shape \(333, 64\)"),
    ("pooled width", r"embeddings.pooled_prompt_embeds has shape \(1, 67\); this pipeline needs \(1, 64\)"),
    ("pooled batch", r"embeddings.negative_pooled_prompt_embeds has shape \(2, 64\)"),
])
def test_hand_built_embeddings_of_the_wrong_shape_are_refused(tiny_pipe, embeddings, case, message, monkeypatch):
    config = tiny_pipe.transformer.config
    change = _shapes(embeddings, config.joint_attention_dim, config.pooled_projection_dim)[case]
    steps = _counting_steps(tiny_pipe, monkeypatch)
    with pytest.raises(ValueError, match=message):
        helpers.generate(tiny_pipe, embeddings=dataclasses.replace(embeddings, **change), num_inference_steps=2)
    assert steps == []


@pytest.mark.parametrize("value,error,message", [
    (None, TypeError, "embeddings.prompt_embeds must be a tensor .*, not NoneType"),
    ("a cat", TypeError, "embeddings.prompt_embeds must be a tensor .*, not str"),
    ("float64", ValueError, "embeddings.prompt_embeds is torch.float64; this pipeline computes in torch.float32"),
    ("int", ValueError, "embeddings.prompt_embeds is torch.int64"),
])
def test_hand_built_embeddings_of_the_wrong_kind_are_refused(tiny_pipe, embeddings, value, error, message):
    if value == "float64":
        value = embeddings.prompt_embeds.double()
    elif value == "int":
        value = embeddings.prompt_embeds.long()
    with pytest.raises(error, match=message):
        helpers.generate(tiny_pipe, embeddings=dataclasses.replace(embeddings, prompt_embeds=value))


def test_good_embeddings_still_generate(tiny_pipe, embeddings):
    assert helpers.generate(tiny_pipe, embeddings=embeddings, num_inference_steps=1).image.size == (64, 64)


@pytest.mark.parametrize("callback", [lambda: None, lambda step: None, lambda a, b, c, d: None],
                         ids=["no arguments", "one", "four"])
def test_a_callback_that_cannot_take_step_total_latents_is_refused_before_denoising(tiny_pipe, callback,
                                                                                  monkeypatch):
    steps = _counting_steps(tiny_pipe, monkeypatch)
    with pytest.raises(TypeError, match=r"callback must take \(step, total, latents\)"):
        helpers.generate(tiny_pipe, "a cat", num_inference_steps=2, callback=callback)
    assert steps == []


def test_callbacks_that_fit_are_called(tiny_pipe):
    seen = []

    def on_step(step, total, latents, extra=None):
        seen.append((step, total))

    helpers.generate(tiny_pipe, "a cat", num_inference_steps=2, callback=on_step)
    helpers.generate(tiny_pipe, "a cat", num_inference_steps=2, callback=lambda *args: seen.append(len(args)))
    assert seen == [(0, 2), (1, 2), 3, 3]
