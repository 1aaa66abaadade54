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

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"
RECIPE_KEY = "sd35_recipe"
# What A1111 calls the sampler diffusers' schedulers implement.
SAMPLER_NAMES = {"FlowMatchEulerDiscreteScheduler": "Euler"}


def _quote(value) -> str:
    """A1111 quotes a value holding its separators (", " or ": ") as a JSON string."""
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"') else text


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


_SETTING = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse_a1111_parameters(text: str) -> dict:
    """Read an A1111 "parameters" text back: {"prompt", "negative_prompt", and each setting}."""
    *head, last = text.strip("\n").split("\n")
    settings = {}
    for key, value in _SETTING.findall(last):
        settings[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
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


def next_free_path(folder, stem: str, suffix: str = ".png") -> Path:
    """folder/stem.png, or stem-2.png, stem-3.png ... : the first name not taken yet."""
    folder = Path(folder)
    candidate, n = folder / f"{stem}{suffix}", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


def png_bytes(image: Image.Image, text: dict[str, str]) -> bytes:
    """`image` encoded as PNG with `text` chunks, in memory (nothing touches the disk)."""
    image = getattr(image, "image", image)  # a GenerationResult is welcome too
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image (or a GenerationResult), not {type(image).__name__}.")
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_new_file(path, data: bytes) -> Path:
    """Write `data` to a file that must not exist yet (FileExistsError otherwise). A failed write
    (disk full, quota) removes the partial file before the error goes on: whole file or none."""
    path = Path(path)
    with open(path, "xb") as f:  # "x": fail rather than overwrite
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            raise
    return path


def save_png_with_recipe(image: Image.Image, recipe: dict, folder=".", stem: str | None = None) -> Path:
    """Write `image` to a new PNG in `folder` with the recipe in its text chunks; return the path.

    Never overwrites: the file is created exclusively, and a taken name moves on to the next one.
    The PNG is encoded first, so a bad image or a full disk leaves no file behind."""
    from .validation import check_prompt

    check_prompt(recipe.get("prompt"))
    check_prompt(recipe.get("negative_prompt"), "negative_prompt", allow_none=True)
    data = png_bytes(image, {
        PARAMETERS_KEY: a1111_parameters(recipe),
        RECIPE_KEY: json.dumps(recipe, ensure_ascii=False, sort_keys=True),
    })
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or f"sd35-seed{recipe['seed']}"
    while True:
        try:
            return write_new_file(next_free_path(folder, stem), data)
        except FileExistsError:  # someone just took that name: move on to the next
            continue


def read_png_recipe(path) -> tuple[str | None, dict | None]:
    """(A1111 parameters text, recipe dict) stored in a PNG; None for what it does not hold."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {})
    recipe = text.get(RECIPE_KEY)
    return text.get(PARAMETERS_KEY), json.loads(recipe) if recipe is not None else None
