"""image_grid lays out labelled tiles; xy_grid sweeps generate() arguments, encoding each prompt once."""

import itertools
import time

import numpy as np
import pytest
from PIL import Image

import helpers
from helpers.studies.grids import image_grid, xy_grid

TILE = 32
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def tiles(n=6, size=TILE):
    return [Image.new("RGB", (size, size), COLOURS[i % len(COLOURS)]) for i in range(n)]


def test_unlabelled_grid_is_exactly_the_tiles_in_row_major_order():
    grid = image_grid(tiles(), 2, 3)
    assert grid.size == (3 * TILE, 2 * TILE)
    for i, colour in enumerate(COLOURS):
        r, c = divmod(i, 3)
        assert grid.getpixel((c * TILE + TILE // 2, r * TILE + TILE // 2)) == colour


def test_labels_and_title_add_margins_with_ink_and_keep_the_tiles():
    grid = image_grid(tiles(), 2, 3, row_labels=["seed 0", "seed 1"], col_labels=[1, 3.5, 7.5],
                      title="a title", row_title="seed", col_title="guidance_scale")
    left, top = grid.width - 3 * TILE, grid.height - 2 * TILE
    assert left > 0 and top > 0
    header = grid.crop((left, 0, grid.width, top))
    side = grid.crop((0, top, left, grid.height))
    for margin in (header, side):  # something was drawn there, in dark ink
        assert min(min(px) for px in margin.getdata()) < 100
    assert grid.getpixel((left + TILE // 2, top + TILE // 2)) == COLOURS[0]
    assert grid.getpixel((grid.width - 1, grid.height - 1)) == COLOURS[5]


def test_long_labels_are_shortened_not_allowed_to_widen_the_grid_past_two_tiles():
    grid = image_grid(tiles(2), 2, 1, row_labels=["x" * 200, "y"], col_labels=["z" * 200])
    assert grid.width <= 3 * TILE


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=tiles(5), rows=2, cols=3), "2 x 3 = 6 images, got 5"),
    (dict(images=tiles(6), rows=2, cols=3, row_labels=["a"]), "row_labels has 1 entries for 2 rows"),
    (dict(images=tiles(6), rows=2, cols=3, col_labels=["a", "b"]), "col_labels has 2 entries for 3 cols"),
    (dict(images=tiles(5) + tiles(1, size=TILE * 2), rows=2, cols=3), "one size"),
    (dict(images=[], rows=0, cols=3), "rows x cols"),
])
def test_image_grid_rejects_inconsistent_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_grid(**kwargs)


BASE = dict(prompt="a red fox in the snow", negative_prompt="blurry", num_inference_steps=2, height=64, width=64)


def count_transformer_calls(pipe):
    calls = []
    handle = pipe.transformer.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_xy_grid_drives_guidance_and_seed_and_encodes_the_prompt_once(tiny_pipe, capsys):
    cache = helpers.PromptCache(tiny_pipe)
    grid, results = xy_grid(tiny_pipe, x=("guidance_scale", [1.0, 4.0, 7.0]), y=("seed", [0, 5]), base=BASE,
                            embeddings_cache=cache)
    # Before the first image: how many, and (the stand-in has no measured figure) that the first image
    # will give the estimate; after it the projection, at the end what it took; a bar in between.
    out, err = capsys.readouterr()
    assert out.startswith("xy_grid: 6 images. No estimate before the first image (the stand-in: no measured "
                          "figure to scale); its measured time gives one.\nFirst image measured: ")
    assert "for the other 5" in out and "xy_grid: 6 images in " in out and "s per image measured." in out
    assert "6/6" in err
    assert [[(r.recipe["seed"], r.recipe["guidance_scale"]) for r in row] for row in results] == [
        [(0, 1.0), (0, 4.0), (0, 7.0)], [(5, 1.0), (5, 4.0), (5, 7.0)]]
    assert (cache.misses, cache.hits) == (1, 5)
    assert 3 * 64 < grid.width <= 5 * 64 and 2 * 64 < grid.height <= 4 * 64
    assert grid.getpixel((grid.width - 1, grid.height - 1)) == results[1][2].image.getpixel((63, 63))
    # Different seeds and different guidance (above 1) give different images.
    assert results[0][1].image.tobytes() != results[1][1].image.tobytes()
    assert results[0][1].image.tobytes() != results[0][2].image.tobytes()


def test_xy_grid_reuses_embeddings_byte_for_byte_like_re_encoding(tiny_pipe):
    _, results = xy_grid(tiny_pipe, x=("guidance_scale", [1.0, 3.5]), y=("seed", [2, 3]), base=BASE)
    for row in results:
        for r in row:
            fresh = helpers.generate(tiny_pipe, **BASE, guidance_scale=r.recipe["guidance_scale"], seed=r.recipe["seed"])
            assert fresh.image.tobytes() == r.image.tobytes()


