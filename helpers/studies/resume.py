"""Resuming a study: which finished rows count as done, and what must hold before any image.

A row of finished-rows-process-N.csv counts as done only when it is the job the plan holds (same
id, model, prompts, seed and settings), scored (a finite P(object) in [0, 1]) and naming the job's
own PNG, which must be a whole image carrying that job's recipe. Any other row is made again. A
leftover PNG in a job's name that is not that job's image is one clear error before any pipeline
loads, and so is a run folder that cannot be written to.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import threading
from pathlib import Path

from ..output_folders import writable
from .results import finished_rows

# What a study's PNG recipe must agree on with its job.
RECIPE_CHECKS = ("prompt", "negative_prompt", "seed", "guidance_scale", "num_inference_steps", "height", "width")


def png_problem(path: Path, job: dict) -> str | None:
    """Why the file at `path` is not `job`'s finished image (None when it is)."""
    from PIL import Image

    if path.is_symlink():
        return "it is a symbolic link, not an image the study saved"
    if not path.is_file():
        return "it is not a file"
    try:
        with Image.open(path) as image:
            image.load()  # decodes every pixel: a truncated file fails here
            text = dict(getattr(image, "text", {}) or {})
    except (OSError, SyntaxError, ValueError) as e:
        return f"it is not a whole image ({e})"
    try:
        recipe = json.loads(text["recipe"])
    except (KeyError, ValueError):
        return "it holds no study recipe"
    if not isinstance(recipe, dict):
        return "its recipe is damaged"
    differing = [key for key in RECIPE_CHECKS if (recipe.get(key) or None) != (job[key] or None)]
    return f"its recipe has another {', '.join(differing)}" if differing else None


def row_problem(row: dict, job: dict | None, run_dir: Path, image_name) -> str | None:
    """Why a finished row does not count as `job` done (None when it does); `image_name(job)` is
    the job's PNG name (jobs.image_name, passed in: jobs.py imports this module)."""
    if job is None:
        return f"job_id {row['job_id']} is not in the plan"
    changed = [key for key in job if key in row and (row[key] or None) != (job[key] or None)]
    if changed:
        return f"its {', '.join(changed)} differ from the plan's"
    score = row.get("p_object")
    if not isinstance(score, float) or not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return f"its score {score!r} is not a probability"
    if row.get("image") != image_name(job):
        return f"its image {row.get('image')!r} is not the job's own PNG"
    return png_problem(Path(run_dir) / row["image"], job)


def finished_jobs(run_dir, jobs: list[dict], image_name) -> dict[int, dict]:
    """job_id -> row of every job finished in `run_dir`, each row checked against the plan and its PNG."""
    plan = {job["job_id"]: job for job in jobs}
    return {job_id: row for job_id, row in finished_rows(run_dir).items()
            if row_problem(row, plan.get(job_id), Path(run_dir), image_name) is None}


def check_resume(run_dir, jobs: list[dict], image_name) -> None:
    """Before any image: every leftover PNG in a not-finished job's name must be that job's image
    (it is then scored, not made again), and the run folder must take new files."""
    run_dir = Path(run_dir)
    done = finished_jobs(run_dir, jobs, image_name)
    for job in jobs:
        path = run_dir / image_name(job)
        if job["job_id"] not in done and os.path.lexists(path):
            problem = png_problem(path, job)
            if problem:
                raise ValueError(f"resume: {path} is in job {job['job_id']}'s name but {problem}. Move it out of "
                                 f"{run_dir} (nothing is deleted for you), then resume again.")
    with writable(run_dir, "resume"), tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
        pass


_STUDY = threading.Lock()


def one_study_at_a_time(run_study):
    """Studies started from several threads of one process run one after another: each loads and
    releases the process's current pipeline, so two at once would release each other's."""

    @functools.wraps(run_study)
    def wrapper(*args, **kwargs):
        with _STUDY:
            return run_study(*args, **kwargs)

    return wrapper
