"""Encode a prompt once, reuse it for many generations.

SD3.5 runs three text encoders (CLIP-L, CLIP-G, T5-XXL) on every call. A guidance sweep or a
slider move changes nothing about the text, so the embeddings can be computed once and passed
to the pipeline as `prompt_embeds`/`pooled_prompt_embeds` (and their negative twins).
Embeddings remember which text encoders made them (`source`): another pipeline's (T5 dropped,
another model) would make an image its recipe cannot reproduce, so they are refused; one exception:
embeddings encoded with T5 before the transformer loaded (`staged_t5`, helpers.loading.staged_t5)
are taken by the same model's pipeline without T5, since its CLIPs are the ones that made them.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

import torch

from . import pipeline_lock, validation

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


STAGED_T5 = ("nf4", "full")  # the T5s a staged pipeline encodes with (planner's `staged_t5`)


def check_staged_t5(value, name: str = "staged_t5") -> None:
    """`value` is written into the recipe as `t5="<value>, staged"`: only None or a T5 that stages."""
    if value is not None and value not in STAGED_T5:
        raise ValueError(f"{name} must be None or one of {', '.join(map(repr, STAGED_T5))} (the T5 that encoded "
                         f"them, as encode_prompt records it), not {value!r:.60}: encode the prompt again with "
                         "encode_prompt(pipe, prompt, negative_prompt).")


@dataclass(frozen=True)
class PromptEmbeddings:
    """The four tensors `StableDiffusion3Pipeline.encode_prompt` returns, the text behind them, and
    `source`: which text encoders made them (`text_encoders_id` of the pipeline)."""

    prompt: str
    negative_prompt: str | None
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor
    source: str = "unknown"
    staged_t5: str | None = None  # "nf4" or "full": T5 encoded them before the transformer loaded (staged)

    def as_pipeline_kwargs(self) -> dict:
        """Keyword arguments for the pipeline call, in place of `prompt`/`negative_prompt`."""
        return {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
            "pooled_prompt_embeds": self.pooled_prompt_embeds,
            "negative_pooled_prompt_embeds": self.negative_pooled_prompt_embeds,
        }


def text_encoders_id(pipe) -> str:
    """Which text encoders `pipe` runs (class, weights folder, dtype, quantized or not; "none" for
    a dropped one), as one line: equal lines give equal embeddings for the same text."""
    parts = []
    for name in TEXT_ENCODERS:
        model = getattr(pipe, name, None)
        if model is None:
            parts.append(f"{name}=none")
            continue
        config = getattr(model, "config", None)
        quantized = getattr(config, "quantization_config", None) is not None
        parts.append(
            f"{name}={type(model).__name__}({getattr(config, '_name_or_path', '?')}, "
            f"{str(getattr(model, 'dtype', '?')).removeprefix('torch.')}{', quantized' if quantized else ''})"
        )
    return "; ".join(parts)


def check_embeddings(pipe, embeddings, prompt=None, negative_prompt=None) -> None:
    """`embeddings` must come from `encode_prompt` with this pipeline's text encoders, and agree
    with a `prompt`/`negative_prompt` given beside them (never silently dropped)."""
    if not isinstance(embeddings, PromptEmbeddings):
        raise TypeError(
            "embeddings must be the PromptEmbeddings that encode_prompt(pipe, prompt) or "
            f"PromptCache(pipe).get(prompt) returns, not {type(embeddings).__name__}."
        )
    if prompt is not None and prompt != embeddings.prompt:
        raise ValueError("prompt and embeddings disagree: pass one or the other.")
    if negative_prompt is not None and (negative_prompt or None) != (embeddings.negative_prompt or None):
        raise ValueError(
            f"negative_prompt={negative_prompt!r} disagrees with the embeddings, which were encoded "
            f"with negative_prompt={embeddings.negative_prompt!r}. Encode it with them: "
            "encode_prompt(pipe, prompt, negative_prompt), or pass no negative_prompt."
        )
    check_staged_t5(embeddings.staged_t5, "embeddings.staged_t5")
    here = text_encoders_id(pipe)
    staged = embeddings.staged_t5 is not None and here.endswith("; text_encoder_3=none")
    if embeddings.source != here and not (staged and _clips(embeddings.source) == _clips(here)):
        # (staged: T5's embeddings, made before this T5-less pipeline loaded, with its own CLIPs)
        raise ValueError(
            "These embeddings were made by other text encoders than this pipeline's, so the "
            "recipe could not reproduce the image. Encode the prompt with this pipeline: "
            f"encode_prompt(pipe, prompt, negative_prompt).\n  embeddings from: {embeddings.source}\n"
            f"  this pipeline:   {here}"
        )
    check_tensors(pipe, embeddings)


def _clips(source: str) -> str:
    """The CLIP part of a `text_encoders_id` line."""
    return source.split("; text_encoder_3=")[0]


TENSORS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


def check_tensors(pipe, embeddings: PromptEmbeddings) -> None:
    """The four tensors must be what this pipeline's transformer takes for one image: the text as
    (1, tokens, joint_attention_dim), the pooled as (1, pooled_projection_dim), positive and negative
    alike, in the transformer's dtype, with no NaN or infinity (which would only show as a NaN image)."""
    config, dtype = pipe.transformer.config, pipe.transformer.dtype
    for name in TENSORS:
        tensor = getattr(embeddings, name)
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"embeddings.{name} must be a tensor (as encode_prompt makes), not {type(tensor).__name__}.")
        if tensor.dtype != dtype:
            raise ValueError(f"embeddings.{name} is {tensor.dtype}; this pipeline computes in {dtype}: "
                             f"encode the prompt with it (encode_prompt(pipe, prompt)), or convert with .to({dtype}).")
        pooled = name.endswith("pooled_prompt_embeds")
        shape, fits = tuple(tensor.shape), False
        if pooled:
            needed = f"(1, {config.pooled_projection_dim})"
            fits = shape == (1, config.pooled_projection_dim)
        else:
            needed = f"(1, tokens, {config.joint_attention_dim})"
            fits = len(shape) == 3 and shape[0] == 1 and shape[2] == config.joint_attention_dim
        if not fits:
            raise ValueError(f"embeddings.{name} has shape {shape}; this pipeline needs {needed}: one image's "
                             "embeddings, as encode_prompt(pipe, prompt) makes them.")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"embeddings.{name} holds non-finite values (NaN or infinity), so the image would "
                             "be NaN whatever the guidance: encode the prompt again with encode_prompt(pipe, prompt).")
    positive, negative = embeddings.prompt_embeds, embeddings.negative_prompt_embeds
    if positive.shape != negative.shape:
        raise ValueError(f"embeddings.negative_prompt_embeds has shape {tuple(negative.shape)} but prompt_embeds "
                         f"{tuple(positive.shape)}: both must have as many tokens (encode_prompt pads them alike).")


