"""CLIP scoring: how well an image matches a text, and zero-shot "does it contain X?".

CLIP embeds images and texts in one space. The CLIP score (Hessel et al., 2021) is
100 x cosine(image, text), floored at 0: higher means the image follows the prompt more closely.
Zero-shot classification softmaxes CLIP's scaled similarities over a list of labels.
On real runs the scorer is openai/clip-vit-large-patch14; offline it is a tiny random CLIP
(helpers.stand_in.tiny_clip_dir), loaded the same way, whose scores mean nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

REAL_CLIP = "openai/clip-vit-large-patch14"


def clip_model_id(stand_in: bool) -> str:
    """The scorer to load: the real CLIP ViT-L/14, or the tiny offline one."""
    if stand_in:
        from ..stand_in import tiny_clip_dir

        return str(tiny_clip_dir())
    return REAL_CLIP


def _check_images(images) -> list:
    """A non-empty list of PIL images (GenerationResults welcome), or one clear error."""
    from PIL import Image

    if isinstance(images, (str, bytes, Image.Image)) or not isinstance(images, Iterable):
        raise TypeError(f"images must be a list of PIL images, not {type(images).__name__} {images!r:.60}.")
    images = [getattr(image, "image", image) for image in images]
    if not images:
        raise ValueError("images is empty: give at least one PIL image to score.")
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] must be a PIL image (or a GenerationResult), not {type(image).__name__} "
                            f"{image!r:.40}.")
    return images


def _check_texts(texts, name: str) -> list[str]:
    """A list of strings (one str is refused for labels: 'ab' would be the labels 'a' and 'b')."""
    if isinstance(texts, (str, bytes, dict)) or not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a list of strings, not {type(texts).__name__} {texts!r:.60}.")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, not {type(text).__name__} {text!r:.40}.")
    return texts


def check_model_source(model_id, family: str, real: str) -> None:
    """One clear error, before any loading, for a `model_id` that is neither a Hub id ('owner/name') nor
    a folder holding a saved `family` model (config.json); `real` is the checkpoint to suggest."""
    if not isinstance(model_id, (str, os.PathLike)) or not str(model_id):
        article = "an" if family[0] in "AEIOU" else "a"
        raise TypeError(f"model_id must be {article} {family} Hub id or folder (e.g. {real!r}), not "
                        f"{type(model_id).__name__} {model_id!r:.60}.")
    text = str(model_id)
    is_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not os.path.exists(text)
    if not is_hub_id and not (Path(text).expanduser() / "config.json").is_file():
        raise FileNotFoundError(f"model_id={text!r:.120} is neither a Hub id ('owner/name') nor a folder with a "
                                f"saved {family} model (config.json); the real one is {real!r}.")


class ClipScorer:
    """A CLIP model and its processor, scoring PIL images against texts."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model.eval().to(device), processor, device

    @classmethod
    def load(cls, model_id: str = REAL_CLIP, device: str = "auto") -> ClipScorer:
        """Load a CLIP checkpoint (Hub id or folder) onto `device` ("auto": cuda, mps, cpu)."""
        from transformers import CLIPModel, CLIPProcessor

        from ..loading.devices import pick_device

        check_model_source(model_id, "CLIP", REAL_CLIP)
        device = pick_device(device)
        return cls(CLIPModel.from_pretrained(model_id), CLIPProcessor.from_pretrained(model_id), device)

    @torch.no_grad()
    def _embed(self, images, texts):
        images = _check_images(images)
        inputs = self.processor(text=list(texts), images=list(images), return_tensors="pt", padding=True,
                                truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model(**inputs)
        image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return image, text

    def score(self, images, texts) -> torch.Tensor:
        """CLIP score of each image against its own text (pairs, same length): 100 x cosine, >= 0."""
        images = _check_images(images)
        texts = [texts] * len(images) if isinstance(texts, str) else _check_texts(texts, "texts")
        if len(images) != len(texts):
            raise ValueError(f"score() pairs images with texts: got {len(images)} images, {len(texts)} texts.")
        image, text = self._embed(images, texts)
        return (100 * (image * text).sum(-1)).clamp(min=0).cpu()

    @torch.no_grad()
    def zero_shot(self, images, labels) -> torch.Tensor:
        """Probability of each label per image, shape [images, labels] (softmax over the labels)."""
        labels = _check_texts(labels, "labels")
        if len(labels) < 2:
            raise ValueError("zero_shot() needs at least two labels to choose between.")
        image, text = self._embed(images, labels)
        logits = self.model.logit_scale.exp().float().cpu() * (image @ text.T).cpu()
        return logits.softmax(dim=-1)
