"""A second, prompt-independent measure: does an open-vocabulary detector find the object at all?

CLIP's P(object) compares the image with two texts, so a placement prompt that changes the whole
scene can move it without any cake appearing or leaving. OWL-ViT (Minderer et al., 2022, in
transformers; its v2 needs scipy, which this project does not install) scores every box of the
image against one text query; an image's score is its best box's probability. On real runs it is google/owlvit-base-patch32; offline a tiny random
OWL-ViT with a locally made tokenizer, built like the tiny CLIP (helpers.stand_in), whose scores mean nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .clip_score import _check_images, check_model_source

REAL_DETECTOR = "google/owlvit-base-patch32"
TINY_SIZE = 32  # pixels the tiny detector sees (4 x 4 patches of 8)


def detector_model_id(stand_in: bool) -> str:
    """The detector to load: OWL-ViT base, or the tiny offline one."""
    return str(tiny_detector_dir()) if stand_in else REAL_DETECTOR


def tiny_detector_dir(folder=None) -> Path:
    """A folder holding a random-weight `OwlViTForObjectDetection` + `OwlViTProcessor`, built once; it loads
    through the same `from_pretrained` calls as the real OWL-ViT."""
    from ..stand_in import _build_once, default_tiny_dir

    folder = Path(folder) if folder is not None else default_tiny_dir().with_name(default_tiny_dir().name + "-owlvit")
    return _build_once(folder, "config.json", _save_tiny_detector)


def _save_tiny_detector(folder: Path) -> None:
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    from ..stand_in import STAND_IN_MARKER, _make_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _make_clip_tokenizer(Path(tmp) / "clip")
        tokenizer.model_max_length = 16  # OWL-ViT's queries are 16 tokens, as in the real checkpoint
        layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        config = OwlViTConfig(
            text_config=dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             max_position_embeddings=16, **layers),
            vision_config=dict(image_size=TINY_SIZE, patch_size=8, **layers),
            projection_dim=32,
        )
        torch.manual_seed(7)
        model = OwlViTForObjectDetection(config).eval()
        pixels = {"height": TINY_SIZE, "width": TINY_SIZE}
        processor = OwlViTProcessor(image_processor=OwlViTImageProcessor(size=pixels, crop_size=pixels), tokenizer=tokenizer)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    (folder / STAND_IN_MARKER).write_text("Offline stand-in for an OWL-ViT detector: random weights, scores are noise.\n")


class ObjectDetector:
    """An OWL-ViT detector and its processor: how sure it is that each image holds the queried object."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model.eval().to(device), processor, device

    @classmethod
    def load(cls, model_id: str = REAL_DETECTOR, device: str = "auto") -> ObjectDetector:
        """Load an OWL-ViT checkpoint (Hub id or folder) onto `device` ("auto": cuda, mps, cpu)."""
        from transformers import OwlViTForObjectDetection, OwlViTProcessor

        from ..loading.devices import pick_device

        check_model_source(model_id, "OWL-ViT", REAL_DETECTOR)
        device = pick_device(device)
        return cls(OwlViTForObjectDetection.from_pretrained(model_id), OwlViTProcessor.from_pretrained(model_id), device)

    @torch.no_grad()
    def presence(self, images, query: str, batch_size: int = 16) -> torch.Tensor:
        """Per image, the probability of its most likely box for `query` (e.g. "a birthday cake"), in [0, 1]."""
        images = _check_images(images)
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query must be a non-empty text, such as 'a birthday cake', not {query!r:.60}.")
        scores = []
        for start in range(0, len(images), batch_size):  # a study's images, a few at a time
            batch = [im.convert("RGB") for im in images[start:start + batch_size]]
            inputs = self.processor(text=[[query]] * len(batch), images=batch, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            logits = self.model(**inputs).logits  # [images, boxes, queries]
            scores.append(logits[..., 0].float().sigmoid().amax(dim=1).cpu())
        return torch.cat(scores)


def agreement(scores, labels, threshold: float = 0.5) -> dict:
    """How well a score agrees with hand labels (True: the object is visibly there): the share of images
    it classifies right at `threshold`, and the chance a labelled-present image outscores a labelled-absent
    one (AUC; 0.5 is a coin). Empty labels give n = 0 and NaNs: nothing was checked."""
    pairs = [(float(s), bool(label)) for s, label in zip(scores, labels, strict=True)]
    present = [s for s, label in pairs if label]
    absent = [s for s, label in pairs if not label]
    accuracy = sum((s >= threshold) == label for s, label in pairs) / len(pairs) if pairs else float("nan")
    if present and absent:
        wins = sum((p > a) + 0.5 * (p == a) for p in present for a in absent)
        auc = wins / (len(present) * len(absent))
    else:
        auc = float("nan")
    return dict(n=len(pairs), present=len(present), absent=len(absent), accuracy=accuracy, auc=auc)
