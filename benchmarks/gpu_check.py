"""The GPU check: every loading plan measured on full-size SD3.5 with random weights, in one command.

    make gpu-check                       # or: python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --smoke   # the same code path on the CPU stand-in (the tests run it)

Speed and memory do not depend on the weights' values, so a CUDA GPU with no network and no model
access measures every plan on SD3.5 Large built at full size with random weights (saved once to
--scratch, atomically). For each plan: load seconds, GPU memory held after loading, peak allocated and
reserved while generating, working memory against the planner's allowance, peak host RSS while
loading, seconds per 1024x1024 28-step image and per step, and the fraction of the GPU's peak FLOP/s.
It also compares the planner's predicted bytes per component with the bytes really loaded, checks
that a pre-quantized reload gives a byte-identical image and that a second load sees the memory the
first one freed. Writes <gpu>.md and <gpu>.json to --output (default benchmarks/results).
Rows that do not fit in --budget-s are skipped (and say so), so a run always ends with its results.
"""

from __future__ import annotations

import argparse
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

FREE_COLAB_T4_GPU_BYTES = 15 * 1000**3  # "a 15 GB card" (a T4: 15360 MiB, less the CUDA context)

# name -> load_pipeline keyword arguments (the preset is read from the random-weights folder), plus
# three knobs of this script's own, applied after loading: "vae_tiling" (pipe.vae.enable_tiling()),
# "attention" ("cudnn": SDPA with cuDNN's kernel first) and "cap" (a smaller GPU, emulated with
# torch.cuda.set_per_process_memory_fraction). Order matters: the most informative rows first, so a
# short budget still measures them. "{saved}" is the NF4 row's transformer, saved with save_quantized.
# "t4": "planner" takes the load_pipeline arguments the planner chooses for the free Colab T4
# (helpers.loading.hardware_profiles.colab_t4_plan), with the NF4 row's saved transformer if "prequantized".
T4_NF4_T5 = dict(model="sd35-large-nf4", offload="none", transformer="{saved}", quantize_t5=True, dtype="float16",
                 cap="t4")
PLANS: dict[str, dict] = {
    "bf16": dict(model="sd35-large", offload="none"),
    "NF4": dict(model="sd35-large-nf4", offload="none"),
    "free Colab T4: the planner's plan": dict(t4="planner", cap="t4"),
    "free Colab T4: planner's plan, pre-quantized": dict(t4="planner", prequantized=True, cap="t4"),
    "bf16 fast (compiled)": dict(model="sd35-large", offload="none", fast=True),
    "NF4 + model CPU offload": dict(model="sd35-large-nf4", offload="model"),
    "NF4, pre-quantized reload": dict(model="sd35-large-nf4", offload="none", transformer="{saved}"),
    "free Colab T4: NF4 T5 + VAE tiling": dict(T4_NF4_T5, vae_tiling=True),
    "bf16 fast + cuDNN attention": dict(model="sd35-large", offload="none", fast=True, attention="cudnn"),
    "NF4 with NF4 T5": dict(model="sd35-large-nf4", offload="none", quantize_t5=True),
    "NF4 without T5": dict(model="sd35-large-nf4", offload="none", drop_t5=True),
    "free Colab T4: NF4 T5, no tiling": T4_NF4_T5,
    "NF4 fast (compiled)": dict(model="sd35-large-nf4", offload="none", fast=True),
}
NEEDS_GPU = {name for name, options in PLANS.items()
             if options.get("offload") == "model" or options.get("cap") or options.get("attention")}

