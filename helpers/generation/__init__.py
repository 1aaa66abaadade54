"""Generating: `generate` (one reproducible image and its recipe), prompt embeddings, PNG recipes.

Every caller that runs a pipeline takes its lock (`pipeline_lock`). Taught in notebooks 04-06.
"""

from .prompt_embeddings import PromptCache, encode_prompt
from .text_to_image import GenerationResult, generate

__all__ = ["GenerationResult", "PromptCache", "encode_prompt", "generate"]
