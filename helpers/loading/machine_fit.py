"""`fit_to_machine`: a model "as this machine can run it", and one sentence per thing that changed.

The planner decides (`plan_loading`: what fits, ranked); this module only picks the first model of a
short list that fits and says, in plain words, what the plan changed against the model as published
(bf16 or its own quantization, full T5, everything on the GPU, its own image size) and what that does
to the results.
"""

from __future__ import annotations

import torch

from ..errors import GPUOutOfMemoryError
from .planner import LoadingPlan, plan_loading
from .presets import PRESETS, get_preset
from .ranking import PREQUANTIZED, T5_WORDS, describe_options

# What runs when the model asked for cannot: the same weights in 4-bit first, then the smaller model.
FALLBACKS = ("sd35-large-nf4", "sd35-medium")

T5_SENTENCES = {
    "dropped": "T5 dropped: prompts are read by CLIP only (77 tokens); long prompts and text in images suffer.",
    "nf4": "T5 in 4-bit NF4: prompt embeddings differ slightly from full T5's, images a little too.",
    "staged": "T5 staged: prompts are encoded first and T5 is released before the transformer loads; "
              "same embeddings, but each new prompt reloads T5 (slower prompt changes).",
}
T5_DROPPED = T5_SENTENCES["dropped"]  # load_pipeline says it too, when the planner (not the reader) dropped T5
OFFLOAD_SENTENCES = {
    "model": "Model offload: each model moves to the GPU only while it runs; same images, each one slower.",
    "sequential": "Sequential offload: layers stream to the GPU one by one; same images, many times slower.",
    "group": "Group offload: blocks of layers stream to the GPU while others compute; same images, slower.",
}


def fit_to_machine(model: str = "sd35-large", *, stand_in: bool | None = None, size=None,
                   quiet: bool = False) -> dict:
    """The `load_pipeline` keyword arguments of `model` as this machine can run it: `model` itself
    when it fits, else the planner's plan that would, else SD3.5 Large in NF4, else SD3.5 Medium.
    Prints the plan and one plain sentence per change from the model as published (T5 dropped or
    quantized, precision, model, size, offload), unless `quiet`. Raises GPUOutOfMemoryError when
    nothing fits. Use it as `helpers.load_pipeline(**helpers.fit_to_machine("sd35-large"))`."""
    get_preset(model)  # an unknown name is the same clear error as load_pipeline's
    kwargs, plan = choose(model, stand_in=stand_in, size=size)
    if not quiet:
        print(f"{model} as this machine runs it: {describe_options(kwargs)}")
        print(f"Plan: {plan_words(plan)}")
        for sentence in changes(model, plan):
            print(sentence)
    if stand_in is not None:
        kwargs["stand_in"] = stand_in
    return kwargs


def choose(model: str, *, stand_in: bool | None = None, size=None) -> tuple[dict, LoadingPlan]:
    """(load_pipeline kwargs, plan) of the first of `model` and its FALLBACKS that fits here: at the
    published size first (Medium before a smaller Large), then at the smaller size the planner finds."""
    reasons = {}
    for smaller_size in (False, True):
        for candidate in dict.fromkeys((model, *FALLBACKS)):
            try:
                plan = plan_loading(candidate, stand_in=stand_in, size=size)
            except ValueError as e:  # a preset this machine cannot run at all (8-bit on a Mac): the next one
                reasons[candidate] = f"{candidate}: {e}"
                continue
            instead = plan.would_fit or {}
            if not plan.fits and instead and instead.get("transformer") != PREQUANTIZED and (
                    smaller_size or "size" not in instead):
                options = {k: v for k, v in instead.items() if k != "model"}
                options.setdefault("size", size)
                plan = plan_loading(instead["model"], stand_in=stand_in, **options)
            if plan.fits:
                return options_of(plan, size), plan
            reasons[candidate] = f"{candidate}: {plan.reason}"
    raise GPUOutOfMemoryError("No SD3.5 model of this collection fits this machine. " + " ".join(reasons.values()))


def options_of(plan: LoadingPlan, size=None) -> dict:
    """The load_pipeline keyword arguments that make exactly `plan` (its model, offload, T5, dtype)."""
    kwargs = {"model": plan.preset, "offload": plan.offload, "dtype": plan.dtype}
    t5 = {"dropped": {"drop_t5": True}, "nf4": {"quantize_t5": True}, "staged": {"staged_t5": True},
          "full": {"drop_t5": False, "quantize_t5": False, "staged_t5": False}}
    kwargs.update(t5[plan.t5])
    published = (get_preset(plan.preset).default_size,) * 2
    if size is not None or (not plan.stand_in and tuple(plan.size) != published):  # a smaller size, as planned
        kwargs["size"] = tuple(plan.size) if plan.size[0] != plan.size[1] else plan.size[0]
    return kwargs


