"""The negative-prompt study's job logic: planning, fresh run folders, one process and two."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO  # noqa: E402
from PIL import Image

from helpers.studies.jobs import (
    Condition,
    fresh_run_dir,
    negative_prompt_conditions,
    plan_jobs,
    run_jobs,
    run_study,
    save_png,
)
from helpers.studies.results import compare_negative_effect, read_results, summarize, write_results

LABELS = ["a photo of a birthday cake", "a photo of a children's party"]
SETTINGS = dict(guidance_scale=3.5, num_inference_steps=2, height=64, width=64)


def test_blog_conditions():
    conditions = negative_prompt_conditions("Children's birthday party", "birthday cake", "Three children")
    assert [c.negative_prompt for c in conditions] == [None, "No birthday cake", "birthday cake", None]
    assert [c.prompt for c in conditions] == ["Children's birthday party"] * 3 + ["Three children"]
    assert len({c.name for c in conditions}) == 4
    with pytest.raises(ValueError, match="object_name"):
        negative_prompt_conditions("a party", " ", "Three children")


def test_plan_jobs_covers_every_combination_once_models_slowest():
    conditions = [Condition("a", "p"), Condition("b", "p", "n")]
    jobs = plan_jobs(conditions, ["sd35-large", "sd35-medium"], range(3), **SETTINGS)
    assert [j["job_id"] for j in jobs] == list(range(12))
    assert {(j["model"], j["condition"], j["seed"]) for j in jobs} == {
        (m, c, s) for m in ("sd35-large", "sd35-medium") for c in ("a", "b") for s in range(3)
    }
    assert [j["model"] for j in jobs] == ["sd35-large"] * 6 + ["sd35-medium"] * 6
    with pytest.raises(ValueError, match="seeds is empty"):
        plan_jobs(conditions, ["sd35-large"], [], **SETTINGS)
    with pytest.raises(ValueError, match="duplicates"):
        plan_jobs(conditions, ["sd35-large", "sd35-large"], [0], **SETTINGS)
    with pytest.raises(ValueError, match="unique"):
        plan_jobs([Condition("a", "p"), Condition("a", "q")], ["sd35-large"], [0], **SETTINGS)


def test_run_folders_are_fresh_and_pngs_never_overwrite(tmp_path):
    first, second = fresh_run_dir(tmp_path), fresh_run_dir(tmp_path)
    assert (first.name, second.name) == ("run-001", "run-002")
    (tmp_path / "run-007").mkdir()
    assert fresh_run_dir(tmp_path).name == "run-008"
    image = Image.new("RGB", (8, 8), "red")
    save_png(image, first / "x.png", {"seed": 1})
    with pytest.raises(FileExistsError):
        save_png(Image.new("RGB", (8, 8), "blue"), first / "x.png", {"seed": 2})
    with Image.open(first / "x.png") as kept:
        assert kept.getpixel((0, 0)) == (255, 0, 0) and json.loads(kept.text["recipe"]) == {"seed": 1}
    rows = [{"job_id": 0}]
    write_results(rows, first / "results.csv")
    with pytest.raises(FileExistsError):
        write_results(rows, first / "results.csv")


def test_run_study_in_one_process(tiny_dir, tmp_path):
    """Stand-in bf16 runs and matches `generate`; NF4 without the shim is reported, not fatal."""
    import helpers

    conditions = [Condition("no negative", "a party"), Condition("negative", "a party", "cake")]
    jobs = plan_jobs(conditions, ["sd35-large", "sd35-large-nf4"], [0, 1], **SETTINGS)
    with pytest.raises(ValueError, match="labels"):
        run_study(jobs, tmp_path, labels=["only one"], stand_in=True)
    assert not list(tmp_path.iterdir())  # refused before creating anything

    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    rows = read_results(study.csv_path)
    assert [r["job_id"] for r in rows] == list(range(8))
    done = [r for r in rows if r["model"] == "sd35-large"]
    assert {r["status"] for r in done} == {"ok"}
    assert all(0 < r["p_object"] < 1 and (study.run_dir / r["image"]).is_file() for r in done)
    nf4 = [r for r in rows if r["model"] == "sd35-large-nf4"]
    assert {r["status"] for r in nf4} == {"needs a GPU"} and not any(r["image"] for r in nf4)
    assert all(r["note"].startswith("QuantizationNeedsGPUError: ") for r in nf4)
    assert len(list(study.run_dir.glob("*.png"))) == 4

    # The saved image is the one `generate` makes from the row's recipe.
    row = done[3]
    again = helpers.generate(helpers.load_pipeline("sd35-large", stand_in=True), row["prompt"],
                             negative_prompt=row["negative_prompt"], seed=row["seed"],
                             guidance_scale=row["guidance_scale"],
                             num_inference_steps=row["num_inference_steps"], height=64, width=64)
    helpers.release_current_pipeline()
    with Image.open(study.run_dir / row["image"]) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(again.image))

    table = summarize(rows)
    assert [(e["model"], e["condition"], e["n"]) for e in table] == [
        ("sd35-large", "no negative", 2), ("sd35-large", "negative", 2),
        ("sd35-large-nf4", "no negative", 0), ("sd35-large-nf4", "negative", 0),
    ]
    assert table[2]["status"] == "needs a GPU" and np.isnan(table[2]["mean"])
    assert compare_negative_effect(rows, "sd35-large", "sd35-large-nf4", "negative") is None

    second = run_study(jobs[:1], tmp_path, labels=LABELS, stand_in=True)
    assert second.run_dir != study.run_dir and len(list(study.run_dir.glob("*.png"))) == 4


def test_one_progress_bar_over_images_not_one_per_image(tiny_dir, tmp_path, capsys):
    jobs = plan_jobs([Condition("no negative", "a party")], ["sd35-large"], [0, 1, 2], **SETTINGS)
    run_jobs(jobs, tmp_path, labels=LABELS, stand_in=True)
    out, err = capsys.readouterr()
    # The count and the time before the first image (the stand-in has no measured figure: the first image's).
    assert out.startswith("run_study: 3 images. No estimate before the first image (the stand-in")
    assert "First image measured: " in out and "for the other 2" in out and "run_study: 3 images in " in out
    assert "images: 100%" in err and "3/3" in err  # the outer bar counts images
    assert "2/2 [" not in err  # no pipeline bar over each image's 2 denoising steps


def test_nf4_runs_and_is_compared_with_the_cpu_shim(bnb_cpu, tmp_path):
    conditions = [Condition("no negative", "a party"), Condition("negative", "a party", "cake")]
    jobs = plan_jobs(conditions, ["sd35-large", "sd35-large-nf4"], [0, 1, 2], **SETTINGS)
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    assert {r["status"] for r in study.rows} == {"ok"}
    assert {r["quantization"] for r in study.rows if r["model"] == "sd35-large-nf4"} == {"nf4"}
    c = compare_negative_effect(study.rows, "sd35-large", "sd35-large-nf4", "negative")
    assert c.n == 3 and c.ci_low <= c.mean_difference <= c.ci_high and 0 < c.p_value <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_accelerate_launch_does_every_job_exactly_once(tiny_dir, tmp_path):
    """`accelerate launch` with two CPU processes (gloo on 127.0.0.1) splits and gathers the jobs."""
    from helpers.studies.clip_score import clip_model_id

    clip_model_id(True)  # build the tiny CLIP once, before two processes race to
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("SD35_STAND_IN", None)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
        str(REPO / "benchmarks" / "negative_prompt_study.py"),
        "--seeds", "3", "--models", "sd35-large", "--steps", "2", "--stand-in", "yes",
        "--output", str(tmp_path),
    ]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = tmp_path.glob("run-*")
    rows = read_results(run_dir / "results.csv")
    jobs = json.loads((run_dir / "jobs.json").read_text())
    assert len(jobs) == 12
    assert sorted(r["job_id"] for r in rows) == [j["job_id"] for j in jobs]  # each job exactly once
    assert {r["process"] for r in rows} == {0, 1}  # both processes worked
    assert {r["status"] for r in rows} == {"ok"}
    assert sorted(p.name for p in run_dir.glob("*.png")) == sorted(r["image"] for r in rows)
    assert "12 jobs ->" in done.stdout and done.stdout.count("placement prompt") == 1


@pytest.mark.parametrize("change, error, match", [
    (dict(guidance_scale=float("nan")), ValueError, "guidance_scale must be a finite number"),
    (dict(guidance_scale=1e6), ValueError, "above 30"),
    (dict(num_inference_steps=-2), ValueError, "at least 1"),
    (dict(height=100), ValueError, "height=100 is not a positive multiple of 16"),
    (dict(seeds=[0, -1]), ValueError, "seed must be between 0"),
    (dict(seeds=[0, 0.5]), TypeError, "seed must be a whole number"),
    (dict(seeds=[1.0, 1]), TypeError, "seed must be a whole number"),  # was truncated to n=2 of one image
    (dict(seeds=[1, np.int64(1)]), ValueError, "seeds has duplicates"),
    (dict(models=["sd35-large", "sd35-huge"]), ValueError, "Unknown model preset 'sd35-huge'"),
    (dict(conditions=[Condition("a", None)]), TypeError, "prompt must be a string"),
])
def test_plan_jobs_checks_everything_up_front(change, error, match):
    args = dict(conditions=[Condition("a", "p")], models=["sd35-large"], seeds=[0, 1], **SETTINGS)
    with pytest.raises(error, match=match):
        plan_jobs(**{**args, **change})


def test_run_study_checks_every_job_before_the_first_image(tmp_path):
    jobs = plan_jobs([Condition("a", "a party")], ["sd35-large"], [0, 1], **SETTINGS)
    for bad, match in [(dict(model="sd35-huge"), "job 1: Unknown model preset"),
                       (dict(seed=1.5), "job 1: seed must be a whole number"),
                       (dict(guidance_scale=float("nan")), "job 1: guidance_scale"),
                       (dict(seed=0), "the same image would count twice")]:
        with pytest.raises((ValueError, TypeError), match=match):
            run_study([jobs[0], {**jobs[1], **bad}], tmp_path, labels=LABELS, stand_in=True)
    assert not list(tmp_path.iterdir())  # refused before creating anything


def test_an_interrupted_study_keeps_its_rows_and_resume_finishes_it(tiny_dir, tmp_path, monkeypatch):
    import _thread

    import tqdm.auto

    jobs = plan_jobs([Condition("a", "a party"), Condition("b", "a party", "cake")], ["sd35-large"],
                     range(3), **{**SETTINGS, "num_inference_steps": 1})
    rows_file = []

    class CtrlCAfterTwoImages(tqdm.auto.tqdm):
        """The study's own progress bar; when it counts the second image (its row is written by
        then), Ctrl-C is pressed (what Kernel > Interrupt does): no watcher thread racing the images."""

        def update(self, n=1):
            shown = super().update(n)
            if self.desc == "images" and self.n == 2 and not rows_file:
                rows_file.extend(tmp_path.glob("run-*/finished-rows-process-0.csv"))
                _thread.interrupt_main()
            return shown

    monkeypatch.setattr(tqdm.auto, "tqdm", CtrlCAfterTwoImages)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    monkeypatch.undo()
    (run_dir,) = tmp_path.glob("run-*")
    assert "resume=" in "\n".join(getattr(interrupted.value, "__notes__", []))
    assert not (run_dir / "results.csv").exists()
    kept = read_results(rows_file[0])
    assert len(kept) == 2 and {r["status"] for r in kept} == {"ok"}
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.png")}

    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True, resume=run_dir)
    assert study.run_dir == run_dir and list(tmp_path.glob("run-*")) == [run_dir]
    rows = read_results(study.csv_path)
    assert [r["job_id"] for r in rows] == list(range(len(jobs))) and {r["status"] for r in rows} == {"ok"}
    assert len(list(run_dir.glob("*.png"))) == len(jobs)
    assert all((run_dir / name).read_bytes() == data for name, data in before.items())  # never redone

    with pytest.raises(FileExistsError, match="finished already"):
        run_study(jobs, tmp_path, labels=LABELS, stand_in=True, resume=run_dir)
    with pytest.raises(ValueError, match="differ"):
        run_study(jobs[:2], tmp_path, labels=LABELS, stand_in=True, resume=run_dir)


@pytest.mark.parametrize("lists, name", [
    (dict(seeds=3), "seeds"), (dict(models="sd35-large"), "models"), (dict(conditions=None), "conditions"),
])
def test_plan_jobs_needs_lists_not_one_value(lists, name):
    args = dict(conditions=[Condition("plain", "a cat")], models=["sd35-large"], seeds=[0]) | lists
    with pytest.raises(TypeError, match=rf"^{name} must be a list \(e\.g\. {name}=\[\.\.\.\]\), not "):
        plan_jobs(args["conditions"], args["models"], args["seeds"], **SETTINGS)
