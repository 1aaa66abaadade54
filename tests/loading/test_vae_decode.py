"""The VAE: tiles that really tile (diffusers' defaults never tile SD3.5 at its own size), costed
per tile by the planner; and float32 when a float16 decode overflows."""

import pytest
import torch

import helpers
from helpers.errors import NonFiniteImageError
from helpers.loading import memory_model
from helpers.loading.hardware_profiles import get_profile, plan_on
from helpers.loading.vae_decode import VAE_TILE_PIXELS, enable_vae_tiling, upcast_vae


def decoder_calls(pipe) -> list[tuple]:
    """The latent shape of every call of the VAE's decoder (one per tile when it tiles)."""
    calls = []
    pipe.vae.decoder.register_forward_hook(lambda module, args, output: calls.append(tuple(args[0].shape[-2:])))
    return calls


def widest_activation(pipe) -> list[int]:
    """The largest tensor any decoder layer outputs, per generation (what the decode's memory scales with)."""
    sizes = []
    for module in pipe.vae.decoder.modules():
        module.register_forward_hook(lambda m, a, output: sizes.append(output.numel()) if torch.is_tensor(output) else None)
    return sizes


def test_diffusers_default_tiling_does_not_tile_at_the_vaes_own_size(tiny_pipe):
    # The stand-in's VAE config says sample_size=64, as SD3.5's says 1024: its default tile is the
    # whole 64 px image, and diffusers tiles only a strictly larger latent, so nothing is tiled.
    size = tiny_pipe.vae.config.sample_size
    calls = decoder_calls(tiny_pipe)
    tiny_pipe.vae.enable_tiling()
    helpers.generate(tiny_pipe, "a cat", num_inference_steps=1, height=size, width=size)
    assert calls == [(size // 8, size // 8)]  # one decoder call on the whole latent


def test_vae_tiling_decodes_1024_in_512_pixel_tiles(tiny_dir):
    pipe = helpers.load_pipeline("tiny", vae_tiling=True)
    assert pipe.load_info.plan.vae_tiling and pipe.vae.use_tiling
    calls, sizes = decoder_calls(pipe), widest_activation(pipe)
    image = helpers.generate(pipe, "a cat", num_inference_steps=1, height=1024, width=1024).image
    assert image.size == (1024, 1024)
    assert len(calls) == 9 and max(max(c) for c in calls) == VAE_TILE_PIXELS // 8  # 3 x 3 tiles of 64 latents
    tiled = max(sizes)
    pipe.vae.disable_tiling()
    sizes.clear()
    helpers.generate(pipe, "a cat", num_inference_steps=1, height=1024, width=1024)
    # The decoder's widest activation shrinks with the tile's area, as memory_model.working_bytes counts it.
    assert tiled * 4 == max(sizes)


def test_tile_size_is_checked():
    pipe = helpers.load_pipeline("tiny")
    with pytest.raises(ValueError, match="tile_pixels must be a positive multiple of 8"):
        enable_vae_tiling(pipe.vae, 500)
    with pytest.raises(ValueError, match="vae_tiling must be True or False"):
        helpers.load_pipeline("tiny", vae_tiling="yes")


def test_a_float16_vae_overflow_is_named_and_upcast_vae_fixes_it(tiny_dir):
    pipe = helpers.load_pipeline("tiny", dtype=torch.float16)
    assert pipe.vae.dtype == torch.float16  # SD3's published float16 path: the VAE is not upcast
    with torch.no_grad():  # large but representable weights: their sums overflow float16, not float32
        pipe.vae.decoder.conv_in.weight.fill_(60000.0)
    with pytest.raises(NonFiniteImageError, match="the VAE .*float16.*upcast_vae") as caught:
        helpers.generate(pipe, "a cat", num_inference_steps=1)
    assert caught.value.component == "vae"
    assert upcast_vae(pipe) is True and pipe.vae.dtype == torch.float32 and pipe.transformer.dtype == torch.float16
    image = helpers.generate(pipe, "a cat", num_inference_steps=1).image  # finite now: no error
    assert image.size == (64, 64)
    enable_vae_tiling(pipe.vae, 32)  # the upcast VAE casts each tile too
    assert helpers.generate(pipe, "a cat", num_inference_steps=1).image.size == (64, 64)
    assert upcast_vae(pipe) is False


def test_decode_memory_is_costed_per_tile():
    tiled, whole = (memory_model.working_bytes("large", 1024, torch.float16, "memory-efficient", vae_tile=t)
                    for t in (VAE_TILE_PIXELS, None))
    # Whole 1024x1024 decode: 5 x 256 channels x 1024^2 x 2 bytes = 2.5 GiB.
    assert whole == 5 * 256 * 1024**2 * 2
    # Tiled: one 512 px tile's activations (0.63 GiB, more than the transformer's step of 0.52 GiB),
    # plus the RGB tiles and rows kept until they are blended.
    tile = 5 * 256 * 512**2 * 2 + 4 * 3 * 1024**2 * 2
    assert tiled == tile
    assert memory_model.working_bytes("large", 512, torch.float16, "flash", vae_tile=512) == \
        memory_model.working_bytes("large", 512, torch.float16, "flash")  # no larger than a tile: not tiled


def test_on_the_free_t4_an_nf4_t5_fits_only_with_real_tiles():
    t4 = get_profile("free Colab T4")
    nf4_t5 = dict(model="sd35-large-nf4", quantize_t5=True, dtype=torch.float16, offload="none")
    tiled, untiled = plan_on(t4, **nf4_t5, vae_tiling=True), plan_on(t4, **nf4_t5)
    assert tiled.vae_tiling and tiled.fits and not untiled.fits
    assert untiled.working_bytes - tiled.working_bytes > 1.8 * 1024**3  # 2.5 GiB whole-image decode, 0.65 in tiles
    assert "vae_tiling" not in helpers.loading.hardware_profiles.colab_t4_plan()  # the T4 plan needs no tiles
