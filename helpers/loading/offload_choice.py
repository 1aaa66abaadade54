"""Which offload a plan takes ("none", "model", "group" or "sequential"), why, and why not: each
choice's largest phase against the free accelerator memory, then its host RAM (`plan_loading` asks)."""

from __future__ import annotations

from ..measuring import format_bytes
from . import group_offload, host_memory, memory_model
from .arguments import check_byte_count

accelerator_bytes = memory_model.accelerator_bytes
DEFAULT_WORKING = memory_model.phase_working("large", 1024)  # SD3.5 Large at 1024x1024, bf16, flash attention
OFFLOAD_CHOICES = ("auto", "none", "model", "group", "sequential", True, False)


def _normalise_offload(offload) -> str:
    if offload not in OFFLOAD_CHOICES:
        raise ValueError(
            f"offload must be 'auto', 'none', 'model', 'group', 'sequential', True or False, not {offload!r}."
        )
    return {True: "model", False: "none"}.get(offload, offload)


def choose_offload(
    offload, device: str, estimated: dict[str, int], free_bytes: int | None,
    working=DEFAULT_WORKING, *, quantized: bool = False,
    reads: dict[str, int] | None = None, host_available: int | None = None,
    loaded_on_gpu: tuple[str, ...] = (), groups: group_offload.GroupResidency | None = None,
) -> tuple[str, str]:
    """Pick "none", "model", "group" or "sequential" offload and say why.

    "auto" takes the fastest plan that fits both the accelerator (`free_bytes`, against the largest
    phase of an image: see `accelerator_bytes`) and host RAM (`host_available`, when given; see
    host_memory.host_bytes): everything on the GPU; else model offload (one model at a time); else group
    offload (one transformer block at a time, streamed: needs `groups`); else sequential offload
    (layer by layer), never for a bitsandbytes-quantized model (accelerate's hooks
    break its 4-bit state). On Apple's unified memory offloading saves nothing, so "auto" is "none"
    there. When nothing fits, the reason starts with "does not fit" and names each way it failed."""
    check_byte_count("free_bytes", free_bytes)
    check_byte_count("host_available", host_available)
    offload = _normalise_offload(offload)
    if device == "cpu":
        if offload in ("model", "group", "sequential"):
            raise ValueError(
                f"offload={offload!r} moves weights between CPU and GPU, but this pipeline runs on "
                "the CPU. Use offload='auto' or 'none' on a machine without a GPU."
            )
        return "none", "runs on the CPU: there is no GPU memory to save"
    if device == "mps" and offload in ("model", "group", "sequential"):
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
    if offload == "group" and groups is None:
        raise ValueError("offload='group' streams 4-bit weights only in NF4 (bitsandbytes' 8-bit layers are not "
                         "planned for it) and needs the transformer's blocks: use offload='model' here.")
    if offload != "auto":
        return offload, f"offload={offload!r} was asked for"
    if free_bytes is None or not estimated:
        return "none", "free memory or model size unknown: loading everything on the GPU"
    candidates = ["none"] if device == "mps" else ["none", "model", "group"] if quantized else \
        ["none", "model", "group", "sequential"]
    if groups is None and "group" in candidates:
        candidates.remove("group")
    args = (device, estimated, free_bytes, working, reads, host_available, loaded_on_gpu, groups)
    for choice in candidates:
        if _fit_problem(choice, *args) is None:
            return choice, _fit_reason(choice, *args)
    return candidates[0], "does not fit: " + "; ".join(_fit_problem(c, *args) for c in candidates)


def _fit_problem(offload, device, estimated, free_bytes, working, reads, host_available,
                 loaded_on_gpu=(), groups=None) -> str | None:
    """Why `offload` does not fit (accelerator first, then host RAM), or None when it fits."""
    need = accelerator_bytes(offload, estimated, working, device=device, loaded_on_gpu=loaded_on_gpu, groups=groups)
    if free_bytes is not None and need > free_bytes:
        phase = _peak_phase(offload, estimated, working, device, loaded_on_gpu, groups)
        return (f"with offload='{offload}', {phase} needs {format_bytes(need)} "
                f"of the {format_bytes(free_bytes)} free on the {device}")
    if host_available is not None:
        working = memory_model.as_working(working)
        host = host_memory.host_bytes(offload, device, estimated, reads or {}, working.peak, loaded_on_gpu,
                                      working.text_weights)
        peak = max(host.values())
        if peak > host_available:
            when = "while loading" if host["loading"] >= host["generating"] else "while generating"
            return (f"with offload='{offload}', host RAM must hold {format_bytes(peak)} {when}, "
                    f"but {format_bytes(host_available)} is available")
    return None


_PHASE_NAMES = {"loading": "loading", "text": "text encoding", "denoise": "denoising", "decode": "the VAE decode"}


def _peak_phase(offload, estimated, working, device, loaded_on_gpu, groups=None) -> str:
    """Which phase sets the accelerator peak, in words (e.g. "text encoding (two text encoders ...)")."""
    phase = memory_model.peak_phase(offload, estimated, working, device=device, loaded_on_gpu=loaded_on_gpu,
                                    groups=groups)
    what = {"none": "every weight", "model": {"loading": "the parts bitsandbytes quantizes on the GPU",
                                               "text": "two text encoders", "denoise": "the transformer",
                                               "decode": "the VAE"}[phase],
            "group": {"loading": "the largest part bitsandbytes quantizes on the GPU",
                      "text": "two text encoders", "denoise": "two transformer blocks, streamed",
                      "decode": "the VAE"}[phase]}.get(offload, "one layer")
    if phase == "text" and memory_model.as_working(working).text_weights:
        what += " and the staged T5"
    return f"{_PHASE_NAMES[phase]} ({what} plus working memory)"


def _fit_reason(offload, device, estimated, free_bytes, working, reads, host_available, loaded_on_gpu,
                groups=None) -> str:
    need = accelerator_bytes(offload, estimated, working, device=device, loaded_on_gpu=loaded_on_gpu, groups=groups)
    phase = _peak_phase(offload, estimated, working, device, loaded_on_gpu, groups)
    if offload == "none":
        return (f"the weights ({format_bytes(sum(estimated.values()))}) and their largest phase, {phase}, "
                f"need {format_bytes(need)}: it fits in {format_bytes(free_bytes)} free")
    if offload == "model":
        return (f"everything at once does not fit in {format_bytes(free_bytes)} free, but one model at a "
                f"time does: its largest phase, {phase}, needs {format_bytes(need)}")
    if offload == "group":
        return (f"even one model at a time does not fit in {format_bytes(free_bytes)} free, but one transformer "
                f"block at a time does (group offload, streamed: slower than model offload, much faster than "
                f"layer by layer): its largest phase, {phase}, needs {format_bytes(need)}")
    return (f"even one model at a time does not fit in {format_bytes(free_bytes)} free: "
            f"streaming layers one by one (slow)")
