"""helpers.loading.memory_model: exact bytes, checked against full-size meta builds and, byte for byte,
against the stand-in as bitsandbytes really quantizes it on CPU."""

import itertools

import pytest
import torch
from diffusers import AutoencoderKL, BitsAndBytesConfig, SD3Transformer2DModel
from transformers import BitsAndBytesConfig as TransformersBnbConfig
from transformers import CLIPTextModelWithProjection, T5EncoderModel

import helpers
from helpers import measuring
from helpers.loading import host_memory, memory_model
from helpers.loading.planner import plan_loading
from helpers.measuring import GiB

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@pytest.fixture(scope="module")
def meta_counts():
    """Every component of both families counted on the meta device (no memory, no weights)."""
    return {family: memory_model.meta_census(family) for family in ("large", "medium")}


def test_full_size_counts_are_the_meta_built_architectures(meta_counts):
    assert meta_counts == memory_model.FULL_SIZE
    large = meta_counts["large"]
    assert abs(large["transformer"].parameters - 8.1e9) / 8.1e9 < 0.01
    assert abs(large["text_encoder_3"].parameters - 4.76e9) / 4.76e9 < 0.01
    assert large["text_encoder_3"].kept_fp32 == 24 * 4096 * 10240  # T5's 24 `wo` layers


@pytest.mark.parametrize(
    "model, dtype, t5, offload",
    list(itertools.product(["sd35-large", "sd35-large-nf4", "sd35-large-8bit", "sd35-medium", "sd35-large-turbo"],
                           DTYPES, ["full", "nf4", "dropped"], ["auto"])),
)
def test_planner_estimates_match_the_meta_built_counts(meta_counts, model, dtype, t5, offload):
    """Every preset x dtype x quantization x T5 option: the planner passes each option on to the
    memory model as intended. NOT an independent reference for the bytes: the planner calls
    `pipeline_bytes` itself, so this checks the plumbing only. The bytes are held to the state dicts on
    disk (test_plan_bytes_on_disk), to what bitsandbytes really allocates
    (test_rule_matches_the_stand_in_byte_for_byte) and to what a GPU loaded (test_gpu_check)."""
    preset = helpers.PRESETS[model]
    plan = plan_loading(model, stand_in=False, dtype=dtype, offload=offload,
                                quantize_t5=t5 == "nf4", drop_t5=t5 == "dropped")
    expected = memory_model.pipeline_bytes(meta_counts[preset.family], dtype, preset.quantization, t5)
    assert set(plan.estimated_bytes) == set(expected)
    for name, size in expected.items():
        assert abs(plan.estimated_bytes[name] - size) <= 0.01 * size, name


def test_t5_in_nf4_keeps_wo_unquantized_and_fp32_under_fp16():
    t5 = memory_model.FULL_SIZE["large"]["text_encoder_3"]
    assert memory_model.loaded_bytes(t5, torch.bfloat16, "nf4") / GiB == pytest.approx(4.02, abs=0.01)
    assert memory_model.loaded_bytes(t5, torch.float16, "nf4") / GiB == pytest.approx(5.89, abs=0.01)
    assert memory_model.loaded_bytes(t5, torch.float16) / GiB == pytest.approx(10.75, abs=0.01)
    assert memory_model.loaded_bytes(t5, torch.bfloat16) / GiB == pytest.approx(8.87, abs=0.01)


def test_nf4_transformer_counts_its_block_scales():
    transformer = memory_model.FULL_SIZE["large"]["transformer"]
    with_scales = memory_model.loaded_bytes(transformer, torch.bfloat16, "nf4")
    absmax = 4 * transformer.linear_blocks
    assert absmax / GiB == pytest.approx(0.47, abs=0.01)
    assert with_scales - absmax > transformer.linear_weights // 2


