"""helpers/loading/fused_qkv.py: one QKV matmul per attention, with SD3.5's query/key RMS norms kept."""

import copy

import torch

from helpers.loading import fast_plan
from helpers.loading.fused_qkv import UNFUSED, QKNormFusedJointAttnProcessor, fuse_qkv


def test_fused_qkv_keeps_the_output_and_drops_the_unfused_layers(tiny_pipe):
    """The fused transformer computes what the unfused one does (diffusers' own fused processor, which
    skips qk-norm, does not), and holds no more parameters than before."""
    transformer = copy.deepcopy(tiny_pipe.transformer)
    assert transformer.config.qk_norm == "rms_norm"
    inputs = fast_plan.transformer_inputs(transformer.config, size=64, dtype=transformer.dtype)
    before_count = sum(p.numel() for p in transformer.parameters())
    with torch.no_grad():
        before = transformer(**inputs).sample
        assert fuse_qkv(transformer) == len(transformer.transformer_blocks)
        after = transformer(**inputs).sample
    assert torch.allclose(after, before, atol=1e-5)
    attentions = [block.attn for block in transformer.transformer_blocks]
    assert all(isinstance(a.processor, QKNormFusedJointAttnProcessor) for a in attentions)
    assert not any(hasattr(a, name) for a in attentions for name in UNFUSED)
    assert sum(p.numel() for p in transformer.parameters()) == before_count
