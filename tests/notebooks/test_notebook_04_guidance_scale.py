"""Notebook 04 runs top to bottom on the stand-in: the hand-written CFG loop matches pipe(...), the
cost of guidance is counted, the sweep, curve and table, skip-layer guidance, the blog's values."""

import re

import pytest
from notebook_harness import cell_outputs_text, run_notebook
from PIL import Image

GUIDANCE, SEEDS, SIZE, STEPS = [1.0, 3.5, 7.5], [0, 1], 64, 6  # 6 steps: skip-layer guidance acts on step 1
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb02")
    nb = run_notebook("04_guidance_scale.ipynb", out, GUIDANCE_VALUES=GUIDANCE, SEEDS=SEEDS, STEPS=STEPS, SIZE=SIZE)
    return out, nb, cell_outputs_text(nb)


def test_prerequisites_come_from_the_planner(executed):
    """The prerequisites table is the real planner's answer on every hardware profile, not prose."""
    from helpers.loading import hardware_profiles

    _, _, text = executed
    expected = hardware_profiles.requirements(["sd35-large", "sd35-large-nf4", "sd35-medium"])
    assert expected in text
    assert "does not fit" in expected and "| H100 80 GB | bf16 (" in expected


def test_hand_written_cfg_loop_matches_the_pipeline(executed):
    _, _, text = executed
    assert "max pixel difference, hand-written loop vs pipe(...): 0 (of 255)" in text
    assert "max pixel difference, helpers.generate vs pipe(...): 0 (of 255)" in text


def test_negative_prompt_is_ignored_without_cfg_and_used_with_it(executed):
    _, _, text = executed
    assert "guidance 0.0 (Turbo's value): negative prompt changes nothing: True" in text
    assert "guidance 1.0: negative prompt changes nothing: True" in text
    assert "guidance 3.5: negative prompt changes the image: True" in text
    assert "embeddings reproduce the text call byte for byte: True" in text


def test_cfg_doubles_the_transformer_work_and_its_value_does_not(executed):
    _, _, text = executed
    passes = dict(re.findall(r"guidance\s+([\d.]+):\s+(\d+) latent passes through the transformer", text))
    assert passes == {"1.0": str(STEPS), "2.5": str(2 * STEPS), "7.5": str(2 * STEPS)}
    assert re.search(r"Guidance 2\.5 made the transformer process \*\*2×\*\* the latents of guidance 1", text)
    assert "guidance 7.5 processed **1×** the latents of guidance 2.5" in text


def test_sweep_grid_png_has_one_tile_per_seed_and_guidance(executed):
    out, _, _ = executed
    grid = Image.open(out / "outputs" / "guidance_sweep.png")
    cols, rows = len(GUIDANCE), len(SEEDS)
    # tiles plus label margins: at most two tiles' worth on the left, labels and title on top
    assert cols * SIZE < grid.width <= (cols + 2) * SIZE
    assert rows * SIZE < grid.height <= (rows + 2) * SIZE


def test_prompt_encoded_once_for_the_whole_sweep(executed):
    _, _, text = executed
    n = len(GUIDANCE) * len(SEEDS)
    m = re.search(r"made \*\*(\d+)\*\* images and ran the text encoders \*\*(\d+)\*\* time\(s\) "
                  r"\(reused \*\*(\d+)\*\* times\).*saves about \*\*([\d.]+) s\*\*", text)
    assert m and (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (n, 1, n - 1)
    assert float(m.group(4)) > 0


def test_adherence_statistics_label_se_and_sd_and_apply_the_rule(executed):
    out, nb, text = executed
    curve = Image.open(out / "outputs" / "guidance_curve.png")
    assert curve.width > 300 and curve.height > 200
    assert any("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", [])
               if "plt.subplots" in "".join(c["source"]))
    rows = re.findall(r"^\s+([\d.]+)\s+([\d.]+) ±\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) %$", text, re.M)
    assert [float(r[0]) for r in rows] == GUIDANCE
    means, se, sd = ([float(r[i]) for r in rows] for i in (1, 2, 3))
    for s, d in zip(se, sd, strict=True):  # se = sd / sqrt(n), up to the printed rounding
        assert abs(s - d / len(SEEDS) ** 0.5) <= 0.01
    m = re.search(r"best mean at guidance ([\d.]+); cut-off \(best mean - 1 se\) ([\d.]+); suggested ([\d.]+)", text)
    best = means.index(max(means))
    assert float(m.group(1)) == GUIDANCE[best]
    assert abs(float(m.group(2)) - (means[best] - se[best])) <= 0.011
    # The rule: the smallest guidance whose mean reaches the cut-off.
    assert float(m.group(3)) == min(g for g, mu in zip(GUIDANCE, means, strict=True) if mu >= float(m.group(2)) - 0.005)
    plot_source = next("".join(c["source"]) for c in nb["cells"] if "plt.subplots" in "".join(c["source"]))
    assert "yerr=se" in plot_source and "mean ± 1 se" in plot_source and "None" not in plot_source


def test_recommendation_table_cites_model_cards_and_blog_guidance_only(executed):
    _, _, text = executed
    for name in ("sd35-large", "sd35-large-nf4", "sd35-medium", "sd35-large-turbo"):
        assert f"(`{name}`) |" in text
    assert "| 3.5 (28 steps) | 2.5 |" in text and "| 3.5 (28 steps) | 7.5 |" in text and "| 4.5 (40 steps) | 5 |" in text
    assert "meaningless, the stand-in's weights are random" in text
    suggested = re.search(r"the suggested guidance of ([\d.]+) mean nothing", text)
    assert suggested and float(suggested.group(1)) in GUIDANCE


def test_skip_layer_guidance_is_measured(executed):
    _, _, text = executed
    assert f"SLG skipped blocks [1] of 2 on steps [1] of {STEPS}, guidance 3.5" in text
    # One extra pass of the conditional latent on the one SLG step.
    assert f"latent passes per image: {2 * STEPS} without SLG, {2 * STEPS + 1} with" in text
    assert re.search(r"max pixel difference, seed 0: [1-9]\d* \(of 255\)", text)  # SLG changed the image
    assert re.search(r"SLG added \*\*1\*\* latent passes per image .* CLIP score change with SLG: \*\*[+-][\d.]+\*\*", text)


def test_blog_values_side_by_side_one_model_at_a_time(executed):
    _, nb, text = executed
    assert f"sd35-large: blog guidance 2.5, model card 3.5, {STEPS} steps" in text
    assert f"sd35-large-nf4: blog guidance 7.5, model card 3.5, {STEPS} steps" in text  # the kernel has the NF4 shim
    assert f"sd35-medium: blog guidance 5, model card 4.5, {STEPS} steps" in text
    cell = next(c for c in nb["cells"] if "side_by_side[name, source]" in "".join(c["source"]))
    assert any("image/png" in o.get("data", {}) for o in cell["outputs"])


def test_studio_is_shown_and_generates_headless(executed):
    _, nb, text = executed
    views = [o for c in nb["cells"] for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1
    assert re.search(rf"GenerationResult\(sd35-large, 64x64, seed=0, guidance=[\d.]+, steps={STEPS},", text)


def test_everything_it_writes_is_under_outputs(executed):
    out = executed[0]
    assert sorted(p.name for p in out.iterdir()) == ["04_guidance_scale.ipynb", "outputs"]
