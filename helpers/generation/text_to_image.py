"""`generate`: one reproducible image, with the recipe that reproduces it.

It is the plain diffusers call, `pipe(prompt, ..., generator=torch.Generator("cpu").manual_seed(seed))`,
plus argument checks up front, a recipe, timing and peak memory. The generator lives on the CPU
so a seed gives the same starting noise on every device.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from PIL import Image

from ..errors import GenerationCancelled, GPUOutOfMemoryError, NonFiniteImageError
from ..measuring import PeakMemory, Stopwatch, format_bytes
from . import pipeline_lock, validation
from .prompt_embeddings import (
    PromptEmbeddings,
    check_embeddings,
    check_staged_t5,
    encode_prompt,
    uses_staged_t5,
)
from .validation import check_pipeline

LIBRARIES = ("torch", "diffusers", "transformers", "bitsandbytes", "accelerate")
# The `generate` arguments a recipe stores: what an image depends on, given the pipeline.
RECIPE_KEYS = ("prompt", "negative_prompt", "guidance_scale", "num_inference_steps", "seed", "height", "width")


@dataclass
class GenerationResult:
    """One generated image and everything about how it was made."""

    image: Image.Image
    recipe: dict  # plain JSON-able dict: pass it back to `generate(pipe, **recipe_arguments(recipe))`
    seconds: float
    peak_memory_bytes: int | None
    memory_kind: str  # "cuda" (GPU tensors) or "rss" (process resident memory)

    def _repr_png_(self):  # shows the image when a result is a cell's last line
        return self.image._repr_png_()

    def __repr__(self):
        r = self.recipe
        return (
            f"GenerationResult({r['model']}, {r['width']}x{r['height']}, seed={r['seed']}, "
            f"guidance={r['guidance_scale']}, steps={r['num_inference_steps']}, "
            f"{self.seconds:.2f} s, peak {format_bytes(self.peak_memory_bytes)} {self.memory_kind})"
        )


@functools.cache  # reading package metadata takes milliseconds; the imported code cannot change
def _installed_versions() -> tuple[tuple[str, str], ...]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return tuple(found.items())


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an image depends on."""
    return dict(_installed_versions())


def resolve_arguments(pipe, guidance_scale=None, num_inference_steps=None, height=None, width=None, seed=0):
    """Validate generation settings and fill the blanks from the pipeline's preset."""
    check_pipeline(pipe)
    validation.check_guidance(guidance_scale)
    validation.check_steps(num_inference_steps)
    validation.check_seed(seed)
    largest = None
    config = pipe.transformer.config
    if getattr(config, "pos_embed_max_size", None):
        largest = config.pos_embed_max_size * config.patch_size * pipe.vae_scale_factor
    multiple = pipe.vae_scale_factor * config.patch_size
    validation.check_size(height, width, multiple=multiple, largest=largest)
    info = getattr(pipe, "load_info", None)
    default_size = info.default_size if info else config.sample_size * pipe.vae_scale_factor
    if info is not None:
        guidance_scale = info.recommended.guidance_scale if guidance_scale is None else guidance_scale
        num_inference_steps = info.recommended.num_inference_steps if num_inference_steps is None else num_inference_steps
    guidance_scale = 3.5 if guidance_scale is None else float(guidance_scale)
    num_inference_steps = 28 if num_inference_steps is None else int(num_inference_steps)
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    if hasattr(info, "check_room"):  # the loaded plan must have room for this size (helpers.loading.load)
        info.check_room(int(height or default_size), int(width or default_size))
    return {
        "guidance_scale": guidance_scale,
        "num_inference_steps": num_inference_steps,
        "height": int(height or default_size),
        "width": int(width or default_size),
        "seed": int(seed),
    }


def make_recipe(pipe, prompt, negative_prompt, settings: dict) -> dict:
    """Everything needed to reproduce an image, as a plain dict."""
    info = getattr(pipe, "load_info", None)
    plan = info.plan if info else None
    return {
        "model": plan.preset if plan else type(pipe).__name__,
        "model_id": ("offline stand-in" if plan.stand_in else plan.model_id) if plan else None,
        "stand_in": bool(plan.stand_in) if plan else None,
        "quantization": plan.quantization if plan else None,
        "t5": (f"{plan.staged_t5}, staged" if plan.t5 == "staged" else plan.t5) if plan else None,
        "dtype": str(plan.dtype).removeprefix("torch.") if plan else str(pipe.dtype),
        "device": plan.device if plan else str(pipe.device),
        "offload": plan.offload if plan else None,
        "fast": (getattr(info, "fast_precision", None) or False) if plan else None,  # load_pipeline(fast=): "bf16", "fp8"
        "transformer_source": plan.transformer_source if plan else None,
        "scheduler": type(pipe.scheduler).__name__,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        **settings,
        "generator": "torch.Generator('cpu').manual_seed(seed)",
        "versions": library_versions(),
    }


def recipe_arguments(recipe: dict) -> dict:
    """The `generate` keyword arguments stored in a recipe (to re-run it)."""
    if not isinstance(recipe, dict):
        raise TypeError(f"recipe must be a dict (a GenerationResult's .recipe, or one read back from its PNG), "
                        f"not {type(recipe).__name__}.")
    missing = [key for key in RECIPE_KEYS if key not in recipe]
    if missing:
        raise ValueError(f"recipe lacks {', '.join(missing)}, so it cannot re-run an image: a generate "
                         f"recipe holds {', '.join(RECIPE_KEYS)}.")
    return {k: recipe[k] for k in RECIPE_KEYS}


