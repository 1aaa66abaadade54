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

# Published configs (Hugging Face model repos' config.json files) for full-size random weights.
TRANSFORMER_CONFIGS = {
    "large": dict(
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38,
        attention_head_dim=64, num_attention_heads=38, joint_attention_dim=4096,
        caption_projection_dim=2432, pooled_projection_dim=2048, pos_embed_max_size=192,
        qk_norm="rms_norm",
    ),
    "medium": dict(
        sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
        caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=384,
        qk_norm="rms_norm", dual_attention_layers=tuple(range(13)),
    ),
}
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              projection_dim=1280, hidden_act="gelu", vocab_size=49408, max_position_embeddings=77)
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, vocab_size=32128,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
              relative_attention_max_distance=128, dropout_rate=0.0)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
           layers_per_block=2, latent_channels=16, norm_num_groups=32, shift_factor=0.0609,
           scaling_factor=1.5305, use_quant_conv=False, use_post_quant_conv=False, sample_size=1024)


def build_component(name: str, family: str = "large"):
    """One full-size SD3.5 component with random weights, built on the current default device."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    if name == "transformer":
        return SD3Transformer2DModel(**TRANSFORMER_CONFIGS[family])
    if name == "vae":
        return AutoencoderKL(**VAE)
    if name in ("text_encoder", "text_encoder_2"):
        return CLIPTextModelWithProjection(CLIPTextConfig(**(CLIP_L if name == "text_encoder" else CLIP_G)))
    if name == "text_encoder_3":
        return T5EncoderModel(T5Config(**T5_XXL))
    raise ValueError(f"Unknown component {name!r}.")


COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")


def save_random_pipeline(folder: Path, family: str, device: str = "cuda") -> Path:
    """Save a full-size SD3.5 `family` pipeline with random bf16 weights to `folder`, laid out like
    the real repository (tokenizers and scheduler copied from the stand-in; it has the same ones)."""
    import torch

    from helpers import tiny

    if (folder / "model_index.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    stand_in = tiny.tiny_pipeline_dir()
    for extra in ("tokenizer", "tokenizer_2", "tokenizer_3", "scheduler", "model_index.json"):
        src = stand_in / extra
        (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / extra)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16: half the memory of fp32
    try:
        for name in COMPONENTS:
            torch.manual_seed(0)
            with torch.device(device):
                model = build_component(name, family)
            model.save_pretrained(folder / name)
            del model
            torch.cuda.empty_cache()
    finally:
        torch.set_default_dtype(default)
    # The marker makes helpers load this folder as "the stand-in": it is random weights.
    (folder / tiny.STAND_IN_MARKER).write_text(f"Full-size SD3.5 {family} with random weights (benchmark).\n")
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
    from helpers.loading_plans import (
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
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": helpers.generation.library_versions()}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "loading_plans.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    columns = dict(PLAN_COLUMNS, flop_fraction="fraction of peak FLOP/s") if flops_per_image else PLAN_COLUMNS
    table = markdown_table(rows, columns)
    (args.output / "loading_plans.md").write_text(
        f"# Loading plans: {what}\n\n{device_name}, {size}x{size}, {steps} steps.\n\n{table}\n")
    print(table)
    print(f"Wrote {args.output / 'loading_plans.json'} and {args.output / 'loading_plans.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
