"""One lock per pipeline: concurrent callers wait their turn, release_pipeline stops and waits for
the holder, and nothing starts on a released pipeline. All on the real stand-in pipeline."""

import threading
import time

import pytest
from conftest import wait_until

import helpers
from helpers.errors import GenerationCancelled
from helpers.generation.pipeline_lock import holder, is_released, stop_generations, using
from helpers.generation.text_to_image import GenerationResult
from helpers.studies.grids import xy_grid


def _hold(pipe, who="a test", cancel=None):
    """Hold `pipe`'s lock in a thread until the returned event is set; returns (thread, holding, let_go)."""
    holding, let_go = threading.Event(), threading.Event()

    def body():
        with using(pipe, who, cancel=cancel):
            holding.set()
            let_go.wait(10)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert holding.wait(10)
    return thread, holding, let_go


def test_three_threads_generating_on_one_pipeline_each_get_their_solo_image(tiny_pipe, capsys):
    seeds = (11, 22, 33)
    start, results, errors = threading.Barrier(len(seeds)), {}, []

    def run(seed):
        start.wait(10)
        try:
            results[seed] = helpers.generate(tiny_pipe, "a red fox", seed=seed, num_inference_steps=8)
        except BaseException as e:  # an IndexError in the scheduler is what two at once used to give
            errors.append(e)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sorted(results) == list(seeds)
    assert capsys.readouterr().out.count("waiting for a generate() call to finish its image") >= 1
    for seed in seeds:
        alone = helpers.generate(tiny_pipe, "a red fox", seed=seed, num_inference_steps=8)
        assert results[seed].image.tobytes() == alone.image.tobytes()


def test_a_waiting_caller_says_for_whom_once_and_starts_when_the_holder_lets_go(tiny_pipe):
    thread, _, let_go = _hold(tiny_pipe, "the studio")
    notes, noted, entered = [], threading.Event(), threading.Event()

    def wait_for_it():
        with using(tiny_pipe, "a generate() call", on_wait=lambda note: (notes.append(note), noted.set())):
            entered.set()

    waiter = threading.Thread(target=wait_for_it, daemon=True)
    waiter.start()
    assert noted.wait(10)  # it found the pipeline taken and is waiting
    assert not entered.is_set() and holder(tiny_pipe) == "the studio"
    let_go.set()
    assert entered.wait(10)
    assert notes == ["waiting for the studio to finish its image (a pipeline makes one image at a time)..."]
    thread.join(10)
    waiter.join(10)
    assert holder(tiny_pipe) is None


@pytest.mark.timeout(60)  # a lock that is not reentrant deadlocks here: fail in a minute, not at CI's limit
def test_the_same_thread_enters_again_xy_grid_calls_generate(tiny_pipe):
    with using(tiny_pipe, "a test"):
        grid, results = xy_grid(tiny_pipe, x=("seed", [0, 1]), y=("guidance_scale", [1.0]), base={"prompt": "a cat"})
        assert holder(tiny_pipe) == "a test"
    assert holder(tiny_pipe) is None and len(results[0]) == 2
    assert results[0][1].image.tobytes() == helpers.generate(tiny_pipe, "a cat", seed=1, guidance_scale=1.0).image.tobytes()


def test_generate_holds_the_pipeline_while_it_runs_and_lets_go_after(tiny_pipe):
    seen = []
    helpers.generate(tiny_pipe, "a cat", num_inference_steps=2, callback=lambda *_: seen.append(holder(tiny_pipe)))
    with using(tiny_pipe, "an outer caller"):  # re-entered: the outer caller keeps it
        helpers.generate(tiny_pipe, "a cat", num_inference_steps=2, callback=lambda *_: seen.append(holder(tiny_pipe)))
    assert seen == ["a generate() call"] * 2 + ["an outer caller"] * 2 and holder(tiny_pipe) is None


def test_two_pipelines_generate_at_once(tiny_pipe):
    other = helpers.load_pipeline("tiny", keep_previous=True)
    try:
        thread, _, let_go = _hold(tiny_pipe)
        result = helpers.generate(other, "a cat", num_inference_steps=2)  # does not wait for tiny_pipe
        assert result.image.size == (64, 64) and holder(tiny_pipe) == "a test"
        let_go.set()
        thread.join(10)
    finally:
        helpers.release_pipeline(other)


