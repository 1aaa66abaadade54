"""GGUF files of an SD3 transformer, written with the `gguf` package in the original checkpoint's keys.

Published SD3.5 GGUF files (city96/stable-diffusion-3.5-large-gguf, the format ComfyUI users run)
store Stability AI's original keys (`joint_blocks.N.x_block.attn.qkv.weight`, ...), which diffusers
converts on load (`convert_sd3_transformer_checkpoint_to_diffusers` in
diffusers/loaders/single_file_utils.py). `original_sd3_state_dict` is that conversion run backwards,
so a file written here goes through the same conversion as a published one. The `gguf` package
quantizes Q8_0 and Q4_0 (blocks of 32 values with one fp16 scale each), not the K-quants.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..output_folders import finished_file

GGUF_BLOCK = 32  # values per Q8_0 / Q4_0 block
GGUF_BLOCK_BYTES = {"Q8_0": 2 + 32, "Q4_0": 2 + 16}  # one fp16 scale + the packed values


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """diffusers' `swap_scale_shift` (its own inverse): the two halves of dim 0 exchanged."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def original_sd3_state_dict(state_dict: dict[str, torch.Tensor], num_layers: int,
                            dual_attention_layers=()) -> dict[str, torch.Tensor]:
    """A diffusers `SD3Transformer2DModel` state dict in the original SD3 checkpoint's keys: the
    inverse of diffusers' `convert_sd3_transformer_checkpoint_to_diffusers` (fused qkv, the last
    block's context side and the final norm with scale and shift swapped)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a transformer's state dict (transformer.state_dict()), not "
                        f"{type(state_dict).__name__}.")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a whole number of at least 1 (transformer.config.num_layers), "
                         f"not {num_layers!r}.")
    sd = dict(state_dict)

    def take(key):
        if key not in sd:
            raise ValueError(f"state_dict has no {key!r}: pass a whole SD3Transformer2DModel state dict, with the "
                             f"num_layers ({num_layers}) and dual_attention_layers ({tuple(dual_attention_layers)}) "
                             "of its config.")
        return sd.pop(key)

    out = {"pos_embed": take("pos_embed.pos_embed")}
    simple = {
        "x_embedder.proj": "pos_embed.proj", "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
        "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2", "context_embedder": "context_embedder",
        "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
        "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2", "final_layer.linear": "proj_out",
    }
    for original, ours in simple.items():
        for kind in ("weight", "bias"):
            out[f"{original}.{kind}"] = take(f"{ours}.{kind}")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = _swap_halves(take(f"norm_out.linear.{kind}"))
    for i in range(num_layers):
        b, x, c = f"transformer_blocks.{i}", f"joint_blocks.{i}.x_block", f"joint_blocks.{i}.context_block"
        last = i == num_layers - 1
        for kind in ("weight", "bias"):
            out[f"{x}.attn.qkv.{kind}"] = torch.cat([take(f"{b}.attn.to_{p}.{kind}") for p in "qkv"])
            out[f"{c}.attn.qkv.{kind}"] = torch.cat([take(f"{b}.attn.add_{p}_proj.{kind}") for p in "qkv"])
            pairs = {f"{x}.attn.proj": "attn.to_out.0", f"{x}.adaLN_modulation.1": "norm1.linear",
                     f"{x}.mlp.fc1": "ff.net.0.proj", f"{x}.mlp.fc2": "ff.net.2"}
            if not last:
                pairs.update({f"{c}.attn.proj": "attn.to_add_out", f"{c}.mlp.fc1": "ff_context.net.0.proj",
                              f"{c}.mlp.fc2": "ff_context.net.2", f"{c}.adaLN_modulation.1": "norm1_context.linear"})
            else:
                out[f"{c}.adaLN_modulation.1.{kind}"] = _swap_halves(take(f"{b}.norm1_context.linear.{kind}"))
            if i in dual_attention_layers:
                out[f"{x}.attn2.qkv.{kind}"] = torch.cat([take(f"{b}.attn2.to_{p}.{kind}") for p in "qkv"])
                pairs[f"{x}.attn2.proj"] = "attn2.to_out.0"
            for original, ours in pairs.items():
                out[f"{original}.{kind}"] = take(f"{b}.{ours}.{kind}")
        norms = {f"{x}.attn.ln_q": "attn.norm_q", f"{x}.attn.ln_k": "attn.norm_k",
                 f"{c}.attn.ln_q": "attn.norm_added_q", f"{c}.attn.ln_k": "attn.norm_added_k"}
        if i in dual_attention_layers:
            norms.update({f"{x}.attn2.ln_q": "attn2.norm_q", f"{x}.attn2.ln_k": "attn2.norm_k"})
        for original, ours in norms.items():
            if f"{b}.{ours}.weight" in sd:  # only with qk_norm
                out[f"{original}.weight"] = sd.pop(f"{b}.{ours}.weight")
    if sd:
        raise ValueError(f"{len(sd)} keys have no original SD3 name, e.g. {sorted(sd)[:3]}.")
    return out


def is_quantized_in_gguf(name: str, tensor: torch.Tensor) -> bool:
    """Which tensors the file stores quantized: the 2-D weights of Linear layers (in the original
    keys), whose rows split into whole 32-value blocks; biases, norms, convolutions and the positional
    table stay in 16 bits, as in the published files."""
    return (tensor.ndim == 2 and name.endswith(".weight") and name != "pos_embed"
            and tensor.shape[1] % GGUF_BLOCK == 0)


def write_gguf(transformer, path, quant_type: str = "Q8_0") -> Path:
    """Write `transformer` (an `SD3Transformer2DModel`) to a GGUF file at `path` with the original SD3
    keys, its Linear weights in `quant_type` ("Q8_0" or "Q4_0") and every other tensor in fp16.
    Refuses to overwrite a file that is already there. Written to a temporary name, then renamed."""
    import gguf
    import numpy as np

    if quant_type not in GGUF_BLOCK_BYTES:
        raise ValueError(f"quant_type must be one of {', '.join(GGUF_BLOCK_BYTES)} (the gguf package "
                         f"writes no K-quants), not {quant_type!r}.")
    check_transformer(transformer)
    path = Path(path)
    if os.path.lexists(path):
        raise FileExistsError(f"{path} already exists: choose a new file name (nothing is overwritten).")
    config = transformer.config
    state = original_sd3_state_dict(transformer.state_dict(), config.num_layers,
                                    tuple(config.get("dual_attention_layers") or ()))
    qtype = getattr(gguf.GGMLQuantizationType, quant_type)
    with finished_file(path) as partial, _explained_write_errors(path):  # a fresh temporary name
        writer = gguf.GGUFWriter(str(partial), arch="sd3")
        try:
            for name, tensor in state.items():
                values = tensor.detach().to("cpu", torch.float32).numpy()
                if is_quantized_in_gguf(name, tensor):
                    writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
                else:
                    writer.add_tensor(name, values.astype(np.float16))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return path


def check_transformer(transformer) -> None:
    """`transformer` must be a loaded, unquantized SD3 transformer (`pipe.transformer` of a bf16 or
    fp16 pipeline): one clear error for anything else, before any tensor is converted."""
    from .quantized_checkpoints import is_quantized

    if transformer is None or not hasattr(transformer, "state_dict") or not hasattr(transformer, "config"):
        raise TypeError(f"transformer must be an SD3 transformer (pipe.transformer of a loaded pipeline), not "
                        f"{type(transformer).__name__} {transformer!r:.60}; a released pipeline has none: load it again.")
    if is_quantized(transformer):
        raise ValueError("quantized models cannot be written as GGUF: pass the bf16 transformer (load the "
                         "pipeline without NF4/int8, e.g. load_pipeline('sd35-large', ...)).")
    if "num_layers" not in transformer.config:
        raise TypeError(f"transformer must be an SD3 transformer, not {type(transformer).__name__}.")


@contextlib.contextmanager
def _explained_write_errors(path):
    """A refused write (numpy's "N requested and M written" on a full disk) names the file and the likely cause."""
    try:
        yield
    except OSError as e:
        raise OSError(e.errno, f"{path} could not be written ({e.strerror or e}): is the disk full? Nothing was "
                               "left behind; free some space and write it again.") from e
