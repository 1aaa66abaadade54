"""The fast plan on the stand-in: compiled blocks and VAE decoder give the plain plan's image; fused QKV
would not; FP8 is chosen by compute capability (faked here) and its error and bytes are measured with
float8 weights (torchao's float8 *matmuls* need sm_89+, so the CPU runs float8 weight-only storage)."""

import functools

import numpy as np
import pytest
import torch

import helpers
from helpers.loading import fast_plan
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
    assert pipe.vae.decoder._compiled_call_impl is not None  # the VAE decode too
    result = helpers.generate(pipe, "a red fox in the snow", seed=3)
    assert np.abs(pixels(result) - plain).max() <= FAST_TOLERANCE
    # The recipe says how it ran: on a CPU, fast=True is the bf16 fast plan (float8 needs sm_89+).
    assert result.recipe["fast"] == "bf16" and pipe.load_info.plan.fast is True
    assert pipe.load_info.fast_precision == "bf16" and any("decoder compiled" in line for line in pipe.load_info.fast_plan)
    # Compiling in place keeps the weights' names: save_pretrained / save_quantized still work.
    assert not any("_orig_mod" in name for name in pipe.transformer.state_dict())
    helpers.release_current_pipeline()


def test_fast_on_a_cpu_says_it_compiles_and_how_long_before_compiling(tiny_dir, capsys):
    capsys.readouterr()
    pipe = helpers.load_pipeline("tiny", fast=True)
    said = [line for line in capsys.readouterr().out.splitlines() if "compiles" in line]
    assert said == [fast_plan.CPU_COMPILE_NOTE] and "about a minute on a CPU" in said[0]
    assert all(block._compiled_call_impl is not None for block in pipe.transformer.transformer_blocks)
    helpers.release_current_pipeline()  # (no image: the compile it announces is the first test's)
    helpers.load_pipeline("tiny")  # the control: no fast plan, no word about compiling
    assert "compiles" not in capsys.readouterr().out
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
    with pytest.raises(ValueError, match="fast must be True, False, 'auto', 'bf16' or 'fp8', not 'yes'"):
        helpers.load_pipeline("tiny", fast="yes")


# --- FP8: chosen by compute capability -------------------------------------------------------------

def choose(fast, capability=(9, 0), quantization=None, offload="none", dtype=torch.bfloat16, device="cuda"):
    return fast_plan.resolve_fast(fast, device=device, capability=capability, quantization=quantization,
                                  offload=offload, dtype=dtype)


def test_auto_takes_fp8_on_ada_and_hopper_only():
    assert choose(True, (9, 0)) == "fp8" and choose("auto", (8, 9)) == "fp8"  # H100/H200, L4/RTX 4090
    assert choose(True, (8, 0)) == "bf16" and choose(True, (7, 5)) == "bf16"  # A100, T4
    assert choose(True, None, device="cpu") == "bf16" and choose(True, None, device="mps") == "bf16"
    assert choose(True, quantization="nf4") == "bf16"  # an NF4 transformer keeps its 4-bit weights
    assert choose(True, offload="model") == "bf16"
    assert choose("bf16", (9, 0)) == "bf16"  # the explicit choice keeps today's bf16 fast plan
    assert choose(False, (9, 0)) is None


@pytest.mark.parametrize("kwargs, says", [
    (dict(capability=(8, 0)), "sm_80"), (dict(capability=None, device="cpu"), "NVIDIA GPU"),
    (dict(quantization="nf4"), "already quantized"), (dict(offload="model"), "offload"),
    (dict(dtype=torch.float16), "float16"),
])
def test_explicit_fp8_says_why_it_cannot_run(kwargs, says):
    with pytest.raises(ValueError, match="fast='fp8' cannot run here") as error:
        choose("fp8", **kwargs)
    assert says in str(error.value)


def test_explicit_fp8_on_this_cpu_is_refused_before_the_held_pipeline_is_released(tiny_pipe):
    with pytest.raises(ValueError, match="float8 matmuls need an NVIDIA GPU"):
        helpers.load_pipeline("tiny", fast="fp8")
    assert tiny_pipe.transformer is not None  # nothing the reader had is lost


def test_fp8_on_a_faked_hopper_picks_row_scales_and_sm89_per_layer_scales(monkeypatch):
    from helpers.loading import devices

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert devices.compute_capability("cuda") == (9, 0) and choose(True, devices.compute_capability("cuda")) == "fp8"
    assert fast_plan.FP8_SCALES_BY_CAPABILITY.get((9, 0), "row") == "row"
    assert fast_plan.FP8_SCALES_BY_CAPABILITY[(8, 9)] == "tensor"


