"""helpers.loading.hardware_profiles: the real planner on each machine readers use (only the device
queries answered for it), checked against the exact memory model."""

import dataclasses

import pytest
import torch

import helpers
from helpers.errors import GPUOutOfMemoryError
from helpers.loading import group_offload, hardware_profiles, host_memory, memory_model
from helpers.loading.architectures import TRANSFORMER_CONFIGS
from helpers.loading.hardware_profiles import (
    PROFILES,
    colab_t4_plan,
    get_profile,
    on_profile,
    plan_on,
    profile_plans,
)
from helpers.loading.planner import PREQUANTIZED, loaded_on_gpu

MODELS = ("sd35-large-nf4", "sd35-large", "sd35-large-8bit", "sd35-medium", "sd35-large-turbo")
T5_OPTIONS = ({}, {"quantize_t5": True}, {"drop_t5": True})


def _exact_peaks(profile, plan):
    """(accelerator bytes, host bytes) of `plan` recomputed here from the meta-built counts.

    NOT an independent reference: the same memory_model and host_memory functions the planner calls,
    put together again here, so the tests using it check how the planner combines them (phase,
    offload, device, what bitsandbytes loads on the GPU), not the numbers. The numbers are held to the
    measured GPU rows (test_planner_measurements, test_working_memory_measured) and to bytes really
    loaded (test_memory_model, test_plan_bytes_on_disk)."""
    preset = helpers.PRESETS[plan.preset]
    counts = memory_model.FULL_SIZE[preset.family]
    resident_t5 = "dropped" if plan.t5 == "staged" else plan.t5  # staged: T5 joins the text phase only
    weights = memory_model.pipeline_bytes(counts, plan.dtype, plan.quantization, resident_t5)
    working = memory_model.phase_working(preset.family, 1024, plan.dtype, plan.kernel)
    staged = 0
    if plan.t5 == "staged":
        staged = memory_model.loaded_bytes(counts["text_encoder_3"], plan.dtype, "nf4" if profile.device == "cuda" else None)
        working = dataclasses.replace(working, text_weights=staged)
    on_gpu = loaded_on_gpu(profile.device, plan.quantization, resident_t5)
    groups = None  # group offload: its own test (test_group_offload.py) checks the residency by hand
    if plan.offload == "group":
        groups = group_offload.residency(TRANSFORMER_CONFIGS[preset.family], weights, counts, plan.dtype,
                                         plan.quantization, on_gpu)
    gpu = memory_model.accelerator_bytes(plan.offload, weights, working, device=profile.device, loaded_on_gpu=on_gpu,
                                         groups=groups)
    reads = host_memory.checkpoint_read_bytes(counts, plan.quantization, resident_t5,
                                               prequantized=plan.transformer_source is not None)
    if staged:
        reads[host_memory.STAGED_T5_READ] = min(memory_model.loaded_bytes(counts["text_encoder_3"], torch.bfloat16),
                                                host_memory.SHARD_BYTES["text_encoder_3"])
    host = max(host_memory.host_bytes(plan.offload, profile.device, weights, reads, working.peak, on_gpu,
                                      staged).values())
    return gpu, host


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_every_profile_gets_a_plan_that_fits_or_says_what_would(profile):
    for model in MODELS:
        for t5 in T5_OPTIONS:
            if profile.device == "mps" and model == "sd35-large-8bit":
                with pytest.raises(ValueError, match="CUDA"):
                    plan_on(profile, model, **t5)
                continue
            if profile.device == "mps" and t5.get("quantize_t5"):  # transformers puts a 4-bit T5 on the CPU
                with pytest.raises(ValueError, match="update_device_map"):
                    plan_on(profile, model, **t5)
                continue
            plan = plan_on(profile, model, **t5)
            gpu, host = _exact_peaks(profile, plan)
            if profile.capability is not None and profile.capability < (8, 0):
                assert plan.dtype == torch.float16  # no bf16 below sm_80
            if plan.quantization or plan.t5 == "nf4":
                assert plan.offload != "sequential"
            if profile.device == "mps":
                assert plan.offload == "none"  # unified memory: offloading saves nothing
            if plan.fits:
                assert gpu <= profile.free_gpu_bytes and host <= profile.host_available_bytes, plan.reason
                continue
            assert plan.reason.startswith("does not fit")
            assert gpu > profile.free_gpu_bytes or host > profile.host_available_bytes
            if plan.would_fit is not None:
                assert "this would: load_pipeline(" in plan.reason
                options = dict(plan.would_fit)
                suggestion = plan_on(profile, **options)
                assert suggestion.fits, (plan.reason, suggestion.reason)


def test_free_colab_t4_runs_sd35_large_in_nf4_within_15_gb_and_12_7_gb_of_ram():
    t4 = get_profile("free Colab T4")
    assert t4.capability == (7, 5) and t4.host_bytes == int(12.7 * hardware_profiles.GiB)
    kwargs = colab_t4_plan(transformer="/content/drive/MyDrive/sd35-large-nf4")
    assert kwargs["model"] == "sd35-large-nf4" and kwargs["dtype"] == torch.float16
    assert kwargs.get("staged_t5")  # T5 kept: staged, the only way it fits there
    if "transformer" in kwargs:  # plan it as "a pre-quantized transformer" (the folder is the reader's)
        kwargs["transformer"] = PREQUANTIZED
    plan = plan_on(t4, **kwargs)
    assert plan.fits, plan.reason
    gpu, host = _exact_peaks(t4, plan)
    assert gpu <= t4.free_gpu_bytes < 15 * 1024**3
    assert host <= t4.host_available_bytes < 12.7 * 1024**3


