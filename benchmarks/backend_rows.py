"""The GPU check's backend rows: SD3.5's transformer under one quantization backend, against bf16.

    measure_backend_row("torchao-int8", folder, args)   # what gpu_check runs for {"backend": "torchao-int8"}
    python benchmarks/backend_rows.py torchao-int8 --smoke   # one row on the CPU stand-in, printed

Loads the transformer of `folder` (the GPU check's full-size random-weights pipeline, or the stand-in)
with the same diffusers calls notebook 07 shows, and measures: GPU memory it holds after loading
(torch.cuda.memory_allocated, next to the memory model's exact bytes), load seconds, seconds per
transformer forward at the image size with the CFG batch of 2 (so steps x that is the transformer's
share of one image), and the relative error of one forward against bf16 at the same inputs. That error
is kernel-level, on random weights: it says nothing about image quality with the trained weights.
The GGUF rows write their file from `folder`'s bf16 weights first (the GPU machine has no network),
into args.scratch, reused by later runs; they take minutes at full size, so list them last.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# backend key (the memory model's quantization name; "bf16" for none) -> notebook 07's row name
BACKEND_NAMES = {"bf16": "bf16", "nf4": "bitsandbytes NF4", "int8": "bitsandbytes int8",
                 "torchao-int8": "torchao int8 weight-only", "float8": "torchao float8",
                 "gguf-q8_0": "GGUF Q8_0", "gguf-q4_0": "GGUF Q4_0", "fp8-layerwise": "fp8 layerwise storage"}
TIMED_FORWARDS = 3  # after one warm-up; the spread is stated in the row


def load_transformer(backend: str, folder: Path, dtype, device: str, scratch: Path):
    """The transformer of `folder` under `backend`, by the calls notebook 07 teaches."""
    if backend not in BACKEND_NAMES:  # before any weights are read
        raise ValueError(f"backend must be one of {', '.join(BACKEND_NAMES)}, not {backend!r}.")
    check_folder(folder)
    import torch
    from diffusers import BitsAndBytesConfig, GGUFQuantizationConfig, SD3Transformer2DModel, TorchAoConfig

    kwargs = dict(subfolder="transformer", dtype=dtype)
    if backend == "nf4":
        nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        return SD3Transformer2DModel.from_pretrained(folder, quantization_config=nf4, **kwargs)
    if backend == "int8":
        return SD3Transformer2DModel.from_pretrained(folder, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                                                     **kwargs)
    if backend in ("torchao-int8", "float8"):
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Int8WeightOnlyConfig,
            PerRow,
        )

        config = (Int8WeightOnlyConfig() if backend == "torchao-int8"
                  else Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
        return SD3Transformer2DModel.from_pretrained(folder, quantization_config=TorchAoConfig(config),
                                                     device_map=device, **kwargs)
    if backend.startswith("gguf-"):
        path = gguf_file(folder, backend.removeprefix("gguf-").upper(), scratch)
        return SD3Transformer2DModel.from_single_file(
            str(path), config=str(folder), quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
            device_map=device, **kwargs)
    transformer = SD3Transformer2DModel.from_pretrained(folder, device_map=device, **kwargs)
    if backend == "fp8-layerwise":
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    return transformer


def check_folder(folder: Path) -> None:
    """`folder` must be a local pipeline folder: said plainly, not as the Hub's "couldn't connect"
    (diffusers takes a path that is not there for a Hub id)."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"no such folder: {folder} (the pipeline folder to measure; the GPU check "
                                "has no network, so it must be a local folder).")
    if not (Path(folder) / "transformer" / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a diffusers pipeline folder: it has no transformer/config.json.")


def check_gguf(path: Path) -> None:
    """A cached GGUF file must read (header, tensor table, data sizes) before diffusers gets it: a
    damaged one is refused with what to do, not met later as a reshape error inside diffusers."""
    import gguf

    try:
        gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError, EOFError) as error:
        raise ValueError(f"the cached GGUF file {path} is damaged ({str(error).splitlines()[0][:120]}): "
                         "delete it and run again to write it anew.") from None


def gguf_file(folder: Path, quant: str, scratch: Path) -> Path:
    """`folder`'s transformer as a GGUF file in original SD3 keys, written once into `scratch`."""
    import torch
    from diffusers import SD3Transformer2DModel

    from helpers.loading.gguf_checkpoints import write_gguf

    path = Path(scratch) / f"{Path(folder).name}-transformer-{quant}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        bf16 = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer", dtype=torch.bfloat16)
        write_gguf(bf16, path, quant)
    check_gguf(path)
    return path


