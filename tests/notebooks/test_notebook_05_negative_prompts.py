"""Notebook 05 runs headless on the stand-in and computes what its prose reports."""

import csv
import re

from notebook_harness import cell_outputs_text, run_notebook


def test_notebook_05_runs_and_reports_measured_numbers(tiny_dir, tmp_path):
    nb = run_notebook("05_negative_prompts.ipynb", tmp_path, N_SEEDS=3, GRID_GUIDANCES=[1.0, 3.5], STEPS=2, BLOG_SEEDS=2)
    text = cell_outputs_text(nb)

    # The planner's answer on every hardware profile heads the notebook, not a hand-written "about 12 GB".
    from helpers.loading import hardware_profiles

    assert hardware_profiles.requirements(["sd35-large", "sd35-large-nf4"]) in text
    # Everything it wrote is under outputs/ (ignored by git), beside the executed notebook.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["05_negative_prompts.ipynb", "outputs"]
    # Section 3: the blog's three examples ran at the blog's settings, each verdict computed from paired seeds.
    blog_rows = {
        "bf16, placement": "sd35-large, guidance 7.5, placement prompt vs the plain prompt | P('a photo of a birthday cake')",
        "bf16, elves": 'sd35-large, guidance 2.5, "No green grass" vs none | P(\'a photo of green grass\')',
        "NF4, object removal": 'sd35-large-nf4, guidance 10, "No birthday cake" vs none | P(\'a photo of a birthday cake\')',
    }
    for name, settings in blog_rows.items():
        row = re.search(rf"^\| {re.escape(name)} \| \"[^|]+\" \| {re.escape(settings)}: [+-]\d\.\d{{3}} \(95% CI \[[+-][\d.]+, [+-][\d.]+\], "
                        rf"p = [\d.]+, 2 seeds\) \| (.+) \|$", text, re.M)
        assert row, name
        assert row.group(1) == "**no significant change**"  # with 2 seeds the sign-flip p cannot go below 0.5
    blog_grids = [c for c in nb["cells"] if "run_blog_example(pipe" in "".join(c["source"])]
    assert sum("image/png" in o.get("data", {}) for o in blog_grids[0]["outputs"]) == 3
    assert "With 2 seeds the sign-flip test cannot go below p = 0.500." in text

    # Section 1: the guidance-1 check was computed and found the images identical.
    assert "At guidance 1 the two images are **identical**" in text
    # The per-condition table has all four conditions for both models (NF4 runs: the kernel has the shim).
    conditions = ["no negative", 'negative "No birthday cake"', 'negative "birthday cake"', "placement prompt"]
    for model in ("sd35-large", "sd35-large-nf4"):
        for condition in conditions:
            assert f"| {model} | {condition} | 3 | 0." in text, (model, condition)
    # Each condition was compared with "no negative", paired by seed, in sentences built from numbers.
    assert text.count("compared with no negative: change ") == 2 * 3
    # The interval figure was saved, and the NF4-vs-bf16 verdict was written from the numbers.
    figure = tmp_path / "outputs" / "figures" / "negative_prompt_p_object.png"
    assert figure.is_file() and figure.stat().st_size > 5000
    assert text.count("NF4 minus bf16, paired over 3 seeds") == 2
    assert "not measured on this machine" not in text
    assert "With 3 seeds the test cannot go below p = 0.250" in text
    assert "Stand-in: random weights" in text and "meaningless" in text
    tail = "".join("".join(c["source"]) for c in nb["cells"][-2:])
    assert "## What you learned" in tail and "## Exercises" in tail

    # The study's table: every job once, every image on disk, nothing outside the run folder.
    (run_dir,) = (tmp_path / "outputs" / "negative_prompt_study").glob("run-*")
    with open(run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["job_id"]) for r in rows) == list(range(2 * 4 * 3))
    assert {r["status"] for r in rows} == {"ok"}
    assert all((run_dir / r["image"]).is_file() for r in rows)
    assert {r["quantization"] for r in rows if r["model"] == "sd35-large-nf4"} == {"nf4"}
