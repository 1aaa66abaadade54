"""The fast plan: compile the transformer's repeated blocks and keep the VAE in channels-last.

Regional compilation: SD3's transformer is 24-38 identical blocks, so compiling each block (not the
whole model) lets torch.compile reuse one compiled graph for all of them, which keeps compile time
short. diffusers' `compile_repeated_blocks()` would do this, but needs `_repeated_blocks`, which
`SD3Transformer2DModel` does not declare (diffusers 0.42), so the blocks are compiled here one by one.

Deliberately left out: diffusers' `fuse_qkv_projections()`. Its `FusedJointAttnProcessor2_0` skips
the RMS query/key norms SD3.5 uses (`qk_norm="rms_norm"`), so it silently changes the images;
tests/test_speedups.py shows it. It also keeps the unfused weights, costing memory.
"""

from __future__ import annotations

import torch


def compile_transformer_blocks(transformer, **compile_options) -> int:
    """Compile every transformer block in place (`nn.Module.compile`, so weights keep their names
    and hooks keep working); returns how many. Compilation itself happens at the first call."""
    blocks = list(transformer.transformer_blocks)
    for block in blocks:
        block.compile(**compile_options)
    return len(blocks)


def make_fast(pipe) -> list[str]:
    """Apply the fast plan to a loaded pipeline; return what was done, one line per change.

    The first image after this pays the compile time (tens of seconds on a GPU); every later
    image at the same size runs the compiled blocks. A new image size compiles once more."""
    if getattr(pipe, "transformer", None) is None:
        raise ValueError("This pipeline has no transformer (it was released?): load it again.")
    done = [f"torch.compile of the transformer's {compile_transformer_blocks(pipe.transformer)} blocks "
            "(regional: one graph reused by every block)"]
    if getattr(pipe, "vae", None) is not None:
        pipe.vae.to(memory_format=torch.channels_last)
        done.append("VAE in channels-last memory format (faster convolutions on GPUs)")
    return done
