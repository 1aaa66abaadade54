"""How the planner ranks the plans that fit, speed against quality, stated once.

`RANKING` orders (T5, offload) pairs, best first:

1. full T5, no offload: the model as published, at full speed;
2. T5 in 4-bit NF4, no offload: prompt following close to the full T5 (not on Apple Silicon, where
   transformers puts a 4-bit T5 on the CPU);
3. full T5, model offload: the same images, but every image moves each model to the GPU and back
   (H200: 17.4 s against 5.5 s per image for SD3.5 Large NF4);
4. T5 in NF4, model offload;
5.-6. full T5, T5 in NF4, each with group offload (helpers.loading.group_offload): one transformer
   block at a time, the next streamed in while one computes: less GPU memory than model offload, the
   blocks copied every step (hidden behind compute where the stream keeps up), far faster than layer by
   layer, and no wait per new prompt;
7. staged T5, no offload: T5 (in 4-bit, on CUDA) is loaded for the text phase only and released before
   denoising, so the same embeddings as 2. and 4., but each new prompt waits for T5 to load again
   (its checkpoint read and quantized: seconds to a minute) and every prompt seen is cached;
8. staged T5, model offload; 9. staged T5, group offload;
10. no T5, no offload: fast, but without T5's prompt following and text rendering;
11. no T5, model offload; 12. no T5, group offload;
13. full T5, sequential offload: layer by layer, many times slower (never for 4-bit models);
14. no T5, sequential offload.

Then a full-precision transformer before a 4-bit one (NF4 changes the images a little, and on Apple
Silicon bitsandbytes dequantizes its weights on every call), 4-bit before 8-bit, and quantizing on
load before a pre-quantized folder (which the reader must make first).

`auto` keeps what the reader chose (preset, T5, dtype, offload if given) and takes the fastest
offload that fits; `alternatives` ranks every other plan that fits, so the planner can name the
faster or better ones it did not pick, and suggest the best one when nothing fits.
"""

from __future__ import annotations

import torch

PREQUANTIZED = "<pre-quantized folder>"  # stands for a save_quantized folder in suggested plans

RANKING = (
    ("full", "none"), ("nf4", "none"), ("full", "model"), ("nf4", "model"), ("full", "group"), ("nf4", "group"),
    ("staged", "none"), ("staged", "model"), ("staged", "group"),
    ("dropped", "none"), ("dropped", "model"), ("dropped", "group"), ("full", "sequential"), ("dropped", "sequential"),
)
T5_ORDER = ("full", "nf4", "staged", "dropped")  # best first
TRANSFORMER_RANKING = (None, "nf4", "int8")  # full precision first
FULL_PRECISION = {"sd35-large-nf4": ["sd35-large"], "sd35-large-turbo-nf4": ["sd35-large-turbo"]}  # same weights, bf16
FOUR_BIT = {"sd35-large": "sd35-large-nf4", "sd35-large-8bit": "sd35-large-nf4",  # the same weights in NF4
            "sd35-large-turbo": "sd35-large-turbo-nf4"}
T5_WORDS = {"full": "full T5", "nf4": "T5 in 4-bit", "staged": "staged T5", "dropped": "no T5"}
STAGED_COST = ("staged T5 loads T5 for each new prompt's text encoding only and releases it before denoising: "
               "the same embeddings as a resident T5, but every new prompt waits for T5 to load again")
OFFLOAD_SPEED = {"none": 0, "model": 1, "group": 2, "sequential": 3}


def rank(plan) -> tuple:
    """Sort key of a plan (lower is better): RANKING, then the transformer's precision, then on-load
    quantization before a pre-quantized folder."""
    pair = (plan.t5, plan.offload)
    first = RANKING.index(pair) if pair in RANKING else len(RANKING)
    precision = TRANSFORMER_RANKING.index(plan.quantization) if plan.quantization in TRANSFORMER_RANKING else 9
    return first, precision, plan.transformer_source is not None


def t5_choices(drop_t5, quantize_t5, device: str, offload="auto", staged_t5=None) -> list[str]:
    """The T5 plans to rank, best first: None leaves the choice to the planner; True or False is kept.
    A 4-bit T5 is left out, unless asked for (the planner then says why it cannot run), on Apple
    Silicon and with sequential offload (accelerate's layer hooks break 4-bit weights); staged T5
    (`staged_t5=True`) with sequential offload, and where the reader asked for no 4-bit T5 on CUDA."""
    choices = list(T5_ORDER)
    if drop_t5:
        return ["dropped"]
    if quantize_t5:
        return ["nf4"]
    if staged_t5:
        return ["staged"]
    if drop_t5 is False:
        choices.remove("dropped")
    if quantize_t5 is False or device == "mps" or offload == "sequential":
        choices.remove("nf4")
    if staged_t5 is False or offload == "sequential" or (quantize_t5 is False and device != "mps"):
        choices.remove("staged")
    return choices[:1] if device == "cpu" else choices


SMALLER_SIDES = (896, 768, 640, 512)  # square image sizes tried, largest first, when nothing fits at the asked one


