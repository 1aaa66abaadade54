"""Notebook 07's measuring plumbing: one SD3 transformer under each quantization backend, compared with bf16.

The loading calls themselves (the config objects, `from_pretrained` / `from_single_file`) are in the
notebook's cells; here is what measures them: exact bytes at full size from the memory model, the
bytes really held, the relative error of one transformer forward against bf16 at the same inputs,
where each backend runs (with the library source that says so, checked against the installed
library), and the GPU check's rows (`benchmarks/backend_rows.py`) from benchmarks/results.
"""

from __future__ import annotations

import importlib.util
import numbers
from dataclasses import dataclass
from pathlib import Path

import torch

from ..measuring import module_bytes
from . import memory_model
from .architectures import TRANSFORMER_CONFIGS


@dataclass(frozen=True)
class Backend:
    """One way to hold the transformer's weights: its memory-model key and where it runs."""

    quantization: str | None  # memory_model.loaded_bytes's key
    runs_on: str  # CUDA, T4, MPS, CPU, in words
    source: tuple[str, str] | None  # (file under site-packages, a line of it that says so)


BACKENDS: dict[str, Backend] = {
    "bf16": Backend(None, "everywhere PyTorch runs (fp16 on a T4, which has no bf16 units)", None),
    "bitsandbytes NF4": Backend(
        "nf4", "CUDA, XPU and MPS: diffusers refuses to quantize without one of them (bitsandbytes itself "
        "has CPU kernels too)",
        ("diffusers/quantizers/bitsandbytes/bnb_quantizer.py",
         "if not (torch.cuda.is_available() or torch.xpu.is_available() or torch.mps.is_available()):")),
    "bitsandbytes int8": Backend(
        "int8", "CUDA and XPU only: diffusers' 8-bit quantizer does not accept MPS",
        ("diffusers/quantizers/bitsandbytes/bnb_quantizer.py",
         "if not (torch.cuda.is_available() or torch.xpu.is_available()):")),
    "torchao int8 weight-only": Backend(
        "torchao-int8", "any device PyTorch runs on (CUDA, T4, CPU): a plain matmul of the int8 weights cast "
        "to the activations' dtype, then the per-row scales",
        ("torchao/quantization/quantize_/workflows/int8/int8_tensor.py",
         "w_vals_int8_t.to(output_dtype),")),
    "torchao float8": Backend(
        "float8", "CUDA with compute capability 8.9+ (Ada, Hopper), MI300+ or XPU; not a T4, MPS or CPU",
        ("torchao/float8/inference.py",
         "Float8 dynamic quantization requires CUDA compute capability ≥8.9 or MI300+ or XPU.")),
    "GGUF Q8_0": Backend(
        "gguf-q8_0", "CUDA (T4 included), CPU and MPS: dequantized in torch at every layer call",
        ("diffusers/quantizers/gguf/utils.py", "weight = dequantize_gguf_tensor(self.weight)")),
    "GGUF Q4_0": Backend(
        "gguf-q4_0", "CUDA (T4 included), CPU and MPS: dequantized in torch at every layer call",
        ("diffusers/quantizers/gguf/utils.py", "weight = dequantize_gguf_tensor(self.weight)")),
    "fp8 layerwise storage": Backend(
        "fp8-layerwise", "anywhere torch has float8_e4m3fn tensors (CUDA, CPU): each layer is cast up to "
        "the compute dtype just before it runs",
        ("diffusers/hooks/layerwise_casting.py", "DEFAULT_SKIP_MODULES_PATTERN")),
}


def source_says(backend: str) -> bool | None:
    """True when the installed library's file still holds the line `BACKENDS[backend]` cites
    (None when it cites none)."""
    if BACKENDS[backend].source is None:
        return None
    path, line = BACKENDS[backend].source
    package = importlib.util.find_spec(path.split("/")[0])
    if package is None or package.origin is None:
        return False
    file = Path(package.origin).parent.parent / path
    return file.is_file() and line in file.read_text(encoding="utf-8")


