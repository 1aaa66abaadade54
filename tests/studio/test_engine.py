"""The studio's engine without widgets: queue, worker thread, cancel, cache and the pipeline's lock."""

import threading
import time

import pytest
from conftest import wait_until

import helpers
from helpers.errors import GenerationCancelled
from helpers.generation import pipeline_lock
from helpers.studio.engine import RELEASED, Listener, StudioEngine


class Recorder(Listener):
    """Records every event; `hold_at` blocks the worker after that step until `go` is set."""

    def __init__(self, hold_at=None):
        self.events, self.hold_at, self.go = [], hold_at, threading.Event()
        self.step_reached = threading.Event()

    def on_status(self, text):
        self.events.append(("status", text))

    def on_start(self, settings):
        self.events.append(("start", settings["guidance_scale"]))

    def on_step(self, done, total, elapsed, latents):
        self.events.append(("step", done))
        if done == self.hold_at and not self.go.is_set():
            self.step_reached.set()
            assert self.go.wait(10)

    def on_result(self, result, note, new):
        self.events.append(("result", result, new))

    def on_failure(self, error, settings, steps_done):
        self.events.append(("failure", error, steps_done))

    def of(self, kind):
        return [e[1:] for e in self.events if e[0] == kind]


def _settings(**changes):
    return {"prompt": "a cat", "negative_prompt": "", "guidance_scale": 3.5, "num_inference_steps": 4,
            "seed": 0, "height": 64, "width": 64, **changes}


def _hold_in_another_thread(pipe):
    """Another caller (a generate() in another thread) takes `pipe`'s lock and holds it until the
    returned event is set; returns (that thread, the event), once the lock is held."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        with pipeline_lock.using(pipe, "a generate() call"):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    return thread, release


@pytest.fixture
def engine(tiny_pipe, tmp_path):
    recorder = Recorder(hold_at=1)
    e = StudioEngine(tiny_pipe, recorder, save_dir=tmp_path)
    yield e
    recorder.go.set()
    e.cancel()
    e.wait_idle(30)


def test_an_image_equals_generate_and_a_revisit_is_cached(engine, tiny_pipe):
    engine.listener.go.set()
    assert engine.submit(_settings(seed=3)) == "started"
    engine.wait_idle(30)
    [(result, new)] = engine.listener.of("result")
    plain = helpers.generate(tiny_pipe, "a cat", negative_prompt="", seed=3)
    assert new and result.image.tobytes() == plain.image.tobytes()
    assert engine.listener.of("step") == [(1,), (2,), (3,), (4,)]
    assert engine.submit(_settings(seed=3)) == "cached" and engine.cache_hits == 1 and engine.generations == 1
    assert engine.history == [result] and engine.save(result).is_file()


def test_requests_while_running_do_not_pile_up_latest_wins(engine):
    assert engine.submit(_settings()) == "started"
    assert engine.listener.step_reached.wait(10)
    for g in (4.0, 5.0, 6.0):
        assert engine.submit(_settings(guidance_scale=g)) == "queued"
    assert engine.submit(_settings()) == "running"  # the image being made: the queued one is dropped
    assert engine.submit(_settings(guidance_scale=6.0)) == "queued"
    engine.listener.go.set()
    engine.wait_idle(30)
    assert engine.generations == 2 and sorted(key[2] for key in engine.cache) == [3.5, 6.0]
    assert engine.listener.of("start") == [(3.5,), (6.0,)]


def test_wait_idle_honours_its_timeout(engine):
    engine.submit(_settings())
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        engine.wait_idle(timeout=0.2)
    assert time.monotonic() - started < 5 and engine.busy


def _says_it_waits(engine) -> bool:
    """The engine's worker has found the pipeline taken and is waiting for it (its status says so)."""
    return any("waiting for a generate() call" in text for (text,) in engine.listener.of("status"))


def test_the_engine_waits_for_another_caller_and_says_for_whom(engine, tiny_pipe):
    engine.listener.go.set()
    thread, release = _hold_in_another_thread(tiny_pipe)
    engine.submit(_settings())
    wait_until(lambda: _says_it_waits(engine))
    assert engine.listener.of("start") == []  # nothing of the image ran while the other caller held the pipeline
    release.set()
    thread.join(10)
    engine.wait_idle(30)
    assert engine.generations == 1 and engine.listener.of("failure") == []


def test_cancel_while_waiting_for_the_pipeline_stops_before_it_starts(engine, tiny_pipe):
    with pipeline_lock.using(tiny_pipe, "a generate() call"):
        engine.submit(_settings())
        wait_until(lambda: _says_it_waits(engine))  # cancelled while waiting, not before it asked
        engine.cancel()
        engine.wait_idle(10)  # did not wait for this thread to let go
    [(error, steps_done)] = engine.listener.of("failure")
    assert isinstance(error, GenerationCancelled) and steps_done == 0 and engine.generations == 0


def test_releasing_while_the_engine_waits_is_the_released_error(engine, tiny_pipe):
    outcome = []
    thread, release = _hold_in_another_thread(tiny_pipe)
    engine.submit(_settings())
    wait_until(lambda: _says_it_waits(engine))
    releaser = threading.Thread(target=lambda: outcome.append(helpers.release_pipeline(tiny_pipe)))
    releaser.start()
    engine.wait_idle(10)  # the waiting engine is told at once, before the holder lets go
    [(error, steps_done)] = engine.listener.of("failure")
    assert isinstance(error, ValueError) and str(error) == RELEASED and steps_done == 0
    assert tiny_pipe.transformer is not None  # release_pipeline still waits for the holder
    release.set()
    thread.join(10)
    releaser.join(10)
    assert outcome == [None] and tiny_pipe.transformer is None
    with pytest.raises(ValueError, match="released"):
        engine.submit(_settings())


