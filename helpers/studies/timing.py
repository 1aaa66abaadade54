"""The reader's time: how many images a sweep or study makes, and how long that should take here.

Before the first image `ReaderClock` prints the count and an estimate: on a GPU the committed H200
measurement (benchmarks/results/nvidia-h200.json) of the same plan, scaled by the ratio of the two
GPUs' datasheet peak FLOP/s and by the image's tokens; with no such figure (CPU, stand-in, an
unknown GPU or plan) it says so, and the first image's measured time gives the estimate instead.
tqdm's bar then shows the measured rate and ETA, and the clock prints what it really took.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

from ..loading.plan_benchmarks import GPU_RESULTS, peak_flops

REFERENCE_FILE = GPU_RESULTS / "nvidia-h200.json"
# The H200 row measured with each (preset, offload, fast) plan, at 1024 x 1024 and 28 steps.
REFERENCE_ROWS = {
    ("sd35-large", "none", False): "bf16",
    ("sd35-large", "none", True): "bf16 fast (compiled)",
    ("sd35-large-nf4", "none", False): "NF4",
    ("sd35-large-nf4", "model", False): "NF4 + model CPU offload",
}
# SD3.5's joint attention sees 77 CLIP + 256 T5 text tokens beside the image's (height/16) x (width/16)
# latent patches. Most of the work is linear in the tokens; attention, quadratic in them, shrinks faster
# at smaller sizes, so scaling by tokens alone overestimates the time of a smaller image (errs long).
TEXT_TOKENS = 77 + 256
T4 = "Tesla T4"  # torch.cuda.get_device_name() on Colab's free GPU
T4_BUDGET_S = 20 * 60  # a default study or sweep should finish in about this long on a free T4


def image_tokens(height: int, width: int) -> int:
    """Tokens the transformer attends over for one image: 2 x 2 patches of the 8x-downsampled latent, plus the text."""
    return (height // 16) * (width // 16) + TEXT_TOKENS


@functools.cache
def _reference() -> dict:
    import json

    return json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Estimate:
    """Seconds per image (None: no estimate before the first image) and where the figure comes from."""

    seconds_per_image: float | None
    source: str


def estimate(preset: str, *, offload: str = "none", fast: bool = False, steps: int, height: int, width: int,
             device_name: str | None, stand_in: bool = False) -> Estimate:
    """Seconds per image of `preset` on the GPU called `device_name` (torch.cuda.get_device_name()).

    The H200's measured seconds for the same plan x (H200 peak FLOP/s / this GPU's) x (steps / 28) x
    (tokens at this size / tokens at 1024 x 1024). It assumes this GPU reaches the same fraction of its
    datasheet peak as the H200 did (a third): a small GPU that throttles (a T4 at 70 W) will take longer."""
    if stand_in:
        return Estimate(None, "the stand-in: no measured figure to scale")
    if not device_name:
        return Estimate(None, "no CUDA GPU: no measured figure to scale")
    row_name = REFERENCE_ROWS.get((preset, offload, bool(fast)))
    peak = peak_flops(device_name)
    if row_name is None or peak is None:
        missing = f"no H200 row for {preset} with offload={offload!r}" if row_name is None else f"no peak FLOP/s for {device_name}"
        return Estimate(None, missing)
    reference = _reference()
    meta = reference["meta"]
    row = next(r for r in reference["rows"] if r["plan"] == row_name)
    ratio = peak_flops(meta["device"]) / peak
    size_ratio = image_tokens(height, width) / image_tokens(meta["size"], meta["size"])
    seconds = row["s_per_image"] * ratio * steps / meta["steps"] * size_ratio
    return Estimate(seconds, f"the H200's measured {row_name!r} row ({row['s_per_image']:.1f} s at "
                             f"{meta['size']}² and {meta['steps']} steps) x {ratio:.1f} (datasheet peak FLOP/s, "
                             f"H200 / {device_name}) x {steps}/{meta['steps']} steps x {size_ratio:.2f} (tokens)")


def t4_seconds_per_image(preset: str = "sd35-large-nf4", *, steps: int = 28, size: int = 1024) -> float:
    """The free Colab T4's seconds per image, derived as `estimate` says (NF4 Large is what fits a T4)."""
    return estimate(preset, steps=steps, height=size, width=size, device_name=T4).seconds_per_image


