"""A twin of Google Colab's GPU runtime, for the tests: `python -m tools.colab_twin`.

Colab publishes its runtime's package list (kept in `tools/colab/pip-freeze.gpu.txt`, from
googlecolab/backend-info). The twin is a Python 3.13 venv holding the part of that list the
notebooks touch (`PACKAGES`, plus everything they depend on), at the list's versions, on CPU.
The notebooks then run in it as a reader opens them on Colab: `google.colab` importable, a
working folder standing for `/content`, the repository cloned into `sd35-notebooks` there, and
the notebooks' own set-up cell installing requirements-colab.txt for real.

The venv is cached outside the repository (`~/.cache/sd35-notebooks/colab-twin-<hash>`, the hash
of the list and of `PACKAGES`), built in a temporary folder and renamed into place when complete,
so an interrupted build is never reused. Each notebook runs in a hard-linked copy of it, so the
set-up cell's install never changes the cached twin. Replacing the list file is all it takes to
follow a newer Colab.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _colab_list() -> Path:
    """The repository's copy of Colab's list (tools/colab/pip-freeze.gpu.txt); $SD35_COLAB_LIST
    overrides it. Nothing outside the repository is read: a reader's clone has only this."""
    if os.environ.get("SD35_COLAB_LIST"):
        return Path(os.environ["SD35_COLAB_LIST"])
    return REPO / "tools" / "colab" / "pip-freeze.gpu.txt"


COLAB_LIST = _colab_list()
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sd35-notebooks"  # beside the stand-in
KERNEL_NAME = "colab-twin"
RECIPE = 1  # bump when `build` changes what it installs, so a twin built the old way is never reused

# The distributions of Colab's list the notebooks touch, or that decide what pip does when the
# set-up cell installs (gradio and sentence-transformers pin huggingface_hub). Their versions, and
# those of everything they pull in, come from the list.
PACKAGES = [
    "torch", "torchvision", "transformers", "diffusers", "accelerate", "huggingface_hub", "hf-xet",
    "tokenizers", "safetensors", "sentencepiece", "protobuf", "peft", "torchao", "numpy", "pillow", "matplotlib",
    "psutil", "packaging", "tqdm", "ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "ipykernel",
    "ipython", "traitlets", "jupyter_client", "sentence-transformers", "gradio",
]

INSTALL_HINT = (
    "The Colab twin needs Python 3.13 (Colab's version). Install it, e.g. `pyenv install 3.13` or "
    "`sudo apt-get install python3.13 python3.13-venv` (deadsnakes), or point SD35_PYTHON313 at a "
    "python3.13 executable."
)

# google.colab as the notebooks and the libraries they call use it; Colab's own is not on PyPI.
FAKE_COLAB = {
    "google/colab/__init__.py": '"""Stand-in for Colab\'s `google.colab` (the Colab twin of tools/colab_twin.py)."""\n',
    "google/colab/errors.py": "class Error(Exception):\n    pass\n",
    "google/colab/userdata.py": (
        "from .errors import Error\n\n\n"
        "class SecretNotFoundError(Error):\n    pass\n\n\n"
        "class NotebookAccessError(Error):\n    pass\n\n\n"
        "class TimeoutException(Error):\n    pass\n\n\n"
        "def get(key):\n"
        "    \"\"\"No secrets are stored in the twin.\"\"\"\n"
        "    raise SecretNotFoundError(key)\n"
    ),
    "google/colab/drive.py": (
        "def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):\n"
        "    raise RuntimeError('The Colab twin has no Google Drive.')\n"
    ),
}


def find_python313() -> Path | None:
    """A Python 3.13 interpreter: $SD35_PYTHON313, python3.13 on PATH, or pyenv's; None if none."""
    candidates = [os.environ.get("SD35_PYTHON313"), shutil.which("python3.13")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(pyenv_root / "versions" / "3.13*" / "bin" / "python3.13")), reverse=True)
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 13), sys.executable)"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        ok, _, executable = out.stdout.strip().partition(" ")
        if out.returncode == 0 and ok == "True":
            return Path(executable)
    return None


