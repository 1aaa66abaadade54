"""fit_to_machine: a model as each machine can run it, and one sentence per change."""

import pytest
import torch

import helpers
from helpers.errors import GPUOutOfMemoryError
from helpers.loading import as_machine, hardware_profiles, machine_fit


def fit_on(monkeypatch, machine, model, capsys=None):
    monkeypatch.setenv(as_machine.ENV, machine)
    kwargs = helpers.fit_to_machine(model, stand_in=True)
    return kwargs


def test_h100_runs_large_as_published(monkeypatch, capsys, tiny_dir):
    kwargs = fit_on(monkeypatch, "H100 80 GB", "sd35-large")
    out = capsys.readouterr().out
    assert kwargs["model"] == "sd35-large" and kwargs["dtype"] == torch.bfloat16 and kwargs["offload"] == "none"
    assert "Plan: sd35-large: bfloat16, full T5, offload none, on cuda" in out
    assert machine_fit.changes("sd35-large", helpers.plan_loading(**kwargs)) == []


def test_t4_says_each_change_in_one_sentence(monkeypatch, capsys, tiny_dir):
    kwargs = fit_on(monkeypatch, "free Colab T4", "sd35-large")
    out = capsys.readouterr().out
    plan = helpers.plan_loading(**kwargs)
    assert plan.fits and plan.device == "cuda" and plan.preset != "sd35-large"  # bf16 Large cannot run on a T4
    assert "Precision changed: sd35-large cannot run here in full precision" in out
    assert ("fp16 instead of bf16" in out) == (plan.dtype == torch.float16) == True  # noqa: E712  (sm_75)
    if plan.t5 != "full":
        assert machine_fit.T5_SENTENCES[plan.t5] in out
    if plan.offload != "none":
        assert machine_fit.OFFLOAD_SENTENCES[plan.offload] in out


def test_mac_16_gb_runs_medium_instead_of_large(monkeypatch, capsys, tiny_dir):
    kwargs = fit_on(monkeypatch, "Apple M2 16 GB", "sd35-large")
    out = capsys.readouterr().out
    assert kwargs["model"] == "sd35-medium"
    assert "Model changed: sd35-large cannot run here, so sd35-medium" in out


def test_quiet_prints_nothing_and_an_unknown_model_is_refused_first(monkeypatch, capsys, tiny_dir):
    monkeypatch.setenv(as_machine.ENV, "RTX 4060 8 GB")
    helpers.fit_to_machine("sd35-medium", stand_in=True, quiet=True)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="Unknown model preset 'sd35-larg'"):
        helpers.fit_to_machine("sd35-larg")


def test_nothing_fits_is_one_error_naming_each_try(monkeypatch, tiny_dir):
    tiny = hardware_profiles.HardwareProfile("tiny GPU", "cuda", (8, 9), 2 * 1024**3, 4 * 1024**3, 1024**3)
    monkeypatch.setattr(as_machine, "profile", lambda: tiny)
    with pytest.raises(GPUOutOfMemoryError, match="No SD3.5 model.*sd35-large:.*sd35-medium:"):
        helpers.fit_to_machine("sd35-large", stand_in=True)


def test_transformer_room_answers_for_the_machine(monkeypatch, tiny_dir):
    monkeypatch.setenv(as_machine.ENV, "free Colab T4")
    why = machine_fit.transformer_room(None, "large")
    assert why is not None and "held as float16 needs" in why and "14.50 GiB is free" in why  # 15.17 GiB alone
    assert machine_fit.transformer_room("nf4", "large") is None
    monkeypatch.setenv(as_machine.ENV, "H100 80 GB")
    assert machine_fit.transformer_room(None, "large") is None
    monkeypatch.delenv(as_machine.ENV)
    assert machine_fit.transformer_room(None, "large") is None  # this CPU: no accelerator to fill


def test_a_preset_the_machine_cannot_run_falls_back(monkeypatch, capsys, tiny_dir):
    kwargs = fit_on(monkeypatch, "Apple M2 16 GB", "sd35-large-8bit")  # bitsandbytes 8-bit: CUDA only
    assert kwargs["model"] != "sd35-large-8bit" and helpers.plan_loading(**kwargs).fits
    assert "Model changed: sd35-large-8bit cannot run here" in capsys.readouterr().out
