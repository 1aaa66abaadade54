"""load_pipeline: every preset's plan on the stand-in, memory planning, tokens, one pipeline per kernel."""

import bitsandbytes as bnb
import pytest
import torch

import helpers
from helpers.errors import GatedModelError, GPUOutOfMemoryError, QuantizationNeedsGPUError
from helpers.loading import devices, load
from helpers.loading.checks import check_fits
from helpers.loading.planner import LoadingPlan, choose_offload, estimate_footprint
from helpers.measuring import GiB

FAKE_TOKEN = "hf_" + "Zq7" * 12  # shaped like a token, valid for nothing


def linears(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


def test_tiny_loads_in_fp32_on_cpu_with_its_plan(tiny_dir):
    pipe = helpers.load_pipeline("tiny")
    plan = pipe.load_info.plan
    assert plan.stand_in and plan.device == "cpu" and plan.offload == "none"
    assert plan.dtype == torch.float32 and pipe.transformer.dtype == torch.float32
    assert pipe.load_info.recommended.num_inference_steps == 4
    assert str(tiny_dir) == plan.model_id


def test_bf16_preset_on_the_stand_in(tiny_dir):
    pipe = helpers.load_pipeline("sd35-large", stand_in=True, dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.text_encoder_3.dtype == torch.bfloat16
    assert not linears(pipe.transformer, bnb.nn.Linear4bit)
    assert pipe.load_info.blog.guidance_scale == 2.5


def test_nf4_preset_really_quantizes_the_transformer(bnb_cpu):
    full = helpers.load_pipeline("sd35-large", stand_in=True, dtype=torch.bfloat16, keep_previous=True)
    nf4 = helpers.load_pipeline("sd35-large-nf4", stand_in=True, keep_previous=True)
    layers = linears(nf4.transformer, bnb.nn.Linear4bit)
    assert layers and all(layer.weight.quant_type == "nf4" for layer in layers)
    assert layers[0].compute_dtype == torch.bfloat16
    # Every Linear of the transformer became 4-bit, none left in full precision.
    assert not [m for m in nf4.transformer.modules() if type(m) is torch.nn.Linear]
    assert nf4.transformer.get_memory_footprint() < full.transformer.get_memory_footprint()
    # The Linear weights themselves pack 4 bits per bf16 weight: a quarter of the bytes.
    packed = sum(layer.weight.numel() * layer.weight.element_size() for layer in layers)
    dense = sum(m.weight.numel() * m.weight.element_size() for m in linears(full.transformer, torch.nn.Linear))
    assert packed == dense // 4
    assert not linears(nf4.text_encoder_3, bnb.nn.Linear4bit)  # T5 stays full unless asked
    image = helpers.generate(nf4, "a cat", num_inference_steps=2).image
    assert image.size == (64, 64)
    helpers.release_pipeline(full)


def test_8bit_preset(bnb_cpu):
    pipe = helpers.load_pipeline("sd35-large-8bit", stand_in=True)
    assert linears(pipe.transformer, bnb.nn.Linear8bitLt)
    assert pipe.load_info.plan.quantization == "int8"


def test_quantize_t5_and_drop_t5(bnb_cpu):
    pipe = helpers.load_pipeline("sd35-large-nf4", stand_in=True, quantize_t5=True)
    assert linears(pipe.text_encoder_3, bnb.nn.Linear4bit)
    assert pipe.load_info.plan.t5 == "nf4"
    helpers.generate(pipe, "a cat", num_inference_steps=1)

    no_t5 = helpers.load_pipeline("sd35-large", stand_in=True, drop_t5=True)
    assert no_t5.text_encoder_3 is None and no_t5.tokenizer_3 is None
    assert "text_encoder_3" not in no_t5.load_info.plan.estimated_bytes
    assert helpers.generate(no_t5, "a cat", num_inference_steps=1).image.size == (64, 64)


def test_without_the_shim_cpu_quantization_is_refused_clearly(tiny_dir):
    with pytest.raises(QuantizationNeedsGPUError, match="GPU"):
        helpers.load_pipeline("sd35-large-nf4", stand_in=True)


def test_loading_another_pipeline_releases_the_previous_one(tiny_dir):
    first = helpers.load_pipeline("tiny")
    second = helpers.load_pipeline("tiny")
    assert first.transformer is None and first.text_encoder_3 is None
    assert second.transformer is not None
    with pytest.raises(ValueError, match="released"):
        helpers.generate(first, "a cat")
    kept = helpers.load_pipeline("tiny", keep_previous=True)
    assert second.transformer is not None and kept.transformer is not None


@pytest.mark.parametrize(
    "free_gib,expected",
    [(80, "none"), (24, "none"), (16, "model"), (12, "model"), (10, "does not fit"), (8, "does not fit")],
)
def test_offload_auto_picks_the_fastest_plan_that_fits(free_gib, expected):
    # Exact sizes of SD3.5 Large in NF4 with full T5 on a simulated CUDA GPU; a quantized model is
    # never streamed layer by layer (accelerate's sequential hooks break bitsandbytes' 4-bit state).
    # Model offload costs its largest phase: T5 + CLIP-G while encoding (10.4 GiB reserved), so a
    # 12 GB card runs it (the H200 measured 10.21 GiB allocated, 10.33 reserved).
    estimated = estimate_footprint(helpers.PRESETS["sd35-large-nf4"].census, torch.bfloat16, "nf4")
    choice, reason = choose_offload("auto", "cuda", estimated, int(free_gib * GiB), quantized=True)
    assert (reason if expected == "does not fit" else choice).startswith(expected), reason
    assert choice != "sequential"
    assert "GiB" in reason


def test_sequential_offload_of_a_quantized_model_is_refused_before_loading():
    estimated = estimate_footprint(helpers.PRESETS["sd35-large-nf4"].census, torch.bfloat16, "nf4")
    with pytest.raises(ValueError, match="meta"):
        choose_offload("sequential", "cuda", estimated, 8 * GiB, quantized=True)
    # Not quantized, a small GPU still streams layers when that is all that fits.
    bf16 = estimate_footprint(helpers.PRESETS["sd35-large"].census, torch.bfloat16)
    assert choose_offload("auto", "cuda", bf16, 12 * GiB)[0] == "sequential"


def test_plan_sizes_follow_precision():
    params = helpers.PRESETS["sd35-large"].census
    bf16 = estimate_footprint(params, torch.bfloat16)
    nf4 = estimate_footprint(params, torch.bfloat16, "nf4")
    no_t5 = estimate_footprint(params, torch.bfloat16, "nf4", t5="dropped")
    assert 15 * GiB < bf16["transformer"] < 16 * GiB  # 8.05 B parameters x 2 bytes
    assert nf4["transformer"] < 0.3 * bf16["transformer"]
    assert nf4["text_encoder_3"] == bf16["text_encoder_3"]
    assert "text_encoder_3" not in no_t5


def test_forced_no_offload_that_cannot_fit_fails_before_loading():
    estimated = estimate_footprint(helpers.PRESETS["sd35-large"].census, torch.bfloat16)
    plan = LoadingPlan(
        "sd35-large", "x", False, "cuda", torch.bfloat16, None, "full", "none", "asked", estimated, 16 * GiB
    )
    with pytest.raises(GPUOutOfMemoryError, match="offload='auto'"):
        check_fits(plan)
    plan.free_bytes = 80 * GiB
    check_fits(plan)


def test_offload_on_cpu_is_refused_and_never_calls_accelerate(tiny_dir):
    with pytest.raises(ValueError, match="runs on the CPU"):
        helpers.plan_loading("tiny", offload="model")
    assert helpers.plan_loading("tiny", offload="auto").offload == "none"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(model="sd35-huge"), "Unknown model preset"),
        (dict(model="tiny", offload="sometimes"), "offload must be"),
        (dict(model="tiny", device="tpu"), "device must be"),
        (dict(model="tiny", dtype="float8"), "dtype must be"),
        (dict(model="tiny", drop_t5=True, quantize_t5=True), "contradict"),
    ],
)
def test_bad_options_fail_before_loading(kwargs, message):
    with pytest.raises(ValueError, match=message):
        helpers.load_pipeline(**kwargs)


