"""The errors helpers raise: each says what went wrong and what to do about it."""


class GatedModelError(RuntimeError):
    """The model is gated on the Hugging Face Hub and this machine has no token with access."""


class QuantizationNeedsGPUError(RuntimeError):
    """bitsandbytes quantization through diffusers was asked for on a machine without a GPU."""


class GPUOutOfMemoryError(RuntimeError):
    """The plan or the generation does not fit in the GPU's memory."""


class GenerationCancelled(RuntimeError):
    """A generation was stopped by its callback (the studio's Cancel button) before it finished."""


class NonFiniteImageError(RuntimeError):
    """A generation produced NaN pixels (numbers overflowed, e.g. fp16 at a huge guidance scale).
    `component` names the pipeline component that produced them first ("vae", "transformer",
    "text_encoder_3", ...), and the message says how to fix it."""

    def __init__(self, message: str, component: str | None = None):
        super().__init__(message)
        self.component = component
