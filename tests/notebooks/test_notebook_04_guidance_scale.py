"""Notebook 04 runs top to bottom on the stand-in: the hand-written CFG loop matches pipe(...), the
cost of guidance is counted, the sweep, curve and table, skip-layer guidance, the blog's values."""

import re

import pytest
from notebook_harness import cell_outputs_text, executed_once, widget_views
from PIL import Image

GUIDANCE, SEEDS, SIZE, STEPS = [1.0, 3.5, 7.5], [0, 1], 64, 6  # 6 steps: skip-layer guidance acts on step 1
MAX_CLIPPED = 0.5  # the stand-in's noise clips about 10 % of its pixels: a bound the rule's candidates pass


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out, nb = executed_once("04_guidance_scale.ipynb", tmp_path_factory, GUIDANCE_VALUES=GUIDANCE, SEEDS=SEEDS, STEPS=STEPS,
                            SIZE=SIZE, MAX_CLIPPED=MAX_CLIPPED)
    return out, nb, cell_outputs_text(nb)


def test_opens_with_the_teaching_and_links_the_memory_table(executed):
    """No requirements table before the teaching: one line links the README's table, which is the
    planner's answer on every hardware profile (tools.navigation writes it; its own test checks it)."""
    from tools.navigation import REPO, SETUP_MARKER

    _, nb, _ = executed
    intro = "".join(nb["cells"][1]["source"])
    assert "[what each model needs on your machine](../README.md#how-much-gpu-memory-you-need)" in intro
    assert "\n## How much GPU memory you need\n" in (REPO / "README.md").read_text()
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "requirements(" not in code
    sources = ["".join(c["source"]) for c in nb["cells"]]
    set_up = next(i for i, s in enumerate(sources) if s.startswith(SETUP_MARKER))
    first_section = next(i for i, s in enumerate(sources) if s.startswith("## "))
    assert first_section == set_up + 1  # straight from the set-up to the teaching
    assert "".join(nb["cells"][first_section]["source"]).startswith("## What classifier-free guidance does")


def test_hand_written_cfg_loop_matches_the_pipeline(executed):
    """Printed and asserted in the notebook itself (exactly 0 on the CPU)."""
    _, nb, text = executed
    assert "max pixel difference, hand-written loop vs pipe(...): 0 (of 255)" in text
    assert "max pixel difference, helpers.generate vs pipe(...): 0 (of 255)" in text
    cell = next("".join(c["source"]) for c in nb["cells"] if "by_hand = sample_by_hand(" in "".join(c["source"]))
    assert 'allowed = 0 if info.plan.device == "cpu" else 2' in cell
    assert "assert hand_vs_pipe <= allowed and helper_vs_pipe <= allowed" in cell


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


def test_adherence_statistics_label_se_and_sd(executed):
    out, nb, text = executed
    curve = Image.open(out / "outputs" / "guidance_curve.png")
    assert curve.width > 300 and curve.height > 200
    assert any("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", [])
               if "plt.subplots" in "".join(c["source"]))
    rows = re.findall(r"^\s+([\d.]+)\s+([\d.]+) ±\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) %$", text, re.M)
    assert [float(r[0]) for r in rows] == GUIDANCE
    se, sd = ([float(r[i]) for r in rows] for i in (2, 3))
    for s, d in zip(se, sd, strict=True):  # se = sd / sqrt(n), up to the printed rounding
        assert abs(s - d / len(SEEDS) ** 0.5) <= 0.01
    plot_source = next("".join(c["source"]) for c in nb["cells"] if "plt.subplots" in "".join(c["source"]))
    assert "yerr=se" in plot_source and "mean ± 1 se" in plot_source and "mean ± 1 paired se" in plot_source


def test_the_rule_weighs_clipping_picks_on_half_the_seeds_and_says_it_could_not_tell(executed):
    """Guidance <= 1 is never a candidate; every candidate under the clipping bound is compared with the
    best on the pick seeds (even rows), Holm-adjusted; the smallest not significantly below is chosen.
    One seed per half cannot reach significance: the verdict says "could not tell", with the power."""
    _, nb, text = executed
    assert f"The rule on the pick seeds {SEEDS[0::2]} (held out: {SEEDS[1::2]}), clipping bound 50 %" in text
    rows = re.findall(r"^\s+([\d.]+)\s+([\d.]+) %\s+(over the clipping bound|([+-][\d.]+)\s+([\d.]+)\s+([\d.]+))"
                      r"(\s+\(the best\))?$", text, re.M)
    assert [float(r[0]) for r in rows] == [g for g in GUIDANCE if g > 1]
    for _, clip, status, *_ in rows:  # allowed exactly when under the bound
        assert (status == "over the clipping bound") == (float(clip) / 100 > MAX_CLIPPED)
    allowed = {float(r[0]): (float(r[3]), float(r[4]), float(r[5]), bool(r[6])) for r in rows if r[3]}
    m = re.search(r"best ([\d.]+); chosen ([\d.]+)", text)
    best, chosen = float(m.group(1)), float(m.group(2))
    assert allowed[best][0] == 0.0 and allowed[best][3]  # the best against itself
    assert all(d <= 0.0 for d, *_ in allowed.values())  # nothing beats the best on the pick seeds
    assert all(holm_p >= raw for _, raw, holm_p, _ in allowed.values())
    significant_below = {g for g, (d, _, holm_p, _) in allowed.items() if holm_p < 0.05 and d < 0}
    assert chosen == min(g for g in allowed if g not in significant_below)
    assert "pick half none (no test can reach significance), held-out check none" in text
    assert re.search(r"seeds per half to detect a 1-SD drop in each of 1 comparison\(s\): (\d+) "
                     r"\(SEEDS = list\(range\(\d+\)\)\)", text)
    assert "**The rule's verdict:** Could not tell: with 1 pick seeds no difference can be significant" in text
    rule_source = next("".join(c["source"]) for c in nb["cells"] if "choose_guidance(" in "".join(c["source"]))
    assert "choice = choose_guidance(GUIDANCE_VALUES, scores, clipped, max_clipped=MAX_CLIPPED)" in rule_source