def test_a_prompt_axis_encodes_each_prompt_once(tiny_pipe):
    cache = helpers.PromptCache(tiny_pipe)
    base = {k: v for k, v in BASE.items() if k != "prompt"}
    _, results = xy_grid(tiny_pipe, x=("seed", [0, 1, 2]), y=("prompt", ["a cat", "a dog"]), base=base,
                         embeddings_cache=cache)
    assert (cache.misses, cache.hits) == (2, 4)
    assert [row[0].recipe["prompt"] for row in results] == ["a cat", "a dog"]


@pytest.mark.parametrize("x, y, base, match", [
    (("guidance", [1.0]), ("seed", [0]), BASE, "'guidance' cannot drive an axis"),
    (("guidance_scale", [1.0]), ("callback", [None]), BASE, "'callback' cannot drive an axis"),
    (("seed", [0]), ("seed", [1]), BASE, "different arguments"),
    (("seed", []), ("guidance_scale", [1.0]), BASE, "at least one value"),
    (("seed", [0]), ("guidance_scale", [1.0]), {**BASE, "sampler": "euler"}, "does not take: sampler"),
])
def test_bad_axes_are_rejected_before_anything_runs(tiny_pipe, x, y, base, match):
    cache = helpers.PromptCache(tiny_pipe)
    calls, handle = count_transformer_calls(tiny_pipe)
    try:
        with pytest.raises(ValueError, match=match):
            xy_grid(tiny_pipe, x=x, y=y, base=base, embeddings_cache=cache)
    finally:
        handle.remove()
    assert cache.misses == 0 and calls == []



def test_image_grid_takes_generation_results(tiny_pipe):
    results = [helpers.generate(tiny_pipe, "a cat", seed=s, num_inference_steps=1) for s in (0, 1)]
    grid = image_grid(results, 1, 2)
    assert grid.size == (128, 64)
    assert grid.crop((64, 0, 128, 64)).tobytes() == results[1].image.convert("RGB").tobytes()


def test_for_display_shrinks_big_grids_keeps_aspect_and_never_enlarges():
    from helpers.studies.grids import DISPLAY_MAX_SIDE, for_display

    big = image_grid(tiles(6, size=1024), 2, 3)
    shown = for_display(big)
    assert max(shown.size) == DISPLAY_MAX_SIDE and big.size == (3 * 1024, 2 * 1024)  # original untouched
    assert abs(shown.width / shown.height - 1.5) < 0.01
    small = image_grid(tiles(), 2, 3)
    assert for_display(small).size == small.size


def test_axis_labels_never_show_python_reprs():
    from helpers.studies.grids import axis_label

    assert [axis_label(v) for v in (None, 7.5, 1.0, 3, "No cake")] == ["none", "7.5", "1", "3", "No cake"]


def test_long_titles_and_labels_are_shortened_with_few_measurements(monkeypatch):
    from PIL import ImageDraw

    measured = []
    real_textbbox = ImageDraw.ImageDraw.textbbox
    monkeypatch.setattr(ImageDraw.ImageDraw, "textbbox",
                        lambda self, *a, **k: measured.append(1) or real_textbbox(self, *a, **k))
    long = "a very long label " * 170  # ~3,000 characters: 15 s when cut one character at a time
    grid = image_grid(tiles(4), 2, 2, title=long, row_title=long, col_title=long,
                      row_labels=[long, "b"], col_labels=["c", long])
    assert grid.size[0] <= 2 * TILE + 2 * TILE + 64  # the labels did not widen it
    assert len(measured) < 200


@pytest.mark.parametrize("length", [1, 10, 333, 5000])
def test_fit_keeps_the_longest_prefix_that_fits(length):
    from PIL import ImageDraw

    from helpers.studies.grids import _fit, _font, _text_size

    draw, font, width = ImageDraw.Draw(Image.new("RGB", (1, 1))), _font(12), 150
    text = ("abcdefghij" * 500)[:length]
    fitted = _fit(text, draw, font, width)
    assert _text_size(draw, fitted, font)[0] <= width
    if fitted != text:
        kept = len(fitted) - 1
        assert fitted == text[:kept] + "…"
        assert _text_size(draw, text[:kept + 1] + "…", font)[0] > width  # one more would not fit


def test_an_axis_given_as_a_generator_is_used_whole(tiny_pipe):
    grid, results = xy_grid(tiny_pipe, x=("seed", (s for s in (0, 1))), y=("guidance_scale", iter([1.0])),
                            base=BASE)
    assert [r.recipe["seed"] for r in results[0]] == [0, 1] and grid.size[0] > 2 * TILE


