"""Shared helpers for the Stable Diffusion 3.5 notebooks.

Importing this package changes nothing global (no seeds, no plotting styles, no warnings filters).
"""

from .errors import (
    GatedModelError,
    GenerationCancelled,
    GPUOutOfMemoryError,
    NonFiniteImageError,
    QuantizationNeedsGPUError,
)
from .generation.prompt_embeddings import PromptCache, PromptEmbeddings, encode_prompt
from .generation.text_to_image import GenerationResult, generate, recipe_arguments
from .loading.hardware_profiles import (
    PROFILES,
    HardwareProfile,
    colab_t4_plan,
    fitting_plan,
    get_profile,
    on_profile,
    profile_plans,
)
from .loading.hub_access import find_token
from .loading.load import load_pipeline, release_current_pipeline, release_pipeline
from .loading.memory_model import Census, loaded_bytes, pipeline_bytes, working_bytes
from .loading.planner import LoadingPlan, model_id, plan_loading, use_stand_in
from .loading.presets import PRESETS, Preset, Recommendation, get_preset
from .loading.quantized_checkpoints import save_quantized
from .measuring import PeakMemory, Stopwatch, component_footprints, format_bytes
from .studies.clip_score import ClipScorer, clip_model_id
from .studies.grids import image_grid, xy_grid
from .studio.ab import ABStudio
from .studio.view import Studio

__all__ = [
    "ABStudio",
    "ClipScorer",
    "PRESETS",
    "PROFILES",
    "GatedModelError",
    "GenerationCancelled",
    "GenerationResult",
    "GPUOutOfMemoryError",
    "HardwareProfile",
    "Census",
    "LoadingPlan",
    "NonFiniteImageError",
    "PeakMemory",
    "Preset",
    "PromptCache",
    "PromptEmbeddings",
    "QuantizationNeedsGPUError",
    "Recommendation",
    "Stopwatch",
    "Studio",
    "clip_model_id",
    "colab_t4_plan",
    "component_footprints",
    "encode_prompt",
    "find_token",
    "fitting_plan",
    "format_bytes",
    "generate",
    "get_preset",
    "get_profile",
    "image_grid",
    "load_pipeline",
    "loaded_bytes",
    "model_id",
    "on_profile",
    "pipeline_bytes",
    "plan_loading",
    "profile_plans",
    "recipe_arguments",
    "save_quantized",
    "release_current_pipeline",
    "release_pipeline",
    "use_stand_in",
    "working_bytes",
    "xy_grid",
]
