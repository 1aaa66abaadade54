"""Notebook 01 runs top to bottom on the stand-in (NF4 really quantizes through the test shim)."""

import re

import pytest
from notebook_harness import cell_outputs_text, run_notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb01")
    return out, run_notebook("01_quantized_loading.ipynb", out, SIZE=64, STEPS=2)


def test_nf4_layers_and_footprint(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "Linear4bit(" in text
    m = re.search(r"(\d+) of the transformer's (\d+) Linear layers are Linear4bit", text)
    assert m and int(m.group(1)) > 0
    m = re.search(r"The NF4 transformer takes \*\*[\d.]+ [KMG]iB\*\* against [\d.]+ [KMG]iB in bf16: ([\d.]+)x smaller", text)
    assert m and float(m.group(1)) > 1.0  # the stand-in keeps big non-Linear tensors (pos_embed)


def test_plan_table_and_conclusion(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "| plan | status | load (s) |" in text
    assert "| NF4 + model CPU offload | not applicable: no GPU |" in text
    for plan in ("bf16", "NF4", "NF4 without T5", "NF4 with NF4 T5", "8-bit"):
        assert f"| {plan} | ok |" in text
    assert "Offload rows are not applicable: no GPU" in text
    assert "Mean absolute pixel difference" in text


def test_guide_and_prequantized_reload(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    for gib in (8, 12, 16, 24, 80):
        assert f"| {gib} GB |" in text
    assert "the images are **byte-identical**" in text
    assert "| reload pre-quantized | ok |" in text and "| quantize on load | ok |" in text
    assert "dtype=torch.float16, t5=nf4" in text


def test_figures_saved(executed):
    out, _ = executed
    for name in ("footprint_bf16_vs_nf4.png", "loading_plans.png", "bf16_vs_nf4_pixels.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert (out / "sd35-large-nf4-quantized" / "transformer" / "config.json").is_file()
