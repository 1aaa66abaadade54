"""Class 6: a study's resume checks every finished row against the job plan and its PNG before
it counts as done, and fails before any image on what it cannot finish."""

import math
import shutil
import threading
from pathlib import Path

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
from disk_full import disk_full_after, is_disk_full
from hypothesis import given
from hypothesis import strategies as st
from read_only import read_only

from helpers.studies import jobs as jobs_module
from helpers.studies.jobs import Condition, image_name, plan_jobs, run_study
from helpers.studies.results import parse_results, read_results, results_text
from helpers.studies.resume import finished_jobs, row_problem

LABELS = ["a photo of a birthday cake", "a photo of a children's party"]
SETTINGS = dict(guidance_scale=3.5, num_inference_steps=1, height=64, width=64)


def small_jobs(seeds=(0, 1)):
    return plan_jobs([Condition("a", "a party")], ["sd35-large"], list(seeds), **SETTINGS)


@pytest.fixture(scope="module")
def finished(tiny_dir, tmp_path_factory):
    """One finished two-image study (its run folder, jobs and rows), never changed by a test."""
    jobs = small_jobs()
    study = run_study(jobs, tmp_path_factory.mktemp("study"), labels=LABELS, stand_in=True)
    return study.run_dir, jobs, study.rows


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run-001"
    shutil.copytree(run_dir, copy, symlinks=True)
    (copy / "results.csv").unlink()
    return copy


# A finished row, changed one way a damaged, tampered or stale file would change it.
TAMPERING = st.one_of(
    st.tuples(st.just("p_object"), st.sampled_from([math.nan, math.inf, -0.5, 1.5])),
    st.tuples(st.just("image"), st.sampled_from(["other", "../outside.png", "/tmp/x.png", "", "0000_x.png"])),
    st.tuples(st.just("job_id"), st.integers(2, 10**6)),
    st.tuples(st.just("seed"), st.integers(2, 2**32 - 1)),
    st.tuples(st.just("prompt"), st.text(min_size=1, max_size=20).filter(lambda t: t != "a party")),
    st.tuples(st.just("guidance_scale"), st.floats(0, 30).filter(lambda g: g != 3.5)),
    st.tuples(st.just("status"), st.sampled_from(["needs a GPU", "failed", ""])),
)


@given(which=st.integers(0, 1), tampering=TAMPERING)
def test_a_tampered_row_is_never_taken_as_done(finished, tmp_path_factory, which, tampering):
    run_dir, jobs, rows = finished
    key, value = tampering
    if key == "image" and value == "other":
        value = rows[1 - which]["image"]  # another job's PNG
    bad = {**rows[which], key: value}
    copy = _copy(run_dir, tmp_path_factory.mktemp("resume"))
    (copy / "finished-rows-process-0.csv").write_text(results_text([rows[1 - which], bad]), newline="")
    plan = {job["job_id"]: job for job in jobs}
    assert row_problem(bad, plan.get(bad["job_id"]), copy, image_name) is not None or key == "status"
    assert set(finished_jobs(copy, jobs, image_name)) == {rows[1 - which]["job_id"]}
    assert row_problem(rows[which], jobs[which], copy, image_name) is None


