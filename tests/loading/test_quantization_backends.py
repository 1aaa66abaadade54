"""helpers.loading.quantization_backends and the memory model's new rules: every backend that runs on a
CPU loads the stand-in's transformer with diffusers' own calls, and its bytes are the model's, exactly."""

import pytest
import torch
from diffusers import BitsAndBytesConfig, GGUFQuantizationConfig, SD3Transformer2DModel, TorchAoConfig

from helpers.loading import gguf_checkpoints, memory_model
from helpers.loading import quantization_backends as backends


def load(backend, folder, tmp_path):
    """The stand-in's transformer under `backend`, by the calls notebook 07 shows."""
    dtype = torch.bfloat16
    kwargs = dict(subfolder="transformer", dtype=dtype)
    if backend == "bitsandbytes NF4":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return SD3Transformer2DModel.from_pretrained(folder, quantization_config=config, **kwargs)
    if backend == "bitsandbytes int8":
        return SD3Transformer2DModel.from_pretrained(folder, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                                     **kwargs)
    if backend == "torchao int8 weight-only":
        from torchao.quantization import Int8WeightOnlyConfig

        return SD3Transformer2DModel.from_pretrained(folder, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()),
                                                     **kwargs)
    if backend.startswith("GGUF"):
        bf16 = SD3Transformer2DModel.from_pretrained(folder, **kwargs)
        path = gguf_checkpoints.write_gguf(bf16, tmp_path / "t.gguf", backend.split()[1])
        return SD3Transformer2DModel.from_single_file(
            str(path), config=str(folder), quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), **kwargs)
    transformer = SD3Transformer2DModel.from_pretrained(folder, **kwargs)
    if backend == "fp8 layerwise storage":
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    return transformer


CPU_BACKENDS = [name for name in backends.BACKENDS if name != "torchao float8"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bytes_held_are_the_memory_model_s_byte_for_byte(bnb_cpu, tiny_dir, tmp_path, backend):
    transformer = load(backend, tiny_dir, tmp_path)
    counts = memory_model.folder_census(tiny_dir)["transformer"]
    expected = memory_model.loaded_bytes(counts, torch.bfloat16, backends.BACKENDS[backend].quantization)
    assert backends.transformer_bytes(transformer) == expected


def test_torchao_tensors_are_counted_by_what_they_store(tiny_dir, tmp_path):
    transformer = load("torchao int8 weight-only", tiny_dir, tmp_path)
    weight = transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "Int8Tensor"
    assert weight.qdata.dtype == torch.int8 and weight.scale.dtype == torch.float32
    assert backends.transformer_bytes(transformer) < backends.transformer_bytes(load("bf16", tiny_dir, tmp_path))


def test_full_size_bytes_follow_each_storage_rule():
    large = memory_model.FULL_SIZE["large"]["transformer"]
    sizes = backends.full_size_bytes("large")
    rest = large.other * 2
    assert sizes["bf16"] == large.parameters * 2
    assert sizes["GGUF Q8_0"] == large.linear_weights // 32 * 34 + rest
    assert sizes["GGUF Q4_0"] == large.linear_weights // 32 * 18 + rest
    assert sizes["torchao int8 weight-only"] == sizes["torchao float8"] == sizes["bitsandbytes int8"]
    # Layerwise casting skips every module named like "norm", SD3's adaLN Linear layers included.
    assert large.linear_weights > large.layerwise_cast > 0.6 * large.linear_weights
    assert sizes["fp8 layerwise storage"] == large.layerwise_cast + (large.parameters - large.layerwise_cast) * 2
    with pytest.raises(ValueError, match="quantization must be one of"):
        memory_model.loaded_bytes(large, torch.bfloat16, "q3_k")


def test_every_where_it_runs_claim_is_in_the_installed_library():
    assert {name: backends.source_says(name) for name in backends.BACKENDS} == {
        name: (None if b.source is None else True) for name, b in backends.BACKENDS.items()}


def test_relative_error_and_inputs():
    inputs = backends.forward_inputs("large", 1024, dtype=torch.bfloat16, device="meta")
    assert inputs["hidden_states"].shape == (1, 16, 128, 128)
    assert inputs["encoder_hidden_states"].shape == (1, memory_model.TEXT_TOKENS, 4096)
    reference = torch.tensor([3.0, 4.0])
    assert backends.relative_error(torch.tensor([3.0, 4.0]), reference) == 0
    assert backends.relative_error(torch.tensor([3.0, 3.0]), reference) == pytest.approx(0.2)


def test_measure_reports_a_backend_that_cannot_run_here_and_raises_real_bugs():
    bench = backends.Bench(pipe=None, inputs={}, device="cpu", generate_kwargs={})

    def needs_gpu():
        raise RuntimeError("No GPU found. A GPU is needed for quantization.")

    def broken():
        raise RuntimeError("size mismatch")

    row = backends.measure("bitsandbytes int8", needs_gpu, bench)
    assert row["status"] == "cannot run here: No GPU found. A GPU is needed for quantization."
    with pytest.raises(RuntimeError, match="size mismatch"):
        backends.measure("bitsandbytes int8", broken, bench)


def test_pipeline_quantization_config_does_what_load_pipeline_does_by_hand(bnb_cpu, tiny_dir):
    """One PipelineQuantizationConfig (notebook 07) quantizes the transformer and T5 exactly as load_pipeline's
    two by-hand configs do: the same keys, every tensor (packed weights, scales, quant state) equal."""
    from diffusers import PipelineQuantizationConfig, StableDiffusion3Pipeline

    import helpers

    config = PipelineQuantizationConfig(
        quant_backend="bitsandbytes_4bit",
        quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch.bfloat16},
        components_to_quantize=["transformer", "text_encoder_3"])
    one_config = StableDiffusion3Pipeline.from_pretrained(tiny_dir, quantization_config=config, dtype=torch.bfloat16)
    by_hand = helpers.load_pipeline("sd35-large-nf4", stand_in=True, quantize_t5=True, drop_t5=False, offload="none",
                                    dtype=torch.bfloat16)
    try:
        assert by_hand.load_info.plan.t5 == "nf4" and by_hand.load_info.plan.quantization == "nf4"
        for name in ("transformer", "text_encoder_3"):
            a, b = getattr(one_config, name).state_dict(), getattr(by_hand, name).state_dict()
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor)), name
            assert any("Linear4bit" in type(m).__name__ for m in getattr(one_config, name).modules())
        assert helpers.component_footprints(one_config) == helpers.component_footprints(by_hand)
    finally:
        helpers.release_current_pipeline()


