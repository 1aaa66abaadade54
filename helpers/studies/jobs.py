"""Seed x condition x model image experiments as a batch job, on one device or several.

One job is one image: a condition (prompt and negative prompt), a model preset and a seed.
`run_study` splits the jobs between the processes `accelerate launch --num_processes N` starts
(one plain process works too), generates each image, asks CLIP how likely it shows the object,
saves it as a PNG in a fresh run folder and gathers one CSV row per job on the main process.
Notebook 05 and benchmarks/negative_prompt_study.py both call it: one code path.
Every job is checked before the first image; each finished row is written at once (to
finished-rows-process-N.csv), so an interrupted study keeps its work and `resume=` finishes it.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import QuantizationNeedsGPUError
from ..generation import pipeline_lock, validation
from ..output_folders import check_folder, fresh_run_dir, write_atomically
from .results import (
    FINISHED_ROWS_CSV,
    RECIPE_FIELDS,
    RESULTS_CSV,
    append_row,
    write_results,
)
from .resume import check_resume, finished_jobs, one_study_at_a_time
from .run_folders import JOBS_JSON, check_resumable, unfinished_run
from .timing import ReaderClock, study_estimate

JOB_KEYS = ("job_id", "model", "condition", "prompt", "negative_prompt", "seed", "guidance_scale",
            "num_inference_steps", "height", "width")
# The example of Stability AI's SD3.5 prompting guide: a prompt, what a negative prompt should
# remove, and a positive prompt that fills the scene instead (its structured lines).
BLOG_PROMPT = "Children's birthday party"
BLOG_OBJECT = "birthday cake"
BLOG_PLACEMENT_PROMPT = "\n".join([
    "Three children sitting at a dining table",
    "There is a white table cloth on the table",
    "There are balloons in the background",
    "The kids are wearing party hats",
    "The background is a sunny day at a park",
])
# CLIP zero-shot labels: the object, and the scene without naming the object (CLIP's text encoder
# largely ignores "no"/"without", so "a party without a cake" would still point at cakes).
DEFAULT_LABELS = ("a photo of a birthday cake", "a photo of a children's party")
@dataclass(frozen=True)
class Condition:
    """One way of prompting: a name for tables, the prompt and the negative prompt (None: none)."""

    name: str
    prompt: str
    negative_prompt: str | None = None


def negative_prompt_conditions(prompt: str, object_name: str, placement_prompt: str) -> list[Condition]:
    """The blog's four conditions: no negative; "No <object>"; "<object>"; a positive prompt that
    places everything else (and so leaves no room for the object), without a negative."""
    for name, value in (("prompt", prompt), ("object_name", object_name), ("placement_prompt", placement_prompt)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, not {value!r}.")
    return [
        Condition("no negative", prompt, None),
        Condition(f'negative "No {object_name}"', prompt, f"No {object_name}"),
        Condition(f'negative "{object_name}"', prompt, object_name),
        Condition("placement prompt", placement_prompt, None),
    ]


def check_model(model) -> None:
    """`model` must be a preset name, a local pipeline folder or a Hub id ("owner/name")."""
    from ..loading.presets import PRESETS, get_preset

    if isinstance(model, str) and model in PRESETS:
        return
    if isinstance(model, str) and model and (
        Path(model).is_dir() or (model.count("/") == 1 and not model.startswith((".", "/", "~")))
    ):
        return
    get_preset(model)  # raises the "Unknown model preset ..., use one of" error


def plan_jobs(conditions, models, seeds, *, guidance_scale: float, num_inference_steps: int,
              height: int, width: int) -> list[dict]:
    """Every (model, condition, seed) combination as a job dict with a unique `job_id`.

    Models vary slowest, so each process loads as few pipelines as possible. Every argument is
    checked here, before any image: a typo fails now, not after hours of earlier images."""
    _check_lists(conditions=conditions, models=models, seeds=seeds)
    conditions, models, seeds = list(conditions), list(models), list(seeds)
    for name, values in (("conditions", conditions), ("models", models), ("seeds", seeds)):
        if not values:
            raise ValueError(f"{name} is empty: the study needs at least one.")
    for condition in conditions:
        if not isinstance(condition, Condition):
            raise TypeError(f"conditions must be Condition(name, prompt, negative_prompt), not {type(condition).__name__}.")
    for model in models:
        check_model(model)
    for seed in seeds:
        validation.check_seed(seed)
        if seed is None:
            raise ValueError("seeds must be whole numbers; None (a random seed) cannot be paired across conditions.")
    seeds = [int(seed) for seed in seeds]  # checked whole numbers: nothing is truncated
    for name, values in (("models", models), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} has duplicates: {values}.")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise ValueError(f"condition names must be unique: {names}.")
    _check_settings(guidance_scale, num_inference_steps, height, width)
    jobs = []
    for model in models:
        for condition in conditions:
            for seed in seeds:
                jobs.append(dict(
                    job_id=len(jobs), model=model, condition=condition.name, prompt=condition.prompt,
                    negative_prompt=condition.negative_prompt, seed=seed,
                    guidance_scale=float(guidance_scale), num_inference_steps=int(num_inference_steps),
                    height=int(height), width=int(width),
                ))
    check_jobs(jobs)
    return jobs


def _check_lists(**lists) -> None:
    """Each of plan_jobs' `lists` must be a list (or other iterable), not one value: seeds=3 means [3]?
    or range(3)? The study cannot guess."""
    for name, values in lists.items():
        if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
            raise TypeError(f"{name} must be a list (e.g. {name}=[...]), not {type(values).__name__} {values!r:.60}.")


def _check_settings(guidance_scale, num_inference_steps, height, width) -> None:
    for name, value in (("guidance_scale", guidance_scale), ("num_inference_steps", num_inference_steps),
                        ("height", height), ("width", width)):
        if value is None:
            raise ValueError(f"{name} must be given: every image of a study uses the same value.")
    validation.check_guidance(guidance_scale)
    validation.check_steps(num_inference_steps)
    validation.check_size(height, width)


def check_jobs(jobs) -> list[dict]:
    """Check every job before the first image: its keys, model, prompts, settings and seed; unique
    job ids, and no image twice (the same model, condition and seed would count as n=2)."""
    if isinstance(jobs, (str, bytes, dict)) or not isinstance(jobs, Iterable):
        raise TypeError(f"jobs must be a list of job dicts (use plan_jobs), not {type(jobs).__name__} {jobs!r:.60}.")
    jobs = list(jobs)
    if not jobs:
        raise ValueError("jobs must be a non-empty list (use plan_jobs).")
    checked = []
    for job in jobs:
        if not isinstance(job, dict):
            raise TypeError(f"each job must be a dict as plan_jobs makes, not {type(job).__name__}.")
        missing = [key for key in JOB_KEYS if key not in job]
        if missing:
            raise ValueError(f"job {job.get('job_id', '?')!r} lacks {', '.join(missing)} (use plan_jobs).")
        job_id = job["job_id"]
        if isinstance(job_id, bool) or not isinstance(job_id, numbers.Integral) or job_id < 0:
            raise TypeError(f"job_id must be a whole number >= 0 (it names the job's PNG), not "
                            f"{type(job_id).__name__} {job_id!r:.60}.")
        condition = job["condition"]
        if not isinstance(condition, str) or not condition.strip():
            raise TypeError(f"job {job_id}: condition must be a non-empty name (a str), not "
                            f"{type(condition).__name__} {condition!r:.60}.")
        try:
            check_model(job["model"])
            validation.check_prompt(job["prompt"])
            validation.check_prompt(job["negative_prompt"], "negative_prompt", allow_none=True)
            validation.check_seed(job["seed"])
            if job["seed"] is None:
                raise ValueError("seed must be a whole number, not None.")
            _check_settings(job["guidance_scale"], job["num_inference_steps"], job["height"], job["width"])
        except (TypeError, ValueError) as e:
            raise type(e)(f"job {job_id}: {e}") from None
        # numpy whole numbers (np.arange seeds) are accepted as the plain ints they equal: JSON and
        # the PNG names need plain Python numbers.
        checked.append(dict(job, job_id=int(job_id), seed=int(job["seed"]),
                            guidance_scale=float(job["guidance_scale"]),
                            num_inference_steps=int(job["num_inference_steps"]),
                            height=int(job["height"]), width=int(job["width"])))
    jobs = checked
    ids = [job["job_id"] for job in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("jobs must have unique job_id values (use plan_jobs).")
    images = [(job["model"], job["condition"], job["seed"]) for job in jobs]
    if len(set(images)) != len(images):
        raise ValueError("jobs repeat a (model, condition, seed): the same image would count twice.")
    return jobs


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def image_name(job: dict) -> str:
    """The PNG file name of a job: its id, model, condition and seed."""
    return f"{job['job_id']:04d}_{_slug(job['model'])}_{_slug(job['condition'])}_seed{job['seed']}.png"


def save_png(image, path: Path, recipe: dict) -> None:
    """Save `image` as a PNG carrying its recipe; refuse to overwrite an existing file.

    Encoded in memory first: a failed save (bad image, full disk) leaves no partial file."""
    from ..generation.png_metadata import png_bytes, recipe_json, write_new_file

    write_new_file(path, png_bytes(image, {"recipe": recipe_json(recipe)}))


def run_jobs(jobs, run_dir, *, labels, stand_in: bool | None = None, device: str = "auto",
             clip_model: str | None = None, process: int = 0) -> list[dict]:
    """Generate, save and CLIP-score `jobs` in this process; one result row per job, each also
    appended to run_dir/finished-rows-process-N.csv the moment it is made.

    A model that cannot load here because it needs a GPU (NF4 on a CPU machine) gives rows with
    status "needs a GPU" and no score, instead of stopping the study. A job whose PNG is already
    there (made just before an interruption) is scored from that file, not made again."""
    from PIL import Image

    from ..generation.text_to_image import generate
    from ..loading.load import load_pipeline, release_current_pipeline
    from ..loading.planner import use_stand_in
    from .clip_score import ClipScorer, clip_model_id

    labels = list(labels)
    stand_in = use_stand_in(stand_in)
    clip_model = clip_model or clip_model_id(stand_in)
    scorer = None
    rows = []
    finished = Path(run_dir) / FINISHED_ROWS_CSV.format(process)
    by_model: dict[str, list[dict]] = {}
    for job in jobs:
        by_model.setdefault(job["model"], []).append(job)
    # One bar over every image of the study, instead of one per image from the pipeline, after the
    # count and the time it should take.
    clock = ReaderClock(f"run_study (process {process})" if process else "run_study", len(jobs),
                        study_estimate(jobs, stand_in, device), desc=f"images (process {process})" if process else "images")
    for model, model_jobs in by_model.items():
        try:
            size = (max(j["height"] for j in model_jobs), max(j["width"] for j in model_jobs))  # planned for its images
            pipe = load_pipeline(model, stand_in=stand_in, device=device, size=size)
        except QuantizationNeedsGPUError as e:
            for job in model_jobs:
                rows.append(_row(job, "needs a GPU", labels, process, note=f"{type(e).__name__}: {str(e).split('. ')[0]}"))
                append_row(rows[-1], finished)
            for _ in model_jobs:
                clock.tick()
            continue
        pipe.set_progress_bar_config(disable=True)
        if scorer is None:
            scorer = ClipScorer.load(clip_model, device=device)
        with pipeline_lock.using(pipe, "run_study"):  # every image of this model, one at a time
            for job in model_jobs:
                name = image_name(job)
                path = Path(run_dir) / name
                if path.exists():
                    with Image.open(path) as saved:
                        image, recipe, seconds = saved.convert("RGB"), json.loads(saved.text["recipe"]), math.nan
                else:
                    result = generate(
                        pipe, job["prompt"], negative_prompt=job["negative_prompt"], seed=job["seed"],
                        guidance_scale=job["guidance_scale"], num_inference_steps=job["num_inference_steps"],
                        height=job["height"], width=job["width"],
                    )
                    image, recipe, seconds = result.image, result.recipe, result.seconds
                    save_png(image, path, recipe)
                p_object = float(scorer.zero_shot([image], labels)[0, 0])
                rows.append(_row(job, "ok", labels, process, p_object=p_object, image=name,
                                 seconds=seconds, recipe=recipe, clip_model=clip_model))
                append_row(rows[-1], finished)
                clock.tick(seconds)
        release_current_pipeline()
    clock.close()
    return rows


def _row(job, status, labels, process, *, p_object=float("nan"), image="", seconds=float("nan"),
         recipe=None, clip_model="", note="") -> dict:
    recipe = recipe or {}
    row = dict(job, status=status, p_object=p_object, label_object=labels[0],
               label_other=" | ".join(labels[1:]), image=image, seconds=seconds, process=process,
               clip_model=clip_model, versions=json.dumps(recipe.get("versions", {})), note=note)
    row.update({k: recipe.get(k, "") for k in RECIPE_FIELDS})
    return row


@dataclass
class StudyResult:
    """What `run_study` returns on the main process: the run folder and the gathered rows."""

    run_dir: Path
    rows: list[dict]

    @property
    def csv_path(self) -> Path:
        return self.run_dir / RESULTS_CSV


@one_study_at_a_time
def run_study(jobs, root, *, labels, stand_in: bool | None = None, clip_model: str | None = None,
              resume=None) -> StudyResult | None:
    """Run `jobs` split across every process of this launch; gather and write the table.

    The same call works in a notebook (one process) and under `accelerate launch --num_processes N`.
    Without GPUs the processes talk over gloo (`PartialState(cpu=True)`): plain `PartialState()`
    would treat each CPU process as a lone rank 0 and every process would do every job. Returns
    the StudyResult on the main process and None on the others.

    Every job is checked before the first image. Rows are written as they are made; a study that
    stops (interrupted, out of memory) keeps them, and `resume=<its run folder>` with the same
    jobs makes only the missing images, then writes results.csv. `resume=True` finds that folder
    itself: the newest unfinished run of these very jobs under `root`, or a fresh run if there is
    none, so rerunning the same cell (on a Drive folder, after Colab recycled the runtime) finishes it."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    jobs = check_jobs(jobs)
    labels = check_labels(labels)
    root = check_folder(root, "root")
    resume = unfinished_run(root, jobs) if resume is True else None if resume is False else resume
    if resume is not None:
        check_resumable(check_folder(resume, "resume"), jobs)
        check_resume(resume, jobs, image_name)  # every finished row and leftover PNG against the plan; a writable folder

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.is_main_process:
        if resume is None:
            run_dir = fresh_run_dir(root)
            write_atomically(run_dir / JOBS_JSON, json.dumps(jobs, indent=1))
            done = {}
        else:
            run_dir, done = Path(resume), finished_jobs(resume, jobs, image_name)
        shared = [(str(run_dir), sorted(done))]
    else:
        shared = [None]
    folder, done_ids = broadcast_object_list(shared)[0]
    run_dir = Path(folder)
    left = [job for job in jobs if job["job_id"] not in set(done_ids)]
    device = str(state.device) if state.device.type == "cuda" else "auto"
    with state.split_between_processes(left) as mine:
        try:
            rows = run_jobs(mine, run_dir, labels=labels, stand_in=stand_in, device=device,
                            clip_model=clip_model, process=state.process_index)
        except BaseException as e:
            e.add_note(
                f"The images finished so far are kept in {run_dir} (finished-rows-process-*.csv). "
                f"Finish the study with run_study(jobs, root, labels=..., resume={str(run_dir)!r}) "
                "(or resume=True: the newest unfinished run of these jobs under root)."
            )
            raise
    rows = gather_object(rows)
    if not state.is_main_process:
        return None
    rows = sorted(list(done.values()) + rows, key=lambda row: row["job_id"])
    # A resume replaces a results.csv only when it is a partial one (an older, interrupted write).
    write_results(rows, run_dir / RESULTS_CSV, overwrite=resume is not None)
    return StudyResult(run_dir, rows)


def check_labels(labels) -> list[str]:
    """CLIP's zero-shot labels: a list of at least two distinct, non-empty texts (the object's first)."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise TypeError(f"labels must be a list of texts, the object's label first (e.g. {list(DEFAULT_LABELS)}), "
                        f"not {type(labels).__name__} {labels!r:.60}.")
    labels = list(labels)
    if len(labels) < 2:
        raise ValueError(f"labels needs the object's label and at least one alternative, not {labels!r}.")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"labels must be non-empty texts, not {label!r} (in {labels!r:.80}).")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {labels!r:.80}; CLIP would split the probability between them.")
    return labels
