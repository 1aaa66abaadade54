"""The studio driven from Python on the stand-in: the same widgets and thread the browser uses."""

import io
import re
import threading
import time

import pytest
import torch
from conftest import wait_until
from PIL import Image

import helpers
from helpers.generation.png_metadata import parse_a1111_parameters, read_png_recipe
from helpers.studio.engine import size_choices
from helpers.studio.view import Studio


@pytest.fixture
def studio(tiny_pipe, tmp_path):
    s = Studio(tiny_pipe, save_dir=tmp_path / "saved")
    yield s
    s.cancel()
    s.wait_idle(30)


def _click_andwait_until(s):
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
    _click_andwait_until(studio)
    assert studio.last_error is None, studio.message.value
    plain = helpers.generate(tiny_pipe, studio.prompt.value, negative_prompt="", seed=7)
    assert studio.current.image.tobytes() == plain.image.tobytes()
    shown = Image.open(io.BytesIO(studio.image.value))
    assert studio.image.format == "png" and shown.size == (64, 64)
    assert "<td>7</td>" in studio.recipe_view.value
    assert studio.progress.value == studio.steps.value


def test_live_preview_updates_every_step(studio, monkeypatch):
    import importlib

    studio_module = importlib.import_module("helpers.studio.view")
    encoded, real = [], studio_module._png_bytes
    monkeypatch.setattr(studio_module, "_png_bytes", lambda image, format="PNG": encoded.append(format) or real(image, format))
    frames = []
    studio.image.observe(lambda change: frames.append(studio.image.format), names="value")
    studio.steps.value = 5
    _click_andwait_until(studio)
    # One JPEG preview per step. The widget only fires when a frame's bytes differ from the last
    # one (the stand-in's 8x8 px preview can repeat on its final step), so count the encodes.
    assert encoded.count("JPEG") == 5 and "jpeg" in frames and frames[-1] == "png"


def test_slider_back_to_a_rendered_value_is_a_cache_hit(studio):
    _click_andwait_until(studio)
    studio.guidance.value = 5.0
    _click_andwait_until(studio)
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
    _click_andwait_until(studio)
    assert studio.progress.value == 2
    assert studio.current is None and "Cancelled" in studio.message.value
    studio.progress.unobserve(cancel_at_two, names="value")
    studio.steps.value = 2
    _click_andwait_until(studio)
    assert studio.current is not None and studio.message.value == ""


def test_history_click_restores_parameters(studio):
    studio.seed.value = 1
    _click_andwait_until(studio)
    studio.seed.value, studio.guidance.value, studio.steps.value = 2, 6.0, 3
    _click_andwait_until(studio)
    assert len(studio.history_strip.children) == 2
    older_button = studio.history_strip.children[1].children[2]
    older_button.click()
    assert (studio.seed.value, studio.guidance.value, studio.steps.value) == (1, 3.5, 4)
    assert studio.current is studio.history[1] and studio.generations == 2


def test_unlocked_seed_draws_a_new_one_each_time(studio):
    studio.seed_lock.value = False
    _click_andwait_until(studio)
    _click_andwait_until(studio)
    seeds = [r.recipe["seed"] for r in studio.history]
    assert len(set(seeds)) == 2 and studio.seed.value == seeds[0]


def test_save_round_trips_the_recipe_and_never_overwrites(studio):
    assert studio.save() is None and "Nothing to save" in studio.message.value
    studio.negative_prompt.value = "blurry"
    _click_andwait_until(studio)
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
    _click_andwait_until(studio)
    assert studio.current is not None and studio.message.value == ""


def test_error_in_the_worker_is_shown_and_the_studio_survives(studio, tiny_pipe):
    helpers.release_current_pipeline()  # what loading another model does to this one
    _click_andwait_until(studio)
    assert "released" in studio.message.value and studio.current is None
    assert isinstance(studio.last_error, ValueError)
    assert "released" in studio.progress_label.value and not studio.busy


