"""`load_pipeline`: one call that loads any SD3.5 preset the way its lesson teaches.

The code path is the one a reader would write by hand (and notebook 01 shows by hand):
`SD3Transformer2DModel.from_pretrained(..., quantization_config=BitsAndBytesConfig(...))` passed
into `StableDiffusion3Pipeline.from_pretrained`. On top of it: memory planning (offload only when
the model does not fit), the token and gated-model checks, and one pipeline per kernel.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import devices, hf_token, memory, quantized_checkpoints, tiny
from .errors import GPUOutOfMemoryError, QuantizationNeedsGPUError
from .presets import PRESETS, Preset, Recommendation, get_preset

OFFLOAD_CHOICES = ("auto", "none", "model", "sequential", True, False)
# Room for activations, the VAE decode and the CUDA context at 1024x1024, on top of the weights.
WORKING_MEMORY_BYTES = 3 * memory.GiB
STAND_IN_BANNER = (
    "=" * 78 + "\n"
    "OFFLINE STAND-IN: random weights, images are noise.\n"
    "This run proves the code, not the pictures. With a GPU and a Hugging Face token the same\n"
    "cells load the real Stable Diffusion 3.5 (pass stand_in=False to insist on it).\n" + "=" * 78
)

_current_pipeline = None  # the one pipeline this kernel keeps; loading another releases it
_stand_in_announced = False  # the banner prints once per kernel, not on every load


@dataclass
class LoadingPlan:
    """What `load_pipeline` will do, decided before any weights are read."""

    preset: str
    model_id: str
    stand_in: bool
    device: str
    dtype: torch.dtype
    quantization: str | None
    t5: str  # "full", "nf4" or "dropped"
    offload: str  # "none", "model" or "sequential"
    reason: str  # why this offload choice, in one sentence
    estimated_bytes: dict[str, int] = field(default_factory=dict)  # per component, as loaded
    free_bytes: int | None = None  # free accelerator memory when planned
    transformer_source: str | None = None  # pre-quantized transformer folder or Hub id, if given

    @property
    def total_bytes(self) -> int:
        return sum(self.estimated_bytes.values())


@dataclass
class LoadInfo:
    """Attached to every pipeline `load_pipeline` returns, as `pipe.load_info`."""

    plan: LoadingPlan
    seconds: float
    recommended: Recommendation
    blog: Recommendation | None
    default_size: int


def use_stand_in(requested: bool | None = None) -> bool:
    """Whether to use the offline stand-in: `requested` if given, else $SD35_STAND_IN ("1"/"0"),
    else automatically when there is no GPU (CUDA or Apple MPS) to run the real models on."""
    if requested is not None:
        return bool(requested)
    env = os.environ.get("SD35_STAND_IN", "").strip().lower()
    if env in ("1", "true", "yes"):
        return True
    if env in ("0", "false", "no"):
        return False
    return devices.pick_device("auto") == "cpu"


def model_id(model: str = "sd35-large", stand_in: bool | None = None) -> str:
    """The `from_pretrained` id for a preset: its Hub repository, or the stand-in's local folder.

    Notebooks pass this to the raw diffusers calls they teach, so the same cell loads the real
    model on a GPU and the stand-in offline."""
    preset = get_preset(model) if model in PRESETS else None
    if use_stand_in(stand_in) or (preset is not None and preset.repo_id is None):
        return str(tiny.tiny_pipeline_dir())
    return preset.repo_id if preset is not None else model


def _bytes_per_parameter(dtype: torch.dtype, quantization: str | None) -> float:
    if quantization:
        return memory.BYTES_PER_PARAMETER[quantization]
    return {torch.float32: 4.0, torch.bfloat16: 2.0, torch.float16: 2.0}[dtype]


def estimate_footprint(
    parameters: dict[str, float], dtype: torch.dtype, quantization=None, t5: str = "full"
) -> dict[str, int]:
    """Bytes each component will take once loaded, from parameter counts and precisions."""
    sizes = {}
    for name, count in parameters.items():
        if name == "transformer":
            per = _bytes_per_parameter(dtype, quantization)
        elif name == "text_encoder_3":
            if t5 == "dropped":
                continue
            per = _bytes_per_parameter(dtype, "nf4" if t5 == "nf4" else None)
        else:
            per = _bytes_per_parameter(dtype, None)
        sizes[name] = int(count * per)
    return sizes


def choose_offload(
    offload, device: str, estimated: dict[str, int], free_bytes: int | None,
    working_bytes: int = WORKING_MEMORY_BYTES,
) -> tuple[str, str]:
    """Pick "none", "model" or "sequential" offload and say why.

    "auto" takes the fastest plan that fits: everything on the GPU if the weights plus working
    memory fit in `free_bytes`; else model offload (one component on the GPU at a time) if the
    largest component fits; else sequential offload (layer by layer, slowest)."""
    if offload not in OFFLOAD_CHOICES:
        raise ValueError(
            f"offload must be 'auto', 'none', 'model', 'sequential', True or False, not {offload!r}."
        )
    offload = {True: "model", False: "none"}.get(offload, offload)
    if device == "cpu":
        if offload in ("model", "sequential"):
            raise ValueError(
                f"offload={offload!r} moves weights between CPU and GPU, but this pipeline runs on "
                "the CPU. Use offload='auto' or 'none' on a machine without a GPU."
            )
        return "none", "runs on the CPU: there is no GPU memory to save"
    if offload != "auto":
        return offload, f"offload={offload!r} was asked for"
    if free_bytes is None or not estimated:
        return "none", "free memory or model size unknown: loading everything on the GPU"
    total, largest = sum(estimated.values()), max(estimated.values())
    if total + working_bytes <= free_bytes:
        return "none", (
            f"the weights ({memory.format_bytes(total)}) plus working memory fit in "
            f"{memory.format_bytes(free_bytes)} free"
        )
    if largest + working_bytes <= free_bytes:
        return "model", (
            f"the weights ({memory.format_bytes(total)}) do not fit in {memory.format_bytes(free_bytes)} "
            f"free, but the largest component ({memory.format_bytes(largest)}) does"
        )
    return "sequential", (
        f"even the largest component ({memory.format_bytes(largest)}) does not fit in "
        f"{memory.format_bytes(free_bytes)} free: streaming layers one by one (slow)"
    )


def plan_loading(
    model: str = "sd35-large-nf4",
    *,
    device: str = "auto",
    offload="auto",
    drop_t5: bool = False,
    quantize_t5: bool = False,
    dtype="auto",
    stand_in: bool | None = None,
    free_bytes: int | None = None,
    transformer: str | None = None,
) -> LoadingPlan:
    """Decide how `model` will be loaded, without loading it. `free_bytes` overrides the measured
    free GPU memory (to ask "what would happen on a 16 GB card?"). `transformer`: a folder written
    by `save_quantized` or a Hub id of a pre-quantized transformer, loaded instead of quantizing."""
    if drop_t5 and quantize_t5:
        raise ValueError("drop_t5=True and quantize_t5=True contradict each other: choose one.")
    preset = _resolve_preset(model)
    quantization = preset.quantization
    if transformer is not None:
        quantization = _check_transformer_source(transformer) or quantization
    stand_in = use_stand_in(stand_in) or preset.repo_id is None
    device = devices.pick_device(device)
    if dtype == "auto":
        dtype = devices.pick_dtype(device, quantized=bool(preset.quantization or quantize_t5))
    elif not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be 'auto', torch.float32, torch.bfloat16 or torch.float16, not {dtype!r}.")
    if stand_in:
        mid = str(tiny.tiny_pipeline_dir())
        parameters = memory.parameters_on_disk(mid)
    else:
        mid = preset.repo_id
        parameters = preset.parameters
    t5 = "dropped" if drop_t5 else "nf4" if quantize_t5 else "full"
    estimated = estimate_footprint(parameters, dtype, quantization, t5)
    if free_bytes is None:
        free_bytes = devices.free_accelerator_memory(device)
    choice, reason = choose_offload(offload, device, estimated, free_bytes)
    return LoadingPlan(
        preset=preset.name,
        model_id=mid,
        stand_in=stand_in,
        device=device,
        dtype=dtype,
        quantization=quantization,
        t5=t5,
        offload=choice,
        reason=reason,
        estimated_bytes=estimated,
        free_bytes=free_bytes,
        transformer_source=None if transformer is None else str(transformer),
    )


def _check_transformer_source(transformer) -> str | None:
    """Validate `transformer=` before loading; return the quantization saved in it, if known."""
    if not isinstance(transformer, (str, Path)) or not str(transformer):
        raise ValueError(f"transformer must be a folder or a Hub id, not {transformer!r}.")
    folder, subfolder = quantized_checkpoints.transformer_folder(transformer)
    looks_like_repo = str(transformer).count("/") == 1 and not str(transformer).startswith((".", "/", "~"))
    if not (Path(folder) / (subfolder or "") / "config.json").is_file() and (
        Path(transformer).exists() or not looks_like_repo
    ):
        raise ValueError(
            f"transformer={str(transformer)!r} is neither a folder with a saved transformer "
            "(config.json, or transformer/config.json as save_quantized writes) nor a Hub id."
        )
    return quantized_checkpoints.saved_quantization(transformer)


def _resolve_preset(model: str) -> Preset:
    """A preset by name; a Hub id or local folder becomes an ad-hoc full-precision preset."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a preset name, a Hub id or a folder, not {model!r}.")
    if model in PRESETS:
        return PRESETS[model]
    looks_like_repo = model.count("/") == 1 and not model.startswith((".", "/"))
    if Path(model).is_dir() or looks_like_repo:
        base = PRESETS["sd35-large"]
        return Preset(model, model, model, None, False, base.default_size, base.model_card)
    return get_preset(model)  # raises the "unknown preset" error