def colab_pins(path: Path = COLAB_LIST) -> dict[str, str]:
    """{canonical name: version} for every `name==version` line of Colab's list. Local versions
    (`2.11.0+cu128`) lose their suffix: PyPI's wheels of that version are what pip can get."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#+]+)(\+\S+)?\s*", line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def twin_key(colab_list: Path = COLAB_LIST) -> str:
    digest = hashlib.sha256(colab_list.read_bytes())
    # ... and the recipe: the packages, the fake google.colab and the build steps.
    digest.update(repr((RECIPE, PACKAGES, FAKE_COLAB)).encode())
    return digest.hexdigest()[:16]


def twin_path(colab_list: Path = COLAB_LIST) -> Path:
    return CACHE / f"colab-twin-{twin_key(colab_list)}"


def build(python: Path, colab_list: Path = COLAB_LIST, log=print) -> Path:
    """The cached twin venv for `colab_list`, built now when missing (minutes; about 3.5 GB downloaded, 6 GB on disk)."""
    dest = twin_path(colab_list)
    if (dest / "complete").is_file():
        return dest
    pins = colab_pins(colab_list)
    missing = [p for p in PACKAGES if canonical(p) not in pins]
    if missing:
        raise ValueError(f"{colab_list} has no `name==version` line for {missing}: update PACKAGES in tools/colab_twin.py")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{dest.name}-", dir=CACHE))
    started = time.perf_counter()
    try:
        log(f"Building the Colab twin in {dest} from {colab_list} (downloads about 3.5 GB once) ...")
        subprocess.run([str(python), "-m", "venv", str(tmp / "venv")], check=True)
        # CUDA's own libraries follow the torch build PyPI has (Colab's come from PyTorch's cu128 index).
        constraints = {n: v for n, v in pins.items() if not n.startswith(("nvidia-", "cuda-"))}
        (tmp / "constraints.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
        (tmp / "packages.txt").write_text("".join(f"{p}\n" for p in PACKAGES))
        subprocess.run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(tmp / "packages.txt"), "-c", str(tmp / "constraints.txt")], check=True)
        for rel, text in FAKE_COLAB.items():
            (tmp / "google-colab" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "google-colab" / rel).write_text(text)
        site = subprocess.run([str(tmp / "venv" / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        # Appended to sys.path, so a real google package (protobuf's) keeps its place.
        (Path(site) / "zz_google_colab_twin.pth").write_text("../../../../google-colab\n")
        (tmp / "complete").write_text(f"built in {time.perf_counter() - started:.0f} s from {colab_list}\n")
        try:
            os.rename(tmp, dest)
        except OSError:  # another build finished first
            if not (dest / "complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"Colab twin built in {time.perf_counter() - started:.0f} s.")
    return dest


def prune(keep: Path, stale_after_s: float = 6 * 3600) -> None:
    """Remove the twins of older lists (about 6 GB each), and builds and runs interrupted hours ago."""
    for folder in CACHE.glob("colab-twin-*"):
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)
    for folder in [*CACHE.glob(".building-colab-twin-*"), *CACHE.glob("colab-run-*")]:
        if time.time() - folder.stat().st_mtime > stale_after_s:
            shutil.rmtree(folder, ignore_errors=True)


def runtime_copy(twin: Path, folder: Path) -> Path:
    """A fresh runtime: the twin hard-linked (seconds, no extra disk). pip replaces files rather
    than writing into them, so the set-up cell's install never changes the cached twin."""
    runtime = folder / "runtime"
    subprocess.run(["cp", "-al", str(twin), str(runtime)], check=True)
    return runtime


def content_folder(folder: Path) -> Path:
    """The stand-in for Colab's /content, holding `sd35-notebooks` as the set-up cell's `git clone`
    leaves it: the repository's files (tracked, and new ones git does not ignore) from this checkout."""
    content = folder / "content"
    clone = content / "sd35-notebooks"
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / rel)
    return content


def kernel_spec(jupyter_dir: Path, python: Path, env: dict | None = None) -> None:
    """A Jupyter kernel running the runtime's Python with `google.colab` imported, as Colab's is;
    `env`: more of its environment (e.g. SD35_AS_MACHINE)."""
    spec = {
        # ipykernel shows what subprocesses print (the set-up cell's pip) only outside pytest.
        "argv": ["env", "-u", "PYTEST_CURRENT_TEST", str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=import google.colab"],
        "display_name": "Colab twin (Python 3.13)", "language": "python",
        # Nothing from the test run's own environment: `helpers` comes from the clone and the stand-in
        # is built by Colab's libraries in an empty cache, as on a fresh Colab runtime.
        "env": {"PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                "HF_HOME": str(jupyter_dir.parent / "hf-home"), "SD35_TINY_DIR": str(jupyter_dir.parent / "stand-in"),
                **(env or {})},
    }
    (jupyter_dir / "kernels" / KERNEL_NAME).mkdir(parents=True, exist_ok=True)
    (jupyter_dir / "kernels" / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec, indent=1))


AS_MACHINE = "free Colab T4"  # the machine Colab's badges open: every plan is made as on it (helpers/loading/as_machine.py)


