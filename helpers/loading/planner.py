"""`plan_loading`: how a preset will be loaded, decided before any weights are read.

The planner counts every component's bytes exactly (`memory_model`), asks the device how much memory
is free (`devices`), and picks the fastest offload that fits both the accelerator and host RAM. When
nothing fits it says why and which `load_pipeline` call would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import stand_in as stand_in_pipeline
from ..errors import GPUOutOfMemoryError
from ..measuring import format_bytes
from . import architectures, devices, memory_model, quantized_checkpoints
from .arguments import check_bool, check_byte_count, check_plan_options, env_flag
from .presets import PRESETS, get_preset, resolve_preset

OFFLOAD_CHOICES = ("auto", "none", "model", "sequential", True, False)
# Working memory of SD3.5 Large at 1024x1024 in bf16 with flash attention: the allowance used when
# none is given (the planner derives its own per device, dtype and kernel: memory_model.working_bytes).
WORKING_MEMORY_BYTES = memory_model.working_bytes("large", 1024, torch.bfloat16, "flash")


@dataclass
class LoadingPlan:
    """What `load_pipeline` will do, decided before any weights are read. Bytes are exact for the
    weights (helpers.loading.memory_model) and rest on named assumptions for working memory and host RAM."""

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
    fast: bool = False  # load_pipeline(fast=True): compiled transformer blocks (helpers.loading.fast_plan)

    @property
    def total_bytes(self) -> int:
        return sum(self.estimated_bytes.values())

    @property
    def gpu_bytes_needed(self) -> int | None:
        """Peak accelerator bytes of this plan (weights resident at once plus working memory)."""
        if self.device == "cpu":
            return None
        return accelerator_bytes(self.offload, self.estimated_bytes, self.working_bytes)


def use_stand_in(requested: bool | None = None) -> bool:
    """Whether to use the offline stand-in: `requested` if given, else $SD35_STAND_IN (1/true/yes/on
    or 0/false/no/off), else automatically when there is no GPU (CUDA or Apple MPS) to run the real models on."""
    check_bool("stand_in", requested, allow_none=True)
    if requested is not None:
        return requested
    env = env_flag("SD35_STAND_IN")
    if env is not None:
        return env
    return devices.pick_device("auto") == "cpu"


def model_id(model: str = "sd35-large", stand_in: bool | None = None) -> str:
    """The `from_pretrained` id for a preset: its Hub repository, or the stand-in's local folder.

    Notebooks pass this to the raw diffusers calls they teach, so the same cell loads the real
    model on a GPU and the stand-in offline."""
    resolve_preset(model)  # the same "unknown preset" error as load_pipeline
    preset = get_preset(model) if model in PRESETS else None
    if use_stand_in(stand_in) or (preset is not None and preset.repo_id is None):
        return str(stand_in_pipeline.tiny_pipeline_dir())
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
    check_byte_count("free_bytes", free_bytes)
    check_byte_count("host_available", host_available)
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
                f"{format_bytes(need)} of the {format_bytes(free_bytes)} free on the {device}")
    if host_available is not None:
        host = memory_model.host_bytes(offload, device, estimated, reads or {})
        peak = max(host.values())
        if peak > host_available:
            when = "while loading" if host["loading"] >= host["generating"] else "while generating"
            return (f"with offload='{offload}', host RAM must hold {format_bytes(peak)} {when}, "
                    f"but {format_bytes(host_available)} is available")
    return None


def _fit_reason(offload, estimated, free_bytes, working_bytes) -> str:
    total, largest = sum(estimated.values()), max(estimated.values())
    if offload == "none":
        return (f"the weights ({format_bytes(total)}) plus working memory "
                f"({format_bytes(working_bytes)}) fit in {format_bytes(free_bytes)} free")
    if offload == "model":
        return (f"the weights ({format_bytes(total)}) do not fit in {format_bytes(free_bytes)} "
                f"free, but the largest component ({format_bytes(largest)}) does")
    return (f"even the largest component ({format_bytes(largest)}) does not fit in "
            f"{format_bytes(free_bytes)} free: streaming layers one by one (slow)")


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
    check_plan_options(offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5, stand_in=stand_in,
                       free_bytes=free_bytes, host_bytes=host_bytes)
    if drop_t5 and quantize_t5:
        raise ValueError("drop_t5=True and quantize_t5=True contradict each other: choose one.")
    preset = resolve_preset(model)
    _normalise_offload(offload)
    if transformer is not None and transformer != PREQUANTIZED:  # PREQUANTIZED: "what if", planning only
        quantized_checkpoints.check_transformer_source(transformer)
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
        mid = str(stand_in_pipeline.tiny_pipeline_dir())
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
            if change.get("transformer") and resolve_preset(model).quantization != "nf4":
                continue
            trial = dict(options, model=model, offload="auto", dtype=failed.dtype, **change)
            transformer = trial.pop("transformer", None)
            plan = _plan(resolve_preset(model), device, trial, stand_in, failed.free_bytes,
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
        f"{plan.preset} needs about {format_bytes(needed)} of GPU memory with offload="
        f"'{plan.offload}', but only {format_bytes(plan.free_bytes)} is free. Try "
        "offload='auto' (or 'model'), the 'sd35-large-nf4' preset, drop_t5=True or quantize_t5=True, "
        "or free memory by restarting the kernel."
    )