def load_pipeline(
    model: str = "sd35-large-nf4",
    *,
    device: str = "auto",
    offload="auto",
    drop_t5: bool = False,
    quantize_t5: bool = False,
    dtype="auto",
    stand_in: bool | None = None,
    keep_previous: bool = False,
    transformer: str | None = None,
):
    """Load a `StableDiffusion3Pipeline` for a preset ("sd35-large-nf4", "tiny", ...), a Hub id or
    a local folder, and return it with `pipe.load_info` (the plan, load seconds, recommendations).

    Every option is checked before any weights are read. Unless `keep_previous=True`, the
    pipeline this function returned last is released first (its GPU memory freed), since two
    SD3.5 Large pipelines rarely fit together. `transformer=` loads a pre-quantized transformer
    (a `save_quantized` folder or Hub id) instead of quantizing the model's bf16 one.
    """
    plan = plan_loading(
        model, device=device, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5,
        dtype=dtype, stand_in=stand_in, transformer=transformer,
    )
    preset = _resolve_preset(model)
    token = None
    if not plan.stand_in:
        token = hf_token.find_token()
        if preset.gated:
            hf_token.require_access(plan.model_id, token)
        if hf_token.offline() and not hf_token.is_cached(plan.model_id):
            raise FileNotFoundError(
                f"HF_HUB_OFFLINE is set and {plan.model_id} is not in the local Hugging Face cache. "
                "Download it once with a network connection, or use stand_in=True."
            )
    check_fits(plan)
    global _stand_in_announced
    if plan.stand_in and not _stand_in_announced:
        print(STAND_IN_BANNER)
        _stand_in_announced = True
    if not keep_previous:
        release_current_pipeline()

    started = time.perf_counter()
    try:
        pipe = _from_pretrained(plan, token)
    except torch.OutOfMemoryError as e:
        raise GPUOutOfMemoryError(_does_not_fit(plan, plan.total_bytes)) from e
    except RuntimeError as e:
        if "No GPU found" in str(e):
            raise QuantizationNeedsGPUError(
                f"{plan.preset} quantizes with bitsandbytes, and diffusers only does that on a GPU "
                "(CUDA, or Apple MPS for 4-bit). Run this on a GPU runtime (Colab: Runtime > Change "
                "runtime type > T4 GPU), or choose a full-precision preset such as 'sd35-medium'."
            ) from e
        raise
    except OSError as e:
        better = hf_token.explain_hub_error(e, plan.model_id)
        if better is not None:
            raise better from None  # `from None`: the Hub's error text may echo request headers
        raise
    seconds = time.perf_counter() - started
    # The stand-in keeps the preset's guidance and steps (what the lesson teaches) but renders at its
    # own small size, so a CPU runs every notebook in seconds.
    size = PRESETS["tiny"].default_size if plan.stand_in else preset.default_size
    pipe.load_info = LoadInfo(plan, seconds, preset.model_card, preset.blog, size)
    global _current_pipeline
    _current_pipeline = pipe
    return pipe