@pytest.mark.parametrize("y, match", [
    (("guidance_scale", [1.0, 1e6]), "guidance_scale=1000000.0.*above 30"),
    (("seed", [0, -1]), "grid cell .*seed=-1: seed must be between"),
    (("num_inference_steps", [2, 0]), "num_inference_steps must be at least 1"),
    (("prompt", ["a cat", None]), "needs a prompt"),
    (("negative_prompt", [None, 3]), "negative_prompt must be a string"),
])
def test_a_bad_value_in_the_last_cell_fails_before_the_first_image(tiny_pipe, y, match):
    cache = helpers.PromptCache(tiny_pipe)
    calls, handle = count_transformer_calls(tiny_pipe)
    try:
        with pytest.raises((ValueError, TypeError), match=match):
            xy_grid(tiny_pipe, x=("seed", [0, 1]) if y[0] != "seed" else ("guidance_scale", [1.0]), y=y,
                    base={k: v for k, v in BASE.items() if k != y[0]}, embeddings_cache=cache)
    finally:
        handle.remove()
    assert cache.misses == 0 and calls == []


def test_a_cache_of_another_pipeline_is_refused_before_any_work(tiny_pipe):
    no_t5 = helpers.load_pipeline("tiny", drop_t5=True, keep_previous=True)
    with pytest.raises(ValueError, match="other text encoders"):
        xy_grid(tiny_pipe, x=("seed", [0]), y=("guidance_scale", [1.0]), base=BASE,
                embeddings_cache=helpers.PromptCache(no_t5))
    helpers.release_pipeline(no_t5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=tiles(2), rows="2", cols=1), "rows must be a whole number, not str"),
    (dict(images=tiles(2), rows=1.5, cols=1), "rows must be a whole number, not float"),
    (dict(images=tiles(2), rows=2, cols=True), "cols must be a whole number, not bool"),
    (dict(images=[None], rows=1, cols=1), r"images\[0\] must be a PIL image .*not NoneType"),
    (dict(images=["cat.png"], rows=1, cols=1), r"images\[0\] must be a PIL image .*Image.open"),
    (dict(images=[np.zeros((8, 8, 3), np.uint8)], rows=1, cols=1), r"images\[0\] .*not ndarray"),
    (dict(images="cat.png", rows=1, cols=1), "images must be a list"),
    (dict(images=tiles(1), rows=1, cols=1, title=123), "title must be a string"),
    (dict(images=tiles(1), rows=1, cols=1, row_title=["a"]), "row_title must be a string"),
    (dict(images=tiles(1), rows=1, cols=1, row_labels="a"), "row_labels must be a list"),
    (dict(images=tiles(1), rows=1000, cols=1000), r"rows=1000 x cols=1000 = 1000000 cells is more than 400"),
])
def test_image_grid_wrong_types_are_one_clear_error(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        image_grid(**kwargs)


def test_image_grid_takes_a_generator():
    grid = image_grid((tile for tile in tiles(2)), 1, 2)
    assert grid.size == (2 * TILE, TILE)


@pytest.mark.parametrize("x, y, base, title, match", [
    (("height", [64, 128]), ("seed", [0]), BASE, None, "'height' cannot drive an axis: a grid's images share one size"),
    (("seed", [0]), ("width", [64, 128]), BASE, None, "'width' cannot drive an axis"),
    (("seed", range(1_000_000)), ("guidance_scale", [1.0]), BASE, None, "more than 400 images"),
    (("seed", (s for s in itertools.count())), ("guidance_scale", [1.0]), BASE, None, "more than 400 images"),
    (("seed", [0]), ("guidance_scale", [1.0]), BASE, 123, "title must be a string"),
    ("seed", ("guidance_scale", [1.0]), BASE, None, "x must be .argument name, list of values."),
    (("seed", 0), ("guidance_scale", [1.0]), BASE, None, "x must be"),
    (("seed", [0]), ("prompt", "a cat"), BASE, None, "y must be"),
    (("seed", [0]), None, BASE, None, "y must be"),
    ((1, [0]), ("guidance_scale", [1.0]), BASE, None, "x must be"),
    (("seed", [0]), ("guidance_scale", [1.0]), ["prompt"], None, "base must be a dict"),
])
def test_grid_shapes_and_titles_are_refused_before_any_image(tiny_pipe, x, y, base, title, match):
    cache = helpers.PromptCache(tiny_pipe)
    calls, handle = count_transformer_calls(tiny_pipe)
    started = time.monotonic()
    try:
        with pytest.raises((TypeError, ValueError), match=match):
            xy_grid(tiny_pipe, x=x, y=y, base=base, embeddings_cache=cache, title=title)
    finally:
        handle.remove()
    assert cache.misses == 0 and calls == [] and time.monotonic() - started < 10
