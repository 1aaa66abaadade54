"""The loading plans notebook 02 and benchmarks/loading_plans.py compare, and one measurement each.

A plan is one `load_pipeline` call (bf16, NF4, NF4 + offload, ...). `measure_plan` loads it,
renders one image and reports load seconds, peak memory (GPU tensors on CUDA, process RSS on
CPU) and seconds per image, or why the plan cannot run on this machine.
"""

from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import torch

from ..errors import GPUOutOfMemoryError, QuantizationNeedsGPUError
from ..generation.text_to_image import generate
from ..measuring import PeakMemory, format_bytes
from . import devices, load, planner

# name -> load_pipeline keyword arguments
PLANS: dict[str, dict] = {
    "bf16": dict(model="sd35-large", offload="none"),
    "NF4": dict(model="sd35-large-nf4", offload="none"),
    "NF4 + model CPU offload": dict(model="sd35-large-nf4", offload="model"),
    "NF4 without T5": dict(model="sd35-large-nf4", offload="none", drop_t5=True),
    "NF4 with NF4 T5": dict(model="sd35-large-nf4", offload="none", quantize_t5=True),
    "8-bit": dict(model="sd35-large-8bit", offload="none"),
    "bf16 fast (compiled)": dict(model="sd35-large", offload="none", fast="bf16"),  # fast=True: FP8 on sm_89+
}

# SD3.5 Large at 1024x1024, 28 steps with classifier-free guidance (batch of 2 per step).
LARGE_FLOP_PER_IMAGE = 1.744e15
# Dense bf16 (fp16 on T4/V100) tensor-core peaks from NVIDIA's datasheets, FLOP/s, keyed by a
# word of the name (torch.cuda.get_device_name): "L4" must not match an L40, nor "H100" an H100 NVL.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("RTX 4090", 165e12),
    ("V100", 125e12),
    ("T4", 65e12),
)


GPU_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def gpu_results(folder=GPU_RESULTS) -> list[dict]:
    """What `make gpu-check` committed: one {"meta", "rows", "path"} per GPU, from benchmarks/results."""
    return [dict(json.loads(file.read_text()), path=file) for file in sorted(Path(folder).glob("*.json"))]


def peak_flops(device_name: str) -> float | None:
    """Datasheet peak tensor FLOP/s for a GPU name (torch.cuda.get_device_name), None if unknown.
    The first key found as whole words in the name wins."""
    for key, flops in PEAK_FLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", device_name, re.IGNORECASE):
            return flops
    return None


def measure_plan(
    name: str,
    *,
    prompt: str,
    seed: int = 0,
    steps: int = 28,
    size: int | None = None,
    dtype="auto",
    stand_in: bool | None = None,
    warmup: bool = False,
) -> dict:
    """Load plan `name` (a key of PLANS), render one image, release it; return a row dict:
    plan, status ("ok" or why not), load_s, peak_bytes, memory_kind, s_per_image, fits, image."""
    if name not in PLANS:
        raise ValueError(f"Unknown plan {name!r}. Use one of: {', '.join(PLANS)}.")
    options = {"drop_t5": False, "quantize_t5": False, **PLANS[name]}  # each plan names its T5: never ranked away
    planning = {k: v for k, v in options.items() if k != "fast"}  # fast changes the code, not the memory
    row = {"plan": name, "status": "ok", "load_s": None, "peak_bytes": None, "memory_kind": None,
           "s_per_image": None, "first_image_s": None, "fits": None, "image": None}
    device = devices.pick_device("auto")
    if device == "cpu" and options["offload"] not in ("none", "auto"):
        row.update(status="not applicable: no GPU", fits="n/a")
        return row
    if dtype == "auto":  # one compute dtype for every plan, so only the loading differs
        dtype = devices.pick_dtype(device, quantized=True)
    try:
        plan = planner.plan_loading(**planning, dtype=dtype, stand_in=stand_in)
    except ValueError as e:  # e.g. 8-bit on Apple Silicon, offload on unified memory: says what works
        row.update(status=f"not applicable: {e}", fits="n/a")
        return row
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    try:
        with PeakMemory(device) as peak:  # this machine's memory (with SD35_AS_MACHINE, `plan` is another's)
            pipe = load.load_pipeline(**options, dtype=dtype, stand_in=stand_in)
            pipe.set_progress_bar_config(disable=True)  # a notebook loops over plans: no bar per image
            first = None
            if options.get("fast"):  # the first image pays the compile time: measured on its own
                first = generate(pipe, prompt, seed=seed, num_inference_steps=steps, height=size, width=size)
            elif warmup:  # the first CUDA generation pays for kernel selection and allocator growth
                generate(pipe, prompt, seed=seed, num_inference_steps=2, height=size, width=size)
            result = generate(pipe, prompt, seed=seed, num_inference_steps=steps, height=size, width=size)
    except QuantizationNeedsGPUError:
        row.update(status="needs a GPU (bitsandbytes)", fits="n/a")
        return row
    except GPUOutOfMemoryError:
        load.release_current_pipeline()
        row.update(status="out of GPU memory", fits="no")
        return row
    row.update(
        load_s=pipe.load_info.seconds,
        peak_bytes=peak.peak_bytes,
        memory_kind=peak.kind,
        s_per_image=result.seconds,
        first_image_s=first.seconds if first is not None else None,
        fits="yes" if plan.device != "cpu" else "n/a (CPU)",
        image=result.image,
        dtype=str(pipe.load_info.plan.dtype).removeprefix("torch."),
        device=pipe.load_info.plan.device,
    )
    load.release_current_pipeline()
    return row


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A Markdown table of `rows` with `columns` {key: header}; bytes keys (ending "_bytes") are
    shown in GiB/MiB, floats with 2 decimals, None as "—"."""
    def cell(key, value):
        if value is None:
            return "—"
        if key.endswith("_bytes"):
            return format_bytes(value)
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(k, r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


PLAN_COLUMNS = {
    "plan": "plan", "status": "status", "load_s": "load (s)", "peak_bytes": "peak memory",
    "memory_kind": "measured as", "s_per_image": "s / image", "first_image_s": "first image (s)",
    "fits": "fits this GPU",
}
