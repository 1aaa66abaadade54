"""A cheap live preview: project SD3's 16-channel latents to RGB with one small linear map.

Decoding with the VAE every step would cost as much as a denoising step; a 16x3 matrix times the
latent costs microseconds and is good enough to watch the composition appear.

The factors are ComfyUI's published SD3 table: `SD3.latent_rgb_factors` and
`SD3.latent_rgb_factors_bias` in comfyanonymous/ComfyUI, comfy/latent_formats.py
(https://github.com/comfyanonymous/ComfyUI/blob/040a3243468ecefd1f2802592d90458f1ce4d65f/comfy/latent_formats.py).
They apply to latents in the transformer's space, `(vae_latent - 0.0609) * 1.5305`, which is the
space diffusers' SD3 pipeline denoises in, and give RGB in [-1, 1].
"""

from __future__ import annotations

import torch
from PIL import Image

# One row per latent channel: its (R, G, B) contribution. Source: see the module docstring.
SD3_LATENT_RGB_FACTORS = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_LATENT_RGB_BIAS = (0.2394, 0.2135, 0.1925)


def latents_to_rgb(latents: torch.Tensor) -> torch.Tensor:
    """(1, 16, h, w) or (16, h, w) latents -> (h, w, 3) uint8 RGB on the CPU, one pixel per latent."""
    if latents.dim() == 4:
        latents = latents[0]
    if latents.dim() != 3 or latents.shape[0] != len(SD3_LATENT_RGB_FACTORS):
        raise ValueError(
            f"expected SD3 latents with {len(SD3_LATENT_RGB_FACTORS)} channels, got shape {tuple(latents.shape)}."
        )
    with torch.no_grad():
        x = latents.detach().to("cpu", torch.float32).permute(1, 2, 0)  # (h, w, 16)
        factors = torch.tensor(SD3_LATENT_RGB_FACTORS)
        bias = torch.tensor(SD3_LATENT_RGB_BIAS)
        rgb = x @ factors + bias  # [-1, 1]
        return ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8)


def latent_preview(latents: torch.Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """A PIL preview of SD3 latents, resized to `size` (width, height, pixels) if given.

    The latent grid is 8x smaller than the image: at 1024x1024 it is 128x128 pixels."""
    image = Image.fromarray(latents_to_rgb(latents).numpy(), "RGB")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BILINEAR)
    return image