def alternatives(preset, options: dict, dtype, plan_for, prequantized: str = PREQUANTIZED,
                 skip: tuple = (), size: tuple[int, int] | None = None) -> list[tuple[dict, object]]:
    """Every other plan of `preset`'s family that fits, best first, as (load_pipeline kwargs, plan);
    `skip`: the (preset, t5) of the plan already chosen.

    `plan_for(model, options, transformer)` plans one option set (raising ValueError for plans this
    device cannot run); `prequantized` is the placeholder of a save_quantized folder. `size`: the
    (height, width) planned for, given when nothing fits it: then, if no plan fits that size either,
    the plans of the largest smaller square size in SMALLER_SIDES that has any (kwargs with `size=`)."""
    found = _alternatives_at(preset, options, dtype, plan_for, prequantized, skip)
    if found or size is None:
        return found
    for side in (s for s in SMALLER_SIDES if s < min(size)):
        found = _alternatives_at(preset, dict(options, size=(side, side)), dtype, plan_for, prequantized, ())
        if found:
            return found
    return []


def _alternatives_at(preset, options: dict, dtype, plan_for, prequantized, skip) -> list[tuple[dict, object]]:
    models = [options["model"]]
    if options["model"] in FOUR_BIT:
        models.append(FOUR_BIT[options["model"]])  # the 4-bit transformer is what a small GPU needs
    models += FULL_PRECISION.get(options["model"], [])
    found = []
    for model in models:
        quantized_model = _resolve(model).quantization == "nf4"
        for t5 in T5_ORDER:
            for transformer in (None, prequantized) if quantized_model else (None,):
                trial = dict(options, model=model, offload="auto", dtype=dtype,
                             quantize_t5=t5 == "nf4", drop_t5=t5 == "dropped", staged_t5=t5 == "staged")
                if (model, t5) == tuple(skip) and transformer is None:
                    continue  # the plan already chosen
                try:
                    plan = plan_for(model, trial, transformer)
                except ValueError:
                    continue  # e.g. a 4-bit T5 on Apple Silicon
                if plan.fits:
                    kwargs = dict(trial, offload=plan.offload)
                    if transformer is not None:
                        kwargs["transformer"] = transformer
                    found.append(({k: v for k, v in kwargs.items() if v is not False and v is not None}, plan))
    return sorted(found, key=lambda pair: rank(pair[1]))


def better_than(chosen, found: list[tuple[dict, object]], limit: int = 2) -> list[tuple[dict, object, str]]:
    """The plans of `found` that rank above `chosen` or run faster, each with why it was not picked."""
    picked, seen = [], set()
    for kwargs, plan in found:
        key = (plan.preset, plan.t5, plan.offload)  # a pre-quantized twin says nothing new
        if key not in seen and (rank(plan) < rank(chosen) or OFFLOAD_SPEED[plan.offload] < OFFLOAD_SPEED[chosen.offload]):
            picked.append((kwargs, plan, difference(chosen, plan)))
        seen.add(key)
    return picked[:limit]


def difference(chosen, other) -> str:
    """How `other` differs from `chosen`, in words, e.g. "no offload (faster), but no T5"."""
    gains, costs = [], []
    if other.offload != chosen.offload:
        words = f"offload='{other.offload}'"
        (gains if OFFLOAD_SPEED[other.offload] < OFFLOAD_SPEED[chosen.offload] else costs).append(
            words + (" (faster)" if OFFLOAD_SPEED[other.offload] < OFFLOAD_SPEED[chosen.offload] else " (slower)"))
    if other.t5 != chosen.t5:
        better_t5 = T5_ORDER.index(other.t5) < T5_ORDER.index(chosen.t5)
        (gains if better_t5 else costs).append(T5_WORDS[other.t5])
    if other.quantization != chosen.quantization:
        name = {None: "full-precision", "nf4": "NF4", "int8": "8-bit"}.get(other.quantization, str(other.quantization))
        words = f"{name} transformer" + (" (bitsandbytes 4-bit dequantizes on every call on Apple Silicon)"
                                         if chosen.device == "mps" and other.quantization is None else "")
        better = TRANSFORMER_RANKING.index(other.quantization) < TRANSFORMER_RANKING.index(chosen.quantization)
        (gains if better else costs).append(words)
    elif other.preset != chosen.preset:
        gains.append(f"the {other.preset} preset")
    text = ", ".join(gains) if gains else "ranked higher"
    return text + (f", but {', '.join(costs)}" if costs else "")


def describe_options(kwargs: dict) -> str:
    """A load_pipeline call as text, e.g. "load_pipeline('sd35-large-nf4', drop_t5=True, ...)"."""
    rest = []
    for key, value in kwargs.items():
        if key == "model":
            continue
        if isinstance(value, torch.dtype):
            value = "torch." + str(value).removeprefix("torch.")
        elif value == PREQUANTIZED:
            value = "<a save_quantized folder>"
        else:
            value = repr(value)
        rest.append(f"{key}={value}")
    return f"load_pipeline({kwargs['model']!r}, {', '.join(rest)})"


def _resolve(model: str):
    from .presets import resolve_preset

    return resolve_preset(model)