def _from_pretrained(plan: LoadingPlan, token: str | None):
    """The diffusers calls themselves: the same ones notebook 01 writes out by hand."""
    from diffusers import BitsAndBytesConfig, SD3Transformer2DModel, StableDiffusion3Pipeline

    kwargs = {}
    saved_t5 = None
    if plan.transformer_source is not None:
        # Pre-quantized: the quantization config is read from the saved config.json.
        source, subfolder = quantized_checkpoints.transformer_folder(plan.transformer_source)
        kwargs["transformer"] = SD3Transformer2DModel.from_pretrained(
            source, subfolder=subfolder, dtype=plan.dtype, token=token
        )
        if subfolder and (Path(source) / "text_encoder_3" / "config.json").is_file():
            saved_t5 = source
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
    elif plan.t5 == "nf4" and saved_t5 is not None:
        from transformers import T5EncoderModel

        kwargs["text_encoder_3"] = T5EncoderModel.from_pretrained(
            saved_t5, subfolder="text_encoder_3", dtype=plan.dtype
        )
    elif plan.t5 == "nf4":
        from transformers import BitsAndBytesConfig as TransformersBnbConfig
        from transformers import T5EncoderModel

        kwargs["text_encoder_3"] = T5EncoderModel.from_pretrained(
            plan.model_id,
            subfolder="text_encoder_3",
            quantization_config=TransformersBnbConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=plan.dtype
            ),
            dtype=plan.dtype,
            token=token,
        )
    pipe = StableDiffusion3Pipeline.from_pretrained(
        plan.model_id, dtype=plan.dtype, token=token, **kwargs
    )
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=plan.device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=plan.device)
    elif plan.device != "cpu":
        pipe.to(plan.device)
    return pipe


