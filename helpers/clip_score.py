"""CLIP score and CLIP zero-shot probabilities: a measured stand-in for "does the image show the prompt?".

CLIP score (Hessel et al. 2021, "CLIPScore"; torchmetrics' `CLIPScore`) is 100 x the cosine between
CLIP's image and text embeddings, clipped at 0. It rewards prompt adherence, not beauty; it
saturates, and CLIP's 77-token limit truncates long prompts. On the offline stand-in
(`helpers.tiny.tiny_clip_dir`) the weights are random, so every number is meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import devices, tiny
from .loading import use_stand_in

REAL_CLIP_ID = tiny.REAL_CLIP_ID


def clip_model_id(stand_in: bool | None = None) -> str:
    """The CLIP model to load: "openai/clip-vit-large-patch14", or the tiny random CLIP's local
    folder when running on the stand-in (same rule as `helpers.use_stand_in`)."""
    if use_stand_in(stand_in):
        return str(tiny.tiny_clip_dir())
    return REAL_CLIP_ID


def _as_images(images) -> list:
    """Accept one PIL image, GenerationResults, or a list of either; return PIL RGB images."""
    from PIL import Image

    if isinstance(images, Image.Image) or hasattr(images, "image"):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("images is empty: pass at least one PIL image.")
    out = []
    for i, image in enumerate(images):
        image = getattr(image, "image", image)  # a GenerationResult
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] must be a PIL image or a GenerationResult, not {type(image).__name__}.")
        out.append(image.convert("RGB"))
    return out


def _as_texts(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty: pass at least one text.")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name}[{i}] must be a non-empty string, not {text!r}.")
    return texts


@dataclass
class ClipScorer:
    """A CLIP model and its processor, loaded once; `score` and `zero_shot` batch through them."""

    model: object  # transformers.CLIPModel
    processor: object  # transformers.CLIPProcessor
    model_id: str
    device: str
    batch_size: int = 16

    @classmethod
    def load(cls, model_id_or_folder: str | Path, *, device: str = "auto", dtype=None, batch_size: int = 16):
        """Load with `CLIPModel.from_pretrained` + `CLIPProcessor.from_pretrained` (float16 on a
        CUDA GPU, float32 elsewhere, unless `dtype` says otherwise)."""
        from transformers import CLIPModel, CLIPProcessor

        device = devices.pick_device(device)
        if dtype is None:
            dtype = torch.float16 if device == "cuda" else torch.float32
        model = CLIPModel.from_pretrained(str(model_id_or_folder), dtype=dtype).to(device).eval()
        processor = CLIPProcessor.from_pretrained(str(model_id_or_folder))
        return cls(model, processor, str(model_id_or_folder), device, batch_size)

    @property
    def is_stand_in(self) -> bool:
        """True when the weights are the random offline stand-in (scores mean nothing)."""
        return Path(self.model_id).is_dir() and tiny.is_stand_in(self.model_id)

    @torch.no_grad()
    def _embed_images(self, images: list) -> torch.Tensor:
        """Unit-length image embeddings, as `CLIPModel.forward` computes them."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.processor(images=images[start : start + self.batch_size], return_tensors="pt")
            pixel_values = pixels["pixel_values"].to(self.device, self.model.dtype)
            pooled = self.model.vision_model(pixel_values=pixel_values).pooler_output
            chunks.append(self.model.visual_projection(pooled).float())
        embeds = torch.cat(chunks)
        return embeds / embeds.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-length text embeddings (texts past CLIP's 77 tokens are truncated)."""
        tokens = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        ).pooler_output
        embeds = self.model.text_projection(pooled).float()
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def score(self, images, texts) -> torch.Tensor:
        """CLIP score per (image, text) pair: max(100 x cosine, 0), a float32 CPU tensor of
        len(images). `texts` is one string for every image, or one string per image."""
        images = _as_images(images)
        texts = _as_texts(texts, "texts")
        if len(texts) == 1:
            texts = texts * len(images)
        if len(texts) != len(images):
            raise ValueError(
                f"{len(images)} images but {len(texts)} texts: pass one text, or one per image."
            )
        image_embeds = self._embed_images(images)
        distinct = sorted(set(texts))
        text_embeds = self._embed_texts(distinct)
        rows = torch.tensor([distinct.index(t) for t in texts], device=text_embeds.device)
        cosine = (image_embeds * text_embeds[rows]).sum(dim=-1)
        return (100 * cosine).clamp(min=0).cpu()

    def zero_shot(self, images, labels: list[str]) -> torch.Tensor:
        """Zero-shot classification: for each image, softmax over `labels` of CLIP's logits
        (logit_scale x cosine). Returns a (len(images), len(labels)) float32 CPU tensor; rows sum to 1."""
        images = _as_images(images)
        labels = _as_texts(labels, "labels")
        if len(labels) < 2:
            raise ValueError("zero_shot needs at least two labels to choose between (e.g. 'a cake', 'no cake').")
        image_embeds = self._embed_images(images)
        text_embeds = self._embed_texts(labels)
        logit_scale = self.model.logit_scale.exp().float()
        logits = logit_scale * image_embeds @ text_embeds.T
        return logits.softmax(dim=-1).cpu()
