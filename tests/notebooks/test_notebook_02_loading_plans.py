"""Notebook 02 measures every loading plan on the stand-in (NF4 through the test shim)."""

import pytest
from notebook_harness import cell_outputs_text, run_notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb02")
    return out, run_notebook("02_loading_plans.ipynb", out, STEPS=2)


def stderr_text(nb):
    return "".join("".join(o["text"]) for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr")


def test_plan_table_and_conclusion(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "| plan | status | load (s) |" in text
    assert "| NF4 + model CPU offload | not applicable: no GPU |" in text
    for plan in ("bf16", "NF4", "NF4 without T5", "NF4 with NF4 T5", "8-bit"):
        assert f"| {plan} | ok |" in text
    assert "Offload rows are not applicable: no GPU" in text
    assert "Mean absolute pixel difference" in text


def test_quiet_one_banner_and_one_bar_over_plans(executed):
    _, nb = executed
    assert cell_outputs_text(nb).count("OFFLINE STAND-IN: random weights") == 1
    err = stderr_text(nb)
    assert "plans (one image each): 100%" in err
    assert "2/2 [" not in err and "Loading pipeline components" not in err  # no per-image or per-load bars
    assert "MatMul8bitLt" not in err and "torchvision" not in err


def test_planner_and_hardware_profiles(executed):
    from helpers.loading import hardware_profiles

    _, nb = executed
    text = cell_outputs_text(nb)
    assert "This machine (cpu): offload='none'" in text
    # The profile table is the real planner on every machine readers use, as the README shows it.
    assert hardware_profiles.markdown(hardware_profiles.profile_plans()) in text


def test_fast_plan_row_and_what_it_costs(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "| bf16 fast (compiled) | ok |" in text
    assert "so compiling cost about" in text and ("pays for itself after about" in text or "never pays" in text)


def test_committed_gpu_measurements_are_shown(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "**NVIDIA H200**" in text
    assert "the offload, not NF4, is what makes the blog's code slow" in text


def test_figures_saved_in_the_outputs_folder(executed):
    out, _ = executed
    for name in ("loading_plans.png", "bf16_vs_nf4_pixels.png"):
        assert (out / "outputs" / "figures" / name).stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == ["02_loading_plans.ipynb", "outputs"]
