"""A study's results table: written once, read back, summarized per model and condition.

`run_study` (jobs.py) writes one row per image; notebook 05 and benchmarks/negative_prompt_study.py
read the rows back and summarize them with bootstrap intervals and paired, per-seed comparisons.
"""

from __future__ import annotations

import csv
from pathlib import Path

RESULTS_CSV = "results.csv"
# Recipe fields copied from `generate`'s recipe into every row, so each image can be remade.
RECIPE_FIELDS = ("model_id", "stand_in", "quantization", "t5", "dtype", "device", "scheduler")
COLUMNS = (
    "job_id", "model", "condition", "prompt", "negative_prompt", "seed", "guidance_scale",
    "num_inference_steps", "height", "width", "status", "p_object", "label_object", "label_other",
    "image", "seconds", "process", *RECIPE_FIELDS, "clip_model", "versions", "note",
)


def write_results(rows, path) -> Path:
    """Write the rows as CSV (refusing to overwrite an existing file)."""
    path = Path(path)
    with open(path, "x", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_results(path) -> list[dict]:
    """Read a results CSV back, with numbers as numbers and empty negative prompts as None."""
    numbers = {"job_id": int, "seed": int, "num_inference_steps": int, "height": int, "width": int,
               "process": int, "guidance_scale": float, "p_object": float, "seconds": float}
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, kind in numbers.items():
                row[key] = kind(row[key]) if row[key] != "" else float("nan")
            row["negative_prompt"] = row["negative_prompt"] or None
            rows.append(row)
    return rows


def scores(rows, model: str, condition: str) -> dict[int, float]:
    """seed -> P(object) of the finished images of one model and condition."""
    return {r["seed"]: r["p_object"] for r in rows
            if r["model"] == model and r["condition"] == condition and r["status"] == "ok"}



def summarize(rows, confidence: float = 0.95) -> list[dict]:
    """Per (model, condition): images scored, mean P(object) and its bootstrap interval.

    A model that could not run here keeps its rows with status "needs a GPU" and no numbers."""
    from .stats import bootstrap_mean_ci

    table, seen = [], []
    for row in rows:
        key = (row["model"], row["condition"])
        if key not in seen:
            seen.append(key)
    for model, condition in seen:
        cell = [r for r in rows if r["model"] == model and r["condition"] == condition]
        ok = [r["p_object"] for r in cell if r["status"] == "ok"]
        entry = dict(model=model, condition=condition, n=len(ok), status=cell[0]["status"] if not ok else "ok",
                     mean=float("nan"), ci_low=float("nan"), ci_high=float("nan"))
        if ok:
            entry["mean"], entry["ci_low"], entry["ci_high"] = bootstrap_mean_ci(ok, confidence)
        table.append(entry)
    return table


def compare_negative_effect(rows, model_a: str, model_b: str, condition: str, baseline: str = "no negative",
                            confidence: float = 0.95):
    """Does the negative prompt lower P(object) more under model_b than under model_a?

    Per seed, the effect is P(object | baseline) - P(object | condition); the comparison pairs the
    two models' effects on the same seeds (stats.paired_comparison: b - a). None when a model has
    no scores here (e.g. NF4 on a CPU machine)."""
    from .stats import paired_comparison

    effect_a = negative_effects(rows, model_a, condition, baseline)
    effect_b = negative_effects(rows, model_b, condition, baseline)
    common = sorted(set(effect_a) & set(effect_b))
    if not common:
        return None
    return paired_comparison([effect_a[s] for s in common], [effect_b[s] for s in common], confidence)


def negative_effects(rows, model: str, condition: str, baseline: str = "no negative") -> dict[int, float]:
    """seed -> P(object | baseline) - P(object | condition) for one model: how much the condition
    lowered the object's probability at that seed (positive: it removed some)."""
    base, cond = scores(rows, model, baseline), scores(rows, model, condition)
    return {s: base[s] - cond[s] for s in sorted(set(base) & set(cond))}
