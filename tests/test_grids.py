"""image_grid draws labelled grids of the right size; xy_grid sweeps generate() arguments, encoding
each prompt once, with images byte-identical to generating each one from its text."""

import numpy as np
import pytest
from PIL import Image

from helpers import PromptCache, encode_prompt, generate
from helpers.grids import AXES, grid_layout, image_grid, xy_grid


def _tiles(n, size=(64, 64)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def _has_ink(image, box):
    """True when the region holds dark pixels (text), not only the white background."""
    return np.asarray(image.crop(box).convert("L")).min() < 128


def test_tiles_are_pasted_unchanged_where_the_layout_says():
    images = _tiles(6)
    grid = image_grid(images, 2, 3, row_labels=["seed 0", "seed 1"], col_labels=["1", "3.5", "7.5"],
                      title="tiny · 4 steps", row_title="seed", col_title="guidance_scale")
    layout = grid_layout((64, 64), 2, 3, row_labels=True, col_labels=True, title=True, row_title=True, col_title=True)
    assert grid.size == layout.size
    for i, image in enumerate(images):
        assert grid.crop(layout.tile_box(*divmod(i, 3))).tobytes() == image.tobytes()


def test_labels_are_drawn_in_their_bands():
    grid = image_grid(_tiles(4), 2, 2, row_labels=["a", "b"], col_labels=["x", "y"], title="T",
                      row_title="rows", col_title="cols")
    layout = grid_layout((64, 64), 2, 2, row_labels=True, col_labels=True, title=True, row_title=True, col_title=True)
    x0, y0, _, _ = layout.tile_box(0, 0)
    assert _has_ink(grid, (0, 0, grid.width, y0))  # title, column title and labels above the tiles
    assert _has_ink(grid, (0, y0, x0, grid.height))  # row title and labels left of the tiles
    bare = image_grid(_tiles(4), 2, 2)
    assert not _has_ink(bare, (0, 0, bare.width, layout.gap))
    assert bare.size == (2 * 64 + 3 * layout.gap, 2 * 64 + 3 * layout.gap)  # no room kept for absent labels


def test_text_scales_with_the_tiles():
    small = grid_layout((64, 64), 1, 1, col_labels=True)
    large = grid_layout((1024, 1024), 1, 1, col_labels=True)
    assert small.font_px >= 12  # readable at stand-in size
    assert large.font_px >= 40  # readable when a 1024 px grid is shown scaled down
    assert large.top > small.top


def test_smaller_images_are_centred_in_larger_tiles():
    images = [Image.new("RGB", (64, 64), "red"), Image.new("RGB", (32, 32), "blue")]
    grid = image_grid(images, 1, 2)
    layout = grid_layout((64, 64), 1, 2)
    x0, y0, _, _ = layout.tile_box(0, 1)
    assert grid.getpixel((x0 + 32, y0 + 32)) == (0, 0, 255)
    assert grid.getpixel((x0 + 2, y0 + 2)) == (255, 255, 255)


def test_image_grid_rejects_mismatches():
    with pytest.raises(ValueError, match="5 images do not fill a 2 x 3 grid"):
        image_grid(_tiles(5), 2, 3)
    with pytest.raises(ValueError, match="col_labels has 2 entries but the grid has 3 columns"):
        image_grid(_tiles(6), 2, 3, col_labels=["a", "b"])
    with pytest.raises(ValueError, match="rows must be"):
        image_grid([], 0, 3)
    with pytest.raises(TypeError, match=r"images\[1\]"):
        image_grid([_tiles(1)[0], "x"], 1, 2)


def test_long_labels_wrap_instead_of_spilling():
    long = "a capybara wearing a suit holding a sign that reads hello world " * 3
    grid = image_grid(_tiles(2), 1, 2, col_labels=[long, "b"], title=long)
    assert grid.size == grid_layout((64, 64), 1, 2, col_labels=True, title=True).size


def test_xy_grid_drives_guidance_and_seed_and_encodes_the_prompt_once(tiny_pipe):
    cache = PromptCache(tiny_pipe)
    base = dict(prompt="a photo of a cat", negative_prompt="blurry", num_inference_steps=2)
    grid, results = xy_grid(tiny_pipe, x=("guidance_scale", [1.0, 3.5, 7.5]), y=("seed", [0, 1]),
                            base=base, embeddings_cache=cache)
    assert cache.misses == 1 and cache.hits == 5
    assert [[r.recipe["guidance_scale"] for r in row] for row in results] == [[1.0, 3.5, 7.5]] * 2
    assert [[r.recipe["seed"] for r in row] for row in results] == [[0] * 3, [1] * 3]
    layout = grid_layout((64, 64), 2, 3, row_labels=True, col_labels=True, title=True, row_title=True, col_title=True)
    assert grid.size == layout.size
    # Reused embeddings give the very image that encoding the text inside the pipeline gives.
    fresh = generate(tiny_pipe, "a photo of a cat", negative_prompt="blurry", guidance_scale=7.5, seed=1,
                     num_inference_steps=2)
    assert results[1][2].image.tobytes() == fresh.image.tobytes()
    assert grid.crop(layout.tile_box(1, 2)).tobytes() == fresh.image.tobytes()
    # ... and guidance really changed the image (CFG on at 3.5 vs 7.5).
    assert results[0][1].image.tobytes() != results[0][2].image.tobytes()


def test_reused_embeddings_equal_re_encoding(tiny_pipe):
    embeddings = encode_prompt(tiny_pipe, "a bowl of fruit", "watermark")
    settings = dict(guidance_scale=4.5, seed=3, num_inference_steps=2)
    reused = generate(tiny_pipe, embeddings=embeddings, **settings)
    again = generate(tiny_pipe, embeddings=embeddings, **settings)
    from_text = generate(tiny_pipe, "a bowl of fruit", negative_prompt="watermark", **settings)
    assert reused.image.tobytes() == again.image.tobytes() == from_text.image.tobytes()


def test_xy_grid_encodes_each_distinct_prompt_pair_once(tiny_pipe):
    cache = PromptCache(tiny_pipe)
    _, results = xy_grid(tiny_pipe, x=("negative_prompt", [None, "blurry"]), y=("prompt", ["a cat", "a horse"]),
                         base=dict(num_inference_steps=1, guidance_scale=3.5), embeddings_cache=cache)
    assert cache.misses == 4
    assert results[1][1].recipe["prompt"] == "a horse" and results[1][1].recipe["negative_prompt"] == "blurry"
    assert results[1][0].image.tobytes() != results[1][1].image.tobytes()  # the negative prompt matters at 3.5


def test_xy_grid_can_vary_steps(tiny_pipe):
    _, results = xy_grid(tiny_pipe, x=("num_inference_steps", [1, 2]), y=("seed", [0]), base=dict(prompt="a cat"))
    assert [r.recipe["num_inference_steps"] for r in results[0]] == [1, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=("guidance", [1.0]), y=("seed", [0])), "Did you mean 'guidance_scale'"),
        (dict(x=("seed", [0]), y=("seed", [1])), "both vary 'seed'"),
        (dict(x=("callback", [None]), y=("seed", [0])), "Use one of"),
        (dict(x=("guidance_scale", []), y=("seed", [0])), "has no values"),
        (dict(x=("guidance_scale", [3.5, -1.0]), y=("seed", [0])), "guidance_scale must be >= 0"),
        (dict(x=("guidance_scale", [3.5]), y=("height", [64, 60])), "height=60"),
    ],
)
def test_bad_axes_fail_before_any_work(tiny_pipe, kwargs, message):
    cache = PromptCache(tiny_pipe)
    with pytest.raises(ValueError, match=message):
        xy_grid(tiny_pipe, base=dict(prompt="a cat", num_inference_steps=1), embeddings_cache=cache, **kwargs)
    assert cache.misses == 0  # nothing was encoded, so nothing was generated


def test_xy_grid_argument_errors(tiny_pipe):
    with pytest.raises(ValueError, match="needs a prompt"):
        xy_grid(tiny_pipe, x=("seed", [0]), y=("guidance_scale", [1.0]), base={})
    with pytest.raises(ValueError, match="base: 'steps'"):
        xy_grid(tiny_pipe, x=("seed", [0]), y=("guidance_scale", [1.0]), base=dict(prompt="a", steps=4))
    with pytest.raises(TypeError, match="pair"):
        xy_grid(tiny_pipe, x="guidance_scale", y=("seed", [0]), base=dict(prompt="a"))
    assert "guidance_scale" in AXES and "callback" not in AXES