# --- hardening (issue 13) ------------------------------------------------------------------------


def _hold_steps(s, seconds):
    """Slow every denoising step down (the stand-in is too quick to cancel or release mid-run)."""
    s.progress.observe(lambda change: time.sleep(seconds), names="value")


def _shown_image(s) -> Image.Image:
    return Image.open(io.BytesIO(s.image.value))


def test_cancel_shows_the_image_save_writes(studio):
    studio.seed.value = 3
    _click_andwait_until(studio)
    finished = studio.current
    studio.steps.value, studio.seed.value = 40, 1234
    studio.progress.observe(lambda change: change["new"] == 2 and studio.cancel_button.click(), names="value")
    _click_andwait_until(studio)
    assert studio.progress.value == 2 and studio.current is finished
    shown = _shown_image(studio)  # not the half-finished preview: the image Save writes, with its recipe
    assert studio.image.format == "png" and shown.tobytes() == finished.image.tobytes()
    assert "<td>3</td>" in studio.recipe_view.value and "1234" not in studio.recipe_view.value
    with Image.open(studio.save()) as saved:
        assert saved.convert("RGB").tobytes() == shown.convert("RGB").tobytes()


def test_cancel_of_the_first_image_shows_no_preview_and_saves_nothing(studio):
    placeholder = studio.image.value
    studio.steps.value = 40
    studio.progress.observe(lambda change: change["new"] == 2 and studio.cancel_button.click(), names="value")
    _click_andwait_until(studio)
    assert studio.current is None and studio.image.value == placeholder
    assert studio.save() is None and "Nothing to save" in studio.message.value


def test_cancel_message_says_cancelled_once(studio):
    studio.steps.value = 40
    studio.progress.observe(lambda change: change["new"] == 2 and studio.cancel_button.click(), names="value")
    _click_andwait_until(studio)
    text = re.sub("<[^>]+>", "", studio.message.value)
    assert text.count("Cancelled") + text.count("cancelled") == 1, text
    assert "step 2 of 40" in text


def test_a_placeholder_reserves_the_image_space_before_the_first_image(studio):
    shown = _shown_image(studio)  # a real image: no broken-image icon, the same box as the image to come
    assert shown.size == studio.size.value and studio.image.format == "png"
    studio.size.value = (80, 48)  # the placeholder follows the chosen shape until an image exists
    assert _shown_image(studio).size == (80, 48)


def test_history_shows_whole_seeds(studio):
    studio.seed.value = 2**32 - 1  # the largest seed
    _click_andwait_until(studio)
    caption = studio.history_strip.children[0].children[1]
    assert str(2**32 - 1) in caption.value and "overflow-wrap:anywhere" in caption.value.replace(" ", "")


def test_double_click_runs_the_image_once(studio):
    go = threading.Event()
    studio.progress.observe(lambda change: change["new"] == 1 and not go.is_set() and go.wait(10), names="value")
    studio.generate_button.click()
    wait_until(lambda: studio.progress.value == 1)
    studio.generate_button.click()  # the same request again while it runs: not queued a second time
    assert studio.request() == "running"
    go.set()
    studio.wait_idle(30)
    assert studio.generations == 1 and studio.request() == "cached"


def test_generate_after_cancel_runs_again(studio):
    studio.steps.value = 40
    cancelled = threading.Event()

    def cancel_then_regenerate(change):
        if change["new"] == 2 and not cancelled.is_set():
            cancelled.set()
            studio.cancel_button.click()
            assert studio.request() == "queued"  # the running one is being cancelled: this one counts

    studio.progress.observe(cancel_then_regenerate, names="value")
    _click_andwait_until(studio)
    assert studio.generations == 1 and studio.current.recipe["num_inference_steps"] == 40


class _Stop(BaseException):
    """Not an Exception: what KeyboardInterrupt or SystemExit look like to the worker."""


