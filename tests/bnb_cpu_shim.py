"""TEST-ONLY: let diffusers quantize with bitsandbytes on a CPU-only machine.

diffusers' bitsandbytes quantizers refuse to start without a GPU ("No GPU found. A GPU is needed
for quantization."), although bitsandbytes 0.50 quantizes NF4 and int8 on CPU. The tests lift
that one guard, so the stand-in's transformer really becomes `bnb.nn.Linear4bit` layers on CI.
Nothing in helpers/ imports this; real users on a GPU never pass through it.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch
from diffusers.quantizers.bitsandbytes import bnb_quantizer

_QUANTIZERS = (bnb_quantizer.BnB4BitDiffusersQuantizer, bnb_quantizer.BnB8BitDiffusersQuantizer)
_originals = {cls: (cls.validate_environment, cls.update_device_map) for cls in _QUANTIZERS}


def _validate_as_if_gpu(original):
    def validate_environment(self, *args, **kwargs):
        # Only the GPU check is bypassed; every other check of diffusers still runs. A model placed
        # wholly on the CPU is what this shim is for, so that placement is not refused either.
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict) and set(device_map.values()) == {"cpu"}:
            kwargs["device_map"] = None
        with mock.patch.object(torch.cuda, "is_available", return_value=True):
            return original(self, *args, **kwargs)

    return validate_environment


def _device_map_on_cpu(original):
    def update_device_map(self, device_map):
        # diffusers would place the quantized model on "cuda:<current>"; there is none here.
        if device_map is None and not torch.cuda.is_available():
            return {"": "cpu"}
        return original(self, device_map)

    return update_device_map


def enable_bnb_cpu_shim() -> None:
    """Lift diffusers' GPU-only guard on bitsandbytes quantization for this process."""
    for cls, (validate, device_map) in _originals.items():
        cls.validate_environment = _validate_as_if_gpu(validate)
        cls.update_device_map = _device_map_on_cpu(device_map)


def disable_bnb_cpu_shim() -> None:
    """Restore diffusers' own guard."""
    for cls, (validate, device_map) in _originals.items():
        cls.validate_environment = validate
        cls.update_device_map = device_map


@contextlib.contextmanager
def bnb_cpu_shim():
    """Context manager form of `enable_bnb_cpu_shim`."""
    enable_bnb_cpu_shim()
    try:
        yield
    finally:
        disable_bnb_cpu_shim()
