"""A study's run folder across interruptions: which folder an interrupted study left, and whether
these jobs may finish it (the same jobs, not finished yet). A run folder on Google Drive outlives a
recycled Colab runtime, so `run_study(..., resume=True)` finishes the study in a fresh one."""

from __future__ import annotations

import json
from pathlib import Path

from .results import RESULTS_CSV, parse_results

JOBS_JSON = "jobs.json"


def unfinished_run(root: Path, jobs: list[dict]) -> Path | None:
    """The newest run-NNN folder under `root` that an interrupted study of these very jobs left, or None."""
    runs = sorted((p for p in Path(root).glob("run-*") if p.is_dir() and p.name[4:].isdigit()),
                  key=lambda p: int(p.name[4:]), reverse=True)
    for run_dir in runs:
        try:
            check_resumable(run_dir, jobs)
        except (FileNotFoundError, FileExistsError, ValueError):
            continue
        return run_dir
    return None


def check_resumable(run_dir: Path, jobs: list[dict]) -> None:
    """`run_dir` must be an unfinished run of these very jobs: no results.csv, or only a partial
    one (a whole one covering every job means that study finished: refused)."""
    saved = run_dir / JOBS_JSON
    if not saved.is_file():
        raise FileNotFoundError(f"resume={str(run_dir)!r} is not a study's run folder (no {JOBS_JSON}).")
    try:
        saved_jobs = json.loads(saved.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"resume: {saved} is damaged ({e}); it cannot tell which jobs that study ran.") from None
    if saved_jobs != json.loads(json.dumps(jobs)):
        raise ValueError(f"resume: these jobs differ from the ones in {saved}; pass the same jobs to finish that study.")
    results = run_dir / RESULTS_CSV
    if results.exists():
        try:
            rows, torn = parse_results(results.read_text(encoding="utf-8"), results)
        except (ValueError, UnicodeDecodeError):
            rows, torn = [], True
        if not torn and {row["job_id"] for row in rows} >= {job["job_id"] for job in jobs}:
            raise FileExistsError(f"{results} exists: that study finished already.")
