"""Encoding once and reusing the embeddings gives the same image as re-encoding."""

import pytest

import helpers


def test_reused_embeddings_equal_re_encoding(tiny_pipe):
    embeddings = helpers.encode_prompt(tiny_pipe, "Children's birthday party", "birthday cake")
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
    assert cache.get("a cat") is a
    cache.get("a cat", "blurry")
    assert (cache.hits, cache.misses) == (1, 2)
    cache.get("a dog")  # third pair: the least recently used ("a cat") is dropped
    cache.get("a cat")
    assert cache.misses == 4


def test_prompt_and_embeddings_must_agree(tiny_pipe):
    embeddings = helpers.encode_prompt(tiny_pipe, "a cat")
    with pytest.raises(ValueError, match="disagree"):
        helpers.generate(tiny_pipe, "a dog", embeddings=embeddings)
