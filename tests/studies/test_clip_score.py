"""CLIP scoring: shapes, ranges, pairing, zero-shot probabilities, and the tiny offline CLIP."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.studies.clip_score import REAL_CLIP, ClipScorer, clip_model_id


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer.load(clip_model_id(stand_in=True), device="cpu")


def noise_images(n, seed=0, size=64):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_model_ids():
    assert clip_model_id(stand_in=False) == REAL_CLIP == "openai/clip-vit-large-patch14"
    folder = clip_model_id(stand_in=True)
    assert folder != REAL_CLIP and (Path(folder) / "config.json").is_file()


def test_tiny_clip_loads_through_from_pretrained_and_is_deterministic(scorer):
    from transformers import CLIPModel

    assert isinstance(scorer.model, CLIPModel)
    again = ClipScorer.load(clip_model_id(stand_in=True), device="cpu")
    images, texts = noise_images(3), ["a fox", "a red fox in snow", "a cat"]
    assert torch.equal(scorer.score(images, texts), again.score(images, texts))
    assert torch.equal(scorer.zero_shot(images, texts), again.zero_shot(images, texts))


def test_score_is_one_value_per_pair_in_range(scorer):
    scores = scorer.score(noise_images(4), ["a fox", "a dog", "snow", "a painting of a fox"])
    assert scores.shape == (4,) and scores.dtype == torch.float32
    assert bool(((scores >= 0) & (scores <= 100)).all())


def test_score_pairs_each_image_with_its_own_text(scorer):
    images, texts = noise_images(2, seed=1), ["a red fox", "a blue car parked outside"]
    paired = scorer.score(images, texts)
    one_by_one = torch.cat([scorer.score([im], [t]) for im, t in zip(images, texts)])
    assert torch.allclose(paired, one_by_one, atol=1e-4)
    swapped = scorer.score(images, texts[::-1])
    assert not torch.allclose(paired, swapped)


def test_one_text_is_used_for_every_image(scorer):
    images = noise_images(3, seed=2)
    assert torch.allclose(scorer.score(images, "a fox"), scorer.score(images, ["a fox"] * 3))


def test_score_rejects_unpaired_input(scorer):
    with pytest.raises(ValueError, match="2 images, 3 texts"):
        scorer.score(noise_images(2), ["a", "b", "c"])


def test_zero_shot_rows_are_probabilities(scorer):
    labels = ["a fox", "a dog", "a car"]
    probabilities = scorer.zero_shot(noise_images(4, seed=3), labels)
    assert probabilities.shape == (4, 3)
    assert bool((probabilities >= 0).all())
    assert torch.allclose(probabilities.sum(dim=-1), torch.ones(4), atol=1e-5)


def test_zero_shot_needs_two_labels(scorer):
    with pytest.raises(ValueError, match="at least two labels"):
        scorer.zero_shot(noise_images(1), ["a fox"])


@pytest.mark.parametrize("model_id, error, match", [
    ("/nonexistent", FileNotFoundError, "neither a Hub id .*nor a folder with a saved CLIP model"),
    ("./no-such-folder", FileNotFoundError, "neither a Hub id"),
    (None, TypeError, "model_id must be a CLIP Hub id or folder"),
    (123, TypeError, "model_id must be"),
])
def test_loading_a_missing_scorer_is_one_clear_error(tmp_path, model_id, error, match):
    with pytest.raises(error, match=match):
        ClipScorer.load(model_id, device="cpu")
    with pytest.raises(FileNotFoundError, match="neither a Hub id"):
        ClipScorer.load(str(tmp_path), device="cpu")  # an empty folder


@pytest.mark.parametrize("images, error, match", [
    ([], ValueError, "images is empty"), ([None], TypeError, r"images\[0\] must be a PIL image"),
    (["cat.png"], TypeError, r"images\[0\] must be a PIL image .*not str"), (None, TypeError, "images must be a list"),
])
def test_images_that_are_not_images_are_one_clear_error(scorer, images, error, match):
    with pytest.raises(error, match=match):
        scorer.zero_shot(images, ["a fox", "a dog"])
    with pytest.raises(error, match=match):
        scorer.score(images, "a fox")


@pytest.mark.parametrize("call, match", [
    (lambda s, images: s.score(images, [None]), r"texts\[0\] must be a string, not NoneType"),
    (lambda s, images: s.score(images, None), r"texts must be a list of strings, not NoneType"),
    (lambda s, images: s.zero_shot(images, [1, 2]), r"labels\[0\] must be a string, not int"),
    (lambda s, images: s.zero_shot(images, "ab"), r"labels must be a list of strings, not str 'ab'"),
])
def test_texts_and_labels_that_are_not_lists_of_strings_are_one_clear_error(scorer, call, match):
    with pytest.raises(TypeError, match=match):
        call(scorer, noise_images(1))
