"""helpers.loading.gguf_checkpoints: the original SD3 keys are diffusers' conversion run backwards, and a
written file loads through `from_single_file`'s own key conversion."""

import pytest
import torch
from diffusers import SD3Transformer2DModel
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

from helpers.loading import gguf_checkpoints
from helpers.loading.architectures import TRANSFORMER_CONFIGS
from helpers.stand_in import TRANSFORMER_CONFIG


@pytest.mark.parametrize("config", [TRANSFORMER_CONFIG, TRANSFORMER_CONFIGS["medium"] | {"num_layers": 3}],
                         ids=["stand-in", "medium-shaped (dual attention)"])
def test_original_keys_convert_back_to_the_same_state_dict(config):
    torch.manual_seed(0)
    small = dict(config, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                 caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=8)
    transformer = SD3Transformer2DModel(**small)
    state = transformer.state_dict()
    original = gguf_checkpoints.original_sd3_state_dict(state, small["num_layers"],
                                                        tuple(small.get("dual_attention_layers", ())))
    assert "joint_blocks.0.x_block.attn.qkv.weight" in original and "final_layer.linear.weight" in original
    assert not any(k.startswith("transformer_blocks.") for k in original)
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_unknown_keys_are_refused():
    transformer = SD3Transformer2DModel(**dict(TRANSFORMER_CONFIG, sample_size=8, pos_embed_max_size=8))
    state = dict(transformer.state_dict(), extra=torch.zeros(1))
    with pytest.raises(ValueError, match="no original SD3 name"):
        gguf_checkpoints.original_sd3_state_dict(state, TRANSFORMER_CONFIG["num_layers"])


def test_written_file_loads_close_to_bf16_and_is_never_overwritten(tiny_dir, tmp_path):
    from diffusers import GGUFQuantizationConfig

    from helpers.loading import quantization_backends as backends

    bf16 = SD3Transformer2DModel.from_pretrained(tiny_dir, subfolder="transformer", dtype=torch.bfloat16)
    inputs = backends.forward_inputs(bf16.config, 64, dtype=torch.bfloat16, device="cpu", text_tokens=8)
    reference = backends.forward(bf16, inputs)
    errors = {}
    for quant in ("Q8_0", "Q4_0"):
        path = gguf_checkpoints.write_gguf(bf16, tmp_path / f"{quant}.gguf", quant)
        with pytest.raises(FileExistsError, match="nothing is overwritten"):
            gguf_checkpoints.write_gguf(bf16, path, quant)
        loaded = SD3Transformer2DModel.from_single_file(
            str(path), config=str(tiny_dir), subfolder="transformer",
            quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16), dtype=torch.bfloat16)
        assert type(loaded.transformer_blocks[0].attn.to_q.weight).__name__ == "GGUFParameter"
        errors[quant] = backends.relative_error(backends.forward(loaded, inputs), reference)
    assert 0 < errors["Q8_0"] < 0.02 < errors["Q4_0"] < 0.2
    with pytest.raises(ValueError, match="no K-quants"):
        gguf_checkpoints.write_gguf(bf16, tmp_path / "k.gguf", "Q4_K")
