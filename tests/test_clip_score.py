"""ClipScorer on the tiny random CLIP: the maths matches CLIPModel's own forward pass, inputs are checked."""

import pytest
import torch
from PIL import Image

from helpers import tiny
from helpers.clip_score import REAL_CLIP_ID, ClipScorer, clip_model_id


@pytest.fixture(scope="module")
def scorer(tiny_dir):
    return ClipScorer.load(tiny.tiny_clip_dir(), device="cpu")


def _images():
    g = torch.Generator().manual_seed(0)
    noise = (torch.rand(3, 48, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
    return [Image.fromarray(a) for a in noise]


def test_clip_model_id_picks_the_stand_in_or_the_real_model(tiny_dir):
    assert clip_model_id(stand_in=False) == REAL_CLIP_ID
    folder = clip_model_id(stand_in=True)
    assert tiny.is_stand_in(folder)
    assert tiny.tiny_clip_dir() == tiny.tiny_clip_dir()  # built once, reused


def test_stand_in_is_small_and_loads_through_from_pretrained(scorer):
    assert scorer.is_stand_in
    size = sum(f.stat().st_size for f in tiny.tiny_clip_dir().iterdir())
    assert size < 5e6
    assert type(scorer.model).__name__ == "CLIPModel"
    assert type(scorer.processor).__name__ == "CLIPProcessor"


def test_score_is_100_times_cosine_clipped_at_zero(scorer):
    images, texts = _images(), ["a cat on a sofa", "a birthday cake", "a lighthouse at dusk"]
    got = scorer.score(images, texts)
    with torch.no_grad():
        out = scorer.model(**scorer.processor(text=texts, images=images, return_tensors="pt", padding=True))
    cosine = (out.image_embeds * out.text_embeds).sum(-1)  # CLIPModel's own normalised embeddings
    assert got.shape == (3,)
    assert torch.allclose(got, (100 * cosine).clamp(min=0), atol=1e-4)
    assert (got >= 0).all()


def test_one_text_is_used_for_every_image(scorer):
    images = _images()
    assert torch.allclose(scorer.score(images, "a birthday cake"), scorer.score(images, ["a birthday cake"] * 3))


def test_score_accepts_generation_results(scorer, tiny_pipe):
    from helpers import generate

    result = generate(tiny_pipe, "a birthday cake", num_inference_steps=2)
    assert torch.equal(scorer.score([result], "a birthday cake"), scorer.score(result.image, "a birthday cake"))


def test_zero_shot_is_the_softmax_of_clip_logits(scorer):
    images, labels = _images(), ["a photo with a birthday cake", "a photo without a birthday cake"]
    probs = scorer.zero_shot(images, labels)
    with torch.no_grad():
        out = scorer.model(**scorer.processor(text=labels, images=images, return_tensors="pt", padding=True))
    assert probs.shape == (3, 2)
    assert torch.allclose(probs, out.logits_per_image.softmax(-1), atol=1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-6)


def test_bad_inputs_fail_clearly(scorer):
    images = _images()
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        scorer.score(images, ["a", "b"])
    with pytest.raises(ValueError, match="images is empty"):
        scorer.score([], "a cat")
    with pytest.raises(TypeError, match=r"images\[0\]"):
        scorer.score(["not an image"], "a cat")
    with pytest.raises(ValueError, match="at least two labels"):
        scorer.zero_shot(images, ["cake"])
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        scorer.zero_shot(images, ["cake", ""])
