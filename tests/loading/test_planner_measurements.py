"""The planner held to every committed GPU measurement (benchmarks/results/*.json, written by
`make gpu-check`): the GPU peak as allocated and as reserved, the load peak, the model-offload phase
peak, the host RAM a load took, and working memory on its own. These tests fail, never skip, when the
results are missing.

FITTED and CHECKED: memory_model's working-memory constants (ACTIVATION_WIDTHS, VAE_DECODE_TENSORS,
RESERVED_*) were fitted on FITTED_ROWS below (NVIDIA H200, SD3.5 Large, 1024x1024, batch 2). Working
memory is checked on every other row (`checked`), with a tolerance relative to the working memory,
not to the total peak (5% of a 28 GiB peak is more than half of the 2.4 GiB being modelled). Today
those rows share the fitted rows' shape; the GPU check's rows at 768x768, 1536x1536 and with Medium
(benchmarks/gpu_check.py PLANS) are checked here the day a GPU run commits them.
Every row is planned with the `fast` it was measured with, so an FP8 row is held to the FP8 plan."""

import json
from pathlib import Path

import pytest
import torch

from helpers.loading import memory_model
from helpers.loading.hardware_profiles import HardwareProfile, plan_on
from helpers.loading.ranking import PREQUANTIZED
from helpers.measuring import GiB

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
# (results file, row) pairs the working-memory constants were fitted on (memory_model.py says how).
FITTED_ROWS = {("nvidia-h200.json", "bf16"), ("nvidia-h200.json", "NF4")}
WORKING_TOLERANCE = 0.10  # of the working memory itself


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
        rows += [(gpu, dict(row, results_file=file.name)) for row in data["rows"] if row.get("load_pipeline")]
    assert rows, f"{files} hold no measured rows"
    return rows


def fitted(row) -> bool:
    return (row["results_file"], row["plan"].split(" [run ")[0]) in FITTED_ROWS


@pytest.fixture(scope="module")
def checked(measured):
    """The rows the working-memory constants were not fitted on."""
    rows = [(gpu, row) for gpu, row in measured if not fitted(row)]
    assert rows and len(rows) < len(measured), "every row is fitted, or none: nothing is held out"
    return rows


def _plan(gpu, row, **overrides):
    """The planner's plan for the `load_pipeline` call a row measured, on that GPU."""
    options = {k: (v == "True" if v in ("True", "False") else int(v) if str(v).isdigit() else v)
               for k, v in row["load_pipeline"].items()}
    fast = options.pop("fast", False)
    # What the row ran: "fp8" is float8; fast=True before FP8 existed (no "fast_plan" record) was bf16.
    if fast is True and not any("float8" in line for line in row.get("fast_plan") or []):
        fast = "bf16"
    if "transformer" in options:
        options["transformer"] = PREQUANTIZED
    options["dtype"] = getattr(torch, options.get("dtype", row["dtype"]))
    t5 = row.get("t5", "full")  # rows without it were measured when the default was the full T5
    options.setdefault("drop_t5", t5 == "dropped")
    options.setdefault("quantize_t5", t5 == "nf4")
    return plan_on(gpu, **dict(dict(options, fast=fast), **overrides))


def _ran(measured, key):
    rows = [(gpu, row) for gpu, row in measured if row["status"] == "ok" and row.get(key)]
    assert rows, f"no measured row has {key}"
    return rows


def check_peak_allocated(rows):
    for gpu, row in _ran(rows, "peak_allocated_bytes"):
        phases = _plan(gpu, row).gpu_phases
        if row.get("load_peak_allocated_bytes"):  # peaks reset after loading: generating's phases alone
            phases.pop("loading")
        predicted, real = max(phases.values()), row["peak_allocated_bytes"]
        assert abs(predicted / real - 1) < 0.05, (row["plan"], predicted / GiB, real / GiB)


def check_peak_reserved(rows):
    for gpu, row in _ran(rows, "peak_reserved_bytes"):
        plan = _plan(gpu, row)
        predicted, real = plan.gpu_bytes_needed, max(row["peak_reserved_bytes"], row.get("load_peak_reserved_bytes", 0))
        assert real <= predicted <= real * 1.10, (row["plan"], predicted / GiB, real / GiB)


def check_load_peak(rows):
    """The loading phase (bf16 weights for FP8, before float8) against the GPU peak while loading."""
    for gpu, row in rows:
        if row["status"] == "ok" and row.get("load_peak_allocated_bytes"):
            predicted, real = _plan(gpu, row).gpu_phases["loading"], row["load_peak_allocated_bytes"]
            assert abs(predicted / real - 1) < 0.05, (row["plan"], predicted / GiB, real / GiB)


