"""Shared helpers for the Stable Diffusion 3.5 notebooks.

Importing this package changes nothing global (no seeds, no plotting styles, no warnings filters).
"""

from .clip_score import ClipScorer, clip_model_id
from .errors import (
    GatedModelError,
    GenerationCancelled,
    GPUOutOfMemoryError,
    NonFiniteImageError,
    QuantizationNeedsGPUError,
)
from .generation import GenerationResult, generate, recipe_arguments
from .grids import image_grid, xy_grid
from .hardware_profiles import (
    PROFILES,
    HardwareProfile,
    colab_t4_plan,
    fitting_plan,
    get_profile,
    on_profile,
    profile_plans,
)
from .hf_token import find_token
from .loading import (
    LoadingPlan,
    load_pipeline,
    model_id,
    plan_loading,
    release_current_pipeline,
    release_pipeline,
    use_stand_in,
)
from .memory import PeakMemory, Stopwatch, component_footprints, format_bytes
from .memory_model import Census, loaded_bytes, pipeline_bytes, working_bytes
from .presets import PRESETS, Preset, Recommendation, get_preset
from .prompt_embeddings import PromptCache, PromptEmbeddings, encode_prompt
from .quantized_checkpoints import save_quantized
from .studio import ABStudio, Studio, ab_studio, studio
from .subprocess_probe import measure_in_subprocess

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
    "ab_studio",
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
    "measure_in_subprocess",
    "model_id",
    "on_profile",
    "pipeline_bytes",
    "plan_loading",
    "profile_plans",
    "recipe_arguments",
    "save_quantized",
    "studio",
    "release_current_pipeline",
    "release_pipeline",
    "use_stand_in",
    "working_bytes",
    "xy_grid",
]
