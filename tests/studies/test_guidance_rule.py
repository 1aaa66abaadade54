"""The guidance rule on synthetic data whose right answer is known by construction."""

import math

import numpy as np
import pytest

from helpers.studies.guidance_rule import choose_guidance, seeds_needed, split_seeds
from helpers.studies.stats import detectable_effect, holm, sign_flip_p_value

G = [1.0, 2.5, 3.5, 4.5, 5.0, 7.5, 10.0]


def _study(n_seeds, means, clip, noise=0.5, seed=0):
    """Scores: a per-seed offset (what the seed does to the composition) + the guidance's mean + noise."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 3, size=(n_seeds, 1))
    scores = offsets + np.array(means) + rng.normal(0, noise, size=(n_seeds, len(means)))
    clipped = np.tile(np.array(clip, dtype=float), (n_seeds, 1))
    return scores, clipped


# Adherence rises to a plateau at 4.5; 10 adheres best but clips 20 % of its pixels.
PLATEAU = [20, 25, 28, 30, 30, 30, 31]
CLIPS = [0.0, 0.0, 0.0, 0.01, 0.01, 0.03, 0.20]


def test_picks_the_start_of_the_plateau_and_never_the_clipping_value():
    scores, clipped = _study(32, PLATEAU, CLIPS)
    choice = choose_guidance(G, scores, clipped, max_clipped=0.05)
    assert choice.candidates == (2.5, 3.5, 4.5, 5.0, 7.5, 10.0)  # guidance 1 is CFG off: never a candidate
    assert choice.allowed == (2.5, 3.5, 4.5, 5.0, 7.5)  # 10 clips 20 % > 5 %
    assert choice.best in (4.5, 5.0, 7.5)  # the plateau: which one wins the mean is noise
    assert choice.chosen == 4.5  # 2.5 and 3.5 are 5 and 2 points below: significantly so
    assert choice.pick_could_tell and choice.confirmed
    assert choice.verdict().startswith("Confirmed on 16 held-out seeds")


def test_a_tighter_clipping_bound_moves_the_choice_down():
    scores, clipped = _study(32, PLATEAU, CLIPS)
    choice = choose_guidance(G, scores, clipped, max_clipped=0.005)
    assert choice.allowed == (2.5, 3.5) and choice.best == 3.5 and choice.chosen == 3.5
    assert choice.confirmation is None and choice.confirmed  # the best itself: clipping is all there is to check


def test_holm_adjusts_the_pick_half_comparisons_against_the_best():
    scores, clipped = _study(32, PLATEAU, CLIPS)
    choice = choose_guidance(G, scores, clipped)
    pick = list(choice.pick_seeds)
    b = G.index(choice.best)
    compared = [g for g in choice.allowed if g != choice.best]
    raw = [sign_flip_p_value(scores[pick, G.index(g)] - scores[pick, b]) for g in compared]
    k = {g: choice.candidates.index(g) for g in compared}
    assert [choice.p_raw[k[g]] for g in compared] == pytest.approx(raw)
    assert [choice.p_holm[k[g]] for g in compared] == pytest.approx(holm(raw))
    assert math.isnan(choice.p_raw[choice.candidates.index(10.0)])  # over the bound: not compared


def test_the_choice_is_made_on_one_half_and_checked_on_the_other():
    """2.5 equals the best on the pick rows (even) and is 5 points worse on the held-out rows (odd):
    the pick half chooses it, the held-out half refuses it."""
    scores, clipped = _study(32, [20, 30, 30, 30, 30, 30, 30], [0] * 7)
    scores[1::2, 1] -= 5
    choice = choose_guidance(G, scores, clipped)
    assert choice.pick_seeds == tuple(range(0, 32, 2)) and choice.confirm_seeds == tuple(range(1, 32, 2))
    assert choice.chosen == 2.5 and not choice.confirmed
    assert choice.confirmation.significant and choice.confirmation.mean_difference < -4
    assert choice.verdict().startswith("Not confirmed") and "held-out" in choice.verdict()


def test_held_out_clipping_over_the_bound_is_not_confirmed():
    scores, clipped = _study(32, PLATEAU, CLIPS)
    clipped[1::2, G.index(4.5)] = 0.3
    choice = choose_guidance(G, scores, clipped, max_clipped=0.05)
    assert choice.chosen == 4.5 and not choice.confirmed and "clipped 30.0 %" in choice.verdict()


def test_too_few_seeds_could_not_tell():
    """4 seeds: 2 per half, the smallest p is 0.5, so nothing can be significantly below the best;
    the rule falls back to the smallest value under the bound and says it could not tell."""
    scores, clipped = _study(4, PLATEAU, CLIPS)
    choice = choose_guidance(G, scores, clipped)
    assert choice.chosen == 2.5 and not choice.pick_could_tell and math.isinf(choice.pick_detectable)
    assert not choice.confirmed
    assert choice.verdict().startswith("Could not tell")


def test_power_is_holm_s_first_step():
    scores, clipped = _study(32, PLATEAU, CLIPS)
    choice = choose_guidance(G, scores, clipped)
    m = len(choice.allowed) - 1
    assert choice.pick_detectable == pytest.approx(detectable_effect(16, 0.05 / m))
    assert choice.confirm_detectable == pytest.approx(detectable_effect(16, 0.05))


def test_nothing_under_the_bound_chooses_nothing():
    scores, clipped = _study(8, PLATEAU, [0.5] * 7)
    choice = choose_guidance(G, scores, clipped)
    assert choice.chosen is None and choice.allowed == () and not choice.confirmed
    assert choice.verdict().startswith("No guidance value above 1 kept its clipped pixels under 5 %")


def test_seeds_needed_is_the_smallest_that_detects_the_effect():
    for effect, m in ((1.0, 1), (1.0, 4), (0.5, 4)):
        n = seeds_needed(effect, m)
        assert detectable_effect(n, 0.05 / m) <= effect < detectable_effect(n - 1, 0.05 / m)
    assert seeds_needed(1.0, 4) > seeds_needed(1.0, 1)
    with pytest.raises(ValueError, match="effect"):
        seeds_needed(0)


def test_split_needs_two_seeds():
    assert split_seeds(5) == ((0, 2, 4), (1, 3))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        split_seeds(1)


@pytest.mark.parametrize("change, error, match", [
    (dict(scores=[[1, 2]]), ValueError, "one column per guidance value"),
    (dict(clipped=[[0.0] * 7] * 3), ValueError, r"one row per seed \(4\)"),
    (dict(clipped=[[2.0] * 7] * 4), ValueError, "fractions of pixels"),
    (dict(max_clipped=0), ValueError, "max_clipped"),
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(guidance_values=[0.0, 1.0] + [1.0] * 5), ValueError, "CFG is off"),
    (dict(scores="high"), TypeError, "scores"),
])
def test_bad_input_gets_one_clear_error(change, error, match):
    arguments = {"guidance_values": G, "scores": [[1.0] * 7] * 4, "clipped": [[0.0] * 7] * 4, **change}
    with pytest.raises(error, match=match):
        choose_guidance(arguments.pop("guidance_values"), arguments.pop("scores"), arguments.pop("clipped"), **arguments)