# --- FP8: what it does to the output, and its bytes ------------------------------------------------

@pytest.mark.parametrize("scales", ["float8", "float8-tensor"])
def test_float8_error_and_bytes_on_the_stand_in_transformer(tiny_dir, scales):
    from diffusers import SD3Transformer2DModel

    from helpers.loading import memory_model
    from helpers.measuring import module_bytes

    transformer = SD3Transformer2DModel.from_pretrained(tiny_dir / "transformer", torch_dtype=torch.bfloat16)
    counts = memory_model.census(transformer)
    assert module_bytes(transformer) == memory_model.loaded_bytes(counts, torch.bfloat16)
    inputs = fast_plan.transformer_inputs(transformer.config, size=64)
    quantize = functools.partial(fast_plan.quantize_fp8_weights, scales="row" if scales == "float8" else "tensor")
    error = fast_plan.quantization_error(transformer, quantize, inputs)
    # The layers the float8 rule chooses now hold float8 weights, and fp8_bytes counts their bytes exactly.
    chosen = [m for name, m in transformer.named_modules() if fast_plan.fp8_filter(m, name)]
    assert error["quantized_layers"] == len(chosen) < counts.linear_layers
    assert module_bytes(transformer) == fast_plan.fp8_bytes(
        SD3Transformer2DModel.from_pretrained(tiny_dir / "transformer", torch_dtype=torch.bfloat16),
        torch.bfloat16, "row" if scales == "float8" else "tensor")
    # float8 e4m3 keeps 3 mantissa bits: a few percent of error, neither zero nor noise.
    assert 1e-3 < error["relative_error"] < 0.2, error
    assert error["max_abs_error"] > 0 and error["reference_rms"] > 0


def test_fp8_large_with_nf4_t5_weights_and_what_the_float8_rule_costs():
    """The FP8 plan's weights at full size: the float8 rule's layers at one byte per weight plus a fp32
    scale per row, adaLN and the rest in bf16: the transformer is 10.2 GiB, 2.6 GiB more than with
    every layer in float8, so with T5 in NF4 the pipeline holds 15.9 GiB of weights, no longer under
    15 GiB (the price of keeping the modulation layers out of float8), and far under bf16's 25.7."""
    from helpers.loading import architectures, memory_model

    GiB = memory_model.GiB
    large = memory_model.FULL_SIZE["large"]
    fp8 = fast_plan.planned_fp8_bytes(architectures.TRANSFORMER_CONFIGS["large"], torch.bfloat16, (9, 0))
    everything = memory_model.loaded_bytes(large["transformer"], torch.bfloat16, "float8")
    assert 2.5 * GiB < fp8 - everything < 2.7 * GiB
    weights = dict(memory_model.pipeline_bytes(large, torch.bfloat16, None, t5="nf4"), transformer=fp8)
    assert 15 * GiB < sum(weights.values()) < 16 * GiB < 25 * GiB < sum(memory_model.pipeline_bytes(large, torch.bfloat16).values())


def test_relative_error_is_the_norm_ratio():
    reference = torch.tensor([3.0, 4.0])
    assert fast_plan.relative_error(reference + torch.tensor([0.3, 0.4]), reference) == pytest.approx(0.1)


# --- attention: SD3 calls F.scaled_dot_product_attention itself ----------------------------------------

