import json

from PIL import Image

from helpers.png_metadata import (
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
