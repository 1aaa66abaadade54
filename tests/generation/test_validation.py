"""Each bad argument gets one clear message."""

import math

import pytest

from helpers.generation import validation


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf, 30.5, 1e6])
def test_bad_guidance(value):
    with pytest.raises(ValueError, match="guidance_scale"):
        validation.check_guidance(value)


@pytest.mark.parametrize("value", ["3.5", True])
def test_guidance_must_be_a_number(value):
    with pytest.raises(TypeError, match="guidance_scale"):
        validation.check_guidance(value)


def test_good_guidance_passes():
    for value in (0, 0.0, 1, 3.5, 30.0, None):
        validation.check_guidance(value)


@pytest.mark.parametrize("value", [0, -3])
def test_steps_at_least_one(value):
    with pytest.raises(ValueError, match="at least 1"):
        validation.check_steps(value)


def test_steps_must_be_whole():
    with pytest.raises(TypeError, match="whole number"):
        validation.check_steps(2.5)


@pytest.mark.parametrize("height,width,suggestion", [(1000, 1024, "1008"), (1024, 8, "16"), (0, 64, "16")])
def test_size_multiple_of_16_suggests_nearest(height, width, suggestion):
    with pytest.raises(ValueError, match="multiple of 16") as info:
        validation.check_size(height, width)
    assert suggestion in str(info.value)


def test_size_above_model_limit():
    with pytest.raises(ValueError, match="larger than this model supports"):
        validation.check_size(4096, 1024, largest=3072)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**63])
def test_seed_range(seed):
    with pytest.raises(ValueError, match="seed"):
        validation.check_seed(seed)


def test_empty_prompt():
    with pytest.raises(ValueError, match="prompt is empty"):
        validation.check_prompt("   ")
    with pytest.raises(TypeError, match="negative_prompt"):
        validation.check_prompt(3, "negative_prompt", allow_none=True)


@pytest.mark.parametrize("prompt", ["a \udfff cat", "\ud83d", "cat \ud800\ud800"])
def test_lone_surrogates_are_refused_with_their_position(prompt):
    with pytest.raises(ValueError, match="lone surrogate"):
        validation.check_prompt(prompt)
    validation.check_prompt("a \U0001f408 cat")  # a whole emoji is fine
