"""Save an image as PNG with its recipe inside, and read it back.

Two text chunks: "parameters" in the AUTOMATIC1111 format that A1111, ComfyUI-style and most
image-browser tools read ("prompt\\nNegative prompt: ...\\nSteps: 28, Sampler: ..., CFG scale: 3.5,
Seed: 1, Size: 1024x1024, Model: ..."), and "sd35_recipe" with the full recipe as JSON.
A prompt that plain lines would make ambiguous (a line starting "Negative prompt:", a leading
quote, surrounding spaces) is written as one JSON string instead, so every prompt reads back.
A PNG is encoded in memory and only then written, so a failed save leaves no partial file.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..output_folders import check_folder, writable, write_atomically
from .validation import check_guidance, check_prompt, check_seed, check_size, check_steps

PARAMETERS_KEY = "parameters"
RECIPE_KEY = "sd35_recipe"
# What A1111 calls the sampler diffusers' schedulers implement.
SAMPLER_NAMES = {"FlowMatchEulerDiscreteScheduler": "Euler"}
# The image modes PNG can hold.
PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def _quote(value) -> str:
    """A1111 quotes a value holding its separators (", " or ": ") as a JSON string; so is one
    holding a line break (which would end the settings line) or surrounding spaces."""
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"\n\r') or text != text.strip() else text


NEGATIVE_PREFIX = "Negative prompt:"


def _is_plain(text: str) -> bool:
    """Whether `text` reads back unchanged from plain A1111 lines: no line that A1111 would take
    for the negative prompt, no spaces it would strip, no leading quote (which marks JSON here)."""
    return (
        not text.startswith('"')
        and text == text.strip()
        and all(line == line.strip() and not line.startswith(NEGATIVE_PREFIX) for line in text.split("\n"))
    )


def _prompt_text(text: str) -> str:
    return text if _is_plain(text) else json.dumps(text, ensure_ascii=False)


def _read_prompt_text(text: str) -> str:
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:  # another tool's prompt that merely starts with a quote
            return text
        return value if isinstance(value, str) else text
    return text


def a1111_parameters(recipe: dict) -> str:
    """The recipe as an A1111 "parameters" text: prompt, negative prompt line, settings line.

    A prompt plain lines could not carry unambiguously is written as a JSON string."""
    lines = [_prompt_text(recipe["prompt"])]
    if recipe.get("negative_prompt"):
        lines.append(f"{NEGATIVE_PREFIX} {_prompt_text(recipe['negative_prompt'])}")
    scheduler = recipe.get("scheduler") or "unknown"
    settings = {
        "Steps": recipe["num_inference_steps"],
        "Sampler": SAMPLER_NAMES.get(scheduler, scheduler),
        "Schedule type": scheduler,
        "CFG scale": recipe["guidance_scale"],
        "Seed": recipe["seed"],
        "Size": f"{recipe['width']}x{recipe['height']}",
        "Model": recipe.get("model") or "unknown",
        "Version": f"diffusers {recipe.get('versions', {}).get('diffusers', 'unknown')}",
    }
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in settings.items()))
    return "\n".join(lines)


# One "Key: value" item of the settings line, matched at a given position only (never searched
# for): the key starts with a word character (so no two parts can both match the same spaces), a
# quoted value must end at a comma or the line's end. Each character is looked at a bounded number
# of times, so a long line is read in linear time (an unanchored search took minutes on 300 kB).
_SETTING = re.compile(r'\s*(\w[\w ]*):\s*("(?:\\.|[^\\"])*"(?=,|$)|[^,]*)(?:,|$)')
# PIL reads PNG text chunks of at most 1 MB (PngImagePlugin.MAX_TEXT_CHUNK): a longer text is no
# A1111 parameters text that a PNG gives back.
MAX_PARAMETERS_CHARS = 1_000_000


def _settings(line: str) -> dict:
    """The settings line's items; a part that is not "Key: value" is skipped up to the next comma.
    A quoted value that is not valid JSON (another tool's "\\q") is kept as its text."""
    settings, position = {}, 0
    while position < len(line):
        match = _SETTING.match(line, position)
        if match is None or match.end() == position:
            comma = line.find(",", position)
            if comma < 0:
                break
            position = comma + 1
            continue
        key, value = match.groups()
        position = match.end()
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:  # a bad escape ("\\q"): keep the text
                value = value[1:-1]
        else:
            value = value.strip()
        settings[key.strip()] = value
    return settings


def parse_a1111_parameters(text: str) -> dict:
    """Read an A1111 "parameters" text back: {"prompt", "negative_prompt", and each setting}.

    The settings line is the last one when it starts with "Steps:" (as A1111 and this module
    write it); a text without one is all prompt. A text longer than PNG text chunks hold (1 MB)
    is refused."""
    if not isinstance(text, str):
        raise TypeError(f"text must be an A1111 parameters string, not {type(text).__name__} {text!r:.60}.")
    if len(text) > MAX_PARAMETERS_CHARS:
        raise ValueError(f"text is {len(text):,} characters long, more than the {MAX_PARAMETERS_CHARS:,} a PNG's "
                         "parameters text holds: it is not an A1111 parameters text.")
    *head, last = text.strip("\n").split("\n")
    settings = {}
    if last.startswith("Steps:"):
        settings = _settings(last)
    else:
        head.append(last)
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in head:
        if not in_negative and line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return {
        "prompt": _read_prompt_text("\n".join(prompt_lines)),
        "negative_prompt": _read_prompt_text("\n".join(negative_lines)),
        **settings,
    }


def check_recipe(recipe, source="recipe") -> dict:
    """`recipe` must be a dict holding what `generate` needs to remake its image (`RECIPE_KEYS`),
    each value as `generate` would take it; one clear error naming `source` otherwise."""
    from .text_to_image import RECIPE_KEYS

    if not isinstance(recipe, dict):
        raise TypeError(f"{source} must be a recipe dict as generate() makes (GenerationResult.recipe), "
                        f"not {type(recipe).__name__} {recipe!r:.60}.")
    missing = [key for key in RECIPE_KEYS if key not in recipe]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}: it is not a whole recipe as generate() makes.")
    try:
        check_prompt(recipe["prompt"])
        check_prompt(recipe["negative_prompt"], "negative_prompt", allow_none=True)
        check_guidance(recipe["guidance_scale"])
        check_steps(recipe["num_inference_steps"])
        check_seed(recipe["seed"])
        check_size(recipe["height"], recipe["width"], multiple=1)
        for key in ("guidance_scale", "num_inference_steps", "seed", "height", "width"):
            if recipe[key] is None:
                raise ValueError(f"{key} is None; a recipe holds the value that was used")
    except (TypeError, ValueError) as e:
        raise type(e)(f"{source}: {e}") from None
    return recipe


