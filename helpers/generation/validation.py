"""Checks on generation arguments, run before any heavy work, one clear message per mistake."""

from __future__ import annotations

import inspect
import math
import numbers
import os

import torch

# torch's CPU generator (the one every image here is drawn from) keeps only a seed's low 32 bits:
# seed 5 and seed 5 + 2**32 give the same image, so seeds stop at 2**32 - 1 (as in A1111).
MAX_SEED = 2**32 - 1
# Far above any useful value (SD3.5 is tuned for 3.5-4.5; A1111's CFG slider stops at 30), and low
# enough that fp16 does not overflow into a black image.
MAX_GUIDANCE = 30.0


def check_prompt(prompt, name: str = "prompt", allow_none: bool = False) -> None:
    if prompt is None and allow_none:
        return
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a string, not {type(prompt).__name__}.")
    if name == "prompt" and not prompt.strip():
        raise ValueError("prompt is empty: describe the image you want.")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: no tokenizer or PNG text chunk can hold it
        raise ValueError(
            f"{name} holds {prompt[e.start]!r} at position {e.start}, half of a character pair that "
            "is not text on its own (a lone surrogate, e.g. from a bad copy-paste): remove it."
        ) from None


def check_guidance(guidance_scale) -> None:
    if guidance_scale is None:
        return
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"guidance_scale must be a number, not {type(guidance_scale).__name__}.")
    try:
        finite = math.isfinite(guidance_scale)
    except OverflowError:  # an int too large for a float, e.g. 10**400
        raise ValueError(f"guidance_scale must be a finite number, not a {len(str(abs(guidance_scale)))}-digit "
                         "whole number (too large for a float). SD3.5 Large is tuned for about 3.5.") from None
    if not finite:
        raise ValueError(f"guidance_scale must be a finite number, not {guidance_scale}.")
    if guidance_scale < 0:
        raise ValueError(
            f"guidance_scale must be >= 0, not {guidance_scale}. Values <= 1 turn classifier-free "
            "guidance off; SD3.5 Large is tuned for about 3.5, Medium 4.5, Turbo 0."
        )
    if guidance_scale > MAX_GUIDANCE:
        raise ValueError(
            f"guidance_scale={guidance_scale:g} is above {MAX_GUIDANCE:g}: far past the useful range "
            "(SD3.5 Large is tuned for about 3.5, Medium 4.5), it over-saturates the image or, in "
            "float16, overflows it to black. Use a value between 0 and 10."
        )


def check_steps(num_inference_steps) -> None:
    if num_inference_steps is None:
        return
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral):
        raise TypeError(
            f"num_inference_steps must be a whole number, not {type(num_inference_steps).__name__}."
        )
    if num_inference_steps < 1:
        raise ValueError(
            f"num_inference_steps must be at least 1, not {num_inference_steps} "
            "(SD3.5 Large uses 28, Medium 40, Turbo 4)."
        )
    if num_inference_steps > 1000:
        raise ValueError(f"num_inference_steps={num_inference_steps} is more than the scheduler's 1000.")


def check_seed(seed) -> None:
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a whole number (or None for a random one), not {type(seed).__name__}.")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED} (2**32 - 1), not {seed}: torch's generator keeps "
                         "only 32 bits, so a larger seed would repeat a smaller one's image.")


