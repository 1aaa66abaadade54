"""A study survives a killed kernel: a fresh kernel on the same folder (Google Drive on Colab) finishes it."""

import json
import os
import signal
import time

import pytest
from conftest import REPO
from jupyter_client import KernelManager

from helpers.studies.jobs import Condition, _row, plan_jobs
from helpers.studies.results import parse_results, read_results, write_results
from helpers.studies.run_folders import JOBS_JSON, unfinished_run

LABELS = ["a photo of a birthday cake", "a photo of a children's party"]
# What notebook 05's study cell does, with resume=True: rerunning it finishes an unfinished run.
STUDY = """
import sys
sys.path.insert(0, {repo!r})
from helpers.studies.jobs import Condition, plan_jobs, run_study
jobs = plan_jobs([Condition("a", "a party"), Condition("b", "a party", "cake")], ["sd35-large"], range(6),
                 guidance_scale=3.5, num_inference_steps=3, height=64, width=64)
study = run_study(jobs, {root!r}, labels={labels!r}, stand_in=True, resume=True)
print("rows", len(study.rows))
"""


def start_kernel(cwd):
    km = KernelManager(kernel_name="python3")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("SD35_STAND_IN", None)
    km.start_kernel(cwd=str(cwd), env=env)
    client = km.client()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    return km, client


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_study_killed_mid_run_is_finished_by_a_fresh_kernel_each_image_made_once(tiny_dir, tmp_path):
    from helpers.studies.clip_score import clip_model_id

    clip_model_id(True)  # the tiny CLIP exists before the kernels look for it
    root = tmp_path / "drive" / "MyDrive" / "studies"  # a mounted Drive folder is a folder like any other
    root.mkdir(parents=True)
    code = STUDY.format(repo=str(REPO), root=str(root), labels=LABELS)

    km, client = start_kernel(tmp_path)
    try:
        client.execute(code)
        pngs = lambda: list(root.glob("run-*/*.png"))  # noqa: E731
        wait_for(lambda: len(pngs()) >= 3, 300, "three images of the first kernel")
        os.kill(km.provisioner.process.pid, signal.SIGKILL)  # the runtime is recycled: no clean-up runs
        km.provisioner.process.wait(timeout=30)
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
    (run_dir,) = root.glob("run-*")
    jobs = json.loads((run_dir / JOBS_JSON).read_text())
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.glob("*.png")}
    assert 3 <= len(before) < len(jobs) == 12, "the kill must land in the middle of the study"
    assert not (run_dir / "results.csv").exists()
    finished = run_dir / "finished-rows-process-0.csv"
    kept, _ = parse_results(finished.read_text(), finished) if finished.exists() else ([], False)
    done_at_kill = [r for r in kept if r["status"] == "ok" and r["image"] in before]

    km, client = start_kernel(tmp_path)  # a fresh kernel, a fresh process, the same cell
    try:
        outputs = []
        reply = client.execute_interactive(code, timeout=600, output_hook=outputs.append)
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        assert reply["content"]["status"] == "ok", text + str([m["content"] for m in outputs if m["msg_type"] == "error"])
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=True)
    assert "rows 12" in text and list(root.glob("run-*")) == [run_dir]  # the same run, finished
    rows = read_results(run_dir / "results.csv")
    assert [r["job_id"] for r in rows] == [j["job_id"] for j in jobs] and {r["status"] for r in rows} == {"ok"}
    assert sorted(p.name for p in run_dir.glob("*.png")) == sorted(r["image"] for r in rows)
    # Every image was made once: the first kernel's PNGs are untouched, the second made only the rest.
    assert all((run_dir / n).read_bytes() == data and (run_dir / n).stat().st_mtime_ns == mtime
               for n, (data, mtime) in before.items())
    # The second kernel made exactly the images without a finished row at the kill: it announced that
    # many, and scored (not remade: NaN seconds) a PNG saved just before the kill whose row was not yet written.
    assert f"run_study: {len(jobs) - len(done_at_kill)} images." in text
    from_disk = [r["job_id"] for r in rows if r["seconds"] != r["seconds"]]
    assert len(from_disk) == len(before) - len(done_at_kill) <= 1

def test_unfinished_run_is_the_newest_run_of_these_jobs_not_finished(tmp_path):
    jobs = plan_jobs([Condition("a", "a party")], ["sd35-large"], [0, 1], guidance_scale=3.5,
                     num_inference_steps=2, height=64, width=64)
    assert unfinished_run(tmp_path, jobs) is None
    for name, saved in (("run-001", jobs), ("run-002", jobs), ("run-003", jobs[:1]), ("run-010", None)):
        (tmp_path / name).mkdir()
        if saved is not None:  # run-010: killed before it wrote jobs.json
            (tmp_path / name / JOBS_JSON).write_text(json.dumps(saved))
    assert unfinished_run(tmp_path, jobs) == tmp_path / "run-002"  # run-003 holds other jobs
    write_results([_row(job, "ok", LABELS, 0) for job in jobs], tmp_path / "run-002" / "results.csv")  # finished
    assert unfinished_run(tmp_path, jobs) == tmp_path / "run-001"


@pytest.mark.parametrize("resume", [False, None])
def test_resume_false_or_none_always_starts_fresh(tiny_dir, tmp_path, resume):
    from helpers.studies.jobs import run_study

    jobs = plan_jobs([Condition("a", "a party")], ["sd35-large"], [0], guidance_scale=3.5,
                     num_inference_steps=1, height=64, width=64)
    (tmp_path / "run-001").mkdir()
    (tmp_path / "run-001" / JOBS_JSON).write_text(json.dumps(jobs))  # an unfinished run of these jobs
    study = run_study(jobs, tmp_path, labels=LABELS, stand_in=True, resume=resume)
    assert study.run_dir == tmp_path / "run-002"
