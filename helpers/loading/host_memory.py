"""Host RAM a loading plan needs while loading and while generating (the checkpoint shards read,
the CUDA libraries mapped in, offloaded weights), next to `memory_model`'s accelerator bytes."""

from __future__ import annotations

import torch

from .memory_model import Census, GiB, loaded_bytes

# ---- Host RAM while loading and generating ------------------------------------------------------------
# ASSUMPTION a GPU must measure: while loading, host RAM holds one checkpoint shard at a time
# (safetensors pages counted as resident). Shard sizes are the libraries' save_pretrained defaults,
# which the Hub checkpoints use: diffusers "10GB", transformers "5GB".
SHARD_BYTES = {"transformer": 10 * 10**9, "vae": 10 * 10**9, "text_encoder": 5 * 10**9,
               "text_encoder_2": 5 * 10**9, "text_encoder_3": 5 * 10**9}
CHECKPOINT_DTYPE = torch.bfloat16  # the Hub checkpoints are stored in half precision
# MEASURED by benchmarks/gpu_check.py (NVIDIA H200, torch 2.11, each plan in a fresh process): a load onto
# a CUDA GPU raised the process' resident memory by its largest shard plus 0.72-0.86 GiB more (the CUDA
# libraries and context it maps in): 10.17 GiB for a 10 GB shard, 5.11 GiB for a 4.7 GB one.
CUDA_LOAD_HOST_BYTES = int(0.86 * GiB)
STAGED_T5_READ = "text_encoder_3 (staged)"  # key in `reads`: T5's shard, read again for each new prompt


def staged_t5_read(count: Census) -> int:
    """Host bytes staged T5 reads at once each time it loads for a new prompt: its largest shard."""
    return min(loaded_bytes(count, CHECKPOINT_DTYPE, None), SHARD_BYTES["text_encoder_3"])


def checkpoint_read_bytes(counts: dict[str, Census], quantization: str | None, t5: str,
                          prequantized: bool) -> dict[str, int]:
    """Bytes of the checkpoint shard each component reads into host RAM at once while loading:
    the half-precision file (even when quantizing on load), or the packed pre-quantized one."""
    reads = {}
    for name, count in counts.items():
        if name == "text_encoder_3" and t5 == "dropped":
            continue
        stored = None
        if prequantized and (name == "transformer" or (name == "text_encoder_3" and t5 == "nf4")):
            stored = quantization if name == "transformer" else "nf4"
        on_disk = loaded_bytes(count, CHECKPOINT_DTYPE, stored)
        reads[name] = min(on_disk, SHARD_BYTES[name])
    return reads


def host_bytes(offload: str, device: str, weights: dict[str, int], reads: dict[str, int],
               working: int = 0, loaded_on_gpu: tuple[str, ...] = (), staged_weights: int = 0) -> dict[str, int]:
    """Host RAM a plan needs, in bytes: {"loading": ..., "generating": ...}.

    MEASURED (H200 rows, each in a fresh process): a load onto a CUDA GPU held its largest checkpoint
    shard plus the CUDA libraries, with or without model offload. Components loaded to the CPU for
    offloading stay memory-mapped (safetensors' file pages, not read until used), so NF4 + model offload
    peaked at 10.08 GiB while loading, like NF4 without offload. `enable_model_cpu_offload` then moves
    the parts quantized on the GPU (`loaded_on_gpu`) into host RAM.
    ASSUMPTION (not measured): while generating with model or sequential offload every component ends
    up in host RAM (accelerate copies each back after use). On the CPU or Apple's unified memory the
    weights and the `working` memory are in RAM anyway. On Apple Silicon a load holds the weights once:
    safetensors memory-maps each shard, whose pages the OS reclaims as the weights are copied into the
    Metal buffers (counting the largest shard on top of every weight counted the same data twice).
    Staged T5 (`reads[STAGED_T5_READ]`, `staged_weights`): each new prompt loads T5 again while
    generating, reading one shard at a time (and, on unified memory, holding T5 beside the rest)."""
    reads = dict(reads)
    staged_read = reads.pop(STAGED_T5_READ, 0)
    total, shard = sum(weights.values()), max(reads.values(), default=0)
    cuda = CUDA_LOAD_HOST_BYTES if str(device).startswith("cuda") else 0
    if device == "mps":  # the shard's pages are the file's (memory-mapped, reclaimable), not a second copy
        return {"loading": max(total, shard), "generating": total + max(working, staged_weights + staged_read)}
    if device == "cpu":
        return {"loading": total + shard, "generating": total + max(working, staged_weights + staged_read)}
    if offload in ("model", "sequential", "group"):  # group: a pinned copy of every offloaded weight
        moved = sum(weights.get(name, 0) for name in loaded_on_gpu)
        return {"loading": max(shard, moved) + cuda, "generating": total + cuda + staged_read}
    return {"loading": shard + cuda, "generating": cuda + staged_read}
