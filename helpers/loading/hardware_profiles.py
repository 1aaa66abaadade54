"""The machines readers use, and what `load_pipeline(offload="auto")` does on each.

Each profile is what the planner asks a machine (compute capability, free accelerator memory,
host RAM, Apple's Metal working set). `on_profile(profile)` answers those questions, and only
those, at their one seam in `helpers.loading.devices`, so the real planner runs unchanged as if on that
machine. README's memory guide is `markdown(profile_plans())`; notebook 02 shows
`markdown(this_machine_plans())`, the same planner on the reader's own machine.
"""

from __future__ import annotations

import os

import torch

from .. import measuring
from . import planner
from .machine_profiles import (  # noqa: F401  (the profiles, re-exported where README and notebooks name them)
    BUSY_MAC_HOST_IN_USE_BYTES,
    COLAB_HOST_IN_USE_BYTES,
    CUDA_CONTEXT_BYTES,
    DESKTOP_HOST_IN_USE_BYTES,
    MPS_WORKING_SET_FRACTION,
    PROFILES,
    GiB,
    HardwareProfile,
    MiB,
    get_profile,
    on_profile,
)

TABLE_MODELS = ("sd35-large-nf4", "sd35-large", "sd35-medium")  # the presets the memory tables show


def plan_on(profile: HardwareProfile, model: str = "sd35-large-nf4", **options) -> planner.LoadingPlan:
    """The plan `load_pipeline(model, **options)` (offload="auto" unless given) makes on `profile`."""
    with on_profile(profile):
        return planner.plan_loading(model, stand_in=False, **options)


def plan_label(plan: planner.LoadingPlan) -> str:
    """A short name for a plan: "NF4, NF4 T5", "bf16", "NF4 (pre-quantized), no T5", ..."""
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[plan.dtype]
    transformer = {None: precision, "nf4": "NF4", "int8": "8-bit"}[plan.quantization]
    if plan.fp8:  # planned with fast=True: float8 transformer blocks after a bf16 load (fast_plan.py)
        transformer = "FP8 fast"
    if plan.transformer_source is not None:
        transformer += " (pre-quantized)"
    t5 = {"full": "", "nf4": ", NF4 T5", "staged": ", staged T5", "dropped": ", no T5"}[plan.t5]
    return transformer + t5


def profile_plans(models=TABLE_MODELS, profiles=PROFILES, **options) -> list[dict]:
    """For every profile x preset, what `load_pipeline(preset, offload="auto", **options)` does: plan name, dtype,
    offload, peak accelerator and host-RAM bytes, "fits" or "does not fit: ...", and `instead`: the
    load_pipeline call that would fit (the full sentence is in `reason`)."""
    models = (models,) if isinstance(models, str) else models  # one name is one model, not its letters
    _check_table_args(models, profiles)
    return [plan_row(profile.name, model, plan_on(profile, model, **options)) for profile in profiles for model in models]


def _check_table_args(models, profiles) -> None:
    """`models`: a list of preset names; `profiles`: a list of HardwareProfiles (see PROFILES)."""
    if isinstance(models, (bytes, dict)) or not isinstance(models, (list, tuple)) or \
            not all(isinstance(m, str) for m in models):
        raise TypeError(f"models must be a list of preset names (e.g. ['sd35-large-nf4']), not {models!r:.80}.")
    if isinstance(profiles, (str, bytes, dict)) or not isinstance(profiles, (list, tuple)) or \
            not all(isinstance(p, HardwareProfile) for p in profiles):
        raise TypeError(f"profiles must be a list of HardwareProfiles (e.g. [get_profile('free Colab T4')]), "
                        f"not {profiles!r:.80}.")


def this_machine_plans(models=TABLE_MODELS) -> list[dict]:
    """The rows of `profile_plans` for the machine this runs on: the real planner on its own device
    queries (the real models' sizes, never the stand-in's), machine named "this machine (<device>)"."""
    models = (models,) if isinstance(models, str) else models  # one name is one model, not its letters
    rows = []
    for model in models:
        plan = planner.plan_loading(model, stand_in=False)
        rows.append(plan_row(f"this machine ({plan.device})", model, plan))
    return rows


