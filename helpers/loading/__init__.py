"""Loading SD3.5: plan it (`plan_loading`), load it (`load_pipeline`), quantize it once (`save_quantized`).

Taught in notebooks 01 (the blog's NF4 code), 02 (loading plans and offload) and 03 (quantize once).
"""

from .load import load_pipeline, release_current_pipeline, release_pipeline
from .planner import LoadingPlan, model_id, plan_loading, use_stand_in
from .quantized_checkpoints import save_quantized

__all__ = ["LoadingPlan", "load_pipeline", "model_id", "plan_loading", "release_current_pipeline",
           "release_pipeline", "save_quantized", "use_stand_in"]
