"""Which pipelines are generating right now, so that releasing one stops its generation first.

The studio generates in a background thread. Loading another model releases the previous pipeline
(`release_pipeline` empties it), which would pull the weights out from under a running denoising
loop (`TypeError: 'NoneType' object is not callable`). A background generation registers here with
a way to cancel it; `release_pipeline` calls `stop_generations` first, which cancels and waits.
"""

from __future__ import annotations

import threading
import time
import weakref
from contextlib import contextmanager

_lock = threading.Lock()
_running: dict[int, list[tuple[threading.Event, object, threading.Thread]]] = {}  # id(pipe) -> runs
_released: weakref.WeakSet = weakref.WeakSet()  # pipelines stop_generations was called for


def is_released(pipe) -> bool:
    """True once `stop_generations(pipe)` ran (release_pipeline calls it): nothing may start on it."""
    try:
        return pipe in _released
    except TypeError:  # not weak-referenceable: never registered either
        return False


@contextmanager
def running_on(pipe, cancel):
    """Register a generation on `pipe` for the duration of the block; `cancel()` asks it to stop.

    Raises ValueError if `pipe` is being or has been released (nothing may start on it)."""
    done = threading.Event()
    run = (done, cancel, threading.current_thread())
    with _lock:
        if is_released(pipe):
            raise ValueError("This pipeline was released (another model was loaded, or release_pipeline "
                             "was called): load it again.")
        _running.setdefault(id(pipe), []).append(run)
    try:
        yield
    finally:
        with _lock:
            runs = _running.get(id(pipe), [])
            runs.remove(run)
            if not runs:
                _running.pop(id(pipe), None)
        done.set()


def stop_generations(pipe, timeout: float = 120.0) -> int:
    """Refuse new generations on `pipe`, cancel the running ones and wait up to `timeout` seconds
    for them to finish. Returns how many were stopped; TimeoutError if one is still running."""
    with _lock:
        try:
            _released.add(pipe)
        except TypeError:  # not weak-referenceable: nothing can have registered on it
            return 0
        runs = [run for run in _running.get(id(pipe), []) if run[2] is not threading.current_thread()]
    for _, cancel, _ in runs:
        cancel()
    deadline = time.monotonic() + timeout
    for done, _, _ in runs:
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"a generation on this pipeline was still running {timeout:g} s after it was "
                               "cancelled; the pipeline was not released. Try again when it has stopped.")
    return len(runs)
