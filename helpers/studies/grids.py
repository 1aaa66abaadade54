"""Labelled image grids, and X/Y sweeps of any generation argument (like A1111's X/Y/Z plot).

`image_grid` lays out images with row and column labels and a title, drawn with PIL so the
grid is one PNG that can be saved and compared. `xy_grid` generates every (x, y) combination of
two `generate` arguments, encoding each distinct prompt pair once.
"""

from __future__ import annotations

import inspect
import itertools
import numbers
from collections.abc import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..generation import pipeline_lock
from ..generation.prompt_embeddings import PromptCache, text_encoders_id
from ..generation.text_to_image import check_arguments, generate, resolve_arguments
from .timing import ReaderClock, pipeline_estimate

BACKGROUND, INK = (255, 255, 255), (20, 20, 20)
# At most this many cells in one grid (a 20 x 20 sweep): more would take hours and make an unreadable image.
MAX_CELLS = 400
# Axes a grid cannot have: every image of one grid has the same size.
SIZE_AXES = ("height", "width")
# Pixels on a grid's longer side when shown in a notebook; the saved PNG keeps full resolution.
DISPLAY_MAX_SIDE = 1536


def for_display(image, max_side: int = DISPLAY_MAX_SIDE):
    """A copy of `image` shrunk to at most `max_side` pixels on its longer side (never enlarged),
    for showing inline: seven 1024 px tiles side by side would be 7168 px wide."""
    shown = image.copy()
    shown.thumbnail((max_side, max_side), Image.LANCZOS)
    return shown


