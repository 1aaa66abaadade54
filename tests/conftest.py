"""Test set-up: offline, one thread, a private Hugging Face home, and the stand-in built once."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub or torch: no network, no user token or cache, one thread
# (two threads gave 10-50x timing outliers on the 2-core CI machines).
_HOME = Path(tempfile.mkdtemp(prefix="sd35-tests-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_HOME / "hf-home")
os.environ["SD35_TINY_DIR"] = str(_HOME / "tiny")
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
