"""The fast plan: compiled transformer blocks and VAE decoder, the VAE in channels-last, and on
Ada/Hopper GPUs (compute capability 8.9+) the transformer's linear layers in float8.

Regional compilation: SD3's transformer is 24-38 identical blocks, so compiling each block (not the
whole model) lets torch.compile reuse one compiled graph for all of them, which keeps compile time
short. diffusers' `compile_repeated_blocks()` would do this, but needs `_repeated_blocks`, which
`SD3Transformer2DModel` does not declare (diffusers 0.42), so the blocks are compiled here one by one.

FP8 (`load_pipeline(fast=True)` on sm_89+, or `fast="fp8"`): torchao's
`Float8DynamicActivationFloat8WeightConfig` stores each linear weight in float8 (1 byte, plus one fp32
scale per output row, or per layer on sm_89) and quantizes the activations on the fly, so the matmuls
run on the float8 tensor cores (about twice the bf16 peak). `fast="bf16"` keeps the bf16 fast plan.
`quantization_error` measures what float8 does to one transformer forward against bf16 at the same
inputs: a kernel-level error on the weights it is given. It cannot show image quality with the
trained weights (random weights' activations are not the trained model's); a reader who has them
should compare images.

Attention: SD3's `JointAttnProcessor2_0` calls `F.scaled_dot_product_attention` itself (diffusers
0.42), so diffusers' `set_attention_backend` does not reach it; the kernel is chosen by PyTorch's SDPA,
and `torch.nn.attention.sdpa_kernel` around the call is what changes it (tests/loading/test_fast_plan.py
proves both on the stand-in). From torch 2.10 SDPA itself prefers cuDNN on sm_90 when the bundled
cuDNN is new enough, so every GPU-check row records the kernel it got (`attention_record`: cuDNN's
version, SDPA's priority order and its choice, read after one image); `ATTENTION_BY_CAPABILITY` keeps
a kernel per GPU generation only once a pair of rows shows that forcing it beats SDPA's own choice.

Deliberately left out: diffusers' `fuse_qkv_projections()`. Its `FusedJointAttnProcessor2_0` skips
the RMS query/key norms SD3.5 uses (`qk_norm="rms_norm"`), so it silently changes the images;
tests/loading/test_fast_plan.py shows it (`helpers.loading.fused_qkv` fuses and keeps them: a GPU-check
row measures it). So are max-autotune and CUDA graphs: their compile time is only worth it if a
GPU-check row shows so.
"""

from __future__ import annotations

import contextlib
import functools
import json

import torch

FAST_CHOICES = ("auto", "bf16", "fp8")  # plus True ("auto") and False (no fast plan)
FP8_MIN_CAPABILITY = (8, 9)  # Ada (L4, L40S, RTX 40xx) and Hopper (H100, H200): float8 tensor cores
# Float8 weight scales per GPU generation: "row" (one fp32 scale per output row: the more accurate,
# PyTorch's CUTLASS row-wise kernel, built for sm_90) or "tensor" (one per layer: cuBLASLt). sm_89
# takes "tensor": row-wise scaled matmuls on sm_89 came later to PyTorch and had stream bugs before 2.12.
FP8_SCALES_BY_CAPABILITY = {(8, 9): "tensor"}  # anything newer: "row"
# The SDPA kernel that won on the GPU check, per compute capability, with the measurement it rests
# on. Empty: no GPU-check row has yet recorded which kernel SDPA picks by itself (each row's
# "attention" record), so every GPU keeps PyTorch's default kernel order.
ATTENTION_BY_CAPABILITY: dict[tuple[int, int], str] = {}
ATTENTION_KINDS = ("cudnn",)


