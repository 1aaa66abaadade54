"""Class 13 (sizes): a size that is no multiple of 16, or larger than any SD3.5 position table, is
refused by one message naming `size` (and the 16-pixel grid), before any planning (memory_model.image_size, the one place
every size passes through)."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
from helpers.loading.memory_model import image_size

SIDES = st.integers(16, 6144)
OFF_GRID = st.integers(1, 6144).filter(lambda v: v % 16)
TOO_BIG = st.integers(6144 // 16 + 1, 10**8).map(lambda n: 16 * n)  # on the grid, past 6144


@given(bad=OFF_GRID, other=SIDES.map(lambda v: v // 16 * 16), square=st.booleans())
def test_a_size_off_the_16_pixel_grid_is_refused(bad, other, square):
    size = bad if square else (other, bad)
    with pytest.raises(ValueError, match=f"size must be a multiple of 16 pixels .*, not .*{bad}"):
        helpers.plan_loading("sd35-large", size=size)


@given(big=TOO_BIG, square=st.booleans())
def test_a_huge_size_is_refused_by_name_not_by_host_memory(big, square):
    size = big if square else (1024, big)
    with pytest.raises(ValueError, match=r"size must be a multiple of 16 .* of at most 6144 a side .*position table"):
        helpers.plan_loading("sd35-large", size=size)


@given(height=SIDES, width=SIDES)
def test_every_size_on_the_grid_is_taken(height, width):
    height, width = height // 16 * 16, width // 16 * 16
    assert image_size((height, width)) == (height, width) and image_size(height) == (height, height)


def test_the_examples_from_the_audit():
    with pytest.raises(ValueError, match="^size must be a multiple of 16 .*, not 17"):
        helpers.plan_loading("sd35-large", size=17)
    with pytest.raises(ValueError, match=r"^size must be .* at most 6144 a side .*not 1000000"):
        helpers.plan_loading("sd35-large", size=10**6)