def check_working_memory(rows):
    """Working memory alone: the image's peak above the weights (`working_bytes`) and the denoising
    part of it, within WORKING_TOLERANCE of themselves. Compiled rows hold less (inductor fuses
    activations away, not modelled): there the plan must cover them. Model-offload rows are left out
    (their peak is the text encoders' weights, checked above)."""
    for gpu, row in _ran(rows, "working_bytes"):
        if row["load_pipeline"].get("offload") == "model":
            continue
        working = _plan(gpu, row).working
        pairs = [(working.peak, row["working_bytes"])]
        if row.get("denoise_working_bytes"):
            pairs.append((working.denoise, row["denoise_working_bytes"]))
        for predicted, real in pairs:
            if row["load_pipeline"].get("fast"):
                assert real <= predicted * (1 + WORKING_TOLERANCE), (row["plan"], predicted / GiB, real / GiB)
            else:
                assert abs(predicted / real - 1) < WORKING_TOLERANCE, (row["plan"], predicted / GiB, real / GiB)


def test_gpu_peak_allocated_matches_every_measured_row(measured):
    """The largest phase's allocated bytes within 5% of torch.cuda.max_memory_allocated, every row."""
    check_peak_allocated(measured)


def test_gpu_peak_reserved_is_covered_and_close_in_every_measured_row(measured):
    """What the plan needs (as the caching allocator reserves it) covers max_memory_reserved, within 10%."""
    check_peak_reserved(measured)


def test_load_peak_matches_every_row_that_measured_it(measured):
    """Rows from the GPU check of issue 26 on record the GPU peak while loading; older rows did not."""
    check_load_peak(measured)


def test_working_memory_alone_on_the_rows_it_was_not_fitted_on(checked):
    check_working_memory(checked)


def test_the_gpu_check_measures_rows_the_planner_was_not_fitted_on():
    """The next GPU run measures other sizes and another family: those rows join `checked`."""
    import importlib.util
    import sys

    sys.path.insert(0, str(RESULTS.parents[1] / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", RESULTS.parent / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    shapes = {(o.get("size", 1024), o.get("family", "large")) for o in gpu_check.PLANS.values() if "model" in o}
    assert {(768, "large"), (1536, "large"), (1024, "medium")} <= shapes
    default, _ = gpu_check.choose_rows(None)
    assert default.index("bf16 at 1536x1536") < 6 and default.index("Medium bf16") < 6  # in a default run's budget


def synthetic_fp8_row(measured):
    """An "FP8 fast, NF4 T5" row in the results format, as the H200 would report it: the bf16 fast row's
    measured working memory and reserve on top of float8 weights counted by torchao's rule on the meta
    device (fast_plan.fp8_bytes, not the planner's constants), loaded in bf16 first."""
    from helpers.loading import architectures, fast_plan

    gpu, bf16_fast = next((g, r) for g, r in measured if r["plan"] == "bf16 fast (compiled)")
    nf4_t5 = next(r for _, r in measured if r["plan"].startswith("NF4 with NF4 T5"))
    with torch.device("meta"):
        transformer = fast_plan.fp8_bytes(architectures.build_component("transformer", "large"), torch.bfloat16, "row")
    weights = dict(nf4_t5["measured_bytes"], transformer=transformer)
    bf16_weights = dict(nf4_t5["measured_bytes"], transformer=bf16_fast["measured_bytes"]["transformer"])
    held = sum(weights.values())
    return gpu, {
        "plan": "FP8 fast, NF4 T5", "status": "ok", "results_file": "synthetic.json", "t5": "nf4", "dtype": "bfloat16",
        "load_pipeline": {"model": "sd35-large", "offload": "none", "fast": "fp8", "quantize_t5": "True"},
        "fast_plan": ["float8 weights and activations in 453 linear layers of the transformer (torchao)"],
        "measured_bytes": weights, "gpu_after_load_bytes": held,
        "load_peak_allocated_bytes": sum(bf16_weights.values()),
        "load_peak_reserved_bytes": sum(bf16_weights.values()) + memory_model.RESERVED_BASE_BYTES,
        "working_bytes": bf16_fast["working_bytes"], "denoise_working_bytes": bf16_fast["denoise_working_bytes"],
        "peak_allocated_bytes": held + bf16_fast["working_bytes"],
        "peak_reserved_bytes": held + bf16_fast["peak_reserved_bytes"] - bf16_fast["gpu_after_load_bytes"],
        "host_before_load_bytes": nf4_t5.get("host_before_load_bytes"),
    }


def test_a_synthetic_fp8_row_keeps_these_checks_green_and_fails_them_planned_without_fast(measured):
    """The day the FP8 row is committed: planned with fast="fp8", every check holds; planned as before
    (fast dropped: a bf16 transformer, 23 GiB against about 16) the peak checks fail."""
    gpu, row = synthetic_fp8_row(measured)
    plan = _plan(gpu, row)
    assert plan.fp8 and plan.offload == "none" and plan.t5 == "nf4"
    for check in (check_peak_allocated, check_peak_reserved, check_load_peak, check_working_memory):
        check([(gpu, row)])
    without_fast = dict(row, load_pipeline={k: v for k, v in row["load_pipeline"].items() if k != "fast"})
    with pytest.raises(AssertionError):
        check_peak_allocated([(gpu, without_fast)])

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
