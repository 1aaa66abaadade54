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
