"""Notebook 03 saves the NF4 transformer, reloads it byte-identically and loads the T4 plan."""

import pytest
from notebook_harness import cell_outputs_text, run_notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb03")
    return out, run_notebook("03_quantize_once.ipynb", out, STEPS=2)


def test_prequantized_reload_is_byte_identical_and_measured(executed):
    out, nb = executed
    text = cell_outputs_text(nb)
    assert "the images are **byte-identical**" in text
    assert "| reload pre-quantized | ok |" in text and "| quantize on load | ok |" in text
    assert (out / "outputs" / "sd35-large-nf4-quantized" / "transformer" / "config.json").is_file()


def test_t4_plan(executed):
    """The T4 section uses the real planner's plan for the profile, runs exactly that plan, and
    quotes what the committed GPU check measured for it."""
    from helpers.loading import hardware_profiles
    from helpers.loading.planner import describe_options

    out, nb = executed
    text = cell_outputs_text(nb)
    kwargs = hardware_profiles.colab_t4_plan()
    assert f"The plan that fits: {describe_options(kwargs)}" in text
    assert "load_pipeline('sd35-large-nf4') there: does not fit" in text
    assert f"dtype=torch.float16, t5={'dropped' if kwargs.get('drop_t5') else 'nf4'}" in text
    assert "| NVIDIA H200 | free Colab T4: the planner's plan | ok |" in text
    assert "load the pre-quantized transformer" in text
    assert (out / "outputs" / "t4_plan.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["03_quantize_once.ipynb", "outputs"]