def test_runs_on_profile_applies_the_cited_rules():
    from helpers.loading import hardware_profiles

    t4, ada, mac = (hardware_profiles.get_profile(n) for n in ("free Colab T4", "RTX 4090 24 GB", "Apple M2 16 GB"))
    assert backends.runs_on_profile("torchao float8", ada) and not backends.runs_on_profile("torchao float8", t4)
    assert backends.runs_on_profile("bitsandbytes NF4", mac) and not backends.runs_on_profile("bitsandbytes int8", mac)
    assert backends.runs_on_profile("GGUF Q4_0", mac) and not backends.runs_on_profile("fp8 layerwise storage", mac)
    # Every backend has a rule, and the rules agree with the cited lines' wording.
    assert all(backends.runs_on_profile(b, t4) in (True, False) for b in backends.BACKENDS)
    assert "MPS" in backends.BACKENDS["bitsandbytes NF4"].runs_on
    assert "does not accept MPS" in backends.BACKENDS["bitsandbytes int8"].runs_on


def test_chooser_cells_come_from_rows_and_rules():
    rows = [{"backend": "bf16", "status": "ok", "relative_error": 0.0},
            {"backend": "bitsandbytes NF4", "status": "ok", "relative_error": 0.08},
            {"backend": "GGUF Q8_0", "status": "ok", "relative_error": 0.01},
            {"backend": "torchao int8 weight-only", "status": "ok", "relative_error": 0.005},
            {"backend": "torchao float8", "status": "cannot run here: needs CUDA"}]
    measured = [{"gpu": "NVIDIA H200", "backend": "GGUF Q8_0", "s_per_forward": 0.3},
                {"gpu": "NVIDIA H200", "backend": "bf16", "s_per_forward": 0.2},
                {"gpu": "Tesla T4", "backend": "torchao float8", "s_per_forward": 0.1}]  # cannot run there: ignored
    table = {row["gpu_class"].split(",")[0]: row for row in backends.chooser(rows, measured)}
    assert set(table) == {label.split(",")[0] for label in backends.CHOOSER_CLASSES}
    sizes = backends.full_size_bytes("large")
    smallest = min(sizes, key=sizes.get)
    assert all(row["fit"].startswith(f"{smallest}:") for row in table.values())
    assert table["Hopper (sm_90)"]["fidelity"].startswith("bf16:")  # 80 GB: bf16 fits without offload
    assert table["Hopper (sm_90)"]["speed"] == "bf16: 0.20 s per forward on NVIDIA H200"
    assert table["T4 (Turing"]["speed"].startswith("not measured")
    # On a 12 GB Ampere card bf16 does not fit: the lowest measured error among what runs there.
    assert table["Ampere (sm_80/86)"]["fidelity"].startswith("torchao int8 weight-only: lowest error here (0.50%)")
    # On a Mac torchao int8 is not offered (no cited rule for MPS): GGUF Q8_0 is the closest.
    assert table["Apple Silicon (MPS)"]["fidelity"].startswith("GGUF Q8_0:")


def test_gpu_class_and_left_out_quanto():
    assert backends.gpu_class("NVIDIA H200") == "Hopper (sm_90)"
    assert backends.gpu_class("Tesla T4") == "T4 (Turing, sm_75)"
    assert backends.gpu_class("NVIDIA L4") == "Ada (sm_89)"
    assert backends.gpu_class("NVIDIA A100-SXM4-80GB") == "Ampere (sm_80/86)"
    assert backends.gpu_class("Apple M2") is None
    # optimum-quanto is left out because the installed diffusers deprecates its config: the line is there.
    assert backends.left_out_says("optimum-quanto (diffusers' QuantoConfig)")


def test_measure_marks_a_compiled_row_and_times_after_a_first_image(tiny_pipe, tiny_dir):
    config = SD3Transformer2DModel.load_config(tiny_dir, subfolder="transformer")
    inputs = backends.forward_inputs(config, 64, dtype=tiny_pipe.transformer.dtype, device="cpu")
    bench = backends.Bench(tiny_pipe, inputs, "cpu",
                           dict(prompt="a cat", seed=0, num_inference_steps=1, height=64, width=64))
    transformer = tiny_pipe.transformer

    row = backends.measure("bf16", lambda: transformer, bench, compiled=True)
    assert row["compiled"] == "yes" and row["first_image_s"] > 0 and row["s_per_image"] > 0
    assert backends.measure("bf16", lambda: transformer, bench)["compiled"] == "no"
    assert backends.measured_rows([{"meta": {"device": "NVIDIA H200"}, "rows": [
        {"backend": "bf16", "status": "ok", "relative_error": 0.0}]}])[0]["compiled"] == "no"
