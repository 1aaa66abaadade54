"""Notebook 06 runs top to bottom on the stand-in: the interact app, the step hook, cancelling, the
latent preview, the worker thread, then the studio with one scripted image and the A/B pair."""

import re

import pytest
from notebook_harness import cell_outputs_text, executed_once, widget_views

STEPS = 4  # the tiny preset's recommended steps


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    """Run with TAESD3 on: a randomly initialised AutoencoderTiny of TAESD3's shape (16 latent
    channels), saved to a local folder, stands in for madebyollin/taesd3 (no download here)."""
    from diffusers import AutoencoderTiny

    taesd3 = tmp_path_factory.mktemp("taesd3")
    AutoencoderTiny(latent_channels=16, scaling_factor=1.5305).save_pretrained(taesd3)
    out, nb = executed_once("06_studio.ipynb", tmp_path_factory, MODEL="tiny", TAESD3=str(taesd3))
    return out, nb, cell_outputs_text(nb)


def source_of(nb, needle):
    return next("".join(c["source"]) for c in nb["cells"] if needle in "".join(c["source"]))


def test_widgets_interact_app_studio_and_ab_studio(executed):
    _, nb, _ = executed
    assert len(widget_views(nb)) == 3  # interact, the studio, the A/B studio


def test_interact_drives_generate_on_release_only(executed):
    _, nb, text = executed
    assert re.search(r"interact called show\(\) once .* displayed: GenerationResult\(tiny, 64x64, seed=0, "
                     rf"guidance=3\.5, steps={STEPS},", text)
    cell = source_of(nb, "@interact(")
    assert cell.count("continuous_update=False") == 4 and len(cell.strip().splitlines()) <= 10


def test_step_hook_sees_every_step_with_the_latents(executed):
    _, _, text = executed
    lines = re.findall(r"^step (\d+)/(\d+): timestep +[\d.]+, latents \(1, 16, 8, 8\), std [\d.]+$", text, re.M)
    assert lines == [(str(i), str(STEPS)) for i in range(1, STEPS + 1)]


def test_interrupt_skips_the_remaining_transformer_calls(executed):
    _, _, text = executed
    assert (f"cancelled: the hook ran on 2 of {STEPS} steps and the transformer was called 2 time(s); "
            "the pipeline still decoded and returned a 64x64 image") in text


def test_latent_preview_is_the_16x3_map_and_matches_the_helper(executed):
    _, nb, text = executed
    assert f"F (16, 3), {STEPS} previews of 8x8 px for a 64x64 px image" in text
    assert "same pixels as helpers.latent_preview: True" in text
    assert re.search(r"preview [\d.]+ ms, VAE decode [\d.]+ ms", text)
    assert "rgb = z @ F + b" in source_of(nb, "def preview(")


def test_the_preview_shows_the_predicted_clean_latents(executed):
    """x0_hat = x_t - sigma * v, v solved from the Euler step, equals helpers' PredictedCleanLatents
    (what the studio previews) on every step, and is the final latent on the last one (sigma = 0)."""
    _, nb, text = executed
    assert "x0_hat by hand equals helpers' PredictedCleanLatents: True" in text
    assert "last step (sigma = 0): x0_hat is the final latent: True" in text
    # The prose's "sigma is still about 0.75 half-way" (SD3's shift of 3), computed by the notebook.
    m = re.search(r"this scheduler at 28 steps: sigma = ([\d.]+) half-way \(after step 14\)", text)
    assert m and 0.7 <= float(m.group(1)) <= 0.8
    assert re.search(rf"columns: after steps \[1, 3, 4\] of {STEPS} ; sigma \[[\d., ]+\]", text)
    cell = source_of(nb, "def collect(")
    assert "v = (x_next - x) / (sigma_next - sigma)" in cell and "x0_hat = x - sigma * v" in cell
    markdown = [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "markdown"]
    assert sum("\\hat x_0 = x_t - \\sigma\\,v" in m for m in markdown) == 1  # the formula, taught in one cell


