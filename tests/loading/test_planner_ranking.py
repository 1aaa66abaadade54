"""The planner on the cards and Macs readers own (issue 18 B): model offload by phase, the ranked
`auto`, Apple Silicon, the image size, loading peaks and fast + sequential offload. The machines are
hardware profiles: only the device queries are answered for them; the planner runs unchanged."""

import pytest
import torch

import helpers
from helpers.errors import GPUOutOfMemoryError
from helpers.loading import devices, memory_model
from helpers.loading.checks import check_room_for_size
from helpers.loading.hardware_profiles import PROFILES, get_profile, on_profile, plan_label, plan_on
from helpers.measuring import GiB

FULL_T5 = dict(drop_t5=False, quantize_t5=False)


# ---- B1: model offload costed by phase; B6: loading peaks -------------------------------------------
def test_a_12_gb_card_runs_nf4_with_the_full_t5_by_model_offload():
    """Its largest phase is T5 + CLIP-G while encoding (10.4 GiB reserved), not T5 plus every phase's
    working memory (12.12 GiB, which refused it)."""
    plan = plan_on(get_profile("RTX 3060 12 GB"), "sd35-large-nf4", **FULL_T5)
    assert plan.fits and plan.offload == "model", plan.reason
    phases = plan.gpu_phases
    assert max(phases, key=phases.get) == "text" and "text encoding" in plan.reason
    assert plan.gpu_bytes_needed < 10.5 * GiB


def test_an_offload_plan_counts_the_parts_quantized_on_the_gpu_while_loading():
    """bitsandbytes puts the 4-bit transformer and the 4-bit T5 on the GPU before
    enable_model_cpu_offload runs: about 8.4 GiB at once, more than an 8 GB card has."""
    plan = plan_on(get_profile("RTX 4060 8 GB"), "sd35-large-nf4", quantize_t5=True, offload="model")
    assert plan.loaded_on_gpu == ("transformer", "text_encoder_3")
    assert plan.gpu_phases["loading"] == plan.estimated_bytes["transformer"] + plan.estimated_bytes["text_encoder_3"]
    assert max(plan.gpu_phases, key=plan.gpu_phases.get) == "loading"
    assert not plan.fits and "loading (the parts bitsandbytes quantizes on the GPU" in plan.reason
    roomy = plan_on(get_profile("RTX 3060 12 GB"), "sd35-large-nf4", quantize_t5=True, offload="model")
    assert roomy.fits  # a sum of 8.4 GiB fits 11.5 GiB free


# ---- The plan an expert would pick, per machine ---------------------------------------------------
EXPERT = [
    ("RTX 4060 8 GB", "sd35-large-nf4", "NF4, NF4 T5", "group"),
    ("free Colab T4", "sd35-large-nf4", "NF4, staged T5", "none"),
    ("RTX 4060 8 GB", "sd35-medium", "bf16, NF4 T5", "model"),
    ("RTX 3060 12 GB", "sd35-large-nf4", "NF4", "model"),
    ("RTX 3060 12 GB", "sd35-medium", "bf16", "model"),
    ("Apple M2 16 GB", "sd35-medium", "bf16, no T5", "none"),
    ("Apple M3 Max 64 GB", "sd35-large", "bf16", "none"),
    ("RTX 4090 24 GB", "sd35-large-nf4", "NF4", "none"),
]


@pytest.mark.parametrize("machine, model, label, offload", EXPERT, ids=[f"{m}-{p}" for m, p, _, _ in EXPERT])
def test_each_machine_gets_the_plan_an_expert_would_pick(machine, model, label, offload):
    plan = plan_on(get_profile(machine), model)
    assert plan.fits, plan.reason
    assert (plan_label(plan), plan.offload) == (label, offload), plan.reason


def test_on_a_64_gb_mac_bf16_ranks_above_nf4():
    """bitsandbytes 4-bit dequantizes on every call on MPS: the NF4 preset fits, and its plan names the
    full-precision preset as the better one that fits (the reader's choice of preset is kept)."""
    plan = plan_on(get_profile("Apple M3 Max 64 GB"), "sd35-large-nf4")
    assert plan.fits and plan.quantization == "nf4"
    assert plan.better and plan.better[0]["model"] == "sd35-large"
    assert "dequantizes on every call" in plan.reason


