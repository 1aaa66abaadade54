import contextlib
import json
import resource
import signal

import pytest
from PIL import Image

from helpers.generation.png_metadata import (
    a1111_parameters,
    next_free_path,
    parse_a1111_parameters,
    read_png_recipe,
    save_png_with_recipe,
)

RECIPE = {
    "model": "sd35-large", "scheduler": "FlowMatchEulerDiscreteScheduler",
    "prompt": "a cat, on a sofa", "negative_prompt": "blurry: low quality",
    "guidance_scale": 3.5, "num_inference_steps": 28, "seed": 1, "height": 1024, "width": 768,
    "versions": {"diffusers": "0.42.1"},
}


def test_a1111_text_has_the_usual_lines():
    text = a1111_parameters(RECIPE)
    lines = text.split("\n")
    assert lines[0] == "a cat, on a sofa"
    assert lines[1] == "Negative prompt: blurry: low quality"
    assert lines[2].startswith("Steps: 28, Sampler: Euler, ")
    assert "CFG scale: 3.5, Seed: 1, Size: 768x1024, Model: sd35-large" in lines[2]


def test_a1111_text_parses_back_even_with_separators_in_values():
    recipe = {**RECIPE, "model": "my, odd: model"}
    parsed = parse_a1111_parameters(a1111_parameters(recipe))
    assert parsed["prompt"] == recipe["prompt"]
    assert parsed["negative_prompt"] == recipe["negative_prompt"]
    assert parsed["Model"] == "my, odd: model"
    assert (parsed["Steps"], parsed["CFG scale"], parsed["Seed"], parsed["Size"]) == ("28", "3.5", "1", "768x1024")


def test_no_negative_line_without_a_negative_prompt():
    text = a1111_parameters({**RECIPE, "negative_prompt": None})
    assert "Negative prompt" not in text and len(text.split("\n")) == 2


def test_saved_png_round_trips_and_never_overwrites(tmp_path):
    image = Image.new("RGB", (32, 16), (10, 20, 30))
    existing = tmp_path / "sd35-seed1.png"
    existing.write_bytes(b"the user's file")
    first = save_png_with_recipe(image, RECIPE, tmp_path)
    second = save_png_with_recipe(image, RECIPE, tmp_path)
    assert existing.read_bytes() == b"the user's file"
    assert [first.name, second.name] == ["sd35-seed1-2.png", "sd35-seed1-3.png"]
    parameters, recipe = read_png_recipe(second)
    assert recipe == json.loads(json.dumps(RECIPE))
    assert parse_a1111_parameters(parameters)["Seed"] == "1"
    with Image.open(second) as back:  # plain PIL sees the chunks too
        assert back.text["parameters"] == parameters and back.size == (32, 16)


def test_next_free_path_counts_up(tmp_path):
    assert next_free_path(tmp_path, "x") == tmp_path / "x.png"
    (tmp_path / "x.png").touch()
    (tmp_path / "x-2.png").touch()
    assert next_free_path(tmp_path, "x") == tmp_path / "x-3.png"


def test_a_png_without_a_recipe_reads_as_none(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    assert read_png_recipe(tmp_path / "plain.png") == (None, None)


TRICKY_PROMPTS = [
    "a cat\nNegative prompt: dog",  # a prompt line that looks like the negative prompt
    "Negative prompt: dog",
    '"quoted" cat',
    '"a cat"',
    " leading space",
    "trailing space ",
    "two\n\nparagraphs",
    "line with spaces \n around",
    "\nstarts with a newline",
    "windows\r\nline end",
    "Steps: 1, Seed: 2, Size: 64x64",  # a prompt that looks like the settings line
]


@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
def test_every_prompt_and_negative_prompt_reads_back_unchanged(prompt):
    for recipe in ({**RECIPE, "prompt": prompt}, {**RECIPE, "negative_prompt": prompt},
                   {**RECIPE, "prompt": prompt, "negative_prompt": prompt}):
        parsed = parse_a1111_parameters(a1111_parameters(recipe))
        assert (parsed["prompt"], parsed["negative_prompt"]) == (recipe["prompt"], recipe["negative_prompt"])
        assert parsed["Seed"] == "1"


def test_plain_prompts_stay_plain_text_for_other_tools():
    assert a1111_parameters(RECIPE).split("\n")[:2] == ["a cat, on a sofa", "Negative prompt: blurry: low quality"]
    text = a1111_parameters({**RECIPE, "prompt": "a cat\nNegative prompt: dog", "negative_prompt": None})
    assert text.split("\n")[0] == '"a cat\\nNegative prompt: dog"' and len(text.split("\n")) == 2


def test_another_tools_prompt_starting_with_a_quote_is_read_as_it_is():
    parsed = parse_a1111_parameters('"quoted" cat\nSteps: 28, Seed: 1')
    assert parsed["prompt"] == '"quoted" cat'


@pytest.mark.parametrize("image", [None, "image.png", b"\x89PNG"])
def test_saving_something_else_than_an_image_leaves_no_file(tmp_path, image):
    with pytest.raises(TypeError, match="image must be a PIL image"):
        save_png_with_recipe(image, RECIPE, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_lone_surrogate_in_the_recipe_is_refused_before_any_file(tmp_path):
    with pytest.raises(ValueError, match="lone surrogate"):
        save_png_with_recipe(Image.new("RGB", (4, 4)), {**RECIPE, "prompt": "a \udfff cat"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def file_size_limit(n_bytes):
    """A real 'disk full' for this process: the kernel refuses writes past `n_bytes` (EFBIG)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a killed process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_full_disk_leaves_no_partial_png(tmp_path):
    image = Image.effect_noise((128, 128), 64).convert("RGB")  # noise: compresses badly, ~16 KB+
    with file_size_limit(4096):
        with pytest.raises(OSError):
            save_png_with_recipe(image, RECIPE, tmp_path)
    assert list(tmp_path.iterdir()) == []
    path = save_png_with_recipe(image, RECIPE, tmp_path)  # room again: saved whole
    assert read_png_recipe(path)[1]["seed"] == 1


def test_a_study_png_that_fails_leaves_no_partial_file(tmp_path):
    from helpers.studies.jobs import save_png

    with pytest.raises(TypeError):
        save_png(None, tmp_path / "0000.png", {"seed": 1})
    image = Image.effect_noise((128, 128), 64).convert("RGB")
    with file_size_limit(4096):
        with pytest.raises(OSError):
            save_png(image, tmp_path / "0001.png", {"seed": 1})
    assert list(tmp_path.iterdir()) == []
