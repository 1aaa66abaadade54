"""A cheap live preview: project SD3's 16-channel latents to RGB with one small linear map.

Decoding with the VAE every step would cost as much as a denoising step; a 16x3 matrix times the
latent costs microseconds and is good enough to watch the composition appear.

What is previewed matters more than how: the latents x_t the pipeline holds mid-way are still mostly
noise (with SD3's shift of 3, sigma is about 0.75 half-way through), so the preview shows the
*predicted clean* latents x0_hat = x_t - sigma * v instead (`PredictedCleanLatents`), as the big web
UIs do. `tiny_autoencoder_preview` decodes them with TAESD3 (diffusers' `AutoencoderTiny`), opt-in.

The factors are ComfyUI's published SD3 table: `SD3.latent_rgb_factors` and
`SD3.latent_rgb_factors_bias` in comfyanonymous/ComfyUI, comfy/latent_formats.py
(https://github.com/comfyanonymous/ComfyUI/blob/040a3243468ecefd1f2802592d90458f1ce4d65f/comfy/latent_formats.py).
They apply to latents in the transformer's space, `(vae_latent - 0.0609) * 1.5305`, which is the
space diffusers' SD3 pipeline denoises in, and give RGB in [-1, 1].
"""

from __future__ import annotations

import torch
from PIL import Image

TAESD3_REPO = "madebyollin/taesd3"  # the tiny SD3 autoencoder's Hub repository (AutoencoderTiny, 16 latent channels)

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


def predicted_clean_latents(latents, next_latents, sigma, next_sigma) -> torch.Tensor:
    """x0_hat = x_t - sigma * v, with the velocity v recovered from one Euler step of the scheduler:
    next_latents = latents + (next_sigma - sigma) * v (flow matching: x_t = (1 - sigma) x0 + sigma eps,
    v = eps - x0). Computed in float32; on the last step (next_sigma = 0) it is `next_latents` itself."""
    sigma, next_sigma = float(sigma), float(next_sigma)
    if not sigma > next_sigma:
        raise ValueError(f"one denoising step lowers sigma: got sigma {sigma} then {next_sigma}.")
    if latents.shape != next_latents.shape:
        raise ValueError(f"latents before and after the step differ in shape: {tuple(latents.shape)} "
                         f"and {tuple(next_latents.shape)}.")
    x, x_next = latents.detach().float(), next_latents.detach().to(latents.device, torch.float32)
    velocity = (x_next - x) / (next_sigma - sigma)
    return x - sigma * velocity


class PredictedCleanLatents:
    """x0_hat for each denoising step of an SD3 pipeline, without a second transformer call.

    Open it around the pipeline call (`with PredictedCleanLatents(pipe) as clean:`), then in the step
    callback `clean(latents)` gives x0_hat. The step callback only gets x_{i+1}; a forward pre-hook on
    the transformer keeps x_i (the latents it was just given), and the scheduler holds the sigmas."""

    def __init__(self, pipe):
        for name in ("transformer", "scheduler"):
            if getattr(pipe, name, None) is None:
                raise ValueError(f"PredictedCleanLatents needs an SD3 pipeline with a {name}; this one has none "
                                 "(was it released? load it again).")
        self.pipe = pipe
        self._latents = None  # x_i: what the transformer was given on the current step
        self._hook = None

    def _remember(self, module, args, kwargs) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self._latents = hidden.detach().clone()  # with CFG, [x_i, x_i]: both halves are x_i

    def __enter__(self) -> PredictedCleanLatents:
        self._latents = None
        self._hook = self.pipe.transformer.register_forward_pre_hook(self._remember, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._hook is not None:
            self._hook.remove()
        self._hook = self._latents = None

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """x0_hat for the step that just made `latents` (the step callback's `latents`), in float32."""
        if self._hook is None or self._latents is None:
            raise RuntimeError("PredictedCleanLatents(pipe) must be open (a `with` block) around the pipeline call, "
                               "and be called from the step callback, after the transformer ran.")
        scheduler = self.pipe.scheduler
        step = scheduler.step_index  # already advanced past the step just taken
        sigma, next_sigma = scheduler.sigmas[step - 1], scheduler.sigmas[step]
        return predicted_clean_latents(self._latents[: latents.shape[0]], latents, sigma, next_sigma)


def check_tiny_autoencoder(decoder) -> None:
    """`decoder` must be diffusers' AutoencoderTiny for SD3's 16-channel latents (TAESD3)."""
    from diffusers import AutoencoderTiny

    if not isinstance(decoder, AutoencoderTiny):
        raise TypeError(f"the preview decoder must be diffusers' AutoencoderTiny, e.g. AutoencoderTiny.from_pretrained("
                        f"{TAESD3_REPO!r}), not {type(decoder).__name__}.")
    channels = decoder.config.latent_channels
    if channels != len(SD3_LATENT_RGB_FACTORS):
        raise ValueError(f"this AutoencoderTiny decodes {channels}-channel latents; SD3 has "
                         f"{len(SD3_LATENT_RGB_FACTORS)}: load {TAESD3_REPO!r} (taesd and taesdxl are for SD 1/2 and SDXL).")


def tiny_autoencoder_preview(decoder, latents: torch.Tensor, size: tuple[int, int] | None = None) -> Image.Image:
    """A full-resolution PIL preview of SD3 latents (transformer space) decoded by TAESD3.

    The latents are divided by the decoder's `scaling_factor` and not shifted, as TAESD3's model card
    sets it up for SD3 (`pipe.vae.config.shift_factor = 0.0`, https://huggingface.co/madebyollin/taesd3)."""
    check_tiny_autoencoder(decoder)
    if latents.dim() == 3:
        latents = latents[None]
    if latents.dim() != 4 or latents.shape[1] != decoder.config.latent_channels:
        raise ValueError(f"expected SD3 latents with {decoder.config.latent_channels} channels, got shape {tuple(latents.shape)}.")
    with torch.no_grad():
        z = latents[:1].detach().to(decoder.device, decoder.dtype) / decoder.config.scaling_factor
        rgb = decoder.decode(z, return_dict=False)[0][0]  # (3, H, W), in [-1, 1]
        pixels = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu()
    image = Image.fromarray(pixels.numpy(), "RGB")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BILINEAR)
    return image
