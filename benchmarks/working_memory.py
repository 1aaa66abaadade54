"""Measure the working memory that helpers.loading.memory_model assumes, on a CUDA GPU.

    python benchmarks/working_memory.py [--family large] [--size 1024]

Builds the full-size transformer and VAE with random weights straight on the GPU (no download),
runs one classifier-free-guidance step (batch 2) and one VAE decode under each SDPA kernel the
GPU has, and prints the peak memory allocated above the weights next to the model's
figure for it (ACTIVATION_WIDTHS, MATH_ATTENTION_COPIES, VAE_DECODE_TENSORS).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("large", "medium"), default="large")
    parser.add_argument("--size", type=int, default=1024, help="pixels, square")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("working memory: skipped, this machine has no CUDA GPU (peak GPU memory needs one).")
        return 0
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from helpers.loading import memory_model
    from helpers.loading.architectures import TRANSFORMER_CONFIGS, build_component

    gib = memory_model.GiB
    free, total = torch.cuda.mem_get_info()
    rows = {"device": torch.cuda.get_device_name(), "cuda_context_gib": (total - free) / gib}
    config = TRANSFORMER_CONFIGS[args.family]
    latent = args.size // 8
    tokens = (latent // config["patch_size"]) ** 2 + memory_model.TEXT_TOKENS

    def peak(fn) -> float:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / gib

    kernels = {"flash": SDPBackend.FLASH_ATTENTION, "memory-efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH}
    dtype = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float16
    default = torch.get_default_dtype()
    with torch.no_grad():
        torch.set_default_dtype(dtype)
        try:
            with torch.device("cuda"):
                transformer = build_component("transformer", args.family).eval()
        finally:
            torch.set_default_dtype(default)
        x = torch.randn(2, 16, latent, latent, device="cuda", dtype=dtype)
        text = torch.randn(2, memory_model.TEXT_TOKENS, config["joint_attention_dim"], device="cuda", dtype=dtype)
        pooled = torch.randn(2, config["pooled_projection_dim"], device="cuda", dtype=dtype)
        steps = torch.tensor([500.0, 500.0], device="cuda")
        for name, backend in kernels.items():
            try:
                with sdpa_kernel([backend]):
                    rows[f"transformer_{name}_gib"] = peak(lambda: transformer(
                        hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=steps))
            except RuntimeError as e:
                rows[f"transformer_{name}_gib"] = f"unavailable: {e}"[:80]
            working = memory_model.phase_working(config, args.size, dtype, name)
            rows[f"model_{name}_gib (denoising step)"] = working.denoise / gib
            rows["model_decode_gib"] = working.decode / gib
        transformer = None  # free its memory before the VAE is measured
        torch.set_default_dtype(dtype)
        try:
            with torch.device("cuda"):
                vae = build_component("vae").eval()
        finally:
            torch.set_default_dtype(default)
        z = torch.randn(1, 16, latent, latent, device="cuda", dtype=dtype)
        rows["vae_decode_gib"] = peak(lambda: vae.decode(z))
    rows["tokens"] = tokens
    rows["dtype"] = str(dtype)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
