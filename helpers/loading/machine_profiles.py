"""The machines readers use, as the planner sees them: what each answers to the device queries.

Each profile is what the planner asks a machine (compute capability, free accelerator memory,
host RAM, Apple's Metal working set). `on_profile(profile)` answers those questions, and only
those, at their one seam in `helpers.loading.devices`. What the planner then does on each is in
`hardware_profiles` (the README's memory table); `as_machine` runs a whole notebook as on one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from unittest import mock

import torch

from .. import measuring
from . import devices

GiB = measuring.GiB
MiB = 1024**2

# ASSUMPTIONS a GPU check measures (named so it can compare them):
CUDA_CONTEXT_BYTES = int(0.5 * GiB)  # what the driver and PyTorch's CUDA context take before any tensor
COLAB_HOST_IN_USE_BYTES = int(2.5 * GiB)  # Colab's own services plus a kernel with torch/diffusers imported
DESKTOP_HOST_IN_USE_BYTES = 4 * GiB  # the OS, a browser and the kernel on a desktop or a Mac
BUSY_MAC_HOST_IN_USE_BYTES = 6 * GiB  # a 16 GB Mac with a browser open: 10 GiB left (issue 24's reader)
MPS_WORKING_SET_FRACTION = {16: 2 / 3, 64: 3 / 4}  # Metal's recommendedMaxWorkingSetSize / RAM, by GB of RAM


@dataclass(frozen=True)
class HardwareProfile:
    """One machine: its accelerator, the memory it reports and its host RAM, in bytes."""

    name: str
    device: str  # "cuda" or "mps"
    capability: tuple[int, int] | None  # CUDA compute capability; None on Apple Silicon
    gpu_bytes: int  # total accelerator memory (nvidia-smi), or the unified RAM of a Mac
    host_bytes: int  # host RAM (the same pool as gpu_bytes on a Mac)
    host_in_use_bytes: int  # host RAM already taken before loading (ASSUMPTION, see above)

    @property
    def free_gpu_bytes(self) -> int:
        """Free accelerator memory as `devices.free_accelerator_memory` would read it."""
        if self.device == "mps":  # what PyTorch's MPS allocator allows: its high watermark
            return devices.mps_memory_limit(self.mps_working_set_bytes)
        return self.gpu_bytes - CUDA_CONTEXT_BYTES

    @property
    def mps_working_set_bytes(self) -> int:
        gb = round(self.gpu_bytes / GiB)
        return int(self.gpu_bytes * MPS_WORKING_SET_FRACTION.get(gb, 2 / 3 if gb <= 32 else 3 / 4))

    @property
    def host_available_bytes(self) -> int:
        return self.host_bytes - self.host_in_use_bytes


PROFILES: tuple[HardwareProfile, ...] = (
    HardwareProfile("free Colab T4", "cuda", (7, 5), 15360 * MiB, int(12.7 * GiB), COLAB_HOST_IN_USE_BYTES),
    HardwareProfile("Colab L4", "cuda", (8, 9), 23034 * MiB, 53 * GiB, COLAB_HOST_IN_USE_BYTES),
    HardwareProfile("Colab A100 40 GB", "cuda", (8, 0), 40960 * MiB, int(83.5 * GiB), COLAB_HOST_IN_USE_BYTES),
    HardwareProfile("RTX 4060 8 GB", "cuda", (8, 9), 8188 * MiB, 32 * GiB, DESKTOP_HOST_IN_USE_BYTES),
    HardwareProfile("RTX 3060 12 GB", "cuda", (8, 6), 12288 * MiB, 32 * GiB, DESKTOP_HOST_IN_USE_BYTES),
    HardwareProfile("RTX 4090 24 GB", "cuda", (8, 9), 24564 * MiB, 64 * GiB, DESKTOP_HOST_IN_USE_BYTES),
    HardwareProfile("A100 80 GB", "cuda", (8, 0), 81920 * MiB, 256 * GiB, DESKTOP_HOST_IN_USE_BYTES),
    HardwareProfile("H100 80 GB", "cuda", (9, 0), 81559 * MiB, 256 * GiB, DESKTOP_HOST_IN_USE_BYTES),
    HardwareProfile("Apple M2 16 GB", "mps", None, 16 * GiB, 16 * GiB, DESKTOP_HOST_IN_USE_BYTES),
    HardwareProfile("Apple 16 GB, 10 GiB free", "mps", None, 16 * GiB, 16 * GiB, BUSY_MAC_HOST_IN_USE_BYTES),
    HardwareProfile("Apple M3 Max 64 GB", "mps", None, 64 * GiB, 64 * GiB, DESKTOP_HOST_IN_USE_BYTES),
)
# Host-RAM sizes other than free Colab's 12.7 GB (Colab L4 53 GB, A100 83.5 GB) are typical
# machines, not measurements: desktops 32/64 GB, servers 256 GB.

def get_profile(name: str) -> HardwareProfile:
    """The profile called `name` (e.g. "free Colab T4"), or a ValueError listing them."""
    for profile in PROFILES:
        if profile.name == name:
            return profile
    raise ValueError(f"Unknown hardware profile {name!r}. Use one of: {', '.join(p.name for p in PROFILES)}.")


@contextlib.contextmanager
def on_profile(profile: HardwareProfile):
    """Within this block the device queries of `helpers.loading.devices` answer as `profile` would."""
    if not isinstance(profile, HardwareProfile):
        raise TypeError(f"profile must be a HardwareProfile, e.g. get_profile('free Colab T4'), not {profile!r}.")
    cuda, mps = profile.device == "cuda", profile.device == "mps"
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch.cuda, "is_available", lambda: cuda))
        stack.enter_context(mock.patch.object(torch.backends.mps, "is_available", lambda: mps))
        stack.enter_context(mock.patch.object(devices, "compute_capability",
                                              lambda device="cuda": profile.capability if cuda else None))
        stack.enter_context(mock.patch.object(devices, "free_accelerator_memory",
                                              lambda device: profile.free_gpu_bytes if device != "cpu" else None))
        stack.enter_context(mock.patch.object(devices, "host_memory_available", lambda: profile.host_available_bytes))
        stack.enter_context(mock.patch.object(devices, "mps_recommended_memory", lambda: profile.mps_working_set_bytes))
        yield profile
