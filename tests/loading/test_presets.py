"""Presets: the recommended settings and their sources."""

import pytest

from helpers.loading.presets import PRESETS, get_preset


def test_model_card_and_blog_values():
    card = {name: (p.model_card.guidance_scale, p.model_card.num_inference_steps) for name, p in PRESETS.items()}
    assert card["sd35-large"] == (3.5, 28)
    assert card["sd35-large-nf4"] == (3.5, 28)
    assert card["sd35-medium"] == (4.5, 40)
    assert card["sd35-large-turbo"] == (0.0, 4)
    assert PRESETS["sd35-large"].blog.guidance_scale == 2.5
    assert PRESETS["sd35-large-nf4"].blog.guidance_scale == 7.5
    assert PRESETS["sd35-medium"].blog.guidance_scale == 5.0
    for preset in PRESETS.values():
        assert preset.model_card.source
        assert preset.blog is None or "blog" in preset.blog.source.lower()
        # The blog gives guidance values only: no steps are attributed to it.
        assert preset.blog is None or preset.blog.num_inference_steps is None


def test_quantization_per_preset():
    assert PRESETS["sd35-large-nf4"].quantization == "nf4"
    assert PRESETS["sd35-large-8bit"].quantization == "int8"
    assert PRESETS["sd35-large"].quantization is None
    assert all(p.gated for name, p in PRESETS.items() if name != "tiny")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="sd35-large-nf4") as info:
        get_preset("sd35-huge")
    assert "sd35-huge" in str(info.value)


def test_every_real_preset_has_its_full_size_census():
    from helpers.loading.architectures import PRESET_FAMILY

    for name, preset in PRESETS.items():
        if name == "tiny":
            assert preset.census == {}
            continue
        assert preset.family == PRESET_FAMILY[name]
        assert set(preset.census) == {"transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"}


def test_large_turbo_in_nf4_runs_on_the_free_t4_with_the_turbo_model_card_values():
    from helpers.loading.hardware_profiles import get_profile, plan_on
    from helpers.loading.presets import LARGE_TURBO

    turbo = PRESETS["sd35-large-turbo-nf4"]
    assert (turbo.repo_id, turbo.quantization, turbo.family) == (LARGE_TURBO, "nf4", "large")
    assert turbo.model_card == PRESETS["sd35-large-turbo"].model_card  # 4 steps, no CFG: the Turbo card's
    t4 = get_profile("free Colab T4")
    assert not plan_on(t4, "sd35-large-turbo").fits
    plan = plan_on(t4, "sd35-large-turbo-nf4")
    assert plan.fits and plan.t5 == "staged"  # Turbo with T5, on the T4
    # The bf16 Turbo points to the NF4 Turbo (the same model), not to Large.
    assert plan_on(t4, "sd35-large-turbo").would_fit["model"] == "sd35-large-turbo-nf4"