def test_gated_model_without_token_says_what_to_do(capsys):
    with pytest.raises(GatedModelError) as info:
        helpers.load_pipeline("sd35-large", stand_in=False)
    text = str(info.value)
    assert "accept the licence" in text and "HF_TOKEN" in text
    assert "https://huggingface.co/stabilityai/stable-diffusion-3.5-large" in text


def test_token_is_never_printed_or_put_in_errors(monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert helpers.find_token() == FAKE_TOKEN
    # Refused before loading: offline and not cached, or (on a small machine) does not fit host RAM.
    with pytest.raises((FileNotFoundError, GPUOutOfMemoryError)) as info:
        helpers.load_pipeline("sd35-large", stand_in=False)
    out = capsys.readouterr()
    for text in (str(info.value), out.out, out.err, caplog.text):
        assert FAKE_TOKEN not in text
        assert "hf_Zq7" not in text


def test_model_id_switches_between_hub_and_stand_in(tiny_dir):
    assert helpers.model_id("sd35-large", stand_in=False) == "stabilityai/stable-diffusion-3.5-large"
    assert helpers.model_id("sd35-medium", stand_in=False) == "stabilityai/stable-diffusion-3.5-medium"
    assert helpers.model_id("sd35-large", stand_in=True) == str(tiny_dir)
    assert helpers.use_stand_in(None) is True  # no GPU on this machine


def test_stand_in_banner_is_loud_once_per_kernel(tiny_dir, capsys, monkeypatch):
    monkeypatch.setattr(load, "_stand_in_announced", False)  # as in a fresh kernel
    helpers.load_pipeline("tiny")
    helpers.load_pipeline("tiny")
    assert capsys.readouterr().out.count("OFFLINE STAND-IN: random weights, images are noise.") == 1


@pytest.mark.parametrize("name", list(helpers.PRESETS))
def test_every_preset_loads_and_generates_on_the_stand_in(name, bnb_cpu):
    preset = helpers.PRESETS[name]
    pipe = helpers.load_pipeline(name, stand_in=True)
    plan = pipe.load_info.plan
    assert plan.stand_in and plan.quantization == preset.quantization
    kind = {"nf4": bnb.nn.Linear4bit, "int8": bnb.nn.Linear8bitLt}.get(preset.quantization)
    if kind is not None:
        assert linears(pipe.transformer, kind)
    result = helpers.generate(pipe, "a cat", num_inference_steps=2)
    assert result.recipe["model"] == name and result.recipe["guidance_scale"] == preset.model_card.guidance_scale
    assert result.image.size == (64, 64)


def test_free_memory_is_measured_after_the_previous_pipeline_is_released(tiny_dir, monkeypatch):
    """A second load must see the memory the first one frees (and PyTorch's cache of it)."""
    events = []
    monkeypatch.setattr(devices, "release_cached_memory", lambda device: events.append("cache emptied"))

    def free_memory(device):
        released = load._current_pipeline is None and events[-1:] == ["cache emptied"]
        return 24 * GiB if released else 1 * GiB

    helpers.load_pipeline("tiny")
    monkeypatch.setattr(devices, "free_accelerator_memory", free_memory)
    second = helpers.load_pipeline("tiny")
    assert second.load_info.plan.free_bytes == 24 * GiB


def test_no_offload_loads_straight_to_the_device(tiny_dir):
    """diffusers' device_map places each component as it is read: host RAM never holds the pipeline."""
    pipe = helpers.load_pipeline("tiny")
    assert pipe.hf_device_map == "cpu"
    assert pipe.load_info.plan.host_bytes_needed > 0  # the CPU's weights live in host RAM
    assert helpers.generate(pipe, "a cat", num_inference_steps=1).image.size == (64, 64)


def test_host_ram_is_part_of_the_plan(tiny_dir, monkeypatch):
    """Model offload parks every component in host RAM: on 12.7 GB of RAM it does not fit."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "compute_capability", lambda device="cuda": (7, 5))
    plan = helpers.plan_loading("sd35-large-nf4", stand_in=False, free_bytes=16 * GiB, host_bytes=10 * GiB)
    assert not plan.fits and plan.host_bytes_available == 10 * GiB
    assert "host RAM must hold" in plan.reason and "this would: load_pipeline(" in plan.reason
    roomy = helpers.plan_loading("sd35-large-nf4", stand_in=False, free_bytes=12 * GiB, host_bytes=64 * GiB,
                                 quantize_t5=True)
    assert roomy.fits and roomy.offload == "model"
    assert roomy.host_bytes_needed >= roomy.total_bytes  # everything waits in host RAM
    assert roomy.working_bytes > 0 and roomy.kernel == "memory-efficient"


def test_apple_silicon_never_offloads_and_says_what_it_supports(tiny_dir, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(devices, "mps_recommended_memory", lambda: 48 * GiB)
    monkeypatch.setattr(devices, "free_accelerator_memory", lambda device: 10 * GiB)
    plan = helpers.plan_loading("sd35-large-nf4", stand_in=False, device="mps", drop_t5=True)
    assert plan.offload == "none" and not plan.fits  # unified memory: offload would not help
    with pytest.raises(ValueError, match="unified memory"):
        helpers.plan_loading("sd35-large-nf4", stand_in=False, device="mps", offload="model")
    with pytest.raises(ValueError, match="CUDA.*'sd35-large-nf4'"):
        helpers.plan_loading("sd35-large-8bit", stand_in=False, device="mps")


def test_release_empties_the_mps_cache(tiny_dir, monkeypatch):
    emptied = []
    pipe = helpers.load_pipeline("tiny")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: emptied.append(True))
    helpers.release_current_pipeline()
    assert emptied and pipe.transformer is None


def test_a_hub_id_that_does_not_fit_gets_a_suggestion_too(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "compute_capability", lambda device="cuda": (8, 9))
    plan = helpers.plan_loading("someone/sd35-large-finetune", stand_in=False, free_bytes=12 * GiB,
                                host_bytes=64 * GiB, offload="model")
    assert not plan.fits and plan.total_bytes > 25 * GiB  # SD3.5 Large's architecture, bf16
    assert plan.would_fit is not None and plan.would_fit["model"] == "someone/sd35-large-finetune"


def test_a_load_that_cannot_run_here_keeps_the_pipeline_you_have(tiny_dir):
    """NF4 on a machine without a GPU is refused before the previous pipeline is released."""
    pipe = helpers.load_pipeline("tiny")
    with pytest.raises(helpers.QuantizationNeedsGPUError, match="only does that on a GPU"):
        helpers.load_pipeline("sd35-large-nf4", stand_in=True)
    assert pipe.transformer is not None
    assert helpers.generate(pipe, "still here", num_inference_steps=1).image.size == (64, 64)
    helpers.release_current_pipeline()


def test_an_uncached_model_offline_is_refused_before_the_pipeline_you_have_is_released(tiny_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "Xy4" * 12)  # a token is there; the model is not cached
    pipe = helpers.load_pipeline("tiny")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        helpers.load_pipeline("sd35-medium", stand_in=False, device="cpu")
    assert pipe.transformer is not None
    helpers.release_current_pipeline()
