"""measure_in_subprocess: seconds, peak RSS and a result from a fresh interpreter."""

import pytest

from tools.subprocess_probe import ProbeFailed, measure_in_subprocess


def test_peak_rss_sees_a_large_allocation():
    small = measure_in_subprocess("result = 1")
    big = measure_in_subprocess("x = bytearray(300 * 2**20)\nx[::4096] = b'1' * len(x[::4096])\nresult = len(x)")
    assert small["result"] == 1 and big["result"] == 300 * 2**20
    assert big["peak_rss_bytes"] - small["peak_rss_bytes"] > 250 * 2**20
    assert big["start_rss_bytes"] <= big["peak_rss_bytes"]


def test_seconds_measure_the_code():
    out = measure_in_subprocess("import time\ntime.sleep(0.3)")
    assert 0.3 <= out["seconds"] < 5


def test_exception_is_reported_not_raised():
    out = measure_in_subprocess("raise RuntimeError('No GPU found')")
    assert out["error"] == "RuntimeError: No GPU found"
    assert out["result"] is None


def test_environment_is_passed():
    out = measure_in_subprocess("import os\nresult = os.environ['PROBE_X']", env={"PROBE_X": "y"})
    assert out["result"] == "y"


def test_crash_raises_probe_failed():
    with pytest.raises(ProbeFailed, match="status 3"):
        measure_in_subprocess("import os\nos._exit(3)")


def test_empty_code_is_refused():
    with pytest.raises(ValueError):
        measure_in_subprocess("  ")