def fp8_unavailable(device: str, capability, quantization, offload: str, dtype) -> str | None:
    """Why the FP8 fast plan cannot run with these settings (one sentence), or None if it can."""
    if not str(device).startswith("cuda"):
        return (f"float8 matmuls need an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper); "
                f"this loads on {device!r}.")
    if capability is None or tuple(capability) < FP8_MIN_CAPABILITY:
        return (f"float8 matmuls need compute capability 8.9 or newer (Ada, Hopper); this GPU is "
                f"sm_{''.join(map(str, capability or ()))} (a T4 is sm_75, an A100 sm_80): use fast='bf16'.")
    if quantization is not None:
        return (f"this model's transformer is already quantized ({quantization}); fast='fp8' quantizes the "
                "bf16 transformer: load model='sd35-large' (or 'sd35-medium'), or use fast='bf16'.")
    if offload != "none":
        return f"fast='fp8' keeps the transformer on the GPU (offload='none'); this plan offloads ({offload!r})."
    if dtype != torch.bfloat16:
        return f"fast='fp8' quantizes bf16 weights; this plan computes in {str(dtype).removeprefix('torch.')}."
    return None


def resolve_fast(fast, *, device: str, capability, quantization, offload: str, dtype) -> str | None:
    """Which fast plan `load_pipeline(fast=...)` applies: None (none), "bf16" or "fp8".
    True and "auto" take FP8 where it runs (sm_89+, a bf16 transformer kept on the GPU), else bf16;
    an explicit "fp8" that cannot run here raises ValueError saying why."""
    check_fast_argument(fast)
    if fast is False:
        return None
    if fast == "bf16":
        return "bf16"
    why_not = fp8_unavailable(device, capability, quantization, offload, dtype)
    if fast == "fp8" and why_not:
        raise ValueError(f"fast='fp8' cannot run here: {why_not}")
    return "bf16" if why_not else "fp8"


def check_fast_argument(fast) -> None:
    if not (isinstance(fast, bool) or fast in FAST_CHOICES):
        raise ValueError(f"fast must be True, False, 'auto', 'bf16' or 'fp8', not {fast!r}.")


# THE FLOAT8 RULE: float8 goes only to the Linear layers of the transformer blocks' attention
# (`attn`, `attn2`: the Q/K/V projections and outputs) and feed-forwards (`ff`, `ff_context`), the
# GEMMs over every image and text token: 77% of a step's FLOPs. The rest stay in bf16: the adaLN
# modulation layers (`norm1.linear`, `norm1_context.linear`, `norm_out.linear`) and the time and
# pooled-text embedders (`time_text_embed`) run on a batch of 2 vectors per step, gain nothing from
# float8 and set every block's scale and shift, so their error reaches everything; `context_embedder`
# (the first layer on the text, 2% of the FLOPs) and `proj_out` (the last, into the latent) likewise.
FP8_PARTS = ("attn", "attn2", "ff", "ff_context")


def fp8_filter(module, fqn: str) -> bool:
    """torchao `quantize_` filter of the float8 rule above: True for the Linear layers to quantize."""
    parts = fqn.split(".")
    return (isinstance(module, torch.nn.Linear) and len(parts) > 2 and parts[0] == "transformer_blocks"
            and parts[2] in FP8_PARTS)


def fp8_scales(capability) -> str:
    """"row" or "tensor": the float8 weight scales this GPU generation takes (FP8_SCALES_BY_CAPABILITY)."""
    return FP8_SCALES_BY_CAPABILITY.get(tuple(capability) if capability else None, "row")


