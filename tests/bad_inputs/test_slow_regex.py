"""Class 2: reading an A1111 parameters text takes time linear in its length (an unanchored
search took about 50 s on 100 kB and did not finish on 300 kB), and a text longer than a PNG's
text chunk can hold is refused at once."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hangs import finishes_within
from hypothesis import given
from hypothesis import strategies as st

from helpers.generation.png_metadata import MAX_PARAMETERS_CHARS, a1111_parameters, parse_a1111_parameters

# Pieces from which hostile settings lines are repeated: runs of word characters and spaces with
# no colon, unclosed quotes, separators, escapes.
PIECES = st.text(alphabet=st.sampled_from(list('ab 0_:,"\\\t')), min_size=1, max_size=12)


@given(piece=PIECES, prompt_line=st.booleans())
def test_300_kb_of_hostile_text_is_read_quickly(piece, prompt_line):
    body = (piece * (300_000 // len(piece) + 1))[:300_000]
    text = ("a prompt\n" if prompt_line else "") + "Steps: 4, " + body
    parsed = finishes_within(15, parse_a1111_parameters, text)
    assert parsed["Steps"] == "4"


def test_the_known_slow_inputs_are_read_quickly():
    for text in ("Steps: 1, " + "a" * 300_000, "Steps: 1, " + " " * 300_000 + "x", "Steps: 1, " + 'a:"x,' * 60_000):
        assert finishes_within(15, parse_a1111_parameters, text)["Steps"] == "1"


def test_a_text_longer_than_a_png_chunk_is_refused_at_once():
    with pytest.raises(ValueError, match="text is 1,000,001 characters long.*not an A1111 parameters text"):
        finishes_within(5, parse_a1111_parameters, "x" * (MAX_PARAMETERS_CHARS + 1))


@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 100), model=st.text(max_size=30),
       prompt=st.text(min_size=1, max_size=40).filter(str.strip))
def test_what_the_project_writes_still_reads_back(seed, steps, model, prompt):
    recipe = {"prompt": prompt, "negative_prompt": None, "num_inference_steps": steps, "guidance_scale": 3.5,
              "seed": seed, "width": 64, "height": 32, "model": model or None, "scheduler": "FlowMatchEulerDiscreteScheduler"}
    parsed = parse_a1111_parameters(a1111_parameters(recipe))
    assert (parsed["prompt"], parsed["Steps"], parsed["Seed"], parsed["Size"]) == (prompt, str(steps), str(seed), "64x32")
    assert parsed["Model"] == (model or "unknown")
