"""The models this collection teaches, with where their recommended settings come from.

Each preset is one loading plan (which repository, which quantization) plus two sets of
recommended `guidance_scale`/steps: the model card's, and the values Stability AI's blog used.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from .local_folders import check_local_source

LARGE = "stabilityai/stable-diffusion-3.5-large"
MEDIUM = "stabilityai/stable-diffusion-3.5-medium"
LARGE_TURBO = "stabilityai/stable-diffusion-3.5-large-turbo"

# Published parameter counts (model cards / the SD3.5 release), used to plan memory before any
# weights are downloaded. The text encoders and the VAE are shared by every SD3.5 model.
SHARED_PARAMETERS = {
    "text_encoder": 0.12e9,  # CLIP-L/14 with projection
    "text_encoder_2": 0.69e9,  # OpenCLIP bigG/14 with projection
    "text_encoder_3": 4.76e9,  # T5-XXL v1.1 encoder
    "vae": 0.08e9,  # 16-channel AutoencoderKL
}
LARGE_TRANSFORMER = 8.1e9  # MMDiT, 38 blocks x 2432 wide
MEDIUM_TRANSFORMER = 2.5e9  # MMDiT-X, 24 blocks x 1536 wide


@dataclass(frozen=True)
class Recommendation:
    """A recommended `guidance_scale` and `num_inference_steps`, with where it comes from."""

    guidance_scale: float
    num_inference_steps: int | None  # None: the source gives a guidance value only
    source: str


@dataclass(frozen=True)
class Preset:
    """One model and one way to load it."""

    name: str
    title: str
    repo_id: str | None  # None: the offline stand-in, built locally by helpers.stand_in
    quantization: str | None  # None (full precision), "nf4" or "int8"; applies to the transformer
    gated: bool
    default_size: int  # pixels, square
    model_card: Recommendation
    blog: Recommendation | None = None
    parameters: dict = field(default_factory=dict)  # component -> published parameter count
    family: str | None = None  # architecture ("large", "medium"): exact bytes in memory_model.FULL_SIZE

    @property
    def census(self) -> dict:
        """component -> memory_model.Census of the full-size architecture ({} for the stand-in)."""
        from .memory_model import FULL_SIZE

        return FULL_SIZE.get(self.family, {})

    @property
    def recommended(self) -> Recommendation:
        """The model card's values: what `generate` uses when none are given."""
        return self.model_card


_LARGE_CARD = Recommendation(3.5, 28, "model card (stabilityai/stable-diffusion-3.5-large)")
# Large Turbo is distilled for few steps without classifier-free guidance: its model card's diffusers
# example runs num_inference_steps=4, guidance_scale=0.0. The NF4 preset quantizes the same weights
# (as the Large NF4 preset does Large's), so the card's values hold for both.
_TURBO_CARD = Recommendation(0.0, 4, "model card (stabilityai/stable-diffusion-3.5-large-turbo)")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "sd35-large",
            "SD3.5 Large (bf16)",
            LARGE,
            None,
            True,
            1024,
            _LARGE_CARD,
            Recommendation(2.5, None, "Stability AI blog (guidance only)"),
            {"transformer": LARGE_TRANSFORMER, **SHARED_PARAMETERS},
            "large",
        ),
        Preset(
            "sd35-large-nf4",
            "SD3.5 Large, transformer in 4-bit NF4",
            LARGE,
            "nf4",
            True,
            1024,
            _LARGE_CARD,
            Recommendation(7.5, None, "Stability AI blog (guidance only)"),
            {"transformer": LARGE_TRANSFORMER, **SHARED_PARAMETERS},
            "large",
        ),
        Preset(
            "sd35-large-8bit",
            "SD3.5 Large, transformer in 8-bit",
            LARGE,
            "int8",
            True,
            1024,
            _LARGE_CARD,
            None,
            {"transformer": LARGE_TRANSFORMER, **SHARED_PARAMETERS},
            "large",
        ),
        Preset(
            "sd35-medium",
            "SD3.5 Medium (bf16)",
            MEDIUM,
            None,
            True,
            1024,
            Recommendation(4.5, 40, "model card (stabilityai/stable-diffusion-3.5-medium)"),
            Recommendation(5.0, None, "Stability AI blog (guidance only)"),
            {"transformer": MEDIUM_TRANSFORMER, **SHARED_PARAMETERS},
            "medium",
        ),
        Preset(
            "sd35-large-turbo",
            "SD3.5 Large Turbo (bf16, distilled: no CFG)",
            LARGE_TURBO,
            None,
            True,
            1024,
            _TURBO_CARD,
            None,
            {"transformer": LARGE_TRANSFORMER, **SHARED_PARAMETERS},
            "large",
        ),
        Preset(
            "sd35-large-turbo-nf4",
            "SD3.5 Large Turbo, transformer in 4-bit NF4 (distilled: no CFG)",
            LARGE_TURBO,
            "nf4",
            True,
            1024,
            _TURBO_CARD,
            None,
            {"transformer": LARGE_TRANSFORMER, **SHARED_PARAMETERS},
            "large",
        ),
        Preset(
            "tiny",
            "Offline stand-in (random weights, images are noise)",
            None,
            None,
            False,
            64,
            Recommendation(3.5, 4, "stand-in default: few steps so it runs in well under a second"),
        ),
    ]
}


def get_preset(name: str) -> Preset:
    """Return the preset called `name`, or raise a ValueError that lists the known ones."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        known = ", ".join(PRESETS)
        close = difflib.get_close_matches(name, PRESETS, n=1) if isinstance(name, str) else []
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown model preset {name!r}.{hint} Use one of: {known}; or a Hub id such as "
            f"'{LARGE}', or a local folder saved with save_pretrained."
        ) from None


def resolve_preset(model: str) -> Preset:
    """A preset by name; a Hub id or local folder becomes an ad-hoc full-precision preset."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a preset name, a Hub id or a folder, not {model!r}.")
    if model in PRESETS:
        return PRESETS[model]
    looks_like_repo = model.count("/") == 1 and not model.startswith((".", "/"))
    if check_local_source(model) or looks_like_repo:  # a local folder is checked: what is missing, if anything
        base = PRESETS["sd35-large"]
        return Preset(model, model, model, None, False, base.default_size, base.model_card)
    return get_preset(model)  # raises the "unknown preset" error
