"""Which device and dtype to compute on, and how much memory it has free.

Every question the planner asks about the machine goes through one function here
(`compute_capability`, `free_accelerator_memory`, `host_memory_available`,
`mps_recommended_memory`), so a test or `helpers.loading.hardware_profiles` can put the real planner
on any machine by replacing just these.
"""

from __future__ import annotations

import gc
import os

import psutil
import torch

DEVICES = ("auto", "cuda", "mps", "cpu")
BF16_MIN_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores; below it bf16 is emulated
FLASH_MIN_CAPABILITY = (8, 0)  # SDPA's flash kernel; the memory-efficient one runs from sm_50 (fp16/fp32)


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


def compute_capability(device: str = "cuda") -> tuple[int, int] | None:
    """(major, minor) CUDA compute capability of `device` ("cuda" or "cuda:N"), None elsewhere."""
    if not str(device).startswith("cuda"):
        return None
    return tuple(torch.cuda.get_device_capability(torch.device(device)))


def pick_dtype(device: str, quantized: bool = False) -> torch.dtype:
    """The compute dtype for `device`.

    On CUDA, bf16 from compute capability 8.0 (Ampere) and fp16 below it (Colab's T4 is sm_75):
    `torch.cuda.is_bf16_supported()` says True there too, counting emulation, and on sm < 8.0
    SDPA's fast kernels need fp16 (bf16 falls back to the slow math kernel). bf16 on MPS; on CPU,
    fp32 for full-precision models (the fastest there) and bf16 for quantized ones.
    """
    if str(device).startswith("cuda"):
        return torch.bfloat16 if compute_capability(device) >= BF16_MIN_CAPABILITY else torch.float16
    if device == "mps":
        return torch.bfloat16
    return torch.bfloat16 if quantized else torch.float32


def sdpa_kernel(device: str, dtype: torch.dtype) -> str:
    """Which attention kernel PyTorch's SDPA will use: "flash", "memory-efficient", "math" (CUDA's
    fallback, which holds the whole attention matrix) or "mps" (Apple's own MPSGraph kernel)."""
    if str(device).startswith("cuda"):
        capability = compute_capability(device)
        if dtype in (torch.float16, torch.bfloat16) and capability >= FLASH_MIN_CAPABILITY:
            return "flash"
        if dtype == torch.bfloat16 and capability < BF16_MIN_CAPABILITY:
            return "math"
        return "memory-efficient"
    if device == "mps":
        return "mps"
    return "flash"  # PyTorch's CPU flash-attention kernel


def release_cached_memory(device: str) -> None:
    """Collect garbage and give cached accelerator blocks back to the driver, so that the next
    free-memory reading sees what a released pipeline really freed."""
    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def free_accelerator_memory(device: str) -> int | None:
    """Free memory on `device` in bytes, or None for the CPU (which has no separate memory).
    On CUDA it counts PyTorch's own cached, unused blocks as free (`mem_get_info` does not)."""
    if str(device).startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device == "mps":
        return int(mps_memory_limit(mps_recommended_memory()) - torch.mps.driver_allocated_memory())
    return None


# PyTorch's MPS allocator refuses allocations above its high watermark: PYTORCH_MPS_HIGH_WATERMARK_RATIO
# (default 1.7) x Metal's recommendedMaxWorkingSetSize; 0 lifts the limit (torch/mps docs, "MPS environment
# variables"). Unified memory also holds the host's data: the planner checks host RAM separately.
MPS_HIGH_WATERMARK_RATIO = 1.7


def mps_memory_limit(recommended: int) -> int:
    """The most the MPS allocator will hold, from Metal's recommended working set (bytes)."""
    ratio = float(os.environ.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO", MPS_HIGH_WATERMARK_RATIO))
    return int(recommended * ratio) if ratio > 0 else int(psutil.virtual_memory().total)


def mps_recommended_memory() -> int:
    """Bytes Metal lets this process use on Apple Silicon (a share of the unified memory)."""
    return int(torch.mps.recommended_max_memory())


def host_memory_available() -> int:
    """Host RAM available to this process now, in bytes (psutil's `available`)."""
    return int(psutil.virtual_memory().available)