def plan_row(machine: str, model: str, plan: planner.LoadingPlan) -> dict:
    """One row of `profile_plans`: what `plan` (for `model` on `machine`) loads, and whether it fits."""
    return {
        "machine": machine,
        "model": model,
        "plan": plan_label(plan),
        "dtype": str(plan.dtype).removeprefix("torch."),
        "offload": plan.offload,
        "gpu_bytes": plan.gpu_bytes_needed,
        "host_bytes": plan.host_bytes_needed,
        "result": "fits" if plan.fits else _short_problem(plan.reason),
        "instead": (("better: " + planner.describe_options(plan.better[0])) if plan.better else "") if plan.fits else (
            planner.describe_options(plan.would_fit) if plan.would_fit else "nothing fits"),
        "reason": plan.reason,
        "fits": plan.fits,
        "would_fit": plan.would_fit,
    }


def _short_problem(reason: str) -> str:
    gpu, host = "free on the" in reason, "host RAM must hold" in reason
    if gpu and host:
        return "does not fit: GPU memory, and host RAM when offloaded"
    return "does not fit: " + ("GPU memory" if gpu else "host RAM")


PROFILE_COLUMNS = {"machine": "machine", "model": "load_pipeline(...)", "plan": "plan", "offload": "offload",
                   "gpu_bytes": "GPU memory", "host_bytes": "host RAM", "result": "result",
                   "instead": "this would fit (or fits and ranks higher)"}


def markdown(rows: list[dict]) -> str:
    """The rows of `profile_plans` as a Markdown table (bytes in GiB)."""
    from .plan_benchmarks import markdown_table

    return markdown_table(rows, PROFILE_COLUMNS)


def requirements(models, profiles=PROFILES) -> str:
    """A notebook's prerequisites as a Markdown table: one row per machine, one column per model,
    each cell what `load_pipeline(model)` does there ("NF4, none offload" or "does not fit: try ..."),
    from `profile_plans` (the real planner on each profile); nothing is loaded."""
    models = list(dict.fromkeys(models))
    cells = {(row["machine"], row["model"]): row for row in profile_plans(models, profiles)}

    def cell(row):
        if row["fits"]:
            offload = "" if row["offload"] == "none" else f", {row['offload']} offload"
            return f"{row['plan']}{offload} ({measuring.format_bytes(row['gpu_bytes'])})"
        return f"does not fit; fits as `{row['instead']}`" if row["would_fit"] else "does not fit"

    lines = ["| machine | " + " | ".join(f"`{m}`" for m in models) + " |", "|---|" + "---|" * len(models)]
    for profile in profiles:
        lines.append(f"| {profile.name} | " + " | ".join(cell(cells[profile.name, m]) for m in models) + " |")
    return "\n".join(lines)


def fitting_plan(profile: HardwareProfile, model: str = "sd35-large-nf4", transformer: str | None = None) -> dict:
    """The `load_pipeline` keyword arguments of the plan that fits `profile` for `model`: the model's
    own plan when it fits, else the planner's "this would" plan. A pre-quantized transformer in it
    is `transformer` (a `save_quantized` folder or Hub id) when given, else a placeholder."""
    if transformer is not None and (not isinstance(transformer, (str, os.PathLike)) or not str(transformer)):
        raise TypeError(f"transformer must be the path of a save_quantized folder or a Hub id (a str; it may exist "
                        f"only on the machine planned for), not {type(transformer).__name__} {transformer!r:.60}.")
    plan = plan_on(profile, model)
    if plan.fits:
        kwargs = dict(model=model, offload=plan.offload, dtype=plan.dtype)
        kwargs.update({"nf4": dict(quantize_t5=True), "staged": dict(staged_t5=True),
                       "dropped": dict(drop_t5=True)}.get(plan.t5, {}))
    elif plan.would_fit is None:
        raise ValueError(f"No plan of this collection fits {profile.name} for {model}: {plan.reason}")
    else:
        kwargs = dict(plan.would_fit)
    if transformer is not None and kwargs.get("transformer") == planner.PREQUANTIZED:
        kwargs["transformer"] = str(transformer)
    return kwargs


def colab_t4_plan(transformer: str | None = None) -> dict:
    """The exact `load_pipeline` keyword arguments for SD3.5 Large on a free Colab T4 (sm_75,
    15 GB, 12.7 GB RAM), as the planner computes them; see `fitting_plan`. The plan stages T5
    (`staged_t5=True`): `generate` loads T5 for each new prompt, or encode them all first by hand with
    `helpers.loading.staged_t5.encode_with_t5(prompts, **colab_t4_plan())`."""
    return fitting_plan(get_profile("free Colab T4"), "sd35-large-nf4", transformer)
