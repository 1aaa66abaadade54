"""Class 9: quantization_backends refuses nonsense numbers instead of returning them: an image size
that is no multiple of 16, a reference of norm 0, shapes that only broadcast, images of two sizes."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from helpers.loading import quantization_backends as backends


@given(size=st.integers(-64, 4096).filter(lambda s: s < 16 or s % 16))
def test_forward_inputs_refuses_a_size_the_transformer_cannot_take(size):
    with pytest.raises(ValueError, match="size must be .* multiple of 16"):
        backends.forward_inputs("large", size, dtype=torch.bfloat16, device="meta")


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), scale=st.floats(0.1, 10))
def test_relative_error_refuses_a_zero_reference_and_broadcast_shapes(shape, scale):
    output = torch.full(shape, scale)
    with pytest.raises(ValueError, match="finite, nonzero reference"):
        backends.relative_error(output, torch.zeros(shape))
    with pytest.raises(ValueError, match="one shape"):
        backends.relative_error(output, torch.ones(*shape, 2))
    assert backends.relative_error(output, output) == 0.0


@given(side=st.integers(1, 63))
def test_image_difference_refuses_images_of_two_sizes(side):
    with pytest.raises(ValueError, match="one size and mode"):
        backends.image_difference(Image.new("RGB", (64, 64)), Image.new("RGB", (side, side), "white"))
    assert backends.image_difference(Image.new("RGB", (side, side)), Image.new("RGB", (side, side), "white")) == 255.0


@given(bad=st.one_of(st.none(), st.text(max_size=10), st.integers(), st.builds(object)))
def test_vae_helpers_refuse_what_is_not_a_loaded_vae(bad):
    from helpers.loading.vae_decode import enable_vae_tiling, upcast_vae

    with pytest.raises(TypeError, match="enable_vae_tiling needs its vae"):
        enable_vae_tiling(bad)
    with pytest.raises(TypeError, match="upcast_vae needs a loaded pipeline"):
        upcast_vae(bad)


def test_vae_helpers_refuse_a_released_pipeline(tiny_dir):
    import helpers
    from helpers.loading.vae_decode import enable_vae_tiling, upcast_vae

    pipe = helpers.load_pipeline("tiny", keep_previous=True)
    vae = pipe.vae
    helpers.release_pipeline(pipe)
    with pytest.raises(TypeError, match="released pipeline has no VAE"):
        upcast_vae(pipe)
    with pytest.raises(TypeError, match="released pipeline has no VAE"):
        enable_vae_tiling(pipe.vae)
    enable_vae_tiling(vae)  # the VAE object itself, kept by the reader, still tiles
