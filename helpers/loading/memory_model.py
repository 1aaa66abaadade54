"""Exact bytes of every SD3.5 component as loaded, for each precision and quantization.

A `Census` counts what decides a component's bytes: the weights of the Linear layers that
bitsandbytes quantizes, the layers transformers keeps in fp32 under fp16 (T5's `wo`), and
everything else (norms, embeddings, convolutions, biases, buffers). `loaded_bytes` turns it into
bytes by the libraries' rules:

- bf16/fp16/fp32: every floating tensor in the dtype; `_keep_in_fp32_modules` stay fp32 under fp16.
- NF4 (bitsandbytes): each quantized weight packs two values per byte (uint8, numel/2), plus one
  fp32 absmax per block of 64 values and a 16-value fp32 code table per layer (no double
  quantization); the modules left unquantized keep the rules above.
- int8 (bitsandbytes LLM.int8): one byte per weight plus one fp32 scale per output row (SCB).
- torchao int8 weight-only and float8 (per-row scales): the same count, one byte per weight plus
  one fp32 scale per output row (torchao's `Int8Tensor` / `Float8Tensor`: `qdata` and `scale`).
- GGUF Q8_0 / Q4_0: 34 / 18 bytes per block of 32 weights (an fp16 scale and the packed values);
  every other tensor in `dtype` (diffusers' GGUF loader).
- fp8 layerwise storage (`enable_layerwise_casting`): one byte per value of the layers it casts,
  the ones its skip patterns leave out (norms, the positional embedding, ...) in `dtype`.
- fp8 (torchao float8, the fast plan on sm_89+: `fast_plan.quantize_fp8`): one byte per weight plus
  one fp32 scale per output row ("float8", sm_90+) or per layer ("float8-tensor", sm_89); biases keep the dtype.

The full-size counts (`FULL_SIZE`) were taken from the published architectures built on the
`meta` device (`census(architectures.build_component(...))`); a test rebuilds them and checks.
The same rules are checked byte for byte on the stand-in, which bitsandbytes really quantizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .architectures import TRANSFORMER_CONFIGS
from .arguments import check_dtype, check_working_memory_args

GiB = 1024**3
NF4_BLOCK = 64  # bitsandbytes' default 4-bit blocksize (diffusers and transformers keep it)
NF4_CODE_BYTES = 16 * 4  # the 16-entry fp32 NF4 code table each quantized layer holds


@dataclass(frozen=True)
class Census:
    """What decides one component's bytes (counts of values, not bytes)."""

    linear_weights: int  # values in the weights of Linear layers bitsandbytes would quantize
    linear_layers: int  # how many such layers
    linear_rows: int  # their output features in total (int8 keeps one fp32 scale per row)
    linear_blocks: int  # their 64-value blocks in total (NF4 keeps one fp32 absmax per block)
    kept_fp32: int  # values in `_keep_in_fp32_modules` (fp32 under fp16, never quantized)
    other: int  # every other floating value: norms, embeddings, convs, biases, float buffers
    fixed_bytes: int  # non-floating buffers (e.g. CLIP's int64 position ids), bytes as they are
    layerwise_cast: int = 0  # floating values diffusers' enable_layerwise_casting stores in fp8 (diffusers models)

    @property
    def parameters(self) -> int:
        return self.linear_weights + self.kept_fp32 + self.other


def _matches(name: str, keys) -> bool:
    return any(name == k or name.endswith("." + k) or name.startswith(k + ".") or f".{k}." in name for k in keys)