def _load(name, folder, dtype, quantization):
    """One stand-in component loaded the way load_pipeline loads it."""
    if name == "transformer":
        config = {None: None, "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                        bnb_4bit_compute_dtype=dtype),
                  "int8": BitsAndBytesConfig(load_in_8bit=True)}[quantization]
        return SD3Transformer2DModel.from_pretrained(folder, subfolder=name, quantization_config=config, dtype=dtype)
    if name == "text_encoder_3":
        config = None if quantization is None else TransformersBnbConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return T5EncoderModel.from_pretrained(folder, subfolder=name, quantization_config=config, dtype=dtype)
    if name == "vae":
        return AutoencoderKL.from_pretrained(folder, subfolder=name, dtype=dtype)
    return CLIPTextModelWithProjection.from_pretrained(folder, subfolder=name, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rule_matches_the_stand_in_byte_for_byte(bnb_cpu, tiny_dir, dtype):
    """The same rules, on the stand-in really quantized by bitsandbytes: not one byte off."""
    counts = memory_model.folder_census(tiny_dir)
    cases = [("transformer", q) for q in (None, "nf4", "int8")] + [("text_encoder_3", q) for q in (None, "nf4")]
    cases += [("text_encoder", None), ("text_encoder_2", None), ("vae", None)]
    for name, quantization in cases:
        module = _load(name, tiny_dir, dtype, quantization)
        assert measuring.module_bytes(module) == memory_model.loaded_bytes(counts[name], dtype, quantization), (
            name, quantization)


def test_working_memory_grows_with_the_math_kernel_and_the_image():
    flash = memory_model.working_bytes("large", 1024, torch.float16, "flash")
    math = memory_model.working_bytes("large", 1024, torch.float16, "math")
    small = memory_model.working_bytes("large", 512, torch.float16, "flash")
    # The math kernel holds 2 x 38 heads x (4096 + 333)^2 attention scores, their softmax, temporaries.
    assert math > flash and math >= 2 * 2 * 2 * 38 * 4429**2 * 2
    assert small < flash
    # Not square: the transformer's tokens and the decode's pixels follow height x width.
    wide = memory_model.phase_working("large", (1024, 2048), torch.float16, "flash")
    assert wide.decode == 2 * memory_model.phase_working("large", 1024, torch.float16, "flash").decode
    with pytest.raises(ValueError, match="size must be"):
        memory_model.image_size((1024, "wide"))


def test_mps_attention_is_costed_apart_from_cuda_math():
    """MPS has its own SDPA kernel: it is not charged CUDA's measured math-kernel factor.

    By hand, Medium at 1024x1024 in bf16: 24 heads; (1024/16)^2 = 4096 image + 333 text = 4429 tokens;
    one attention-score tensor is CFG 2 x 24 x 4429^2 x 2 bytes = 1,883,139,936 bytes. MPS holds the
    scores and their softmax (2 copies: 3,766,279,872 bytes), CUDA's math kernel 4.5 (8,474,129,712).
    The 4.5 was measured on an H200; the 2 is an assumption from PyTorch's MPS source, never measured on
    a Mac: for MPS this test holds the code to that assumption only, not to a measurement."""
    mps = memory_model.phase_working("medium", 1024, torch.bfloat16, "mps").denoise
    math = memory_model.phase_working("medium", 1024, torch.bfloat16, "math").denoise
    flash = memory_model.phase_working("medium", 1024, torch.bfloat16, "flash").denoise
    assert mps - flash == 3_766_279_872
    assert math - flash == 8_474_129_712 and mps < math


def test_model_offload_is_costed_by_phase():
    """Model offload: the largest phase, not the largest component plus all working memory. T5 stays on
    the GPU while the negative prompt's CLIP-G runs beside it; the transformer and VAE come alone."""
    weights = memory_model.pipeline_bytes(memory_model.FULL_SIZE["large"], torch.bfloat16, "nf4")
    working = memory_model.phase_working("large", 1024, torch.bfloat16, "flash")
    phases = memory_model.gpu_phases("model", weights, working)
    assert phases["text"] == weights["text_encoder_3"] + weights["text_encoder_2"] + working.text
    assert phases["denoise"] == weights["transformer"] + working.denoise
    assert phases["decode"] == weights["vae"] + working.decode
    no_t5 = dict(weights)
    del no_t5["text_encoder_3"]
    assert memory_model.gpu_phases("model", no_t5, working)["text"] == (
        weights["text_encoder"] + weights["text_encoder_2"] + working.text)
    # bitsandbytes quantizes onto the GPU before enable_model_cpu_offload runs: the load peak is their sum.
    nf4_t5 = memory_model.pipeline_bytes(memory_model.FULL_SIZE["large"], torch.bfloat16, "nf4", "nf4")
    loading = memory_model.gpu_phases("model", nf4_t5, working, ("transformer", "text_encoder_3"))["loading"]
    assert loading == nf4_t5["transformer"] + nf4_t5["text_encoder_3"]
    assert 8.2 * GiB < loading < 8.6 * GiB  # the "about 8.4 GiB in bf16"


def test_host_bytes_offloaded_plans_keep_everything_in_host_ram():
    weights = {"transformer": 4 * GiB, "text_encoder_3": 6 * GiB}
    reads = {"transformer": 9 * GiB, "text_encoder_3": 5 * GiB}
    # The CUDA libraries and context a GPU load maps into host RAM, by hand from the H200 measurement
    # (host_memory's notes): 10.17 GiB resident for a 10 GB (9.31 GiB) shard leaves 0.86 GiB.
    cuda = int(0.86 * GiB)
    assert host_memory.CUDA_LOAD_HOST_BYTES == cuda
    assert host_memory.host_bytes("none", "cuda", weights, reads) == {"loading": 9 * GiB + cuda, "generating": cuda}
    model = host_memory.host_bytes("model", "cuda", weights, reads, loaded_on_gpu=("transformer",))
    # Loading: one shard at a time (the CPU-side components stay memory-mapped), then the parts quantized
    # on the GPU move to host RAM; generating: every component in host RAM.
    assert model == {"loading": 9 * GiB + cuda, "generating": 10 * GiB + cuda}
    assert host_memory.host_bytes("none", "mps", weights, reads, working=GiB)["generating"] == 11 * GiB


def test_host_bytes_on_apple_silicon_hold_the_weights_once_while_loading():
    """The shard safetensors reads is memory-mapped: its pages are the weights' source, not a second copy
    (it counted total + largest shard); the CPU, which keeps its own copy, still counts both."""
    weights = {"transformer": 4 * GiB, "text_encoder_3": 6 * GiB}
    reads = {"transformer": 9 * GiB, "text_encoder_3": 5 * GiB}
    assert host_memory.host_bytes("none", "mps", weights, reads)["loading"] == 10 * GiB
    assert host_memory.host_bytes("none", "mps", weights, {"transformer": 12 * GiB})["loading"] == 12 * GiB
    assert host_memory.host_bytes("none", "cpu", weights, reads)["loading"] == 19 * GiB


def test_staged_t5_costs_its_shard_and_its_weights_in_the_text_phase_only():
    weights = {"transformer": 4 * GiB, "text_encoder": GiB}
    reads = {"transformer": 9 * GiB, host_memory.STAGED_T5_READ: 5 * GiB}
    cuda = host_memory.CUDA_LOAD_HOST_BYTES
    # The staged shard is read while generating (each new prompt), never while loading the pipeline.
    assert host_memory.host_bytes("none", "cuda", weights, reads) == {"loading": 9 * GiB + cuda,
                                                                      "generating": 5 * GiB + cuda}
    working = memory_model.Working(text=GiB, denoise=2 * GiB, decode=GiB, text_weights=6 * GiB)
    phases = memory_model.gpu_phases("none", weights, working)
    assert phases == {"loading": 5 * GiB, "text": 12 * GiB, "denoise": 7 * GiB, "decode": 6 * GiB}
    reserved = memory_model.reserved_phases(phases, working)  # T5's weights are allocated, not scaled as working
    assert reserved["text"] == 12 * GiB + memory_model.RESERVED_BASE_BYTES + int(memory_model.RESERVED_OVER_WORKING * GiB)
