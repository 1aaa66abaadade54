"""The reader's time: the estimate's derivation, the default design's size, and what the clock prints."""

import json
import math
import re

import pytest

from helpers.loading.plan_benchmarks import GPU_RESULTS
from helpers.studies.timing import (
    T4,
    T4_BUDGET_S,
    Estimate,
    ReaderClock,
    describe_design,
    estimate,
    image_tokens,
    seeds_for_budget,
    study_design,
    study_estimate,
    t4_seconds_per_image,
)

H200 = json.loads((GPU_RESULTS / "nvidia-h200.json").read_text())


def h200_row(name):
    return next(r for r in H200["rows"] if r["plan"] == name)


def test_the_t4_estimate_is_the_h200_row_scaled_by_datasheet_flops():
    # NVIDIA's datasheets: H200 989 TFLOP/s dense bf16, T4 65 TFLOP/s fp16 tensor.
    assert t4_seconds_per_image() == pytest.approx(h200_row("NF4")["s_per_image"] * 989 / 65)
    assert 60 < t4_seconds_per_image() < 120  # a minute and a half per 1024² image: hours for 128
    bf16 = estimate("sd35-large", steps=14, height=1024, width=1024, device_name="NVIDIA H100 80GB HBM3")
    assert bf16.seconds_per_image == pytest.approx(h200_row("bf16")["s_per_image"] / 2)  # same peak, half the steps
    offload = estimate("sd35-large-nf4", offload="model", steps=28, height=1024, width=1024, device_name=T4)
    assert offload.seconds_per_image == pytest.approx(h200_row("NF4 + model CPU offload")["s_per_image"] * 989 / 65)


def test_smaller_images_scale_by_tokens_text_included():
    assert image_tokens(1024, 1024) == 64 * 64 + 333 and image_tokens(512, 768) == 32 * 48 + 333
    half = t4_seconds_per_image(size=512) / t4_seconds_per_image(size=1024)
    assert half == pytest.approx((1024 + 333) / (4096 + 333))  # not 1/4: the 333 text tokens stay


@pytest.mark.parametrize("kwargs, reason", [
    (dict(device_name=T4, stand_in=True), "the stand-in"),
    (dict(device_name=None), "no CUDA GPU"),
    (dict(device_name="Some Future GPU"), "no peak FLOP/s for Some Future GPU"),
])
def test_no_estimate_says_why(kwargs, reason):
    found = estimate("sd35-large-nf4", steps=28, height=1024, width=1024, **kwargs)
    assert found.seconds_per_image is None and found.source.startswith(reason)


def test_no_estimate_for_a_plan_never_measured():
    found = estimate("sd35-medium", steps=28, height=1024, width=1024, device_name=T4)
    assert found == Estimate(None, "no H200 row for sd35-medium with offload='none'")
    jobs = [dict(model=m, num_inference_steps=28, height=512, width=512) for m in ("sd35-large-nf4", "sd35-medium")]
    assert study_estimate(jobs, stand_in=False).seconds_per_image is None


def test_the_default_design_fills_twenty_t4_minutes_and_never_drops_below_six_seeds():
    at_512 = t4_seconds_per_image(size=512)
    assert seeds_for_budget(4, at_512) == math.floor(T4_BUDGET_S / (4 * at_512)) >= 6
    assert seeds_for_budget(8, 1e6) == 6  # six is the fewest that can reach p < 0.05
    assert seeds_for_budget(8, 1.0) == 150
    with pytest.raises(ValueError, match="seconds_per_image"):
        seeds_for_budget(8, 0)


def test_the_clock_says_count_and_time_first_then_what_it_measured(capsys):
    lines = []
    clock = ReaderClock("study", 4, Estimate(30.0, "a stated source"), processes=2, echo=lines.append)
    assert lines == ["study: 4 images over 2 processes, estimated 60 s here (30.0 s per image: a stated source)."]
    for seconds in (10.0, math.nan, 20.0, 30.0):  # NaN: an image found on disk, not made again
        clock.tick(seconds)
    assert len(lines) == 1  # with an estimate, no projection from the first image
    clock.close()
    assert lines[-1].startswith("study: 4 images in ") and lines[-1].endswith(
        ", 20.0 s per image measured (estimated 30.0).")
    assert "4/4" in capsys.readouterr().err

    lines.clear()
    clock = ReaderClock("sweep", 3, Estimate(None, "no GPU: no measured figure to scale"), echo=lines.append)
    clock.tick(100.0)
    assert lines == ["sweep: 3 images. No estimate before the first image (no GPU: no measured figure to scale); "
                     "its measured time gives one.",
                     "First image measured: 100.0 s, so about 3 min for the other 2 (the bar's ETA follows the "
                     "measured rate)."]
    clock.close()


def test_designs_say_what_they_can_detect():
    from helpers.studies.stats import detectable_effect

    quick = study_design("quick", 8)
    seeds = seeds_for_budget(8, t4_seconds_per_image(size=512))
    assert (quick["size"], quick["seeds"], quick["images"]) == (512, seeds, 8 * seeds)
    assert quick["t4_seconds"] < T4_BUDGET_S * 1.1 or seeds == 6  # about 20 minutes (6 seeds at the least)
    assert quick["t4_seconds"] == pytest.approx(8 * seeds * t4_seconds_per_image(size=512))
    assert quick["smallest_p"] == 2 / 2**seeds and quick["detectable"] == detectable_effect(seeds)
    full = study_design("full", 8)
    assert (full["size"], full["seeds"], full["images"]) == (1024, 16, 128)  # notebook 05's old default
    six = study_design("quick", 8, seeds=6)
    assert re.fullmatch(r"the quick design: 512², 6 seeds, 48 images, about \d+ min on a free T4; its smallest "
                        r"reachable p is 0\.031, and it detects a paired effect of 1\.14 SD or more 80% of the time",
                        describe_design(six))
    assert study_design("quick", 8, seeds=3)["smallest_p"] == 0.25  # N_SEEDS overrides the seeds, said so
    assert describe_design(study_design("quick", 8, seeds=3)).endswith(
        "p is 0.25, and too few seeds to detect any effect at p < 0.05")
    assert re.search(r"about \d\.\d h on a free T4; its smallest reachable p is 3\.1e-05", describe_design(full))
    with pytest.raises(ValueError, match="design must be one of 'quick', 'full'"):
        study_design("fast", 8)


def test_a_study_is_estimated_with_the_plan_the_planner_makes_on_that_gpu():
    """On a free T4 (device queries faked, the real planner): NF4 has an H200 row for its plan; bf16 Large
    does not fit there, so there is no estimate and the reason says why."""
    from unittest import mock

    import torch

    from helpers.loading.hardware_profiles import get_profile, on_profile, plan_on

    nf4 = [dict(model="sd35-large-nf4", num_inference_steps=28, height=512, width=512)] * 2
    with on_profile(get_profile("free Colab T4")), mock.patch.object(torch.cuda, "get_device_name", lambda *_: T4):
        found = study_estimate(nf4, stand_in=False)
        both = study_estimate(nf4 + [dict(nf4[0], model="sd35-large")], stand_in=False)
    bf16 = plan_on(get_profile("free Colab T4"), "sd35-large", size=(512, 512))
    assert plan_on(get_profile("free Colab T4"), "sd35-large-nf4", size=(512, 512)).offload == "none"
    assert found.seconds_per_image == pytest.approx(t4_seconds_per_image(size=512))
    assert not bf16.fits and both == Estimate(None, f"sd35-large does not fit this machine (the planner: {bf16.reason})")