def test_worker_dying_of_a_base_exception_leaves_the_studio_usable(studio):
    def die(change):
        if change["new"] == 1:
            raise _Stop("killed mid-run")

    studio.progress.observe(die, names="value")
    studio.generate_button.click()
    waited = threading.Thread(target=studio.wait_idle, kwargs={"timeout": 5}, daemon=True)
    waited.start()
    waited.join(20)
    assert not waited.is_alive(), "wait_idle ignored its timeout"
    assert not studio.busy and "_Stop" in studio.message.value and isinstance(studio.last_error, _Stop)
    studio.progress.unobserve(die, names="value")
    _click_andwait_until(studio)
    assert studio.current is not None and studio.message.value == ""


def test_loading_another_pipeline_mid_generation_stops_it_and_says_so(studio):
    studio.steps.value = 40
    _hold_steps(studio, 0.02)
    studio.generate_button.click()
    wait_until(lambda: studio.progress.value >= 2)
    helpers.load_pipeline("tiny")  # releases the studio's pipeline while it generates
    studio.wait_idle(30)
    assert not studio.busy and studio.current is None
    assert "TypeError" not in studio.message.value and not isinstance(studio.last_error, TypeError)
    assert "pipeline was released" in studio.message.value, studio.message.value
    studio.generate_button.click()  # and every later request says the same, before any work
    assert not studio.busy and "pipeline was released" in studio.message.value


@pytest.mark.parametrize("option, value, error", [
    ("cache_size", -1, ValueError), ("history_size", -1, ValueError), ("cache_size", 2.5, TypeError),
    ("history_size", True, TypeError), ("preview", "yes", TypeError),
])
def test_bad_options_are_refused_up_front(tiny_pipe, option, value, error):
    with pytest.raises(error, match=option):
        Studio(tiny_pipe, **{option: value})


@pytest.mark.parametrize("pipe", ["tiny", None])
def test_a_studio_needs_a_pipeline(pipe):
    with pytest.raises(TypeError, match="load_pipeline"):
        Studio(pipe)


def test_a_released_pipeline_is_refused_up_front(tiny_pipe):
    helpers.release_pipeline(tiny_pipe)
    with pytest.raises(ValueError, match="released"):
        Studio(tiny_pipe)


# --- one pipeline, one lock (issue 17) ------------------------------------------------------------


def test_generate_from_another_thread_waits_for_the_studio_and_both_images_are_right(studio, tiny_pipe, capsys):
    studio.steps.value, studio.seed.value = 12, 4
    _hold_steps(studio, 0.02)  # the studio holds the pipeline long enough for the other caller to arrive
    studio.generate_button.click()
    wait_until(lambda: studio.progress.value >= 2)
    other = []
    thread = threading.Thread(target=lambda: other.append(helpers.generate(tiny_pipe, "a dog", seed=9, num_inference_steps=6)))
    thread.start()
    studio.wait_idle(30)
    thread.join(30)
    assert studio.last_error is None and studio.message.value == "", studio.message.value
    assert "waiting for the studio to finish its image" in capsys.readouterr().out  # the cell's note, once
    alone_studio = helpers.generate(tiny_pipe, studio.prompt.value, negative_prompt="", seed=4, num_inference_steps=12)
    alone_other = helpers.generate(tiny_pipe, "a dog", seed=9, num_inference_steps=6)
    assert studio.current.image.tobytes() == alone_studio.image.tobytes()
    assert other[0].image.tobytes() == alone_other.image.tobytes()


