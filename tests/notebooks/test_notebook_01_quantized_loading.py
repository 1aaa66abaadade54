"""Notebook 01 runs the blog's code top to bottom on the stand-in: NF4 through the test shim, and
bf16 when diffusers refuses to quantize without a GPU (the kernel a reader without a GPU gets)."""

import re

import pytest
from notebook_harness import cell_outputs_text, run_notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb01")
    return out, run_notebook("01_quantized_loading.ipynb", out, SIZE=64, STEPS=2)


@pytest.fixture(scope="module")
def executed_without_gpu(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb01-nogpu")
    return out, run_notebook("01_quantized_loading.ipynb", out, bnb_cpu_shim=False, SIZE=64, STEPS=2)


def image_outputs(nb):
    return [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def test_dtype_rename_is_shown_from_diffusers_itself(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "def _resolve_dtype(dtype, torch_dtype):" in text
    assert "Passing both: You have passed both `dtype` and `torch_dtype`" in text


def test_blog_code_runs_in_nf4_and_shows_its_image(executed):
    out, nb = executed
    text = cell_outputs_text(nb)
    assert "bitsandbytes.nn.modules.Linear4bit layers, NF4" in text
    # No GPU here: diffusers' own refusal of offload is printed, and the image is still made.
    assert "`enable_model_cpu_offload` requires accelerator, but not found" in text
    assert re.search(r"64x64 px, 2 steps, guidance 7\.5, NF4 transformer, [\d.]+ s on cpu", text)
    assert (out / "outputs" / "blog_code_image.png").stat().st_size > 100
    assert len(image_outputs(nb)) >= 2  # the image, then the footprint chart
    m = re.search(r"(\d+) of the transformer's (\d+) Linear layers are Linear4bit", text)
    assert m and int(m.group(1)) > 0
    assert "quantization block size: 64 weights share one scale" in text


def test_without_a_gpu_the_same_code_runs_in_bf16(executed_without_gpu):
    out, nb = executed_without_gpu
    text = cell_outputs_text(nb)
    assert "No GPU found" in text and "builds the pipeline with the bf16 transformer" in text
    assert "torch.nn.modules.linear.Linear layers, bf16" in text
    assert re.search(r"64x64 px, 2 steps, guidance 7\.5, bf16 transformer, [\d.]+ s on cpu", text)
    assert (out / "outputs" / "blog_code_image.png").stat().st_size > 100
    assert "NF4 pipeline (needs a GPU: not loaded)" in text


def test_footprint_table_and_computed_prose(executed):
    out, nb = executed
    text = cell_outputs_text(nb)
    m = re.search(r"The NF4 transformer takes \*\*[\d.]+ [KMG]iB\*\* against [\d.]+ [KMG]iB in bf16: ([\d.]+)x smaller", text)
    assert m and float(m.group(1)) > 1.0  # the stand-in keeps big non-Linear tensors (pos_embed)
    from helpers.loading import hardware_profiles

    big = hardware_profiles.get_profile("A100 80 GB")
    exact = (hardware_profiles.plan_on(big, "sd35-large").estimated_bytes["transformer"]
             / hardware_profiles.plan_on(big, "sd35-large-nf4").estimated_bytes["transformer"])
    assert 3.3 < exact < 4.0  # under 4x: block scales and the layers bitsandbytes leaves in bf16
    assert "8.1 billion parameters (published count)" in text and f"{exact:.2f}x smaller" in text
    assert "GPU memory for SD3.5 Large with an NF4 transformer" in text
    assert text.count("OFFLINE STAND-IN: random weights") == 1
    assert (out / "outputs" / "figures" / "footprint_bf16_vs_nf4.png").stat().st_size > 1000


def test_everything_written_lands_in_the_ignored_outputs_folder(executed):
    out, _ = executed
    assert sorted(p.name for p in out.iterdir()) == ["01_quantized_loading.ipynb", "outputs"]