@given(damage=st.sampled_from(["truncated", "no recipe", "other job's", "dangling link", "not an image"]))
def test_a_leftover_png_that_is_not_the_jobs_image_fails_before_any_load(finished, tmp_path_factory, damage):
    from PIL import Image

    run_dir, jobs, rows = finished
    copy = _copy(run_dir, tmp_path_factory.mktemp("resume"))
    (copy / "finished-rows-process-0.csv").write_text(results_text(rows[:1]), newline="")
    png = copy / rows[1]["image"]
    data = png.read_bytes()
    png.unlink()
    if damage == "truncated":
        png.write_bytes(data[: len(data) // 2])
    elif damage == "no recipe":
        Image.new("RGB", (64, 64)).save(png)
    elif damage == "other job's":
        shutil.copy(copy / rows[0]["image"], png)
    elif damage == "dangling link":
        png.symlink_to(copy / "gone.png")
    else:
        png.write_text("not a png")
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=rf"resume: .*{png.name} is in job 1's name but .*Move it out"):
        _resume_without_loading(jobs, copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before  # nothing lost


def _resume_without_loading(jobs, run_dir):
    """run_study's resume, where loading a pipeline would fail the test (the error must come first)."""
    import helpers.loading.load as load

    real = load.load_pipeline
    load.load_pipeline = lambda *args, **kwargs: pytest.fail("a pipeline was loaded before the error")
    try:
        return run_study(jobs, run_dir.parent, labels=LABELS, stand_in=True, resume=run_dir)
    finally:
        load.load_pipeline = real


def test_a_good_leftover_png_is_scored_not_made_again(finished, tmp_path):
    run_dir, jobs, rows = finished
    copy = _copy(run_dir, tmp_path)
    (copy / "finished-rows-process-0.csv").write_text(results_text(rows[:1]), newline="")
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True, resume=copy)
    assert [r["job_id"] for r in study.rows] == [0, 1]
    assert study.rows[1]["p_object"] == pytest.approx(rows[1]["p_object"]) and math.isnan(study.rows[1]["seconds"])


def test_a_full_disk_at_the_first_row_leaves_a_study_that_resumes(tiny_dir, tmp_path, monkeypatch):
    jobs = small_jobs()
    real = jobs_module.append_row

    def on_a_full_disk(row, path):
        with disk_full_after(10):  # not even the header fits
            return real(row, path)

    monkeypatch.setattr(jobs_module, "append_row", on_a_full_disk)
    with pytest.raises(OSError) as full:
        run_study(jobs, tmp_path, labels=LABELS, stand_in=True)
    assert is_disk_full(full.value)
    (run_dir,) = tmp_path.glob("run-*")
    assert not (run_dir / "finished-rows-process-0.csv").exists()  # no 0-byte file
    monkeypatch.undo()
    (run_dir / "finished-rows-process-1.csv").write_bytes(b"")  # what an older version left
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True, resume=run_dir)
    assert [r["status"] for r in read_results(study.csv_path)] == ["ok", "ok"]


def test_resuming_into_a_read_only_folder_fails_before_any_image(finished, tmp_path):
    run_dir, jobs, rows = finished
    copy = _copy(run_dir, tmp_path)
    (copy / "finished-rows-process-0.csv").write_text(results_text(rows[:1]), newline="")
    (copy / rows[1]["image"]).unlink()
    with read_only(copy), pytest.raises(PermissionError, match=r"resume=.*cannot be written to"):
        _resume_without_loading(jobs, copy)


def test_three_threads_running_studies_at_once_all_finish(tiny_dir, tmp_path):
    results, errors = {}, []

    def study(n):
        try:
            results[n] = run_study(small_jobs((n,)), tmp_path / f"root-{n}", labels=LABELS, stand_in=True)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=study, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert sorted(results) == [0, 1, 2]
    for n, result in results.items():
        assert [(r["seed"], r["status"]) for r in result.rows] == [(n, "ok")]
        assert (result.run_dir / image_name(result.rows[0])).is_file()


NUMERIC = st.sampled_from(["job_id", "seed", "num_inference_steps", "height", "width", "guidance_scale", "p_object"])


@given(column=NUMERIC, value=st.sampled_from(["x", "1.5.2", "1e", "--1", "9" * 5000]))
def test_a_bad_value_in_a_whole_last_row_is_damage_not_a_torn_write(finished, column, value):
    _, _, rows = finished
    if column in ("guidance_scale", "p_object") and value == "9" * 5000:
        value = "nan?"
    text = results_text([rows[0], {**rows[1], column: value}])
    with pytest.raises(ValueError, match=r"line 3: the row is damaged"):
        parse_results(text, "finished-rows-process-0.csv")
    rows_kept, torn = parse_results(text[:-5], "finished-rows-process-0.csv")  # cut short: torn
    assert torn and len(rows_kept) == 1

