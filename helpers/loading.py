"""`load_pipeline`: one call that loads any SD3.5 preset the way its lesson teaches.

The code path is the one a reader would write by hand (and notebook 01 shows by hand):
`SD3Transformer2DModel.from_pretrained(..., quantization_config=BitsAndBytesConfig(...))` passed
into `StableDiffusion3Pipeline.from_pretrained`. On top of it: memory planning (offload only when
the model does not fit), the token and gated-model checks, and one pipeline per kernel.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import architectures, devices, hf_token, memory, memory_model, quantized_checkpoints, tiny
from .errors import GPUOutOfMemoryError, QuantizationNeedsGPUError
from .presets import PRESETS, Preset, Recommendation, get_preset
from .running_generations import stop_generations

OFFLOAD_CHOICES = ("auto", "none", "model", "sequential", True, False)
# Working memory of SD3.5 Large at 1024x1024 in bf16 with flash attention: the allowance used when
# none is given (the planner derives its own per device, dtype and kernel: memory_model.working_bytes).
WORKING_MEMORY_BYTES = memory_model.working_bytes("large", 1024, torch.bfloat16, "flash")
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
    """What `load_pipeline` will do, decided before any weights are read. Bytes are exact for the
    weights (helpers.memory_model) and rest on named assumptions for working memory and host RAM."""

    preset: str
    model_id: str
    stand_in: bool
    device: str
    dtype: torch.dtype
    quantization: str | None
    t5: str  # "full", "nf4" or "dropped"
    offload: str  # "none", "model" or "sequential"
    reason: str  # why this offload choice (or why nothing fits, and what would), in one sentence
    estimated_bytes: dict[str, int] = field(default_factory=dict)  # per component, as loaded
    free_bytes: int | None = None  # free accelerator memory when planned
    transformer_source: str | None = None  # pre-quantized transformer folder or Hub id, if given
    working_bytes: int = 0  # working-memory allowance on the accelerator (memory_model.working_bytes)
    host_bytes_needed: int = 0  # peak host RAM, loading or generating (memory_model.host_bytes)
    host_bytes_available: int | None = None  # host RAM available when planned
    fits: bool = True  # False: neither the accelerator nor host RAM can hold this plan
    kernel: str | None = None  # SDPA attention kernel the device gets with this dtype
    would_fit: dict | None = None  # when it does not fit: load_pipeline kwargs of a plan that would
    fast: bool = False  # load_pipeline(fast=True): compiled transformer blocks (helpers.speedups)

    @property
    def total_bytes(self) -> int:
        return sum(self.estimated_bytes.values())

    @property
    def gpu_bytes_needed(self) -> int | None:
        """Peak accelerator bytes of this plan (weights resident at once plus working memory)."""
        if self.device == "cpu":
            return None
        return accelerator_bytes(self.offload, self.estimated_bytes, self.working_bytes)


@dataclass
class LoadInfo:
    """Attached to every pipeline `load_pipeline` returns, as `pipe.load_info`."""

    plan: LoadingPlan
    seconds: float
    recommended: Recommendation
    blog: Recommendation | None
    default_size: int
    compute_dtypes: dict = field(default_factory=dict)  # 4-bit component -> dtype its maths really use


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


def estimate_footprint(census: dict, dtype: torch.dtype, quantization=None, t5: str = "full") -> dict[str, int]:
    """Bytes each component will take once loaded, exactly, from its `memory_model.Census` (what
    `Preset.census` holds for the real models, counted on the meta device)."""
    return memory_model.pipeline_bytes(census, dtype, quantization, t5)


def accelerator_bytes(offload: str, estimated: dict[str, int], working_bytes: int) -> int:
    """Peak accelerator bytes: every weight (no offload), the largest component (model offload)
    or one layer at a time (sequential, counted as 0), plus working memory."""
    resident = {"none": sum(estimated.values()), "model": max(estimated.values(), default=0)}.get(offload, 0)
    return resident + working_bytes


def _normalise_offload(offload) -> str:
    if offload not in OFFLOAD_CHOICES:
        raise ValueError(
            f"offload must be 'auto', 'none', 'model', 'sequential', True or False, not {offload!r}."
        )
    return {True: "model", False: "none"}.get(offload, offload)


def choose_offload(
    offload, device: str, estimated: dict[str, int], free_bytes: int | None,
    working_bytes: int = WORKING_MEMORY_BYTES, *, quantized: bool = False,
    reads: dict[str, int] | None = None, host_available: int | None = None,
) -> tuple[str, str]:
    """Pick "none", "model" or "sequential" offload and say why.

    "auto" takes the fastest plan that fits both the accelerator (`free_bytes`) and host RAM
    (`host_available`, when given; see memory_model.host_bytes): everything on the GPU; else model
    offload (one component on the GPU at a time); else sequential offload (layer by layer), never
    for a bitsandbytes-quantized model (accelerate's hooks break its 4-bit state). On Apple's
    unified memory offloading saves nothing, so "auto" is "none" there. When nothing fits, the
    reason starts with "does not fit" and names each way it failed."""
    offload = _normalise_offload(offload)
    if device == "cpu":
        if offload in ("model", "sequential"):
            raise ValueError(
                f"offload={offload!r} moves weights between CPU and GPU, but this pipeline runs on "
                "the CPU. Use offload='auto' or 'none' on a machine without a GPU."
            )
        return "none", "runs on the CPU: there is no GPU memory to save"
    if device == "mps" and offload in ("model", "sequential"):
        raise ValueError(
            f"offload={offload!r} on Apple Silicon moves weights within the same unified memory and "
            "saves nothing. Use offload='auto' or 'none' (and a smaller plan if it does not fit)."
        )
    if quantized and offload == "sequential":
        raise ValueError(
            "offload='sequential' cannot run a bitsandbytes-quantized model: accelerate's layer-by-layer "
            "hooks move its 4-bit quant_state to the meta device ('Cannot copy out of meta tensor'; "
            "diffusers issue 10800). Use offload='model', quantize_t5=True or drop_t5=True instead."
        )
    if offload != "auto":
        return offload, f"offload={offload!r} was asked for"
    if free_bytes is None or not estimated:
        return "none", "free memory or model size unknown: loading everything on the GPU"
    candidates = ["none"] if device == "mps" else ["none", "model"] if quantized else ["none", "model", "sequential"]
    for choice in candidates:
        reason = _fit_problem(choice, device, estimated, free_bytes, working_bytes, reads, host_available)
        if reason is None:
            return choice, _fit_reason(choice, estimated, free_bytes, working_bytes)
    problems = [_fit_problem(c, device, estimated, free_bytes, working_bytes, reads, host_available) for c in candidates]
    return candidates[0], "does not fit: " + "; ".join(problems)


def _fit_problem(offload, device, estimated, free_bytes, working_bytes, reads, host_available) -> str | None:
    """Why `offload` does not fit (accelerator first, then host RAM), or None when it fits."""
    need = accelerator_bytes(offload, estimated, working_bytes)
    if free_bytes is not None and need > free_bytes:
        what = {"none": "the weights", "model": "the largest component"}.get(offload, "one layer")
        return (f"with offload='{offload}', {what} plus working memory need "
                f"{memory.format_bytes(need)} of the {memory.format_bytes(free_bytes)} free on the {device}")
    if host_available is not None:
        host = memory_model.host_bytes(offload, device, estimated, reads or {})
        peak = max(host.values())
        if peak > host_available:
            when = "while loading" if host["loading"] >= host["generating"] else "while generating"
            return (f"with offload='{offload}', host RAM must hold {memory.format_bytes(peak)} {when}, "
                    f"but {memory.format_bytes(host_available)} is available")
    return None


def _fit_reason(offload, estimated, free_bytes, working_bytes) -> str:
    total, largest = sum(estimated.values()), max(estimated.values())
    if offload == "none":
        return (f"the weights ({memory.format_bytes(total)}) plus working memory "
                f"({memory.format_bytes(working_bytes)}) fit in {memory.format_bytes(free_bytes)} free")
    if offload == "model":
        return (f"the weights ({memory.format_bytes(total)}) do not fit in {memory.format_bytes(free_bytes)} "
                f"free, but the largest component ({memory.format_bytes(largest)}) does")
    return (f"even the largest component ({memory.format_bytes(largest)}) does not fit in "
            f"{memory.format_bytes(free_bytes)} free: streaming layers one by one (slow)")


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
    host_bytes: int | None = None,
) -> LoadingPlan:
    """Decide how `model` will be loaded, without loading it. `free_bytes` / `host_bytes` override
    the measured free accelerator memory / available host RAM (to ask "what would happen on a
    16 GB card?"). `transformer`: a folder written by `save_quantized` or a Hub id of a
    pre-quantized transformer, loaded instead of quantizing. When nothing fits, `plan.fits` is
    False, `plan.reason` says why and `plan.would_fit` holds the keyword arguments of a plan that
    would (`load_pipeline` raises with both before reading any weights)."""
    if drop_t5 and quantize_t5:
        raise ValueError("drop_t5=True and quantize_t5=True contradict each other: choose one.")
    preset = _resolve_preset(model)
    _normalise_offload(offload)
    if transformer is not None and transformer != PREQUANTIZED:  # PREQUANTIZED: "what if", planning only
        _check_transformer_source(transformer)
    device = devices.pick_device(device)
    if not (dtype == "auto" or (isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.bfloat16, torch.float16))):
        raise ValueError(f"dtype must be 'auto', torch.float32, torch.bfloat16 or torch.float16, not {dtype!r}.")
    options = dict(model=model, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5, dtype=dtype)
    plan = _plan(preset, device, options, stand_in, free_bytes, host_bytes, transformer)
    if not plan.fits:
        plan.would_fit = _what_would_fit(preset, device, options, stand_in, plan)
        if plan.would_fit is not None:
            plan.reason += "; this would: " + describe_options(plan.would_fit)
    return plan


PREQUANTIZED = "<pre-quantized folder>"  # stands for a save_quantized folder in suggested plans


def _plan(preset, device, options, stand_in, free_bytes, host_bytes, transformer) -> LoadingPlan:
    """The plan for `options` on `device`; `transformer` may be PREQUANTIZED (a hypothetical
    save_quantized folder) when only suggesting."""
    quantization = preset.quantization
    if transformer is not None and transformer != PREQUANTIZED:
        quantization = quantized_checkpoints.saved_quantization(transformer) or quantization
    elif transformer == PREQUANTIZED:
        quantization = quantization or "nf4"
    if device == "mps" and quantization == "int8":
        raise ValueError(
            f"{preset.name} quantizes to 8-bit with bitsandbytes, which diffusers runs on CUDA (and XPU) "
            "only. On Apple Silicon use 'sd35-large-nf4' (4-bit works on MPS) or a bf16 preset."
        )
    stand_in = use_stand_in(stand_in) or preset.repo_id is None
    quantized = bool(quantization or options["quantize_t5"])
    dtype = options["dtype"]
    if dtype == "auto":
        dtype = devices.pick_dtype(device, quantized=quantized)
    if stand_in:
        mid = str(tiny.tiny_pipeline_dir())
        counts, config = _folder_census(mid)
    elif preset.census:
        mid, counts, config = preset.repo_id, preset.census, architectures.TRANSFORMER_CONFIGS[preset.family]
    elif Path(preset.repo_id).is_dir():
        mid = preset.repo_id
        counts, config = _folder_census(mid)
    else:  # a Hub id we cannot look into offline: assume SD3.5 Large's architecture
        mid, counts, config = preset.repo_id, memory_model.FULL_SIZE["large"], architectures.TRANSFORMER_CONFIGS["large"]
    t5 = "dropped" if options["drop_t5"] else "nf4" if options["quantize_t5"] else "full"
    estimated = memory_model.pipeline_bytes(counts, dtype, quantization, t5)
    kernel = devices.sdpa_kernel(device, dtype)
    size = PRESETS["tiny"].default_size if stand_in else preset.default_size
    working = memory_model.working_bytes(config, size, dtype, kernel)
    if free_bytes is None:
        free_bytes = devices.free_accelerator_memory(device)
    if host_bytes is None:
        host_bytes = devices.host_memory_available()
    reads = memory_model.checkpoint_read_bytes(counts, quantization, t5, prequantized=transformer is not None)
    choice, reason = choose_offload(
        options["offload"], device, estimated, free_bytes, working, quantized=quantized, reads=reads,
        host_available=host_bytes,
    )
    fits = _fit_problem(choice, device, estimated, free_bytes, working, reads, host_bytes) is None
    if not fits and not reason.startswith("does not fit"):
        reason = "does not fit: " + _fit_problem(choice, device, estimated, free_bytes, working, reads, host_bytes)
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
        working_bytes=working,
        host_bytes_needed=max(memory_model.host_bytes(choice, device, estimated, reads).values()),
        host_bytes_available=host_bytes,
        fits=fits,
        kernel=kernel,
    )


# What to try when a plan does not fit, best first: a 4-bit T5 keeps the prompt following of T5,
# dropping it costs some; a pre-quantized transformer never reads the half-precision checkpoint.
_ALTERNATIVES = (
    dict(quantize_t5=True, drop_t5=False),
    dict(quantize_t5=True, drop_t5=False, transformer=PREQUANTIZED),
    dict(quantize_t5=False, drop_t5=True),
    dict(quantize_t5=False, drop_t5=True, transformer=PREQUANTIZED),
)


def _what_would_fit(preset, device, options, stand_in, failed: LoadingPlan) -> dict | None:
    """load_pipeline keyword arguments of the first alternative plan that fits without streaming
    layers (sequential offload is slowest), else of the first that fits at all, or None."""
    fitting = []
    models = [options["model"]]
    if preset.family == "large" and preset.quantization != "nf4":
        models.append("sd35-large-nf4")  # the 4-bit transformer is what a small GPU needs
    for model in models:
        for change in ({},) + _ALTERNATIVES:
            if model == options["model"] and not change:
                continue
            if change.get("transformer") and _resolve_preset(model).quantization != "nf4":
                continue
            trial = dict(options, model=model, offload="auto", dtype=failed.dtype, **change)
            transformer = trial.pop("transformer", None)
            plan = _plan(_resolve_preset(model), device, trial, stand_in, failed.free_bytes,
                         failed.host_bytes_available, transformer)
            if plan.fits:
                if transformer is not None:
                    trial["transformer"] = transformer
                trial["offload"] = plan.offload
                fitting.append({k: v for k, v in trial.items() if v is not False})
    fast = [kwargs for kwargs in fitting if kwargs["offload"] != "sequential"]
    return (fast or fitting or [None])[0]


def describe_options(kwargs: dict) -> str:
    """A load_pipeline call as text, e.g. "load_pipeline('sd35-large-nf4', drop_t5=True, ...)"."""
    rest = []
    for key, value in kwargs.items():
        if key == "model":
            continue
        if isinstance(value, torch.dtype):
            value = "torch." + str(value).removeprefix("torch.")
        elif value == PREQUANTIZED:
            value = "<a save_quantized folder>"
        else:
            value = repr(value)
        rest.append(f"{key}={value}")
    return f"load_pipeline({kwargs['model']!r}, {', '.join(rest)})"


_CENSUS_CACHE: dict = {}


def _folder_census(folder) -> tuple[dict, dict]:
    """(census per component, transformer config) of a saved pipeline, built on meta once per folder."""
    index = Path(folder) / "model_index.json"
    key = (str(folder), index.stat().st_mtime_ns if index.exists() else None)
    if key not in _CENSUS_CACHE:
        config = json.loads((Path(folder) / "transformer" / "config.json").read_text())
        _CENSUS_CACHE[key] = (memory_model.folder_census(folder), config)
    return _CENSUS_CACHE[key]


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
    fast: bool = False,
):
    """Load a `StableDiffusion3Pipeline` for a preset ("sd35-large-nf4", "tiny", ...), a Hub id or
    a local folder, and return it with `pipe.load_info` (the plan, load seconds, recommendations).

    Every option is checked before any weights are read. Unless `keep_previous=True`, the
    pipeline this function returned last is released first (its GPU memory freed), since two
    SD3.5 Large pipelines rarely fit together. `transformer=` loads a pre-quantized transformer
    (a `save_quantized` folder or Hub id) instead of quantizing the model's bf16 one.
    `fast=True` applies the fast plan (`helpers.speedups.make_fast`: compiled transformer blocks,
    channels-last VAE): the first image pays the compile time, later ones run faster.
    """
    global _current_pipeline
    if not isinstance(fast, bool):
        raise ValueError(f"fast must be True or False, not {fast!r}.")
    if transformer == PREQUANTIZED:
        raise ValueError(
            f"transformer={PREQUANTIZED!r} stands for a pre-quantized transformer in a suggested plan: "
            "pass the folder save_quantized wrote (or a Hub id of one) instead."
        )
    plan = plan_loading(  # every option checked, before anything is released or read
        model, device=device, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5,
        dtype=dtype, stand_in=stand_in, transformer=transformer,
    )
    preset = _resolve_preset(model)
    token = None
    if not plan.stand_in:
        token = hf_token.find_token()
        if preset.gated:
            hf_token.require_access(plan.model_id, token)
    # Checked before the previous pipeline is released: a load that cannot run here must not cost
    # the reader the pipeline they already have. (Whether it fits is checked first when nothing is
    # held; otherwise after the release, which frees the memory it is measured against.)
    if keep_previous or _current_pipeline is None:
        check_fits(plan)
    if not plan.stand_in and hf_token.offline() and not hf_token.is_cached(plan.model_id):
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
            dtype=dtype, stand_in=stand_in, transformer=transformer,
        )
    check_fits(plan)
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
            raise QuantizationNeedsGPUError(_needs_gpu(plan)) from e
        raise
    except OSError as e:
        better = hf_token.explain_hub_error(e, plan.model_id)
        if better is not None:
            raise better from None  # `from None`: the Hub's error text may echo request headers
        raise
    if fast:
        from .speedups import make_fast

        make_fast(pipe)
    seconds = time.perf_counter() - started
    # The stand-in keeps the preset's guidance and steps (what the lesson teaches) but renders at its
    # own small size, so a CPU runs every notebook in seconds.
    size = PRESETS["tiny"].default_size if plan.stand_in else preset.default_size
    plan.fast = fast
    pipe.load_info = LoadInfo(plan, seconds, preset.model_card, preset.blog, size, compute_dtypes(pipe))
    _current_pipeline = pipe
    return pipe


def _needs_gpu(plan: LoadingPlan) -> str:
    return (
        f"{plan.preset} quantizes with bitsandbytes, and diffusers only does that on a GPU "
        "(CUDA, or Apple MPS for 4-bit). Run this on a GPU runtime (Colab: Runtime > Change "
        "runtime type > T4 GPU), or choose a full-precision preset such as 'sd35-medium'."
    )


def check_quantization_runs_here(plan: LoadingPlan) -> None:
    """Raise QuantizationNeedsGPUError now if diffusers would refuse this plan's bitsandbytes
    quantization here, by asking diffusers' own quantizer the environment question it asks later."""
    if plan.quantization not in ("nf4", "int8"):
        return
    from diffusers import BitsAndBytesConfig
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import (
        BnB4BitDiffusersQuantizer,
        BnB8BitDiffusersQuantizer,
    )

    if plan.quantization == "int8":
        quantizer = BnB8BitDiffusersQuantizer(BitsAndBytesConfig(load_in_8bit=True))
    else:
        quantizer = BnB4BitDiffusersQuantizer(BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    try:
        quantizer.validate_environment()
    except RuntimeError as e:
        if "No GPU found" in str(e):
            raise QuantizationNeedsGPUError(_needs_gpu(plan)) from e
        raise


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
        # The 4-bit maths would follow the saved config's compute dtype, not `dtype`: apply it.
        set_compute_dtype(kwargs["transformer"], plan.dtype)
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
        set_compute_dtype(kwargs["text_encoder_3"], plan.dtype)
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
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=plan.device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=plan.device)
    return pipe


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


def check_fits(plan: LoadingPlan) -> None:
    """Raise GPUOutOfMemoryError, before any loading, when the plan cannot fit the accelerator or
    host RAM; the message says why and, when one exists, which load_pipeline call would fit."""
    if not plan.fits:
        raise GPUOutOfMemoryError(
            f"{plan.preset} ({_plan_label(plan)}) {plan.reason}."
            + ("" if plan.would_fit else " No plan of this collection fits this machine.")
        )
    if plan.offload == "none" and plan.free_bytes is not None and plan.estimated_bytes:
        needed = plan.total_bytes + (plan.working_bytes or WORKING_MEMORY_BYTES)
        if needed > plan.free_bytes:
            raise GPUOutOfMemoryError(_does_not_fit(plan, needed))


def _plan_label(plan: LoadingPlan) -> str:
    t5 = {"full": "full T5", "nf4": "NF4 T5", "dropped": "no T5"}[plan.t5]
    return f"{str(plan.dtype).removeprefix('torch.')}, {t5}, offload='{plan.offload}'"


def _does_not_fit(plan: LoadingPlan, needed: int) -> str:
    return (
        f"{plan.preset} needs about {memory.format_bytes(needed)} of GPU memory with offload="
        f"'{plan.offload}', but only {memory.format_bytes(plan.free_bytes)} is free. Try "
        "offload='auto' (or 'model'), the 'sd35-large-nf4' preset, drop_t5=True or quantize_t5=True, "
        "or free memory by restarting the kernel."
    )


def release_pipeline(pipe) -> None:
    """Free a pipeline's memory: drop offload hooks and every model component, then empty caches.

    A generation running on it in the background (the studio) is cancelled and waited for first.
    The pipeline object is left empty; load a new one to generate again."""
    if pipe is None:
        return
    stop_generations(pipe)  # a studio generating on it stops first: never empty a pipeline mid-run
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
    release_pipeline(pipe)
