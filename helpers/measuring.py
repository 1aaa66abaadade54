"""Memory probes: what each pipeline component weighs, and the peak memory of a piece of work."""

from __future__ import annotations

import math
import numbers
import re
import threading
import time
from pathlib import Path

import psutil
import torch

GiB = 1024**3



def format_bytes(n: float | None) -> str:
    """Human-readable size in GiB or MiB ("n/a" for None)."""
    if n is None:
        return "n/a"
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(f"format_bytes needs a number of bytes (or None), not {type(n).__name__} {n!r}.")
    try:
        finite = math.isfinite(n)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ValueError(f"format_bytes needs a finite number of bytes, not {n!r}.")
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
        if hasattr(type(tensor), "__tensor_flatten__"):  # torchao's float8/int8 tensors: bytes in their parts
            for name in tensor.__tensor_flatten__()[0]:
                add(getattr(tensor, name))
            return
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
    if isinstance(pipe, (str, bytes)) or not isinstance(getattr(pipe, "components", None), dict):
        raise TypeError(f"component_footprints needs a loaded pipeline (from load_pipeline), not "
                        f"{type(pipe).__name__} {pipe!r:.80}.")
    footprints = {
        name: module_bytes(component)
        for name, component in pipe.components.items()
        if isinstance(component, torch.nn.Module)
    }
    if not footprints:  # release_pipeline empties every model component
        raise ValueError("component_footprints: this pipeline was released (it holds no model components): "
                         "load it again to measure it.")
    return footprints


# The PeakMemory blocks open right now, in any thread: a block that resets the peak counter first
# hands the peak seen so far to these, so nested and overlapping measurements each stay right.
_open_meters: list[PeakMemory] = []
_meters_lock = threading.Lock()
_PROC_STATUS, _PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def check_device(device) -> str:
    """`device` as text: 'cpu', 'mps', 'cuda' or 'cuda:N' (or a torch.device)."""
    try:
        valid = isinstance(device, (str, torch.device)) and torch.device(device) is not None
    except RuntimeError:  # torch's "Expected one of cpu, cuda, ... device type at start of device string"
        valid = False
    if not valid:
        raise ValueError(f"device must be 'cpu', 'mps', 'cuda' or 'cuda:N' (or a torch.device), not {device!r}.")
    check_mps_present(str(device))
    return str(device)


def check_mps_present(device: str) -> None:
    """Raise a ValueError naming `device` when it is 'mps' and this machine has no Apple GPU: the
    measurement would silently be of host memory."""
    if device.startswith("mps") and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was given, but this machine has no Apple (MPS) GPU: measure on 'cpu' "
                         f"or 'cuda' instead, e.g. the pipeline's own device (pipe.load_info.plan.device).")


def check_interval(interval) -> float:
    """`interval` must be a positive, finite number of seconds (the RSS sampling period)."""
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real) or not math.isfinite(interval) \
            or interval <= 0:
        raise ValueError(f"interval must be a positive number of seconds (e.g. 0.005), not {interval!r}.")
    return float(interval)


def check_cuda_present(device: str) -> None:
    """Raise a ValueError naming `device` and what this machine has, when it has no CUDA GPU."""
    if not torch.cuda.is_available():
        present = "'cpu'" + (" or 'mps'" if torch.backends.mps.is_available() else "")
        raise ValueError(
            f"device={device!r} was given, but this machine has no CUDA GPU (PyTorch here sees none): "
            f"measure on {present} instead, e.g. the pipeline's own device (pipe.load_info.plan.device)."
        )


def kernel_peak_rss() -> int | None:
    """The process' peak resident memory in bytes as the Linux kernel keeps it (VmHWM), or None."""
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", _PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def reset_kernel_peak_rss() -> bool:
    """Reset VmHWM to the current resident memory (writing "5" to /proc/self/clear_refs, which
    touches nothing else); False where the kernel does not offer it."""
    try:
        with open(_PROC_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Measure the peak memory of the work done inside a `with` block, in bytes.

    On CUDA it is the peak of `torch.cuda.max_memory_allocated(device)` (bytes held by tensors).
    Elsewhere it is the process' resident memory (RSS): on Linux the kernel's own peak (VmHWM,
    exact and free); where that is unavailable, RSS sampled every `interval` seconds by a
    background thread, so very short spikes can be missed. Both counters are reset on entry, so
    a block nested in (or running beside) another hands its predecessor the peak so far first:
    every block reports its own right peak. `.start_bytes` (what was held on entry) is set on entry,
    `.peak_bytes` and `.kind` on exit: `peak_bytes - start_bytes` is what the block added at its peak.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.005):
        self.device = check_device(device)
        self.interval = check_interval(interval)
        self.kind = "cuda" if self.device.startswith("cuda") else "rss"
        self.start_bytes: int | None = None
        self.peak_bytes: int | None = None
        self._seen = 0  # the highest peak read from the counter before someone reset it
        self._gpu = None  # the GPU's index ("cuda" alone means the current one), set on entry
        self._thread = None
        self._stop = threading.Event()

    def _counter(self) -> int | None:
        """The peak the counter holds since its last reset; None when there is no counter."""
        if self.kind == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return kernel_peak_rss()

    def _shares_counter(self, other: PeakMemory) -> bool:
        return self.kind == other.kind and self._gpu == other._gpu

    def _reset_counter(self) -> bool:
        """Hand the counter's peak to every open block that shares it, then reset it."""
        with _meters_lock:
            sharing = [m for m in _open_meters if self._shares_counter(m)]
            if sharing:
                current = self._counter()
                for meter in sharing:
                    meter._seen = max(meter._seen, current or 0)
            if self.kind == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
                return True
            return reset_kernel_peak_rss() and kernel_peak_rss() is not None

    def __enter__(self):
        if self.kind == "cuda":
            check_cuda_present(self.device)
            index = torch.device(self.device).index
            self._gpu = torch.cuda.current_device() if index is None else index
            torch.cuda.synchronize(self.device)
            self._reset_counter()
            self.start_bytes = self._counter()  # right after the reset, the peak is what is allocated now
        else:
            self._process = psutil.Process()
            self._seen = self.start_bytes = self._process.memory_info().rss
            if not self._reset_counter():  # no kernel peak here: sample it ourselves
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        with _meters_lock:
            _open_meters.append(self)
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._seen = max(self._seen, self._process.memory_info().rss)

    def __exit__(self, *exc):
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
        with _meters_lock:
            _open_meters.remove(self)
            if self._thread is not None:
                self._stop.set()
                self._thread.join()
                self._seen = max(self._seen, self._process.memory_info().rss)
            else:
                self._seen = max(self._seen, self._counter() or 0)
        self.peak_bytes = int(self._seen)
        return False


class Stopwatch:
    """Wall-clock seconds of a `with` block (CUDA work on `device` is synchronised first), in `.seconds`."""

    def __init__(self, device: str = "cpu"):
        self.device = check_device(device)
        self.cuda = self.device.startswith("cuda")
        self.seconds: float | None = None

    def __enter__(self):
        if self.cuda:
            check_cuda_present(self.device)
            torch.cuda.synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        return False
