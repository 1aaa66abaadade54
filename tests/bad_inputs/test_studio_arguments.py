"""Class 13's studio edges: a prompt given positionally is the prompt, ABStudio says which negative
prompt argument it takes and refuses one pipeline twice, and a new save_dir is where Save writes."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.generation.png_metadata import read_png_recipe
from helpers.studio.ab import ABStudio
from helpers.studio.view import Studio


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    import helpers

    loaded = helpers.load_pipeline("tiny")
    yield loaded
    helpers.release_current_pipeline()


@given(prompt=st.text(min_size=1, max_size=40).filter(str.strip))
def test_a_prompt_given_positionally_is_the_prompt(pipe, tmp_path_factory, prompt):
    studio = Studio(pipe, prompt, save_dir=tmp_path_factory.mktemp("s"))
    assert studio.prompt.value == prompt


@given(negative=st.text(max_size=20))
def test_abstudio_names_its_negative_prompt_arguments(pipe, negative):
    with pytest.raises(TypeError, match="negative_prompt_a and negative_prompt_b"):
        ABStudio(pipe, negative_prompt=negative)


def test_abstudio_refuses_one_pipeline_on_both_sides(pipe):
    with pytest.raises(ValueError, match="pipe_b is pipe_a.*leave pipe_b out"):
        ABStudio(pipe, pipe)


def test_a_reassigned_save_dir_is_where_save_writes(pipe, tmp_path):
    studio = Studio(pipe, save_dir=tmp_path / "first")
    try:
        studio.generate_button.click()
        studio.wait_idle(30)
        studio.save_dir = tmp_path / "second"
        path = studio.save()
        assert path.parent == tmp_path / "second" and read_png_recipe(path)[1] is not None
        assert not (tmp_path / "first").exists() and "second" in studio.save_button.tooltip
        with pytest.raises(NotADirectoryError, match="save_dir=.*is a file"):
            studio.save_dir = path
    finally:
        studio.cancel()
        studio.wait_idle(30)


def test_component_footprints_of_a_released_pipeline_is_one_clear_error(tiny_dir):
    import helpers
    from helpers.measuring import component_footprints

    other = helpers.load_pipeline("tiny", keep_previous=True)
    assert component_footprints(other)["transformer"] > 0
    helpers.release_pipeline(other)
    with pytest.raises(ValueError, match="component_footprints: this pipeline was released"):
        component_footprints(other)
