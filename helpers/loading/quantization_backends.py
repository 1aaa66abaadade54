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


def _one_of(what: str, name, table) -> None:
    """One clear error for a name that is not a key of `table`, instead of a bare KeyError."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, table))}, not {name!r:.60}.")


def _rows_with(rows, keys: tuple[str, ...], what: str) -> None:
    """Each of `rows` must be a dict holding `keys` (one clear error instead of a bare KeyError)."""
    for row in rows:
        if not isinstance(row, dict) or not all(k in row for k in keys):
            raise ValueError(f"{what} must be dicts with {', '.join(keys)} (as measure or the GPU check "
                             f"write them), not {row!r:.80}.")


def source_says(backend: str) -> bool | None:
    """True when the installed library's file still holds the line `BACKENDS[backend]` cites
    (None when it cites none)."""
    _one_of("backend", backend, BACKENDS)
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
    _one_of("family", family, memory_model.FULL_SIZE)
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
    needed = ("in_channels", "joint_attention_dim", "pooled_projection_dim")
    if not hasattr(config, "get") or any(config.get(k) is None for k in needed):
        raise ValueError(f"config must be a transformer's config (transformer.config, with {', '.join(needed)}) "
                         f"or one of {', '.join(TRANSFORMER_CONFIGS)}, not {config!r:.60}.")
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
    "compiled": "compiled",
}


def measured_rows(results: list[dict]) -> list[dict]:
    """The GPU check's backend rows (those with a "backend" key), one per GPU and backend, with the
    relative error as a percentage ("error") and whether torch.compile ran ("compiled": "yes"/"no")."""
    _rows_with(results, ("meta", "rows"), "results")
    rows = []
    for data in results:
        if not isinstance(data["meta"], dict) or "device" not in data["meta"]:
            raise ValueError(f"results' meta must name the device it ran on, not {data['meta']!r:.60}.")
        device = data["meta"]["device"]
        for r in data["rows"]:
            if r.get("backend") and "status" in r:
                error = r.get("relative_error")
                rows.append(dict(r, gpu=device, error=None if error is None else f"{error:.3%}",
                                 compiled="yes" if r.get("compiled") else "no"))
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


def measure(name: str, load, bench: Bench, compiled: bool = False) -> dict:
    """Load one backend with `load()` (the notebook's own call), then measure it against `bench`:
    load seconds, bytes held, relative error of one forward, seconds per image and the image's
    mean pixel difference. A backend that cannot run on this machine gets its reason as status.
    `compiled=True` (load() compiled the model): one untimed image first, which pays for compiling
    ("first_image_s"), so "s_per_image" is the compiled speed."""
    from ..generation.text_to_image import generate
    from ..measuring import Stopwatch

    _one_of("backend", name, BACKENDS)
    row = {"backend": name, "status": "ok", "runs_on": BACKENDS[name].runs_on, "compiled": "yes" if compiled else "no"}
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
    if compiled:
        with Stopwatch(bench.device) as took:
            generate(bench.pipe, **bench.generate_kwargs)
        row["first_image_s"] = took.seconds
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


# Where each backend runs, as a rule on a hardware profile: the cited lines of BACKENDS, applied.
# NF4: CUDA/XPU/MPS; bitsandbytes int8: CUDA/XPU; torchao float8: sm_89+; GGUF: dequantized in torch;
# torchao int8 and fp8 layerwise storage: CUDA here (MPS has no float8 dtype, and the int8 path is
# not cited for MPS, so the chooser does not offer it there).
def runs_on_profile(backend: str, profile) -> bool:
    """True when `backend` runs on `profile` (a hardware_profiles.HardwareProfile) by its cited rule."""
    _one_of("backend", backend, BACKENDS)
    cuda, mps = profile.device == "cuda", profile.device == "mps"
    capability = profile.capability or (0, 0)
    return {"bf16": True, "bitsandbytes NF4": cuda or mps, "bitsandbytes int8": cuda,
            "torchao int8 weight-only": cuda, "torchao float8": cuda and capability >= (8, 9),
            "GGUF Q8_0": cuda or mps, "GGUF Q4_0": cuda or mps, "fp8 layerwise storage": cuda}[backend]


# The chooser's GPU classes: a hardware profile each (hardware_profiles.PROFILES), by architecture.
CHOOSER_CLASSES = {"T4 (Turing, sm_75)": "free Colab T4", "Ampere (sm_80/86)": "RTX 3060 12 GB",
                   "Ada (sm_89)": "RTX 4090 24 GB", "Hopper (sm_90)": "H100 80 GB", "Apple Silicon (MPS)": "Apple M2 16 GB"}


def chooser(rows: list[dict], measured: list[dict] = ()) -> list[dict]:
    """Which backend to pick per GPU class and goal, each cell computed from a row or a rule:
    fit: the smallest transformer (memory model) among backends that run there; fidelity: bf16 when the
    planner fits whole bf16 SD3.5 Large on that class without offload, else the lowest relative error
    among `rows` that ran and run there; speed: the fewest seconds per forward among `measured` GPU rows
    of that class, else "not measured"."""
    from . import hardware_profiles

    _rows_with(rows, ("backend",), "rows")
    _rows_with(measured, ("backend",), "measured")
    sizes = full_size_bytes("large")
    errors = {r["backend"]: r["relative_error"] for r in rows if r.get("status") == "ok" and "relative_error" in r}
    table = []
    for label, profile_name in CHOOSER_CLASSES.items():
        profile = hardware_profiles.get_profile(profile_name)
        here = [b for b in BACKENDS if runs_on_profile(b, profile)]
        smallest = min(here, key=sizes.get)
        bf16_fits = hardware_profiles.plan_on(profile, "sd35-large", offload="none", drop_t5=True).fits
        quantized = [b for b in here if b != "bf16" and b in errors]
        if bf16_fits:
            fidelity = "bf16: the whole bf16 pipeline (no T5) fits without offload"
        elif quantized:
            best = min(quantized, key=errors.get)
            fidelity = f"{best}: lowest error here ({errors[best]:.2%}); bf16 does not fit without offload"
        else:
            fidelity = "no measured row runs here"
        timed = [r for r in measured if r.get("s_per_forward") and r["backend"] in here
                 and gpu_class(r.get("gpu", "")) == label]
        fastest = min(timed, key=lambda r: r["s_per_forward"], default=None)
        speed = (f"{fastest['backend']}: {fastest['s_per_forward']:.2f} s per forward on {fastest['gpu']}" if fastest
                 else "not measured on this class yet (`make gpu-check` adds it)")
        table.append({"gpu_class": f"{label}, {profile.gpu_bytes / 2**30:.0f} GiB ({profile_name})",
                      "fit": f"{smallest}: {sizes[smallest] / 2**30:.1f} GiB transformer",
                      "speed": speed, "fidelity": fidelity})
    return table


def gpu_class(device_name: str) -> str | None:
    """The chooser class of a GPU named as torch names it ("NVIDIA H200" -> "Hopper (sm_90)")."""
    name = device_name.upper()
    for marks, label in ((("T4",), "T4 (Turing, sm_75)"), (("H100", "H200", "GH200"), "Hopper (sm_90)"),
                         (("L4", "L40", "RTX 40", "RTX 6000 ADA"), "Ada (sm_89)"),
                         (("A100", "A10", "A40", "RTX 30", "RTX A"), "Ampere (sm_80/86)")):
        if any(m in name for m in marks):
            return label
    return None


# Left out on purpose, with the installed library's own line that says why: (file, line, reason).
LEFT_OUT = {
    "optimum-quanto (diffusers' QuantoConfig)": (
        "diffusers/quantizers/quantization_config.py",
        'deprecation_message = "`QuantoConfig` is deprecated and will be removed in version 1.0.0."',
        "optimum-quanto 0.2.7 installs here and QuantoConfig quantizes the stand-in, but diffusers 0.42 "
        "deprecates QuantoConfig (removal in 1.0.0): a path this collection would teach only to see it go"),
}


def left_out_says(name: str) -> bool:
    """True when the installed library still holds the line LEFT_OUT[name] cites."""
    _one_of("name", name, LEFT_OUT)
    path, line, _ = LEFT_OUT[name]
    package = importlib.util.find_spec(path.split("/")[0])
    if package is None or package.origin is None:
        return False
    file = Path(package.origin).parent.parent / path
    return file.is_file() and line in file.read_text(encoding="utf-8")
