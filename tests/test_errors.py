"""The helpers' errors are catchable as RuntimeError, and the one notebooks catch is exported."""

import helpers
from helpers import errors


def test_every_error_is_a_documented_runtime_error():
    classes = [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)]
    assert {c.__name__ for c in classes} >= {
        "GatedModelError", "QuantizationNeedsGPUError", "GPUOutOfMemoryError", "GenerationCancelled",
        "NonFiniteImageError",
    }
    for cls in classes:
        assert issubclass(cls, RuntimeError) and cls.__doc__


def test_the_error_notebooks_catch_is_exported():
    """Notebooks fall back to the stand-in with `except helpers.QuantizationNeedsGPUError`."""
    assert helpers.QuantizationNeedsGPUError is errors.QuantizationNeedsGPUError
