"""generate: byte-identical to raw diffusers, deterministic, validated up front, with a full recipe."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline

import helpers
from helpers.errors import GenerationCancelled, NonFiniteImageError
from helpers.generation.text_to_image import recipe_arguments


def raw_diffusers_image(folder, seed, **kwargs):
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, dtype=torch.float32)
    return pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


def test_same_arguments_give_the_raw_diffusers_image_byte_for_byte(tiny_pipe, tiny_dir):
    args = dict(prompt="Children's birthday party", negative_prompt="birthday cake", guidance_scale=5.0,
                num_inference_steps=6, height=80, width=64)
    ours = helpers.generate(tiny_pipe, seed=1234, **args)
    theirs = raw_diffusers_image(tiny_dir, 1234, **args)
    assert ours.image.size == theirs.size == (64, 80)
    assert ours.image.tobytes() == theirs.tobytes()


def test_defaults_come_from_the_preset_and_equal_raw_diffusers(tiny_pipe, tiny_dir):
    ours = helpers.generate(tiny_pipe, "a cat")
    rec = tiny_pipe.load_info.recommended
    assert (ours.recipe["guidance_scale"], ours.recipe["num_inference_steps"]) == (rec.guidance_scale, rec.num_inference_steps)
    theirs = raw_diffusers_image(tiny_dir, 0, prompt="a cat", guidance_scale=rec.guidance_scale,
                                 num_inference_steps=rec.num_inference_steps, height=64, width=64)
    assert ours.image.tobytes() == theirs.tobytes()


def test_deterministic_and_seed_sensitive(tiny_pipe):
    a = helpers.generate(tiny_pipe, "a cat", seed=7).image.tobytes()
    b = helpers.generate(tiny_pipe, "a cat", seed=7).image.tobytes()
    c = helpers.generate(tiny_pipe, "a cat", seed=8).image.tobytes()
    assert a == b and a != c


def test_recipe_reproduces_the_image_and_is_plain_json(tiny_pipe):
    first = helpers.generate(tiny_pipe, "a lighthouse", negative_prompt="fog", seed=None, guidance_scale=2.5)
    recipe = json.loads(json.dumps(first.recipe))  # plain data only
    assert recipe["model"] == "tiny" and recipe["stand_in"] is True
    assert recipe["quantization"] is None and recipe["dtype"] == "float32"
    assert recipe["versions"]["diffusers"] == "0.42.1"
    assert isinstance(recipe["seed"], int)  # a random seed is drawn and recorded
    again = helpers.generate(tiny_pipe, **recipe_arguments(recipe))
    assert again.image.tobytes() == first.image.tobytes()


def test_timing_and_memory_are_measured(tiny_pipe):
    result = helpers.generate(tiny_pipe, "a cat")
    assert result.seconds > 0
    assert result.memory_kind == "rss" and result.peak_memory_bytes > 50 * 1024**2
    assert "tiny" in repr(result) and "seed=0" in repr(result)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(guidance_scale=-1), ValueError, "guidance_scale must be >= 0"),
        (dict(guidance_scale=math.nan), ValueError, "finite"),
        (dict(num_inference_steps=0), ValueError, "at least 1"),
        (dict(height=100), ValueError, "multiple of 16"),
        (dict(width=64 * 1000), ValueError, "larger than this model supports"),
        (dict(seed=-5), ValueError, "seed"),
        (dict(prompt=""), ValueError, "prompt is empty"),
        (dict(negative_prompt=["x"]), TypeError, "negative_prompt"),
        (dict(callback="not a function"), TypeError, "callback"),
        (dict(guidance_scale=1e6), ValueError, "above 30"),  # fp16 used to return a black image
        (dict(prompt="a \udfff cat"), ValueError, "lone surrogate"),
        (dict(negative_prompt="dog \ud800"), ValueError, "lone surrogate"),
        (dict(embeddings=object(), prompt=None), TypeError, "embeddings must be the PromptEmbeddings"),
    ],
)
def test_bad_input_fails_before_any_denoising(tiny_pipe, kwargs, error, message):
    steps = []
    kwargs = {"prompt": "a cat", **kwargs}
    if "callback" not in kwargs:
        kwargs["callback"] = lambda step, total, latents: steps.append(step)
    with pytest.raises(error, match=message):
        helpers.generate(tiny_pipe, **kwargs)
    assert steps == []


def test_callback_sees_every_step_and_can_cancel(tiny_pipe):
    seen = []
    helpers.generate(tiny_pipe, "a cat", num_inference_steps=5,
                     callback=lambda step, total, latents: seen.append((step, total, tuple(latents.shape))))
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4]
    assert seen[0][1] == 5 and seen[0][2] == (1, 16, 8, 8)

    calls = []

    def cancel_at_two(step, total, latents):
        calls.append(step)
        return step == 1

    with pytest.raises(GenerationCancelled):
        helpers.generate(tiny_pipe, "a cat", num_inference_steps=20, callback=cancel_at_two)
    assert calls == [0, 1]  # stopped within one step of the request


def test_guidance_at_most_one_ignores_the_negative_prompt(tiny_pipe):
    # CFG is off for guidance <= 1: the negative branch is never computed.
    with_neg = helpers.generate(tiny_pipe, "a party", negative_prompt="cake", guidance_scale=1.0)
    without = helpers.generate(tiny_pipe, "a party", guidance_scale=1.0)
    assert with_neg.image.tobytes() == without.image.tobytes()
    cfg_on = helpers.generate(tiny_pipe, "a party", negative_prompt="cake", guidance_scale=4.0)
    cfg_on_plain = helpers.generate(tiny_pipe, "a party", guidance_scale=4.0)
    assert cfg_on.image.tobytes() != cfg_on_plain.image.tobytes()


def test_non_finite_pixels_raise_a_clear_error_not_a_black_image(tiny_pipe):
    # What an fp16 overflow does, made on purpose: the latents turn NaN during denoising.
    def poison(step, total, latents):
        latents.fill_(float("nan"))

    with pytest.raises(NonFiniteImageError, match="the transformer .* lower guidance_scale.*bfloat16") as caught:
        helpers.generate(tiny_pipe, "a cat", num_inference_steps=2, callback=poison)
    assert caught.value.component == "transformer"
    assert issubclass(helpers.errors.NonFiniteImageError, RuntimeError)


# An overflow made on purpose in one component's real weights (an inf where a float16 value would
# overflow): the error names that component and its fix, whichever runs after it.
POISONED = [
    ("vae", lambda p: p.vae.decoder.conv_in.bias, r"the VAE .*decoder overflowed.*upcast_vae"),
    ("transformer", lambda p: p.transformer.proj_out.bias, r"the transformer .*lower guidance_scale"),
    ("text_encoder_3", lambda p: p.text_encoder_3.encoder.final_layer_norm.weight, r"T5-XXL \(text_encoder_3\).*drop_t5"),
    ("text_encoder_2", lambda p: p.text_encoder_2.text_model.final_layer_norm.bias, r"CLIP-G \(text_encoder_2\).*float\(\)"),
    ("text_encoder", lambda p: p.text_encoder.text_model.encoder.layers[0].mlp.fc2.bias, r"CLIP-L \(text_encoder\)"),
]


@pytest.mark.parametrize("component,parameter,message", POISONED, ids=[c for c, _, _ in POISONED])
def test_non_finite_pixels_name_the_component_that_overflowed(tiny_dir, component, parameter, message):
    pipe = helpers.load_pipeline("tiny", dtype=torch.bfloat16)
    assert np.isfinite(np.asarray(helpers.generate(pipe, "a cat", num_inference_steps=2).image)).all()
    with torch.no_grad():
        parameter(pipe)[0] = float("inf")
    with pytest.raises(NonFiniteImageError, match=message) as caught:
        helpers.generate(pipe, "a cat", num_inference_steps=2)
    assert caught.value.component == component


@pytest.mark.parametrize("pipe,given", [("tiny", "str 'tiny'"), (None, "NoneType"), (42, "int")])
def test_something_else_than_a_pipeline_says_what_was_expected_and_given(pipe, given):
    with pytest.raises(TypeError, match=f"needs a loaded pipeline as its first argument, not {given}"):
        helpers.generate(pipe, "a cat")


def test_a_released_pipeline_still_says_so(tiny_pipe):
    helpers.release_pipeline(tiny_pipe)
    with pytest.raises(ValueError, match="has been released"):
        helpers.generate(tiny_pipe, "a cat")