def test_published_values_table_cites_model_cards_and_the_toolkit_guidance_only(executed):
    _, nb, text = executed
    for name in ("sd35-large", "sd35-large-nf4", "sd35-medium", "sd35-large-turbo"):
        assert f"(`{name}`) |" in text
    assert "| 3.5 (28 steps) | 2.5 |" in text and "| 3.5 (28 steps) | 7.5 |" in text and "| 4.5 (40 steps) | 5 |" in text
    chosen = re.search(r"\| \*\*([\d.]+)\*\* \(could not tell; one prompt, 2 seeds, 6 steps\): "
                       r"meaningless, the stand-in's weights are random \|", text)
    assert chosen and float(chosen.group(1)) in GUIDANCE and float(chosen.group(1)) > 1
    headings = [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"]]
    assert not any("recommendation per model" in h.lower() for h in headings)


def test_skip_layer_guidance_is_measured(executed):
    _, nb, text = executed
    sources = ["".join(c["source"]) for c in nb["cells"]]
    slg = next(i for i, s in enumerate(sources) if s.startswith("## Beyond the blog: skip-layer guidance"))
    # The section says which earlier state it reuses, and counts passes with its own list.
    for name in ("`pipe`", "`scorer`", "`max_pixel_difference`"):
        assert name in sources[slg]
    assert "latents_seen" not in sources[slg + 1].replace("slg_latents_seen", "")
    assert f"SLG skipped blocks [1] of 2 on steps [1] of {STEPS}, guidance 3.5" in text
    # One extra pass of the conditional latent on the one SLG step.
    assert f"latent passes per image: {2 * STEPS} without SLG, {2 * STEPS + 1} with" in text
    assert re.search(r"max pixel difference, seed 0: [1-9]\d* \(of 255\)", text)  # SLG changed the image
    assert re.search(r"SLG added \*\*1\*\* latent passes per image .* CLIP score change with SLG, paired by seed: "
                     r"\*\*[+-][\d.]+\*\* \(95% bootstrap CI .*p = [\d.]+; the smallest p 2 seeds can reach: 0\.500\)", text)
    # Two seeds cannot reach p < 0.05: the verdict says so instead of "no difference".
    assert "Verdict: **could not tell**: with 2 seeds no difference can reach p < 0.05 (it takes 6;" in text


def test_blog_values_side_by_side_one_model_at_a_time(executed):
    _, nb, text = executed
    assert f"sd35-large: blog guidance 2.5, model card 3.5, {STEPS} steps" in text
    assert f"sd35-large-nf4: blog guidance 7.5, model card 3.5, {STEPS} steps" in text  # the kernel has the NF4 shim
    assert f"sd35-medium: blog guidance 5, model card 4.5, {STEPS} steps" in text
    cell = next(c for c in nb["cells"] if "side_by_side[name, source]" in "".join(c["source"]))
    assert any("image/png" in o.get("data", {}) for o in cell["outputs"])


def test_studio_is_shown_and_generates_headless(executed):
    _, nb, text = executed
    assert len(widget_views(nb)) == 1  # the studio (tqdm's bars, widgets in a reader's kernel, aside)
    assert re.search(rf"GenerationResult\(sd35-large, 64x64, seed=0, guidance=[\d.]+, steps={STEPS},", text)


def test_everything_it_writes_is_under_outputs(executed):
    out = executed[0]
    assert sorted(p.name for p in out.iterdir()) == ["04_guidance_scale.ipynb", "outputs"]


def test_prose_is_at_most_900_words():
    """Issue 25 §5: at most 900 words of prose (markdown cells; code and its comments excluded)."""
    import json

    from tools.run_notebooks import NOTEBOOKS

    cells = json.loads((NOTEBOOKS / "04_guidance_scale.ipynb").read_text())["cells"]
    words = sum(len("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")
    assert words <= 900, words
