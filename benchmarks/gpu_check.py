"""The GPU check: every loading plan measured on full-size SD3.5 with random weights, in one command.

    make gpu-check                       # or: python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --only "FP8 fast, NF4 T5" "bf16"   # rerun chosen rows
    python benchmarks/gpu_check.py --smoke   # the same code path on the CPU stand-in (the tests run it)
    bash benchmarks/gpu_check_device.sh run  # on a lent GPU machine with no network: one call (see that script)

Speed and memory do not depend on the weights' values, so a CUDA GPU with no network and no model
access measures every plan on SD3.5 built at full size with random weights (saved once to --scratch,
atomically). For each plan: load seconds and the GPU peak while loading, GPU memory held after
loading, peak allocated and reserved while generating, working memory against the planner's
allowance, peak host RSS while loading, seconds per image and per step, the fraction of the GPU's
peak FLOP/s, and the attention kernel SDPA chose (cuDNN's version and SDPA's priority order, read
after one image). It also compares the planner's predicted bytes per component with the bytes really
loaded, checks that a pre-quantized reload gives a byte-identical image and that a second load sees
the memory the first one freed. Writes <gpu>.md and <gpu>.json to --output (default
benchmarks/results) after every row, checks included, so a run cut short keeps what it measured.
Rows are ranked (PLANS' order); a row starts only if its estimated time (BUDGET below) ends within
--budget-s (default 420 s: one device call is 600 s), else it is skipped and says so, so a run always
ends with its results. Rows not run keep the figures of the last results file, labelled with their date.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from backend_rows import BACKEND_NAMES  # noqa: E402  (light: imports nothing heavy)

FREE_COLAB_T4_GPU_BYTES = 15 * 1000**3  # "a 15 GB card" (a T4: 15360 MiB, less the CUDA context)
CAP_BYTES = {"t4": FREE_COLAB_T4_GPU_BYTES, "8gb": 8188 * 1024**2 - 512 * 1024**2}  # 8 GB: the RTX 4060 profile's free

# name -> load_pipeline keyword arguments (the preset is read from the random-weights folder), plus
# knobs of this script's own (KNOBS): "staged_t5" (the prompt is first encoded by the text encoders
# alone, T5 in NF4, then released: helpers.loading.staged_t5), "attention" ("cudnn": SDPA with cuDNN's
# kernel first, around generation), "cap" (a smaller GPU, emulated with
# torch.cuda.set_per_process_memory_fraction), "compile_mode" (the fast plan compiled with that
# torch.compile mode), "fuse_qkv" (helpers.loading.fused_qkv: one QKV matmul per attention, qk-norm
# kept), "size"/"steps" (this row's image size and steps instead of the run's) and "family" (the
# random-weights folder of that family: "medium" is built on first use). "est_s": the row's estimated
# seconds on an H100/H200 (fresh process, load, warm-up, one measured image; from the H200 results of
# 2026-11-26, see BUDGET below): a row starts only if it should end within --budget-s.
# "optional": run only when named with --only.
# Rows of another kind: "error" ("fp8": one transformer forward in float8 against bf16, at full size)
# and "backend" (a quantization backend, measured by benchmarks/backend_rows.py's measure_backend_row).
# Order is the ranking: the rows that carry a goal (FP8 <= 2.5 s/image, Turbo < 1 s/image) first, then
# CUDA graphs, then the rows the planner was not fitted on (1536x1536, Medium, 768x768:
# tests/loading/test_planner_measurements.py checks them), then the other speed levers, then
# never-measured rows, then the references. Rows not run this time keep their previous figures (labelled with their date).
# "{saved}" is the NF4 row's transformer, saved with save_quantized. "t4": "planner" takes the
# load_pipeline arguments the planner chooses for the free Colab T4
# (helpers.loading.hardware_profiles.colab_t4_plan), with the NF4 row's saved transformer if "prequantized".
T4_NF4_T5 = dict(model="sd35-large-nf4", offload="none", transformer="{saved}", quantize_t5=True, dtype="float16",
                 cap="t4")
FP8_NF4_T5 = dict(model="sd35-large", offload="none", fast="fp8", quantize_t5=True)
PLANS: dict[str, dict] = {
    # the goals
    "FP8 fast, NF4 T5": dict(FP8_NF4_T5, est_s=70),
    "Large Turbo, 4 steps, FP8 fast, NF4 T5": dict(FP8_NF4_T5, model="sd35-large-turbo", steps=4, est_s=50),
    "FP8: one transformer forward vs bf16": dict(error="fp8", est_s=30),
    # the speed lever most likely to pay at 28 steps of 85 ms: no launch overhead between kernels
    "FP8 fast + CUDA graphs (reduce-overhead)": dict(FP8_NF4_T5, compile_mode="reduce-overhead", est_s=80),
    # where the planner was not fitted (its constants come from the 1024x1024 Large rows)
    "bf16 at 1536x1536": dict(model="sd35-large", offload="none", size=1536, est_s=55),
    "Medium bf16": dict(model="sd35-medium", offload="none", family="medium", est_s=35),
    "bf16 at 768x768": dict(model="sd35-large", offload="none", size=768, est_s=32),
    # more speed levers, each against "FP8 fast, NF4 T5"
    "FP8 fast + fused QKV (qk-norm kept)": dict(FP8_NF4_T5, fuse_qkv=True, est_s=70),
    # (no FP8 attention row: no well-kept PyPI wheel has an FP8 attention kernel for sm_90; README says which were checked)
    "FP8 fast, max-autotune-no-cudagraphs": dict(FP8_NF4_T5, compile_mode="max-autotune-no-cudagraphs",
                                                  optional=True, est_s=300),
    "Medium bf16 fast (compiled)": dict(model="sd35-medium", offload="none", fast="bf16", family="medium", est_s=50),
    # never measured
    "free Colab T4: staged T5 (NF4), then the planner's plan": dict(t4="planner", cap="t4", staged_t5=True, est_s=55),
    "free Colab T4: NF4 T5 + VAE tiling": dict(T4_NF4_T5, vae_tiling=True, est_s=40),
    "NF4 fast (compiled)": dict(model="sd35-large-nf4", offload="none", fast=True, est_s=65),
    # references, measured on the H200 on 2026-11-26
    "bf16 fast (compiled)": dict(model="sd35-large", offload="none", fast="bf16", est_s=65),
    "NF4": dict(model="sd35-large-nf4", offload="none", est_s=42),
    "bf16": dict(model="sd35-large", offload="none", est_s=37),
    "free Colab T4: the planner's plan": dict(t4="planner", cap="t4", est_s=43),
    "free Colab T4: planner's plan, pre-quantized": dict(t4="planner", prequantized=True, cap="t4", est_s=38),
    "NF4 + model CPU offload": dict(model="sd35-large-nf4", offload="model", est_s=54),
    "NF4, pre-quantized reload": dict(model="sd35-large-nf4", offload="none", transformer="{saved}", est_s=37),
    "NF4 with NF4 T5": dict(model="sd35-large-nf4", offload="none", quantize_t5=True, est_s=37),
    "NF4 without T5": dict(model="sd35-large-nf4", offload="none", drop_t5=True, est_s=37),
    "free Colab T4: NF4 T5, no tiling": dict(T4_NF4_T5, vae_tiling=False, est_s=32),
    # group offloading (helpers.loading.group_offload, issue 24): never measured yet; run with --only
    "free Colab T4: NF4 + NF4 T5, group offload": dict(model="sd35-large-nf4", offload="group", quantize_t5=True,
                                                       dtype="float16", cap="t4", est_s=60),
    "8 GB card: the planner's plan (NF4 + NF4 T5, group offload)": dict(model="sd35-large-nf4", offload="group",
                                                                       quantize_t5=True, cap="8gb", est_s=60),
    "8 GB card: bf16 + NF4 T5, group offload": dict(model="sd35-large", offload="group", quantize_t5=True,
                                                   cap="8gb", est_s=70),
    # optional: compile time of minutes; run with --only when a GPU's time allows
    "bf16 fast, max-autotune": dict(model="sd35-large", offload="none", fast="bf16", compile_mode="max-autotune",
                                    optional=True, est_s=300),
}
# Notebook 07's backend rows (benchmarks/backend_rows.py): one transformer under each quantization
# backend, selectable with --only "backend: <name>", after the rows above. Each loads the transformer
# alone (about 20 s at full size) and computes bf16's reference forward once (kept in --scratch); the
# GGUF rows write their file first (minutes at full size), so they run only when named.
PLANS.update({f"backend: {row_name}": dict(backend=key, est_s=45, optional=key.startswith("gguf-"))
              for key, row_name in BACKEND_NAMES.items()})
KNOBS = ("staged_t5", "attention", "cap", "compile_mode", "fuse_qkv", "size", "steps", "family", "est_s", "optional")
DEFAULT_EST_S = 45.0  # a row without "est_s"
BUILD_EST_S = {"large": 60.0, "medium": 25.0}  # building the random full-size weights once (H200: large 56.6 s)
DEFAULT_BUDGET_S = 420.0  # one device call is at most 600 s: the last row may run 120 s past the budget,
# and installing the wheels and the imports take 20-30 s more
# BUDGET (H200, 2026-11-26, torch 2.11): a row in a fresh process cost its load (about 20 s from the
# random-weights folder), one image of warm-up and one measured image (5.4 s bf16, 3.9 s fast, 17.4 s
# offloaded), plus about 9 s of process start, imports, planning and release (362 s in all for 6 rows
# and the 56.6 s build). Compiled rows add about 16 s of compiling to their first image, each with an
# empty compile cache. The warm-up is 2 steps for the rows that do not compile. By these estimates a
# default run (420 s) builds Large (60 s), runs the two goal rows, the FP8 error row, CUDA graphs,
# 1536x1536 and Medium (its build included: 405 s), and skips the rest, saying so
# (tests/benchmarks/test_gpu_check.py counts them); the rest keep their last figures unless named
# with --only in a later run.
NEEDS_GPU = {name for name, options in PLANS.items() if not options.get("staged_t5")
             and (options.get("offload") == "model" or options.get("cap"))}
NEEDS_FP8_GPU = {name for name, options in PLANS.items() if options.get("fast") == "fp8"}

COLUMNS = {
    "plan": "plan", "status": "status", "load_s": "load s", "gpu_after_load_bytes": "GPU after load",
    "peak_allocated_bytes": "peak alloc", "peak_reserved_bytes": "peak reserved",
    "working_bytes": "working", "denoise_working_bytes": "of it denoising", "working_allowance_bytes": "planner allows",
    "host_peak_load_bytes": "host RSS peak (load)", "host_before_load_bytes": "host RSS before", "s_per_image": "s / image", "s_per_step": "s / step",
    "first_image_s": "first image s", "flop_fraction": "of peak FLOP/s", "measured": "measured",
    "encode_s": "T5 encode s", "encode_peak_allocated_bytes": "encode peak alloc",
}


# --- measuring ------------------------------------------------------------------------------------

def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU " + (platform.machine() or "")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "device"


# --- the random-weights pipeline ------------------------------------------------------------------

def build_random_pipeline(folder: Path, family: str = "large", device: str = "cuda") -> tuple[Path, float]:
    """Full-size SD3.5 `family` with random bf16 weights in `folder`, built once and atomically
    (benchmarks/loading_plans.py's builder). Returns (folder, seconds spent; 0 if already there)."""
    from loading_plans import save_random_pipeline

    started = time.perf_counter()
    built = (folder / "model_index.json").is_file()
    save_random_pipeline(folder, family, device)
    return folder, 0.0 if built else time.perf_counter() - started


# --- one plan (run in a fresh child process, so load time and host memory are its own) --------------

def measure(name: str, *, prompt: str, steps: int, size: int, saved: Path,
            flop_per_image: float | None, peak_flops: float | None, args=None) -> dict:
    """Load one plan, render a warm-up and a measured image, compare with the planner, release."""
    import psutil
    import torch

    import helpers
    from helpers import measuring
    from helpers.errors import GPUOutOfMemoryError
    from helpers.loading import devices, fast_plan, quantized_checkpoints
    from helpers.loading.load import fp8_transformer_bytes, release_current_pipeline
    from helpers.loading.planner import WORKING_MEMORY_BYTES, plan_loading
    from helpers.loading.presets import resolve_preset
    from helpers.measuring import Stopwatch

    cuda = torch.cuda.is_available()
    row = {"plan": name, "status": "ok"}
    options = dict(PLANS[name])
    if "backend" in options:  # a quantization backend: benchmarks/backend_rows.py measures it
        from backend_rows import measure_backend_row

        return dict(row, **measure_backend_row(name, helpers.stand_in.tiny_pipeline_dir(), args))
    if "error" in options:
        return dict(row, **measure_forward_error(options["error"], size))
    capability = devices.compute_capability("cuda") if cuda else None
    why_not = not_applicable(name, capability)
    if why_not:
        return dict(row, status=f"not applicable: {why_not}")
    if options.pop("t4", None):
        from helpers.loading.hardware_profiles import colab_t4_plan

        prequantized = options.pop("prequantized", False)
        options.update(colab_t4_plan())
        if prequantized:
            options["transformer"] = "{saved}"
    if "transformer" in options:
        if not saved.exists():
            return dict(row, status="skipped: needs the NF4 row's saved transformer")
        options["transformer"] = str(saved)
    if isinstance(options.get("dtype"), str):
        options["dtype"] = getattr(torch, options["dtype"])
    extras = {key: options.pop(key) for key in KNOBS if key in options}
    if extras.get("staged_t5"):  # the knob encodes by hand first; the pipeline is the staged plan's (no T5)
        options["staged_t5"] = True
    if extras.get("size"):  # this row's own size (at the run's scale: --smoke renders 64 for 1024), planned for
        size = options["size"] = max(16, extras["size"] * size // 1024 // 16 * 16)
        flop_per_image = None  # the FLOP count is SD3.5 Large's at 1024x1024
    if extras.get("family", "large") != "large":
        flop_per_image = None
    if extras.get("steps"):
        flop_per_image = flop_per_image and flop_per_image * extras["steps"] / steps
        steps = extras["steps"]
    row.update(size=size, steps=steps)
    row["load_pipeline"] = {k: str(v).removeprefix("torch.") for k, v in options.items()}
    fast = options.pop("fast", False)
    compiled = bool(fast) or bool(extras.get("compile_mode"))
    by_hand = bool(extras.get("compile_mode") or extras.get("fuse_qkv"))  # fused or a compile mode: after the load

    # What the planner predicts for the real model (planning needs no token and reads no weights).
    predicted_plan = plan_loading(**options, fast=fast, stand_in=False)  # FP8: costed phase by phase
    row["predicted_bytes"] = dict(predicted_plan.estimated_bytes)
    if fast == "fp8":  # the weights held after quantizing (the load itself peaks at the bf16 plan)
        row["predicted_bytes"]["transformer"] = fp8_transformer_bytes(
            predicted_plan, resolve_preset(options["model"]), capability)
    row["working_allowance_bytes"] = getattr(predicted_plan, "working_bytes", WORKING_MEMORY_BYTES)
    row["planned_load_bytes"] = predicted_plan.gpu_phases.get("loading")  # allocated, the weights on the GPU while loading
    row["t5"] = predicted_plan.t5  # "full", "nf4" or "dropped": what the planner chose when not given
    row["fp8_planned"] = predicted_plan.fp8  # the planner costed the FP8 fast plan (bf16 load, then float8)
    row["planned_gpu_bytes"] = predicted_plan.gpu_bytes_needed  # largest phase, as the allocator reserves it
    row["planned_host_loading_bytes"] = getattr(predicted_plan, "host_loading_bytes", None)
    row["dtype"] = str(predicted_plan.dtype).removeprefix("torch.")
    plan_loading(**options, stand_in=True)  # counting the folder's architecture once, outside the load's time
    row["host_before_load_bytes"] = psutil.Process().memory_info().rss
    if cuda:
        if extras.get("cap") in CAP_BYTES:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(CAP_BYTES[extras["cap"]] / total)
            row["gpu_cap_bytes"] = CAP_BYTES[extras["cap"]]
        row["free_before_bytes"] = torch.cuda.mem_get_info()[0]
        torch.cuda.reset_peak_memory_stats()
    pipe = embeddings = None
    try:
        if extras.get("staged_t5"):
            embeddings = _staged_encode(options, prompt, row, cuda)
        with measuring.PeakMemory("cpu") as host:  # the process' resident memory, from the kernel's peak
            started = time.perf_counter()
            if by_hand:
                pipe = helpers.load_pipeline(**options, stand_in=True)
                row["fast_plan"] = []
                if extras.get("fuse_qkv"):
                    from helpers.loading.fused_qkv import fuse_qkv

                    row["fast_plan"].append(f"fused QKV (qk-norm kept) in {fuse_qkv(pipe.transformer)} attentions")
                if fast:
                    row["fast_plan"] += fast_plan.make_fast(pipe, "bf16" if fast is True else fast,
                                                            capability=capability, mode=extras.get("compile_mode"))
            else:
                pipe = helpers.load_pipeline(**options, stand_in=True, fast=fast)
                row["fast_plan"] = pipe.load_info.fast_plan
            if cuda:
                torch.cuda.synchronize()
            row["load_s"] = time.perf_counter() - started
        row["host_peak_load_bytes"] = host.peak_bytes
        if cuda:  # the GPU peak while loading (peak stats were reset before it; after the encoders if staged)
            row["load_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            row["load_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
            torch.cuda.reset_peak_memory_stats()
        if extras.get("cap") == "t4":
            from helpers.loading.hardware_profiles import get_profile

            row["fits_free_colab_ram"] = host.peak_bytes <= get_profile("free Colab T4").host_bytes  # the planner's T4
        pipe.set_progress_bar_config(disable=True)
        measured = measuring.component_footprints(pipe)  # bitsandbytes' block scales, torchao's scales included
        row["measured_bytes"] = measured
        row["predicted_over_measured"] = {
            k: round(row["predicted_bytes"][k] / measured[k], 4)
            for k in measured if k in row["predicted_bytes"] and measured[k]
        }
        if cuda:
            row["gpu_after_load_bytes"] = torch.cuda.memory_allocated()
        if name == "NF4" and not saved.exists():
            # Saved before the first image: on CPU bitsandbytes repacks 4-bit weights at the first
            # forward pass, so a later save would not be the model that was loaded.
            with Stopwatch("cpu") as clock:
                quantized_checkpoints.save_quantized(pipe, saved)
            row["save_quantized_s"] = clock.seconds
        with fast_plan.attention_context(extras.get("attention")):
            # A compiled plan's first image (compile included) is a goal of its own: timed in full.
            # Other plans warm up with 2 steps (kernel selection, allocator growth).
            if compiled:
                row["first_image_s"] = _timed_generate(pipe, prompt, steps, size, row, "first", embeddings)
            else:
                row["warmup_s"] = _timed_generate(pipe, prompt, min(2, steps), size, row, "warm-up", embeddings)
            row["attention"] = fast_plan.attention_record(pipe.transformer, size)  # after one call: the kernel used
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            seconds = _timed_generate(pipe, prompt, steps, size, row, "measured", embeddings)
        row["s_per_image"] = seconds
        if cuda:
            row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
            row["working_bytes"] = row["peak_allocated_bytes"] - base
            if row.get("denoise_peak_bytes"):
                row["denoise_working_bytes"] = row["denoise_peak_bytes"] - base
        if flop_per_image and peak_flops and seconds:
            row["flop_fraction"] = flop_per_image / seconds / peak_flops
    except Exception as e:  # one failing plan must not stop the others: record it
        message = str(e).splitlines()[0][:300] if str(e) else ""
        out_of_memory = isinstance(e, (torch.OutOfMemoryError, GPUOutOfMemoryError))
        stage = "generating" if "load_s" in row else "loading"
        row["status"] = (f"out of GPU memory while {stage}" if out_of_memory
                         else f"failed: {type(e).__name__}: {message}")
        row["traceback"] = traceback.format_exc()[-3000:]
    finally:
        pipe = None
        if cuda:
            torch.cuda.synchronize()
            before_release = torch.cuda.memory_allocated()
        release_current_pipeline()
        if cuda:
            # What the next load_pipeline would see: the memory this one held must be free again.
            row["freed_bytes"] = before_release - torch.cuda.memory_allocated()
            row["memory_returned"] = torch.cuda.memory_allocated() < 256 * 1024**2
    return row


def measure_forward_error(kind: str, size: int) -> dict:
    """One transformer forward (the random-weights folder's transformer, bf16, batch 2 at `size`)
    against the same forward after quantizing it to float8: the relative error of the output, a
    kernel-level figure (helpers.loading.fast_plan.quantization_error says what it cannot show). On a
    GPU below sm_89 or a CPU, float8 matmuls do not run: the CPU measures float8 weight storage
    (weight-only), and the row says so."""
    import torch
    from diffusers import SD3Transformer2DModel

    import helpers
    from helpers.loading import devices, fast_plan
    from helpers.measuring import module_bytes

    assert kind == "fp8", kind
    cuda = torch.cuda.is_available()
    capability = devices.compute_capability("cuda") if cuda else None
    if cuda and capability < fast_plan.FP8_MIN_CAPABILITY:
        return {"status": "not applicable: needs an sm_89+ GPU (float8 matmuls)"}
    device = "cuda" if cuda else "cpu"
    started = time.perf_counter()
    folder = helpers.stand_in.tiny_pipeline_dir() / "transformer"
    transformer = SD3Transformer2DModel.from_pretrained(folder, torch_dtype=torch.bfloat16).to(device)
    inputs = fast_plan.transformer_inputs(transformer.config, size=size, device=device)
    if cuda:
        row = {"quantization": "float8 weights and activations (Float8DynamicActivationFloat8WeightConfig)"}
        quantize = functools.partial(fast_plan.quantize_fp8, capability=capability)
    else:
        row = {"quantization": "float8 weights only (CPU: float8 matmuls need an sm_89+ GPU)"}
        quantize = fast_plan.quantize_fp8_weights
    row["bf16_bytes"] = module_bytes(transformer)
    row.update(fast_plan.quantization_error(transformer, quantize, inputs))
    row["float8_bytes"] = module_bytes(transformer)
    row["seconds"] = time.perf_counter() - started
    return row


def _staged_encode(options, prompt, row, cuda):
    """Phase 1 of staged T5: the text encoders alone encode `prompt` and are released. Records their
    time, GPU peak (against the planner's allowance), host RSS peak and what stays allocated after."""
    import torch

    from helpers import measuring
    from helpers.loading.staged_t5 import encode_with_t5, encoder_bytes, text_encoder_plan

    row["encode_allowance_bytes"] = encoder_bytes(text_encoder_plan(**options, stand_in=False))
    with measuring.PeakMemory("cpu") as host:
        started = time.perf_counter()
        [embeddings] = encode_with_t5([prompt], **options, stand_in=True)
        row["encode_s"] = time.perf_counter() - started
    row["host_peak_encode_bytes"] = host.peak_bytes
    if cuda:
        row["encode_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        row["encode_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        row["after_encode_allocated_bytes"] = torch.cuda.memory_allocated()  # the embeddings only
        torch.cuda.reset_peak_memory_stats()
    return embeddings


def _timed_generate(pipe, prompt, steps, size, row, which, embeddings=None) -> float:
    """One image, timed from outside `generate` (so a non-finite result still has a time). For the
    measured image, the GPU peak at the last denoising step is kept too (before the VAE decode), and
    each step's time (CUDA events on a GPU, so nothing waits for them): the median and range."""
    import hashlib

    import numpy as np
    import torch

    import helpers
    from helpers.measuring import Stopwatch

    cuda = torch.cuda.is_available()
    marks = []

    def at_step(step, total, latents):
        if which != "measured":
            return
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            marks.append(event)
            if step == total - 1:
                row["denoise_peak_bytes"] = torch.cuda.max_memory_allocated()
        else:
            marks.append(time.perf_counter())

    device = pipe.load_info.plan.device
    with Stopwatch(device) as clock:
        try:
            text = {"embeddings": embeddings} if embeddings is not None else {"prompt": prompt}
            result = helpers.generate(pipe, **text, seed=0, num_inference_steps=steps, height=size, width=size,
                                      callback=at_step)
        except Exception as e:
            if "finite" not in str(e).lower():
                raise
            row.setdefault("notes", []).append(f"{which} image not finite (random weights): {e}")
            result = None
    if len(marks) > 1:  # the steps between the first step's end and the last's
        step_s = sorted(a.elapsed_time(b) / 1000 if cuda else b - a for a, b in zip(marks, marks[1:]))
        row["s_per_step"] = step_s[len(step_s) // 2]
        row["s_per_step_range"] = [step_s[0], step_s[-1]]
    if result is not None and which == "measured":
        pixels = np.asarray(result.image)
        row["image_sha"] = hashlib.sha256(pixels.tobytes()).hexdigest()[:16]
        row["image_std"] = float(pixels.std())
    return clock.seconds


def run_child(name: str, args, env: dict, timeout: float) -> dict:
    """Measure plan `name` in a fresh Python process and return its row. Each process gets an empty
    torch.compile cache, so a compiled plan's first image pays what a reader's first run pays."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        env = dict(env, TORCHINDUCTOR_CACHE_DIR=str(Path(tmp) / "inductor"))
        command = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--row-json", str(out),
                   "--steps", str(args.steps), "--size", str(args.size), "--prompt", args.prompt,
                   "--saved", str(args.saved), "--scratch", str(args.scratch)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"plan": name, "status": f"failed: took longer than {timeout:.0f} s"}
        if out.is_file():
            return json.loads(out.read_text())
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return {"plan": name, "status": f"failed: the measuring process exited with {done.returncode}",
                "traceback": tail}


# --- report ---------------------------------------------------------------------------------------

def markdown(meta: dict, rows: list[dict]) -> str:
    from helpers.loading.plan_benchmarks import markdown_table

    table = markdown_table(rows, COLUMNS)
    ratios = ["| plan | " + " | ".join(("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"))
              + " |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("predicted_over_measured"):
            p = r["predicted_over_measured"]
            ratios.append(f"| {r['plan']} | " + " | ".join(
                f"{p[k]:.3f}" if k in p else "—"
                for k in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")) + " |")
    checks = "\n".join(f"- {c}" for c in meta.get("checks", []))
    return (f"# GPU check: {meta['model']} on {meta['device']}\n\n"
            f"{meta['size']}x{meta['size']}, {meta['steps']} steps with classifier-free guidance, "
            f"{meta['date']}; torch {meta['versions'].get('torch')}, diffusers {meta['versions'].get('diffusers')}, "
            f"bitsandbytes {meta['versions'].get('bitsandbytes')}. Random weights: speed and memory are the "
            f"real model's, the images are not. s / step: the median step of the measured image; "
            f"first image: with compiling (compiled plans only); measured: — for this run, else the date of "
            f"the run the row comes from.\n\n{table}\n\n"
            f"Planner's predicted bytes / bytes really loaded, per component:\n\n" + "\n".join(ratios)
            + (f"\n\nChecks:\n\n{checks}\n" if checks else "\n"))


def not_applicable(name: str, capability) -> str | None:
    """Why row `name` cannot run on this machine (`capability`: the GPU's, None without one), or None."""
    from helpers.loading.fast_plan import FP8_MIN_CAPABILITY

    if name in NEEDS_GPU and capability is None:
        return "no GPU"
    if name in NEEDS_FP8_GPU and (capability or (0, 0)) < FP8_MIN_CAPABILITY:
        return "needs an sm_89+ GPU (float8 matmuls)"
    return None


def choose_rows(only: list[str] | None) -> tuple[list[str], list[str]]:
    """(rows to run, notes): every non-optional row in PLANS order, or the rows named with --only
    (in PLANS order), with the NF4 row added first when a chosen row needs its saved transformer."""
    if not only:
        return [name for name, options in PLANS.items() if not options.get("optional")], []
    chosen = [name for name in PLANS if name in only]
    notes = []
    needs_saved = [n for n in chosen if PLANS[n].get("transformer") == "{saved}" or PLANS[n].get("prequantized")]
    if needs_saved and "NF4" not in chosen:
        chosen.insert(0, "NF4")
        notes.append(f"NF4 was added: {', '.join(needs_saved)} load(s) its saved transformer")
    return chosen, notes


def merge_previous(rows: list[dict], previous: dict | None) -> list[dict]:
    """This run's rows, and for every row it did not measure (skipped, or not chosen) the row the
    last results file holds, labelled with the date it was measured; in PLANS order, unknown last."""
    if not previous:
        return rows
    ran = {r["plan"]: r for r in rows if not str(r.get("status", "")).startswith("skipped: time budget")}
    date = previous.get("meta", {}).get("date", "an earlier run")
    merged = []
    old = {r["plan"].split(" [run ")[0]: r for r in previous.get("rows", [])}
    for name in list(PLANS) + [n for n in old if n not in PLANS]:
        if name in ran:
            merged.append(ran[name])
        elif name in old and not str(old[name].get("status", "")).startswith("skipped"):
            merged.append(dict(old[name], plan=name, measured=old[name].get("measured") or date))
        elif name in {r["plan"] for r in rows}:
            merged.append(next(r for r in rows if r["plan"] == name))
    return merged


def run_checks(rows: list[dict], args) -> list[str]:
    """The run's checks on the rows measured so far: the pre-quantized reload's image, the memory each
    release freed, and (at 1024x1024, 28 steps) the issue's goals."""
    checks = []
    by_name = {r["plan"]: r for r in rows}
    a, b = by_name.get("NF4", {}), by_name.get("NF4, pre-quantized reload", {})
    if a.get("image_sha") and b.get("image_sha"):
        same = a["image_sha"] == b["image_sha"]
        checks.append(f"pre-quantized reload gives {'a byte-identical' if same else 'a DIFFERENT'} image "
                      f"to quantizing at load ({a['image_sha']} vs {b['image_sha']})")
    returned = [r["plan"] for r in rows if r.get("memory_returned") is False]
    if any("memory_returned" in r for r in rows):
        checks.append("every release_pipeline freed the GPU memory its pipeline held" if not returned
                      else f"GPU memory NOT freed by release_pipeline after: {', '.join(returned)}")
    if args.size == 1024 and args.steps == 28:
        checks += goal_checks(rows)
    return checks


def goal_checks(rows: list[dict]) -> list[str]:
    """The issue's goals, checked on this run's rows (1024x1024, 28 steps, H100/H200)."""
    by_name = {r["plan"]: r for r in rows if r.get("status") == "ok" and not r.get("measured")}
    checks = []
    turbo = by_name.get("Large Turbo, 4 steps, FP8 fast, NF4 T5")
    if turbo and turbo.get("s_per_image"):
        checks.append(f"Large Turbo, 4 steps: {turbo['s_per_image']:.2f} s/image (goal < 1: "
                      f"{'met' if turbo['s_per_image'] < 1 else 'not met'})")
    for name, r in by_name.items():
        if r is turbo or r.get("size", 1024) != 1024 or r.get("steps", 28) != 28:
            continue
        if r.get("first_image_s") and r.get("s_per_image"):
            checks.append(f"{name}: {r['s_per_image']:.2f} s/image (goal <= 2.5: {'met' if r['s_per_image'] <= 2.5 else 'not met'}), "
                          f"first image {r['first_image_s']:.1f} s with compiling (goal <= 25: "
                          f"{'met' if r['first_image_s'] <= 25 else 'not met'})")
    fp8 = by_name.get("FP8 fast, NF4 T5")
    if fp8 and fp8.get("peak_allocated_bytes"):
        gib = 1024**3
        checks.append(f"FP8 plan's GPU memory: {fp8['gpu_after_load_bytes'] / gib:.2f} GiB after load, peak "
                      f"{fp8['peak_allocated_bytes'] / gib:.2f} GiB allocated (goal <= 15 GiB: "
                      f"{'met' if fp8['peak_allocated_bytes'] <= 15 * gib else 'not met'}); the load itself peaks "
                      "at the bf16 plan (quantized after loading); the float8 rule keeps adaLN in bf16, 2.6 GiB of it")
    error = by_name.get("FP8: one transformer forward vs bf16")
    if error and error.get("relative_error") is not None:
        checks.append(f"FP8 vs bf16, one transformer forward ({error['quantization']}): relative error "
                      f"{error['relative_error']:.4f}, largest difference {error['max_abs_error']:.3g} (output RMS "
                      f"{error['reference_rms']:.3g}); kernel-level on random weights, not image quality")
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same code path on the CPU stand-in, quickly")
    parser.add_argument("--family", choices=("large",), default="large")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "sd35-gpu-check")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--only", "--plans", dest="only", nargs="*", default=None,
                        help="rerun only these rows (optional ones too); the others keep their last figures")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start a row only if its estimate ends within this many seconds of the start "
                             f"(default {DEFAULT_BUDGET_S:.0f}; none with --smoke)")
    parser.add_argument("--steps", type=int, default=None, help="default: 28 (2 with --smoke)")
    parser.add_argument("--size", type=int, default=None, help="pixels; default 1024 (64 with --smoke)")
    parser.add_argument("--prompt", default="a capybara wearing a suit holding a sign that reads hello world")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: measure one plan
    parser.add_argument("--row-json", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--saved", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    for name in (args.only or []) + ([args.one] if args.one else []):
        if name not in PLANS:
            parser.error(f"unknown plan {name!r}; choose from: {', '.join(PLANS)}")
    import torch

    cuda = torch.cuda.is_available()
    plans, notes = choose_rows(args.only)
    if not cuda and not args.smoke and not args.one:
        print("The GPU check needs a CUDA GPU (full-size SD3.5 on a CPU would take hours). "
              "`python benchmarks/gpu_check.py --smoke` runs the same code path on the CPU stand-in.")
        return 0
    if args.budget_s is None:
        args.budget_s = float("inf") if args.smoke else DEFAULT_BUDGET_S
    args.steps = args.steps or (2 if args.smoke else 28)
    args.size = args.size or (64 if args.smoke else 1024)
    device = gpu_name()

    import helpers
    from helpers.loading.plan_benchmarks import LARGE_FLOP_PER_IMAGE, markdown_table, peak_flops
    from helpers.output_folders import write_atomically

    flop_per_image = LARGE_FLOP_PER_IMAGE * args.steps / 28 if (cuda and args.size == 1024) else None
    peak = peak_flops(device) if cuda else None
    if args.one:  # the child process: one row, written as JSON for the parent
        row = measure(args.one, prompt=args.prompt, steps=args.steps, size=args.size, saved=args.saved,
                      flop_per_image=flop_per_image, peak_flops=peak, args=args)
        write_atomically(args.row_json, json.dumps(row, default=str), overwrite=True)
        return 0

    import psutil

    meta = {"model": "offline stand-in (smoke)" if args.smoke else f"SD3.5 {args.family}, full size, random weights",
            "device": device, "steps": args.steps, "size": args.size,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "versions": {**helpers.generation.text_to_image.library_versions(), "python": platform.python_version()},
            "host_ram_bytes": psutil.virtual_memory().total, "flop_per_image": flop_per_image,
            "peak_flops": peak, "checks": [], "budget_s": args.budget_s, "rows_run": plans}
    capability = None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        capability = (props.major, props.minor)
        meta.update(capability=f"{props.major}.{props.minor}", gpu_total_bytes=props.total_memory)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / ("smoke" if args.smoke else slug(device))
    previous = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").is_file() else None
    rows: list[dict] = []
    for note in notes:
        print(note)

    def write():
        """Rows and checks so far, written after every row: a run cut short keeps what it measured."""
        meta["seconds"] = round(time.perf_counter() - started, 1)
        meta["checks"] = run_checks(rows, args)
        merged = merge_previous(rows, previous)
        if any(r.get("measured") for r in merged):
            meta["runs"] = ("Rows with a date under \"measured\" were not run this time (time budget, or not chosen "
                            "with --only): their figures come from the run of that date.")
        write_atomically(stem.with_suffix(".json"), json.dumps({"meta": meta, "rows": merged}, indent=2, default=str),
                         overwrite=True)
        write_atomically(stem.with_suffix(".md"), markdown(meta, merged), overwrite=True)
        return merged

    if args.smoke:
        folder = helpers.stand_in.tiny_pipeline_dir()
    else:
        print(f"Building full-size SD3.5 {args.family} with random weights in {args.scratch} ...", flush=True)
        folder, build_s = build_random_pipeline(args.scratch / args.family, args.family)
        meta["build_s"] = round(build_s, 1)
        print(f"  built in {build_s:.0f} s", flush=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nf4-", dir=args.scratch))
    args.saved = work / "saved"
    folders = {args.family: folder}  # random-weights folder per family (the stand-in for all with --smoke)
    try:
        for name in plans:
            elapsed = time.perf_counter() - started
            family = PLANS[name].get("family", args.family)
            build = 0.0 if (args.smoke or family in folders) else BUILD_EST_S[family]
            estimate = 0.0 if args.smoke else PLANS[name].get("est_s", DEFAULT_EST_S) + build
            if elapsed + estimate > args.budget_s:
                rows.append({"plan": name, "status": f"skipped: time budget ({elapsed:.0f} s + about "
                                                     f"{estimate:.0f} s > {args.budget_s:.0f})"})
                print(f"{name}: {rows[-1]['status']}", flush=True)
                continue
            why_not = not_applicable(name, capability)
            if why_not:  # said here: no process to start
                rows.append({"plan": name, "status": f"not applicable: {why_not}"})
                print(f"{name}: {rows[-1]['status']}", flush=True)
                continue
            if family not in folders:
                folders[family] = folder if args.smoke else build_random_pipeline(args.scratch / family, family)[0]
            env = dict(os.environ, SD35_TINY_DIR=str(folders[family]))  # load_pipeline(stand_in=True) loads it
            print(f"{name} ...", flush=True)
            timeout = min(args.budget_s - elapsed + 120, 3600.0)
            if not args.smoke:  # a row that takes 3 times its estimate is stopped: the rows after it still run
                timeout = min(timeout, max(120.0, 3 * estimate))
            row = run_child(name, args, env, timeout=timeout)
            row["row_s"] = round(time.perf_counter() - started - elapsed, 1)
            rows.append(row)
            print(f"  {row['status']} in {row['row_s']} s: load {row.get('load_s')} s, {row.get('s_per_image')} s/image, "
                  f"peak {helpers.format_bytes(row.get('peak_allocated_bytes'))}", flush=True)
            if row.get("traceback"):
                print(row["traceback"], flush=True)
            write()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    merged = write()
    print(markdown_table(merged, COLUMNS))
    for check in meta["checks"]:
        print("-", check)
    print(f"Wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
