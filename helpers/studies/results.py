"""A study's results table: written once, read back, summarized per model and condition.

`run_study` (jobs.py) writes one row per image; notebook 05 and benchmarks/negative_prompt_study.py
read the rows back and summarize them with bootstrap intervals and paired, per-seed comparisons.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..output_folders import leftovers, write_atomically

RESULTS_CSV = "results.csv"
# Each process of a study appends its rows here the moment they are made (what an interrupted study keeps).
FINISHED_ROWS_CSV = "finished-rows-process-{}.csv"
# Recipe fields copied from `generate`'s recipe into every row, so each image can be remade.
RECIPE_FIELDS = ("model_id", "stand_in", "quantization", "t5", "dtype", "device", "scheduler")
COLUMNS = (
    "job_id", "model", "condition", "prompt", "negative_prompt", "seed", "guidance_scale",
    "num_inference_steps", "height", "width", "status", "p_object", "label_object", "label_other",
    "image", "seconds", "process", *RECIPE_FIELDS, "clip_model", "versions", "note",
)


def results_text(rows) -> str:
    """The rows as CSV text, header first."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_results(rows, path, *, overwrite: bool = False) -> Path:
    """Write the rows as CSV, whole or not at all (a full disk leaves no partial file); an
    existing file is never replaced unless overwrite=True."""
    return write_atomically(path, results_text(rows), overwrite=overwrite)


NUMBERS = {"job_id": int, "seed": int, "num_inference_steps": int, "height": int, "width": int,
           "process": int, "guidance_scale": float, "p_object": float, "seconds": float}


def parse_results(text: str, source) -> tuple[list[dict], bool]:
    """(rows, torn) of a results CSV text: numbers as numbers, empty negative prompts as None.

    `torn` is True when the last row was cut off (a full disk or an interrupt while it was being
    appended): that row is left out. Any other damage is a ValueError naming `source`."""
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        raise ValueError(f"{source} is empty: it holds no results table (not even its header).")
    header, records = records[0], records[1:]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{source} is not a results table as run_study writes it: it lacks the column(s) "
                         f"{', '.join(missing)}.")
    rows, torn = [], False
    for number, record in enumerate(records, start=2):
        last = number == len(records) + 1
        try:
            if len(record) != len(header):
                raise ValueError(f"it has {len(record)} fields, not {len(header)}")
            if last and not text.endswith("\n"):
                raise ValueError("it does not end with a line break")
            row = dict(zip(header, record))
            for key, kind in NUMBERS.items():
                row[key] = kind(row[key]) if row[key] != "" else float("nan")
        except ValueError as e:
            # Only a write cut short (too few fields, or no final line break) is a torn row; a whole
            # row with a bad value is damage, wherever it is.
            if last and (len(record) < len(header) or not text.endswith("\n")):
                torn = True
                break
            raise ValueError(f"{source}, line {number}: the row is damaged ({e}); only the last row can be "
                             "cut off by an interrupted write.") from None
        row["negative_prompt"] = row["negative_prompt"] or None
        rows.append(row)
    return rows, torn


def read_results(path) -> list[dict]:
    """Read a results CSV back, with numbers as numbers and empty negative prompts as None.

    A file whose last row was cut off (see `parse_results`) is refused with a message naming it."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"path must be a results CSV's path (a str or pathlib.Path), not {type(path).__name__} {path!r:.60}.")
    path = Path(path)
    if not path.is_file():
        leftover = leftovers(path.parent, path.name)
        hint = f" ({leftover[0].name} there is an unfinished write, not a result)" if leftover else ""
        raise FileNotFoundError(f"{path} does not exist{hint}.")
    rows, torn = parse_results(path.read_text(encoding="utf-8"), path)
    if torn:
        raise ValueError(f"{path}: its last row was cut off (a full disk or an interrupted write); "
                         "resume the study to redo it.")
    return rows


def append_row(row: dict, path) -> None:
    """Append one result row to a CSV (header first when the file is new), flushed at once.

    A failed append (a full disk) cuts the file back to its previous length, so it never keeps
    half a row; a row torn by a hard kill is dropped by `finished_rows` and made again."""
    path = Path(path)
    text = results_text([row])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size, written = os.fstat(fd).st_size, 0
        if size:
            text = text.split("\r\n", 1)[1]  # the header is there already
        data = memoryview(text.encode("utf-8"))
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except BaseException:
            if written < len(data):  # half a row: cut it off again; a file that was empty goes
                os.ftruncate(fd, size)
                if not size:
                    path.unlink(missing_ok=True)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


def finished_rows(run_dir) -> dict[int, dict]:
    """job_id -> row of every image finished in a run folder (status "ok" with its PNG there).

    A row cut off at the end of a file (a full disk, a hard kill) is removed from that file, so
    the image is made again and the next row starts on a line of its own."""
    done = {}
    for path in sorted(Path(run_dir).glob(FINISHED_ROWS_CSV.format("*"))):
        text = path.read_text(encoding="utf-8")
        if not text:  # a full disk at the very first row (before it was removed): nothing finished
            continue
        rows, torn = parse_results(text, path)
        if torn:  # rewrite the file without the torn row (whole or not at all)
            write_atomically(path, results_text(rows), overwrite=True)
        for row in rows:
            if row["status"] == "ok" and (Path(run_dir) / row["image"]).is_file():
                done[row["job_id"]] = row
    return done


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
