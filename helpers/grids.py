"""Labelled image grids, and X/Y plots that sweep any two `generate` arguments.

`image_grid` draws images in rows and columns with PIL, with axis labels and a title sized to the
tiles (readable from 64 px stand-in tiles to 1024 px SD3.5 tiles). `xy_grid` is the spirit of
AUTOMATIC1111's X/Y/Z plot script: pick a `generate` argument per axis, the rest fixed in `base`;
each distinct (prompt, negative prompt) is encoded once and its embeddings reused.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from . import validation
from .generation import GenerationResult, generate, resolve_arguments
from .prompt_embeddings import PromptCache

# The `generate` arguments an axis (or `base`) may set.
AXES = ("prompt", "negative_prompt", "guidance_scale", "num_inference_steps", "seed", "height", "width")
TITLE_LINES, COL_LABEL_LINES = 2, 2  # fixed bands, so a grid's size depends only on its tiles


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes in a grid, in pixels."""

    tile_width: int
    tile_height: int
    rows: int
    cols: int
    font_px: int
    gap: int  # between tiles
    left: int  # x of the first tile column (room for row title and labels)
    top: int  # y of the first tile row (room for title, column title and labels)
    row_label_width: int

    @property
    def line_height(self) -> int:
        return round(self.font_px * 1.3)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole grid image."""
        width = self.left + self.cols * self.tile_width + (self.cols - 1) * self.gap + self.gap
        height = self.top + self.rows * self.tile_height + (self.rows - 1) * self.gap + self.gap
        return width, height

    def tile_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(left, upper, right, lower) of the tile at `row`, `col`."""
        x = self.left + col * (self.tile_width + self.gap)
        y = self.top + row * (self.tile_height + self.gap)
        return x, y, x + self.tile_width, y + self.tile_height


