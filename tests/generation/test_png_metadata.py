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


@pytest.mark.parametrize("stem", ["../escape", "/tmp/absolute", "a/b", "..", "a\\b"])
def test_a_stem_cannot_leave_the_folder(tmp_path, stem):
    folder = tmp_path / "inside"
    with pytest.raises(ValueError, match="stem=.*plain file name"):
        save_png_with_recipe(Image.new("RGB", (8, 8)), RECIPE, folder, stem=stem)
    assert list(tmp_path.rglob("*.png")) == []


@pytest.mark.parametrize("seed", ["../x", None, 1.5, -1])
def test_a_recipe_seed_is_checked_before_it_names_a_file(tmp_path, seed):
    with pytest.raises((TypeError, ValueError), match="seed"):
        save_png_with_recipe(Image.new("RGB", (8, 8)), {**RECIPE, "seed": seed}, tmp_path / "inside")
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("recipe, match", [
    ([1, 2], "recipe must be a recipe dict"),
    (None, "recipe must be a recipe dict"),
    ({k: v for k, v in RECIPE.items() if k != "seed"}, "lacks seed"),
    ({k: v for k, v in RECIPE.items() if k != "num_inference_steps"}, "lacks num_inference_steps"),
    ({**RECIPE, "guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
])
def test_a_bad_recipe_is_refused_before_any_file(tmp_path, recipe, match):
    with pytest.raises((TypeError, ValueError), match=match):
        save_png_with_recipe(Image.new("RGB", (8, 8)), recipe, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_study_png_recipe_is_standard_json(tmp_path):
    from helpers.studies.jobs import save_png

    with pytest.raises(ValueError, match="JSON"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "0000.png", {"guidance_scale": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("image, match", [
    (Image.new("F", (8, 8)), "mode 'F'"), (Image.new("RGB", (0, 0)), "0x0 pixels"),
    (Image.new("CMYK", (8, 8)), "mode 'CMYK'"),
])
def test_an_image_png_cannot_hold_is_one_clear_error(tmp_path, image, match):
    with pytest.raises(ValueError, match=match):
        save_png_with_recipe(image, RECIPE, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_the_folder_should_be_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("the user's notes")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        save_png_with_recipe(Image.new("RGB", (8, 8)), RECIPE, blocker)
    for folder in (None, 123):
        with pytest.raises(TypeError, match="folder must be a folder path"):
            save_png_with_recipe(Image.new("RGB", (8, 8)), RECIPE, folder)
    assert blocker.read_text() == "the user's notes"


def test_recipe_readers_give_one_clear_error(tmp_path):
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        read_png_recipe(text_file)
    with pytest.raises(TypeError, match="path must be a PNG file's path"):
        read_png_recipe(None)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_png_recipe(tmp_path)

    def png_with_recipe_text(name, recipe_text):
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("sd35_recipe", recipe_text)
        Image.new("RGB", (8, 8)).save(tmp_path / name, pnginfo=info)
        return tmp_path / name

    with pytest.raises(ValueError, match="not valid JSON"):
        read_png_recipe(png_with_recipe_text("broken.png", '{"prompt": "a cat"'))
    with pytest.raises(TypeError, match="must be a recipe dict"):
        read_png_recipe(png_with_recipe_text("list.png", "[1, 2]"))
    without_seed = {k: v for k, v in RECIPE.items() if k != "seed"}
    with pytest.raises(ValueError, match="lacks seed"):
        read_png_recipe(png_with_recipe_text("no-seed.png", json.dumps(without_seed)))
    with pytest.raises(ValueError, match="seed is None"):
        read_png_recipe(png_with_recipe_text("none-seed.png", json.dumps({**RECIPE, "seed": None})))


def test_a_prompt_without_a_settings_line_is_kept():
    assert parse_a1111_parameters("a cat")["prompt"] == "a cat"
    parsed = parse_a1111_parameters("a cat\nNegative prompt: a dog")
    assert (parsed["prompt"], parsed["negative_prompt"]) == ("a cat", "a dog")
    with pytest.raises(TypeError, match="text must be"):
        parse_a1111_parameters(None)


def test_a_stem_too_long_for_a_file_name_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"stem is 10000 bytes long, more than the 200"):
        save_png_with_recipe(Image.new("RGB", (8, 8)), RECIPE, tmp_path, stem="x" * 10_000)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_folder_or_a_path_through_a_file_is_named(tmp_path):
    from read_only import read_only

    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"folder='.*file/sub' cannot be made: a part of that path is a file"):
        save_png_with_recipe(Image.new("RGB", (8, 8)), RECIPE, tmp_path / "file" / "sub")
    with read_only(tmp_path / "ro") as folder:
        with pytest.raises(PermissionError, match=r"folder='.*ro' cannot be written to"):
            save_png_with_recipe(Image.new("RGB", (8, 8)), RECIPE, folder)
        assert list(folder.iterdir()) == []


def test_a_missing_or_truncated_png_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path='.*missing.png' does not exist"):
        read_png_recipe(tmp_path / "missing.png")
    whole = save_png_with_recipe(Image.new("RGB", (64, 64)), RECIPE, tmp_path)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut.png is a damaged or truncated image"):
        read_png_recipe(cut)
