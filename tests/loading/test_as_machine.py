"""SD35_AS_MACHINE: plans as on a hardware profile, the stand-in makes the images, each load recorded."""

import pytest
import torch

import helpers
from helpers.errors import GPUOutOfMemoryError
from helpers.loading import as_machine, hardware_profiles, machine_fit
from helpers.loading.load import load_pipeline, release_current_pipeline


@pytest.fixture
def as_t4(monkeypatch, tmp_path):
    log = tmp_path / "loads.jsonl"
    monkeypatch.setenv(as_machine.ENV, "free Colab T4")
    monkeypatch.setenv(as_machine.LOG_ENV, str(log))
    monkeypatch.setattr(as_machine, "LOADS", [])
    yield log
    release_current_pipeline()


def test_unknown_machine_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(as_machine.ENV, "free Colab T5")
    with pytest.raises(ValueError, match="SD35_AS_MACHINE='free Colab T5'.*free Colab T4"):
        helpers.plan_loading("sd35-large", stand_in=True)


def test_plan_is_the_real_preset_on_the_profile(as_t4, tiny_dir):
    plan = helpers.plan_loading("sd35-large", stand_in=True)
    expected = hardware_profiles.plan_on(hardware_profiles.get_profile("free Colab T4"), "sd35-large")
    assert (plan.device, plan.stand_in, plan.fits) == ("cuda", False, False)
    assert machine_fit.plan_summary(plan) == machine_fit.plan_summary(expected)
    assert not torch.cuda.is_available()  # the device queries answered as the T4 only while planning


def test_without_the_switch_the_stand_in_plans_here(monkeypatch, tiny_dir):
    monkeypatch.delenv(as_machine.ENV, raising=False)
    plan = helpers.plan_loading("sd35-large", stand_in=True)
    assert (plan.device, plan.stand_in, plan.fits) == ("cpu", True, True)


def test_the_stand_in_preset_and_real_runs_are_not_switched(as_t4, tiny_dir):
    assert helpers.plan_loading("tiny").device == "cpu"
    assert not as_machine.applies("sd35-large", False)  # stand_in=False: the real model, here
    assert helpers.model_id("sd35-large", stand_in=True) == str(tiny_dir)


def test_a_load_that_does_not_fit_the_profile_is_refused_and_recorded(as_t4, tiny_dir):
    with pytest.raises(GPUOutOfMemoryError, match="14.50 GiB free on the cuda.*this would: load_pipeline"):
        load_pipeline("sd35-large", stand_in=True)
    [entry] = as_machine.read_log(as_t4)
    assert entry["profile"] == "free Colab T4" and entry["model"] == "sd35-large"
    assert entry["plan"]["fits"] is False and entry["plan"]["device"] == "cuda"


def test_a_load_that_fits_makes_images_with_the_profiles_choices(as_t4, bnb_cpu):
    kwargs = helpers.fit_to_machine("sd35-large-nf4", stand_in=True, quiet=True)
    pipe = load_pipeline(**kwargs)
    machine = pipe.load_info.machine_plan
    assert machine.device == "cuda" and machine.dtype == torch.float16 and machine.fits
    assert pipe.load_info.plan.device == "cpu" and pipe.load_info.plan.stand_in  # the stand-in ran here
    assert pipe.load_info.plan.t5 == machine.t5  # with the T4's T5 choice
    assert (pipe.text_encoder_3 is None) == (machine.t5 in ("dropped", "staged"))
    assert (pipe.load_info.staged_t5 is not None) == (machine.t5 == "staged")  # T5 per new prompt, as on the T4
    [entry] = as_machine.read_log(as_t4)
    assert entry == as_machine.LOADS[0]
    assert entry["plan"] == machine_fit.plan_summary(machine)
    replayed = hardware_profiles.plan_on(hardware_profiles.get_profile("free Colab T4"), entry["model"],
                                         **{k: v for k, v in as_machine.options_from(entry["options"]).items()
                                            if k != "device"})
    assert machine_fit.plan_summary(replayed) == entry["plan"]
    image = helpers.generate(pipe, "a fox", num_inference_steps=2, seed=0).image
    assert image.size == (64, 64)


def test_cpu_only_is_a_machine_of_its_own(monkeypatch, tiny_dir):
    monkeypatch.setenv(as_machine.ENV, "CPU only")
    plan = helpers.plan_loading("sd35-large-nf4", stand_in=True)
    assert plan.device == "cpu" and not plan.stand_in and plan.host_bytes_available == as_machine.CPU_ONLY.host_available_bytes
