"""Bootstrap intervals and the paired sign-flip test, checked against cases with known answers."""

import math

import numpy as np
import pytest

from helpers.studies.guidance_rule import choose_guidance
from helpers.studies.stats import (
    bootstrap_mean_ci,
    describe,
    format_p,
    paired_comparison,
    sign_flip_p_value,
    smallest_possible_p_value,
    verdict,
)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.normal(0.3, 0.1, size=8)
    large = rng.normal(0.3, 0.1, size=800)
    mean_s, low_s, high_s = bootstrap_mean_ci(small)
    mean_l, low_l, high_l = bootstrap_mean_ci(large)
    assert low_s <= mean_s <= high_s and low_l <= mean_l <= high_l
    assert high_l - low_l < (high_s - low_s) / 3
    # 95% interval of a mean of 800 draws with sd 0.1: about +-1.96 * 0.1 / sqrt(800) = +-0.0069.
    assert (high_l - low_l) / 2 == pytest.approx(1.96 * 0.1 / math.sqrt(800), rel=0.15)


def test_bootstrap_is_reproducible_and_degenerate_cases_are_points():
    assert bootstrap_mean_ci([1, 2, 3, 4]) == bootstrap_mean_ci([1, 2, 3, 4])
    assert bootstrap_mean_ci([0.5]) == (0.5, 0.5, 0.5)
    assert bootstrap_mean_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2, 0.2))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_ci([0.1, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1, 2], confidence=95)
    with pytest.raises(ValueError, match="one b per a"):
        paired_comparison([1, 2, 3], [1, 2])


