"""The A/B studio driven from Python on the stand-in: two views behind one set of controls."""

import threading

import numpy as np
import pytest
import torch
from conftest import wait_until

import helpers
from helpers.studio.ab import ABStudio, pixel_difference


@pytest.fixture
def ab(tiny_pipe, tmp_path):
    s = ABStudio(tiny_pipe, prompt="Children's birthday party", negative_prompt_a="No birthday cake",
                  negative_prompt_b="birthday cake", save_dir=tmp_path / "saved")
    yield s
    s.cancel()
    s.wait_idle(30)


def _click_pair(s):
    s.generate_button.click()
    s.wait_idle(30)
    assert s.last_error is None and s.a.last_error is None and s.b.last_error is None, s.b.message.value


def test_ab_sides_share_seed_and_settings_and_differ_in_the_negative(ab, tiny_pipe):
    ab.a.seed_lock.value = False  # a fresh random seed, drawn once for both sides
    _click_pair(ab)
    a, b = ab.a.current.recipe, ab.b.current.recipe
    assert a["seed"] == b["seed"] == ab.a.seed.value
    assert (a["negative_prompt"], b["negative_prompt"]) == ("No birthday cake", "birthday cake")
    assert {k: v for k, v in a.items() if k != "negative_prompt"} == {k: v for k, v in b.items() if k != "negative_prompt"}
    plain = helpers.generate(tiny_pipe, "Children's birthday party", negative_prompt="birthday cake", seed=a["seed"])
    assert ab.b.current.image.tobytes() == plain.image.tobytes()
    assert "birthday cake" in ab.b.recipe_view.value


def test_ab_equal_negatives_give_byte_identical_images(ab):
    ab.b.negative_prompt.value = ab.a.negative_prompt.value
    _click_pair(ab)
    assert ab.a.current.image.tobytes() == ab.b.current.image.tobytes()
    assert ab.difference == 0.0 and "byte-identical" in ab.summary.value


def test_ab_different_negatives_matter_only_with_guidance(ab):
    _click_pair(ab)  # guidance 3.5: the negative prompt steers
    a, b = ab.a.current.image, ab.b.current.image
    assert a.tobytes() != b.tobytes()
    expected = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean()
    assert ab.difference == pytest.approx(expected) and ab.difference > 0
    assert f"{expected:.2f}" in ab.summary.value
    ab.a.guidance.value = 1.0  # no classifier-free guidance: the negative branch is never used
    _click_pair(ab)
    assert ab.a.current.recipe["guidance_scale"] == ab.b.current.recipe["guidance_scale"] == 1.0
    assert ab.a.current.image.tobytes() == ab.b.current.image.tobytes() and ab.difference == 0.0


def test_ab_two_pipelines_side_by_side(tiny_pipe):
    bf16 = helpers.load_pipeline("tiny", dtype=torch.bfloat16, keep_previous=True)
    try:
        assert tiny_pipe.transformer is not None  # keep_previous: the first pipeline is still there
        s = ABStudio(tiny_pipe, bf16, negative_prompt_a="blurry")
        assert s.b.negative_prompt not in s.widget.children[0].children  # one negative box for both
        _click_pair(s)
        a, b = s.a.current.recipe, s.b.current.recipe
        assert (a["dtype"], b["dtype"]) == ("float32", "bfloat16")
        assert a["seed"] == b["seed"] and a["negative_prompt"] == b["negative_prompt"] == "blurry"
        assert s.difference == pytest.approx(pixel_difference(s.a.current.image, s.b.current.image))
        assert "bfloat16" in s.b.recipe_view.value and "pipelines differ" in s.summary_markdown()
    finally:
        helpers.release_pipeline(bf16)


def test_ab_two_pipelines_and_two_negatives_is_refused(tiny_pipe):
    with pytest.raises(ValueError, match="not both"):
        ABStudio(tiny_pipe, tiny_pipe, negative_prompt_b="cake")


def test_ab_cancel_stops_both(ab):
    ab.a.steps.value = 40

    def cancel_at_two(change):
        if change["new"] == 2:
            ab.cancel_button.click()

    ab.a.progress.observe(cancel_at_two, names="value")
    ab.generate_button.click()
    ab.wait_idle(30)
    assert ab.a.progress.value == 2 and ab.b.progress.value == 0  # B never ran a step
    assert ab.a.current is None and ab.b.current is None and ab.difference is None
    assert "Cancelled" in ab.a.message.value and not ab.busy
    ab.a.progress.unobserve(cancel_at_two, names="value")
    ab.a.steps.value = 2
    _click_pair(ab)
    assert ab.a.current is not None and ab.b.current is not None


def test_ab_cached_pair_is_shown_at_once(ab):
    _click_pair(ab)
    ab.a.guidance.value = 5.0
    _click_pair(ab)
    ab.a.guidance.value = 3.5
    assert ab.request() == ("cached", "cached") and not ab.busy
    assert ab.a.generations == ab.b.generations == 2 and ab.difference > 0


def test_ab_errors_are_shown_in_the_widget(ab, tiny_pipe):
    ab.a.prompt.value = "  "
    ab.generate_button.click()  # must not raise
    assert not ab.busy and isinstance(ab.last_error, ValueError)
    assert all("prompt is empty" in side.message.value for side in (ab.a, ab.b))
    assert "Traceback" in "".join(o["text"] for o in ab.a.log.outputs)
    ab.a.prompt.value = "a cake"
    helpers.release_current_pipeline()  # the worker's error, on both sides
    ab.generate_button.click()
    ab.wait_idle(30)
    assert all("released" in side.message.value for side in (ab.a, ab.b)) and not ab.busy
    assert ab.summary_markdown() == "No finished A/B pair yet."


def test_ab_double_click_runs_the_pair_once(ab):
    go = threading.Event()
    ab.a.progress.observe(lambda change: change["new"] == 1 and not go.is_set() and go.wait(10), names="value")
    ab.generate_button.click()
    wait_until(lambda: ab.a.progress.value == 1)
    ab.generate_button.click()
    go.set()
    ab.wait_idle(30)
    assert ab.a.generations == ab.b.generations == 1
