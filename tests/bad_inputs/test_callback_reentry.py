"""Class 4: generate, encode_prompt, release_pipeline or release_current_pipeline called from
inside generate's step callback on the same pipeline is one clear error (the lock is re-entrant on
purpose, for xy_grid; a step callback is not a place to start or release anything)."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
from helpers.generation.prompt_embeddings import encode_prompt
from helpers.loading import load
from helpers.studies.grids import xy_grid

STEPS = 3
REENTRIES = {
    "generate": lambda pipe: helpers.generate(pipe, "a dog", seed=2, num_inference_steps=1),
    "encode_prompt": lambda pipe: encode_prompt(pipe, "a dog"),
    "release_pipeline": lambda pipe: helpers.release_pipeline(pipe),
    "release_current_pipeline": lambda pipe: helpers.release_current_pipeline(),
}


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    pipe = helpers.load_pipeline("tiny")
    yield pipe
    helpers.release_current_pipeline()


@given(name=st.sampled_from(sorted(REENTRIES)), at_step=st.integers(0, STEPS - 1))
def test_reentry_from_a_step_callback_is_one_clear_error(loaded, name, at_step):
    def callback(step, total, latents):
        if step == at_step:
            REENTRIES[name](loaded)

    who = {"generate": "a generate\\(\\) call", "encode_prompt": "an encode_prompt\\(\\) call"}.get(name, "release_pipeline")
    with pytest.raises(RuntimeError, match=rf"{who}.*called from inside a step callback.*Return from the callback"):
        helpers.generate(loaded, "a cat", seed=1, num_inference_steps=STEPS, callback=callback)
    # Nothing was released or left half-done: the pipeline makes its next image as before.
    assert load._current_pipeline is loaded and loaded.transformer is not None
    assert helpers.generate(loaded, "a cat", seed=1, num_inference_steps=1).image.size == (64, 64)


def test_a_callback_may_still_use_another_pipeline_and_xy_grid_still_nests(loaded, tiny_dir):
    other = helpers.load_pipeline("tiny", keep_previous=True)
    made = []
    helpers.generate(loaded, "a cat", seed=1, num_inference_steps=2,
                     callback=lambda step, total, latents: made.append(
                         helpers.generate(other, "a dog", seed=step, num_inference_steps=1)))
    assert len(made) == 2
    grid, results = xy_grid(loaded, x=("seed", [1, 2]), y=("guidance_scale", [3.5]),
                            base={"prompt": "a cat", "num_inference_steps": 1})
    assert len(results[0]) == 2  # xy_grid holds the lock and calls generate: re-entry there is fine
