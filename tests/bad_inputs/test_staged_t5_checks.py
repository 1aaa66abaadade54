"""Class 3: encode_with_t5 runs load_pipeline's checks (options, the model's whereabouts, the
prompts) before it releases anything: a refused call leaves the reader's pipeline loaded."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
from helpers.loading import load
from helpers.loading.staged_t5 import encode_with_t5

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
BAD_OPTIONS = st.one_of(
    WORDS.filter(lambda w: w not in ("auto", "bf16", "fp8")).map(lambda w: {"fast": w}),
    WORDS.filter(lambda w: w not in ("auto", "none", "model", "sequential")).map(lambda w: {"offload": w}),
    WORDS.map(lambda w: {"transformer": f"./missing-{w}/transformer"}),
    st.sampled_from([{"keep_previous": "yes"}, {"keep_previous": None}, {"quantize_t5": "no"}, {"dtype": "float17"},
                     {"device": "gpu9"}, {"drop_t5": "sometimes"}]),
)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    pipe = helpers.load_pipeline("tiny")
    yield pipe
    helpers.release_current_pipeline()


def _still_loaded(pipe) -> bool:
    return load._current_pipeline is pipe and pipe.transformer is not None and pipe.text_encoder is not None


@given(options=BAD_OPTIONS)
def test_a_bad_load_option_is_refused_before_the_pipeline_is_released(loaded, options):
    name = next(iter(options))
    with pytest.raises((TypeError, ValueError, FileNotFoundError), match=name):
        encode_with_t5("a cat", "tiny", **options)
    assert _still_loaded(loaded)


@given(prompts=st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=5),
                         st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
                         st.lists(st.one_of(st.none(), st.integers(), st.just("   ")), min_size=1, max_size=3)))
def test_prompts_that_are_not_prompts_are_one_clear_error(loaded, prompts):
    with pytest.raises((TypeError, ValueError), match="prompt"):
        encode_with_t5(prompts, "tiny")
    assert _still_loaded(loaded)


@given(owner=WORDS, name=WORDS)
def test_a_model_not_cached_offline_is_refused_before_the_release(loaded, owner, name):
    with pytest.raises(FileNotFoundError, match=rf"{owner}/{name}.*not in the local Hugging Face cache"):
        encode_with_t5("a cat", f"{owner}/{name}", stand_in=False)
    assert _still_loaded(loaded)