def _reference(folder: Path, inputs: dict, dtype, device: str, scratch: Path, size: int):
    """bf16's output for `inputs`, computed once per folder and size and kept in `scratch`."""
    import torch

    from helpers.loading import quantization_backends as backends

    cache = Path(scratch) / f"{Path(folder).name}-bf16-forward-{size}.pt"
    if cache.exists():
        return torch.load(cache)
    transformer = load_transformer("bf16", folder, dtype, device, scratch)
    output = backends.forward(transformer, inputs)
    del transformer
    _release(device)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(output, cache)
    return output


def _release(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def backend_key(name: str) -> str:
    """The backend key for `name`: a key itself ("torchao-int8"), notebook 07's row name
    ("torchao int8 weight-only") or the GPU check's plan name ("backend: torchao int8 weight-only")."""
    by_row_name = {row_name: key for key, row_name in BACKEND_NAMES.items()}
    stripped = str(name).removeprefix("backend: ")
    key = stripped if stripped in BACKEND_NAMES else by_row_name.get(stripped)
    if key is None:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_NAMES)} (or its row name), not {name!r}.")
    return key


def measure_backend_row(name: str, source: Path, args) -> dict:
    """One backend row for the GPU check: `name` is a backend (see `backend_key`), `source` the pipeline
    folder, `args` the check's (size, steps; scratch, where GGUF files and the bf16 reference are kept).
    A backend that cannot run on this machine gets its reason as status."""
    import statistics

    import torch

    from helpers.loading import memory_model
    from helpers.loading import quantization_backends as backends

    name = backend_key(name)
    check_folder(source)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16
    size = getattr(args, "size", None) or (1024 if cuda else 64)
    scratch = Path(getattr(args, "scratch", None) or Path(source).parent)
    row = {"plan": f"backend: {BACKEND_NAMES[name]}", "backend": BACKEND_NAMES[name], "status": "ok",
           "size": size, "runs_on": backends.BACKENDS[BACKEND_NAMES[name]].runs_on}
    config = _config(source)
    inputs = backends.forward_inputs(config, size, dtype=dtype, device=device, batch=2)
    reference = _reference(source, inputs, dtype, device, scratch, size)
    counts = memory_model.folder_census(source)["transformer"]
    row["model_bytes"] = memory_model.loaded_bytes(counts, dtype, None if name == "bf16" else name)
    if name.startswith("gguf-"):  # the file is made before the load is timed
        started = time.perf_counter()
        path = gguf_file(source, name.removeprefix("gguf-").upper(), scratch)
        row["gguf_write_s"], row["gguf_file_bytes"] = time.perf_counter() - started, path.stat().st_size
    _release(device)
    before = torch.cuda.memory_allocated() if cuda else 0
    try:
        started = time.perf_counter()
        transformer = load_transformer(name, source, dtype, device, scratch)
        if cuda:
            torch.cuda.synchronize()
        row["load_s"] = time.perf_counter() - started
    except (RuntimeError, AssertionError) as e:
        if not any(reason in str(e) for reason in backends._CANNOT_RUN_HERE):
            raise
        return dict(row, status=f"cannot run here: {str(e).splitlines()[0]}")
    row["held_bytes"] = backends.transformer_bytes(transformer)
    if cuda:
        row["gpu_bytes"] = torch.cuda.memory_allocated() - before
    output = backends.forward(transformer, inputs)  # also the warm-up
    row["relative_error"] = backends.relative_error(output, reference)
    times = []
    for _ in range(TIMED_FORWARDS):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        backends.forward(transformer, inputs)
        times.append(time.perf_counter() - started)
    row["s_per_forward"] = statistics.median(times)
    row["s_per_forward_spread"] = [round(min(times), 4), round(max(times), 4)]
    steps = getattr(args, "steps", None) or 28
    row["transformer_s_per_image"] = steps * row["s_per_forward"]  # CFG: one batch-2 forward per step
    if cuda:
        row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    del transformer
    _release(device)
    return row


def _config(folder: Path) -> dict:
    import json

    return json.loads((Path(folder) / "transformer" / "config.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=list(BACKEND_NAMES))
    parser.add_argument("--smoke", action="store_true", help="on the CPU stand-in")
    parser.add_argument("--source", type=Path, default=None, help="pipeline folder (default: the stand-in with --smoke)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args(argv)
    from helpers.stand_in import tiny_pipeline_dir

    source = args.source or (tiny_pipeline_dir() if args.smoke else None)
    if source is None:
        parser.error("--source is needed without --smoke")
    print(measure_backend_row(args.backend, source, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
