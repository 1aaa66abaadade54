"""The fast plan on the stand-in: compiled blocks give the plain plan's image; fused QKV would not."""

import numpy as np
import pytest
import torch

import helpers
from helpers.loading.fast_plan import compile_transformer_blocks, make_fast

# Stated tolerance: the fast plan's image may differ from the plain one by at most 2/255 per pixel
# (inductor may reorder floating-point sums). On the stand-in it is in fact identical.
FAST_TOLERANCE = 2


def pixels(result):
    return np.asarray(result.image).astype(int)


def test_fast_plan_gives_the_plain_image_within_tolerance(tiny_dir):
    plain = pixels(helpers.generate(helpers.load_pipeline("tiny"), "a red fox in the snow", seed=3))
    pipe = helpers.load_pipeline("tiny", fast=True)
    blocks = pipe.transformer.transformer_blocks
    assert all(block._compiled_call_impl is not None for block in blocks)  # really compiled
    result = helpers.generate(pipe, "a red fox in the snow", seed=3)
    assert np.abs(pixels(result) - plain).max() <= FAST_TOLERANCE
    assert result.recipe["fast"] is True and pipe.load_info.plan.fast is True  # the recipe says how it ran
    # Compiling in place keeps the weights' names: save_pretrained / save_quantized still work.
    assert not any("_orig_mod" in name for name in pipe.transformer.state_dict())
    helpers.release_current_pipeline()


def test_fused_qkv_projections_would_change_the_image(tiny_pipe):
    """Why make_fast leaves diffusers' fuse_qkv_projections() out: its fused processor skips
    SD3.5's RMS query/key norms, so the transformer computes something else."""
    transformer = tiny_pipe.transformer
    assert transformer.config.qk_norm == "rms_norm"
    torch.manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 8, 8),
        encoder_hidden_states=torch.randn(1, 12, transformer.config.joint_attention_dim),
        pooled_projections=torch.randn(1, transformer.config.pooled_projection_dim),
        timestep=torch.tensor([500.0]),
    )
    with torch.no_grad():
        before = transformer(**inputs).sample
        transformer.fuse_qkv_projections()
        after = transformer(**inputs).sample
    assert (after - before).abs().max() > 1e-3


def test_make_fast_refuses_a_released_pipeline(tiny_pipe):
    helpers.release_pipeline(tiny_pipe)
    with pytest.raises(ValueError, match="released"):
        make_fast(tiny_pipe)


def test_compile_counts_every_block(tiny_pipe):
    assert compile_transformer_blocks(tiny_pipe.transformer) == len(tiny_pipe.transformer.transformer_blocks)


def test_fast_must_be_a_bool_and_is_checked_before_loading(tiny_dir):
    helpers.release_current_pipeline()
    with pytest.raises(ValueError, match="fast must be True or False"):
        helpers.load_pipeline("tiny", fast="yes")
