"""T5's prompt following on a GPU with no room for T5 beside the transformer: encode first.

On a free Colab T4 (15 GB GPU, 12.7 GB RAM) SD3.5 Large in NF4 fits only without T5, and model
offload needs more host RAM than Colab has. Staged encoding gives T5 back in two phases:

1. `encode_with_t5(prompts, **plan)` loads only the text encoders (CLIP-L, CLIP-G and T5-XXL in NF4),
   encodes every prompt (and negative prompt), and releases them;
2. `load_pipeline(**plan)` then loads the T5-less plan, and `generate(pipe, embeddings=...)` renders
   from the cached embeddings, which are exactly what a pipeline with the same NF4 T5 computes.

The transformer never shares the GPU with T5. The price: a new prompt needs the encoders again. An
image's recipe records `t5="nf4, staged"`: to make it again, encode its prompt with `encode_with_t5`.

The planner can choose this itself (`plan.t5 == "staged"`, `load_pipeline(..., staged_t5=True)`): the
pipeline loads without T5, and for each prompt it has not seen, `t5_encoder.encode_staged` loads T5 beside the
pipeline's CLIPs for the text phase only (with model offload, the transformer is on the CPU then),
encodes, and releases it; `t5_encoder.staged_embeddings` caches the result per pipeline, so `generate`,
`PromptCache` and the studio load T5 once per new prompt. The same T5 and CLIPs give the same
embeddings as `encode_with_t5`.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import GPUOutOfMemoryError
from ..generation import validation
from ..generation.prompt_embeddings import TEXT_ENCODERS, PromptEmbeddings, encode_prompt
from ..measuring import format_bytes
from . import as_machine, devices, fast_plan, hub_access, load, memory_model
from .arguments import check_bool
from .planner import PREQUANTIZED, plan_loading, use_stand_in
from .presets import PRESETS, resolve_preset

# load_pipeline options that change the transformer or the VAE only: the encoders ignore them.
_NOT_FOR_ENCODERS = ("offload", "drop_t5", "quantize_t5", "staged_t5", "transformer", "vae_tiling", "fast",
                     "keep_previous")


def text_encoder_plan(model: str = "sd35-large-nf4", *, quantize_t5: bool = True, **options):
    """The loading plan of the text encoders alone (T5 in NF4 unless `quantize_t5=False`), on the GPU,
    with the dtype and device `options` (the load_pipeline arguments of the pipeline that follows) give."""
    kept = {k: v for k, v in options.items() if k not in _NOT_FOR_ENCODERS}
    return plan_loading(model, offload="none", quantize_t5=quantize_t5, **kept)


def encoder_bytes(plan) -> int:
    """GPU bytes the text encoders need: their weights, the text-encoding phase's working memory and,
    on CUDA, what the caching allocator reserves above it (`memory_model.accelerator_bytes`)."""
    weights = {name: plan.estimated_bytes[name] for name in TEXT_ENCODERS if name in plan.estimated_bytes}
    working = memory_model.Working(text=memory_model.TEXT_ENCODING_BYTES, denoise=0, decode=0)
    return memory_model.accelerator_bytes("none", weights, working, device=plan.device)


def encode_with_t5(prompts, model: str = "sd35-large-nf4", *, negative_prompt: str | None = None,
                   quantize_t5: bool = True, **options) -> list[PromptEmbeddings]:
    """Encode `prompts` (a string or a list) with CLIP-L, CLIP-G and T5 loaded on their own, then
    release them; returns one `PromptEmbeddings` per prompt for `generate(pipe, embeddings=...)` with
    the pipeline `load_pipeline(model, **options)` loads next (e.g. `**colab_t4_plan()`, no T5).

    Like `load_pipeline`, it first releases the pipeline loaded last (the GPU has room for one phase)."""
    if isinstance(prompts, (bytes, dict)) or not isinstance(prompts, (str, Iterable)):
        raise TypeError(f"prompts must be a prompt (a str) or a list of prompts, not {type(prompts).__name__} "
                        f"{prompts!r:.60}.")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt to encode.")
    for prompt in prompts:
        validation.check_prompt(prompt)
    validation.check_prompt(negative_prompt, "negative_prompt", allow_none=True)
    check_bool("quantize_t5", quantize_t5)
    _check_pipeline_options(model, options)
    plan = text_encoder_plan(model, quantize_t5=quantize_t5, **options)  # every option checked first
    as_on = as_machine.applies(model, use_stand_in(options.get("stand_in")))  # $SD35_AS_MACHINE: planned there, made here
    token = None
    if not plan.stand_in and not as_on:
        token = hub_access.find_token()
        if resolve_preset(model).gated:
            hub_access.require_access(plan.model_id, token)
        if model not in PRESETS:  # a Hub id nobody has (a typo)
            hub_access.require_model(plan.model_id, token)
        if hub_access.offline() and not hub_access.is_cached(plan.model_id):
            raise FileNotFoundError(f"HF_HUB_OFFLINE is set and {plan.model_id} is not in the local Hugging Face "
                                    "cache. Download it once with a network connection, or use stand_in=True.")
    load.check_quantization_runs_here(plan)
    # Only now, with everything load_pipeline would refuse refused, is the reader's pipeline released.
    load.release_current_pipeline()
    devices.release_cached_memory(plan.device)
    plan = text_encoder_plan(model, quantize_t5=quantize_t5, **options)  # free memory after the release
    need = encoder_bytes(plan)
    if plan.free_bytes is not None and need > plan.free_bytes:
        raise GPUOutOfMemoryError(
            f"The text encoders of {plan.preset} (T5 {plan.t5}) need about {format_bytes(need)} of GPU "
            f"memory, but {format_bytes(plan.free_bytes)} is free. Free memory (restart the kernel) or "
            "encode without T5 (load_pipeline(..., drop_t5=True) and plain prompts).")
    if as_on:  # the stand-in's encoders, on this machine
        with as_machine.making_images():
            plan = text_encoder_plan(model, quantize_t5=quantize_t5, **options)
    encoders = load._from_pretrained(plan, token, skip=("transformer", "vae"))
    try:
        return [encode_prompt(encoders, prompt, negative_prompt, staged_t5=plan.t5) for prompt in prompts]
    finally:
        load.release_pipeline(encoders)


def _check_pipeline_options(model, options: dict) -> None:
    """load_pipeline's checks of the options of the pipeline that follows (the encoders ignore some of
    them, but a typo there must fail now, before the reader's pipeline is released)."""
    fast_plan.check_fast_argument(options.get("fast", False))
    check_bool("keep_previous", options.get("keep_previous", False))
    if options.get("transformer") == PREQUANTIZED:
        raise ValueError(f"transformer={PREQUANTIZED!r} stands for a pre-quantized transformer in a suggested plan: "
                         "pass the folder save_quantized wrote (or a Hub id of one) instead.")
    plan_loading(model, **{k: v for k, v in options.items() if k not in ("fast", "keep_previous")})
