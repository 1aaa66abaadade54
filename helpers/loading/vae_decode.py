"""How the VAE decodes: in tiles that really tile, and in float32 when float16 overflows.

- **Tiles.** `vae.enable_tiling()` alone does nothing for SD3.5 at 1024x1024: the tile size comes from
  the config's `sample_size` (1024 px, a 128-latent tile) and diffusers tiles only a latent strictly
  larger than that. `enable_vae_tiling` sets 512 px tiles (64 latents, a quarter overlapping, the size
  SD's VAEs were trained on), so a 1024x1024 decode runs as 3x3 tiles and holds one tile's activations.
- **Precision.** SD3's VAE decodes in the pipeline's dtype: float16 on a T4. SD3 Medium's and SD3.5's
  published examples load the whole pipeline in float16, VAE included (the same VAE), and diffusers'
  SD3 pipeline never upcasts it (its config's `force_upcast` is AutoencoderKL's default, which only
  SDXL's pipeline reads). Random weights cannot show an overflow, so the VAE stays in float16 and
  `generate` names the VAE when it does overflow; `upcast_vae` is the fix it names (0.16 GiB more
  weights, and a decode twice as large: tile it on a small GPU).
"""

from __future__ import annotations

import torch

VAE_TILE_PIXELS = 512  # tile side in pixels; the latent tile is this / the VAE's scale factor (8)
VAE_TILE_OVERLAP = 0.25  # diffusers' default overlap, blended to hide the seams


def enable_vae_tiling(vae, tile_pixels: int = VAE_TILE_PIXELS) -> None:
    """Make `vae` (an `AutoencoderKL`) decode in `tile_pixels` tiles whenever the image is larger."""
    _check_vae(vae, "enable_vae_tiling", "its vae: enable_vae_tiling(pipe.vae)")
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if isinstance(tile_pixels, bool) or not isinstance(tile_pixels, int) or tile_pixels < scale or tile_pixels % scale:
        raise ValueError(f"tile_pixels must be a positive multiple of {scale} pixels, not {tile_pixels!r}.")
    vae.enable_tiling()
    vae.tile_sample_min_size = tile_pixels
    vae.tile_latent_min_size = tile_pixels // scale
    vae.tile_overlap_factor = VAE_TILE_OVERLAP


def _cast_to_own_dtype(module, args):
    """Forward pre-hook: the pipeline hands the VAE half-precision latents; cast them to its dtype."""
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def upcast_vae(pipe) -> bool:
    """Run `pipe.vae` in float32 (SDXL's `upcast_vae`, for SD3); returns False if it already was.
    The decoder casts the half-precision latents the pipeline hands it, tiled or not."""
    _check_vae(getattr(pipe, "vae", None) if hasattr(pipe, "components") else pipe, "upcast_vae",
               "a loaded pipeline: upcast_vae(pipe)")
    vae = pipe.vae
    if vae.dtype == torch.float32:
        return False
    vae.float()  # nn.Module.float: diffusers' .to(dtype) warns about an empty keep-in-fp32 list
    for part in (vae.decoder, vae.post_quant_conv):
        if part is not None:
            part.register_forward_pre_hook(_cast_to_own_dtype)
    return True


def _check_vae(vae, caller: str, what: str) -> None:
    """`vae` must be a loaded VAE (one clear error for None, a string or a released pipeline's)."""
    if vae is None or not hasattr(vae, "enable_tiling") or not hasattr(vae, "config"):
        raise TypeError(f"{caller} needs {what}, not {type(vae).__name__} {vae!r:.60} (a released pipeline has "
                        "no VAE: load it again).")