def _run_one(path: Path, out: Path, content: Path, work: Path, python: Path, as_machine: str | None) -> dict:
    """Execute one notebook of the clone in a twin kernel of its own (in a worker process of
    `run_notebooks`), planned as on `as_machine`, its load_pipeline calls logged."""
    from helpers.loading.as_machine import ENV, LOG_ENV, read_log
    from tools.run_notebooks import execute_notebook

    loads = work / f"{path.stem}.loads.jsonl"
    env = {ENV: as_machine, LOG_ENV: str(loads)} if as_machine else {}
    # One stand-in and one HF home for the whole run, whichever notebook's kernel builds it first.
    env.update(HF_HOME=str(work / "hf-home"), SD35_TINY_DIR=str(work / "stand-in"))
    jupyter = work / f"{path.stem}.jupyter"
    kernel_spec(jupyter, python, env)
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(jupyter), previous]))
    started = time.perf_counter()
    try:
        executed, error = execute_notebook(path, out, {"STAND_IN": True}, kernel_name=KERNEL_NAME, cwd=content), None
    except Exception as e:  # every notebook runs; the caller reports them all
        executed, error = out / f"{path.stem}.FAILED.ipynb", f"{type(e).__name__}: {e}"
    finally:
        if previous is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = previous
    return {"notebook": path.name, "seconds": time.perf_counter() - started, "error": error, "executed": executed,
            "loads": read_log(loads) if loads.exists() else []}


def run_notebooks(out: Path, notebooks: list[str] | None = None, colab_list: Path = COLAB_LIST, log=print,
                  as_machine: str | None = AS_MACHINE, workers: int = 2) -> list[dict]:
    """Run every notebook of the clone (or the named ones) in one fresh twin runtime on the
    stand-in, planned as on `as_machine` (SD35_AS_MACHINE; None: this CPU); executed copies go to
    `out`. One dict per notebook, in order: name, seconds, error (None when it ran to its end), the
    executed copy's path and `loads`, the load_pipeline calls it made (as_machine.read_log's entries).

    The first notebook runs alone: its set-up cell installs requirements-colab.txt into the fresh
    runtime, as a reader's first notebook on Colab does. The others then run `workers` at a time,
    each in its own kernel and its own copy of /content (their outputs never meet)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    python = find_python313()
    if python is None:
        raise RuntimeError(INSTALL_HINT)
    twin = build(python, colab_list, log=log)
    prune(keep=twin)
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="colab-run-", dir=CACHE))  # beside the twin: hard links need one file system
    results = []
    try:
        runtime = runtime_copy(twin, work)
        venv_python = runtime / "venv" / "bin" / "python"
        content = content_folder(work)
        paths = sorted((content / "sd35-notebooks" / "notebooks").glob("*.ipynb"))
        paths = [p for p in paths if notebooks is None or p.name in notebooks]

        def report(result):
            error = result["error"]
            log(f"{'ok' if error is None else 'FAILED':7} {result['notebook']} in {result['seconds']:.0f} s"
                + (f": {error.strip().splitlines()[-1][:300]}" if error else ""))
            return result

        if paths:
            results.append(report(_run_one(paths[0], out, content, work, venv_python, as_machine)))
        # Fresh processes (not forks of this one, which may hold threads).
        with ProcessPoolExecutor(max(1, workers), mp_context=get_context("spawn")) as pool:
            jobs = []
            for path in paths[1:]:
                own = content_folder(work / path.stem)
                jobs.append(pool.submit(_run_one, own / "sd35-notebooks" / "notebooks" / path.name, out, own, work,
                                        venv_python, as_machine))
            results += [report(job.result()) for job in jobs]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", type=Path, default=COLAB_LIST, help="Colab's published pip freeze")
    parser.add_argument("--run", type=Path, metavar="OUT", help="also run the notebooks in it, executed copies into a fresh OUT/run-NNN")
    parser.add_argument("--as-machine", default=AS_MACHINE, metavar="NAME",
                        help=f"with --run: plan every load as on this machine (default {AS_MACHINE!r}; '' for this CPU)")
    parser.add_argument("notebooks", nargs="*", help="with --run: only these (file names); default all")
    args = parser.parse_args(argv)
    python = find_python313()
    if python is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    print(build(python, args.list))
    if args.run:
        from helpers.output_folders import fresh_run_dir

        results = run_notebooks(fresh_run_dir(args.run), args.notebooks or None, args.list,
                                as_machine=args.as_machine or None)
        return 1 if any(r["error"] for r in results) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
