"""release_pipeline stops a background generation first, and nothing new starts on a released pipeline."""

import threading

import pytest

import helpers
from helpers.generation.pipeline_lock import is_released, running_on, stop_generations


def _run_in_thread(pipe, cancelled: threading.Event, started: threading.Event, seen: list):
    def body():
        with running_on(pipe, cancelled.set):
            started.set()
            assert cancelled.wait(10)
            seen.append(pipe.transformer is not None)  # still whole while the run winds down

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_release_cancels_and_waits_for_a_running_generation(tiny_pipe):
    cancelled, started, seen = threading.Event(), threading.Event(), []
    thread = _run_in_thread(tiny_pipe, cancelled, started, seen)
    assert started.wait(10)
    helpers.release_pipeline(tiny_pipe)
    assert cancelled.is_set() and seen == [True]  # the run ended before the components were dropped
    assert tiny_pipe.transformer is None and is_released(tiny_pipe)
    thread.join(10)


def test_nothing_starts_on_a_released_pipeline(tiny_pipe):
    helpers.release_pipeline(tiny_pipe)
    with pytest.raises(ValueError, match="released"):
        with running_on(tiny_pipe, lambda: None):
            pass


def test_releasing_from_inside_the_generation_does_not_wait_for_itself(tiny_pipe):
    with running_on(tiny_pipe, lambda: None):
        assert stop_generations(tiny_pipe, timeout=1) == 0


def test_a_generation_that_does_not_stop_is_a_timeout_not_a_crash(tiny_pipe):
    release, started = threading.Event(), threading.Event()

    def body():
        with running_on(tiny_pipe, lambda: None):  # ignores cancel
            started.set()
            release.wait(10)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert started.wait(10)
    with pytest.raises(TimeoutError, match="not released"):
        stop_generations(tiny_pipe, timeout=0.2)
    assert tiny_pipe.transformer is not None
    release.set()
    thread.join(10)


def test_other_pipelines_are_not_affected(tiny_pipe):
    other = helpers.load_pipeline("tiny", keep_previous=True)
    try:
        helpers.release_pipeline(other)
        with running_on(tiny_pipe, lambda: None):
            assert not is_released(tiny_pipe)
    finally:
        helpers.release_pipeline(other)
