"""Memory probes on the stand-in."""

import numpy as np
import pytest
import torch

import helpers
from helpers import memory


def test_component_footprints_add_up_to_the_parameters(tiny_pipe, tiny_dir):
    sizes = helpers.component_footprints(tiny_pipe)
    assert set(sizes) == {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"}
    on_disk = memory.parameters_on_disk(tiny_dir)
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
    assert memory.module_bytes(nf4.transformer) == nf4.transformer.get_memory_footprint() + scales


def test_peak_memory_sees_an_allocation():
    with memory.PeakMemory("cpu", interval=0.001) as quiet:
        pass
    with memory.PeakMemory("cpu", interval=0.001) as busy:
        block = np.ones(200 * 1024**2 // 8)  # 200 MiB, touched
        block += 1
        del block
    assert busy.kind == "rss"
    assert busy.peak_bytes - quiet.peak_bytes > 150 * 1024**2


def test_stopwatch_and_format():
    with memory.Stopwatch() as clock:
        sum(range(10000))
    assert clock.seconds > 0
    assert memory.format_bytes(3 * memory.GiB) == "3.00 GiB"
    assert memory.format_bytes(5 * 1024**2) == "5.0 MiB"
    assert memory.format_bytes(None) == "n/a"


@pytest.mark.parametrize("precision,ratio", [("bf16", 0.5), ("nf4", 0.14), ("int8", 0.26)])
def test_bytes_per_parameter_relative_to_fp32(precision, ratio):
    assert memory.BYTES_PER_PARAMETER[precision] / memory.BYTES_PER_PARAMETER["fp32"] == pytest.approx(ratio, abs=0.01)