def quantize_fp8(transformer, capability=None) -> int:
    """Quantize the transformer's linear layers chosen by `fp8_filter` to float8 in place (torchao);
    returns how many. Layers whose sizes float8 matmuls cannot take (not multiples of 16) stay in bf16.
    torchao's inductor settings are left alone, so compiling costs what the bf16 fast plan's does."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    config = Float8DynamicActivationFloat8WeightConfig(
        granularity=PerTensor() if fp8_scales(capability) == "tensor" else PerRow(), set_inductor_config=False)
    quantize_(transformer, config, filter_fn=fp8_filter)
    return float8_layers(transformer)


def quantize_fp8_weights(transformer, scales: str = "row") -> int:
    """Float8 weight storage only (torchao `Float8WeightOnlyConfig`: bf16 matmuls on dequantized
    weights) on the layers `fp8_filter` chooses, which runs on a CPU: the tests and the GPU check's
    --smoke measure float8's error and bytes with it where float8 matmuls cannot run. Returns how
    many layers hold float8 weights."""
    from torchao.quantization import Float8WeightOnlyConfig, PerRow, PerTensor, quantize_

    granularity = PerTensor() if scales == "tensor" else PerRow()
    quantize_(transformer, Float8WeightOnlyConfig(granularity=granularity, set_inductor_config=False),
              filter_fn=fp8_filter)
    return float8_layers(transformer)


def fp8_bytes(transformer, dtype=torch.bfloat16, scales: str = "row") -> int:
    """Bytes `transformer` (any device, `meta` included) holds after `quantize_fp8` in `dtype`: one
    byte per weight of the layers `fp8_filter` chooses (if both sizes are multiples of 16) plus one
    fp32 scale per output row ("row") or per layer ("tensor"); everything else in `dtype`."""
    size = torch.tensor([], dtype=dtype).element_size()
    total = 0
    for fqn, module in transformer.named_modules():
        quantized = (fp8_filter(module, fqn) and module.in_features % 16 == 0 and module.out_features % 16 == 0)
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if quantized and name == "weight":
                total += tensor.numel() + 4 * (module.out_features if scales == "row" else 1)
            elif tensor.is_floating_point():
                total += tensor.numel() * size
            else:
                total += tensor.numel() * tensor.element_size()
    return total


# (weights, output rows, layers) of the Linear layers the float8 rule quantizes in the published
# architectures, counted on the meta device (tests/loading/test_fast_plan.py rebuilds them and checks):
# the planner costs them without importing diffusers' models. The rule leaves SD3.5 Large's adaLN
# modulation (2.7 billion of its 8.1 billion weights) in bf16: about 2.6 GiB more than float8 everywhere.
FP8_LINEAR = {"large": (5340905472, 1648896, 453), "medium": (1460404224, 734208, 337)}


def planned_fp8_bytes(transformer_config: dict, dtype, capability) -> int:
    """`fp8_bytes` of the transformer `transformer_config` describes, without weights: from the
    published family's counts (`FP8_LINEAR`, `memory_model.FULL_SIZE`) when the config is one of them,
    else built on the meta device. What the planner costs the FP8 fast plan's transformer at."""
    from . import architectures, memory_model

    config = {k: v for k, v in dict(transformer_config).items() if not k.startswith("_")}
    scales = fp8_scales(capability)
    for family, published in architectures.TRANSFORMER_CONFIGS.items():
        if family in FP8_LINEAR and config == published:
            weights, rows, layers = FP8_LINEAR[family]
            bf16 = memory_model.loaded_bytes(memory_model.FULL_SIZE[family]["transformer"], dtype)
            return bf16 - weights * memory_model.dtype_bytes(dtype) + weights + 4 * (rows if scales == "row" else layers)
    return _meta_fp8_bytes(json.dumps(config, sort_keys=True), dtype, scales)


@functools.lru_cache(maxsize=8)
def _meta_fp8_bytes(config_json: str, dtype, scales: str) -> int:
    from diffusers import SD3Transformer2DModel

    with torch.device("meta"):
        return fp8_bytes(SD3Transformer2DModel.from_config(json.loads(config_json)), dtype, scales)


def plans_fp8(fast, *, device: str, capability, quantization, offload, dtype) -> bool:
    """Whether `load_pipeline(fast=fast)` with these settings gets the FP8 fast plan if it fits:
    the planner then costs the transformer in float8 (see `planner.plan_loading(fast=...)`)."""
    if fast is False or fast == "bf16":
        return False
    return fp8_unavailable(device, capability, quantization, "none" if offload == "auto" else offload, dtype) is None


def float8_layers(module) -> int:
    """How many linear layers of `module` hold float8 weights."""
    return sum(1 for m in module.modules() if isinstance(m, torch.nn.Linear)
               and getattr(getattr(m, "weight", None), "qdata", torch.empty(0)).dtype in FLOAT8_DTYPES)


