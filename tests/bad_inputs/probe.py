"""Try about 600 bad, edge-case and hostile inputs on the public API and count what happens.

    python tests/bad_inputs/probe.py [--only AREA] [--json out.json] [--list]

The measuring instrument of issue 20's "fresh try". Every case (probe_cases.py beside it) states
its expectation: a clear early error, or a valid input with a check of the result. Each case runs
in a forked child of one process that loaded the offline stand-in once (so a case that breaks
global state, hangs or crashes cannot touch the next), in its own temporary folder as working
directory, with a fake Hugging Face token in the environment. The outcome is one class:

  ok                 a valid edge input handled right, or a full disk / interrupt that lost nothing
  clear early error  an exception naming the argument or problem, raised before heavy work
  unclear error      a bare Python error (KeyError, TypeError from a builtin...) or a message that
                     names neither the argument nor the problem
  deep crash         the raising frame is inside torch, PIL, diffusers, transformers, numpy...
  late error         raised after heavy work (a finished pipeline load or a denoising step)
  silent wrong result  returned, but the case's check of the result failed
  refused valid input  a valid edge input refused (with a clear message)
  hang               still running at the case's timeout (the child is killed)
  lost work          a file the user had is gone or changed, or a partial file was left behind
  leak               the fake token appears in an exception, the output, or a written file

Full disks are simulated two ways (probe_cases.py: `full_disk`, `file_size_limit`):
- Python writers: `builtins.open` and `io.open` are wrapped for files whose name matches; their
  write() stores the bytes that fit the budget and then raises OSError(ENOSPC), as a real full
  disk does mid-write.
- C and Rust writers (safetensors): RLIMIT_FSIZE is lowered in the child (SIGXFSZ ignored), so
  any write past N bytes in any file fails with OSError(EFBIG) after the part that fit.
Read-only folders use `chattr +i` (root ignores chmod), falling back to chmod 0o555.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from probe_case import FAKE_TOKEN, HEAVY, Case  # noqa: F401 (Case and FAKE_TOKEN: part of the probe's surface)

CLASSES = ("ok", "clear early error", "unclear error", "deep crash", "late error", "silent wrong result",
           "refused valid input", "hang", "lost work", "leak", "probe error")
GOOD = ("ok", "clear early error")
# Libraries whose frames, when they raise, mean the error escaped the project's checks.
DEEP_PACKAGES = ("torch", "PIL", "diffusers", "transformers", "safetensors", "accelerate", "huggingface_hub",
                 "tokenizers", "numpy", "bitsandbytes")
# Exceptions that are Python's own words, never a message written for the reader.
BARE_TYPES = ("KeyError", "AttributeError", "IndexError", "NameError", "UnboundLocalError", "ZeroDivisionError",
              "OverflowError", "RecursionError", "AssertionError", "StopIteration", "JSONDecodeError",
              "UnicodeDecodeError", "UnicodeEncodeError", "TraitError")
# Messages Python (or the OS) writes by itself.
GENERIC_MESSAGES = (
    r"not supported between instances", r"object is not (iterable|subscriptable|callable)",
    r"unsupported operand", r"expected str, bytes or os\.PathLike", r"has no attribute",
    r"^\[Errno \d+\]", r"argument must be a string or a( real)? number", r"int\(\) argument must be",
    r"takes \d+ positional argument", r"missing \d+ required", r"can't multiply", r"invalid literal for",
    r"unhashable type", r"must be real number", r"has no len\(\)", r"object cannot be interpreted as an integer",
    r"^list index out of range", r"not all arguments converted", r"can only concatenate", r"bad operand type",
    r"^must be str", r"^'\w+' object",
)


@dataclass
class Raw:
    """What happened, before classification (all plain data: it crosses the fork as JSON)."""

    returned: bool = False
    check: bool | None = None  # the case's check of the returned value
    check_note: str = ""
    error_types: list = field(default_factory=list)  # the exception's class and its bases, by name
    message: str = ""
    raising_file: str = ""  # the file of the frame that raised
    repo_frame: str = ""  # the deepest frame in this repository, "file:line"
    heavy: int = 0  # pipeline loads finished and denoising steps run during the case
    lost: str = ""  # a protected file changed, or the case's `after` found a partial file
    leaked: str = ""  # where the fake token was seen
    hung: bool = False
    seconds: float = 0.0
    internal: str = ""  # the probe itself failed (a bug in the case, not in the project)


def _package_of(filename: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1:]
        return rest[0].removesuffix(".py") if rest else ""
    return ""


def is_clear_message(types: list, message: str, names: tuple) -> bool:
    """One sentence written for the reader: not a bare Python error, not Python's or the OS's own
    words, and naming the argument or the problem (one of `names`)."""
    if any(t in BARE_TYPES for t in types):
        return False
    text = message.strip()
    if not text or any(re.search(p, text) for p in GENERIC_MESSAGES):
        return False
    lowered = text.lower()
    return not names or any(str(n).lower() in lowered for n in names)


def classify(case: Case, raw: Raw) -> str:
    """The outcome class of one case (see the module docstring), most harmful first."""
    if raw.internal:
        return "probe error"
    if raw.leaked:
        return "leak"
    if raw.lost:
        return "lost work"
    if raw.hung:
        return "hang"
    if raw.returned:
        if raw.check is False or (case.expect == "error" and raw.check is None):
            return "silent wrong result"
        return "ok"
    if case.any_error:
        return "ok"
    if raw.heavy:
        return "late error"
    if _package_of(raw.raising_file) in DEEP_PACKAGES:
        return "deep crash"
    if not is_clear_message(raw.error_types, raw.message, case.names):
        return "unclear error"
    return "refused valid input" if case.expect == "ok" else "clear early error"


def describe(case: Case, raw: Raw, klass: str) -> str:
    """One line for the report: what was tried and what happened."""
    if raw.internal:
        what = f"probe failed: {raw.internal}"
    elif raw.leaked:
        what = f"token seen in {raw.leaked}"
    elif raw.lost:
        what = raw.lost
    elif raw.hung:
        what = f"still running after {case.timeout:g} s"
    elif raw.returned:
        what = f"returned; {raw.check_note}"
    else:
        kind = raw.error_types[0] if raw.error_types else "?"
        where = Path(raw.repo_frame or raw.raising_file or "?").name
        if klass == "deep crash":
            where += f" -> {_package_of(raw.raising_file)}/.../{Path(raw.raising_file).name}"
        what = f"{kind}: {raw.message.splitlines()[0][:150] if raw.message else ''} [{where}]"
        if klass == "late error":
            what += f" after {raw.heavy} heavy steps"
    item = f" (#20 item {case.item})" if case.item else ""
    return f"[{case.area}] {case.name}{item}: {what}"


# ---- running one case in a forked child ------------------------------------------------------------

class Context:
    """What a case gets: the shared stand-in pipeline and objects made once, its own folder, and
    helpers for protected files and read-only folders."""

    def __init__(self, shared: dict, folder: Path):
        self.__dict__.update(shared)
        self.tmp = folder
        self.protected: dict[Path, bytes] = {}
        self.frozen: list[Path] = []
        self.heavy_start = _heavy()

    def start(self) -> None:
        """The set-up is done (a pipeline loaded, a first image made): heavy work counts from here."""
        self.heavy_start = _heavy()

    def protect(self, path, data: bytes = b"the user's own file\n") -> Path:
        """Write a file the user already had; the case loses work if it changes or disappears."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.protected[path] = data
        return path

    def readonly(self, folder) -> Path:
        """Make `folder` read-only, for root too (chattr +i); undone after the case."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            folder.chmod(0o555)
        self.frozen.append(folder)
        return folder

    def thaw(self) -> None:
        for folder in self.frozen:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            folder.chmod(0o755)

    def lost_files(self) -> str:
        for path, data in self.protected.items():
            if not path.is_file():
                return f"the user's {path.name} is gone"
            if path.read_bytes() != data:
                return f"the user's {path.name} was overwritten"
        return ""


def _heavy() -> int:
    return HEAVY["loads"] + HEAVY["steps"]


def _run_in_child(case: Case, shared: dict, folder: Path, output: Path) -> Raw:
    raw = Raw()
    ctx = Context(shared, folder)
    os.chdir(folder)
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    # Python-level streams too (pytest or a notebook may have replaced them): all output is seen.
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    started = time.perf_counter()
    result = None
    try:
        result = case.call(ctx)
        raw.returned = True
    except BaseException as e:  # KeyboardInterrupt and SystemExit included: all are outcomes
        raw.heavy = _heavy() - ctx.heavy_start
        raw.error_types = [t.__name__ for t in type(e).__mro__]
        raw.message = str(e)
        frames = traceback.extract_tb(e.__traceback__)
        if frames:
            raw.raising_file = frames[-1].filename
        repo = str(Path(__file__).resolve().parents[2])
        inside = [f for f in frames if f.filename.startswith(repo)
                  and not any(part in f.filename for part in ("/tools/", "/tests/"))]  # the probe's own frames
        if inside:
            raw.repo_frame = f"{inside[-1].filename}:{inside[-1].lineno}"
        tb_text = "".join(traceback.format_exception(e))
    else:
        tb_text = ""
    raw.seconds = time.perf_counter() - started
    sys.stdout.flush()
    sys.stderr.flush()
    if raw.returned and case.check is not None:
        try:
            verdict = case.check(result, ctx)
        except Exception as e:
            verdict = f"the check itself raised {type(e).__name__}: {e}"
        raw.check = verdict is True
        raw.check_note = "" if verdict is True else (verdict if isinstance(verdict, str) else "check failed")
    elif raw.returned and case.expect == "ok":
        raw.check = True
    elif raw.returned:
        raw.check_note = f"expected an error, returned {_short(result)}"
    ctx.thaw()
    raw.lost = ctx.lost_files()
    if not raw.lost and case.after is not None:
        try:
            raw.lost = case.after(ctx) or ""
        except Exception as e:
            raw.internal = f"after() raised {type(e).__name__}: {e}"
    raw.leaked = _find_token(tb_text, output, folder)
    return raw


def _short(value) -> str:
    try:
        text = repr(value)
    except Exception as e:  # a repr that fails is an outcome too, not a probe failure
        text = f"<{type(value).__name__}, repr failed: {e}>"
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _find_token(tb_text: str, output: Path, folder: Path) -> str:
    if FAKE_TOKEN in tb_text:
        return "the exception"
    if output.is_file() and FAKE_TOKEN.encode() in output.read_bytes():
        return "the printed output"
    for path in folder.rglob("*"):
        if path.is_file() and FAKE_TOKEN.encode() in path.read_bytes():
            return f"written file {path.relative_to(folder)}"
    return ""


def run_case(case: Case, shared: dict, root: Path, index: int) -> Raw:
    """Run `case` in a forked child with its timeout; the child's Raw comes back as JSON."""
    folder = root / f"case-{index:04d}"
    folder.mkdir()
    output = root / f"case-{index:04d}.out"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        try:
            try:
                raw = _run_in_child(case, shared, folder, output)
            except BaseException as e:
                raw = Raw(internal=f"{type(e).__name__}: {e}")
            data = json.dumps(raw.__dict__, default=str).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + case.timeout
    hung = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            hung = True
            break
        ready, _, _ = select.select([read_end], [], [], left)
        if ready:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_end)
    if hung:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)
    if hung:
        return Raw(hung=True, seconds=case.timeout)
    if not chunks:
        return Raw(internal="the child died without a report (a crash in native code?)")
    return Raw(**json.loads(b"".join(chunks)))