def check_arguments(
    pipe,
    prompt: str | None = None,
    *,
    negative_prompt: str | None = None,
    guidance_scale: float | None = None,
    num_inference_steps: int | None = None,
    seed: int | None = 0,
    height: int | None = None,
    width: int | None = None,
    callback=None,
    embeddings: PromptEmbeddings | None = None,
) -> tuple[str, str | None, dict]:
    """Every check `generate` makes before any work, without generating anything.

    Returns (prompt, negative_prompt, settings) as `generate` will use them; raises the error
    `generate` would raise. `xy_grid` checks a whole grid with it before the first image."""
    check_pipeline(pipe)
    info = getattr(pipe, "load_info", None)
    if info is not None and info.plan.t5 == "staged":  # the recipe's t5 is written from it
        check_staged_t5(info.plan.staged_t5, "pipe.load_info.plan.staged_t5")
    if embeddings is not None:
        check_embeddings(pipe, embeddings, prompt, negative_prompt)
        prompt, negative_prompt = embeddings.prompt, embeddings.negative_prompt
    validation.check_prompt(prompt)
    validation.check_prompt(negative_prompt, "negative_prompt", allow_none=True)
    validation.check_callback(callback)
    settings = resolve_arguments(pipe, guidance_scale, num_inference_steps, height, width, seed)
    return prompt, negative_prompt, settings


def generate(
    pipe,
    prompt: str | None = None,
    *,
    negative_prompt: str | None = None,
    guidance_scale: float | None = None,
    num_inference_steps: int | None = None,
    seed: int | None = 0,
    height: int | None = None,
    width: int | None = None,
    callback=None,
    embeddings: PromptEmbeddings | None = None,
) -> GenerationResult:
    """Generate one image; unset guidance/steps/size come from the pipeline's preset.

    `seed=None` draws a random seed (and records it). `callback(step, total, latents)` runs after
    every denoising step; returning True cancels (GenerationCancelled is raised). `embeddings`
    (from `encode_prompt` with this pipeline) skips the text encoders; the prompt texts are then
    taken from it (a `prompt` or `negative_prompt` given too must be the one it was encoded from).
    A pipeline loaded with staged T5 encodes a prompt it has not seen with T5 loaded for that alone
    (once per prompt: `helpers.loading.staged_t5`), and its recipe says `t5="nf4, staged"`.
    An image with non-finite pixels (NaN) raises NonFiniteImageError instead of coming back black.
    While another caller (the studio, another thread) runs this pipeline, it waits, saying so once.
    """
    prompt, negative_prompt, settings = check_arguments(
        pipe, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps, seed=seed, height=height, width=width,
        callback=callback, embeddings=embeddings,
    )
    if embeddings is None and uses_staged_t5(pipe):  # T5 loaded for a new prompt only; cached per pipeline
        embeddings = encode_prompt(pipe, prompt, negative_prompt)
    recipe = make_recipe(pipe, prompt, negative_prompt, settings)
    if embeddings is not None and embeddings.staged_t5:  # T5 made them, before this T5-less pipeline loaded
        recipe["t5"] = f"{embeddings.staged_t5}, staged"
    texts = (
        embeddings.as_pipeline_kwargs()
        if embeddings is not None
        else {"prompt": prompt, "negative_prompt": negative_prompt}
    )
    cancelled = False
    seen = {}  # the latest latents and embeddings: they say which component made a NaN image

    def on_step_end(pipeline, step, timestep, callback_kwargs):
        nonlocal cancelled
        seen.update(callback_kwargs)
        if callback is not None and callback(step, settings["num_inference_steps"], callback_kwargs["latents"]):
            cancelled = True
            pipeline._interrupt = True  # diffusers skips the remaining steps
        return callback_kwargs

    device = recipe["device"]
    try:  # one image at a time per pipeline: its scheduler keeps per-call state
        with pipeline_lock.using(pipe, "a generate() call", denoising=True), PeakMemory(device) as peak, Stopwatch(device) as clock:
            # "np" is the "pil" output one step earlier (numpy_to_pil is that step): it lets us see
            # NaN pixels, which the uint8 conversion would silently turn black.
            pixels = pipe(
                **texts,
                guidance_scale=settings["guidance_scale"],
                num_inference_steps=settings["num_inference_steps"],
                height=settings["height"],
                width=settings["width"],
                generator=torch.Generator("cpu").manual_seed(settings["seed"]),
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "pooled_prompt_embeds"],
                output_type="np",
            ).images
    except torch.OutOfMemoryError as e:
        raise GPUOutOfMemoryError(
            f"Out of GPU memory generating {settings['width']}x{settings['height']}. Try a smaller "
            "size, load_pipeline(..., offload='model'), the 'sd35-large-nf4' preset or drop_t5=True."
        ) from e
    if cancelled:
        raise GenerationCancelled(f"Cancelled before the last of {settings['num_inference_steps']} steps.")
    if not np.isfinite(pixels).all():
        # The pipeline folds CFG's halves into one batch: these are the embeddings it really used.
        component = validation.nonfinite_source(
            pipe, seen.get("prompt_embeds"), seen.get("pooled_prompt_embeds"), seen.get("latents"))
        raise NonFiniteImageError(
            "The image came out with non-finite pixels (it would be black): "
            + validation.nonfinite_fix(pipe, component, settings["guidance_scale"]),
            component=component,
        )
    image = pipe.image_processor.numpy_to_pil(pixels)[0]
    return GenerationResult(image, recipe, clock.seconds, peak.peak_bytes, peak.kind)
