"""Whether diffusers will quantize a plan with bitsandbytes here, asked before any weights are read."""

from __future__ import annotations

from dataclasses import replace

from ..errors import QuantizationNeedsGPUError
from .planner import LoadingPlan


def needs_gpu(plan: LoadingPlan) -> str:
    """The one message for a bitsandbytes plan on a machine where diffusers cannot quantize."""
    return (
        f"{plan.preset} quantizes with bitsandbytes, and diffusers only does that on a GPU "
        "(CUDA, or Apple MPS for 4-bit). Run this on a GPU runtime (Colab: Runtime > Change "
        "runtime type > T4 GPU), or choose a full-precision preset such as 'sd35-medium'."
    )


def quantizes_here(plan: LoadingPlan) -> bool:
    """Whether bitsandbytes quantizes on this machine (diffusers' own check)."""
    try:
        return check_quantization_runs_here(replace(plan, quantization="nf4")) is None
    except QuantizationNeedsGPUError:
        return False


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
            raise QuantizationNeedsGPUError(needs_gpu(plan)) from e
        raise