@torch.no_grad()
def encode_prompt(pipe, prompt: str, negative_prompt: str | None = None, *, staged_t5: str | None = None,
                  device=None) -> PromptEmbeddings:
    """Run the three text encoders once for `prompt` and `negative_prompt`.

    The negative branch is always encoded (an empty negative prompt is still a text), so the
    result works for any guidance_scale. `staged_t5` marks embeddings of a text-encoders-only
    pipeline (helpers.loading.staged_t5), which has no transformer. A pipeline loaded with staged
    T5 loads T5 for a prompt it has not encoded yet (`pipe.load_info.staged_embeddings`, cached)."""
    check_staged_t5(staged_t5)
    validation.check_pipeline(pipe, "encode_prompt", allow_released=staged_t5 is not None)
    if getattr(pipe, "text_encoder", None) is None:
        raise ValueError("This pipeline has been released (another one was loaded): load it again.")
    validation.check_prompt(prompt)
    validation.check_prompt(negative_prompt, "negative_prompt", allow_none=True)
    if staged_t5 is None and uses_staged_t5(pipe):
        return pipe.load_info.staged_embeddings(pipe, prompt, negative_prompt)
    with pipeline_lock.using(pipe, "an encode_prompt() call"):  # not while the pipeline runs or is released
        pe, npe, ppe, nppe = pipe.encode_prompt(
            prompt=prompt,
            prompt_2=None,
            prompt_3=None,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=True,
            device=pipe._execution_device if device is None else device,
        )
    return PromptEmbeddings(prompt, negative_prompt, pe, npe, ppe, nppe, text_encoders_id(pipe), staged_t5)


def uses_staged_t5(pipe) -> bool:
    """Whether `pipe` was loaded with staged T5 (`load_pipeline(..., staged_t5=True)` or the planner's pick)."""
    return getattr(getattr(pipe, "load_info", None), "staged_t5", None) is not None


class PromptCache:
    """Embeddings per (prompt, negative prompt), for one pipeline; oldest dropped past `size`."""

    def __init__(self, pipe, size: int = 16):
        validation.check_pipeline(pipe, "PromptCache", allow_released=True)  # get() says if it was released
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"size must be a whole number of prompt pairs, at least 1, not {size!r}.")
        self.pipe, self.size = pipe, int(size)
        self._entries: dict[tuple, PromptEmbeddings] = {}
        self.hits = self.misses = 0

    def get(self, prompt: str, negative_prompt: str | None = None) -> PromptEmbeddings:
        """The embeddings of (prompt, negative_prompt): encoded on the first request, a copy of the
        cached tensors afterwards (editing one in place cannot change a later hit)."""
        validation.check_prompt(prompt)
        validation.check_prompt(negative_prompt, "negative_prompt", allow_none=True)
        key = (prompt, negative_prompt or "")
        if key in self._entries:
            self.hits += 1
            self._entries[key] = self._entries.pop(key)  # most recently used goes last
            return _copy(self._entries[key])
        self.misses += 1
        embeddings = encode_prompt(self.pipe, prompt, negative_prompt)
        self._entries[key] = embeddings
        while len(self._entries) > self.size:
            self._entries.pop(next(iter(self._entries)))
        return _copy(embeddings)


def _copy(embeddings: PromptEmbeddings) -> PromptEmbeddings:
    """The same embeddings in tensors of their own."""
    return dataclasses.replace(embeddings, **{k: v.clone() for k, v in embeddings.as_pipeline_kwargs().items()})
