"""helpers.loading.plan_benchmarks: each plan really loads and renders on the stand-in, or says why not."""

import pytest
import torch

from helpers.loading.plan_benchmarks import PLANS, markdown_table, measure_plan, peak_flops
from helpers.loading.planner import choose_offload, estimate_footprint
from helpers.loading.presets import PRESETS
from helpers.measuring import GiB


def test_nf4_plan_runs_with_the_shim_and_offload_is_not_applicable_on_cpu(bnb_cpu):
    nf4 = measure_plan("NF4", prompt="a cat", steps=2, size=64, stand_in=True)
    assert nf4["status"] == "ok" and nf4["memory_kind"] == "rss"
    assert nf4["load_s"] > 0 and nf4["s_per_image"] > 0 and nf4["image"].size == (64, 64)
    assert nf4["dtype"] == "bfloat16"
    offload = measure_plan("NF4 + model CPU offload", prompt="a cat", steps=2, size=64, stand_in=True)
    assert offload["status"] == "not applicable: no GPU" and offload["s_per_image"] is None


def test_nf4_plan_without_the_shim_says_it_needs_a_gpu(tiny_dir):
    row = measure_plan("NF4", prompt="a cat", steps=2, size=64, stand_in=True)
    assert row["status"] == "needs a GPU (bitsandbytes)"


def test_unknown_plan_is_refused():
    with pytest.raises(ValueError, match="Unknown plan"):
        measure_plan("fp8", prompt="a cat")


@pytest.mark.parametrize(
    "free_gib, expected", [(80, "none"), (24, "none"), (16, "model"), (10, "does not fit")]
)
def test_nf4_offload_choice_for_simulated_free_memory(free_gib, expected):
    """SD3.5 Large NF4 with full T5 (exact sizes): 4.4 GiB transformer + 10.4 GiB bf16 encoders;
    below what model offload needs, a quantized model is never streamed layer by layer."""
    sizes = estimate_footprint(PRESETS["sd35-large-nf4"].census, torch.bfloat16, "nf4")
    choice, reason = choose_offload("auto", "cuda", sizes, int(free_gib * GiB), quantized=True)
    assert (reason if expected == "does not fit" else choice).startswith(expected)


def test_peak_flops_and_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("Some Future GPU") is None
    assert peak_flops("NVIDIA L40") == 181e12 and peak_flops("NVIDIA L4") == 121e12  # L40 is not an L4
    assert peak_flops("NVIDIA L40S") == 362e12
    assert peak_flops("NVIDIA H100 NVL") == 835e12  # not the SXM's 989
    table = markdown_table([{"plan": "NF4", "peak_bytes": 2 * GiB, "s": None}], {"plan": "p", "peak_bytes": "m", "s": "s"})
    assert table.splitlines()[2] == "| NF4 | 2.00 GiB | — |"
    assert set(PLANS) >= {"bf16", "NF4", "NF4 + model CPU offload", "8-bit"}