def test_exact_sign_flip_p_values():
    # All 5 differences positive: only the all-positive and all-negative patterns reach |mean|.
    assert sign_flip_p_value([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert smallest_possible_p_value(5) == pytest.approx(2 / 32)
    # Symmetric differences: the observed mean is 0, every pattern reaches it.
    assert sign_flip_p_value([1, -1, 2, -2]) == 1.0
    # d = (1, 1, -4), |sum| = 2: every pattern |±1 ±1 ±4| is 2 or more, so p = 1.
    assert sign_flip_p_value([1, 1, -4]) == 1.0
    # d = (1, 2, 4), |sum| = 7: only ±(1 + 2 + 4) reach 7 of the 8 patterns; 4 + 2 - 1 = 5 does not.
    assert sign_flip_p_value([1, 2, 4]) == pytest.approx(2 / 8)


def test_monte_carlo_sign_flips_agree_with_the_normal_approximation_for_many_pairs():
    rng = np.random.default_rng(2)
    d = rng.normal(0.0, 1.0, size=40)
    d = d - d.mean() + d.std(ddof=1) / math.sqrt(40) * 1.96  # z of about 1.96
    assert sign_flip_p_value(d) == pytest.approx(0.05, abs=0.02)


def test_paired_comparison_sees_a_consistent_shift_and_not_noise():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.2, 0.8, size=16)
    shifted = paired_comparison(a, a - 0.1 + rng.normal(0, 0.01, size=16))
    assert shifted.significant and shifted.ci_high < 0 and shifted.p_value < 0.001
    assert shifted.a_higher == 16 and shifted.b_higher == 0 and shifted.n == 16
    noise = paired_comparison(a, a + rng.normal(0, 0.05, size=16) * np.tile([1, -1], 8))
    assert noise.p_value > 0.05 and not noise.significant


def test_format_p():
    assert format_p(0.0312) == "p = 0.031"
    assert format_p(0.0001) == "p < 0.001"


def test_describe_and_verdict_read_the_comparison_and_the_reachable_floor():
    rng = np.random.default_rng(5)
    a = rng.uniform(0.2, 0.8, size=6)
    lowered = paired_comparison(a, a - 0.2)  # every seed lower: p is the floor 2 / 2**6
    assert lowered.p_value == pytest.approx(2 / 64)
    text = describe(lowered)
    assert text.startswith("-0.200 (95% CI [-0.200, -0.200], p = 0.031, 6 seeds;")
    assert text.endswith("the smallest p 6 seeds can reach: 0.031)")
    assert verdict(lowered, "fell", "rose") == "fell"
    assert verdict(paired_comparison(a, a + 0.2), "fell", "rose") == "rose"
    # Three seeds cannot reach p < 0.05: even a consistent shift is "no significant change".
    three = paired_comparison(a[:3], a[:3] - 0.2)
    assert three.p_value == pytest.approx(0.25) and verdict(three, "fell", "rose") == "no significant change"
    assert three.ci_high < 0  # while the bootstrap interval excludes 0: the verdict is the test's
    assert describe(three).endswith("the smallest p 3 seeds can reach: 0.250)")


@pytest.mark.parametrize("call, error, match", [
    (lambda: bootstrap_mean_ci("abc"), TypeError, "values must be a list of numbers, not str"),
    (lambda: bootstrap_mean_ci([1.0, "x"]), TypeError, "values must be a list of numbers"),
    (lambda: bootstrap_mean_ci([1.0, 2.0], resamples=0), ValueError, "resamples must be a whole number >= 1"),
    (lambda: bootstrap_mean_ci([1.0, 2.0], resamples=2.5), ValueError, "resamples must be a whole number"),
    (lambda: bootstrap_mean_ci([1.0, 2.0], confidence="95%"), ValueError, "confidence must be between 0 and 1"),
    (lambda: format_p("x"), TypeError, "p must be a p-value"),
    (lambda: format_p(None), TypeError, "p must be a p-value"),
])
def test_wrong_types_are_one_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call, error, match", [
    (lambda: bootstrap_mean_ci([1.0, 2.0], resamples=10**12), ValueError, "resamples must be a whole number from 1 to"),
    (lambda: bootstrap_mean_ci([1.0, 2.0], seed=-1), ValueError, "seed must be a whole number >= 0, not -1"),
    (lambda: bootstrap_mean_ci([1.0, 2.0], seed="x"), ValueError, "seed must be a whole number"),
    (lambda: sign_flip_p_value(np.linspace(-1, 2, 30), resamples=0), ValueError, "resamples must be a whole number"),
    (lambda: sign_flip_p_value(np.linspace(-1, 2, 30), resamples=-5), ValueError, "resamples must be a whole number"),
    (lambda: sign_flip_p_value(np.linspace(-1, 2, 30), resamples="x"), ValueError, "resamples must be a whole number"),
    (lambda: format_p(-0.1), ValueError, "p must be a p-value between 0 and 1"),
    (lambda: format_p(1.5), ValueError, "p must be a p-value between 0 and 1"),
    (lambda: format_p(math.inf), ValueError, "p must be a p-value between 0 and 1"),
    (lambda: choose_guidance(["a", "b"], [[1, 2]], [[0, 0]]), TypeError, "guidance_values must be a list of finite numbers"),
    (lambda: choose_guidance([2, 3], [["x", "y"]], [[0, 0]]), TypeError, "scores must be one row of numbers per seed"),
])
def test_out_of_range_resamples_seeds_p_values_and_text_guidance_are_one_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_holm_matches_the_hand_computed_step_down():
    from helpers.studies.stats import holm

    # sorted p: 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (made non-decreasing), back in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # a large p caps at 1 and a later, smaller product is lifted to the running maximum
    assert holm([0.6, 0.001]) == pytest.approx([0.6, 0.002])
    assert holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        holm([0.5, 1.5])


def test_detectable_effect_by_hand_and_when_the_test_cannot_reach_alpha():
    from helpers.studies.stats import detectable_effect

    # (1.959964 + 0.841621) / sqrt(16) = 0.70040
    assert detectable_effect(16) == pytest.approx(0.70040, abs=1e-4)
    assert detectable_effect(64) == pytest.approx(detectable_effect(16) / 2)
    # 5 pairs: the smallest reachable p is 2/32 = 0.0625 > 0.05, so nothing is detectable
    assert detectable_effect(5) == math.inf
    assert detectable_effect(6) < math.inf
    # simulated: at the returned effect a z-test on n pairs rejects about 80% of the time
    rng = np.random.default_rng(0)
    n, d = 25, detectable_effect(25)
    z = rng.normal(d, 1, size=(20000, n)).mean(axis=1) * math.sqrt(n)
    assert abs((np.abs(z) > 1.959964).mean() - 0.8) < 0.015
    with pytest.raises(ValueError):
        detectable_effect(16, alpha=1.5)