def check_fits(plan: LoadingPlan) -> None:
    """Raise GPUOutOfMemoryError, before any loading, when a plan without offload cannot fit."""
    if plan.offload == "none" and plan.free_bytes is not None and plan.estimated_bytes:
        needed = plan.total_bytes + WORKING_MEMORY_BYTES
        if needed > plan.free_bytes:
            raise GPUOutOfMemoryError(_does_not_fit(plan, needed))


def _does_not_fit(plan: LoadingPlan, needed: int) -> str:
    return (
        f"{plan.preset} needs about {memory.format_bytes(needed)} of GPU memory with offload="
        f"'{plan.offload}', but only {memory.format_bytes(plan.free_bytes)} is free. Try "
        "offload='auto' (or 'model'), the 'sd35-large-nf4' preset, drop_t5=True or quantize_t5=True, "
        "or free memory by restarting the kernel."
    )


def release_pipeline(pipe) -> None:
    """Free a pipeline's memory: drop offload hooks and every model component, then empty caches.

    The pipeline object is left empty; load a new one to generate again."""
    if pipe is None:
        return
    if hasattr(pipe, "remove_all_hooks"):
        pipe.remove_all_hooks()
    for name, component in list(pipe.components.items()):
        if isinstance(component, torch.nn.Module):
            setattr(pipe, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def release_current_pipeline() -> None:
    """Release the pipeline `load_pipeline` returned last, if any."""
    global _current_pipeline
    pipe, _current_pipeline = _current_pipeline, None
    release_pipeline(pipe)