def recipe_json(recipe: dict) -> str:
    """The recipe as standard JSON (NaN or infinity, which JSON has no word for, are refused)."""
    try:
        return json.dumps(recipe, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the recipe cannot be saved as JSON: {e}.") from None


MAX_STEM_BYTES = 200  # file systems allow 255 bytes per name; room for "-123.png" and the temporary's prefix


def check_stem(stem) -> str | None:
    """A file name stem must stay inside its folder: no path separators, no "..", not absolute."""
    if stem is None:
        return None
    if not isinstance(stem, str) or not stem.strip():
        raise TypeError(f"stem must be a non-empty file name without extension (a str), not {stem!r:.60}.")
    if stem != Path(stem).name or stem in (".", "..") or any(c in stem for c in '/\\\0') or os.path.isabs(stem):
        raise ValueError(f"stem={stem!r:.80} must be a plain file name (no folders, '..' or absolute path): "
                         "the PNG is written inside folder=.")
    size = len(stem.encode("utf-8", "surrogatepass"))
    if size > MAX_STEM_BYTES:
        raise ValueError(f"stem is {size} bytes long, more than the {MAX_STEM_BYTES} a file name "
                         f"can hold here (with '-N.png'): shorten it (it begins {stem[:40]!r}).")
    return stem


def next_free_path(folder, stem: str, suffix: str = ".png") -> Path:
    """folder/stem.png, or stem-2.png, stem-3.png ... : the first name not taken yet (a dangling
    symbolic link takes its name too: it is never written through)."""
    folder = Path(folder)
    candidate, n = folder / f"{stem}{suffix}", 1
    while os.path.lexists(candidate):
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


def png_bytes(image: Image.Image, text: dict[str, str]) -> bytes:
    """`image` encoded as PNG with `text` chunks, in memory (nothing touches the disk)."""
    image = getattr(image, "image", image)  # a GenerationResult is welcome too
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image (or a GenerationResult), not {type(image).__name__}.")
    if 0 in image.size:
        raise ValueError(f"image is {image.width}x{image.height} pixels: an empty image cannot be saved as PNG.")
    if image.mode not in PNG_MODES:
        raise ValueError(f"image has mode {image.mode!r}, which PNG cannot hold (it holds {', '.join(PNG_MODES)}): "
                         "convert it first, e.g. image.convert('RGB').")
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_new_file(path, data: bytes) -> Path:
    """Write `data` to a file that must not exist yet (FileExistsError otherwise), whole or not at
    all (output_folders.write_atomically: a full disk or an interrupt leaves no partial file)."""
    return write_atomically(path, data)


def save_png_with_recipe(image: Image.Image, recipe: dict, folder=".", stem: str | None = None) -> Path:
    """Write `image` to a new PNG in `folder` with the recipe in its text chunks; return the path.

    Never overwrites: the file is created exclusively, and a taken name moves on to the next one.
    The PNG is encoded first, so a bad image or a full disk leaves no file behind."""
    check_recipe(recipe)
    stem = check_stem(stem) or f"sd35-seed{recipe['seed']}"
    folder = check_folder(folder)
    data = png_bytes(image, {PARAMETERS_KEY: a1111_parameters(recipe), RECIPE_KEY: recipe_json(recipe)})
    with writable(folder, "folder"):
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                return write_new_file(next_free_path(folder, stem), data)
            except FileExistsError:  # someone just took that name: move on to the next
                continue


def read_png_recipe(path) -> tuple[str | None, dict | None]:
    """(A1111 parameters text, recipe dict) stored in a PNG; None for what it does not hold.

    A file that is not an image, or a recipe that is damaged or incomplete, is one clear error."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a PNG file's path (a str or pathlib.Path), not {type(path).__name__} {path!r:.60}.")
    if Path(path).is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a folder, not a PNG file.")
    if not Path(path).exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist: give the path of a PNG saved by save_png_with_recipe.")
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image PIL can read (a PNG saved by save_png_with_recipe is).") from None
    except Image.DecompressionBombError as e:  # a header claiming billions of pixels
        raise ValueError(f"{path} claims an image too large to open safely ({e}); it is no PNG this project "
                         "saved.") from None
    except (OSError, SyntaxError, ValueError) as e:  # a truncated PNG; a text chunk past PIL's 1 MB limit
        raise ValueError(f"{path} is a damaged or truncated image, or too large to read ({e}); its recipe cannot be "
                         "read.") from None
    recipe = text.get(RECIPE_KEY)
    if recipe is None:
        return text.get(PARAMETERS_KEY), None
    try:
        recipe = json.loads(recipe)
    except ValueError as e:  # bad JSON, or a number past Python's 4,300-digit limit
        raise ValueError(f"{path}: its {RECIPE_KEY!r} text is not valid JSON ({e}); the recipe is damaged.") from None
    return text.get(PARAMETERS_KEY), check_recipe(recipe, f"the recipe in {path}")
