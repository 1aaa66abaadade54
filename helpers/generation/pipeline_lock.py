"""One lock per pipeline: every caller that runs a pipeline holds it, so one image runs at a time.

A diffusers pipeline keeps per-call state on itself (the scheduler's step index, `_interrupt`):
two calls at once on one pipeline crash inside the scheduler (`IndexError: index N is out of
bounds`) or mix their images. So `generate`, `encode_prompt`, `xy_grid`, `run_study` and the
studio all run inside `using(pipe, who)`. A second caller waits, with a note saying for what,
once; the same thread may enter again (xy_grid calls generate). The lock is per pipeline, kept
weakly: two pipelines generate at once, and a pipeline that is garbage-collected leaves nothing.

`release_pipeline` runs inside `releasing(pipe)`: nothing new may start, the holder is cancelled
(the studio registers how) and waited for, and anyone still waiting gets the "released" error.
"""

from __future__ import annotations

import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import GenerationCancelled

RELEASED = ("This pipeline was released (another model was loaded, or release_pipeline was called): "
            "load it again.")
POLL_SECONDS = 0.05  # how often a waiting caller that can be cancelled checks whether it was
REENTERED = ("{who} was called from inside a step callback of generate() on this same pipeline: the pipeline "
             "is in the middle of an image and can neither start another nor be released. Return from the "
             "callback first (return True to cancel the image), then call {who}.")


@dataclass
class _PipelineState:
    owner: threading.Thread | None = None  # the thread holding the lock
    depth: int = 0  # how many times `owner` entered it (re-entrant)
    who: str = ""  # what holds it, for the waiting note: "the studio", "a generate() call", ...
    cancel: object = None  # how to stop the holder early (release_pipeline calls it), or None
    released: bool = False  # release_pipeline began: nothing may start any more
    denoising: bool = False  # the owner is inside the pipeline's call (its step callbacks run there)


_changed = threading.Condition()  # guards every _PipelineState; notified whenever one changes
_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipeline -> its _PipelineState


def _state_of(pipe) -> _PipelineState:
    """The pipeline's state (created on first use); call with `_changed` held."""
    try:
        state = _states.get(pipe)
        if state is None:
            state = _states[pipe] = _PipelineState()
    except TypeError:
        raise TypeError(f"{type(pipe).__name__} cannot be locked: pass a pipeline from load_pipeline.") from None
    return state


def is_released(pipe) -> bool:
    """True once `release_pipeline(pipe)` began: nothing may start on it."""
    with _changed:
        try:
            state = _states.get(pipe)
        except TypeError:  # not weak-referenceable: never locked either
            return False
        return state is not None and state.released


def holder(pipe) -> str | None:
    """What holds `pipe`'s lock now ("the studio", "a generate() call", ...), or None."""
    with _changed:
        state = _state_of(pipe)
        return state.who if state.owner is not None else None


def print_note(text: str) -> None:
    """The default waiting note: one line in the cell's output."""
    print(text, flush=True)


@contextmanager
def using(pipe, who: str, *, cancel=None, cancelled=None, on_wait=print_note, denoising: bool = False):
    """Hold `pipe`'s lock for the block (`who` names the holder in other callers' notes).

    If another thread holds it, wait: `on_wait(note)` is called once ("waiting for the studio to
    finish its image..."). `cancel()`, if given, is how `release_pipeline` stops this holder early;
    `cancelled()`, if given, is polled while waiting and raises GenerationCancelled when true.
    ValueError if the pipeline is released, before or while waiting. `denoising=True` marks the block
    as the pipeline's own call: the same thread entering again from within (a step callback) is a
    RuntimeError, not a crash inside diffusers."""
    state = _take(pipe, who, cancel, cancelled, on_wait)
    outer, state.denoising = state.denoising, state.denoising or denoising
    try:
        yield
    finally:
        state.denoising = outer
        _let_go(state)


def _let_go(state: _PipelineState) -> None:
    with _changed:
        state.depth -= 1
        if state.depth == 0:
            state.owner, state.who, state.cancel = None, "", None
            _changed.notify_all()


def _take(pipe, who, cancel, cancelled, on_wait) -> _PipelineState:
    me = threading.current_thread()
    noted = False
    while True:
        with _changed:
            state = _state_of(pipe)
            if state.released:
                raise ValueError(RELEASED)
            if state.owner is me and state.denoising:
                raise RuntimeError(REENTERED.format(who=who))
            if state.owner is None or state.owner is me:
                if state.owner is None:
                    state.owner, state.who, state.cancel = me, who, cancel
                state.depth += 1
                return state
            if cancelled is not None and cancelled():
                raise GenerationCancelled("Cancelled before it started (it was waiting for the pipeline).")
            if noted:  # the note was shown: wait for a change (or poll for cancel)
                _changed.wait(POLL_SECONDS if cancelled is not None else None)
                continue
            note = f"waiting for {state.who} to finish its image (a pipeline makes one image at a time)..."
        noted = True
        if on_wait is not None:
            on_wait(note)  # outside the lock: a note may print or update a widget


def stop_generations(pipe, timeout: float = 120.0) -> int:
    """Refuse new work on `pipe`, wake the callers waiting for it (they get the released error),
    cancel the holder and wait up to `timeout` seconds for it to let go. Returns how many it
    waited for (0 or 1; never this thread itself); TimeoutError if the holder kept running."""
    me = threading.current_thread()
    with _changed:
        try:
            state = _state_of(pipe)
        except TypeError:  # not weak-referenceable: nothing can hold it
            return 0
        if state.owner is me and state.denoising:
            raise RuntimeError(REENTERED.format(who="release_pipeline"))
        state.released = True
        _changed.notify_all()
        busy = state.owner is not None and state.owner is not me
        cancel = state.cancel if busy else None
    if cancel is not None:
        cancel()
    deadline = time.monotonic() + timeout
    with _changed:
        while state.owner is not None and state.owner is not me:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{state.who} was still generating on this pipeline {timeout:g} s after it "
                                   "was asked to stop: the pipeline takes no new work but was not emptied yet. "
                                   "Call release_pipeline(pipe) again when it has stopped.")
            _changed.wait(left)
    return int(busy)


@contextmanager
def releasing(pipe, timeout: float = 120.0):
    """`stop_generations`, then hold the lock for the block (release_pipeline empties the pipeline
    in it): no generation runs on a pipeline while its components are removed."""
    stop_generations(pipe, timeout)
    with _changed:
        try:
            state = _state_of(pipe)
        except TypeError:  # not weak-referenceable: nothing else can hold it
            state = None
        else:
            if state.owner is None:
                state.owner, state.who = threading.current_thread(), "release_pipeline"
            state.depth += 1
    try:
        yield
    finally:
        if state is not None:
            _let_go(state)