COLUMNS = {
    "plan": "plan", "status": "status", "load_s": "load s", "gpu_after_load_bytes": "GPU after load",
    "peak_allocated_bytes": "peak alloc", "peak_reserved_bytes": "peak reserved",
    "working_bytes": "working", "denoise_working_bytes": "of it denoising", "working_allowance_bytes": "planner allows",
    "host_peak_load_bytes": "host RSS peak (load)", "host_before_load_bytes": "host RSS before", "s_per_image": "s / image", "s_per_step": "s / step",
    "first_image_s": "first image s", "flop_fraction": "of peak FLOP/s",
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
            flop_per_image: float | None, peak_flops: float | None) -> dict:
    """Load one plan, render a warm-up and a measured image, compare with the planner, release."""
    import psutil
    import torch

    import helpers
    from helpers import measuring
    from helpers.errors import GPUOutOfMemoryError
    from helpers.loading import quantized_checkpoints
    from helpers.loading.load import release_current_pipeline
    from helpers.loading.planner import WORKING_MEMORY_BYTES, plan_loading
    from helpers.measuring import Stopwatch

    cuda = torch.cuda.is_available()
    row = {"plan": name, "status": "ok"}
    options = dict(PLANS[name])
    if not cuda and name in NEEDS_GPU:
        return dict(row, status="not applicable: no GPU")
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
    row["load_pipeline"] = {k: str(v).removeprefix("torch.") for k, v in options.items() if k != "cap"}
    extras = {key: options.pop(key) for key in ("vae_tiling", "attention", "cap") if key in options}
    fast = options.pop("fast", False)

    # What the planner predicts for the real model (planning needs no token and reads no weights).
    predicted_plan = plan_loading(**options, stand_in=False)
    row["predicted_bytes"] = dict(predicted_plan.estimated_bytes)
    row["working_allowance_bytes"] = getattr(predicted_plan, "working_bytes", WORKING_MEMORY_BYTES)
    row["dtype"] = str(predicted_plan.dtype).removeprefix("torch.")
    row["host_before_load_bytes"] = psutil.Process().memory_info().rss
    if cuda:
        if extras.get("cap") == "t4":
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(FREE_COLAB_T4_GPU_BYTES / total)
            row["gpu_cap_bytes"] = FREE_COLAB_T4_GPU_BYTES
        row["free_before_bytes"] = torch.cuda.mem_get_info()[0]
        torch.cuda.reset_peak_memory_stats()
    pipe = None
    try:
        with measuring.PeakMemory("cpu") as host:  # the process' resident memory, from the kernel's peak
            started = time.perf_counter()
            pipe = helpers.load_pipeline(**options, stand_in=True, **({"fast": True} if fast else {}))
            if cuda:
                torch.cuda.synchronize()
            row["load_s"] = time.perf_counter() - started
        row["host_peak_load_bytes"] = host.peak_bytes
        if extras.get("cap") == "t4":
            from helpers.loading.hardware_profiles import get_profile

            row["fits_free_colab_ram"] = host.peak_bytes <= get_profile("free Colab T4").host_bytes  # the planner's T4
        pipe.set_progress_bar_config(disable=True)
        if extras.get("vae_tiling"):
            pipe.vae.enable_tiling()
        measured = measuring.component_footprints(pipe)  # bitsandbytes' block scales included
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
        attention = _attention(extras.get("attention"))
        with attention:
            row["first_image_s"] = _timed_generate(pipe, prompt, steps, size, row, "first")
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            seconds = _timed_generate(pipe, prompt, steps, size, row, "measured")
        row["s_per_image"] = seconds
        row["s_per_step"] = seconds / steps
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


def _attention(kind):
    """A context that puts cuDNN's attention kernel first for SDPA ("cudnn"), or changes nothing."""
    import contextlib

    if kind != "cudnn":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def _timed_generate(pipe, prompt, steps, size, row, which) -> float:
    """One image, timed from outside `generate` (so a non-finite result still has a time). For the
    measured image, the GPU peak at the last denoising step is kept too (before the VAE decode)."""
    import hashlib

    import numpy as np
    import torch

    import helpers
    from helpers.measuring import Stopwatch

    def at_step(step, total, latents):
        if which == "measured" and step == total - 1 and torch.cuda.is_available():
            row["denoise_peak_bytes"] = torch.cuda.max_memory_allocated()

    device = pipe.load_info.plan.device
    with Stopwatch(device) as clock:
        try:
            result = helpers.generate(pipe, prompt, seed=0, num_inference_steps=steps, height=size, width=size,
                                      callback=at_step)
        except Exception as e:
            if "finite" not in str(e).lower():
                raise
            row.setdefault("notes", []).append(f"{which} image not finite (random weights): {e}")
            result = None
    if result is not None and which == "measured":
        pixels = np.asarray(result.image)
        row["image_sha"] = hashlib.sha256(pixels.tobytes()).hexdigest()[:16]
        row["image_std"] = float(pixels.std())
    return clock.seconds


