"""Notebook 07 loads the stand-in's transformer under every backend that runs on a CPU (bitsandbytes
through the test-only CPU shim), measures each against bf16, and says plainly what it could not run."""

import ast
import re

import pytest
from notebook_harness import cell_outputs_text, executed_once

from helpers.loading import memory_model
from helpers.loading import quantization_backends as backends
from helpers.measuring import format_bytes


def source(cell) -> str:
    return "".join(cell["source"])


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    return executed_once("07_quantization_backends.ipynb", tmp_path_factory, STEPS=2)


def side_by_side(text: str) -> dict[str, list[str]]:
    """The measured table's rows, by backend: [status, load, bytes, model bytes, error, s/image, difference]
    (eager rows; the "compiled" column, last, is checked to say "no" for them)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] in backends.BACKENDS:
            assert cells[-1] == "no", cells  # no row is compiled on a CPU: the compile cell skips there
            rows[cells[0]] = cells[1:-1]
    return rows


def test_every_cpu_backend_ran_and_its_bytes_are_the_memory_model_s(executed, tiny_dir):
    _, nb = executed
    text = cell_outputs_text(nb)
    rows = side_by_side(text)
    assert set(rows) == set(backends.BACKENDS)
    counts = memory_model.folder_census(tiny_dir)["transformer"]
    import torch

    for name, (status, _load, held, model, error, seconds, difference) in rows.items():
        if name == "torchao float8":  # needs CUDA sm_89+: on this CPU, torchao's own assertion says so
            assert status.startswith("cannot run here: Float8 dynamic quantization requires CUDA"), status
            continue
        assert status == "ok", (name, status)
        expected = memory_model.loaded_bytes(counts, torch.bfloat16, backends.BACKENDS[name].quantization)
        assert held == model == format_bytes(expected), (name, held, model)
        assert float(seconds) > 0
        error = float(error.rstrip("%")) / 100
        if name == "bf16":
            assert error == 0 and float(difference) == 0
        else:
            assert 0 < error < 0.2, (name, error)  # off bf16, but the same model
    # 4-bit backends are further from bf16 than 8-bit ones on the same weights.
    err = {name: float(r[4].rstrip("%")) for name, r in rows.items() if r[0] == "ok"}
    assert err["GGUF Q4_0"] > err["GGUF Q8_0"] and err["bitsandbytes NF4"] > err["torchao int8 weight-only"]
    assert "7 of 8 backends ran here; the memory model's bytes match the loaded tensors exactly for 7 of them." in text


def test_gguf_file_was_written_in_original_keys_and_loaded_through_from_single_file(executed):
    import gguf

    out, nb = executed
    for quant, qtype in (("Q8_0", gguf.GGMLQuantizationType.Q8_0), ("Q4_0", gguf.GGMLQuantizationType.Q4_0)):
        reader = gguf.GGUFReader(out / "outputs" / f"stand-in-transformer-{quant}.gguf")
        types = {t.name: t.tensor_type for t in reader.tensors}
        assert types["joint_blocks.0.x_block.attn.qkv.weight"] == qtype
        assert types["final_layer.linear.weight"] == qtype
        assert not any(name.startswith("transformer_blocks.") for name in types)
    code = [source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    calls = {ast.unparse(n.func) for cell in code for n in ast.walk(ast.parse(cell)) if isinstance(n, ast.Call)}
    assert {"SD3Transformer2DModel.from_single_file", "GGUFQuantizationConfig", "TorchAoConfig", "BitsAndBytesConfig",
            "transformer.enable_layerwise_casting", "Float8DynamicActivationFloat8WeightConfig",
            "Int8WeightOnlyConfig", "hf_hub_download"} <= calls
    assert (out / "outputs" / "backends.png").is_file()


def test_full_size_table_where_it_runs_and_gpu_rows(executed):
    import torch

    _, nb = executed
    text = cell_outputs_text(nb)
    full = backends.full_size_bytes("large", torch.bfloat16)
    for name, size in full.items():
        assert f"| {name} | {format_bytes(size)} | {size / full['bf16']:.0%} |" in text
    counts = memory_model.FULL_SIZE["large"]["transformer"]
    left = 1 - counts.layerwise_cast / counts.parameters
    assert f"fp8 layerwise storage leaves {left:.0%} of the transformer's values in bf16" in text
    assert re.search(r"`norm_out.linear`\) hold 3\d% of all Linear weights", text)  # about a third, counted on meta
    # Every cited line found: one per backend that cites one, and optimum-quanto's deprecation line.
    assert text.count("| yes |") == len(backends.BACKENDS) - 1 + len(backends.LEFT_OUT) and "NOT FOUND" not in text
    assert "| optimum-quanto (diffusers' QuantoConfig) |" in text
    measured = backends.measured_rows(__import__("helpers.loading.plan_benchmarks", fromlist=["x"]).gpu_results())
    if measured:
        assert "| measured on | backend |" in text
    else:
        assert "**Not measured on a GPU yet**" in text


def test_pipeline_quantization_config_torchao_compile_strips_and_chooser(executed):
    """PipelineQuantizationConfig quantizes the transformer and T5 in one call, to the bytes load_pipeline's
    plan counts; the compile cell says why it skips on a CPU; the strips are saved; the chooser is the
    helper's table for this notebook's rows."""
    import torch

    from helpers import format_bytes, plan_loading

    out, nb = executed
    text = cell_outputs_text(nb)
    counted = plan_loading("sd35-large-nf4", quantize_t5=True, drop_t5=False, offload="none", dtype=torch.bfloat16,
                           stand_in=True).estimated_bytes
    for name in ("transformer", "text_encoder_3"):
        m = re.search(rf"{name}: bitsandbytes\.nn\.modules\.Linear4bit layers, ([\d.]+ [KMG]iB) held; "
                      rf"load_pipeline's plan counts ([\d.]+ [KMG]iB)", text)
        assert m and m.group(1) == m.group(2) == format_bytes(counted[name]), (name, m)
    assert "skipped here: compiling on a cpu takes minutes" in text
    assert (out / "outputs" / "backends.png").stat().st_size > 1000
    assert "| GPU class (memory, the profile it is planned on) | fit: smallest |" in text
    for label in backends.CHOOSER_CLASSES:
        assert f"| {label}, " in text
    code = [source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    assert any("backends.chooser(rows, measured)" in c for c in code)
    assert any('quant_backend="bitsandbytes_4bit"' in c and "components_to_quantize" in c for c in code)
    assert any("block.compile()" in c and "compiled=True" in c for c in code)
