"""The studio driven from Python on the stand-in: the same widgets and thread the browser uses."""

import io
import threading
import time

import pytest
from PIL import Image

import helpers
from helpers.png_metadata import parse_a1111_parameters, read_png_recipe
from helpers.studio import Studio, size_choices


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.005)


@pytest.fixture
def studio(tiny_pipe, tmp_path):
    s = Studio(tiny_pipe, save_dir=tmp_path / "saved")
    yield s
    s.cancel()
    s.wait_idle(30)


def _click_and_wait(s):
    s.generate_button.click()
    s.wait_idle(30)


def test_defaults_come_from_the_preset(studio, tiny_pipe):
    rec = tiny_pipe.load_info.recommended
    assert (studio.guidance.value, studio.steps.value) == (rec.guidance_scale, rec.num_inference_steps)
    assert studio.size.value == (64, 64)
    assert all(w % 16 == 0 and h % 16 == 0 for _, (w, h) in studio.size.options)
    assert studio.guidance.continuous_update is False and studio.steps.continuous_update is False


def test_size_choices_are_multiples_within_the_limit():
    options = size_choices(1024, 16, largest=1536)
    assert options[0] == ("1024x1024", (1024, 1024))
    assert ("1280x768", (1280, 768)) in options
    assert all(w % 16 == 0 and h % 16 == 0 and max(w, h) <= 1536 for _, (w, h) in options)


def test_generate_shows_the_same_image_as_generate(studio, tiny_pipe):
    studio.seed.value = 7
    _click_and_wait(studio)
    assert studio.last_error is None, studio.message.value
    plain = helpers.generate(tiny_pipe, studio.prompt.value, negative_prompt="", seed=7)
    assert studio.current.image.tobytes() == plain.image.tobytes()
    shown = Image.open(io.BytesIO(studio.image.value))
    assert studio.image.format == "png" and shown.size == (64, 64)
    assert "<td>7</td>" in studio.recipe_view.value
    assert studio.progress.value == studio.steps.value


def test_live_preview_updates_every_step(studio):
    frames = []
    studio.image.observe(lambda change: frames.append(studio.image.format), names="value")
    studio.steps.value = 5
    _click_and_wait(studio)
    assert frames.count("jpeg") == 5 and frames[-1] == "png"


def test_slider_back_to_a_rendered_value_is_a_cache_hit(studio):
    _click_and_wait(studio)
    studio.guidance.value = 5.0
    _click_and_wait(studio)
    assert studio.generations == 2
    assert (studio.prompts.misses, studio.prompts.hits) == (1, 1)  # text encoders ran once
    first = studio.history[1]
    studio.guidance.value = 3.5
    assert studio.request() == "cached"
    assert studio.generations == 2 and studio.cache_hits == 1
    assert studio.current is first and not studio.busy


def test_auto_generate_on_slider_release(studio):
    studio.auto.value = True
    studio.steps.value = 3
    studio.wait_idle(30)
    assert studio.generations == 1 and studio.current.recipe["num_inference_steps"] == 3


def test_cancel_stops_within_one_step_and_the_studio_stays_usable(studio):
    studio.steps.value = 40

    def cancel_at_two(change):
        if change["new"] == 2:
            studio.cancel_button.click()

    studio.progress.observe(cancel_at_two, names="value")
    _click_and_wait(studio)
    assert studio.progress.value == 2
    assert studio.current is None and "Cancelled" in studio.message.value
    studio.progress.unobserve(cancel_at_two, names="value")
    studio.steps.value = 2
    _click_and_wait(studio)
    assert studio.current is not None and studio.message.value == ""


def test_requests_while_running_do_not_pile_up_latest_wins(studio):
    go = threading.Event()

    def hold_first_step(change):
        if change["new"] == 1 and not go.is_set():
            assert go.wait(10)

    studio.progress.observe(hold_first_step, names="value")
    assert studio.request() == "started"
    _wait(lambda: studio.progress.value == 1)
    for g in (4.0, 5.0, 6.0):
        studio.guidance.value = g
        assert studio.request() == "queued"
    go.set()
    studio.wait_idle(30)
    assert studio.generations == 2
    assert sorted(key[2] for key in studio.cache) == [3.5, 6.0]


def test_history_click_restores_parameters(studio):
    studio.seed.value = 1
    _click_and_wait(studio)
    studio.seed.value, studio.guidance.value, studio.steps.value = 2, 6.0, 3
    _click_and_wait(studio)
    assert len(studio.history_strip.children) == 2
    older_button = studio.history_strip.children[1].children[1]
    older_button.click()
    assert (studio.seed.value, studio.guidance.value, studio.steps.value) == (1, 3.5, 4)
    assert studio.current is studio.history[1] and studio.generations == 2


def test_unlocked_seed_draws_a_new_one_each_time(studio):
    studio.seed_lock.value = False
    _click_and_wait(studio)
    _click_and_wait(studio)
    seeds = [r.recipe["seed"] for r in studio.history]
    assert len(set(seeds)) == 2 and studio.seed.value == seeds[0]


def test_save_round_trips_the_recipe_and_never_overwrites(studio):
    assert studio.save() is None and "Nothing to save" in studio.message.value
    studio.negative_prompt.value = "blurry"
    _click_and_wait(studio)
    first, second = studio.save(), studio.save()
    assert first != second and first.exists() and second.exists()
    parameters, recipe = read_png_recipe(second)
    assert recipe["seed"] == studio.current.recipe["seed"] and recipe["negative_prompt"] == "blurry"
    parsed = parse_a1111_parameters(parameters)
    assert parsed["prompt"] == studio.prompt.value and parsed["negative_prompt"] == "blurry"
    assert (parsed["CFG scale"], parsed["Steps"], parsed["Size"]) == ("3.5", "4", "64x64")
    with Image.open(first) as back:
        assert back.tobytes() == studio.current.image.convert(back.mode).tobytes()


def test_bad_input_is_shown_in_the_widget_and_logged(studio):
    studio.prompt.value = "   "
    studio.generate_button.click()  # must not raise: the error lands in the widget
    assert not studio.busy
    assert "ValueError" in studio.message.value and "prompt is empty" in studio.message.value
    assert isinstance(studio.last_error, ValueError)
    assert "Traceback" in "".join(o["text"] for o in studio.log.outputs)
    studio.prompt.value = "a cat"
    _click_and_wait(studio)
    assert studio.current is not None and studio.message.value == ""


def test_error_in_the_worker_is_shown_and_the_studio_survives(studio, tiny_pipe):
    helpers.release_current_pipeline()  # what loading another model does to this one
    _click_and_wait(studio)
    assert "released" in studio.message.value and studio.current is None
    assert isinstance(studio.last_error, ValueError)
    assert studio.progress_label.value == "failed" and not studio.busy
