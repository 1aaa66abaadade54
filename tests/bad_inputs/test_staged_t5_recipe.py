"""Class 13 (staged T5): embeddings whose `staged_t5` was tampered with are refused before generating,
so no recipe (and no PNG) says `t5="bogus, staged"`; encode_prompt refuses such a mark too."""

import dataclasses

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
from helpers.generation.prompt_embeddings import encode_prompt

BOGUS = st.one_of(st.text(max_size=12).filter(lambda t: t not in ("nf4", "full")), st.integers(), st.just(True))


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    pipe = helpers.load_pipeline("tiny")
    yield pipe, encode_prompt(pipe, "a cat")
    helpers.release_current_pipeline()


@given(bogus=BOGUS)
def test_tampered_staged_t5_is_refused_before_any_recipe(loaded, bogus):
    pipe, embeddings = loaded
    tampered = dataclasses.replace(embeddings, staged_t5=bogus)
    with pytest.raises(ValueError, match="embeddings.staged_t5 must be None or one of 'nf4', 'full'"):
        helpers.generate(pipe, embeddings=tampered, num_inference_steps=1, height=64, width=64, seed=1)
    with pytest.raises(ValueError, match="staged_t5 must be None or one of 'nf4', 'full'"):
        encode_prompt(pipe, "a cat", staged_t5=bogus)


@given(bogus=BOGUS)
def test_a_tampered_staged_plan_is_refused_before_any_recipe(loaded, bogus):
    pipe, _ = loaded
    plan = pipe.load_info.plan
    was = plan.t5, plan.staged_t5
    plan.t5, plan.staged_t5 = "staged", bogus
    try:
        with pytest.raises(ValueError, match="pipe.load_info.plan.staged_t5 must be None or one of 'nf4', 'full'"):
            helpers.generate(pipe, "a cat", num_inference_steps=1, height=64, width=64, seed=1)
    finally:
        plan.t5, plan.staged_t5 = was
    # the control: untampered, the same call generates
    assert helpers.generate(pipe, "a cat", num_inference_steps=1, height=64, width=64, seed=1).recipe["t5"] == was[0]


def test_a_genuine_mark_still_reaches_the_recipe(loaded):
    # The control: the mark is what the recipe's t5 is written from, so a bogus one would have been.
    pipe, embeddings = loaded
    marked = dataclasses.replace(embeddings, staged_t5="nf4")
    result = helpers.generate(pipe, embeddings=marked, num_inference_steps=1, height=64, width=64, seed=1)
    assert result.recipe["t5"] == "nf4, staged" and result.image.size == (64, 64)
