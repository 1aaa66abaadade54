"""Test set-up: offline, one thread, a private Hugging Face home, the stand-in built once per
session (shared by the pytest-xdist workers), and Ctrl-C that works however pytest was started."""

import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub or torch: no network, no user token or cache, one thread
# (two threads gave 10-50x timing outliers on the 2-core CI machines).
# Under pytest-xdist the controller makes the session's folder and removes it at exit; its workers
# share it for the stand-in (built once, renamed into place, so two builders both end up valid),
# but each worker keeps its own Hugging Face home (tests write tokens and caches there).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and os.environ.get("SD35_TESTS_HOME"):
    _HOME = Path(os.environ["SD35_TESTS_HOME"])
else:
    _HOME = Path(tempfile.mkdtemp(prefix="sd35-tests-"))
    atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
    os.environ["SD35_TESTS_HOME"] = str(_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_HOME / f"hf-home-{_WORKER or 'main'}")
os.environ["SD35_TINY_DIR"] = str(_HOME / "tiny")

# `cmd &`, nohup and some CI runners start pytest with SIGINT ignored; the children it starts would
# inherit that, and `_thread.interrupt_main()` does nothing then. The tests of interrupted runs need
# Ctrl-C to work: Python's default handler, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: nothing to restore here
        pass
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("OMP_NUM_THREADS", "1")
for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SD35_STAND_IN"):
    os.environ.pop(name, None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # for bnb_cpu_shim and notebook_harness


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The stand-in pipeline folder, built once per test session."""
    from helpers.stand_in import tiny_pipeline_dir

    return tiny_pipeline_dir()


@pytest.fixture
def bnb_cpu(tiny_dir):
    """Let diffusers quantize with bitsandbytes on this CPU-only machine, for one test."""
    from bnb_cpu_shim import bnb_cpu_shim

    with bnb_cpu_shim():
        yield


@pytest.fixture
def tiny_pipe(tiny_dir):
    """A freshly loaded full-precision stand-in pipeline (loading it takes ~0.1 s)."""
    import helpers

    pipe = helpers.load_pipeline("tiny")
    yield pipe
    helpers.release_current_pipeline()


def wait_until(predicate, timeout: float = 10.0) -> None:
    """Poll `predicate` until it is true (a widget updated from the worker thread); TimeoutError after `timeout` s."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.005)


# A test that hangs fails after `timeout` seconds (pyproject.toml), not at CI's limit. These take
# longer by design, each for the reason given; their notebooks' cells are also limited one by one
# (notebook_harness.CELL_TIMEOUT), so a stalled cell fails in minutes, naming the cell.
LONGER_TIMEOUTS = {
    "tests/notebooks/": (1200, "executes a notebook on the stand-in: minutes on 2 busy cores"),
    "tests/tools/test_colab_twin.py": (3600, "builds the Colab twin cold (~22 min download) and runs 7 notebooks in it"),
    "tests/studio/test_studio_browser.py": (900, "starts JupyterLab and Chromium and runs notebook 06 in them"),
    "tests/benchmarks/": (1800, "runs the benchmark scripts in subprocesses, compiling the stand-in with inductor"),
    "tests/tools/test_run_notebooks.py": (600, "executes notebooks in kernels and interrupts them"),
    "tests/studies/test_jobs.py": (600, "runs studies, one of them in two `accelerate launch` processes"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.path)).relative_to(REPO).as_posix()
        for prefix, (seconds, _why) in LONGER_TIMEOUTS.items():
            if path.startswith(prefix) and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(seconds))