def test_the_studio_waits_for_a_generate_from_another_thread_and_says_so(studio, tiny_pipe):
    studio.seed.value = 2
    labels = []
    studio.progress_label.observe(lambda change: labels.append(change["new"]), names="value")
    first_step, other = threading.Event(), []

    def slow_step(step, total, latents):
        first_step.set()
        time.sleep(0.05)

    thread = threading.Thread(target=lambda: other.append(
        helpers.generate(tiny_pipe, "a dog", seed=9, num_inference_steps=8, callback=slow_step)))
    thread.start()
    assert first_step.wait(10)
    studio.generate_button.click()
    thread.join(30)
    studio.wait_idle(30)
    assert any(label.startswith("waiting for a generate() call to finish its image") for label in labels), labels
    assert studio.last_error is None and studio.message.value == ""
    alone = helpers.generate(tiny_pipe, studio.prompt.value, negative_prompt="", seed=2)
    assert studio.current.image.tobytes() == alone.image.tobytes()
    assert other[0].image.tobytes() == helpers.generate(tiny_pipe, "a dog", seed=9, num_inference_steps=8).image.tobytes()


@pytest.mark.parametrize("option, value", [("prompt", 123), ("prompt", None), ("negative_prompt", 1.5)])
def test_starting_texts_must_be_strings(tiny_pipe, option, value):
    with pytest.raises(TypeError, match=f"{option} must be a string"):
        Studio(tiny_pipe, **{option: value})


@pytest.mark.parametrize("result, error, match", [
    (None, TypeError, "restore needs a GenerationResult"), ({"seed": 1}, TypeError, "restore needs a GenerationResult"),
])
def test_restore_needs_a_result(studio, result, error, match):
    with pytest.raises(error, match=match):
        studio.restore(result)


def test_live_preview_shows_the_predicted_clean_image_not_the_noisy_latents(tiny_pipe, tmp_path):
    """Each step's preview is x0_hat = x_t - sigma * v (PredictedCleanLatents), the same as a plain
    generate() with that helper gives; on the first step it is far from the noisy latents x_t."""
    from helpers.generation.latent_preview import PredictedCleanLatents

    shown, expected, raw = [], [], []
    real_on_step = Studio.on_step

    class Recording(Studio):
        def on_step(self, done, total, elapsed, latents):
            shown.append(latents.clone())
            real_on_step(self, done, total, elapsed, latents)

    s = Recording(tiny_pipe, save_dir=tmp_path / "saved")
    s.seed.value, s.steps.value = 3, 4
    s.generate_button.click()
    s.wait_idle(30)
    assert s.last_error is None, s.message.value

    def collect(step, total, latents):
        expected.append(clean(latents))
        raw.append(latents.float())

    with PredictedCleanLatents(tiny_pipe) as clean:
        helpers.generate(tiny_pipe, s.prompt.value, negative_prompt="", seed=3, num_inference_steps=4, callback=collect)
    assert len(shown) == 4
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(shown, expected, strict=True))
    assert (shown[0] - raw[0]).abs().mean() > 0.1


def test_taesd3_preview_decoder_gives_full_size_previews(tiny_pipe, tmp_path, monkeypatch):
    """Opt-in: a studio with an AutoencoderTiny (TAESD3's shape, random weights, loaded with
    from_pretrained from a local folder) previews at the image's size instead of 1/8 of it."""
    import importlib

    from diffusers import AutoencoderTiny

    AutoencoderTiny(latent_channels=16).save_pretrained(tmp_path / "taesd3")
    decoder = AutoencoderTiny.from_pretrained(tmp_path / "taesd3")
    studio_module = importlib.import_module("helpers.studio.view")
    sizes, real = [], studio_module._png_bytes
    monkeypatch.setattr(studio_module, "_png_bytes",
                        lambda image, format="PNG": (format == "JPEG" and sizes.append(image.size)) or real(image, format))
    s = Studio(tiny_pipe, save_dir=tmp_path / "saved", preview_decoder=decoder)
    s.steps.value = 3
    s.generate_button.click()
    s.wait_idle(30)
    assert s.last_error is None, s.message.value
    assert sizes == [(64, 64)] * 3
    with pytest.raises(TypeError, match="AutoencoderTiny"):
        Studio(tiny_pipe, preview_decoder="madebyollin/taesd3")
