"""A study's files on a full disk or after a hard kill: whole or not at all, and resume redoes what is missing."""

import json

import numpy as np
import pytest
from disk_full import disk_full_after, is_disk_full

from helpers.studies import jobs as jobs_module
from helpers.studies.jobs import Condition, plan_jobs, run_study
from helpers.studies.results import append_row, read_results, write_results

LABELS = ["a photo of a birthday cake", "a photo of a children's party"]
SETTINGS = dict(guidance_scale=3.5, num_inference_steps=1, height=64, width=64)


def small_jobs(seeds=(0, 1)):
    return plan_jobs([Condition("a", "a party")], ["sd35-large"], list(seeds), **SETTINGS)


def finish_again(jobs, tmp_path, run_dir):
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True, resume=run_dir)
    rows = read_results(study.csv_path)
    assert [r["job_id"] for r in rows] == [j["job_id"] for j in jobs] and {r["status"] for r in rows} == {"ok"}
    return rows


def test_a_full_disk_while_results_csv_is_written_leaves_none_and_resume_finishes(tiny_dir, tmp_path, monkeypatch):
    jobs = small_jobs()
    real = jobs_module.write_results

    def on_a_full_disk(rows, path, **kwargs):
        with disk_full_after(300):
            return real(rows, path, **kwargs)

    monkeypatch.setattr(jobs_module, "write_results", on_a_full_disk)
    with pytest.raises(OSError) as full:
        run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    assert is_disk_full(full.value)
    (run_dir,) = tmp_path.glob("run-*")
    assert not (run_dir / "results.csv").exists() and not list(run_dir.glob(".results.csv*"))  # no part left
    monkeypatch.undo()
    finish_again(jobs, tmp_path, run_dir)