def test_release_cancels_the_holder_and_waits_for_it_before_emptying(tiny_pipe):
    holding, cancelled, seen = threading.Event(), threading.Event(), []

    def body():
        with using(tiny_pipe, "the studio", cancel=cancelled.set):
            holding.set()
            assert cancelled.wait(10)
            time.sleep(0.1)  # the run winding down after its cancel (work, not a wait on another thread)
            seen.append(tiny_pipe.transformer is not None)  # still whole while the run winds down

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert holding.wait(10)
    helpers.release_pipeline(tiny_pipe)
    assert cancelled.is_set() and seen == [True]
    assert tiny_pipe.transformer is None and is_released(tiny_pipe)
    thread.join(10)


def test_loading_while_threads_generate_ends_cleanly(tiny_pipe, capsys):
    """A running generate finishes its image; one waiting for the pipeline gets the released error."""
    started, outcomes = threading.Event(), {}

    def slow(step, total, latents):  # the running image is still running when the load begins
        started.set()
        wait_until(lambda: is_released(tiny_pipe), timeout=30)

    def run(name, **kwargs):
        try:
            outcomes[name] = helpers.generate(tiny_pipe, "a cat", num_inference_steps=10, **kwargs)
        except BaseException as e:
            outcomes[name] = e

    running = threading.Thread(target=run, args=("running",), kwargs={"callback": slow})
    running.start()
    assert started.wait(10)
    waiting = threading.Thread(target=run, args=("waiting",))
    waiting.start()
    printed = []
    wait_until(lambda: printed.append(capsys.readouterr().out) or "waiting for a generate() call" in "".join(printed))
    new = helpers.load_pipeline("tiny")  # releases tiny_pipe: takes its lock first
    running.join(30)
    waiting.join(30)
    assert isinstance(outcomes["running"], GenerationResult), outcomes["running"]
    assert isinstance(outcomes["waiting"], ValueError) and "released" in str(outcomes["waiting"])
    assert tiny_pipe.transformer is None and new.transformer is not None
    with pytest.raises(ValueError, match="released"):
        helpers.generate(tiny_pipe, "a cat")


def test_nothing_starts_on_a_released_pipeline(tiny_pipe):
    helpers.release_pipeline(tiny_pipe)
    with pytest.raises(ValueError, match="released"):
        with using(tiny_pipe, "a test"):
            pass


def test_releasing_from_inside_the_holder_does_not_wait_for_itself(tiny_pipe):
    with using(tiny_pipe, "a test"):
        assert stop_generations(tiny_pipe, timeout=1) == 0


def test_a_holder_that_does_not_stop_is_a_timeout_not_a_crash(tiny_pipe):
    thread, _, let_go = _hold(tiny_pipe, "the studio", cancel=lambda: None)  # ignores cancel
    with pytest.raises(TimeoutError, match="not emptied"):
        stop_generations(tiny_pipe, timeout=0.2)
    assert tiny_pipe.transformer is not None and is_released(tiny_pipe)  # no new work meanwhile
    let_go.set()
    thread.join(10)
    helpers.release_pipeline(tiny_pipe)  # again, as the message says: now it empties it
    assert tiny_pipe.transformer is None


def test_a_cancellable_waiter_stops_waiting_when_cancelled(tiny_pipe):
    thread, _, let_go = _hold(tiny_pipe)
    stop = threading.Event()
    with pytest.raises(GenerationCancelled, match="before it started"):
        # cancelled once it is waiting (its note is where it starts to wait)
        with using(tiny_pipe, "the studio", cancelled=stop.is_set, on_wait=lambda note: stop.set()):
            pass
    let_go.set()
    thread.join(10)


def test_other_pipelines_are_not_affected(tiny_pipe):
    other = helpers.load_pipeline("tiny", keep_previous=True)
    try:
        helpers.release_pipeline(other)
        with using(tiny_pipe, "a test"):
            assert not is_released(tiny_pipe)
    finally:
        helpers.release_pipeline(other)
