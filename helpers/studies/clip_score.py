"""CLIP scoring: how well an image matches a text, and zero-shot "does it contain X?".

CLIP embeds images and texts in one space. The CLIP score (Hessel et al., 2021) is
100 x cosine(image, text), floored at 0: higher means the image follows the prompt more closely.
Zero-shot classification softmaxes CLIP's scaled similarities over a list of labels.
On real runs the scorer is openai/clip-vit-large-patch14; offline it is a tiny random CLIP
(helpers.stand_in.tiny_clip_dir), loaded the same way, whose scores mean nothing.
"""

from __future__ import annotations

import torch

REAL_CLIP = "openai/clip-vit-large-patch14"


def clip_model_id(stand_in: bool) -> str:
    """The scorer to load: the real CLIP ViT-L/14, or the tiny offline one."""
    if stand_in:
        from ..stand_in import tiny_clip_dir

        return str(tiny_clip_dir())
    return REAL_CLIP


class ClipScorer:
    """A CLIP model and its processor, scoring PIL images against texts."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model.eval().to(device), processor, device

    @classmethod
    def load(cls, model_id: str = REAL_CLIP, device: str = "auto") -> ClipScorer:
        """Load a CLIP checkpoint (Hub id or folder) onto `device` ("auto": cuda, mps, cpu)."""
        from transformers import CLIPModel, CLIPProcessor

        from ..loading.devices import pick_device

        device = pick_device(device)
        return cls(CLIPModel.from_pretrained(model_id), CLIPProcessor.from_pretrained(model_id), device)

    @torch.no_grad()
    def _embed(self, images, texts):
        inputs = self.processor(text=list(texts), images=list(images), return_tensors="pt", padding=True,
                                truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model(**inputs)
        image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return image, text

    def score(self, images, texts) -> torch.Tensor:
        """CLIP score of each image against its own text (pairs, same length): 100 x cosine, >= 0."""
        images, texts = list(images), [texts] * len(images) if isinstance(texts, str) else list(texts)
        if len(images) != len(texts):
            raise ValueError(f"score() pairs images with texts: got {len(images)} images, {len(texts)} texts.")
        image, text = self._embed(images, texts)
        return (100 * (image * text).sum(-1)).clamp(min=0).cpu()

    @torch.no_grad()
    def zero_shot(self, images, labels) -> torch.Tensor:
        """Probability of each label per image, shape [images, labels] (softmax over the labels)."""
        labels = list(labels)
        if len(labels) < 2:
            raise ValueError("zero_shot() needs at least two labels to choose between.")
        image, text = self._embed(list(images), labels)
        logits = self.model.logit_scale.exp().float().cpu() * (image @ text.T).cpu()
        return logits.softmax(dim=-1)