def test_a_partial_results_csv_from_an_older_write_does_not_block_resume(tiny_dir, tmp_path):
    jobs = small_jobs()
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    text = study.csv_path.read_text()
    study.csv_path.write_text(text[: len(text) * 2 // 3])  # what a full disk left before writes were atomic
    finish_again(jobs, tmp_path, study.run_dir)
    with pytest.raises(FileExistsError, match="finished already"):  # a whole one still means finished
        run_study(jobs, tmp_path, labels=LABELS, stand_in=True, resume=study.run_dir)


def test_a_full_disk_while_a_row_is_appended_keeps_the_file_whole(tiny_dir, tmp_path, monkeypatch):
    jobs = small_jobs()
    real, calls = jobs_module.append_row, []

    def second_row_on_a_full_disk(row, path):
        calls.append(row)
        if len(calls) < 2:
            return real(row, path)
        with disk_full_after(path.stat().st_size + 100):  # room for a part of the row only
            return real(row, path)

    monkeypatch.setattr(jobs_module, "append_row", second_row_on_a_full_disk)
    with pytest.raises(OSError) as full:
        run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    assert is_disk_full(full.value)
    (run_dir,) = tmp_path.glob("run-*")
    assert [r["job_id"] for r in read_results(run_dir / "finished-rows-process-0.csv")] == [0]  # no half row
    monkeypatch.undo()
    finish_again(jobs, tmp_path, run_dir)


def test_resume_redoes_a_row_torn_by_a_hard_kill(tiny_dir, tmp_path):
    jobs = small_jobs((0, 1, 2))
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    study.csv_path.unlink()
    finished = study.run_dir / "finished-rows-process-0.csv"
    text = finished.read_text()
    last_row_starts = text.rindex("\n", 0, len(text) - 2) + 1
    for cut in (last_row_starts + 5, len(text) - 1):  # in its first fields; only the line break missing
        finished.write_text(text[:cut])
        with pytest.raises(ValueError, match="last row was cut off"):
            read_results(finished)
        rows = finish_again(jobs, tmp_path, study.run_dir)
        assert [r["job_id"] for r in read_results(finished)] == [0, 1, 2]  # the torn row was redone
        assert rows[2]["p_object"] == pytest.approx(study.rows[2]["p_object"])
        study.csv_path.unlink()


def test_resume_redoes_an_ok_row_whose_png_has_gone(tiny_dir, tmp_path):
    jobs = small_jobs()
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    gone = study.run_dir / study.rows[1]["image"]
    original = gone.read_bytes()
    gone.unlink()
    study.csv_path.unlink()
    finish_again(jobs, tmp_path, study.run_dir)
    assert gone.read_bytes() == original  # made again, the same image


def test_writes_are_whole_or_none_and_never_overwrite(tmp_path):
    rows = [{"job_id": i, "prompt": "x" * 500} for i in range(20)]
    path = tmp_path / "results.csv"
    with disk_full_after(2000), pytest.raises(OSError) as full:
        write_results(rows, path)
    assert is_disk_full(full.value) and list(tmp_path.iterdir()) == []
    write_results(rows[:1], path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_results(rows, path)
    assert path.read_bytes() == before
    with disk_full_after(len(before) + 50), pytest.raises(OSError):
        append_row(rows[1], path)
    assert path.read_bytes() == before


def test_read_results_of_no_file_names_what_is_there(tmp_path):
    with pytest.raises(TypeError, match="path must be a results CSV's path"):
        read_results(None)
    (tmp_path / ".results.csv.partial-1a2b").write_text("job_id,mod")  # what a hard kill mid-write leaves
    with pytest.raises(FileNotFoundError, match=r"\.results\.csv\.partial-1a2b there is an unfinished write"):
        read_results(tmp_path / "results.csv")


@pytest.mark.parametrize("missing", ["seed", "status"])
def test_read_results_names_a_missing_column(tmp_path, missing):
    path = tmp_path / "results.csv"
    write_results([{"job_id": 0, "seed": 1, "status": "ok"}], path)
    lines = path.read_text().split("\r\n")
    header = lines[0].split(",")
    index = header.index(missing)
    path.write_text("\r\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != index) for line in lines))
    with pytest.raises(ValueError, match=f"lacks the column.*{missing}"):
        read_results(path)


def test_numpy_seeds_are_accepted_as_plain_ints(tmp_path):
    jobs = plan_jobs([Condition("a", "a party")], ["sd35-large"], np.arange(2), **SETTINGS)
    numpy_jobs = [dict(job, seed=np.int64(job["seed"]), job_id=np.int64(job["job_id"])) for job in jobs]
    checked = jobs_module.check_jobs(numpy_jobs)
    assert checked == jobs and all(type(job["seed"]) is int for job in checked)
    json.dumps(checked)


@pytest.mark.parametrize("labels, error, match", [
    ("ab", TypeError, "labels must be a list of texts"), (["", ""], ValueError, "labels must be non-empty texts"),
    (["a cake", "a cake"], ValueError, "labels has duplicates"), (["a cake", None], ValueError, "non-empty texts"),
    (None, TypeError, "labels must be a list"),
])
def test_run_study_labels_are_checked_before_anything(tmp_path, labels, error, match):
    with pytest.raises(error, match=match):
        run_study(small_jobs(), tmp_path, labels=labels, stand_in=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, match", [
    (dict(job_id="../../evil"), "job_id must be a whole number >= 0"), (dict(job_id=1.5), "job_id must be"),
    (dict(job_id=None), "job_id must be"), (dict(job_id=-1), "job_id must be"),
    (dict(condition=None), "job 1: condition must be a non-empty name"), (dict(condition=123), "condition must be"),
    (dict(condition=""), "condition must be"),
])
def test_check_jobs_refuses_bad_ids_and_conditions_up_front(tmp_path, change, match):
    jobs = small_jobs()
    with pytest.raises(TypeError, match=match):
        run_study([jobs[0], {**jobs[1], **change}], tmp_path, labels=LABELS, stand_in=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("jobs, match", [(None, "jobs must be a list of job dicts"), ("abc", "jobs must be a list"),
                                         ({"job_id": 0}, "jobs must be a list")])
def test_check_jobs_needs_a_list(jobs, match):
    with pytest.raises(TypeError, match=match):
        jobs_module.check_jobs(jobs)


@pytest.mark.parametrize("root, error, match", [
    (None, TypeError, "root must be a folder path"), (123, TypeError, "root must be a folder path"),
    ("file", NotADirectoryError, "root=.* is a file, not a folder"),
])
def test_run_study_root_must_be_a_folder(tmp_path, root, error, match):
    if root == "file":
        root = tmp_path / "notes.txt"
        root.write_text("the user's notes")
    with pytest.raises(error, match=match):
        run_study(small_jobs(), root, labels=LABELS, stand_in=True)
    assert [p.name for p in tmp_path.iterdir()] in ([], ["notes.txt"])
