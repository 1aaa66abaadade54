"""Encode a prompt once, reuse it for many generations.

SD3.5 runs three text encoders (CLIP-L, CLIP-G, T5-XXL) on every call. A guidance sweep or a
slider move changes nothing about the text, so the embeddings can be computed once and passed
to the pipeline as `prompt_embeds`/`pooled_prompt_embeds` (and their negative twins).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptEmbeddings:
    """The four tensors `StableDiffusion3Pipeline.encode_prompt` returns, and the text behind them."""

    prompt: str
    negative_prompt: str | None
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor

    def as_pipeline_kwargs(self) -> dict:
        """Keyword arguments for the pipeline call, in place of `prompt`/`negative_prompt`."""
        return {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
            "pooled_prompt_embeds": self.pooled_prompt_embeds,
            "negative_pooled_prompt_embeds": self.negative_pooled_prompt_embeds,
        }


@torch.no_grad()
def encode_prompt(pipe, prompt: str, negative_prompt: str | None = None) -> PromptEmbeddings:
    """Run the three text encoders once for `prompt` and `negative_prompt`.

    The negative branch is always encoded (an empty negative prompt is still a text), so the
    result works for any guidance_scale."""
    pe, npe, ppe, nppe = pipe.encode_prompt(
        prompt=prompt,
        prompt_2=None,
        prompt_3=None,
        negative_prompt=negative_prompt,
        do_classifier_free_guidance=True,
        device=pipe._execution_device,
    )
    return PromptEmbeddings(prompt, negative_prompt, pe, npe, ppe, nppe)


class PromptCache:
    """Embeddings per (prompt, negative prompt), for one pipeline; oldest dropped past `size`."""

    def __init__(self, pipe, size: int = 16):
        self.pipe, self.size = pipe, size
        self._entries: dict[tuple, PromptEmbeddings] = {}
        self.hits = self.misses = 0

    def get(self, prompt: str, negative_prompt: str | None = None) -> PromptEmbeddings:
        key = (prompt, negative_prompt or "")
        if key in self._entries:
            self.hits += 1
            self._entries[key] = self._entries.pop(key)  # most recently used goes last
            return self._entries[key]
        self.misses += 1
        embeddings = encode_prompt(self.pipe, prompt, negative_prompt)
        self._entries[key] = embeddings
        while len(self._entries) > self.size:
            self._entries.pop(next(iter(self._entries)))
        return embeddings