# ---- B2: the ranked auto ---------------------------------------------------------------------------
def test_auto_never_streams_layers_when_model_offload_fits_and_names_the_faster_plan():
    """SD3.5 Medium on a 12 GB card: model offload with the full T5 (it used to get sequential offload),
    and the reason names the faster plan it did not pick (no offload, without T5) and why."""
    plan = plan_on(get_profile("RTX 3060 12 GB"), "sd35-medium")
    assert plan.offload == "model" and plan.t5 == "full"
    assert plan.better[0] == dict(model="sd35-medium", offload="none", staged_t5=True, dtype=torch.bfloat16)
    assert plan.better[1] == dict(model="sd35-medium", offload="none", drop_t5=True, dtype=torch.bfloat16)
    assert "offload='none' (faster), but staged T5" in plan.reason
    assert "offload='none' (faster), but no T5" in plan.reason


def test_auto_picks_t5_by_the_ranking_and_keeps_explicit_choices():
    eight = get_profile("RTX 4060 8 GB")
    ranked = plan_on(eight, "sd35-medium")  # full T5 fits only layer by layer: the 4-bit T5 ranks higher
    assert (ranked.t5, ranked.offload) == ("nf4", "model")
    assert "T5 in 4-bit: the best-ranked plan that fits" in ranked.reason
    kept = plan_on(eight, "sd35-medium", **FULL_T5)  # asked for the full T5: kept, streamed
    assert (kept.t5, kept.offload) == ("full", "sequential")
    assert any(b.get("quantize_t5") for b in kept.better) and "faster" in kept.reason
    asked = plan_on(get_profile("RTX 3060 12 GB"), "sd35-medium", offload="sequential")
    assert asked.offload == "sequential" and asked.t5 == "full"
    dropped = plan_on(get_profile("RTX 3060 12 GB"), "sd35-medium", drop_t5=True)
    assert (dropped.t5, dropped.offload) == ("dropped", "none")


# ---- B3: Apple Silicon -------------------------------------------------------------------------------
def test_no_4bit_t5_on_apple_silicon():
    """transformers places a bitsandbytes 4-bit T5 on the CPU without CUDA (update_device_map), and the
    pipeline would feed it MPS tensors: refused when asked, never suggested."""
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer

    assert Bnb4BitHfQuantizer.update_device_map(None, None) == {"": "cpu"}  # this machine: no CUDA
    for profile in (p for p in PROFILES if p.device == "mps"):
        with pytest.raises(ValueError, match="Apple Silicon"):
            plan_on(profile, "sd35-medium", quantize_t5=True)
        for model in ("sd35-large-nf4", "sd35-large", "sd35-medium"):
            plan = plan_on(profile, model)
            suggested = [plan.would_fit or {}] + plan.better
            assert plan.t5 != "nf4" and not any(s.get("quantize_t5") for s in suggested), plan.reason