def test_taesd3_is_opt_in_and_loaded_the_usual_way(executed):
    _, nb, text = executed
    assert 'TAESD3 = None' in source_of(nb, "STAND_IN = None")  # off unless the reader opts in
    cell = source_of(nb, "AutoencoderTiny.from_pretrained(")
    assert "AutoencoderTiny.from_pretrained(TAESD3, torch_dtype=pipe.vae.dtype)" in cell
    assert re.search(r"TAESD3 preview 64x64 px in [\d.]+ ms \(16x3 map [\d.]+ ms, VAE [\d.]+ ms\)", text)
    assert "preview_decoder=taesd" in source_of(nb, "helpers.Studio(pipe")


def test_prose_is_at_most_900_words():
    """Issue 25 §5: at most 900 words of prose (markdown cells; code and its comments excluded)."""
    import json

    from tools.run_notebooks import NOTEBOOKS

    cells = json.loads((NOTEBOOKS / "06_studio.ipynb").read_text())["cells"]
    words = sum(len("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")
    assert words <= 900, words


def test_cancel_from_the_main_thread_stops_the_worker(executed):
    _, _, text = executed
    m = re.search(r"the main thread pressed Cancel [\d.]+ s after the worker started; the worker stopped after "
                  r"(\d+) of (\d+) steps", text)
    assert m and int(m.group(2)) == STEPS and 1 <= int(m.group(1)) < STEPS


def test_scripted_generation_and_computed_summary(executed):
    _, _, text = executed
    assert "GenerationResult(tiny, 64x64" in text
    m = re.search(r"Generated \*\*(\d+)\*\* image\(s\); \*\*(\d+)\*\* request\(s\) were answered from the cache", text)
    assert m and (int(m.group(1)), int(m.group(2))) == (2, 0)  # the scripted image, then the one beside a cell's generate
    assert "the text encoders ran **1** time(s)" in text


def test_ab_section_shows_a_computed_pair(executed):
    _, _, text = executed
    pairs = re.findall(r"Same prompt, seed 0, guidance ([\d.]+), 4 steps, 64x64; only the negative prompts differ: (.+)\.", text)
    assert [g for g, _ in pairs] == ["3.5", "1"]
    assert re.fullmatch(r"the mean absolute pixel difference is \*\*\d+\.\d\d\*\* \(0-255 scale\)", pairs[0][1])
    assert pairs[1][1] == "the two images are **byte-identical**"  # guidance 1: the negative branch is not run


def test_what_you_learned_and_exercises_close_the_notebook(executed):
    _, nb, _ = executed
    tail = "".join("".join(c["source"]) for c in nb["cells"][-2:])
    assert "## What you learned" in tail and "## Exercises" in tail
    assert "PNG carries its recipe" not in tail  # the run never saves a PNG, so it may not claim it
    exercises = re.findall(r"^\d+\. (.*)$", "".join(nb["cells"][-1]["source"]), re.M)
    assert len(exercises) == 3 and all(re.match(r"\*\((GPU|Stand-in)", e) for e in exercises), exercises


def test_opens_with_the_teaching_and_cites_the_blog_only_for_what_it_says(executed):
    _, nb, _ = executed
    title = "".join(nb["cells"][1]["source"])
    assert "(../README.md#how-much-gpu-memory-you-need)" in title  # the planner's table is one link away
    every_source = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "hardware_profiles" not in every_source
    # The blog's speed table gives 7 s per SD3.5 L image on an H100 and no step count: cited, and no steps invented.
    cited = source_of(nb, "inference-speed table")
    assert "README.md#stable-diffusion-35-inference-speeds" in cited and "7 s per SD3.5 L image" in cited
    assert not re.search(r"7 s (for|per|in) \d+ steps", every_source)


def test_everything_it_writes_is_under_outputs(executed):
    out = executed[0]
    assert sorted(p.name for p in out.iterdir()) == ["06_studio.ipynb", "outputs"]


def test_a_cell_and_the_studio_share_the_pipeline_one_image_at_a_time(executed):
    _, _, text = executed
    assert "the cell's image equals the same call made alone: True" in text
    assert "the studio finished its seed-1 image without an error: True" in text
    assert "IndexError" not in text and "out of bounds" not in text