FLOAT8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


# --- what float8 does to one transformer forward ------------------------------------------------------

def transformer_inputs(config, *, size: int = 1024, batch: int = 2, text_tokens: int = 333,
                       dtype=torch.bfloat16, device="cpu", seed: int = 0) -> dict:
    """Random inputs of one denoising step at `size` pixels (batch 2: classifier-free guidance; 333
    text tokens: CLIP's 77 + T5's 256), for a transformer with `config`."""
    generator = torch.Generator("cpu").manual_seed(seed)
    latent = size // 8

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    return dict(hidden_states=randn(batch, config.in_channels, latent, latent),
                encoder_hidden_states=randn(batch, text_tokens, config.joint_attention_dim),
                pooled_projections=randn(batch, config.pooled_projection_dim),
                timestep=torch.full((batch,), 500.0, device=device))


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """||output - reference|| / ||reference|| (Frobenius norms, computed in fp32)."""
    output, reference = output.float(), reference.float()
    return float((output - reference).norm() / reference.norm())


@torch.no_grad()
def quantization_error(transformer, quantize, inputs: dict) -> dict:
    """Run one forward at `inputs`, `quantize(transformer)` in place, run it again: the relative
    error of the quantized output against the unquantized one, and the largest absolute difference.
    A kernel-level figure for these weights, not an image-quality one (see the module docstring)."""
    reference = transformer(**inputs, return_dict=False)[0]
    layers = quantize(transformer)
    output = transformer(**inputs, return_dict=False)[0]
    return {"relative_error": relative_error(output, reference),
            "max_abs_error": float((output.float() - reference.float()).abs().max()),
            "reference_rms": float(reference.float().pow(2).mean().sqrt()), "quantized_layers": layers}


# --- attention ------------------------------------------------------------------------------------------

def attention_context(kind: str | None):
    """A context that puts `kind`'s SDPA kernel first ("cudnn": cuDNN's fused attention), or changes nothing."""
    if kind is None:
        return contextlib.nullcontext()
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)} or None, not {kind!r}.")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


TEXT_TOKENS = 333  # CLIP's 77 + T5's 256: the text part of SD3's joint attention


def attention_record(transformer, size: int, device=None) -> dict:
    """The SDPA kernel `transformer`'s joint attention gets at `size` pixels (CFG batch of 2), as
    PyTorch would choose it now: call it after one image, inside the same `attention_context`. Holds
    cuDNN's version (None without cuDNN), SDPA's priority order and its choice for that shape."""
    from torch.nn.attention import SDPBackend

    names = {backend.value: name.lower() for name, backend in SDPBackend.__members__.items()}
    config = transformer.config
    parameter = next(transformer.parameters())
    dtype = parameter.dtype if parameter.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.bfloat16
    device = device or ("cuda" if torch.cuda.is_available() else parameter.device)
    tokens = (size // 8 // config.patch_size) ** 2 + TEXT_TOKENS
    query = torch.empty(2, config.num_attention_heads, tokens, config.attention_head_dim, dtype=dtype, device=device)
    return {"cudnn_version": torch.backends.cudnn.version(),
            "sdpa_priority": [names[i] for i in torch._C._get_sdp_priority_order()],
            "sdpa_choice": names[int(torch._fused_sdp_choice(query, query, query))],
            "shape": list(query.shape), "dtype": str(dtype).removeprefix("torch.")}


def use_attention(transformer, kind: str) -> None:
    """Run every forward of `transformer` inside `attention_context(kind)` (wraps its forward, which
    is where JointAttnProcessor2_0's F.scaled_dot_product_attention calls happen)."""
    attention_context(kind)  # checks `kind` now
    forward = transformer.forward

    @functools.wraps(forward)
    def forward_with_attention(*args, **kwargs):
        with attention_context(kind):
            return forward(*args, **kwargs)

    transformer.forward = forward_with_attention


# --- the plan -------------------------------------------------------------------------------------------

# Graphs dynamo keeps per block variant: a static one, then (automatic dynamic shapes) one with a
# dynamic image size after a size change, then one with a dynamic batch too after a batch change.
GRAPHS_PER_VARIANT = 3


def block_variants(transformer) -> int:
    """How many different blocks `transformer` has for dynamo: SD3's blocks share one forward, but the
    context-only last block and (Medium) the dual-attention blocks trace to different graphs."""
    return len({(type(b).__name__, bool(b.context_pre_only), getattr(b, "attn2", None) is not None)
                for b in transformer.transformer_blocks})


def compile_transformer_blocks(transformer, **compile_options) -> int:
    """Compile every transformer block in place (`nn.Module.compile`, so weights keep their names
    and hooks keep working); returns how many. Compilation itself happens at the first call.

    Every block runs the same forward, and dynamo's recompile limit (8) counts graphs per forward: SD3.5
    Medium's 3 block variants x GRAPHS_PER_VARIANT graphs after a size change and a batch change is 9,
    so the last variant would silently fall back to eager. The limit is raised to what the blocks need
    (a process-wide torch setting; it is never lowered)."""
    import torch._dynamo

    blocks = list(transformer.transformer_blocks)
    needed = GRAPHS_PER_VARIANT * block_variants(transformer)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, needed)
    for block in blocks:
        block.compile(**compile_options)
    return len(blocks)


