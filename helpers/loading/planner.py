"""`plan_loading`: how a preset will be loaded, decided before any weights are read.

The planner counts every component's bytes exactly (`memory_model`), costs each phase of an image
(text encoding, denoising, VAE decode, and loading itself) on the accelerator, asks the device how
much memory is free (`devices`), and picks the fastest offload that fits both the accelerator and
host RAM. Plans that rank higher (`ranking.RANKING`) but change what the reader chose are named in
the reason; when nothing fits it says why and which `load_pipeline` call would.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import stand_in as stand_in_pipeline
from ..measuring import format_bytes
from . import (
    architectures,
    devices,
    fast_plan,
    group_offload,
    host_memory,
    memory_model,
    quantized_checkpoints,
    ranking,
    vae_decode,
)
from .arguments import check_bool, check_plan_options, env_flag
from .offload_choice import OFFLOAD_CHOICES, _fit_problem, _normalise_offload, choose_offload  # noqa: F401 (re-exported)
from .presets import PRESETS, get_preset, resolve_preset
from .ranking import PREQUANTIZED, describe_options

# Working memory of SD3.5 Large at 1024x1024 in bf16 with flash attention: the allowance used when
# none is given (the planner derives its own per device, dtype, kernel and size: memory_model.phase_working).
DEFAULT_WORKING = memory_model.phase_working("large", 1024, torch.bfloat16, "flash")
WORKING_MEMORY_BYTES = DEFAULT_WORKING.peak


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
    t5: str  # "full", "nf4", "staged" (loaded for each new prompt's encoding only) or "dropped"
    offload: str  # "none", "model", "group" (helpers.loading.group_offload) or "sequential"
    reason: str  # why this offload choice (or why nothing fits, and what would), in one sentence
    estimated_bytes: dict[str, int] = field(default_factory=dict)  # per component, as loaded
    free_bytes: int | None = None  # free accelerator memory when planned
    transformer_source: str | None = None  # pre-quantized transformer folder or Hub id, if given
    working_bytes: int = 0  # working-memory allowance on the accelerator (memory_model.working_bytes)
    host_bytes_needed: int = 0  # peak host RAM, loading or generating (host_memory.host_bytes)
    host_bytes_available: int | None = None  # host RAM available when planned
    fits: bool = True  # False: neither the accelerator nor host RAM can hold this plan
    kernel: str | None = None  # SDPA attention kernel the device gets with this dtype
    would_fit: dict | None = None  # when it does not fit: load_pipeline kwargs of a plan that would
    fast: bool = False  # load_pipeline(fast=True): compiled transformer blocks (helpers.loading.fast_plan)
    size: tuple[int, int] = (1024, 1024)  # (height, width) in pixels the memory was planned for
    working: memory_model.Working | None = None  # working memory of each phase at `size`
    loaded_on_gpu: tuple[str, ...] = ()  # components bitsandbytes quantizes straight onto the GPU
    host_loading_bytes: int = 0  # host RAM while loading (host_memory.host_bytes["loading"])
    better: list = field(default_factory=list)  # load_pipeline kwargs of faster or better plans that fit
    transformer_config: dict | None = None  # the transformer's shape (working memory at other sizes)
    vae_tiling: bool = False  # load_pipeline(vae_tiling=True): the VAE decodes in tiles (vae_decode.py)
    staged_t5: str | None = None  # t5="staged": the T5 that encodes ("nf4", or "full" on Apple Silicon)
    groups: group_offload.GroupResidency | None = None  # on CUDA: what offload="group" keeps on the GPU per phase
    fp8: bool = False  # planned with fast=...: the transformer costed in float8 (fast_plan's rule) after a bf16 load
    loading_bytes: int = 0  # with fp8: the bf16 weights the GPU holds while loading, before float8

    @property
    def total_bytes(self) -> int:
        return sum(self.estimated_bytes.values())

    @property
    def gpu_bytes_needed(self) -> int | None:
        """Peak accelerator bytes of this plan: its largest phase, as PyTorch's allocator reserves it."""
        if self.device == "cpu":
            return None
        need = accelerator_bytes(self.offload, self.estimated_bytes, self.working or self.working_bytes,
                                 device=self.device, loaded_on_gpu=self.loaded_on_gpu, groups=self.groups)
        return max(need, _loading_reserved(self.loading_bytes, self.device))

    @property
    def gpu_phases(self) -> dict[str, int]:
        """Allocated accelerator bytes in each phase ("loading", "text", "denoise", "decode")."""
        working = memory_model.as_working(self.working or self.working_bytes)
        phases = memory_model.gpu_phases(self.offload, self.estimated_bytes, working, self.loaded_on_gpu, self.groups)
        phases["loading"] = max(phases["loading"], self.loading_bytes)
        return phases