def full_size_bytes(family: str = "large", dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Exact bytes of the full-size transformer under every backend (memory model, meta-built counts)."""
    counts = memory_model.FULL_SIZE[family]["transformer"]
    return {name: memory_model.loaded_bytes(counts, dtype, b.quantization) for name, b in BACKENDS.items()}


def transformer_bytes(module: torch.nn.Module) -> int:
    """Bytes `module` holds as loaded: torchao's quantized tensors at what they store (`qdata` and
    `scale`); otherwise `module_bytes` (plain tensors, GGUF's uint8 blocks, bitsandbytes' state)."""
    tensors = list(module.parameters()) + list(module.buffers())
    if not any(getattr(t, "tensor_data_names", None) for t in tensors):
        return module_bytes(module)
    total = 0
    for tensor in tensors:  # a torchao subclass has no storage of its own: count its inner tensors
        parts = [getattr(tensor, n) for n in getattr(tensor, "tensor_data_names", None) or ()] or [tensor]
        total += sum(p.numel() * p.element_size() for p in parts)
    return total


def forward_inputs(config, size: int, *, dtype: torch.dtype, device, seed: int = 0,
                   text_tokens: int = memory_model.TEXT_TOKENS, batch: int = 1) -> dict:
    """Seeded inputs for one transformer forward at `size` px: latents, CLIP+T5-long text states,
    pooled projections and a mid-schedule timestep (the same for every backend); `batch=2` is one
    step with classifier-free guidance."""
    if isinstance(config, str):
        if config not in TRANSFORMER_CONFIGS:
            raise ValueError(f"config must be one of {', '.join(TRANSFORMER_CONFIGS)} (or a transformer's "
                             f"config), not {config!r:.60}.")
        config = TRANSFORMER_CONFIGS[config]
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 16 or size % 16:
        raise ValueError(f"size must be a whole number of pixels, a multiple of 16 (the VAE's 8 x the patch's 2) "
                         f"and at least 16, not {size!r:.60}.")
    generator = torch.Generator("cpu").manual_seed(seed)
    side = size // 8

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device, dtype)

    return dict(hidden_states=randn(batch, config["in_channels"], side, side),
                encoder_hidden_states=randn(batch, text_tokens, config["joint_attention_dim"]),
                pooled_projections=randn(batch, config["pooled_projection_dim"]),
                timestep=torch.full((batch,), 500.0, device=device))


@torch.no_grad()
def forward(transformer, inputs: dict) -> torch.Tensor:
    """The transformer's output for `inputs`, as float32 on the CPU."""
    return transformer(**inputs, return_dict=False)[0].float().cpu()


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """||output - reference|| / ||reference||: the kernel-level error of one forward against bf16."""
    if tuple(output.shape) != tuple(reference.shape):
        raise ValueError(f"output and reference must have one shape, not {tuple(output.shape)} and "
                         f"{tuple(reference.shape)}: compare the same forward's outputs.")
    norm = reference.float().norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError(f"reference has norm {float(norm)}: a relative error needs a finite, nonzero reference.")
    return float((output.float() - reference.float()).norm() / norm)


def image_difference(image, reference) -> float:
    """Mean absolute difference of two PIL images' pixels, on 0-255."""
    import numpy as np

    image, reference = np.asarray(image, dtype=np.float32), np.asarray(reference, dtype=np.float32)
    if image.shape != reference.shape:
        raise ValueError(f"image and reference must have one size and mode, not arrays of {image.shape} and "
                         f"{reference.shape}: compare two images of the same generation settings.")
    return float(np.abs(image - reference).mean())


# The GPU check's backend rows (benchmarks/backend_rows.py), as notebook 07 shows them: key -> header.
GPU_COLUMNS = {
    "gpu": "measured on", "backend": "backend", "status": "status", "gpu_bytes": "GPU memory after load",
    "model_bytes": "model says", "load_s": "load (s)", "s_per_forward": "s / forward (CFG batch of 2)",
    "transformer_s_per_image": "transformer s / image", "error": "relative error of one forward",
}


def measured_rows(results: list[dict]) -> list[dict]:
    """The GPU check's backend rows (those with a "backend" key), one per GPU and backend, with the
    relative error as a percentage ("error")."""
    rows = []
    for data in results:
        device = data["meta"]["device"]
        for r in data["rows"]:
            if r.get("backend") and "status" in r:
                error = r.get("relative_error")
                rows.append(dict(r, gpu=device, error=None if error is None else f"{error:.3%}"))
    return rows


@dataclass
class Bench:
    """What every backend is measured against: a pipeline to swap transformers into (`pipe.transformer
    = ...`), one forward's inputs, and the bf16 transformer's output and image for them."""

    pipe: object
    inputs: dict
    device: str
    generate_kwargs: dict
    reference_output: torch.Tensor | None = None
    reference_image: object = None


# What a backend raises where it cannot run: diffusers' "No GPU found" (bitsandbytes), torchao's
# float8 hardware assertion. Anything else is a bug and is raised.
_CANNOT_RUN_HERE = ("No GPU found", "compute capability", "requires CUDA", "only supported on CUDA")


def measure(name: str, load, bench: Bench) -> dict:
    """Load one backend with `load()` (the notebook's own call), then measure it against `bench`:
    load seconds, bytes held, relative error of one forward, seconds per image and the image's
    mean pixel difference. A backend that cannot run on this machine gets its reason as status."""
    from ..generation.text_to_image import generate
    from ..measuring import Stopwatch

    row = {"backend": name, "status": "ok", "runs_on": BACKENDS[name].runs_on}
    try:
        with Stopwatch(bench.device) as took:
            transformer = load()
    except (RuntimeError, AssertionError) as e:
        if not any(reason in str(e) for reason in _CANNOT_RUN_HERE):
            raise
        return dict(row, status=f"cannot run here: {str(e).splitlines()[0]}")
    row["load_s"] = took.seconds
    row["held_bytes"] = transformer_bytes(transformer)
    output = forward(transformer, bench.inputs)
    if bench.reference_output is None:
        bench.reference_output = output
    row["relative_error"] = relative_error(output, bench.reference_output)
    bench.pipe.transformer = transformer
    with Stopwatch(bench.device) as took:
        result = generate(bench.pipe, **bench.generate_kwargs)
    row["s_per_image"] = took.seconds
    row["image"] = result.image
    if bench.reference_image is None:
        bench.reference_image = result.image
    row["image_difference"] = image_difference(result.image, bench.reference_image)
    bench.pipe.transformer = None
    del transformer
    if str(bench.device).startswith("cuda"):
        torch.cuda.empty_cache()
    return row
