"""Benchmark SD3.5 loading plans (bf16, NF4, NF4 + offload, no T5, NF4 T5, 8-bit).

    python benchmarks/loading_plans.py                        # CUDA: real models; CPU: stand-in
    python benchmarks/loading_plans.py --random-weights large # CUDA: full-size random weights

For each plan: load seconds, peak memory (GPU on CUDA, process RSS on CPU), seconds per image
and, on CUDA for SD3.5 Large at 1024x1024, the achieved fraction of the GPU's peak FLOP/s.
Writes loading_plans.json and loading_plans.md to --output. Speed and memory do not depend on
the weights' values, so --random-weights measures every plan on a GPU without downloading any.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers.loading.architectures import COMPONENTS, build_component  # noqa: E402  (published full-size configs
from helpers.output_folders import write_atomically  # noqa: E402

__all__ = ["COMPONENTS", "build_component", "save_random_pipeline", "main"]


def save_random_pipeline(folder: Path, family: str, device: str = "cuda") -> Path:
    """Save a full-size SD3.5 `family` pipeline with random bf16 weights to `folder`, laid out like
    the real repository (tokenizers and scheduler copied from the stand-in; it has the same ones).

    Written into a temporary sibling folder and renamed into place only when complete, so an
    interrupted build is never mistaken for a finished one (a leftover partial one is removed)."""
    import torch

    from helpers.stand_in import STAND_IN_MARKER, tiny_pipeline_dir

    if (folder / "model_index.json").is_file():
        return folder
    if folder.exists():  # no model_index.json: a partial build from before atomic writes; start over
        shutil.rmtree(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    stand_in = tiny_pipeline_dir()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16: half the memory of fp32
    try:
        for name in COMPONENTS:
            torch.manual_seed(0)
            with torch.device(device):
                model = build_component(name, family)
            model.save_pretrained(partial / name)
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    finally:
        torch.set_default_dtype(default)
    for extra in ("tokenizer", "tokenizer_2", "tokenizer_3", "scheduler", "model_index.json"):
        src = stand_in / extra
        (shutil.copytree if src.is_dir() else shutil.copy)(src, partial / extra)
    # The marker makes helpers load this folder as "the stand-in": it is random weights.
    (partial / STAND_IN_MARKER).write_text(f"Full-size SD3.5 {family} with random weights (benchmark).\n")
    os.replace(partial, folder)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "outputs" / "benchmarks")
    parser.add_argument("--random-weights", choices=("large", "medium"), default=None,
                        help="CUDA only: full-size random-weight components (no download)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/sd35-random-weights"),
                        help="where --random-weights saves its pipeline (~27 GB for large)")
    parser.add_argument("--stand-in", action="store_true", help="force the offline stand-in")
    parser.add_argument("--plans", nargs="*", default=None, help="plan names (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="default: 28 on CUDA, 4 otherwise")
    parser.add_argument("--size", type=int, default=None, help="pixels; default: 1024 on CUDA, 64 otherwise")
    parser.add_argument("--prompt", default="a capybara wearing a suit holding a sign that reads hello world")
    args = parser.parse_args(argv)

    import torch

    import helpers
    from helpers.loading.plan_benchmarks import (
        LARGE_FLOP_PER_IMAGE,
        PLAN_COLUMNS,
        PLANS,
        markdown_table,
        measure_plan,
        peak_flops,
    )

    cuda = torch.cuda.is_available()
    plans = args.plans or list(PLANS)
    for name in plans:
        if name not in PLANS:
            parser.error(f"unknown plan {name!r}; choose from: {', '.join(PLANS)}")
    if args.random_weights:
        if not cuda:
            print(f"--random-weights {args.random_weights}: skipped, this machine has no CUDA GPU "
                  "(full-size models on a CPU would take hours).")
            return 0
        print(f"Building full-size SD3.5 {args.random_weights} with random weights in {args.scratch} ...", flush=True)
        scratch = save_random_pipeline(args.scratch / args.random_weights, args.random_weights)
        os.environ["SD35_TINY_DIR"] = str(scratch)  # load_pipeline(stand_in=True) reads this folder
        stand_in, family = True, args.random_weights
    else:
        stand_in = args.stand_in or helpers.use_stand_in(None)
        family = None if stand_in else "large"
    steps = args.steps or (28 if cuda else 4)
    size = args.size or (1024 if cuda else 64)
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    flops_per_image = LARGE_FLOP_PER_IMAGE * steps / 28 if family == "large" and size == 1024 else None
    peak = peak_flops(device_name) if cuda else None

    rows = []
    for name in plans:
        print(f"{name} ...", flush=True)
        row = measure_plan(name, prompt=args.prompt, steps=steps, size=size, stand_in=stand_in, warmup=cuda)
        row.pop("image")
        if row["s_per_image"] and flops_per_image and peak:
            row["flop_fraction"] = flops_per_image / row["s_per_image"] / peak
        rows.append(row)
        print(f"  {row['status']}: load {row['load_s']} s, {row['s_per_image']} s/image, "
              f"peak {helpers.format_bytes(row['peak_bytes'])} ({row['memory_kind']}), "
              f"fraction of peak FLOP/s {row.get('flop_fraction')}", flush=True)

    what = (f"random-weight SD3.5 {family}" if args.random_weights
            else "offline stand-in (random tiny weights)" if stand_in else "SD3.5 Large")
    meta = {"model": what, "device": device_name, "steps": steps, "size": size,
            "flop_per_image": flops_per_image, "peak_flops": peak,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": helpers.generation.text_to_image.library_versions()}
    args.output.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output / "loading_plans.json", json.dumps({"meta": meta, "rows": rows}, indent=2), overwrite=True)
    columns = dict(PLAN_COLUMNS, flop_fraction="fraction of peak FLOP/s") if flops_per_image else PLAN_COLUMNS
    table = markdown_table(rows, columns)
    write_atomically(args.output / "loading_plans.md", overwrite=True,
                     data=f"# Loading plans: {what}\n\n{device_name}, {size}x{size}, {steps} steps.\n\n{table}\n")
    print(table)
    print(f"Wrote {args.output / 'loading_plans.json'} and {args.output / 'loading_plans.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
