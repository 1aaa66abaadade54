"""Device and dtype choice (this CI machine has no GPU)."""

import pytest
import torch

from helpers import devices


def test_auto_is_cpu_here_and_dtype_follows_quantization():
    assert devices.pick_device("auto") == "cpu"
    assert devices.pick_dtype("cpu") == torch.float32
    assert devices.pick_dtype("cpu", quantized=True) == torch.bfloat16
    assert devices.free_accelerator_memory("cpu") is None


def test_asking_for_a_missing_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        devices.pick_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        devices.pick_device("tpu")


def test_t4_gets_fp16(monkeypatch):
    # A Colab T4 reports no bf16 support: its compute dtype must be fp16.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.pick_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.pick_dtype("cuda") == torch.bfloat16
