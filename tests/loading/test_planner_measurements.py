"""The planner held to every committed GPU measurement (benchmarks/results/*.json, written by
`make gpu-check`): the GPU peak as allocated and as reserved, the model-offload phase peak, and the
host RAM a load took. These tests fail, never skip, when the results are missing."""

import json
from pathlib import Path

import pytest
import torch

from helpers.loading import memory_model
from helpers.loading.hardware_profiles import HardwareProfile, plan_on
from helpers.loading.ranking import PREQUANTIZED
from helpers.measuring import GiB

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def measured():
    """[(the GPU as a profile, row)] for every row of every committed result that loaded and ran."""
    files = sorted(RESULTS.glob("*.json"))
    assert files, f"no committed GPU results in {RESULTS}: run `make gpu-check` on a GPU and commit them"
    rows = []
    for file in files:
        data = json.loads(file.read_text())
        meta = data["meta"]
        gpu = HardwareProfile(meta["device"], "cuda", tuple(int(x) for x in meta["capability"].split(".")),
                              meta["gpu_total_bytes"], meta["host_ram_bytes"], 0)
        rows += [(gpu, row) for row in data["rows"] if row.get("load_pipeline")]
    assert rows, f"{files} hold no measured rows"
    return rows


def _plan(gpu, row, **overrides):
    """The planner's plan for the `load_pipeline` call a row measured, on that GPU."""
    options = {k: (v == "True" if v in ("True", "False") else v) for k, v in row["load_pipeline"].items()}
    options.pop("fast", None)
    if "transformer" in options:
        options["transformer"] = PREQUANTIZED
    options["dtype"] = getattr(torch, options.get("dtype", row["dtype"]))
    t5 = row.get("t5", "full")  # rows without it were measured when the default was the full T5
    options.setdefault("drop_t5", t5 == "dropped")
    options.setdefault("quantize_t5", t5 == "nf4")
    return plan_on(gpu, **options, **overrides)


def _ran(measured, key):
    rows = [(gpu, row) for gpu, row in measured if row["status"] == "ok" and row.get(key)]
    assert rows, f"no measured row has {key}"
    return rows


def test_gpu_peak_allocated_matches_every_measured_row(measured):
    """The largest phase's allocated bytes within 5% of torch.cuda.max_memory_allocated, every row."""
    for gpu, row in _ran(measured, "peak_allocated_bytes"):
        plan = _plan(gpu, row)
        predicted, real = max(plan.gpu_phases.values()), row["peak_allocated_bytes"]
        assert abs(predicted / real - 1) < 0.05, (row["plan"], predicted / GiB, real / GiB)


def test_gpu_peak_reserved_is_covered_and_close_in_every_measured_row(measured):
    """What the plan needs (as the caching allocator reserves it) covers max_memory_reserved, within 10%."""
    for gpu, row in _ran(measured, "peak_reserved_bytes"):
        plan = _plan(gpu, row)
        predicted, real = plan.gpu_bytes_needed, row["peak_reserved_bytes"]
        assert real <= predicted <= real * 1.10, (row["plan"], predicted / GiB, real / GiB)


def test_model_offload_peak_is_text_encoding_as_measured(measured):
    """NF4 + full T5 + model offload peaked at 10.21 GiB allocated, 10.33 reserved: T5 and CLIP-G on
    the GPU together. The planner names that phase and its bytes (it once said 12.12 GiB)."""
    rows = [(gpu, row) for gpu, row in _ran(measured, "peak_allocated_bytes")
            if row["load_pipeline"].get("offload") == "model"]
    assert rows, "no model-offload row measured"
    for gpu, row in rows:
        plan = _plan(gpu, row)
        assert plan.offload == "model"
        phases = plan.gpu_phases
        assert max(phases, key=phases.get) == "text"
        assert abs(phases["text"] / row["peak_allocated_bytes"] - 1) < 0.02, (phases, row["peak_allocated_bytes"])
        assert row["peak_reserved_bytes"] <= plan.gpu_bytes_needed <= row["peak_reserved_bytes"] * 1.05


def test_host_ram_while_loading_matches_every_measured_row(measured):
    """What a load added to the process' resident memory, offloaded plans included (NF4 + model offload:
    10.08 GiB measured, once planned at 25.12): covered by the plan, and within 10% of it."""
    rows = _ran(measured, "host_peak_load_bytes")
    assert any(row["load_pipeline"].get("offload") == "model" for _, row in rows)
    for gpu, row in rows:
        plan = _plan(gpu, row)
        real = row["host_peak_load_bytes"] - row["host_before_load_bytes"]
        assert real <= plan.host_loading_bytes <= real * 1.10, (row["plan"], plan.host_loading_bytes / GiB, real / GiB)


def test_a_plan_that_ran_out_of_memory_is_refused_under_the_same_cap(measured):
    """A row that ran out of GPU memory under a cap (the free T4's 15 GB) must not fit that cap."""
    rows = [(gpu, row) for gpu, row in measured if row["status"].startswith("out of GPU memory") and row.get("gpu_cap_bytes")]
    assert rows, "no out-of-memory row measured"
    for gpu, row in rows:
        plan = _plan(gpu, row)
        assert plan.gpu_bytes_needed > row["gpu_cap_bytes"], (row["plan"], plan.gpu_bytes_needed / GiB)
    for gpu, row in _ran(measured, "gpu_cap_bytes"):  # and the capped rows that ran fit it
        assert _plan(gpu, row).gpu_bytes_needed <= row["gpu_cap_bytes"], row["plan"]


def test_reserve_headroom_constants_are_the_measured_ones(measured):
    """RESERVED_OVER_WORKING / RESERVED_BASE_BYTES (memory_model) cover the reserve over allocated of
    every row, from the rows themselves."""
    for _, row in _ran(measured, "peak_reserved_bytes"):
        headroom = row["peak_reserved_bytes"] - row["peak_allocated_bytes"]
        working = row["working_bytes"] if row["load_pipeline"].get("offload") != "model" else memory_model.TEXT_ENCODING_BYTES
        allowed = memory_model.RESERVED_OVER_WORKING * max(working, 0) + memory_model.RESERVED_BASE_BYTES
        assert headroom <= allowed * 1.05, (row["plan"], headroom / GiB, allowed / GiB)
