"""Class 10: a hostile PNG (a decompression-bomb header, a huge compressed text chunk, a recipe
with a 5,000-digit number) or hostile A1111 text is one clear ValueError, never PIL's or the
standard library's own words."""

import struct
import zlib

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from helpers.generation.png_metadata import RECIPE_KEY, parse_a1111_parameters, read_png_recipe


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@given(width=st.integers(20_000, 2**31 - 1), height=st.integers(20_000, 2**31 - 1))
def test_a_decompression_bomb_header_is_one_clear_error(tmp_path_factory, width, height):
    path = tmp_path_factory.mktemp("png") / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b""))
    if width * height <= 2 * Image.MAX_IMAGE_PIXELS:
        return  # PIL only warns below twice its limit, and reads no pixels for the recipe
    with pytest.raises(ValueError, match=r"bomb\.png claims an image too large to open safely"):
        read_png_recipe(path)


@given(megabytes=st.integers(2, 6))
def test_a_huge_compressed_recipe_chunk_is_one_clear_error(tmp_path_factory, megabytes):
    path = tmp_path_factory.mktemp("png") / "huge.png"
    info = PngInfo()
    info.add_text(RECIPE_KEY, " " * (megabytes * 1_000_000), zip=True)  # compresses to a few kB
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with pytest.raises(ValueError, match=r"huge\.png is a damaged or truncated image, or too large to read"):
        read_png_recipe(path)


@given(digits=st.integers(4_400, 6_000))
def test_a_recipe_with_a_5000_digit_number_is_one_clear_error(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("png") / "digits.png"
    info = PngInfo()
    info.add_text(RECIPE_KEY, '{"seed": ' + "9" * digits + "}")
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with pytest.raises(ValueError, match=r"digits\.png: its 'sd35_recipe' text is not valid JSON"):
        read_png_recipe(path)


@given(escape=st.sampled_from(["\\q", "\\x", "\\u12", "\\/x\\q"]), digits=st.integers(1, 6_000))
def test_hostile_a1111_values_read_back_as_text(escape, digits):
    parsed = parse_a1111_parameters(f'a cat\nSteps: 4, Model: "odd{escape}name", Seed: {"9" * digits}')
    assert parsed["Steps"] == "4" and parsed["Seed"] == "9" * digits
    assert parsed["Model"] == f"odd{escape}name"  # not valid JSON: kept as the text it is