def grid_layout(
    tile_size: tuple[int, int], rows: int, cols: int, *,
    row_labels=False, col_labels=False, title=False, row_title=False, col_title=False,
) -> GridLayout:
    """The layout `image_grid` uses for tiles of `tile_size` (w, h) px; the label arguments only
    matter by being present or not (label bands have a fixed size)."""
    tw, th = tile_size
    font_px = max(12, round(min(tw, th) / 24))  # 12 px at 64 px tiles, 43 px at 1024 px tiles
    line = round(font_px * 1.3)
    gap, pad = max(2, font_px // 6), max(3, font_px // 3)
    row_label_width = 7 * font_px if row_labels else 0
    left = gap + (line + pad if row_title else 0) + (row_label_width + pad if row_labels else 0)
    top = gap
    top += TITLE_LINES * round(font_px * 1.2 * 1.3) + pad if title else 0
    top += line + pad if col_title else 0
    top += COL_LABEL_LINES * line + pad if col_labels else 0
    return GridLayout(tw, th, rows, cols, font_px, gap, left, top, row_label_width)


@lru_cache(maxsize=16)
def _font(size: int, bold: bool = False):
    """DejaVu Sans when the system has it (Colab, Debian), else Pillow's built-in scalable font."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _wrap(draw, text: str, font, width: int, max_lines: int) -> list[str]:
    """Break `text` into at most `max_lines` lines no wider than `width` px; '…' marks a cut."""
    lines, current = [], ""
    for word in str(text).split():
        candidate = f"{current} {word}".strip()
        if draw.textlength(candidate, font=font) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while draw.textlength(word, font=font) > width and len(word) > 1:  # a word wider than a line
            cut = len(word)
            while cut > 1 and draw.textlength(word[:cut], font=font) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and draw.textlength(last + "…", font=font) > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "…"]
    return lines


def _draw_lines(draw, lines, font, box, line_height, fill=(0, 0, 0)):
    """Draw `lines` centred horizontally and vertically in `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    y = top + (bottom - top - len(lines) * line_height) / 2
    for text in lines:
        x = left + (right - left - draw.textlength(text, font=font)) / 2
        draw.text((x, y), text, font=font, fill=fill)
        y += line_height


def _check_labels(labels, count: int, name: str, axis: str):
    if labels is None:
        return None
    labels = [str(label) for label in labels]
    if len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} entries but the grid has {count} {axis}.")
    return labels


def image_grid(
    images, rows: int, cols: int, *,
    row_labels=None, col_labels=None, title=None, row_title=None, col_title=None,
) -> Image.Image:
    """Draw `rows` x `cols` images (row by row; PIL images or GenerationResults) into one labelled
    RGB image. Tiles take the largest image's size; smaller images are centred."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, not {value!r}.")
    images = [getattr(image, "image", image) for image in images]  # GenerationResult -> PIL image
    if len(images) != rows * cols:
        raise ValueError(f"{len(images)} images do not fill a {rows} x {cols} grid ({rows * cols} needed).")
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] must be a PIL image or a GenerationResult, not {type(image).__name__}.")
    row_labels = _check_labels(row_labels, rows, "row_labels", "rows")
    col_labels = _check_labels(col_labels, cols, "col_labels", "columns")
    tile = (max(i.width for i in images), max(i.height for i in images))
    layout = grid_layout(
        tile, rows, cols, row_labels=row_labels is not None, col_labels=col_labels is not None,
        title=bool(title), row_title=bool(row_title), col_title=bool(col_title),
    )
    grid = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(grid)
    font, line = _font(layout.font_px), layout.line_height
    first_x, last_x = layout.tile_box(0, 0)[0], layout.tile_box(0, cols - 1)[2]
    first_y, last_y = layout.tile_box(0, 0)[1], layout.tile_box(rows - 1, 0)[3]

    for index, image in enumerate(images):
        x0, y0, _, _ = layout.tile_box(*divmod(index, cols))
        grid.paste(image.convert("RGB"), (x0 + (tile[0] - image.width) // 2, y0 + (tile[1] - image.height) // 2))

    y = layout.gap
    if title:
        title_font, title_line = _font(round(layout.font_px * 1.2), bold=True), round(layout.font_px * 1.2 * 1.3)
        lines = _wrap(draw, title, title_font, layout.size[0] - 2 * layout.gap, TITLE_LINES)
        _draw_lines(draw, lines, title_font, (0, y, layout.size[0], y + TITLE_LINES * title_line), title_line)
        y += TITLE_LINES * title_line + max(3, layout.font_px // 3)
    if col_title:
        lines = _wrap(draw, col_title, _font(layout.font_px, bold=True), last_x - first_x, 1)
        _draw_lines(draw, lines, _font(layout.font_px, bold=True), (first_x, y, last_x, y + line), line)
        y += line + max(3, layout.font_px // 3)
    if col_labels:
        for c, label in enumerate(col_labels):
            x0, _, x1, _ = layout.tile_box(0, c)
            lines = _wrap(draw, label, font, x1 - x0, COL_LABEL_LINES)
            _draw_lines(draw, lines, font, (x0, y, x1, y + COL_LABEL_LINES * line), line)
    if row_labels:
        x1 = first_x - max(3, layout.font_px // 3)
        for r, label in enumerate(row_labels):
            _, y0, _, y1 = layout.tile_box(r, 0)
            lines = _wrap(draw, label, font, layout.row_label_width, max(1, (y1 - y0) // line))
            _draw_lines(draw, lines, font, (x1 - layout.row_label_width, y0, x1, y1), line)
    if row_title:
        bold = _font(layout.font_px, bold=True)
        height = last_y - first_y
        strip = Image.new("RGB", (height, line), "white")  # drawn horizontally, then turned upright
        strip_draw = ImageDraw.Draw(strip)
        _draw_lines(strip_draw, _wrap(strip_draw, row_title, bold, height, 1), bold, (0, 0, height, line), line)
        grid.paste(strip.rotate(90, expand=True), (layout.gap, first_y))
    return grid


def _format_value(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _check_axis(axis, which: str) -> tuple[str, list]:
    if not (isinstance(axis, tuple | list) and len(axis) == 2 and isinstance(axis[0], str)):
        raise TypeError(f"{which} must be a pair (argument name, list of values), e.g. ('guidance_scale', [2.5, 3.5]).")
    name, values = axis
    _check_name(name, which)
    if isinstance(values, str) or not hasattr(values, "__iter__"):
        raise TypeError(f"{which} values for {name!r} must be a list, not {type(values).__name__}.")
    values = list(values)
    if not values:
        raise ValueError(f"{which} axis {name!r} has no values.")
    return name, values


def _check_name(name, where: str) -> None:
    if name not in AXES:
        close = difflib.get_close_matches(str(name), AXES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{where}: {name!r} is not a generate() argument an X/Y plot can vary.{hint} Use one of: {', '.join(AXES)}.")


def xy_grid(
    pipe, *, x: tuple[str, list], y: tuple[str, list], base: dict,
    embeddings_cache: PromptCache | None = None, title: str | None = None,
) -> tuple[Image.Image, list[list[GenerationResult]]]:
    """Generate one image per (y value, x value) and draw them as a labelled grid.

    `x`/`y` are (argument, values) with any of AXES (e.g. ("guidance_scale", [2.5, 3.5])); `base`
    holds the fixed arguments (an axis overrides it). Every combination is checked before the
    first generation. Returns (grid image, results[row][col])."""
    x_name, x_values = _check_axis(x, "x")
    y_name, y_values = _check_axis(y, "y")
    if x_name == y_name:
        raise ValueError(f"x and y both vary {x_name!r}: choose two different arguments.")
    if not isinstance(base, dict):
        raise TypeError(f"base must be a dict of generate() arguments, not {type(base).__name__}.")
    for key in base:
        _check_name(key, "base")
    if "prompt" not in base and "prompt" not in (x_name, y_name):
        raise ValueError("xy_grid needs a prompt: put it in base (base={'prompt': ...}) or on an axis.")
    if embeddings_cache is not None and embeddings_cache.pipe is not pipe:
        raise ValueError("embeddings_cache belongs to another pipeline: create PromptCache(pipe) for this one.")
    cells = [[{**base, x_name: xv, y_name: yv} for xv in x_values] for yv in y_values]
    for kwargs in itertools.chain.from_iterable(cells):  # every mistake surfaces before any work
        validation.check_prompt(kwargs.get("prompt"))
        validation.check_prompt(kwargs.get("negative_prompt"), "negative_prompt", allow_none=True)
        resolve_arguments(pipe, kwargs.get("guidance_scale"), kwargs.get("num_inference_steps"),
                          kwargs.get("height"), kwargs.get("width"), kwargs.get("seed", 0))

    distinct = {(k["prompt"], k.get("negative_prompt") or "") for k in itertools.chain.from_iterable(cells)}
    cache = embeddings_cache if embeddings_cache is not None else PromptCache(pipe, size=max(16, len(distinct)))
    results = []
    for row in cells:
        results.append([])
        for kwargs in row:
            embeddings = cache.get(kwargs["prompt"], kwargs.get("negative_prompt"))
            rest = {k: v for k, v in kwargs.items() if k not in ("prompt", "negative_prompt")}
            results[-1].append(generate(pipe, embeddings=embeddings, **rest))

    if title is None:
        title = _default_title(results[0][0].recipe, (x_name, y_name))
    grid = image_grid(
        [r for row in results for r in row], len(y_values), len(x_values),
        row_labels=[_format_value(v) for v in y_values], col_labels=[_format_value(v) for v in x_values],
        title=title, row_title=y_name, col_title=x_name,
    )
    return grid, results


def _default_title(recipe: dict, varied: tuple[str, str]) -> str:
    """The model plus every setting the axes do not vary, e.g. "sd35-large · 28 steps · 1024x1024 · 'a cat'"."""
    parts = [str(recipe["model"])]
    if "num_inference_steps" not in varied:
        parts.append(f"{recipe['num_inference_steps']} steps")
    if "guidance_scale" not in varied:
        parts.append(f"guidance {recipe['guidance_scale']:g}")
    if "seed" not in varied:
        parts.append(f"seed {recipe['seed']}")
    if "height" not in varied and "width" not in varied:
        parts.append(f"{recipe['width']}x{recipe['height']}")
    if "prompt" not in varied:
        parts.append(repr(recipe["prompt"]))
    if "negative_prompt" not in varied and recipe.get("negative_prompt"):
        parts.append(f"negative {recipe['negative_prompt']!r}")
    return " · ".join(parts)
