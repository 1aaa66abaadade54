"""How much `helpers.generate` adds on top of the plain diffusers call, on the offline stand-in.

The two calls alternate in one process (raw, helpers, raw, helpers, ...) with the same prompt,
settings and seed, so drift in the machine's speed hits both alike. Prints the median seconds of
each, their ratio (target: at most 1.02), and what the peak-memory probe alone costs per call.
Wall time and CPU time (all threads of the process) are both shown: on a busy shared machine the
wall-time ratio is noisy, while CPU time still counts every cycle helpers spends, threads included.
Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generate_overhead.py [--size 64 --steps 28 --repeats 21]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from helpers.generation.text_to_image import generate  # noqa: E402
from helpers.loading.load import load_pipeline  # noqa: E402
from helpers.measuring import PeakMemory, kernel_peak_rss  # noqa: E402


def timed(fn):
    """(result, wall seconds, CPU seconds of the whole process) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 16)")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_pipeline("tiny")
    pipe.set_progress_bar_config(disable=True)
    prompt, negative = "a capybara wearing a suit holding a sign that reads hello world", "blurry"
    settings = dict(guidance_scale=3.5, num_inference_steps=args.steps, height=args.size, width=args.size)

    raw, ours, raw_cpu, ours_cpu = [], [], [], []
    for i in range(args.repeats + 1):  # the first pair warms up and is not counted
        theirs, raw_s, raw_c = timed(lambda i=i: pipe(
            prompt, negative_prompt=negative, generator=torch.Generator("cpu").manual_seed(i), **settings
        ).images[0])
        result, ours_s, ours_c = timed(lambda i=i: generate(pipe, prompt, negative_prompt=negative, seed=i, **settings))
        assert result.image.tobytes() == theirs.tobytes(), "helpers.generate must give the raw image"
        if i:
            raw.append(raw_s)
            ours.append(ours_s)
            raw_cpu.append(raw_c)
            ours_cpu.append(ours_c)

    probe = []
    for _ in range(200):
        started = time.perf_counter()
        with PeakMemory("cpu"):
            pass
        probe.append(time.perf_counter() - started)

    how = "kernel VmHWM" if kernel_peak_rss() is not None else "sampling thread"
    print(f"stand-in, {args.size}x{args.size}, {args.steps} steps, guidance 3.5, median of {args.repeats} interleaved pairs")
    for label, theirs_s, ours_s in (("wall", raw, ours), ("CPU", raw_cpu, ours_cpu)):
        r, g = statistics.median(theirs_s), statistics.median(ours_s)
        pairs = [o / t for o, t in zip(ours_s, theirs_s)]
        print(f"{label:>4} time: raw diffusers {r * 1000:8.2f} ms, helpers.generate {g * 1000:8.2f} ms, "
              f"ratio {g / r:.4f} (target <= 1.02; per pair min {min(pairs):.3f}, "
              f"median {statistics.median(pairs):.3f}, max {max(pairs):.3f})")
    print(f"PeakMemory probe ({how}): {statistics.median(probe) * 1e6:7.1f} us per with-block")


if __name__ == "__main__":
    main()