# ---- set-up once, then every case ---------------------------------------------------------------

def _prepare_environment(home: Path) -> None:
    """Offline, one thread, a private Hugging Face home, and the fake token (before torch/hub import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(home / "hf-home")
    os.environ.setdefault("SD35_TINY_DIR", str(home / "tiny"))
    os.environ["HF_TOKEN"] = FAKE_TOKEN
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.pop("SD35_STAND_IN", None)


def _count_heavy_work() -> None:
    """Count finished pipeline loads and transformer calls (a wrapper around the one function every
    load goes through, and a forward pre-hook on each loaded transformer): what "late" is measured by."""
    from helpers.loading import load

    original = load._from_pretrained

    def counted(plan, token):
        pipe = original(plan, token)
        HEAVY["loads"] += 1
        transformer = getattr(pipe, "transformer", None)
        if transformer is not None:
            transformer.register_forward_pre_hook(lambda module, args: HEAVY.__setitem__("steps", HEAVY["steps"] + 1))
        return pipe

    load._from_pretrained = counted


def shared_objects() -> dict:
    """Made once in the parent, inherited by every forked case: the stand-in pipeline, one real
    result, and the tiny CLIP scorer."""
    import torch

    torch.set_num_threads(1)
    import helpers
    from helpers.stand_in import tiny_clip_dir
    from helpers.studies.clip_score import ClipScorer

    _count_heavy_work()
    pipe = helpers.load_pipeline("tiny", keep_previous=True)
    pipe.set_progress_bar_config(disable=True)
    result = helpers.generate(pipe, "a red apple", height=32, width=32, num_inference_steps=2, seed=1)
    clip = ClipScorer.load(str(tiny_clip_dir()), device="cpu")
    return {"pipe": pipe, "result": result, "clip": clip}


def run(cases: list[Case], only: str | None = None, progress=None) -> list[dict]:
    """Run the cases (of one area with `only`); one record per case."""
    root = Path(tempfile.mkdtemp(prefix="try-bad-inputs-"))
    shared = shared_objects()
    import gc

    gc.collect()
    gc.freeze()  # the children's garbage collector leaves the shared objects' pages alone: faster forks
    records = []
    try:
        for index, case in enumerate(cases):
            if only and case.area != only:
                continue
            raw = run_case(case, shared, root, index)
            klass = classify(case, raw)
            records.append(dict(area=case.area, name=case.name, item=case.item, expect=case.expect,
                                outcome=klass, line=describe(case, raw, klass), seconds=round(raw.seconds, 3)))
            if progress:
                progress(records[-1])
    finally:
        subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return records


def summary(records: list[dict]) -> str:
    """Counts per class, a class x area table, and one line per case that was not ok or clear."""
    counts = Counter(r["outcome"] for r in records)
    areas = sorted({r["area"] for r in records})
    used = [c for c in CLASSES if counts[c]]
    lines = [f"{len(records)} cases: " + ", ".join(f"{counts[c]} {c}" for c in used), ""]
    width = max(len(a) for a in areas + ["area"])
    lines.append(" | ".join(["area".ljust(width)] + [c[:12].rjust(12) for c in used] + ["total".rjust(5)]))
    for area in areas + ["ALL"]:
        rows = records if area == "ALL" else [r for r in records if r["area"] == area]
        per = Counter(r["outcome"] for r in rows)
        lines.append(" | ".join([area.ljust(width)] + [str(per[c] or "").rjust(12) for c in used] + [str(len(rows)).rjust(5)]))
    bad = [r for r in records if r["outcome"] not in GOOD]
    known = sum(1 for r in bad if r["item"])
    lines += ["", f"{len(bad)} outcomes that are not ok or a clear early error ({known} re-try an input issue 20 "
                  f"lists, marked '#20 item N'; {len(bad) - known} are new findings):"]
    for klass in CLASSES:
        for r in bad:
            if r["outcome"] == klass:
                lines.append(f"  {klass:>19}  {r['line']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run one area only")
    parser.add_argument("--json", help="write every case's record to this JSON file")
    parser.add_argument("--list", action="store_true", help="list the areas and case counts, run nothing")
    parser.add_argument("--verbose", action="store_true", help="print each case as it finishes")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="try-bad-inputs-home-"))
    try:
        _prepare_environment(home)
        from probe_cases import all_cases

        cases = all_cases()
        if args.list:
            for area, n in Counter(c.area for c in cases).items():
                print(f"{area}: {n}")
            print(f"total: {len(cases)}")
            return 0
        if args.only and args.only not in {c.area for c in cases}:
            parser.error(f"--only {args.only!r}: no such area; see --list.")
        started = time.perf_counter()
        show = (lambda r: print(f"{r['outcome']:>19}  {r['line']}", flush=True)) if args.verbose else None
        records = run(cases, args.only, show)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(summary(records))
    print(f"\n{time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for helpers and tools
    sys.exit(main())
