"""Run a notebook as on another machine: `SD35_AS_MACHINE="free Colab T4"` (a profile's name).

With the switch set and no GPU to run the real models, every `plan_loading` / `load_pipeline` call is
planned for the real preset with the device queries answered for that profile (`on_profile`, nothing
else faked), and must fit there; the offline stand-in then makes the images on this machine, with the
plan's T5 choice. Each load is recorded (model, options, plan), in `LOADS` and, when
$SD35_AS_MACHINE_LOG names a file, as one JSON line there, so tests can replay it on every profile.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os

import torch

from .machine_profiles import (
    DESKTOP_HOST_IN_USE_BYTES,
    PROFILES,
    GiB,
    HardwareProfile,
    get_profile,
    on_profile,
)

ENV = "SD35_AS_MACHINE"
LOG_ENV = "SD35_AS_MACHINE_LOG"
# A machine without a GPU (the planner's CPU plans, checked against its host RAM): not a row of README's table.
CPU_ONLY = HardwareProfile("CPU only", "cpu", None, 0, 32 * GiB, DESKTOP_HOST_IN_USE_BYTES)
MACHINES = (*PROFILES, CPU_ONLY)  # every name the switch takes
LOADS: list[dict] = []  # every load_pipeline call this process made as on the profile
_making_images = contextvars.ContextVar("sd35_as_machine_making_images", default=False)


def profile() -> HardwareProfile | None:
    """The profile $SD35_AS_MACHINE names, None when unset; an unknown name is one clear ValueError."""
    name = os.environ.get(ENV, "").strip()
    if not name:
        return None
    if name == CPU_ONLY.name:
        return CPU_ONLY
    try:
        return get_profile(name)
    except ValueError as e:
        raise ValueError(f"{ENV}={name!r}: {e} (or {CPU_ONLY.name!r})") from None


def applies(model, stand_in: bool) -> bool:
    """Whether this call is planned as on the profile: the switch is set, the call loads the stand-in
    (`stand_in`: planner.use_stand_in's answer: no GPU here, or stand_in=True) and `model` is a
    published SD3.5 preset."""
    from .presets import PRESETS

    if _making_images.get() or profile() is None:
        return False
    preset = PRESETS.get(model) if isinstance(model, str) else None
    return preset is not None and preset.repo_id is not None and stand_in is True


@contextlib.contextmanager
def answering():
    """Within this block the device queries answer for the switch's profile (nothing when it is unset)."""
    chosen = profile()
    with on_profile(chosen) if chosen is not None else contextlib.nullcontext():
        yield chosen


@contextlib.contextmanager
def making_images():
    """Within this block plans are this machine's: the stand-in loads here, on what is really present."""
    token = _making_images.set(True)
    try:
        yield
    finally:
        _making_images.reset(token)


def replayable(options: dict) -> dict:
    """`options` with torch dtypes as their names, so the record is JSON and `options_from` reads it back."""
    return {k: (str(v).removeprefix("torch.") if isinstance(v, torch.dtype) else v) for k, v in options.items()}


def options_from(recorded: dict) -> dict:
    """A recorded call's options back as `plan_loading` keyword arguments."""
    return {k: (getattr(torch, v) if k == "dtype" and v != "auto" else v) for k, v in recorded.items()}


def record(model: str, options: dict, plan: dict) -> dict:
    """Keep one load call made as on the profile: its model, options and plan (`machine_fit.plan_summary`)."""
    entry = {"profile": profile().name, "model": model, "options": replayable(options), "plan": plan}
    LOADS.append(entry)
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
    return entry


def read_log(path) -> list[dict]:
    """The load calls a run wrote to $SD35_AS_MACHINE_LOG, in order."""
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.strip()]


def stand_in_options(machine_plan, model: str, quantizes_here: bool) -> tuple[str, dict]:
    """(preset, T5 options) the stand-in loads with to follow `machine_plan`; where bitsandbytes cannot
    quantize here, the same weights without 4-bit ones (T5 full), said in one line."""
    from .presets import PRESETS

    t5 = dict(drop_t5=machine_plan.t5 == "dropped", quantize_t5=machine_plan.t5 == "nf4",
              staged_t5=machine_plan.t5 == "staged")
    if quantizes_here:
        return model, t5
    full = next(name for name, p in PRESETS.items() if p.repo_id == PRESETS[model].repo_id and p.quantization is None)
    print(f"The stand-in runs {full} without 4-bit weights: bitsandbytes cannot quantize on this CPU "
          f"(on {profile().name} it does).")
    return full, dict(drop_t5=t5["drop_t5"])
