"""T5-XXL on its own: loaded as a plan says (NF4, or from a save_quantized folder), and the staged-T5
encode a pipeline loaded without T5 runs for each new prompt, cached per pipeline (`LoadInfo.staged_embeddings`).

Kept apart from load.py so that `helpers.generation` reaches the staged encode through the pipeline's
`load_info`, never by importing `helpers.loading` (generation stays below loading: no import circle).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..generation import pipeline_lock
from ..generation.prompt_embeddings import PromptEmbeddings, encode_prompt
from . import devices, hub_access, quantized_checkpoints

STAGED_CACHE_SIZE = 16  # prompt pairs a staged pipeline keeps encoded (each a few MB on the GPU)


def saved_t5_folder(plan) -> str | None:
    """The save_quantized folder of the plan's pre-quantized transformer, if it also holds an NF4 T5."""
    if plan.transformer_source is None:
        return None
    source, subfolder = quantized_checkpoints.transformer_folder(plan.transformer_source)
    return source if subfolder and (Path(source) / "text_encoder_3" / "config.json").is_file() else None


def load_t5(plan, token: str | None, quantize: bool = True):
    """T5-XXL as the plan loads it: in NF4 (bitsandbytes places it on the GPU), from the save_quantized
    folder when it holds one, else in `plan.dtype` on the plan's device (`quantize=False`)."""
    from transformers import BitsAndBytesConfig as TransformersBnbConfig
    from transformers import T5EncoderModel

    saved = saved_t5_folder(plan) if quantize else None
    if saved is not None:
        t5 = T5EncoderModel.from_pretrained(saved, subfolder="text_encoder_3", dtype=plan.dtype)
        set_compute_dtype(t5, plan.dtype)
        return t5
    if not quantize:
        return T5EncoderModel.from_pretrained(plan.model_id, subfolder="text_encoder_3", dtype=plan.dtype,
                                              token=token).to(plan.device)
    return T5EncoderModel.from_pretrained(
        plan.model_id,
        subfolder="text_encoder_3",
        quantization_config=TransformersBnbConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=plan.dtype
        ),
        dtype=plan.dtype,
        token=token,
    )


def set_compute_dtype(model, dtype: torch.dtype) -> None:
    """Make every bitsandbytes 4-bit layer of `model` compute in `dtype` (and its config say so).
    A reloaded pre-quantized model otherwise computes in the dtype it was saved with."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.compute_dtype = dtype
    quantizer = getattr(model, "hf_quantizer", None)
    config = getattr(quantizer, "quantization_config", None)
    if config is not None and hasattr(config, "bnb_4bit_compute_dtype"):
        config.bnb_4bit_compute_dtype = dtype


def staged_embeddings(pipe, prompt: str, negative_prompt: str | None = None) -> PromptEmbeddings:
    """The embeddings of (prompt, negative_prompt) for a pipeline loaded with staged T5: from its cache
    (`pipe.load_info.staged_cache`, the oldest dropped past STAGED_CACHE_SIZE), else `encode_staged`."""
    info = pipe.load_info
    key = (prompt, negative_prompt or "")
    if key in info.staged_cache:
        info.staged_cache[key] = info.staged_cache.pop(key)  # most recently used goes last
    else:
        info.staged_cache[key] = encode_staged(pipe, prompt, negative_prompt)
        while len(info.staged_cache) > STAGED_CACHE_SIZE:
            info.staged_cache.pop(next(iter(info.staged_cache)))
    cached = info.staged_cache[key]  # a copy: editing it in place cannot change a later hit
    return dataclasses.replace(cached, **{k: v.clone() for k, v in cached.as_pipeline_kwargs().items()})


def encode_staged(pipe, prompt: str, negative_prompt: str | None = None) -> PromptEmbeddings:
    """Load T5 (as `pipe.load_info.staged_t5` says) beside `pipe`'s own CLIPs, encode one prompt pair
    with all three, and release T5 before returning: the pipeline's text phase, with T5 for its length."""
    from diffusers import StableDiffusion3Pipeline

    info = pipe.load_info
    plan = info.plan
    token = None if plan.stand_in else hub_access.find_token()
    with pipeline_lock.using(pipe, "a staged T5 encode"):  # never while it generates or is released
        device = pipe._execution_device
        t5 = load_t5(plan, token, quantize=info.staged_t5 == "nf4")
        try:
            encoders = StableDiffusion3Pipeline(**dict(pipe.components, text_encoder_3=t5))
            embeddings = encode_prompt(encoders, prompt, negative_prompt, staged_t5=info.staged_t5, device=device)
        finally:
            t5 = encoders = None
            devices.release_cached_memory(plan.device)
    info.staged_encodes += 1
    return embeddings