def test_mps_limit_is_pytorchs_high_watermark(monkeypatch):
    """PyTorch's MPS allocator allows 1.7 x Metal's recommended working set (PYTORCH_MPS_HIGH_WATERMARK_RATIO)."""
    mac = get_profile("Apple M2 16 GB")
    assert mac.free_gpu_bytes == int(1.7 * mac.mps_working_set_bytes)
    monkeypatch.setenv("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "1.0")
    assert devices.mps_memory_limit(10 * GiB) == 10 * GiB
    assert devices.sdpa_kernel("mps", torch.bfloat16) == "mps"  # not CUDA's math kernel


def test_attention_slicing_reaches_no_sd3_component():
    """diffusers' enable_attention_slicing calls set_attention_slice on components that have it; no
    component of SD3 does, so the planner never counts on it."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    for component in (SD3Transformer2DModel, AutoencoderKL, CLIPTextModelWithProjection, T5EncoderModel):
        assert not hasattr(component, "set_attention_slice"), component


# ---- B5: the image size -----------------------------------------------------------------------------
def test_planning_takes_the_image_size():
    card = get_profile("RTX 4090 24 GB")
    default = plan_on(card, "sd35-large-nf4", **FULL_T5)
    large = plan_on(card, "sd35-large-nf4", size=2048, **FULL_T5)
    assert default.offload == "none" and default.size == (1024, 1024)
    assert large.size == (2048, 2048) and large.offload != "none"  # the 2048 px decode has no room
    assert large.working.decode == 4 * default.working.decode
    wide = plan_on(card, "sd35-large-nf4", size=(1024, 2048), **FULL_T5)
    assert wide.size == (1024, 2048) and wide.working.decode == 2 * default.working.decode
    with pytest.raises(ValueError, match="size must be"):
        plan_on(card, "sd35-large-nf4", size=0)


def test_a_size_the_plan_has_no_room_for_is_refused():
    plan = plan_on(get_profile("RTX 4090 24 GB"), "sd35-large-nf4", **FULL_T5)
    check_room_for_size(plan, 1024, 1024)
    with pytest.raises(GPUOutOfMemoryError, match=r"2048x2048 image needs about .* size=\(2048, 2048\)"):
        check_room_for_size(plan, 2048, 2048)


def test_generate_refuses_a_size_the_loaded_plan_has_no_room_for(tiny_dir):
    """The stand-in loaded, its plan re-made as on a CUDA card with just the room for 64 px: a larger
    image is refused before any work, with what it needs and how to plan for it."""
    pipe = helpers.load_pipeline("tiny")
    try:
        with on_profile(get_profile("RTX 4090 24 GB")):
            plan = helpers.plan_loading("tiny", stand_in=True, offload="none")
        plan.free_bytes = plan.gpu_bytes_needed
        pipe.load_info.plan = plan
        from helpers.generation.text_to_image import check_arguments

        assert check_arguments(pipe, "fits")[2]["height"] == 64  # generate's own checks pass at 64 px
        with pytest.raises(GPUOutOfMemoryError, match="256x256 image needs about"):
            helpers.generate(pipe, "too big", num_inference_steps=1, height=256, width=256)
    finally:
        helpers.release_current_pipeline()


# ---- B7: fast=True with sequential offload ---------------------------------------------------------
def test_fast_with_sequential_offload_is_refused_before_loading(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with on_profile(get_profile("RTX 4060 8 GB")):
        with pytest.raises(ValueError, match="fast=True cannot speed up offload='sequential'"):
            helpers.load_pipeline("sd35-large", stand_in=False, offload="sequential", fast=True)


def test_working_memory_constants_are_used_by_phase():
    working = memory_model.phase_working("large", 1024, torch.bfloat16, "flash")
    assert working.text == memory_model.TEXT_ENCODING_BYTES
    assert 0.45 * GiB < working.denoise < 0.6 * GiB and 2.3 * GiB < working.decode < 2.6 * GiB


def test_a_busy_16_gb_mac_gets_a_smaller_image_before_nothing_fits():
    """10 GiB of RAM left: bf16 Medium without T5 needs its 6.28 GiB of weights once while loading (the
    mapped shard is not counted twice), and at 1024x1024 the MPS attention estimate puts it just over;
    the alternatives then try smaller sizes, largest first, instead of "nothing fits"."""
    mac = get_profile("Apple 16 GB, 10 GiB free")
    assert mac.host_available_bytes == 10 * GiB
    plan = plan_on(mac, "sd35-medium", drop_t5=True)
    assert plan.host_loading_bytes == plan.total_bytes < 6.5 * GiB  # weights once, not weights + shard
    found = plan_on(mac, "sd35-medium")
    assert not found.fits and found.would_fit["size"] == (896, 896) and "size=(896, 896)" in found.reason
    smaller = plan_on(mac, **found.would_fit)
    assert smaller.fits and smaller.t5 == "dropped" and smaller.size == (896, 896)
    assert plan_on(mac, "sd35-medium", drop_t5=True, size=768).fits
    # The size search is only for "nothing fits": a plan that fits lists no smaller-size plans.
    assert all("size" not in kwargs for kwargs in plan_on(get_profile("Apple M2 16 GB"), "sd35-medium").better)