def _loading_reserved(loading_bytes: int, device: str) -> int:
    """The loading phase of `loading_bytes` of weights as the accelerator holds it (reserved on CUDA)."""
    if not loading_bytes:
        return 0
    phases = {"loading": loading_bytes}
    return memory_model.reserved_phases(phases, memory_model.as_working(0))["loading"] if str(device).startswith(
        "cuda") else loading_bytes


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


accelerator_bytes = memory_model.accelerator_bytes


def plan_loading(
    model: str = "sd35-large-nf4",
    *,
    device: str = "auto",
    offload="auto",
    drop_t5: bool | None = None,
    quantize_t5: bool | None = None,
    dtype="auto",
    stand_in: bool | None = None,
    free_bytes: int | None = None,
    staged_t5: bool | None = None,
    transformer: str | None = None,
    host_bytes: int | None = None,
    size: int | tuple[int, int] | None = None,
    vae_tiling: bool = False,
    fast: bool | str = False,
) -> LoadingPlan:
    """Decide how `model` will be loaded, without loading it. `free_bytes` / `host_bytes` override
    the measured free accelerator memory / available host RAM (to ask "what would happen on a
    16 GB card?"). `transformer`: a folder written by `save_quantized` or a Hub id of a
    pre-quantized transformer, loaded instead of quantizing. `size`: the largest image to plan for,
    in pixels (square) or (height, width); the preset's default size when None. When nothing fits,
    `plan.fits` is False, `plan.reason` says why and `plan.would_fit` holds the keyword arguments of
    the best-ranked plan that would (`load_pipeline` raises with both before reading any weights).

    `drop_t5` / `quantize_t5` / `staged_t5` left as None let the planner choose T5 by `ranking.RANKING`
    (full T5, then 4-bit, then staged, then none, against the offload each needs); True or False is kept
    as asked, and so is an explicit `offload`. `staged_t5=True`: the pipeline loads without T5, and T5 is
    loaded for each new prompt's text encoding only, then released (`helpers.loading.staged_t5`). `plan.better` lists plans that also fit and run faster or rank higher but
    were not picked (lower in the ranking, or another preset or T5 than asked for); the reason names them.
    `vae_tiling=True`: the VAE decodes in `vae_decode.VAE_TILE_PIXELS` tiles, and the decode is costed per tile.
    `fast`: what `load_pipeline(fast=...)` will get. Where the FP8 fast plan runs (sm_89+, a bf16
    transformer, no offload), it is costed phase by phase: loading holds the bf16 weights, every later
    phase the float8 transformer (`fast_plan.planned_fp8_bytes`); when that fits, the plan is FP8
    without offload (`plan.fp8`), else it is planned as without `fast`."""
    check_plan_options(offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5, stand_in=stand_in,
                       free_bytes=free_bytes, host_bytes=host_bytes, staged_t5=staged_t5)
    from . import as_machine

    if as_machine.applies(model, use_stand_in(stand_in)):  # $SD35_AS_MACHINE: the real preset, as on that machine
        with as_machine.answering():
            return plan_loading(model, device=device, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5,
                                staged_t5=staged_t5, dtype=dtype, stand_in=False, free_bytes=free_bytes,
                                transformer=transformer, host_bytes=host_bytes, size=size, vae_tiling=vae_tiling, fast=fast)
    asked = [name for name, value in (("drop_t5", drop_t5), ("quantize_t5", quantize_t5), ("staged_t5", staged_t5)) if value]
    if len(asked) > 1:
        raise ValueError(f"{'=True and '.join(asked)}=True contradict each other: choose one.")
    fast_plan.check_fast_argument(fast)
    preset = resolve_preset(model)
    _normalise_offload(offload)
    if transformer is not None and transformer != PREQUANTIZED:  # PREQUANTIZED: "what if", planning only
        quantized_checkpoints.check_transformer_source(transformer)
    device = devices.pick_device(device)
    if not (dtype == "auto" or (isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.bfloat16, torch.float16))):
        raise ValueError(f"dtype must be 'auto', torch.float32, torch.bfloat16 or torch.float16, not {dtype!r}.")
    if not isinstance(vae_tiling, bool):
        raise ValueError(f"vae_tiling must be True or False, not {vae_tiling!r}.")
    options = dict(model=model, offload=offload, drop_t5=drop_t5, quantize_t5=quantize_t5, dtype=dtype)
    if staged_t5:  # only when asked, so suggested plans name it only then
        options["staged_t5"] = True
    if vae_tiling:  # only when asked, so suggested plans name it only then
        options["vae_tiling"] = True
    if size is not None:
        options["size"] = memory_model.image_size(size)
    plans = []
    for t5 in ranking.t5_choices(drop_t5, quantize_t5, device, offload, staged_t5):
        trial = dict(options, drop_t5=t5 == "dropped", quantize_t5=t5 == "nf4", staged_t5=t5 == "staged")
        plans.append(_plan(preset, device, trial, stand_in, free_bytes, host_bytes, transformer, fast))
        free_bytes, host_bytes = plans[0].free_bytes, plans[0].host_bytes_available  # measured once
    fitting = [p for p in plans if p.fits]
    plan = min(fitting, key=ranking.rank) if fitting else plans[0]
    if plan is not plans[0]:
        plan.reason = (f"{ranking.T5_WORDS[plan.t5]}: the best-ranked plan that fits (full T5 > T5 in 4-bit > "
                       f"staged T5 > no T5, against offload: helpers.loading.ranking). With {ranking.T5_WORDS[plans[0].t5]}: "
                       f"{plans[0].reason}. With {ranking.T5_WORDS[plan.t5]}: {plan.reason}")
    if plan.t5 == "staged":
        plan.reason += f" ({ranking.STAGED_COST})"
    if device == "cpu":
        return plan
    found = ranking.alternatives(
        preset, options, plan.dtype,
        plan_for=lambda name, trial, source: _plan(resolve_preset(name), device, trial, stand_in, plan.free_bytes,
                                                   plan.host_bytes_available, source),
        skip=(plan.preset, plan.t5), size=None if plan.fits else plan.size,
    )
    if not plan.fits:
        plan.would_fit = found[0][0] if found else None
        if plan.would_fit is not None:
            plan.reason += "; this would: " + describe_options(plan.would_fit)
        return plan
    better = ranking.better_than(plan, found)
    plan.better = [kwargs for kwargs, _, _ in better]
    if better:
        plan.reason += "; also fit, not picked (ranked lower, or unlike what was asked for): " + "; ".join(
            f"{describe_options(kwargs)} ({why})" for kwargs, _, why in better)
    return plan