# Said once per make_fast on a CPU, where the first image's compile is long enough to look like a hang
# (issue 27's audit timed 37-60 s on the stand-in; the compile is per block graph, not per weight).
CPU_COMPILE_NOTE = ("fast=True on a CPU: the first image first compiles the transformer blocks and the VAE "
                    "decoder, about a minute on a CPU (37-60 s measured on the stand-in); later images at "
                    "this size run the compiled code.")


def make_fast(pipe, precision: str = "bf16", *, capability=None, mode: str | None = None) -> list[str]:
    """Apply the fast plan to a loaded pipeline; return what was done, one line per change.

    `precision`: "bf16" or "fp8" (float8 linear layers, sm_89+). `capability`: the GPU's compute
    capability, which picks the float8 scales and the attention kernel. `mode`: torch.compile's
    mode (None: the default; "max-autotune" only behind a GPU-check row that shows it pays).
    The first image after this pays the compile time (tens of seconds on a GPU); every later
    image at the same size runs the compiled code. A new image size compiles once more."""
    if getattr(pipe, "transformer", None) is None:
        raise ValueError("This pipeline has no transformer (it was released?): load it again.")
    if precision not in ("bf16", "fp8"):
        raise ValueError(f"precision must be 'bf16' or 'fp8', not {precision!r}.")
    options = {"mode": mode} if mode else {}
    if torch.device(getattr(pipe, "_execution_device", pipe.transformer.device)).type == "cpu":
        print(CPU_COMPILE_NOTE)
    done = []
    if precision == "fp8":
        done.append(f"float8 weights and activations in {quantize_fp8(pipe.transformer, capability)} linear "
                    "layers of the transformer (torchao)")
        # The bf16 weights just replaced would stay in PyTorch's cache and count as reserved memory.
        from .devices import release_cached_memory

        release_cached_memory(str(pipe.transformer.device))
        done.append("bf16 weights released to the driver (torch.cuda.empty_cache)")
    done.append(f"torch.compile of the transformer's {compile_transformer_blocks(pipe.transformer, **options)} "
                "blocks (regional: one graph reused by every block)" + (f", mode {mode!r}" if mode else ""))
    if getattr(pipe, "vae", None) is not None:
        pipe.vae.to(memory_format=torch.channels_last)
        pipe.vae.decoder.compile(**options)
        done.append("VAE in channels-last memory format, its decoder compiled")
    kind = ATTENTION_BY_CAPABILITY.get(tuple(capability) if capability else None)
    if kind:
        use_attention(pipe.transformer, kind)
        done.append(f"attention: {kind} kernel first (it won on this GPU generation)")
    return done
