"""SD3.5's full-size architectures, from the published configs, built with or without weights.

`build_component("transformer", "large")` inside `with torch.device("meta"):` gives the real
module tree at full size with no memory and no weights: what `helpers.loading.memory_model` counts to
know every component's exact bytes, and what benchmarks/loading_plans.py fills with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

# Published configs (the Hugging Face model repositories' config.json files).
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

COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")
FAMILIES = tuple(TRANSFORMER_CONFIGS)
# Which architecture each preset loads (Large Turbo is Large's architecture, distilled).
PRESET_FAMILY = {"sd35-large": "large", "sd35-large-nf4": "large", "sd35-large-8bit": "large",
                 "sd35-large-turbo": "large", "sd35-large-turbo-nf4": "large", "sd35-medium": "medium"}


def build_component(name: str, family: str = "large"):
    """One full-size SD3.5 component, built on the current default device (use `torch.device("meta")`
    for shapes only) with freshly initialised weights."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    if family not in TRANSFORMER_CONFIGS:
        raise ValueError(f"Unknown family {family!r}. Use one of: {', '.join(FAMILIES)}.")
    if name == "transformer":
        return SD3Transformer2DModel(**TRANSFORMER_CONFIGS[family])
    if name == "vae":
        return AutoencoderKL(**VAE)
    if name in ("text_encoder", "text_encoder_2"):
        return CLIPTextModelWithProjection(CLIPTextConfig(**(CLIP_L if name == "text_encoder" else CLIP_G)))
    if name == "text_encoder_3":
        return T5EncoderModel(T5Config(**T5_XXL))
    raise ValueError(f"Unknown component {name!r}. Use one of: {', '.join(COMPONENTS)}.")


def build_from_folder(folder, name: str):
    """The component `name` of a pipeline saved in `folder` (e.g. the stand-in), built from its
    config.json alone on the current default device; no weights are read."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    sub = Path(folder) / name
    if name == "transformer":
        return SD3Transformer2DModel.from_config(json.loads((sub / "config.json").read_text()))
    if name == "vae":
        return AutoencoderKL.from_config(json.loads((sub / "config.json").read_text()))
    if name in ("text_encoder", "text_encoder_2"):
        return CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(sub))
    if name == "text_encoder_3":
        return T5EncoderModel(T5Config.from_pretrained(sub))
    raise ValueError(f"Unknown component {name!r}. Use one of: {', '.join(COMPONENTS)}.")