def test_default_nf4_on_a_t4_gives_up_the_full_t5_and_says_why():
    """T5 left to the planner: the full T5 fits a T4 neither whole (GPU) nor offloaded (host RAM), so
    the best-ranked plan that fits is chosen, and the reason says what the full T5 would have needed."""
    plan = plan_on(get_profile("free Colab T4"), "sd35-large-nf4")
    assert plan.fits and plan.dtype == torch.float16 and plan.t5 != "full"
    assert "With full T5: does not fit" in plan.reason and "host RAM" in plan.reason
    asked = plan_on(get_profile("free Colab T4"), "sd35-large-nf4", drop_t5=False, quantize_t5=False)
    assert not asked.fits and "this would: load_pipeline('sd35-large-nf4'" in asked.reason


def test_load_pipeline_refuses_before_reading_weights(monkeypatch):
    # On a T4 with a token: refused with the plan that would fit, before any file is looked for.
    monkeypatch.setenv("HF_TOKEN", "hf_" + "Zq7" * 12)
    with on_profile(get_profile("free Colab T4")):
        with pytest.raises(GPUOutOfMemoryError, match="this would: load_pipeline") as info:
            helpers.load_pipeline("sd35-large", stand_in=False)
    assert "host RAM" in str(info.value) or "free on the cuda" in str(info.value)


def test_table_has_every_profile_and_reads_as_markdown():
    rows = profile_plans()
    assert {row["machine"] for row in rows} == {p.name for p in PROFILES}
    table = hardware_profiles.markdown(rows)
    assert table.splitlines()[0].startswith("| machine |")
    assert len(table.splitlines()) == len(rows) + 2
    t4 = [row for row in rows if row["machine"] == "free Colab T4"]
    assert all(row["dtype"] == "float16" for row in t4)
    large = next(row for row in t4 if row["model"] == "sd35-large")
    assert large["result"].startswith("does not fit") and large["instead"].startswith("load_pipeline('sd35-large-nf4'")


def test_this_machine_rows_are_the_planner_on_this_machines_own_answers():
    """Notebook 02's own-machine table: on a machine answering as the RTX 4090 profile does, the rows
    are that profile's rows (same planner, same queries), named for this machine's device."""
    profile = get_profile("RTX 4090 24 GB")
    with on_profile(profile):
        mine = hardware_profiles.this_machine_plans()
    theirs = profile_plans(profiles=[profile])
    assert [row["machine"] for row in mine] == ["this machine (cuda)"] * 3
    assert [dict(row, machine=None) for row in mine] == [dict(row, machine=None) for row in theirs]
    here = hardware_profiles.this_machine_plans(("sd35-large",))  # this CI machine: no GPU
    assert here[0]["machine"] == "this machine (cpu)" and here[0]["gpu_bytes"] is None


def test_on_profile_restores_the_real_machine():
    with on_profile(get_profile("H100 80 GB")):
        assert torch.cuda.is_available() and helpers.loading.devices.compute_capability("cuda") == (9, 0)
    assert not torch.cuda.is_available()
    assert helpers.loading.devices.free_accelerator_memory("cpu") is None
    with pytest.raises(ValueError, match="Unknown hardware profile"):
        get_profile("TPU v5")


def test_requirements_table_is_the_planner_on_every_profile():
    from helpers.loading import hardware_profiles

    table = hardware_profiles.requirements(["sd35-large-nf4", "sd35-medium"])
    lines = table.splitlines()
    assert lines[0] == "| machine | `sd35-large-nf4` | `sd35-medium` |"
    assert len(lines) == 2 + len(hardware_profiles.PROFILES)
    t4 = next(line for line in lines if line.startswith("| free Colab T4 |"))
    # The T4 cell names exactly the plan the planner picks (the one notebook 03 uses).
    t4_plan = hardware_profiles.plan_on(hardware_profiles.get_profile("free Colab T4"), "sd35-large-nf4")
    assert t4_plan.fits and hardware_profiles.plan_label(t4_plan) in t4
    h100 = next(line for line in lines if line.startswith("| H100 80 GB |"))
    assert "does not fit" not in h100


@pytest.mark.parametrize("kwargs, match", [
    (dict(profiles=["x"]), r"profiles must be a list of HardwareProfiles .*not \['x'\]"),
    (dict(models=None), r"models must be a list of preset names .*not None"),
    (dict(models=[1]), r"models must be a list of preset names"),
])
def test_profile_plans_wrong_types_are_one_clear_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        profile_plans(**kwargs)


@pytest.mark.parametrize("transformer", [123, "", ["a"]])
def test_colab_t4_plan_transformer_must_be_a_path_or_hub_id(transformer):
    with pytest.raises(TypeError, match=r"transformer must be the path of a save_quantized folder or a Hub id"):
        colab_t4_plan(transformer)
