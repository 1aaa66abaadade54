"""Measure a piece of Python code in a fresh interpreter: wall seconds and peak resident memory.

Peak host memory of a load is only meaningful in a process that has done nothing else (freed
memory is rarely returned to the OS), so each measurement gets its own subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_MARKER = "@@SUBPROCESS_PROBE@@"

# Runs in the child: exec the code, then print one marked JSON line with the measurements.
_WRAPPER = r"""
import json, sys, time, traceback
def _peak_rss():
    # Linux: VmHWM, reset by exec (ru_maxrss would inherit the parent's peak across fork+exec).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        import psutil
        return int(psutil.Process().memory_info().peak_wset)
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # macOS: bytes
_namespace = {"__name__": "__probe__"}
_error = None
_start_rss = _peak_rss()
_start = time.perf_counter()
try:
    exec(compile(sys.stdin.read(), "<probe>", "exec"), _namespace)
except Exception as e:  # reported to the parent, which decides what to do
    _error = f"{type(e).__name__}: {e}"
    traceback.print_exc()
_seconds = time.perf_counter() - _start
print(MARKER + json.dumps({
    "seconds": _seconds, "peak_rss_bytes": _peak_rss(), "start_rss_bytes": _start_rss,
    "result": _namespace.get("result"), "error": _error,
}, default=str), flush=True)
""".replace("MARKER", repr(_MARKER))


def _check_timeout_and_env(timeout, env) -> None:
    """`timeout`: seconds, a positive finite number; `env`: None or a dict of strings to strings."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__} {timeout!r}.")
    if not 0 < timeout < float("inf"):  # NaN fails too
        raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout!r}.")
    if env is None:
        return
    if not isinstance(env, dict):
        raise TypeError(f"env must be a dict of environment variables (name -> text), not {type(env).__name__}.")
    for key, value in env.items():
        if not isinstance(key, str):
            raise TypeError(f"env names must be strings, not {key!r}.")
        if not isinstance(value, str):
            raise TypeError(f"env values must be strings, not {key!r}: {value!r} (write str({value!r})).")


class ProbeFailed(RuntimeError):
    """The subprocess died without reporting (crashed, killed for memory, timed out)."""


def measure_in_subprocess(code: str, *, env: dict | None = None, timeout: float = 600) -> dict:
    """Run `code` in a new Python process and return {"seconds", "peak_rss_bytes",
    "start_rss_bytes", "result", "error"}.

    `seconds` is the wall time of `code` alone (interpreter start-up excluded); `peak_rss_bytes`
    the process' peak resident memory in bytes (start-up included; `start_rss_bytes` is that
    baseline). `result` is whatever JSON-able value `code` assigned to a variable named `result`.
    An exception in `code` is returned as `error` ("Type: message"), not raised. `env` replaces
    the environment (default: this process' environment).
    """
    if not isinstance(code, str) or not code.strip():
        raise ValueError("code must be a non-empty string of Python source.")
    _check_timeout_and_env(timeout, env)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WRAPPER],
            input=code,
            capture_output=True,
            text=True,
            env=dict(os.environ if env is None else env),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise ProbeFailed(f"The measured code ran past {timeout} s and was stopped.") from e
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARKER):
            return json.loads(line[len(_MARKER):])
    tail = (done.stderr or done.stdout)[-2000:]
    raise ProbeFailed(
        f"The subprocess exited with status {done.returncode} before reporting "
        f"(a negative status is a signal, e.g. -9: killed, often for lack of memory):\n{tail}"
    )
