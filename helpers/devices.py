"""Which device and dtype to compute on, and how much memory it has free."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cuda", "mps", "cpu")


def pick_device(device: str = "auto") -> str:
    """Resolve "auto" to the best accelerator present: cuda, then mps, then cpu."""
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or 'cuda:N'), not {device!r}.")
    if device != "auto":
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for, but this machine has no CUDA GPU.")
        if device == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device='mps' was asked for, but this machine has no Apple GPU (MPS).")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, quantized: bool = False) -> torch.dtype:
    """The compute dtype for `device`.

    bf16 on GPUs that have it; fp16 on older GPUs such as Colab's T4 (no bf16 units); on CPU,
    fp32 for full-precision models (the fastest there) and bf16 for quantized ones, whose
    bitsandbytes layers compute in their `bnb_4bit_compute_dtype`.
    """
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.bfloat16
    return torch.bfloat16 if quantized else torch.float32


def free_accelerator_memory(device: str) -> int | None:
    """Free memory on `device` in bytes, or None for the CPU (which has no separate memory)."""
    if str(device).startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if device == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return None