def _plan(preset, device, options, stand_in, free_bytes, host_bytes, transformer, fast=False) -> LoadingPlan:
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
    t5 = ("dropped" if options["drop_t5"] else "nf4" if options["quantize_t5"]
          else "staged" if options.get("staged_t5") else "full")
    staged = ("full" if device == "mps" else "nf4") if t5 == "staged" else None  # the T5 that encodes
    if device == "mps" and t5 == "nf4":
        raise ValueError(
            "quantize_t5=True cannot run on Apple Silicon: without CUDA, transformers places a 4-bit T5 "
            "on the CPU (its bitsandbytes quantizer's update_device_map gives {'': 'cpu'}) and the "
            "pipeline would feed it MPS tensors. Use drop_t5=True, or the full T5 if memory allows."
        )
    estimated = memory_model.pipeline_bytes(counts, dtype, quantization, "dropped" if staged else t5)
    kernel = devices.sdpa_kernel(device, dtype)
    size = memory_model.image_size(options.get("size") or (PRESETS["tiny"].default_size if stand_in
                                                          else preset.default_size))
    tiling = bool(options.get("vae_tiling"))
    tile = vae_decode.VAE_TILE_PIXELS if tiling else None
    working = memory_model.phase_working(config, size, dtype, kernel, vae_tile=tile)
    if staged:  # T5 joins the resident weights for the text phase only
        working = dataclasses.replace(working, text_weights=memory_model.loaded_bytes(
            counts["text_encoder_3"], dtype, "nf4" if staged == "nf4" else None))
    if free_bytes is None:
        free_bytes = devices.free_accelerator_memory(device)
    if host_bytes is None:
        host_bytes = devices.host_memory_available()
    reads = host_memory.checkpoint_read_bytes(counts, quantization, "dropped" if staged else t5,
                                              prequantized=transformer is not None)
    if staged:
        reads[host_memory.STAGED_T5_READ] = host_memory.staged_t5_read(counts["text_encoder_3"])
    on_gpu = loaded_on_gpu(device, quantization, "dropped" if staged else t5)
    groups = None
    if str(device).startswith("cuda") and quantization in (None, "nf4"):  # what offload="group" keeps on the GPU
        groups = group_offload.residency(config, estimated, counts, dtype, quantization, on_gpu)
    capability = devices.compute_capability(device)
    fp8_weights = loading_bytes = None
    if fast_plan.plans_fp8(fast, device=device, capability=capability, quantization=quantization,
                           offload=options["offload"], dtype=dtype):
        fp8_weights = dict(estimated, transformer=fast_plan.planned_fp8_bytes(config, dtype, capability))
        loading = sum(estimated.values())  # bf16 as loaded, quantized to float8 after
        if _loading_reserved(loading, device) <= (free_bytes or 0) and _fit_problem(
                "none", device, fp8_weights, free_bytes, working, reads, host_bytes, on_gpu) is None:
            estimated, loading_bytes, options = fp8_weights, loading, dict(options, offload="none")
    choice, reason = choose_offload(
        options["offload"], device, estimated, free_bytes, working, quantized=quantized, reads=reads,
        host_available=host_bytes, loaded_on_gpu=on_gpu, groups=groups,
    )
    if loading_bytes:
        reason = (f"the FP8 fast plan: loading holds the bf16 weights ({format_bytes(loading_bytes)}), then the "
                  f"transformer's blocks in float8 leave {format_bytes(sum(estimated.values()))}; its largest phase "
                  f"needs {format_bytes(max(_loading_reserved(loading_bytes, device), accelerator_bytes('none', estimated, working, device=device)))}: "
                  f"it fits in {format_bytes(free_bytes)} free")
    elif fp8_weights:
        reason += (f" (the FP8 fast plan does not fit: loading holds the bf16 weights, "
                   f"{format_bytes(sum(fp8_weights.values()) - fp8_weights['transformer'] + estimated['transformer'])})")
    problem = _fit_problem(choice, device, estimated, free_bytes, working, reads, host_bytes, on_gpu, groups)
    if problem is not None and not reason.startswith("does not fit"):
        reason = "does not fit: " + problem
    host = host_memory.host_bytes(choice, device, estimated, reads, working.peak, on_gpu, working.text_weights)
    return LoadingPlan(
        preset=preset.name, model_id=mid, stand_in=stand_in, device=device, dtype=dtype,
        quantization=quantization, t5=t5, offload=choice, reason=reason, estimated_bytes=estimated,
        free_bytes=free_bytes, transformer_source=None if transformer is None else str(transformer),
        working_bytes=working.peak, host_bytes_needed=max(host.values()), host_bytes_available=host_bytes,
        fits=problem is None, kernel=kernel, size=size, working=working, loaded_on_gpu=on_gpu,
        host_loading_bytes=host["loading"], transformer_config=dict(config),
        vae_tiling=tiling, staged_t5=staged, groups=groups, fp8=bool(loading_bytes), loading_bytes=loading_bytes or 0,
    )


def loaded_on_gpu(device: str, quantization: str | None, t5: str) -> tuple[str, ...]:
    """Components bitsandbytes quantizes straight onto a CUDA GPU while loading (its quantizers set
    `device_map` to the current GPU), before any offload hooks move them: their sum is the load peak."""
    if not str(device).startswith("cuda"):
        return ()
    return (("transformer",) if quantization else ()) + (("text_encoder_3",) if t5 == "nf4" else ())


_CENSUS_CACHE: dict = {}


def _folder_census(folder) -> tuple[dict, dict]:
    """(census per component, transformer config) of a saved pipeline, built on meta once per folder."""
    index = Path(folder) / "model_index.json"
    key = (str(folder), index.stat().st_mtime_ns if index.exists() else None)
    if key not in _CENSUS_CACHE:
        config = json.loads((Path(folder) / "transformer" / "config.json").read_text())
        _CENSUS_CACHE[key] = (memory_model.folder_census(folder), config)
    return _CENSUS_CACHE[key]
