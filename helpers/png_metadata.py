"""Save an image as PNG with its recipe inside, and read it back.

Two text chunks: "parameters" in the AUTOMATIC1111 format that A1111, ComfyUI-style and most
image-browser tools read ("prompt\\nNegative prompt: ...\\nSteps: 28, Sampler: ..., CFG scale: 3.5,
Seed: 1, Size: 1024x1024, Model: ..."), and "sd35_recipe" with the full recipe as JSON.
"""

from __future__ import annotations

import json
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


def a1111_parameters(recipe: dict) -> str:
    """The recipe as an A1111 "parameters" text: prompt, negative prompt line, settings line."""
    lines = [recipe["prompt"]]
    if recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
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
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines), **settings}


def next_free_path(folder, stem: str, suffix: str = ".png") -> Path:
    """folder/stem.png, or stem-2.png, stem-3.png ... : the first name not taken yet."""
    folder = Path(folder)
    candidate, n = folder / f"{stem}{suffix}", 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


def save_png_with_recipe(image: Image.Image, recipe: dict, folder=".", stem: str | None = None) -> Path:
    """Write `image` to a new PNG in `folder` with the recipe in its text chunks; return the path.

    Never overwrites: the file is created exclusively, and a taken name moves on to the next one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or f"sd35-seed{recipe['seed']}"
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, a1111_parameters(recipe))
    info.add_text(RECIPE_KEY, json.dumps(recipe, ensure_ascii=False, sort_keys=True))
    while True:
        path = next_free_path(folder, stem)
        try:
            with open(path, "xb") as f:  # "x": fail rather than overwrite if someone just took it
                image.save(f, format="PNG", pnginfo=info)
            return path
        except FileExistsError:
            continue


def read_png_recipe(path) -> tuple[str | None, dict | None]:
    """(A1111 parameters text, recipe dict) stored in a PNG; None for what it does not hold."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {})
    recipe = text.get(RECIPE_KEY)
    return text.get(PARAMETERS_KEY), json.loads(recipe) if recipe is not None else None