def check_size(height, width, multiple: int = 16, largest: int | None = None) -> None:
    """Both sides must be multiples of `multiple` (SD3: VAE factor 8 x patch size 2 = 16)."""
    for name, value in (("height", height), ("width", width)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be a whole number of pixels, not {type(value).__name__}.")
        if value < multiple or value % multiple:
            nearest = max(multiple, int(value / multiple + 0.5) * multiple)  # halves round up
            raise ValueError(
                f"{name}={value} is not a positive multiple of {multiple}; SD3 needs multiples of "
                f"{multiple} (try {nearest})."
            )
        if largest is not None and value > largest:
            raise ValueError(f"{name}={value} is larger than this model supports ({largest} pixels).")


def check_callback(callback) -> None:
    """`callback` must be callable as callback(step, total, latents): checked before the first step,
    which is where a wrong signature would otherwise fail."""
    if callback is None:
        return
    if not callable(callback):
        raise TypeError(f"callback must be a function (step, total, latents) -> bool | None, not {type(callback).__name__}.")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # a builtin without a readable signature: let it run
        return
    try:
        signature.bind(0, 1, None)
    except TypeError:
        name = getattr(callback, "__name__", type(callback).__name__)
        raise TypeError(
            f"callback must take (step, total, latents) and return True to cancel; {name}{signature} "
            "cannot be called that way (e.g. def on_step(step, total, latents): ...)."
        ) from None


def check_pipeline(pipe, caller: str = "generate", allow_released: bool = False) -> None:
    """`pipe` must be a loaded SD3 pipeline (from `load_pipeline` or diffusers), not yet released."""
    if pipe is None or isinstance(pipe, (str, bytes, os.PathLike)) or not hasattr(pipe, "components"):
        given = f"{type(pipe).__name__} {str(pipe)[:80]!r}" if isinstance(pipe, (str, os.PathLike)) else type(pipe).__name__
        raise TypeError(
            f"{caller} needs a loaded pipeline as its first argument, not {given}. Load one first, "
            "e.g. pipe = load_pipeline('sd35-large-nf4') (or 'tiny' for the offline stand-in)."
        )
    if not allow_released and getattr(pipe, "transformer", None) is None:
        raise ValueError("This pipeline has been released (another one was loaded): load it again.")


# ---- Which component made an image non-finite, and what fixes it ----------------------------------
COMPONENT_NAMES = {"text_encoder": "CLIP-L (text_encoder)", "text_encoder_2": "CLIP-G (text_encoder_2)",
                   "text_encoder_3": "T5-XXL (text_encoder_3)", "transformer": "the transformer", "vae": "the VAE"}
_TO_BF16 = "load in bfloat16 where the GPU has it (compute capability 8.0+: load_pipeline(..., dtype=torch.bfloat16))"


def _not_finite(tensor) -> bool:
    return tensor is not None and not bool(torch.isfinite(tensor).all())


def nonfinite_source(pipe, prompt_embeds=None, pooled_prompt_embeds=None, latents=None) -> str:
    """Which component of `pipe` produced the first non-finite values of an image whose pixels are not
    finite: a text encoder (its slice of the embeddings, as `encode_prompt` lays them out: CLIP-L then
    CLIP-G along the features of the first `tokenizer_max_length` tokens, T5 the tokens after them;
    pooled: CLIP-L then CLIP-G), else the transformer (the final latents), else the VAE."""
    clip_l, clip_g = getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)
    if _not_finite(prompt_embeds):
        clip_tokens, width_l = pipe.tokenizer_max_length, clip_l.config.hidden_size
        width_g = clip_g.config.hidden_size
        if _not_finite(prompt_embeds[:, :clip_tokens, :width_l]):
            return "text_encoder"
        if _not_finite(prompt_embeds[:, :clip_tokens, width_l:width_l + width_g]):
            return "text_encoder_2"
        if _not_finite(prompt_embeds[:, clip_tokens:]):
            return "text_encoder_3"
    if _not_finite(pooled_prompt_embeds):
        return "text_encoder" if _not_finite(pooled_prompt_embeds[:, :clip_l.config.projection_dim]) else "text_encoder_2"
    return "transformer" if _not_finite(latents) else "vae"


def nonfinite_fix(pipe, component: str, guidance_scale: float) -> str:
    """What to do when `component` of `pipe` produced non-finite values, in one or two sentences."""
    model = getattr(pipe, component, None)
    dtype = str(getattr(model, "dtype", "?")).removeprefix("torch.")
    where = f"{COMPONENT_NAMES[component]} produced non-finite values (NaN or inf) in {dtype}"
    if component == "vae":
        if dtype == "float32":
            return f"{where}: its weights, not the precision, are at fault. Reload the model."
        return (f"{where}: its decoder overflowed. Decode in float32: helpers.loading.vae_decode.upcast_vae(pipe), "
                "or " + _TO_BF16 + ".")
    if component == "transformer":
        return (f"{where} while denoising at guidance_scale={guidance_scale:g}. Try a lower guidance_scale "
                f"(SD3.5 Large is tuned for 3.5), or {_TO_BF16}, or dtype=torch.float32.")
    if component == "text_encoder_3":
        return (f"{where}. transformers keeps T5's `wo` layers in float32 under float16; if it still "
                f"overflows, {_TO_BF16}, or leave T5 out (drop_t5=True).")
    return f"{where}. Run it in float32 (pipe.{component}.float(), on the same device), or {_TO_BF16}."
