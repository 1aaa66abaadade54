"""What the notebooks share: the names they call, and nothing else (the map is helpers/README.md).

Each name is taught in a notebook: loading in 01-03, measuring in 01-03, generating in 04-06,
grids in 04-06, the studio in 06. Everything else is imported from its module, where it lives:
`helpers.loading`, `helpers.generation`, `helpers.studies`, `helpers.studio`, `helpers.stand_in`.
Importing this package changes nothing global (no seeds, no plotting styles, no warnings filters).
"""

from .errors import QuantizationNeedsGPUError
from .generation.prompt_embeddings import PromptCache
from .generation.text_to_image import generate
from .loading.hardware_profiles import colab_t4_plan
from .loading.hub_access import find_token
from .loading.load import load_pipeline, release_current_pipeline, release_pipeline
from .loading.machine_fit import fit_to_machine
from .loading.planner import model_id, plan_loading, use_stand_in
from .loading.presets import PRESETS, get_preset
from .measuring import PeakMemory, Stopwatch, component_footprints, format_bytes
from .studies.grids import image_grid
from .studio import ABStudio, Studio

__all__ = [
    # loading (notebooks 01-03)
    "PRESETS",
    "QuantizationNeedsGPUError",
    "colab_t4_plan",
    "find_token",
    "fit_to_machine",
    "get_preset",
    "load_pipeline",
    "model_id",
    "plan_loading",
    "release_current_pipeline",
    "release_pipeline",
    "use_stand_in",
    # measuring (01-03)
    "PeakMemory",
    "Stopwatch",
    "component_footprints",
    "format_bytes",
    # generating (04-06)
    "PromptCache",
    "generate",
    "image_grid",
    # the studio (04, 06)
    "ABStudio",
    "Studio",
]
