"""Notebook 05 runs headless on the stand-in and computes what its prose reports."""

import csv
import re

import pytest
from notebook_harness import REPO, cell_outputs_text, run_notebook

P = r"p = ([\d.]+)"


def test_notebook_05_runs_and_reports_measured_numbers(tiny_dir, tmp_path):
    nb = run_notebook("05_negative_prompts.ipynb", tmp_path, N_SEEDS=3, GRID_GUIDANCES=[1.0, 3.5], STEPS=2, BLOG_SEEDS=6)
    text = cell_outputs_text(nb)

    # It opens with the teaching: the planner's table lives in the README, one link away, not in the notebook.
    title = "".join(nb["cells"][1]["source"])
    assert "(../README.md#how-much-gpu-memory-you-need)" in title
    assert "\n## How much GPU memory you need\n" in (REPO / "README.md").read_text()
    assert not any("hardware_profiles" in "".join(c["source"]) for c in nb["cells"])
    # Everything it wrote is under outputs/ (ignored by git), beside the executed notebook.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["05_negative_prompts.ipynb", "outputs"]

    # Section 3: the blog's three examples at the blog's settings, plus bf16 at the NF4 example's guidance
    # (the blog's guidance differs between its NF4 and bf16 pictures); each verdict comes from the paired
    # sign-flip test, printed with the smallest p its 6 seeds can reach (< 0.05, so "yes" is possible).
    blog_rows = {
        "bf16, placement": "sd35-large, guidance 7.5, placement prompt vs the plain prompt | P('a photo of a birthday cake')",
        "bf16, elves": 'sd35-large, guidance 2.5, "No green grass" vs none | P(\'a photo of green grass\')',
        "bf16, object removal": 'sd35-large, guidance 10, "No birthday cake" vs none | P(\'a photo of a birthday cake\')',
        "NF4, object removal": 'sd35-large-nf4, guidance 10, "No birthday cake" vs none | P(\'a photo of a birthday cake\')',
    }
    for name, settings in blog_rows.items():
        row = re.search(rf"^\| {re.escape(name)} \| [^|]+ \| {re.escape(settings)}: ([+-]\d\.\d{{3}}) \(95% CI "
                        rf"\[[+-][\d.]+, [+-][\d.]+\], {P}, 6 seeds; the smallest p 6 seeds can reach: 0\.031\) \| (.+) \|$",
                        text, re.M)
        assert row, name
        mean, p, verdict = float(row.group(1)), float(row.group(2)), row.group(3)
        assert p >= 0.031
        expected = "**no significant change**" if p >= 0.05 else "object **receded**" if mean < 0 else "object **grew**"
        assert verdict == expected, (name, mean, p, verdict)
    blog_grids = [c for c in nb["cells"] if "run_blog_example(pipe" in "".join(c["source"])]
    assert sum("image/png" in o.get("data", {}) for o in blog_grids[0]["outputs"]) == 4

    # Section 1: the guidance-1 check was computed and found the images identical.
    assert "At guidance 1 the two images are **identical**" in text
    # The per-condition table has all four conditions for both models (NF4 runs: the kernel has the shim).
    conditions = ["no negative", 'negative "No birthday cake"', 'negative "birthday cake"', "placement prompt"]
    for model in ("sd35-large", "sd35-large-nf4"):
        for condition in conditions:
            assert f"| {model} | {condition} | 3 | 0." in text, (model, condition)
    # Each condition was compared with "no negative", paired by seed; 3 seeds cannot reach p < 0.05,
    # so every verdict is "not significant" and says why (the floor, 0.250).
    changes = re.findall(r"^- \*\*sd35-large(?:-nf4)?\*\*, .+: (.+) P\(birthday cake\) compared with no negative: "
                         r"change .+; the smallest p 3 seeds can reach: 0\.250\)\.$", text, re.M)
    assert changes == ["did **not significantly change**"] * (2 * 3)
    # The interval figure was saved, and the NF4-vs-bf16 verdict was written from the numbers.
    figure = tmp_path / "outputs" / "figures" / "negative_prompt_p_object.png"
    assert figure.is_file() and figure.stat().st_size > 5000
    nf4_lines = re.findall(r"NF4 minus bf16, paired over seeds: .+, 3 seeds; the smallest p 3 seeds can reach: "
                           r"0\.250\): \*\*no significant difference\*\* between NF4 and bf16\.$", text, re.M)
    assert len(nf4_lines) == 2
    assert "not measured on this machine" not in text
    assert "Stand-in: random weights" in text and "meaningless" in text

    # The closing table collects every computed answer with its raw and Holm-adjusted p; its sentence
    # counts the significant tests before and after Holm, and says which design ran and what it can detect.
    summary = re.search(r"^\| section \| question \| this run's answer \| p \| Holm-adjusted p \|\n\|---\|---\|---\|---\|---\|\n"
                        r"((?:\|.*\|\n)+)\nOn this run, \*\*(\d+) of (\d+)\*\* paired comparisons were significant at "
                        r"p < 0\.05, \*\*(\d+)\*\* after Holm\. Section 4 used (.+?) \(section 3: 6 seeds\)", text, re.M)
    assert summary
    answers = [line.strip("| ").split(" | ") for line in summary.group(1).strip().splitlines()]
    assert [a[0] for a in answers] == ["1"] * 2 + ["3"] * 5 + ["4"] * (6 + 2 + 2)
    assert answers[0][2:] == ["no (identical pixels)", "—", "—"]  # guidance 1: no test, no p
    tested = answers[2:]
    raw, adjusted = [float(a[3]) for a in tested], [float(a[4]) for a in tested]
    from helpers.studies.stats import holm
    assert adjusted == pytest.approx(holm(raw), abs=2e-3) and all(h >= r for h, r in zip(adjusted, raw))
    assert int(summary.group(3)) == len(tested) == 15
    assert int(summary.group(2)) == sum(r < 0.05 for r in raw) and int(summary.group(4)) == sum(h < 0.05 for h in adjusted)
    assert re.fullmatch(r"the quick design: 512², 3 seeds, 24 images, about \d+ min on a free T4; its smallest "
                        r"reachable p is 0\.25, and too few seeds to detect any effect at p < 0\.05", summary.group(5))
    assert "P(object) was not validated against labels on this run" in text

    # Before each sweep and study, its image count and time; the stand-in has no measured figure to scale,
    # so the first image's measured time gives the estimate, and the end says what it took.
    for what, n in (("xy_grid", 6), ("section 3", 48), ("run_study", 24)):
        plan = text.index(f"{what}: {n} images. No estimate before the first image (the stand-in: no measured figure "
                          "to scale); its measured time gives one.")
        first = text.index("First image measured: ", plan)
        done = re.compile(rf"^{what}: {n} images in \d+ s, [\d.]+ s per image measured\.$", re.M).search(text, first)
        assert plan < text.index(f"0/{n} [", plan) < first < done.start(), what
    # One condition by hand (the pair of calls per seed, then the score), and run_study agrees with it.
    assert len(re.findall(r"^seed \d: P\(birthday cake\) 0\.\d{3} without, 0\.\d{3} with 'No birthday cake': change [+-]0\.\d{3}$",
                          text, re.M)) == 3
    assert "run_study's scores for seeds [0, 1, 2] match the hand loop's: True" in text
    # NF4 against bf16 at the blog's guidance (10), paired over section 3's seeds, with its verdict.
    at_10 = re.search(r"^NF4 minus bf16, at guidance 10: ([+-]\d\.\d{3}) \(.+, p = ([\d.]+), 6 seeds; .+\): (.+)\.$", text, re.M)
    assert at_10 and at_10.group(3) == ("**no significant difference**" if float(at_10.group(2)) >= 0.05 else
                                        "NF4 removed **more**" if float(at_10.group(1)) > 0 else "NF4 removed **less**")
    # Placement against "No birthday cake", head to head on the same seeds, per model, with OWL-ViT beside it.
    heads = re.findall(r"^- \*\*(sd35-large(?:-nf4)?)\*\*: [+-]\d\.\d{3} \(.+ 3 seeds; .+0\.250\): \*\*no significant "
                       r"difference\*\*\. OWL-ViT, the same way: [+-]\d\.\d{3} \(p = [\d.]+\)\.$", text, re.M)
    assert heads == ["sd35-large", "sd35-large-nf4"]
    # The measure's check against hand labels is empty on the stand-in, and says so.
    assert "| CLIP P(object) ≥ 0.5 | 0 (0) | n/a | n/a |" in text and "| OWL-ViT best box ≥ 0.1 | 0 (0) | n/a | n/a |" in text
    assert "**No labels yet: this check is empty**, and stays so on the stand-in" in text
    # At most 900 words of prose (markdown cells), and a Colab reader is told how to resume on Drive.
    assert sum(len("".join(c["source"]).split()) for c in nb["cells"] if c["cell_type"] == "markdown") <= 900
    parameters = "".join(nb["cells"][2]["source"])
    assert 'DESIGN = "quick"' in parameters and '"/content/drive/MyDrive/sd35-studies"' in parameters
    tail = "".join("".join(c["source"]) for c in nb["cells"][-2:])
    assert "## What you learned" in tail and "## Exercises" in tail
    # Every exercise says what it needs.
    exercises = re.findall(r"^\d+\. (.*)$", "".join(nb["cells"][-1]["source"]), re.M)
    assert len(exercises) == 3 and all(re.match(r"\*\((GPU|Stand-in|Any machine)", e) for e in exercises)

    # The study's table: every job once, every image on disk, nothing outside the run folder.
    (run_dir,) = (tmp_path / "outputs" / "negative_prompt_study").glob("run-*")
    with open(run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["job_id"]) for r in rows) == list(range(2 * 4 * 3))
    assert {r["status"] for r in rows} == {"ok"}
    assert all((run_dir / r["image"]).is_file() for r in rows)
    assert {r["quantization"] for r in rows if r["model"] == "sd35-large-nf4"} == {"nf4"}
