"""Group offloading (diffusers' `enable_group_offload`): the transformer's blocks visit the GPU one at
a time, with a CUDA stream that copies the next block while the current one computes.

What it costs, from diffusers' hooks/group_offloading.py (0.42) and bitsandbytes' nn/modules.py:

- Groups. `offload_type="block_level"` makes one group of each block of a top-level ModuleList (the
  transformer's 38 or 24 `transformer_blocks`) and one group of everything else in the model (its
  embedders, norm_out, proj_out). CLIP and T5 have no top-level ModuleList: each is one group, onloaded
  whole when it runs. The VAE names its own block modules; it is counted whole here (0.16 GiB).
- Streams (`use_stream=True`, CUDA): the next group is copied while the current one computes, so about
  one extra group is on the GPU: the denoising phase holds the transformer's other group, its two
  largest blocks, and the working memory; the text phase the two largest text encoders.
- bitsandbytes 4-bit: with a stream, a group moves only `param.data` (the packed weights, pinned copies
  kept in `cpu_param_dict`); each layer's `quant_state` (absmax per 64 values, the code table) stays
  where bitsandbytes put it, on the GPU. Without a stream the offload calls `module.to("cpu")`, whose
  `Params4bit.to` moves the quant_state too, while the onload moves `.data` only: the next forward
  would find its absmax on the CPU. So 4-bit plans always use the stream, and their quant states count
  as resident in every phase. (Read in the source; not yet measured on a GPU: benchmarks/gpu_check.py
  has the rows that measure it.)
- Host RAM: a pinned copy of every offloaded weight (`_init_cpu_param_dict`), i.e. the whole pipeline,
  as with model offload. `offload_to_disk_path` would trade that for disk reads; it is not planned here.
- Loading: bitsandbytes quantizes the transformer straight onto the GPU; `load_pipeline` group-offloads
  it before T5 loads, so the load peak is the largest 4-bit component, not their sum.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass

import torch

from .memory_model import Census, loaded_bytes

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
GROUP_OFFLOAD_OPTIONS = dict(offload_type="block_level", num_blocks_per_group=1)  # one block per group


@dataclass(frozen=True)
class GroupResidency:
    """Weights on the GPU in each phase of an image under group offloading, in bytes."""

    loading: int  # the largest component bitsandbytes quantizes on the GPU, plus every 4-bit quant state
    text: int  # the two largest text encoders (one running, one streamed in), plus the quant states
    denoise: int  # the transformer's non-block group and two blocks, plus the quant states
    decode: int  # the VAE, plus the quant states


def quant_state_bytes(count: Census) -> int:
    """Bytes of a 4-bit component's quant states: one fp32 absmax per 64 values and a 16-entry fp32
    code table per layer (what stays on the GPU when group offloading moves its packed weights)."""
    return 4 * count.linear_blocks + 16 * 4 * count.linear_layers


# The largest transformer block and the rest of the transformer (`_census_by_block` of the published
# configs, built on `meta`; kept here so planning never imports diffusers, e.g. inside `on_profile`).
# tests/loading/test_group_offload.py rebuilds them and fails if they drift.
FULL_SIZE_BLOCKS = {
    "large": (Census(linear_weights=212926464, linear_layers=14, linear_rows=72960, linear_blocks=3326976,
                     kept_fp32=0, other=73216, fixed_bytes=0),
              Census(linear_weights=39378944, linear_layers=7, linear_rows=17088, linear_blocks=615296,
                     kept_fp32=0, other=89828416, fixed_bytes=0)),
    "medium": (Census(linear_weights=101449728, linear_layers=18, linear_rows=56832, linear_blocks=1585152,
                      kept_fp32=0, other=57216, fixed_bytes=0),
               Census(linear_weights=19365888, linear_layers=7, linear_rows=10816, linear_blocks=302592,
                      kept_fp32=0, other=226603072, fixed_bytes=0)),
}


@functools.cache
def _census_by_block(config_json: str) -> tuple[Census, Census]:
    """(the largest block's census, the census of the rest) of the transformer `config_json`, built on
    the meta device (no memory, no weights)."""
    from diffusers import SD3Transformer2DModel

    from .memory_model import census

    with torch.device("meta"):
        model = SD3Transformer2DModel.from_config(json.loads(config_json))
    whole = census(model)
    blocks = [census(block) for block in model.transformer_blocks]
    fields = [f.name for f in dataclasses.fields(Census) if f.name != "layerwise_cast"]
    rest = Census(**{name: getattr(whole, name) - sum(getattr(b, name) for b in blocks) for name in fields})
    return max(blocks, key=lambda b: (b.linear_weights, b.other)), rest


def block_census(config: dict) -> tuple[Census, Census]:
    """(largest block, rest) of a transformer of shape `config`: the published families' from
    FULL_SIZE_BLOCKS, any other (the stand-in, a local folder) built on meta."""
    from .architectures import TRANSFORMER_CONFIGS

    for family, published in TRANSFORMER_CONFIGS.items():
        if dict(config) == published:
            return FULL_SIZE_BLOCKS[family]
    return _census_by_block(json.dumps(config, sort_keys=True, default=list))


def residency(config: dict, weights: dict[str, int], counts: dict[str, Census], dtype: torch.dtype,
              quantization: str | None, loaded_on_gpu: tuple[str, ...]) -> GroupResidency:
    """What group offloading keeps on the GPU in each phase, for a pipeline whose components weigh
    `weights` (as loaded), the transformer of shape `config` in `quantization`."""
    block, rest = block_census(config)
    states = sum(quant_state_bytes(counts[name]) for name in loaded_on_gpu)
    encoders = sorted((weights[name] for name in TEXT_ENCODERS if name in weights), reverse=True)
    return GroupResidency(
        loading=max((weights[name] for name in loaded_on_gpu), default=0) + states,
        text=sum(encoders[:2]) + states,
        denoise=loaded_bytes(rest, dtype, quantization) + 2 * loaded_bytes(block, dtype, quantization) + states,
        decode=weights.get("vae", 0) + states,
    )


def apply_group_offload(module_or_pipe, device: str, skip: tuple[str, ...] = ()) -> None:
    """Group-offload a model, or every model component of a pipeline but those in `skip` (already done),
    onto `device` with the options above; a CUDA stream overlaps each copy with compute."""
    from diffusers.hooks import apply_group_offloading

    onload = torch.device(device)
    options = dict(GROUP_OFFLOAD_OPTIONS, onload_device=onload, offload_device=torch.device("cpu"),
                   use_stream=onload.type == "cuda")
    components = getattr(module_or_pipe, "components", None)
    targets = [module_or_pipe] if components is None else [
        c for name, c in components.items() if isinstance(c, torch.nn.Module) and name not in skip]
    for component in targets:
        if hasattr(component, "enable_group_offload"):
            component.enable_group_offload(**options)
        else:  # transformers' models: the same hooks, applied from outside
            apply_group_offloading(module=component, **options)