def test_set_attention_backend_does_not_reach_sd3_but_sdpa_kernel_does(tiny_pipe, monkeypatch):
    """JointAttnProcessor2_0 calls F.scaled_dot_product_attention directly (diffusers 0.42): it has no
    `_attention_backend` for `set_attention_backend` to set, so diffusers' `_native_math` backend (SDPA
    under sdpa_kernel(MATH)) changes nothing, and an outer sdpa_kernel that allows only cuDNN (absent
    on a CPU) still decides: the call fails. The SDPA kernel context is what chooses SD3's attention."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    from torch.nn.attention import SDPBackend, sdpa_kernel

    monkeypatch.setattr(_AttentionBackendRegistry, "_active_backend", _AttentionBackendRegistry._active_backend)
    transformer = tiny_pipe.transformer
    processors = [b.attn.processor for b in transformer.transformer_blocks]
    assert {type(p).__name__ for p in processors} == {"JointAttnProcessor2_0"}
    inputs = fast_plan.transformer_inputs(transformer.config, size=64, dtype=transformer.dtype)
    with torch.no_grad():
        before = transformer(**inputs).sample
        transformer.set_attention_backend("_native_math")
        assert _AttentionBackendRegistry.get_active_backend()[0] == "_native_math"  # set, globally...
        assert not any(hasattr(p, "_attention_backend") for p in processors)  # ...but not on SD3's processors
        assert torch.equal(transformer(**inputs).sample, before)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]), pytest.raises(RuntimeError, match="No viable backend for scaled_dot_product_attention"):
            transformer(**inputs)
        with sdpa_kernel([SDPBackend.MATH]):
            assert torch.allclose(transformer(**inputs).sample, before, atol=1e-5)  # the kernel SDPA may use runs


def test_a_winning_attention_kernel_wraps_every_transformer_forward(tiny_pipe, monkeypatch):
    monkeypatch.setitem(fast_plan.ATTENTION_BY_CAPABILITY, (9, 0), "cudnn")
    seen = []
    # pos_embed runs inside the transformer's forward and is not compiled: it sees the SDPA state then.
    tiny_pipe.transformer.pos_embed.register_forward_pre_hook(lambda *a: seen.append(torch._C._get_sdp_priority_order()))
    default_order = torch._C._get_sdp_priority_order()
    done = make_fast(tiny_pipe, capability=(9, 0))
    assert any("attention: cudnn" in line for line in done)
    helpers.generate(tiny_pipe, "a red fox", seed=1, num_inference_steps=1)
    from torch.nn.attention import SDPBackend

    assert seen and all(order[0] == int(SDPBackend.CUDNN_ATTENTION) for order in seen)
    assert torch._C._get_sdp_priority_order() == default_order  # restored after each forward


def test_no_attention_kernel_is_kept_until_one_is_measured():
    assert fast_plan.ATTENTION_BY_CAPABILITY == {}  # no GPU row has recorded SDPA's own choice yet


def test_the_attention_record_reads_what_sdpa_chooses_for_the_joint_attention(tiny_pipe):
    """What every GPU-check row records after one image: cuDNN's version, SDPA's priority order and the
    kernel SDPA picks for this transformer's joint attention (image tokens + 333 text tokens, batch 2);
    a priority context changes the order it reads."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = tiny_pipe.transformer.config
    record = fast_plan.attention_record(tiny_pipe.transformer, 64)
    assert record["shape"] == [2, config.num_attention_heads, (64 // 8 // config.patch_size) ** 2 + 333,
                               config.attention_head_dim]
    assert record["cudnn_version"] == torch.backends.cudnn.version() and record["sdpa_choice"] in record["sdpa_priority"]
    with fast_plan.attention_context("cudnn"):
        assert fast_plan.attention_record(tiny_pipe.transformer, 64)["sdpa_priority"][0] == "cudnn_attention"
    with sdpa_kernel([SDPBackend.MATH]):  # only math allowed: SDPA's choice follows
        assert fast_plan.attention_record(tiny_pipe.transformer, 64)["sdpa_choice"] == "math"


def test_the_loader_states_the_fp8_transformer_bytes_torchao_holds(tiny_dir):
    """load_pipeline(fast="fp8") replaces the plan's transformer bytes with load.fp8_transformer_bytes:
    on the stand-in, exactly what torchao's float8 weights (and their scales) hold."""
    from helpers.loading.load import fp8_transformer_bytes
    from helpers.loading.presets import resolve_preset
    from helpers.measuring import module_bytes

    pipe = helpers.load_pipeline("tiny", dtype=torch.bfloat16)
    plan, preset = pipe.load_info.plan, resolve_preset("tiny")
    hopper, ada = fp8_transformer_bytes(plan, preset, (9, 0)), fp8_transformer_bytes(plan, preset, (8, 9))
    assert hopper < plan.estimated_bytes["transformer"] == module_bytes(pipe.transformer)
    fast_plan.quantize_fp8_weights(pipe.transformer, "row")
    assert module_bytes(pipe.transformer) == hopper
    assert ada < hopper  # one scale per layer instead of one per row
    helpers.release_current_pipeline()


# --- the float8 rule, and FP8 planned where it fits ------------------------------------------------------

def test_float8_goes_to_the_blocks_attention_and_feed_forwards_only(tiny_dir):
    """The rule (fast_plan.FP8_PARTS): on the stand-in, the 2 blocks' attention and feed-forward layers are
    quantized (the last block is context-only: no to_add_out, no ff_context); adaLN modulation, the
    embedders, context_embedder and proj_out stay in bf16. Counted by name after torchao quantized."""
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel.from_pretrained(tiny_dir, subfolder="transformer", torch_dtype=torch.bfloat16)
    linears = {name for name, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    # block 0: 8 attention and 4 feed-forward layers; block 1 (context-only): 7 attention and 2 feed-forward
    assert fast_plan.quantize_fp8_weights(transformer) == 21
    quantized = {name for name, m in transformer.named_modules() if fast_plan.float8_layers(m) == 1
                 and isinstance(m, torch.nn.Linear)}
    excluded = linears - quantized
    assert len(excluded) == 11 and all(
        name.startswith(("time_text_embed.", "context_embedder", "proj_out", "norm_out."))
        or name.endswith(("norm1.linear", "norm1_context.linear")) for name in excluded), sorted(excluded)
    assert {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.ff.net.2", "transformer_blocks.1.attn.add_k_proj"} <= quantized


@pytest.mark.parametrize("family", ["large", "medium"])
def test_the_planners_float8_counts_are_the_meta_models(family):
    """FP8_LINEAR (what the planner costs without importing diffusers' models) rebuilt on meta."""
    from helpers.loading import architectures

    with torch.device("meta"):
        transformer = architectures.build_component("transformer", family)
    chosen = [m for name, m in transformer.named_modules() if fast_plan.fp8_filter(m, name)]
    assert all(m.in_features % 16 == 0 and m.out_features % 16 == 0 for m in chosen)
    assert fast_plan.FP8_LINEAR[family] == (sum(m.weight.numel() for m in chosen),
                                             sum(m.out_features for m in chosen), len(chosen))
    config = architectures.TRANSFORMER_CONFIGS[family]
    for capability, scales in (((9, 0), "row"), ((8, 9), "tensor")):
        assert fast_plan.planned_fp8_bytes(config, torch.bfloat16, capability) == fast_plan.fp8_bytes(
            transformer, torch.bfloat16, scales)


@pytest.mark.parametrize("machine", ["Colab L4", "RTX 4090 24 GB"])
def test_fast_plans_fp8_with_t5_on_the_24_gb_ada_cards(machine):
    """Costed phase by phase, FP8 fits these cards with T5 in 4-bit: loading holds the bf16 weights
    (about 20.9 GiB), later phases the float8 transformer. Without fast the plan is unchanged."""
    from helpers.loading.hardware_profiles import get_profile, plan_on
    from helpers.measuring import GiB

    profile = get_profile(machine)
    plain, fast = plan_on(profile, "sd35-large"), plan_on(profile, "sd35-large", fast=True)
    assert (plain.fp8, plain.t5, plain.offload) == (False, "full", "model")
    assert (fast.fp8, fast.t5, fast.offload, fast.fits) == (True, "nf4", "none", True)
    assert fast.loading_bytes == sum(plain.estimated_bytes.values()) - plain.estimated_bytes["text_encoder_3"] + \
        plan_on(profile, "sd35-large", quantize_t5=True).estimated_bytes["text_encoder_3"]
    # the load sets the peak (as reserved), the steady phases hold float8
    assert 20 * GiB < fast.gpu_phases["loading"] < fast.gpu_bytes_needed < 21.5 * GiB
    assert fast.gpu_bytes_needed <= profile.free_gpu_bytes
    assert max(fast.gpu_phases["denoise"], fast.gpu_phases["decode"]) < 19 * GiB and "FP8 fast plan" in fast.reason
    assert plan_on(get_profile("Colab A100 40 GB"), "sd35-large", fast=True).fp8 is False  # sm_80: no float8


def test_medium_shaped_blocks_stay_compiled_after_a_size_then_a_batch_change(monkeypatch):
    """SD3.5 Medium's three block variants (dual attention, plain, context-only) need 9 graphs after a
    size change and then a batch change; at dynamo's default limit of 8 the last variant ran eager.
    Counted with a counting backend (no inductor, so the test stays short): every block call of every
    forward runs a compiled graph."""
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=3, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=32,
        pos_embed_max_size=96, qk_norm="rms_norm", dual_attention_layers=(0,)).eval()
    assert fast_plan.block_variants(transformer) == 3
    graphs, compiled_calls = [], []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)

        def run(*args):
            compiled_calls.append(1)
            return graph_module.forward(*args)
        return run

    torch._dynamo.reset()
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)  # torch's default; restored after the test
    fast_plan.compile_transformer_blocks(transformer, backend=counting_backend)
    assert torch._dynamo.config.recompile_limit == 9
    with torch.no_grad():
        for size, batch in ((64, 2), (96, 2), (96, 1)):  # a size change, then a batch change
            compiled_calls.clear()
            inputs = fast_plan.transformer_inputs(transformer.config, size=size, batch=batch, dtype=torch.float32,
                                                  text_tokens=12)
            transformer(**inputs)
            assert len(compiled_calls) == 3, (size, batch, len(compiled_calls))  # no block fell back to eager
    assert len(graphs) == 9  # 3 variants x (static, dynamic size, dynamic batch)
    torch._dynamo.reset()
