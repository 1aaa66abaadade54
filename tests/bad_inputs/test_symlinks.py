"""Class 1: a dangling symbolic link where a file or folder is to be written is a taken name or
one clear error, never an endless retry or a failure after the work."""

import os
from pathlib import Path

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from hangs import finishes_within
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from helpers.generation.png_metadata import read_png_recipe, save_png_with_recipe
from helpers.output_folders import check_folder, write_atomically

RECIPE = {
    "model": "tiny", "scheduler": "FlowMatchEulerDiscreteScheduler", "prompt": "a cat", "negative_prompt": None,
    "guidance_scale": 3.5, "num_inference_steps": 4, "seed": 1, "height": 8, "width": 8,
}
# What may already sit at each candidate name: nothing, a file, a dangling link, a link to a file.
OCCUPANTS = st.sampled_from(["free", "file", "dangling", "link"])


def _occupy(path: Path, occupant: str, elsewhere: Path) -> None:
    if occupant == "file":
        path.write_bytes(b"mine")
    elif occupant == "dangling":
        path.symlink_to(elsewhere / f"gone-{path.name}")
    elif occupant == "link":
        target = elsewhere / f"kept-{path.name}"
        target.write_bytes(b"mine too")
        path.symlink_to(target)


def _snapshot(folder: Path) -> dict:
    return {p.name: (os.readlink(p) if p.is_symlink() else p.read_bytes()) for p in folder.iterdir()}


@given(occupants=st.lists(OCCUPANTS, max_size=6))
def test_save_png_skips_every_taken_name_and_changes_none(tmp_path_factory, occupants):
    folder, elsewhere = tmp_path_factory.mktemp("saved"), tmp_path_factory.mktemp("elsewhere")
    names = ["sd35-seed1.png"] + [f"sd35-seed1-{n}.png" for n in range(2, len(occupants) + 1)]
    for name, occupant in zip(names, occupants):
        _occupy(folder / name, occupant, elsewhere)
    before = _snapshot(folder)
    path = finishes_within(20, save_png_with_recipe, Image.new("RGB", (8, 8)), RECIPE, folder)
    assert path.name not in before and path.is_file() and not path.is_symlink()
    assert read_png_recipe(path)[1]["seed"] == 1
    after = _snapshot(folder)
    assert {k: v for k, v in after.items() if k != path.name} == before
    assert not any(elsewhere.glob("gone-*"))  # nothing was written through a dangling link


def test_write_atomically_takes_a_dangling_link_for_a_taken_name(tmp_path):
    link = tmp_path / "out.txt"
    link.symlink_to(tmp_path / "missing.txt")
    with pytest.raises(FileExistsError, match="already exists"):
        write_atomically(link, "x")
    assert not (tmp_path / "missing.txt").exists() and link.is_symlink()


@pytest.mark.parametrize("name", ["save_dir", "root", "folder"])
def test_a_dangling_link_as_a_folder_is_one_clear_error(tmp_path, name):
    link = tmp_path / "outputs"
    link.symlink_to(tmp_path / "not-made")
    with pytest.raises(FileNotFoundError, match=rf"{name}=.*symbolic link to .*not-made.*does not exist"):
        check_folder(link, name)


def test_studio_with_a_dangling_save_dir_is_refused_before_anything(tiny_pipe, tmp_path):
    from helpers.studio.view import Studio

    link = tmp_path / "studio"
    link.symlink_to(tmp_path / "not-made")
    with pytest.raises(FileNotFoundError, match="save_dir=.*symbolic link"):
        Studio(tiny_pipe, save_dir=link)


def test_studio_save_moves_past_a_dangling_link(tiny_pipe, tmp_path):
    from helpers.studio.view import Studio

    studio = Studio(tiny_pipe, save_dir=tmp_path / "saved")
    try:
        studio.seed.value = 1
        studio.generate_button.click()
        studio.wait_idle(30)
        assert studio.current is not None, studio.message.value
        (tmp_path / "saved").mkdir(exist_ok=True)
        (tmp_path / "saved" / "sd35-seed1.png").symlink_to(tmp_path / "gone.png")
        path = finishes_within(20, studio.save)
        assert path.name == "sd35-seed1-2.png" and read_png_recipe(path)[1]["seed"] == 1
    finally:
        studio.cancel()
        studio.wait_idle(30)


def test_save_quantized_into_a_linked_folder_lands_in_its_target(tiny_pipe, tmp_path, monkeypatch):
    """A symbolic link to an empty folder is followed (before, the rename failed after the weights
    were serialized); a link to a missing folder is refused before any write."""
    from helpers.loading import quantized_checkpoints

    monkeypatch.setattr(quantized_checkpoints, "is_quantized", lambda module: module is tiny_pipe.transformer)
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    saved = quantized_checkpoints.save_quantized(tiny_pipe, link)
    assert (target / "transformer" / "config.json").is_file() and link.is_symlink()
    assert saved == {"transformer": link / "transformer"}
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="folder=.*symbolic link"):
        quantized_checkpoints.save_quantized(tiny_pipe, dangling)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
