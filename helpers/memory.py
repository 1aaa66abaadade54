"""Memory probes: what each pipeline component weighs, and the peak memory of a piece of work."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import psutil
import torch

GiB = 1024**3

# Bytes per parameter of each precision; NF4 and int8 also store one scale per block of weights.
BYTES_PER_PARAMETER = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0 + 4 / 64, "nf4": 0.5 + 4 / 64}


def format_bytes(n: float | None) -> str:
    """Human-readable size in GiB or MiB ("n/a" for None)."""
    if n is None:
        return "n/a"
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 1024**2:.1f} MiB"


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module as loaded: its parameters and buffers (quantized weights at their
    packed size) plus the bitsandbytes state beside them: NF4's absmax block scales and code table,
    int8's per-row scales. `get_memory_footprint` omits that state (~10% of an NF4 transformer)."""
    seen: set[int] = set()
    total = 0

    def add(tensor):  # once per storage: tied weights and shared tables count once
        nonlocal total
        key = id(tensor) if tensor.device.type == "meta" else (tensor.device, tensor.data_ptr())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()

    for tensor in list(module.parameters()) + list(module.buffers()):
        add(tensor)
        state = getattr(tensor, "quant_state", None)  # bitsandbytes Params4bit
        if state is not None:
            add(state.absmax)
            add(state.code)
            if getattr(state, "nested", False):
                add(state.offset)
                add(state.state2.absmax)
                add(state.state2.code)
        scales = getattr(tensor, "SCB", None)  # bitsandbytes Int8Params
        if isinstance(scales, torch.Tensor):
            add(scales)
    return int(total)


def component_footprints(pipe) -> dict[str, int]:
    """Bytes of every model component of a loaded pipeline (tokenizers and scheduler weigh ~0)."""
    return {
        name: module_bytes(component)
        for name, component in pipe.components.items()
        if isinstance(component, torch.nn.Module)
    }


def parameters_on_disk(folder) -> dict[str, int]:
    """Parameter count of each component saved in a pipeline folder, read from the safetensors
    headers alone (no weights are loaded). Quantized checkpoints are not supported here."""
    counts: dict[str, int] = {}
    for file in sorted(Path(folder).glob("*/*.safetensors")):
        with open(file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        n = 0
        for name, info in header.items():
            if name != "__metadata__":
                numel = 1
                for d in info["shape"]:
                    numel *= d
                n += numel
        counts[file.parent.name] = counts.get(file.parent.name, 0) + n
    return counts


class PeakMemory:
    """Measure the peak memory of the work done inside a `with` block.

    On CUDA it is the peak of `torch.cuda.max_memory_allocated` (bytes held by tensors). Elsewhere
    it is the process' resident memory (RSS), sampled every `interval` seconds by a background
    thread, so very short spikes can be missed. `.peak_bytes` and `.kind` are set on exit.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.005):
        self.device = str(device)
        self.interval = interval
        self.kind = "cuda" if self.device.startswith("cuda") else "rss"
        self.peak_bytes: int | None = None
        self._stop = threading.Event()

    def __enter__(self):
        if self.kind == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._process = psutil.Process()
            self.peak_bytes = self._process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __exit__(self, *exc):
        if self.kind == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
        return False


class Stopwatch:
    """Wall-clock seconds of a `with` block (CUDA work is synchronised first), in `.seconds`."""

    def __init__(self, device: str = "cpu"):
        self.cuda = str(device).startswith("cuda")
        self.seconds: float | None = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start
        return False