def plan_words(plan: LoadingPlan) -> str:
    """The plan in a few words: model, precision, T5, offload and peak GPU memory."""
    from ..measuring import format_bytes

    dtype = str(plan.dtype).removeprefix("torch.")
    weights = {"nf4": f"NF4 transformer computing in {dtype}", "int8": f"8-bit transformer computing in {dtype}"}
    gpu = "" if plan.gpu_bytes_needed is None else f", {format_bytes(plan.gpu_bytes_needed)} of GPU memory"
    return (f"{plan.preset}: {weights.get(plan.quantization, dtype)}, {T5_WORDS.get(plan.t5, plan.t5)}, "
            f"offload {plan.offload}, on {plan.device}{gpu}")


def plan_summary(plan: LoadingPlan) -> dict:
    """The plan's choices and bytes as plain values (what as_machine records and a test replays)."""
    return {"words": plan_words(plan), "preset": plan.preset, "device": plan.device,
            "dtype": str(plan.dtype).removeprefix("torch."), "quantization": plan.quantization, "t5": plan.t5,
            "offload": plan.offload, "fits": plan.fits, "size": list(plan.size), "gpu_bytes": plan.gpu_bytes_needed,
            "host_bytes": plan.host_bytes_needed}


def changes(model: str, plan: LoadingPlan) -> list[str]:
    """One sentence per way `plan` differs from `model` as published, and what it does to the results."""
    asked, ran = get_preset(model), PRESETS.get(plan.preset)
    sentences = []
    if ran is not None and plan.preset != model:
        if ran.family != asked.family:
            sentences.append(f"Model changed: {model} cannot run here, so {plan.preset} ({ran.title}) runs "
                             "instead: a smaller model, with less detail and weaker prompt adherence; its own "
                             "guidance and steps apply.")
        elif ran.repo_id == asked.repo_id and ran.quantization and not asked.quantization:
            sentences.append(f"Precision changed: {model} cannot run here in full precision, so its transformer "
                             f"is quantized ({plan.preset}): fine detail differs from bf16's, and the blog finds "
                             "negative prompts act more strongly.")
        else:
            sentences.append(f"Model changed: {plan.preset} ({ran.title}) runs instead of {model}.")
    if plan.t5 in T5_SENTENCES:
        sentences.append(T5_SENTENCES[plan.t5])
    if plan.dtype == torch.float16:
        sentences.append("fp16 instead of bf16 (this GPU has no bf16 units): results differ slightly, and a rare "
                         "overflow can give a black image.")
    if plan.offload in OFFLOAD_SENTENCES:
        sentences.append(OFFLOAD_SENTENCES[plan.offload])
    published = (asked.default_size, asked.default_size)
    if not plan.stand_in and tuple(plan.size) != published:
        sentences.append(f"Size {plan.size[1]}x{plan.size[0]} instead of {published[1]}x{published[0]}: "
                         "fewer pixels, less detail; the model was trained for its own size.")
    return sentences


def needs(plan: LoadingPlan) -> str:
    """What `plan` needs against what this machine has, in one clause (for "not run here: ...")."""
    from ..measuring import format_bytes

    parts = []
    if plan.gpu_bytes_needed is not None and plan.free_bytes is not None:
        parts.append(f"{format_bytes(plan.gpu_bytes_needed)} of GPU memory ({format_bytes(plan.free_bytes)} free)")
    if plan.host_bytes_available is not None:
        parts.append(f"{format_bytes(plan.host_bytes_needed)} of host RAM ({format_bytes(plan.host_bytes_available)} "
                     "available)")
    return f"{plan.preset} needs " + " and ".join(parts) + " in its best plan, more than this machine has"


def transformer_room(quantization: str | None, family: str = "large", size: int = 1024) -> str | None:
    """None when SD3.5 `family`'s transformer held as `quantization` (memory_model's names: None for
    the compute dtype, "nf4", "int8", "gguf-q4_0", ...) fits this machine's accelerator beside notebook
    07's bench pipeline (CLIP-L, CLIP-G, VAE) and one denoising step of a `size` image; else one
    sentence saying what it needs. Ask it before loading anything."""
    from ..measuring import format_bytes
    from . import as_machine, devices, memory_model

    with as_machine.answering():  # $SD35_AS_MACHINE: the device queries of that machine
        device = devices.pick_device()
        if device == "cpu":
            return None
        dtype = devices.pick_dtype(device, quantized=True)
        free = devices.free_accelerator_memory(device)
        kernel = devices.sdpa_kernel(device, dtype)
    counts = memory_model.FULL_SIZE[family]
    rest = sum(memory_model.loaded_bytes(counts[c], dtype) for c in ("text_encoder", "text_encoder_2", "vae"))
    transformer = memory_model.loaded_bytes(counts["transformer"], dtype, quantization)
    need = rest + transformer + memory_model.phase_working(family, size, dtype, kernel).denoise
    if need <= free:
        return None
    held = quantization or str(dtype).removeprefix("torch.")
    return (f"SD3.5 {family.title()}'s transformer held as {held} needs {format_bytes(need)} of GPU memory with "
            f"the rest of the pipeline, and {format_bytes(free)} is free here")
