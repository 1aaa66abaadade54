"""The helpers' errors are reachable from the package and catchable as RuntimeError."""

import helpers
from helpers import errors


def test_every_error_is_exported_and_a_runtime_error():
    classes = [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)]
    assert {c.__name__ for c in classes} >= {
        "GatedModelError", "QuantizationNeedsGPUError", "GPUOutOfMemoryError", "GenerationCancelled",
        "NonFiniteImageError",
    }
    for cls in classes:
        assert getattr(helpers, cls.__name__) is cls
        assert issubclass(cls, RuntimeError) and cls.__doc__