def axis_label(value) -> str:
    """How an axis value reads on a grid: "none" rather than Python's "None", 7.5 rather than 7.50."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _font(size: int):
    """A scalable font when Pillow can provide one; its built-in bitmap font otherwise."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _text_size(draw, text, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _fit(text: str, draw, font, width: int) -> str:
    """Shorten `text` with an ellipsis until it fits in `width` pixels.

    A binary search over the kept length: a handful of measurements even for a page of text
    (removing one character at a time took a minute for 20,000 characters)."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    fits, too_long = 0, len(text)  # text[:fits] + "…" fits (or fits is 0); text[:too_long] + "…" does not
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if _text_size(draw, text[:middle] + "…", font)[0] <= width:
            fits = middle
        else:
            too_long = middle
    return text[:fits] + "…"


def check_titles(**titles) -> None:
    """Titles are text (or None): checked before any image is made or drawn."""
    for name, value in titles.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string (or None), not {type(value).__name__} {value!r:.40}.")


def check_axis(name: str, axis) -> tuple[str, list]:
    """An xy_grid axis: (argument name, values), e.g. ("seed", [0, 1, 2])."""
    if (isinstance(axis, (str, bytes)) or not isinstance(axis, Sequence) or len(axis) != 2
            or not isinstance(axis[0], str)
            or isinstance(axis[1], (str, bytes, dict)) or not isinstance(axis[1], Iterable)):
        raise TypeError(f"{name} must be (argument name, list of values), e.g. ('seed', [0, 1, 2]), not {axis!r:.60}.")
    values = list(itertools.islice(axis[1], MAX_CELLS + 1))  # a generator is read once, here, never forever
    if axis[0] in SIZE_AXES:
        raise ValueError(f"{axis[0]!r} cannot drive an axis: a grid's images share one size. Put {axis[0]} in base "
                         "and make one grid per size.")
    return axis[0], values


def image_grid(images, rows: int, cols: int, *, row_labels=None, col_labels=None, title=None,
               row_title=None, col_title=None):
    """Lay `images` (PIL images or GenerationResults, row-major, all the same size) out as a
    rows x cols grid with labels.

    Labels are scaled to the tile size, so a grid of 64 px stand-in tiles and one of 1024 px
    tiles both stay readable."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be a whole number, not {type(value).__name__} {value!r:.40}.")
    check_titles(title=title, row_title=row_title, col_title=col_title)
    if isinstance(images, (str, bytes, Image.Image)) or not isinstance(images, Iterable):
        raise TypeError(f"images must be a list of PIL images (or GenerationResults), not {type(images).__name__}.")
    images = [getattr(im, "image", im) for im in images]  # GenerationResults are welcome too
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] must be a PIL image (or a GenerationResult), not {type(image).__name__} "
                            f"{image!r:.40}; open files with PIL.Image.open and arrays with PIL.Image.fromarray first.")
    if rows * cols > MAX_CELLS:
        raise ValueError(f"image_grid of rows={rows} x cols={cols} = {rows * cols} cells is more than {MAX_CELLS}: "
                         "split it into smaller grids.")
    if rows < 1 or cols < 1 or len(images) != rows * cols:
        raise ValueError(f"image_grid needs rows x cols = {rows} x {cols} = {rows * cols} images, got {len(images)}.")
    for labels, n, name in ((row_labels, rows, "row_labels"), (col_labels, cols, "col_labels")):
        if labels is not None and (isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence)):
            raise TypeError(f"{name} must be a list of labels, not {type(labels).__name__} {labels!r:.40}.")
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} entries for {n} {name[:3]}s.")
    w, h = images[0].size
    if any(im.size != (w, h) for im in images):
        raise ValueError("image_grid needs images of one size; resize them first.")
    font_px = max(10, min(w, h) // 10)
    font, title_font = _font(font_px), _font(int(font_px * 1.3))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = _text_size(probe, "Ag", font)[1] + font_px // 2
    left = 0
    if row_labels is not None:
        left = min(max(_text_size(probe, str(t), font)[0] for t in row_labels) + font_px, 2 * w)
    if row_title:
        left += line
    top = (line if col_labels is not None else 0) + (line if col_title else 0)
    top += int(line * 1.4) if title else 0
    canvas = Image.new("RGB", (left + cols * w, top + rows * h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = 0
    if title:
        draw.text((canvas.width // 2, 0), _fit(title, draw, title_font, canvas.width), fill=INK, font=title_font, anchor="ma")
        y += int(line * 1.4)
    if col_title:
        draw.text((left + cols * w // 2, y), _fit(col_title, draw, font, cols * w), fill=INK, font=font, anchor="ma")
        y += line
    if col_labels is not None:
        for c, label in enumerate(col_labels):
            draw.text((left + c * w + w // 2, y), _fit(str(label), draw, font, w), fill=INK, font=font, anchor="ma")
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas.paste(image.convert("RGB"), (left + c * w, top + r * h))
    if row_labels is not None:
        x = line if row_title else 0
        for r, label in enumerate(row_labels):
            draw.text((x + font_px // 4, top + r * h + h // 2), _fit(str(label), draw, font, left - x - font_px // 2),
                      fill=INK, font=font, anchor="lm")
    if row_title:
        side = Image.new("RGB", (rows * h, line), BACKGROUND)
        ImageDraw.Draw(side).text((rows * h // 2, 0), _fit(row_title, draw, font, rows * h), fill=INK, font=font, anchor="ma")
        canvas.paste(side.rotate(90, expand=True), (0, top))
    return canvas


_AXES = [name for name in inspect.signature(generate).parameters if name not in ("pipe", "callback", "embeddings")]


def xy_grid(pipe, *, x, y, base=None, embeddings_cache=None, title=None):
    """Generate every combination of two `generate` arguments and lay them out as a grid.

    `x` and `y` are (argument name, values), e.g. ("guidance_scale", [1, 3.5, 7]) and
    ("seed", [0, 1]); `base` holds the fixed arguments (prompt, steps, ...). Each distinct
    (prompt, negative_prompt) is encoded once and reused. Returns (grid image, results[row][col])."""
    if base is not None and not isinstance(base, dict):
        raise TypeError(f"base must be a dict of generate() arguments, not {type(base).__name__} {base!r:.40}.")
    base = dict(base or {})
    check_titles(title=title)
    (x_name, x_values), (y_name, y_values) = check_axis("x", x), check_axis("y", y)
    if len(x_values) * len(y_values) > MAX_CELLS:
        raise ValueError(f"xy_grid of {len(x_values)}{'+' if len(x_values) > MAX_CELLS else ''} x "
                         f"{len(y_values)}{'+' if len(y_values) > MAX_CELLS else ''} cells is more than {MAX_CELLS} "
                         "images: use fewer values per axis.")
    for name in (x_name, y_name):
        if name not in _AXES:
            raise ValueError(f"{name!r} cannot drive an axis; choose one of: {', '.join(_AXES)}.")
    if x_name == y_name:
        raise ValueError("x and y must be different arguments.")
    if not x_values or not y_values:
        raise ValueError("each axis needs at least one value.")
    unknown = set(base) - set(_AXES)
    if unknown:
        raise ValueError(f"base has arguments generate() does not take: {', '.join(sorted(unknown))}.")
    cache = embeddings_cache or PromptCache(pipe)
    if not isinstance(cache, PromptCache):
        raise TypeError(f"embeddings_cache must be a PromptCache, not {type(cache).__name__}.")
    if cache.pipe is not pipe and text_encoders_id(cache.pipe) != text_encoders_id(pipe):
        raise ValueError("embeddings_cache belongs to a pipeline with other text encoders: use PromptCache(pipe).")
    cells = [[{**base, x_name: x_value, y_name: y_value} for x_value in x_values] for y_value in y_values]
    for row in cells:  # every cell is checked before the first image, not when its turn comes
        for args in row:
            if args.get("prompt") is None:
                raise ValueError("xy_grid needs a prompt, in base or on an axis.")
            try:
                check_arguments(pipe, **args)
            except (TypeError, ValueError) as e:
                at = f"{x_name}={args[x_name]!r}, {y_name}={args[y_name]!r}"
                raise type(e)(f"grid cell {at}: {e}") from None
    results = []
    first = resolve_arguments(pipe, **{k: cells[0][0].get(k) for k in ("num_inference_steps", "height", "width")})
    clock = ReaderClock("xy_grid", len(x_values) * len(y_values),
                        pipeline_estimate(pipe, first["num_inference_steps"], first["height"], first["width"]))
    with pipeline_lock.using(pipe, "an xy_grid"):  # the whole grid: no other image runs between its cells
        for row in cells:
            results.append([])
            for args in row:
                args = dict(args)
                prompt, negative = args.pop("prompt"), args.pop("negative_prompt", None)
                results[-1].append(generate(pipe, embeddings=cache.get(prompt, negative), **args))
                clock.tick(results[-1][-1].seconds)
    clock.close()
    first = results[0][0].recipe
    title = title or f"{first['model']} · {first['num_inference_steps']} steps"
    grid = image_grid(
        [r.image for row in results for r in row], len(y_values), len(x_values),
        row_labels=[axis_label(v) for v in y_values], col_labels=[axis_label(v) for v in x_values],
        title=title, row_title=y_name, col_title=x_name,
    )
    return grid, results
