"""Fused QKV for SD3's joint attention that keeps SD3.5's query/key RMS norms.

diffusers' `fuse_qkv_projections()` swaps in `FusedJointAttnProcessor2_0`, which skips `norm_q`,
`norm_k`, `norm_added_q` and `norm_added_k` (diffusers 0.42), so on SD3.5 (`qk_norm="rms_norm"`) it
changes the images. Here each attention keeps diffusers' own fused layers (`Attention.fuse_projections`:
one `to_qkv` and one `to_added_qkv` matmul instead of three each), drops the unfused copies (no extra
memory), and runs `QKNormFusedJointAttnProcessor`: `JointAttnProcessor2_0` with the fused matmuls.
A GPU-check row ("FP8 fast + fused QKV") measures whether the larger matmuls pay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

UNFUSED = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")


class QKNormFusedJointAttnProcessor:
    """diffusers' `JointAttnProcessor2_0` (SD3), with `to_qkv` / `to_added_qkv` in place of the three
    projections each; the query/key norms are applied as there."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        residual = hidden_states
        batch_size = hidden_states.shape[0]
        heads = attn.heads

        def split(projected):
            query, key, value = projected.chunk(3, dim=-1)
            head_dim = key.shape[-1] // heads
            return [t.view(batch_size, -1, heads, head_dim).transpose(1, 2) for t in (query, key, value)]

        query, key, value = split(attn.to_qkv(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if encoder_hidden_states is not None:
            context_query, context_key, context_value = split(attn.to_added_qkv(encoder_hidden_states))
            if attn.norm_added_q is not None:
                context_query = attn.norm_added_q(context_query)
            if attn.norm_added_k is not None:
                context_key = attn.norm_added_k(context_key)
            query = torch.cat([query, context_query], dim=2)
            key = torch.cat([key, context_key], dim=2)
            value = torch.cat([value, context_value], dim=2)

        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, heads * query.shape[-1])
        hidden_states = hidden_states.to(query.dtype)
        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = (hidden_states[:, : residual.shape[1]],
                                                    hidden_states[:, residual.shape[1]:])
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        return (hidden_states, encoder_hidden_states) if encoder_hidden_states is not None else hidden_states


@torch.no_grad()
def fuse_qkv(transformer) -> int:
    """Fuse every joint attention of an `SD3Transformer2DModel` in place (qk-norm kept, the unfused
    layers removed); returns how many attentions were fused. Call it before quantizing or compiling."""
    from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0

    fused = 0
    for module in transformer.modules():
        if not isinstance(module, Attention) or not isinstance(module.processor, JointAttnProcessor2_0):
            continue
        if module.is_cross_attention:  # SD3's attentions are self-attention (plus the joint context)
            raise ValueError("fuse_qkv expects SD3's joint self-attention, not cross-attention.")
        module.fuse_projections()
        for name in UNFUSED:
            if getattr(module, name, None) is not None:
                delattr(module, name)
        module.set_processor(QKNormFusedJointAttnProcessor())
        fused += 1
    return fused
