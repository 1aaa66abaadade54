"""Checks made on a plan before work starts: whether it fits (before loading), `fast=True` with
sequential offload (before loading), and whether a loaded pipeline's plan has room for the image size
asked of `generate` (before generating)."""

from __future__ import annotations

import dataclasses

from ..errors import GPUOutOfMemoryError
from ..measuring import format_bytes
from . import memory_model
from .planner import DEFAULT_WORKING, LoadingPlan


def check_room_for_size(plan: LoadingPlan | None, height: int, width: int) -> None:
    """Raise GPUOutOfMemoryError, before generating, when a `height` x `width` image needs more
    accelerator memory than `plan` (a loaded pipeline's) had free when it was planned."""
    if plan is None or plan.device == "cpu" or plan.free_bytes is None or plan.transformer_config is None:
        return
    working = memory_model.phase_working(plan.transformer_config, (height, width), plan.dtype, plan.kernel)
    if isinstance(plan.working, memory_model.Working):  # the staged T5 of the text phase, if any
        working = dataclasses.replace(working, text_weights=plan.working.text_weights)
    need = memory_model.accelerator_bytes(plan.offload, plan.estimated_bytes, working, device=plan.device,
                             loaded_on_gpu=plan.loaded_on_gpu, groups=plan.groups)
    if need > plan.free_bytes:
        planned = "x".join(str(v) for v in reversed(plan.size))
        raise GPUOutOfMemoryError(
            f"A {width}x{height} image needs about {format_bytes(need)} of GPU memory with this pipeline "
            f"({_plan_label(plan)}), but {format_bytes(plan.free_bytes)} was free when it was loaded "
            f"(planned for {planned}). Use a smaller height/width, or reload with "
            f"load_pipeline(..., size=({height}, {width})) so the planner picks a plan with room for it."
        )


def check_fast(plan: LoadingPlan, fast: bool) -> None:
    """Refuse fast=True with sequential offload, before loading: accelerate's layer-by-layer hooks are
    compiler-disabled on every leaf module, so torch.compile would break into fragments, not speed up."""
    if fast and plan.offload in ("sequential", "group"):
        raise ValueError(
            f"fast=True cannot speed up offload='{plan.offload}': its hooks on every layer or block are "
            "compiler-disabled, so torch.compile breaks the transformer into fragments. Use fast=False "
            f"with {plan.offload} offload, or a plan with offload='model' or 'none' (e.g. the 'sd35-large-nf4' "
            "preset, quantize_t5=True or drop_t5=True)."
        )


def check_fits(plan: LoadingPlan) -> None:
    """Raise GPUOutOfMemoryError, before any loading, when the plan cannot fit the accelerator or
    host RAM; the message says why and, when one exists, which load_pipeline call would fit."""
    if not plan.fits:
        raise GPUOutOfMemoryError(
            f"{plan.preset} ({_plan_label(plan)}) {plan.reason}."
            + ("" if plan.would_fit else " No plan of this collection fits this machine.")
        )
    if plan.offload == "none" and plan.free_bytes is not None and plan.estimated_bytes:
        needed = memory_model.accelerator_bytes("none", plan.estimated_bytes, plan.working or plan.working_bytes or DEFAULT_WORKING,
                                   device=plan.device)
        if needed > plan.free_bytes:
            raise GPUOutOfMemoryError(_does_not_fit(plan, needed))


def _plan_label(plan: LoadingPlan) -> str:
    t5 = {"full": "full T5", "nf4": "NF4 T5", "staged": "staged T5", "dropped": "no T5"}[plan.t5]
    return f"{str(plan.dtype).removeprefix('torch.')}, {t5}, offload='{plan.offload}'"


def _does_not_fit(plan: LoadingPlan, needed: int) -> str:
    return (
        f"{plan.preset} needs about {format_bytes(needed)} of GPU memory with offload="
        f"'{plan.offload}', but only {format_bytes(plan.free_bytes)} is free. Try "
        "offload='auto' (or 'model'), the 'sd35-large-nf4' preset, drop_t5=True or quantize_t5=True, "
        "or free memory by restarting the kernel."
    )
