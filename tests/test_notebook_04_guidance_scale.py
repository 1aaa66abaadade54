"""Notebook 02 runs top to bottom on the stand-in: CFG-off check, sweep grid, curve, table, studio."""

import re

import pytest
from notebook_harness import cell_outputs_text, run_notebook
from PIL import Image

GUIDANCE, SEEDS, SIZE = [1.0, 3.5, 7.5], [0, 1], 64
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    out = tmp_path_factory.mktemp("nb02")
    nb = run_notebook("04_guidance_scale.ipynb", out, GUIDANCE_VALUES=GUIDANCE, SEEDS=SEEDS, STEPS=2, SIZE=SIZE)
    return out, nb, cell_outputs_text(nb)


def test_negative_prompt_is_ignored_without_cfg_and_used_with_it(executed):
    _, _, text = executed
    assert "guidance 0.0 (Turbo's value): negative prompt changes nothing: True" in text
    assert "guidance 1.0: negative prompt changes nothing: True" in text
    assert "guidance 3.5: negative prompt changes the image: True" in text
    assert "embeddings reproduce the text call byte for byte: True" in text


def test_sweep_grid_png_has_one_tile_per_seed_and_guidance(executed):
    out, _, _ = executed
    grid = Image.open(out / "guidance_sweep.png")
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


def test_adherence_curve_is_saved_and_shown(executed):
    out, nb, text = executed
    curve = Image.open(out / "guidance_curve.png")
    assert curve.width > 300 and curve.height > 200
    assert any("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", [])
               if "plt.subplots" in "".join(c["source"]))
    rows = re.findall(r"^\s+([\d.]+)\s+([\d.]+) ±\s+([\d.]+)\s+([\d.]+) %$", text, re.M)
    assert [float(r[0]) for r in rows] == GUIDANCE
    assert all(0 <= float(r[1]) <= 100 and 0 <= float(r[3]) <= 100 for r in rows)


def test_recommendation_table_lists_all_four_models_and_flags_the_stand_in(executed):
    _, _, text = executed
    for name in ("sd35-large", "sd35-large-nf4", "sd35-medium", "sd35-large-turbo"):
        assert f"(`{name}`) |" in text
    assert "| 2.5 (28 steps) |" in text and "| 7.5 (28 steps) |" in text and "| 5 (40 steps) |" in text
    assert "meaningless, the stand-in's weights are random" in text
    suggested = re.search(r"the suggested guidance of ([\d.]+) mean nothing", text)
    assert suggested and float(suggested.group(1)) in GUIDANCE


def test_studio_is_shown_and_generates_headless(executed):
    _, nb, text = executed
    views = [o for c in nb["cells"] for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1
    assert re.search(r"GenerationResult\(sd35-large, 64x64, seed=0, guidance=[\d.]+, steps=2,", text)
