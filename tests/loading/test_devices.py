"""Device and dtype choice (this CI machine has no GPU: CUDA answers are faked at their seam)."""

import pytest
import torch

from helpers.loading import devices


def test_auto_is_cpu_here_and_dtype_follows_quantization():
    assert devices.pick_device("auto") == "cpu"
    assert devices.pick_dtype("cpu") == torch.float32
    assert devices.pick_dtype("cpu", quantized=True) == torch.bfloat16
    assert devices.free_accelerator_memory("cpu") is None
    assert devices.compute_capability("cpu") is None
    assert devices.host_memory_available() > 0


def test_asking_for_a_missing_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        devices.pick_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        devices.pick_device("tpu")


def test_t4_gets_fp16_although_torch_reports_emulated_bf16(monkeypatch):
    # torch.cuda.is_bf16_supported() counts emulation and says True on a T4 (sm_75).
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert devices.pick_dtype("cuda") == torch.float16
    assert devices.sdpa_kernel("cuda", torch.float16) == "memory-efficient"
    assert devices.sdpa_kernel("cuda", torch.bfloat16) == "math"  # what bf16 would have cost
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert devices.pick_dtype("cuda") == torch.bfloat16
    assert devices.sdpa_kernel("cuda", torch.bfloat16) == "flash"


def test_cuda_n_asks_about_that_device_not_the_current_one(monkeypatch):
    asked = []

    def capability(device=None):
        asked.append(torch.device(device).index)
        return {0: (8, 9), 1: (7, 5)}[torch.device(device).index or 0]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    assert devices.pick_dtype("cuda:1") == torch.float16
    assert devices.pick_dtype("cuda:0") == torch.bfloat16
    assert asked == [1, 0]


def test_mps_cache_is_emptied_on_release(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append(True))
    devices.release_cached_memory("mps")
    assert emptied == [True]