def _not_converted(module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules bitsandbytes leaves unquantized, modules kept in fp32 under fp16) for `module`,
    following diffusers' and transformers' quantizers (keep-in-fp32 modules are never quantized;
    transformers also skips the last parameter's module and tied weights)."""
    keep = tuple(getattr(type(module), "_keep_in_fp32_modules", None) or ())
    skip = list(keep)
    if type(module).__module__.startswith("transformers."):
        names = [n for n, _ in module.named_parameters()]
        if names:
            skip.append(names[-1].rsplit(".", 1)[0])
        tied = getattr(module, "all_tied_weights_keys", None) or {}
        skip += [k.removesuffix(".weight") for k in list(tied) + list(tied.values())]
    is_transformers = type(module).__module__.startswith("transformers.")
    return tuple(skip), keep if is_transformers else ()


def census(module: torch.nn.Module) -> Census:
    """Count `module` (full precision, on any device, `meta` included) for `loaded_bytes`."""
    skip, keep = _not_converted(module)
    weights = layers = rows = blocks = kept = other = fixed = 0
    seen: set[int] = set()
    for name, sub in module.named_modules():
        tensors = [(n, t) for n, t in sub.named_parameters(recurse=False)] + list(sub.named_buffers(recurse=False))
        for tensor_name, tensor in tensors:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if not tensor.is_floating_point():
                fixed += tensor.numel() * tensor.element_size()
            elif keep and _matches(name, keep):
                kept += tensor.numel()
            elif isinstance(sub, torch.nn.Linear) and tensor_name == "weight" and not _matches(name, skip):
                weights += tensor.numel()
                layers += 1
                rows += sub.out_features
                blocks += -(-tensor.numel() // NF4_BLOCK)
            else:
                other += tensor.numel()
    return Census(weights, layers, rows, blocks, kept, other, fixed, _layerwise_cast_values(module))


def _layerwise_cast_values(module) -> int:
    """Floating values `module.enable_layerwise_casting()` would store in its storage dtype: those of the
    layer types diffusers casts, unless the layer's name or a parent's matches a skip pattern (the
    rule of diffusers.hooks.layerwise_casting, with the patterns `enable_layerwise_casting` passes)."""
    import re

    if not hasattr(module, "enable_layerwise_casting"):
        return 0
    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    patterns = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    patterns += tuple(getattr(module, "_skip_layerwise_casting_patterns", None) or ())
    total = 0
    for name, sub in module.named_modules():
        if not name or not isinstance(sub, _GO_LC_SUPPORTED_PYTORCH_LAYERS):
            continue
        parts = name.split(".")
        prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.search(p, prefix) for p in patterns for prefix in prefixes):
            continue
        total += sum(t.numel() for t in [*sub.parameters(), *sub.buffers()] if t.is_floating_point())
    return total


def check_census(counts) -> None:
    if not isinstance(counts, Census):
        raise TypeError(f"counts must be a memory_model.Census (e.g. FULL_SIZE['large']['transformer'], "
                        f"or census(module)), not {type(counts).__name__} {counts!r:.80}.")


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.tensor([], dtype=dtype).element_size()


QUANTIZATIONS = (None, "nf4", "int8", "torchao-int8", "float8", "float8-tensor", "gguf-q8_0", "gguf-q4_0",
                 "fp8-layerwise")
GGUF_BLOCK_BYTES = {"gguf-q8_0": 34, "gguf-q4_0": 18}  # per block of 32 weights: fp16 scale + values


def loaded_bytes(counts: Census, dtype: torch.dtype, quantization: str | None = None) -> int:
    """Bytes of a component with `counts` loaded in `dtype`, its Linear layers in `quantization`
    (one of `QUANTIZATIONS`: None, bitsandbytes "nf4"/"int8", torchao "torchao-int8"/"float8",
    "gguf-q8_0"/"gguf-q4_0", "fp8-layerwise" storage, or the fast plan's "float8-tensor": one scale per layer)."""
    check_census(counts)
    check_dtype(dtype)
    size = dtype_bytes(dtype)
    kept = counts.kept_fp32 * (4 if dtype == torch.float16 else size)
    rest = counts.other * size + counts.fixed_bytes + kept
    if quantization is None:
        return counts.linear_weights * size + rest
    if quantization == "nf4":
        packed = (counts.linear_weights + 1) // 2
        return packed + 4 * counts.linear_blocks + NF4_CODE_BYTES * counts.linear_layers + rest
    if quantization in ("int8", "torchao-int8", "float8"):
        return counts.linear_weights + 4 * counts.linear_rows + rest
    if quantization == "float8-tensor":
        return counts.linear_weights + 4 * counts.linear_layers + rest
    if quantization in GGUF_BLOCK_BYTES:
        return -(-counts.linear_weights // 32) * GGUF_BLOCK_BYTES[quantization] + rest
    if quantization == "fp8-layerwise":
        return counts.layerwise_cast + (counts.parameters - counts.layerwise_cast) * size + counts.fixed_bytes
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {quantization!r}.")


def pipeline_bytes(
    counts: dict[str, Census], dtype: torch.dtype, quantization: str | None = None, t5: str = "full"
) -> dict[str, int]:
    """Bytes of every component of a pipeline with `counts`: the transformer in `quantization`,
    T5 "full", "nf4" or "dropped", the CLIPs and the VAE in `dtype`."""
    sizes = {}
    for name, count in counts.items():
        if name == "transformer":
            sizes[name] = loaded_bytes(count, dtype, quantization)
        elif name == "text_encoder_3":
            if t5 != "dropped":
                sizes[name] = loaded_bytes(count, dtype, "nf4" if t5 == "nf4" else None)
        else:
            sizes[name] = loaded_bytes(count, dtype, None)
    return sizes


def folder_census(folder) -> dict[str, Census]:
    """The census of every component saved in a pipeline folder (e.g. the stand-in), from its
    config files alone: the components are built on the `meta` device, no weights are read."""
    from .architectures import COMPONENTS, build_from_folder

    counts = {}
    for name in COMPONENTS:
        if (Path(folder) / name / "config.json").is_file():
            with torch.device("meta"):
                counts[name] = census(build_from_folder(folder, name))
    return counts


def meta_census(family: str) -> dict[str, Census]:
    """Rebuild `FULL_SIZE[family]` from the published architectures on `meta` (a few seconds)."""
    from .architectures import COMPONENTS, build_component

    counts = {}
    for name in COMPONENTS:
        with torch.device("meta"):
            counts[name] = census(build_component(name, family))
    return counts


# census() of the published architectures (helpers.loading.architectures) built on `meta`;
# tests/test_memory_model.py rebuilds them and fails if they drift.
_CLIP_L = Census(linear_weights=84934656, linear_layers=72, linear_rows=82944,
                 linear_blocks=1327104, kept_fp32=0, other=38715648, fixed_bytes=616)
_CLIP_G = Census(linear_weights=629145600, linear_layers=192, linear_rows=368640,
                 linear_blocks=9830400, kept_fp32=0, other=65514240, fixed_bytes=616)
_T5_XXL = Census(linear_weights=3623878656, linear_layers=144, linear_rows=884736,
                 linear_blocks=56623104, kept_fp32=1006632960, other=131799040, fixed_bytes=0)
_VAE = Census(linear_weights=2097152, linear_layers=8, linear_rows=4096,
              linear_blocks=32768, kept_fp32=0, other=81722531, fixed_bytes=0, layerwise_cast=83780003)
FULL_SIZE: dict[str, dict[str, Census]] = {
    "large": {
        "transformer": Census(linear_weights=8053694464, linear_layers=536, linear_rows=2765248,
                              linear_blocks=125838976, kept_fp32=0, other=92586304, fixed_bytes=0,
                              layerwise_cast=5369960576),
        "text_encoder": _CLIP_L, "text_encoder_2": _CLIP_G, "text_encoder_3": _T5_XXL, "vae": _VAE,
    },
    "medium": {
        "transformer": Census(linear_weights=2241822720, linear_layers=392, linear_rows=1241152,
                              linear_blocks=35028480, kept_fp32=0, other=227841216, fixed_bytes=0,
                              layerwise_cast=1475695104),
        "text_encoder": _CLIP_L, "text_encoder_2": _CLIP_G, "text_encoder_3": _T5_XXL, "vae": _VAE,
    },
}


# ---- Working memory: activations on top of the weights, from the shapes --------------------------
# Each figure is a named constant so a GPU check can compare it. MEASURED ones come from the committed
# H200 rows (benchmarks/results/nvidia-h200.json: torch 2.11, diffusers 0.42.1, random full-size
# weights, SD3.5 Large at 1024x1024, 28 steps, CFG); none was measured on a T4, an 8-12 GB card or MPS.
TEXT_TOKENS = 77 + 256  # CLIP's 77 + T5's 256 (max_sequence_length): the joint attention's text side
CFG_BATCH = 2  # classifier-free guidance runs the unconditional and conditional halves together
ACTIVATION_WIDTHS = 13  # MEASURED: hidden-size-wide activations alive at once in one MMDiT step (H200:
#   0.50 GiB above the weights while denoising, Large at 1024x1024, batch 2, i.e. ~12.6 widths)
MATH_ATTENTION_COPIES = 4.5  # MEASURED on CUDA's math kernel only: attention-matrix-sized tensors held at
#   once (H200: 13.0 GiB for Large at 1024x1024, batch 2, i.e. 4.5 x 2 x 38 x 4429^2 x 2 bytes)
MPS_ATTENTION_COPIES = 2  # ASSUMPTION, not measured. PyTorch's Attention.mm (sdpa_general_mps: MPSGraph matmul ->
#   float32 softmax -> matmul) holds float32 scores and a bf16 softmax, 3 bf16 copies per query row unless fused;
#   newer builds split bf16 queries into 3068-row windows (2.1 copies for 4429 rows). "sdpa_vector" serves decoding only
VAE_DECODE_TENSORS = 5  # MEASURED: full-resolution 256-channel tensors alive at once in the VAE decoder
#   (H200: 2.39 GiB above the weights at 1024x1024, ~4.75 tensors)
VAE_DECODE_CHANNELS = 256  # the widest full-resolution activation of the SD3 VAE decoder (after upsampling)
VAE_TILED_RGB_COPIES = 4  # tiled decode: the overlapping RGB tiles (16/9 of the image), blended rows, the image
TEXT_ENCODING_BYTES = int(0.05 * GiB)  # MEASURED: above T5 + CLIP-G while encoding (H200, model offload:
#   10.21 GiB peak allocated against 10.16 GiB of those two encoders' weights)
# PyTorch's CUDA caching allocator reserves more than the tensors hold (cached blocks of earlier steps,
# rounding, fragmentation); a plan must fit what is reserved. MEASURED on the H200 rows: reserved minus
# allocated was 0.90-1.01 x the working memory in every row without offload (2.14-2.42 GiB at the VAE
# decode), and 0.12 GiB where text encoding set the peak (model offload: 10.33 reserved, 10.21 allocated).
RESERVED_OVER_WORKING = 1.0
RESERVED_BASE_BYTES = int(0.125 * GiB)


@dataclass(frozen=True)
class Working:
    """Accelerator bytes above the resident weights in each phase of one image (allocated, not reserved)."""

    text: int  # encoding the prompt and the negative prompt
    denoise: int  # one transformer step over the image and text tokens (CFG batch)
    decode: int  # the VAE decoding the latents to pixels
    text_weights: int = 0  # weights loaded for the text phase only and freed before denoising (staged T5)

    @property
    def peak(self) -> int:
        return max(self.text, self.denoise, self.decode)


MAX_SIDE = max(c["pos_embed_max_size"] * 16 for c in TRANSFORMER_CONFIGS.values())  # px; 16 = 8 x patch of 2


def image_size(size) -> tuple[int, int]:
    """(height, width) from a square size in pixels or a (height, width) pair, each side a multiple of
    16 (the latent's patches) and at most MAX_SIDE (beyond, the position table has no entry)."""
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"size must be a positive number of pixels or a (height, width) pair, not {size!r:.60}.")
    if any(v % 16 or v > MAX_SIDE for v in pair):
        raise ValueError(f"size must be a multiple of 16 pixels (the VAE's 8 x the patch's 2) of at most {MAX_SIDE} "
                         f"a side (SD3.5's largest position table), not {size!r:.60}: e.g. 1024 or (768, 1344).")
    return pair


def phase_working(transformer_config, size=1024, dtype: torch.dtype = torch.bfloat16,
                  kernel: str = "flash", vae_tile: int | None = None) -> Working:
    """Working memory of one image of `size` (pixels, square, or (height, width)) in each phase.
    `kernel`: "flash", "memory-efficient", "math" (CUDA's, holds the attention matrix) or "mps".
    `vae_tile`: the tile side in pixels when the VAE decodes in tiles (`vae_decode.enable_vae_tiling`):
    the decoder then holds one tile's activations, plus every decoded RGB tile until they are blended.
    `transformer_config`: a family name ("large", "medium") or a transformer config dict."""
    check_working_memory_args(transformer_config, size, dtype, kernel)
    config = TRANSFORMER_CONFIGS[transformer_config] if isinstance(transformer_config, str) else transformer_config
    height, width = image_size(size)
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    size_bytes = dtype_bytes(dtype)
    patch = 8 * config["patch_size"]
    tokens = (height // patch) * (width // patch) + TEXT_TOKENS
    denoise = CFG_BATCH * tokens * hidden * size_bytes * ACTIVATION_WIDTHS
    copies = {"math": MATH_ATTENTION_COPIES, "mps": MPS_ATTENTION_COPIES}.get(kernel, 0)
    denoise += copies * CFG_BATCH * config["num_attention_heads"] * tokens**2 * size_bytes
    tile_h, tile_w = (height, width) if vae_tile is None else (min(height, vae_tile), min(width, vae_tile))
    if (tile_h, tile_w) == (height, width):  # diffusers tiles only a latent larger than the tile
        decode = VAE_DECODE_TENSORS * VAE_DECODE_CHANNELS * height * width * size_bytes
    else:  # one tile's activations, then the decoded RGB tiles (overlapping by a quarter), rows and image
        decode = VAE_DECODE_TENSORS * VAE_DECODE_CHANNELS * tile_h * tile_w * size_bytes
        decode += VAE_TILED_RGB_COPIES * 3 * height * width * size_bytes
    return Working(TEXT_ENCODING_BYTES, int(denoise), int(decode))


def working_bytes(transformer_config, size=1024, dtype: torch.dtype = torch.bfloat16,
                  kernel: str = "flash", vae_tile: int | None = None) -> int:
    """Peak working memory of one image on top of the weights (the largest phase of `phase_working`)."""
    return phase_working(transformer_config, size, dtype, kernel, vae_tile).peak


def _text_pair(weights: dict[str, int]) -> int:
    """Text encoders resident together under model offload: accelerate's hooks offload a model only
    when the next in the chain runs, so the last encoder (T5, else CLIP-G) stays on the GPU while the
    negative prompt's pass loads each other encoder beside it."""
    encoders = [weights[n] for n in ("text_encoder", "text_encoder_2", "text_encoder_3") if n in weights]
    if not encoders:
        return 0
    last = encoders.pop()
    return last + max(encoders, default=0)


def gpu_phases(offload: str, weights: dict[str, int], working: Working,
               loaded_on_gpu: tuple[str, ...] = (), groups=None) -> dict[str, int]:
    """Allocated accelerator bytes in each phase: "loading", "text", "denoise", "decode".

    No offload: every weight stays resident. Model offload: the text encoders of `_text_pair`, then
    the transformer, then the VAE. Sequential: one layer at a time (counted as 0). Staged T5
    (`working.text_weights`): T5 is loaded beside them for the text phase only. `loaded_on_gpu`:
    components bitsandbytes quantizes straight onto the GPU while loading, all at once, before
    `enable_model_cpu_offload` moves them to the CPU (so an offload plan's load peak is their sum).
    Group offload: the weights `groups` (a `group_offload.GroupResidency`) keeps on the GPU per phase."""
    total = sum(weights.values())
    if offload == "none":
        resident = {"text": total, "denoise": total, "decode": total}
        loading = total
    elif offload == "group":
        if groups is None:
            raise ValueError("offload='group' needs `groups` (group_offload.residency) to cost its phases.")
        resident = {"text": groups.text, "denoise": groups.denoise, "decode": groups.decode}
        loading = groups.loading
    elif offload == "model":
        resident = {"text": _text_pair(weights), "denoise": weights.get("transformer", 0),
                    "decode": weights.get("vae", 0)}
        loading = sum(weights.get(name, 0) for name in loaded_on_gpu)
    else:
        resident = {"text": 0, "denoise": 0, "decode": 0}
        loading = sum(weights.get(name, 0) for name in loaded_on_gpu)
    phases = {"loading": loading}
    phases.update({phase: resident[phase] + getattr(working, phase) for phase in resident})
    phases["text"] += working.text_weights
    return phases


def reserved_phases(phases: dict[str, int], working: Working, weights_only=("loading",)) -> dict[str, int]:
    """What PyTorch's CUDA caching allocator reserves in each phase of `gpu_phases`: the allocated
    bytes plus RESERVED_OVER_WORKING x that phase's working memory plus RESERVED_BASE_BYTES."""
    return {phase: bytes_ + RESERVED_BASE_BYTES
            + (0 if phase in weights_only else int(RESERVED_OVER_WORKING * getattr(working, phase)))
            for phase, bytes_ in phases.items()}


def as_working(working) -> Working:
    """A `Working`; a bare number of bytes counts for denoising and for the decode."""
    if isinstance(working, Working):
        return working
    return Working(TEXT_ENCODING_BYTES, int(working), int(working))


def _device_phases(offload, weights, working, device, loaded_on_gpu, groups=None) -> dict[str, int]:
    working = as_working(working)
    phases = gpu_phases(offload, weights, working, loaded_on_gpu, groups)
    return reserved_phases(phases, working) if str(device).startswith("cuda") else phases


def accelerator_bytes(offload: str, weights: dict[str, int], working, *, device: str = "cuda",
                      loaded_on_gpu: tuple[str, ...] = (), groups=None) -> int:
    """Peak accelerator bytes of the largest phase of `gpu_phases`: on CUDA as the caching allocator
    reserves it (`reserved_phases`), elsewhere as allocated (MPS has its own allocator, not measured)."""
    return max(_device_phases(offload, weights, working, device, loaded_on_gpu, groups).values())


def peak_phase(offload: str, weights: dict[str, int], working, *, device: str = "cuda",
               loaded_on_gpu: tuple[str, ...] = (), groups=None) -> str:
    """The phase of `gpu_phases` that sets `accelerator_bytes`: "loading", "text", "denoise" or "decode"."""
    phases = _device_phases(offload, weights, working, device, loaded_on_gpu, groups)
    return max(phases, key=phases.get)