def run_child(name: str, args, env: dict, timeout: float) -> dict:
    """Measure plan `name` in a fresh Python process and return its row."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--row-json", str(out),
                   "--steps", str(args.steps), "--size", str(args.size), "--prompt", args.prompt,
                   "--saved", str(args.saved)]
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
            f"real model's, the images are not.\n\n{table}\n\n"
            f"Planner's predicted bytes / bytes really loaded, per component:\n\n" + "\n".join(ratios)
            + (f"\n\nChecks:\n\n{checks}\n" if checks else "\n"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same code path on the CPU stand-in, quickly")
    parser.add_argument("--family", choices=("large",), default="large")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "sd35-gpu-check")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--plans", nargs="*", default=None, help="plan names (default: all)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip the rows that would start after this")
    parser.add_argument("--steps", type=int, default=None, help="default: 28 (2 with --smoke)")
    parser.add_argument("--size", type=int, default=None, help="pixels; default 1024 (64 with --smoke)")
    parser.add_argument("--prompt", default="a capybara wearing a suit holding a sign that reads hello world")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: measure one plan
    parser.add_argument("--row-json", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--saved", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import torch

    cuda = torch.cuda.is_available()
    plans = args.plans or list(PLANS)
    for name in plans + ([args.one] if args.one else []):
        if name not in PLANS:
            parser.error(f"unknown plan {name!r}; choose from: {', '.join(PLANS)}")
    if not cuda and not args.smoke and not args.one:
        print("The GPU check needs a CUDA GPU (full-size SD3.5 on a CPU would take hours). "
              "`python benchmarks/gpu_check.py --smoke` runs the same code path on the CPU stand-in.")
        return 0
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
                      flop_per_image=flop_per_image, peak_flops=peak)
        write_atomically(args.row_json, json.dumps(row, default=str), overwrite=True)
        return 0

    import psutil

    meta = {"model": "offline stand-in (smoke)" if args.smoke else f"SD3.5 {args.family}, full size, random weights",
            "device": device, "steps": args.steps, "size": args.size,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "versions": {**helpers.generation.text_to_image.library_versions(), "python": platform.python_version()},
            "host_ram_bytes": psutil.virtual_memory().total, "flop_per_image": flop_per_image,
            "peak_flops": peak, "checks": []}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        meta.update(capability=f"{props.major}.{props.minor}", gpu_total_bytes=props.total_memory)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / ("smoke" if args.smoke else slug(device))
    rows: list[dict] = []

    def write():
        meta["seconds"] = round(time.perf_counter() - started, 1)
        write_atomically(stem.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=2, default=str),
                         overwrite=True)
        write_atomically(stem.with_suffix(".md"), markdown(meta, rows), overwrite=True)

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
    env = dict(os.environ, SD35_TINY_DIR=str(folder))  # load_pipeline(stand_in=True) loads this folder
    try:
        for name in plans:
            elapsed = time.perf_counter() - started
            if elapsed > args.budget_s:
                rows.append({"plan": name, "status": f"skipped: time budget ({elapsed:.0f} s of {args.budget_s:.0f})"})
                continue
            print(f"{name} ...", flush=True)
            row = run_child(name, args, env, timeout=max(120.0, args.budget_s - elapsed + 120))
            rows.append(row)
            print(f"  {row['status']}: load {row.get('load_s')} s, {row.get('s_per_image')} s/image, "
                  f"peak {helpers.format_bytes(row.get('peak_allocated_bytes'))}", flush=True)
            if row.get("traceback"):
                print(row["traceback"], flush=True)
            write()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    by_name = {r["plan"]: r for r in rows}
    a, b = by_name.get("NF4", {}), by_name.get("NF4, pre-quantized reload", {})
    if a.get("image_sha") and b.get("image_sha"):
        same = a["image_sha"] == b["image_sha"]
        meta["checks"].append(f"pre-quantized reload gives {'a byte-identical' if same else 'a DIFFERENT'} image "
                              f"to quantizing at load ({a['image_sha']} vs {b['image_sha']})")
    returned = [r["plan"] for r in rows if r.get("memory_returned") is False]
    if any("memory_returned" in r for r in rows):
        meta["checks"].append("every release_pipeline freed the GPU memory its pipeline held" if not returned
                              else f"GPU memory NOT freed by release_pipeline after: {', '.join(returned)}")
    write()
    print(markdown_table(rows, COLUMNS))
    for check in meta["checks"]:
        print("-", check)
    print(f"Wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
