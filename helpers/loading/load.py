"""`load_pipeline`: one call that loads any SD3.5 preset the way its lesson teaches.

The code path is the one a reader would write by hand (and notebook 01 shows by hand):
`SD3Transformer2DModel.from_pretrained(..., quantization_config=BitsAndBytesConfig(...))` passed
into `StableDiffusion3Pipeline.from_pretrained`. On top of it: the plan (`planner.plan_loading`),
the token and gated-model checks, and one pipeline per kernel.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field

import torch

from ..errors import GPUOutOfMemoryError, QuantizationNeedsGPUError
from ..generation.pipeline_lock import releasing
from ..generation.validation import check_pipeline
from . import (
    architectures,
    devices,
    fast_plan,
    group_offload,
    hub_access,
    quantized_checkpoints,
    t5_encoder,
    vae_decode,
)
from .arguments import check_bool
from .as_machine import applies, making_images, record, stand_in_options
from .checks import _does_not_fit, check_fast, check_fits, check_room_for_size
from .machine_fit import T5_DROPPED, plan_summary
from .planner import PREQUANTIZED, LoadingPlan, plan_loading, use_stand_in
from .presets import PRESETS, Recommendation, resolve_preset
from .quantization_check import check_quantization_runs_here, needs_gpu, quantizes_here
from .t5_encoder import load_t5, saved_t5_folder, set_compute_dtype  # noqa: F401 (load_t5 re-exported)

STAND_IN_BANNER = (
    "=" * 78 + "\n"
    "OFFLINE STAND-IN: random weights, images are noise.\n"
    "This run proves the code, not the pictures. With a GPU and a Hugging Face token the same\n"
    "cells load the real Stable Diffusion 3.5 (pass stand_in=False to insist on it).\n" + "=" * 78
)

_current_pipeline = None  # the one pipeline this kernel keeps; loading another releases it
_stand_in_announced = False  # the banner prints once per kernel, not on every load

@dataclass
class LoadInfo:
    """Attached to every pipeline `load_pipeline` returns, as `pipe.load_info`."""

    plan: LoadingPlan
    seconds: float
    recommended: Recommendation
    blog: Recommendation | None
    default_size: int
    compute_dtypes: dict = field(default_factory=dict)  # 4-bit component -> dtype its maths really use
    fast_precision: str | None = None  # the fast plan applied: None, "bf16" or "fp8" (load_pipeline(fast=...))
    fast_plan: list = field(default_factory=list)  # what make_fast did, one line per change
    model: str | None = None  # the model load_pipeline was asked for (a study's rows are keyed by it)
    machine_plan: LoadingPlan | None = None  # $SD35_AS_MACHINE: the plan on that machine (the stand-in ran `plan`)
    staged_cache: dict = field(default_factory=dict)  # t5="staged": (prompt, negative) -> PromptEmbeddings
    staged_encodes: int = 0  # t5="staged": how many times T5 was loaded to encode a new prompt

    @property
    def staged_t5(self) -> str | None:
        """The T5 ("nf4" or "full") loaded for each new prompt when the plan stages T5, else None."""
        return self.plan.staged_t5 if self.plan.t5 == "staged" else None

    def staged_embeddings(self, pipe, prompt: str, negative_prompt: str | None = None):
        """t5="staged": the embeddings of this prompt pair, from the cache or a T5 loaded for it
        (helpers.generation calls this, so it never imports helpers.loading)."""
        return t5_encoder.staged_embeddings(pipe, prompt, negative_prompt)

    def check_room(self, height: int, width: int) -> None:
        """Raise GPUOutOfMemoryError when this pipeline's plan has no room for a height x width image
        (`generate` asks before any work; helpers.loading.checks.check_room_for_size)."""
        check_room_for_size(self.plan, height, width)


def load_pipeline(
    model: str = "sd35-large-nf4",
    *,
    device: str = "auto",
    offload="auto",
    drop_t5: bool | None = None,
    quantize_t5: bool | None = None,
    dtype="auto",
    stand_in: bool | None = None,
    keep_previous: bool = False,
    transformer: str | None = None,
    fast: bool | str = False,
    size: int | tuple[int, int] | None = None,
    vae_tiling: bool = False,
    staged_t5: bool | None = None,
):
    """Load a `StableDiffusion3Pipeline` for a preset ("sd35-large-nf4", "tiny", ...), a Hub id or
    a local folder, and return it with `pipe.load_info` (the plan, load seconds, recommendations).

    Every option is checked before any weights are read. Unless `keep_previous=True`, the
    pipeline this function returned last is released first (its GPU memory freed), since two
    SD3.5 Large pipelines rarely fit together. `transformer=` loads a pre-quantized transformer
    (a `save_quantized` folder or Hub id) instead of quantizing the model's bf16 one.
    `fast=True` applies the fast plan (`helpers.loading.fast_plan.make_fast`: compiled transformer blocks
    and VAE decoder, channels-last VAE, and float8 linear layers where they run: sm_89+, a bf16
    transformer kept on the GPU); `fast="bf16"` or `"fp8"` chooses the precision. The first image pays
    the compile time, later ones run faster.
    `drop_t5` / `quantize_t5` / `staged_t5` left as None let the planner pick T5 by its ranking (full,
    4-bit, staged, none). Staged T5 loads the pipeline without T5; `generate` and `encode_prompt` then load
    T5 for each new prompt, encode it, release T5 and cache the embeddings (`helpers.loading.staged_t5`);
    `size`: the largest image (pixels, or (height, width)) to plan memory for, the preset's by default.
    `vae_tiling=True` decodes in 512 px tiles (`vae_decode.enable_vae_tiling`), for a GPU with no room
    for a whole-image decode.
    """
    global _current_pipeline
    fast_plan.check_fast_argument(fast)
    check_bool("keep_previous", keep_previous)
    if transformer == PREQUANTIZED:
        raise ValueError(
            f"transformer={PREQUANTIZED!r} stands for a pre-quantized transformer in a suggested plan: "
            "pass the folder save_quantized wrote (or a Hub id of one) instead."
        )
    plan = plan_loading(  # every option checked, before anything is released or read
        model, device=device, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5,
        dtype=dtype, stand_in=stand_in, transformer=transformer, size=size,
        vae_tiling=vae_tiling, staged_t5=staged_t5, fast=fast,
    )
    check_fast(plan, fast)
    if applies(model, use_stand_in(stand_in)):  # $SD35_AS_MACHINE: `plan` is the real preset's, on that machine
        record(model, dict(device=device, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5,
               staged_t5=staged_t5, dtype=dtype, size=size), plan_summary(plan))
        check_fits(plan)  # the error that machine would give, before anything is released
        if plan.t5 == "dropped" and drop_t5 is None:  # as that machine would say it
            print(T5_DROPPED)
        stand_in_model, t5 = stand_in_options(plan, model, quantizes_here(plan))
        with making_images():  # the stand-in makes the images here, with that machine's choices
            pipe = load_pipeline(stand_in_model, stand_in=True, **t5, keep_previous=keep_previous,
                                 transformer=transformer, fast=fast, vae_tiling=vae_tiling)
        pipe.load_info.machine_plan, pipe.load_info.model = plan, model
        return pipe
    preset = resolve_preset(model)
    fast_plan.resolve_fast(  # an impossible fast="fp8" is refused now (offload="auto" is settled later)
        fast, device=plan.device, capability=devices.compute_capability(plan.device), quantization=plan.quantization,
        offload=plan.offload if offload != "auto" else "none", dtype=plan.dtype)
    token = None
    if not plan.stand_in:
        token = hub_access.find_token()
        if preset.gated:
            hub_access.require_access(plan.model_id, token)
        if model not in PRESETS:  # a Hub id nobody has (a typo): say so before any memory complaint
            hub_access.require_model(plan.model_id, token)
    # Checked before the previous pipeline is released: a load that cannot run here must not cost
    # the reader the pipeline they already have. (Whether it fits is checked first when nothing is
    # held; otherwise after the release, which frees the memory it is measured against.)
    if keep_previous or _current_pipeline is None:
        check_fits(plan)
    if not plan.stand_in and hub_access.offline() and not hub_access.is_cached(plan.model_id):
        raise FileNotFoundError(
            f"HF_HUB_OFFLINE is set and {plan.model_id} is not in the local Hugging Face cache. "
            "Download it once with a network connection, or use stand_in=True."
        )
    check_quantization_runs_here(plan)
    if not keep_previous:
        # Release first, then measure: the previous pipeline's memory (and PyTorch's cache of it)
        # would otherwise count as used, turning "none" into an offload or a spurious refusal.
        release_current_pipeline()
        devices.release_cached_memory(plan.device)
        plan = plan_loading(
            model, device=device, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5,
            dtype=dtype, stand_in=stand_in, transformer=transformer, size=size,
            vae_tiling=vae_tiling, staged_t5=staged_t5, fast=fast,
        )
        check_fast(plan, fast)
    check_fits(plan)
    if plan.t5 == "dropped" and drop_t5 is None and not plan.stand_in:  # never silently: the planner chose it
        print(T5_DROPPED)
    capability = devices.compute_capability(plan.device)
    fast_precision = fast_plan.resolve_fast(fast, device=plan.device, capability=capability,
                                            quantization=plan.quantization, offload=plan.offload, dtype=plan.dtype)
    global _stand_in_announced
    if plan.stand_in and not _stand_in_announced:
        print(STAND_IN_BANNER)
        _stand_in_announced = True

    started = time.perf_counter()
    try:
        pipe = _from_pretrained(plan, token)
    except torch.OutOfMemoryError as e:
        raise GPUOutOfMemoryError(_does_not_fit(plan, plan.total_bytes)) from e
    except RuntimeError as e:
        if "No GPU found" in str(e):
            raise QuantizationNeedsGPUError(needs_gpu(plan)) from e
        raise
    except OSError as e:
        better = hub_access.explain_hub_error(e, plan.model_id)
        if better is not None:
            raise better from None  # `from None`: the Hub's error text may echo request headers
        raise
    fast_done = fast_plan.make_fast(pipe, fast_precision, capability=capability) if fast_precision else []
    if fast_precision == "fp8":  # the weights held from now on: float8 linear layers (the load peaked in bf16)
        plan.estimated_bytes["transformer"] = fp8_transformer_bytes(plan, preset, capability)
    seconds = time.perf_counter() - started
    # The stand-in keeps the preset's guidance and steps (what the lesson teaches) but renders at its
    # own small size, so a CPU runs every notebook in seconds.
    size = PRESETS["tiny"].default_size if plan.stand_in else plan.size[0] if size is not None else preset.default_size
    plan.fast = bool(fast_precision)
    pipe.load_info = LoadInfo(plan, seconds, preset.model_card, preset.blog, size, compute_dtypes(pipe),
                              fast_precision, fast_done, model=model)
    _current_pipeline = pipe
    return pipe


def fp8_transformer_bytes(plan: LoadingPlan, preset, capability) -> int:
    """The FP8 fast plan's transformer bytes (fast_plan's float8 rule: float8 in the blocks' attention
    and feed-forward layers, the rest in the plan's dtype), counted on the meta device from the
    architecture the plan loads (a local folder such as the stand-in's, or the published family's)."""
    config = plan.transformer_config or architectures.TRANSFORMER_CONFIGS[preset.family]
    return fast_plan.planned_fp8_bytes(config, plan.dtype, capability)


def _from_pretrained(plan: LoadingPlan, token: str | None, skip: tuple[str, ...] = ()):
    """The diffusers calls themselves: the same ones notebook 01 writes out by hand. The components
    in `skip` are left out (None), e.g. ("transformer", "vae") for the text encoders alone."""
    from diffusers import BitsAndBytesConfig, SD3Transformer2DModel, StableDiffusion3Pipeline

    kwargs = dict.fromkeys(skip)
    if "transformer" in skip:
        pass
    elif plan.transformer_source is not None:
        # Pre-quantized: the quantization config is read from the saved config.json.
        source, subfolder = quantized_checkpoints.transformer_folder(plan.transformer_source)
        kwargs["transformer"] = SD3Transformer2DModel.from_pretrained(
            source, subfolder=subfolder, dtype=plan.dtype, token=token
        )
        # The 4-bit maths would follow the saved config's compute dtype, not `dtype`: apply it.
        set_compute_dtype(kwargs["transformer"], plan.dtype)
    elif plan.quantization == "nf4":
        kwargs["transformer"] = SD3Transformer2DModel.from_pretrained(
            plan.model_id,
            subfolder="transformer",
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=plan.dtype
            ),
            dtype=plan.dtype,
            token=token,
        )
    if plan.offload == "group" and kwargs.get("transformer") is not None:
        # Off the GPU before T5 loads there: the load peak is one 4-bit component, not both (group_offload.py)
        group_offload.apply_group_offload(kwargs["transformer"], plan.device)
    elif plan.quantization == "int8":
        kwargs["transformer"] = SD3Transformer2DModel.from_pretrained(
            plan.model_id,
            subfolder="transformer",
            quantization_config=BitsAndBytesConfig(load_in_8bit=True),
            dtype=plan.dtype,
            token=token,
        )
    if plan.t5 == "dropped":
        # A pipeline saved with T5 still lists it; both entries must be None to skip it.
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    elif plan.t5 == "staged":  # T5 is loaded for each new prompt (t5_encoder.encode_staged); its tokenizer stays
        kwargs["text_encoder_3"] = None
    elif plan.t5 == "nf4":
        kwargs["text_encoder_3"] = load_t5(plan, token, quantize=True)
    if plan.offload == "none":
        # Straight to the device (diffusers accepts "cuda", "mps" or "cpu" here): host RAM never holds
        # the whole pipeline. "cuda:N" loads onto "cuda" with N as the current device.
        device_type = torch.device(plan.device).type
        index = torch.device(plan.device).index
        with torch.cuda.device(index) if device_type == "cuda" and index is not None else contextlib.nullcontext():
            pipe = StableDiffusion3Pipeline.from_pretrained(
                plan.model_id, dtype=plan.dtype, token=token, device_map=device_type, **kwargs
            )
    else:
        pipe = StableDiffusion3Pipeline.from_pretrained(plan.model_id, dtype=plan.dtype, token=token, **kwargs)
    if plan.vae_tiling:
        vae_decode.enable_vae_tiling(pipe.vae)
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=plan.device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=plan.device)
    elif plan.offload == "group":
        group_offload.apply_group_offload(pipe, plan.device, skip=("transformer",) if "transformer" in kwargs else ())
    return pipe


def compute_dtypes(pipe) -> dict[str, str]:
    """The dtype each 4-bit component of `pipe` really computes in, e.g. {"transformer": "float16"}."""
    quantized = {name: c for name, c in pipe.components.items()
                 if isinstance(c, torch.nn.Module) and quantized_checkpoints.is_quantized(c)}
    if not quantized:
        return {}
    import bitsandbytes as bnb

    found = {}
    for name, component in quantized.items():
        kinds = {str(m.compute_dtype).removeprefix("torch.") for m in component.modules()
                 if isinstance(m, bnb.nn.Linear4bit) and m.compute_dtype is not None}
        if kinds:
            found[name] = ", ".join(sorted(kinds))
    return found


def release_pipeline(pipe) -> None:
    """Free a pipeline's memory: drop offload hooks and every model component, then empty caches.

    It takes the pipeline's lock first (`pipeline_lock.releasing`): a studio generating on it is
    cancelled, any other generation is waited for, and callers waiting for it get a clear
    "released" error. The pipeline object is left empty; load a new one to generate again."""
    if pipe is None:
        return
    check_pipeline(pipe, "release_pipeline", allow_released=True)
    with releasing(pipe):  # never empty a pipeline mid-run
        if hasattr(pipe, "remove_all_hooks"):
            pipe.remove_all_hooks()
        for name, component in list(pipe.components.items()):
            if isinstance(component, torch.nn.Module):
                setattr(pipe, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():  # Apple Silicon keeps its own cache too
        torch.mps.empty_cache()


def release_current_pipeline() -> None:
    """Release the pipeline `load_pipeline` returned last, if any."""
    global _current_pipeline
    pipe, _current_pipeline = _current_pipeline, None
    try:
        release_pipeline(pipe)
    except RuntimeError:  # refused (called from a step callback of this pipeline): it stays loaded
        _current_pipeline = pipe
        raise
