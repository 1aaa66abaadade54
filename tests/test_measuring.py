"""Memory probes on the stand-in."""

import math
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

import helpers
from helpers import measuring


def test_component_footprints_add_up_to_the_parameters(tiny_pipe, tiny_dir):
    sizes = helpers.component_footprints(tiny_pipe)
    assert set(sizes) == {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"}
    from safetensors import safe_open

    on_disk = {}  # parameters per component as saved, from the safetensors headers (no weights read)
    for file in tiny_dir.glob("*/*.safetensors"):
        with safe_open(file, "pt") as f:
            on_disk[file.parent.name] = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert set(on_disk) == set(sizes)
    for name, count in on_disk.items():
        assert sizes[name] >= 4 * count  # fp32: 4 bytes per parameter, plus buffers


def test_nf4_transformer_is_smaller_than_bf16(bnb_cpu):
    bf16 = helpers.load_pipeline("sd35-large", stand_in=True, dtype=torch.bfloat16, keep_previous=True)
    nf4 = helpers.load_pipeline("sd35-large-nf4", stand_in=True, keep_previous=True)
    full, small = helpers.component_footprints(bf16), helpers.component_footprints(nf4)
    assert small["transformer"] < full["transformer"]
    assert small["text_encoder_3"] == full["text_encoder_3"]


def test_nf4_footprint_counts_the_block_scales(bnb_cpu):
    """get_memory_footprint leaves out bitsandbytes' absmax (one fp32 per 64 weights) and code table."""
    import bitsandbytes as bnb

    nf4 = helpers.load_pipeline("sd35-large-nf4", stand_in=True)
    layers = [m for m in nf4.transformer.modules() if isinstance(m, bnb.nn.Linear4bit)]
    scales = sum(m.weight.quant_state.absmax.numel() * 4 + m.weight.quant_state.code.numel() * 4 for m in layers)
    assert scales > 0
    assert measuring.module_bytes(nf4.transformer) == nf4.transformer.get_memory_footprint() + scales


def test_peak_memory_sees_an_allocation():
    with measuring.PeakMemory("cpu", interval=0.001) as quiet:
        pass
    with measuring.PeakMemory("cpu", interval=0.001) as busy:
        block = np.ones(200 * 1024**2 // 8)  # 200 MiB, touched
        block += 1
        del block
    assert busy.kind == "rss"
    assert busy.peak_bytes - quiet.peak_bytes > 150 * 1024**2
    assert busy.peak_bytes - busy.start_bytes > 150 * 1024**2  # what the block itself added
    assert quiet.start_bytes <= quiet.peak_bytes


def test_stopwatch_and_format():
    with measuring.Stopwatch() as clock:
        sum(range(10000))
    assert clock.seconds > 0
    assert measuring.format_bytes(3 * measuring.GiB) == "3.00 GiB"
    assert measuring.format_bytes(5 * 1024**2) == "5.0 MiB"
    assert measuring.format_bytes(None) == "n/a"


class FakeCudaMemory:
    """Stands in for torch.cuda's memory counters only (no GPU here): bytes allocated and the
    peak since the last reset, per device, and which device each query named."""

    def __init__(self):
        self.allocated, self.peak, self.devices_asked = {}, {}, []

    def alloc(self, device, n):
        self.allocated[device] = self.allocated.get(device, 0) + n
        self.peak[device] = max(self.peak.get(device, 0), self.allocated[device])

    def free(self, device, n):
        self.allocated[device] -= n

    def synchronize(self, device=None):
        self.devices_asked.append(device)

    def max_memory_allocated(self, device=None):
        self.devices_asked.append(device)
        return self.peak.get(self.gpu(device), 0)

    def reset_peak_memory_stats(self, device=None):
        self.devices_asked.append(device)
        self.peak[self.gpu(device)] = self.allocated.get(self.gpu(device), 0)

    @staticmethod
    def gpu(device):
        return "cuda:0" if device in (None, "cuda") else device  # GPU 0 is the current one


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCudaMemory()
    for name in ("synchronize", "max_memory_allocated", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the fake is this machine's GPU
    return fake


def test_nested_cuda_peaks_each_report_their_own_peak_on_the_given_device(fake_cuda):
    with measuring.PeakMemory("cuda:1") as outer:
        fake_cuda.alloc("cuda:1", 500)  # e.g. loading: a big peak, then freed
        fake_cuda.free("cuda:1", 500)
        with measuring.PeakMemory("cuda:1") as inner:  # e.g. generate's own measurement
            fake_cuda.alloc("cuda:1", 100)
            fake_cuda.free("cuda:1", 100)
        fake_cuda.alloc("cuda:0", 900)  # another GPU's work is not this block's
    assert inner.peak_bytes == 100
    assert outer.peak_bytes == 500
    assert set(fake_cuda.devices_asked) == {"cuda:1"}, "every query must name the block's device"


def test_a_cuda_block_knows_what_was_held_when_it_started(fake_cuda):
    fake_cuda.alloc("cuda:1", 300)  # e.g. the weights, loaded before the block
    with measuring.PeakMemory("cuda:1") as block:
        fake_cuda.alloc("cuda:1", 100)
        fake_cuda.free("cuda:1", 100)
    assert (block.start_bytes, block.peak_bytes) == (300, 400)


def test_an_outer_peak_reached_after_the_inner_block_counts_too(fake_cuda):
    with measuring.PeakMemory("cuda:0") as outer:
        with measuring.PeakMemory("cuda:0") as inner:
            fake_cuda.alloc("cuda:0", 100)
        fake_cuda.alloc("cuda:0", 200)
    assert (inner.peak_bytes, outer.peak_bytes) == (100, 300)


def test_stopwatch_synchronises_the_device_it_was_given(fake_cuda):
    with measuring.Stopwatch("cuda:1"):
        pass
    assert fake_cuda.devices_asked == ["cuda:1", "cuda:1"]


def test_nested_rss_peaks_compose(tiny_pipe):
    with measuring.PeakMemory("cpu") as outer:
        block = np.ones(300 * 1024**2 // 8)  # 300 MiB, touched, then given back
        block += 1
        del block
        with measuring.PeakMemory("cpu") as inner:
            result = helpers.generate(tiny_pipe, "a cat", num_inference_steps=2)
    assert outer.peak_bytes - inner.peak_bytes > 200 * 1024**2
    assert outer.peak_bytes >= result.peak_memory_bytes


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's /proc counters")
def test_on_linux_the_kernel_keeps_the_peak_no_sampling_thread():
    import threading

    if not Path("/proc/self/clear_refs").exists():  # fail loudly, not a silent skip on CI
        pytest.fail("this Linux kernel has no /proc/self/clear_refs (gVisor, some containers): PeakMemory "
                    "falls back to a sampling thread here, and the kernel's exact peak is not tested")

    before = threading.active_count()
    with measuring.PeakMemory("cpu") as busy:
        threads_inside = threading.active_count()
        block = np.ones(200 * 1024**2 // 8)
        block += 1
        del block
    assert threads_inside == before
    assert busy.peak_bytes - psutil.Process().memory_info().rss > 150 * 1024**2


def test_cuda_and_cuda_0_are_one_counter_when_gpu_0_is_current(fake_cuda, monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with measuring.PeakMemory("cuda:0") as outer:
        fake_cuda.alloc("cuda:0", 700)
        fake_cuda.free("cuda:0", 700)
        with measuring.PeakMemory("cuda"):  # generate's device string when the plan says "cuda"
            pass
    assert outer.peak_bytes == 700


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
@pytest.mark.parametrize("meter", [measuring.PeakMemory, measuring.Stopwatch])
def test_mps_without_an_apple_gpu_is_refused_not_measured_as_host_memory(meter):
    with pytest.raises(ValueError, match=r"device='mps'.*no Apple \(MPS\) GPU"):
        meter("mps")


@pytest.mark.parametrize("interval", [0, -1, float("nan"), "x", True])
def test_peak_memory_interval_must_be_a_positive_number_of_seconds(interval):
    with pytest.raises(ValueError, match=r"interval must be a positive number of seconds"):
        measuring.PeakMemory("cpu", interval)
