import pytest
import torch

from helpers.generation.latent_preview import (
    SD3_LATENT_RGB_BIAS,
    SD3_LATENT_RGB_FACTORS,
    latent_preview,
    latents_to_rgb,
)


def test_zero_latents_give_the_bias_colour():
    rgb = latents_to_rgb(torch.zeros(1, 16, 4, 6))
    assert rgb.shape == (4, 6, 3) and rgb.dtype == torch.uint8
    expected = [round((b + 1) * 127.5) for b in SD3_LATENT_RGB_BIAS]
    assert [int(v) for v in rgb[0, 0]] == pytest.approx(expected, abs=1)


def test_each_channel_contributes_its_row_of_factors():
    latents = torch.zeros(16, 2, 2)
    latents[2] = 1.0  # channel 2 is the reddest row of the table
    rgb = latents_to_rgb(latents)[0, 0].float()
    expected = [(f + b + 1) * 127.5 for f, b in zip(SD3_LATENT_RGB_FACTORS[2], SD3_LATENT_RGB_BIAS, strict=True)]
    assert rgb.tolist() == pytest.approx(expected, abs=1)
    assert rgb[0] > rgb[1] > rgb[2]


def test_preview_is_one_pixel_per_latent_or_resized():
    latents = torch.randn(1, 16, 8, 12, dtype=torch.bfloat16)
    assert latent_preview(latents).size == (12, 8)
    assert latent_preview(latents, size=(96, 64)).size == (96, 64)


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="16 channels"):
        latents_to_rgb(torch.zeros(1, 4, 8, 8))