def seeds_for_budget(images_per_seed: int, seconds_per_image: float, budget_s: float = T4_BUDGET_S,
                     minimum: int = 6) -> int:
    """How many seeds fit `budget_s`, at least `minimum` (6: the fewest seeds whose exact sign-flip test
    can reach p < 0.05; below it a study cannot answer at all)."""
    if images_per_seed < 1 or not seconds_per_image > 0:
        raise ValueError(f"images_per_seed must be >= 1 and seconds_per_image > 0, not {images_per_seed}, {seconds_per_image}.")
    return max(minimum, int(budget_s // (images_per_seed * seconds_per_image)))


def device_name() -> str | None:
    """This machine's GPU name as the FLOP/s table knows it, or None without CUDA."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def study_estimate(jobs, stand_in: bool, device: str = "auto") -> Estimate:
    """Seconds per image over `jobs` (their models' mean, weighted by images) before the first one,
    from `estimate` with the offload the planner will choose for each model; none if a model has none."""
    gpu = device_name() if device in ("auto", "cuda") or device.startswith("cuda") else None
    plans: dict[str, tuple[str, bool]] = {}
    total, n = 0.0, 0
    for job in jobs:
        model = job["model"]
        if model not in plans:  # what load_pipeline will do: planned once per model, before any weights are read
            plans[model] = ("none", False)
            if gpu and not stand_in and any(model == key[0] for key in REFERENCE_ROWS):
                from ..loading.planner import plan_loading

                plan = plan_loading(model, stand_in=False, size=(job["height"], job["width"]))
                if not plan.fits:
                    return Estimate(None, f"{model} does not fit this machine (the planner: {plan.reason})")
                plans[model] = (plan.offload, plan.fast)
        offload, fast = plans[model]
        one = estimate(model, offload=offload, fast=fast, steps=job["num_inference_steps"], height=job["height"],
                       width=job["width"], device_name=gpu, stand_in=stand_in)
        if one.seconds_per_image is None:
            return one
        total, n = total + one.seconds_per_image, n + 1
    return Estimate(total / n if n else None, one.source if n else "no jobs")


def pipeline_estimate(pipe, steps: int, height: int, width: int) -> Estimate:
    """`estimate` for a pipeline `load_pipeline` made (its plan says preset, offload and stand-in)."""
    info = getattr(pipe, "load_info", None)
    if info is None:
        return Estimate(None, "a pipeline load_pipeline did not make: no plan to look up")
    plan = info.plan
    gpu = device_name() if plan.device.startswith("cuda") else None
    return estimate(plan.preset, offload=plan.offload, fast=plan.fast, steps=steps, height=height, width=width,
                    device_name=gpu, stand_in=plan.stand_in)


# A study's two designs (notebook 05, benchmarks/negative_prompt_study.py): "quick" fits about
# T4_BUDGET_S on a free T4 (512 x 512, as many seeds as fit, at least 6); "full" is 1024 x 1024 and 16 seeds.
DESIGNS = {"quick": dict(size=512, seeds=None), "full": dict(size=1024, seeds=16)}


def study_design(design: str, images_per_seed: int, *, steps: int = 28, seeds: int | None = None) -> dict:
    """A design's size, seeds (`seeds` overrides them), images, seconds on a free T4, smallest reachable p
    and detectable effect."""
    from .stats import detectable_effect, smallest_possible_p_value

    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(map(repr, DESIGNS))}, not {design!r}.")
    size = DESIGNS[design]["size"]
    t4 = t4_seconds_per_image(size=size, steps=steps)
    seeds = seeds or DESIGNS[design]["seeds"] or seeds_for_budget(images_per_seed, t4)
    return dict(name=design, size=size, seeds=seeds, images=seeds * images_per_seed,
                t4_seconds=seeds * images_per_seed * t4, smallest_p=smallest_possible_p_value(seeds),
                detectable=detectable_effect(seeds))


def describe_design(design: dict) -> str:
    """A design in one sentence: what ran, how long on a T4, and what it can detect."""
    d = design
    power = (f"it detects a paired effect of {d['detectable']:.2f} SD or more 80% of the time"
             if math.isfinite(d["detectable"]) else "too few seeds to detect any effect at p < 0.05")
    return (f"the {d['name']} design: {d['size']}², {d['seeds']} seeds, {d['images']} images, about "
            f"{_duration(d['t4_seconds'])} on a free T4; its smallest reachable p is {d['smallest_p']:.2g}, and {power}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class ReaderClock:
    """A tqdm bar over `n_images`, and the sentences a reader needs: before the first image, how many
    images and how long they should take (the estimate, or that the first image will tell); after it,
    the projection from the measured time when there was no estimate; at the end, what it took."""

    def __init__(self, what: str, n_images: int, estimate: Estimate, *, processes: int = 1, desc: str = "images",
                 echo=print):
        from tqdm.auto import tqdm

        self.what, self.n, self.estimate, self.processes, self.echo = what, n_images, estimate, max(1, processes), echo
        self.measured: list[float] = []
        self.started = time.perf_counter()
        self.echo(self.plan_text())
        self.bar = tqdm(total=n_images, desc=desc, unit="image")

    def plan_text(self) -> str:
        head = f"{self.what}: {self.n} image{'s' if self.n != 1 else ''}"
        if self.processes > 1:
            head += f" over {self.processes} processes"
        s = self.estimate.seconds_per_image
        if s is None:
            return f"{head}. No estimate before the first image ({self.estimate.source}); its measured time gives one."
        total = s * self.n / self.processes
        return f"{head}, estimated {_duration(total)} here ({s:.1f} s per image: {self.estimate.source})."

    def tick(self, seconds: float = math.nan) -> None:
        """One image done; `seconds` is what making it took (NaN: not made here, e.g. found on disk)."""
        self.bar.update(1)
        if math.isnan(seconds):
            return
        self.measured.append(seconds)
        left = self.n - self.bar.n
        if len(self.measured) == 1 and self.estimate.seconds_per_image is None and left:
            self.echo(f"First image measured: {seconds:.1f} s, so about {_duration(seconds * left / self.processes)} "
                      f"for the other {left} (the bar's ETA follows the measured rate).")

    def close(self) -> str:
        self.bar.close()
        took = time.perf_counter() - self.started
        text = f"{self.what}: {self.bar.n} images in {_duration(took)}"
        if self.measured:
            text += f", {sum(self.measured) / len(self.measured):.1f} s per image measured"
            if self.estimate.seconds_per_image is not None:
                text += f" (estimated {self.estimate.seconds_per_image:.1f})"
        self.echo(text + ".")
        return text