@pytest.mark.parametrize("option, value, error", [
    ("cache_size", -1, ValueError), ("history_size", 0, ValueError), ("cache_size", 2.5, TypeError),
    ("history_size", True, TypeError),
])
def test_bad_options_are_refused_up_front(tiny_pipe, option, value, error):
    with pytest.raises(error, match=option):
        StudioEngine(tiny_pipe, **{option: value})


@pytest.mark.parametrize("pipe", ["tiny", None])
def test_an_engine_needs_a_pipeline(pipe):
    with pytest.raises(TypeError, match="load_pipeline"):
        StudioEngine(pipe)


def test_a_released_pipeline_is_refused_up_front(tiny_pipe):
    helpers.release_pipeline(tiny_pipe)
    with pytest.raises(ValueError, match="released"):
        StudioEngine(tiny_pipe)


def test_the_engine_module_has_no_widgets():
    import ast
    from pathlib import Path

    import helpers.studio.engine as engine_module

    tree = ast.parse(Path(engine_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any("ipywidgets" in name for name in imported)


@pytest.mark.parametrize("change, error, match", [
    (dict(seed=True), TypeError, "seed must be a whole number"),
    (dict(height=64.0), TypeError, "height must be a whole number"),
    (dict(guidance_scale=True), TypeError, "guidance_scale must be a number"),
    (dict(num_inference_steps=4.0), TypeError, "num_inference_steps must be a whole number"),
])
def test_settings_generate_refuses_are_refused_before_the_cache(engine, change, error, match):
    """seed=True equals 1 and height=64.0 equals 64 as cache keys: a cached image must not answer them."""
    engine.listener.go.set()
    assert engine.submit(_settings(seed=1)) == "started"
    engine.wait_idle(30)
    with pytest.raises(error, match=match):
        engine.submit(_settings(**{"seed": 1, **change}))
    assert engine.cache_hits == 0 and engine.generations == 1


@pytest.mark.parametrize("settings, error, match", [
    (None, TypeError, "settings must be a dict"), ({}, ValueError, "missing: prompt"),
    ("a cat", TypeError, "settings must be a dict"), (_settings(steps=4), ValueError, "unknown: steps"),
])
def test_submit_without_whole_settings_is_one_clear_error(engine, settings, error, match):
    with pytest.raises(error, match=match):
        engine.submit(settings)
    assert not engine.busy


@pytest.mark.parametrize("timeout, error", [("x", TypeError), (None, TypeError), (-1, ValueError),
                                            (float("nan"), ValueError)])
def test_wait_idle_needs_a_number_of_seconds(engine, timeout, error):
    with pytest.raises(error, match="timeout must be a number of seconds"):
        engine.wait_idle(timeout)


def test_cancel_drops_the_queued_request_too(engine):
    assert engine.submit(_settings()) == "started"
    assert engine.listener.step_reached.wait(10)
    assert engine.submit(_settings(guidance_scale=5.0)) == "queued"
    assert engine.cancel()
    engine.listener.go.set()
    engine.wait_idle(30)
    assert engine.listener.of("start") == [(3.5,)]  # the queued 5.0 never started
    assert engine.generations == 0 and not engine.cache
    [(error, _)] = engine.listener.of("failure")
    assert isinstance(error, GenerationCancelled)


@pytest.mark.parametrize("save_dir, error, match", [
    (None, TypeError, "save_dir must be a folder path"), (123, TypeError, "save_dir must be a folder path"),
    ("file", NotADirectoryError, "is a file, not a folder"),
])
def test_save_dir_must_be_a_folder(tiny_pipe, tmp_path, save_dir, error, match):
    if save_dir == "file":
        save_dir = tmp_path / "notes.txt"
        save_dir.write_text("the user's notes")
    with pytest.raises(error, match=match):
        StudioEngine(tiny_pipe, save_dir=save_dir)


def test_a_studio_on_a_staged_t5_pipeline_loads_t5_once_per_new_prompt(bnb_cpu, tmp_path):
    """Large on the free T4 keeps T5 in the studio: the pipeline loads without it, and each new prompt
    loads T5 once (helpers.loading.staged_t5); slider moves reuse the embeddings."""
    from helpers.loading.hardware_profiles import colab_t4_plan

    pipe = helpers.load_pipeline(**colab_t4_plan(), stand_in=True)
    assert pipe.load_info.plan.t5 == "staged" and pipe.text_encoder_3 is None
    recorder = Recorder()
    e = StudioEngine(pipe, recorder, save_dir=tmp_path)
    for settings in (_settings(), _settings(guidance_scale=5.0), _settings(prompt="a dog"), _settings(seed=3)):
        e.submit(settings)
        e.wait_idle()
    results = [r[0] for r in recorder.of("result")]
    assert len(results) == 4 and all(r.recipe["t5"] == "nf4, staged" for r in results)
    assert pipe.load_info.staged_encodes == 2  # "a cat" and "a dog", each once
    helpers.release_current_pipeline()
