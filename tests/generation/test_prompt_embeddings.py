"""Encoding once and reusing the embeddings gives the same image as re-encoding."""

import pytest

import helpers
from helpers.generation.prompt_embeddings import encode_prompt


def test_reused_embeddings_equal_re_encoding(tiny_pipe):
    embeddings = encode_prompt(tiny_pipe, "Children's birthday party", "birthday cake")
    for guidance in (1.0, 3.5, 7.5):
        fresh = helpers.generate(tiny_pipe, "Children's birthday party", negative_prompt="birthday cake",
                                 guidance_scale=guidance, seed=3)
        reused = helpers.generate(tiny_pipe, embeddings=embeddings, guidance_scale=guidance, seed=3)
        assert reused.image.tobytes() == fresh.image.tobytes()
        assert reused.recipe["prompt"] == fresh.recipe["prompt"]
        assert reused.recipe["negative_prompt"] == "birthday cake"


def test_cache_encodes_each_pair_once(tiny_pipe):
    cache = helpers.PromptCache(tiny_pipe, size=2)
    a = cache.get("a cat")
    again = cache.get("a cat")
    assert all(again.as_pipeline_kwargs()[k].equal(v) for k, v in a.as_pipeline_kwargs().items())
    cache.get("a cat", "blurry")
    assert (cache.hits, cache.misses) == (1, 2)
    cache.get("a dog")  # third pair: the least recently used ("a cat") is dropped
    cache.get("a cat")
    assert cache.misses == 4


def test_editing_a_cache_hit_in_place_cannot_change_later_hits(tiny_pipe):
    cache = helpers.PromptCache(tiny_pipe)
    first = cache.get("a cat", "blurry")
    kept = {k: v.clone() for k, v in first.as_pipeline_kwargs().items()}
    for tensor in first.as_pipeline_kwargs().values():
        tensor.mul_(0).add_(7)  # a user's experiment on the tensors it got
    hit = cache.get("a cat", "blurry")
    hit.prompt_embeds.zero_()
    later = cache.get("a cat", "blurry")
    assert cache.misses == 1 and all(later.as_pipeline_kwargs()[k].equal(v) for k, v in kept.items())


def test_prompt_and_embeddings_must_agree(tiny_pipe):
    embeddings = encode_prompt(tiny_pipe, "a cat")
    with pytest.raises(ValueError, match="disagree"):
        helpers.generate(tiny_pipe, "a dog", embeddings=embeddings)


def test_a_negative_prompt_beside_embeddings_is_honoured_or_refused_never_dropped(tiny_pipe):
    plain = encode_prompt(tiny_pipe, "a cat")
    with pytest.raises(ValueError, match="negative_prompt='dog' disagrees with the embeddings"):
        helpers.generate(tiny_pipe, negative_prompt="dog", embeddings=plain)
    with_dog = encode_prompt(tiny_pipe, "a cat", "dog")
    result = helpers.generate(tiny_pipe, negative_prompt="dog", embeddings=with_dog, num_inference_steps=2)
    assert result.recipe["negative_prompt"] == "dog"  # the same text as the embeddings: fine


def test_embeddings_and_caches_of_another_pipeline_are_refused(tiny_pipe):
    no_t5 = helpers.load_pipeline("tiny", drop_t5=True, keep_previous=True)
    with pytest.raises(ValueError, match="other text encoders than this pipeline's"):
        helpers.generate(tiny_pipe, embeddings=encode_prompt(no_t5, "a cat"))
    with pytest.raises(ValueError, match="text_encoder_3=none"):
        helpers.generate(tiny_pipe, embeddings=helpers.PromptCache(no_t5).get("a cat"))
    # The same model loaded again has the same text encoders: its embeddings give the same image.
    again = helpers.load_pipeline("tiny", keep_previous=True)
    reused = helpers.generate(tiny_pipe, embeddings=encode_prompt(again, "a cat"), num_inference_steps=2)
    fresh = helpers.generate(tiny_pipe, "a cat", num_inference_steps=2)
    assert reused.image.tobytes() == fresh.image.tobytes()
    helpers.release_pipeline(no_t5)


@pytest.mark.parametrize("call", [
    lambda pipe: encode_prompt(pipe, None),
    lambda pipe: helpers.PromptCache(pipe).get(None),
    lambda pipe: encode_prompt(pipe, "a cat", negative_prompt=3),
])
def test_a_missing_prompt_is_a_clear_type_error(tiny_pipe, call):
    with pytest.raises(TypeError, match="prompt must be a string, not"):
        call(tiny_pipe)


def test_encode_prompt_needs_a_pipeline():
    with pytest.raises(TypeError, match="encode_prompt needs a loaded pipeline.*not str 'tiny'"):
        encode_prompt("tiny", "a cat")


@pytest.mark.parametrize("size", [-1, 0, 2.5, "16"])
def test_cache_size_must_be_a_positive_whole_number(tiny_pipe, size):
    with pytest.raises(ValueError, match="size must be a whole number"):
        helpers.PromptCache(tiny_pipe, size=size)
