"""Bad arguments to the loading helpers: one clear error naming the argument, before any work."""

import math

import pytest
import torch

import helpers
from helpers.loading import hardware_profiles, memory_model, planner
from helpers.loading.quantized_checkpoints import save_quantized


@pytest.mark.parametrize("option", ["drop_t5", "quantize_t5", "stand_in", "keep_previous", "fast"])
@pytest.mark.parametrize("value", ["no", 1])
def test_yes_no_options_accept_only_bools(tiny_dir, option, value):
    held = helpers.load_pipeline("tiny")
    with pytest.raises(ValueError, match=f"{option} must be True"):
        helpers.load_pipeline("tiny", **{option: value})
    assert held.transformer is not None  # refused before the pipeline you have is released
    helpers.release_current_pipeline()


@pytest.mark.parametrize("option", ["drop_t5", "quantize_t5", "stand_in"])
def test_the_planner_refuses_non_bool_options_too(option):
    with pytest.raises(ValueError, match=f"{option} must be True"):
        helpers.plan_loading("tiny", **{option: "no"})


def test_use_stand_in_and_model_id_refuse_non_bools():
    with pytest.raises(ValueError, match="stand_in must be True, False or None"):
        helpers.use_stand_in("false")
    with pytest.raises(ValueError, match="stand_in must be True, False or None"):
        helpers.model_id("sd35-large", stand_in="no")


@pytest.mark.parametrize("word,expected", [("1", True), ("ON", True), (" Yes ", True), ("true", True),
                                           ("0", False), ("off", False), ("No", False), ("FALSE", False)])
def test_sd35_stand_in_reads_yes_and_no_words(monkeypatch, word, expected):
    monkeypatch.setenv("SD35_STAND_IN", word)
    assert helpers.use_stand_in(None) is expected


@pytest.mark.parametrize("word", ["maybe", "2", "nope", "y e s"])
def test_sd35_stand_in_refuses_other_words(monkeypatch, word):
    monkeypatch.setenv("SD35_STAND_IN", word)
    with pytest.raises(ValueError, match=r"SD35_STAND_IN=.* is not a yes/no value"):
        helpers.use_stand_in(None)


def test_sd35_stand_in_off_loads_the_real_model(monkeypatch):
    """SD35_STAND_IN=off must mean "never the stand-in", not be ignored (here: no GPU, so the real
    model is refused for its own reasons, never silently replaced by the stand-in)."""
    monkeypatch.setenv("SD35_STAND_IN", "off")
    assert helpers.plan_loading("sd35-medium").stand_in is False


@pytest.mark.parametrize("name", ["free_bytes", "host_bytes"])
@pytest.mark.parametrize("value,error,message", [
    (math.nan, ValueError, "must be a finite number"),
    (math.inf, ValueError, "must be a finite number"),
    (-1, ValueError, "must be at least 0"),
    ("16GB", TypeError, "must be a number of bytes"),
    (True, TypeError, "must be a number of bytes"),
    (10**400, ValueError, "must be a finite number"),
])
def test_planner_byte_counts_are_checked(name, value, error, message):
    with pytest.raises(error, match=f"{name} {message}"):
        helpers.plan_loading("sd35-large-nf4", stand_in=False, **{name: value})


def test_a_nan_free_memory_no_longer_fits():
    """The old planner compared against NaN (always False) and reported that the plan fits."""
    with pytest.raises(ValueError, match="free_bytes"):
        planner.choose_offload("auto", "cuda", {"transformer": 10}, math.nan)


@pytest.mark.parametrize("offload", [1, 0, 1.0, None])
def test_offload_must_be_a_word_or_a_bool(offload):
    with pytest.raises(ValueError, match="offload must be"):
        helpers.plan_loading("tiny", offload=offload)


@pytest.mark.parametrize("model", [None, 123, "sd35-larg", "", "not a preset"])
def test_model_id_refuses_what_load_pipeline_refuses(tiny_dir, model):
    with pytest.raises(ValueError) as from_model_id:
        helpers.model_id(model)
    with pytest.raises(ValueError) as from_load:
        helpers.load_pipeline(model)
    assert str(from_model_id.value) == str(from_load.value)


def test_a_misspelt_preset_gets_a_suggestion():
    with pytest.raises(ValueError, match="Unknown model preset 'sd35-larg'.*Did you mean 'sd35-large'"):
        helpers.model_id("sd35-larg")


def test_release_pipeline_refuses_a_name(tiny_pipe):
    with pytest.raises(TypeError, match="release_pipeline needs a loaded pipeline.*not str 'tiny'"):
        helpers.release_pipeline("tiny")
    assert tiny_pipe.transformer is not None


def test_on_profile_needs_a_profile():
    with pytest.raises(TypeError, match="profile must be a HardwareProfile.*get_profile"):
        with hardware_profiles.on_profile("free Colab T4"):
            pass


def test_profile_plans_takes_one_model_name_as_one_model():
    profile = hardware_profiles.PROFILES[0]
    rows = hardware_profiles.profile_plans(models="sd35-large", profiles=[profile])
    assert rows == hardware_profiles.profile_plans(models=("sd35-large",), profiles=[profile])
    assert len(rows) == 1


def test_is_cached_refuses_what_is_not_a_name():
    from helpers.loading.hub_access import is_cached

    for value in (None, 123):
        with pytest.raises(TypeError, match="repo_id must be a Hub id or a folder"):
            is_cached(value)


def test_keep_previous_is_checked_before_loading(tiny_dir):
    with pytest.raises(ValueError, match="keep_previous must be True or False, not 'no'"):
        helpers.load_pipeline("tiny", keep_previous="no")


@pytest.mark.parametrize("args,error,message", [
    (("large", -1024), ValueError, "size must be a whole number of pixels, at least 16, not -1024"),
    (("large", 0), ValueError, "size must be"),
    (("large", 1024.0), ValueError, "size must be"),
    (("nope",), ValueError, "transformer_config must be one of 'large', 'medium'"),
    ((None,), TypeError, "transformer_config must be a family name"),
    (({"patch_size": 2},), TypeError, "transformer_config must be a family name"),
    (("large", 1024, "bf16"), ValueError, "dtype must be"),
    (("large", 1024, torch.bfloat16, "fast"), ValueError, "kernel must be one of"),
])
def test_working_bytes_checks_its_arguments(args, error, message):
    with pytest.raises(error, match=message):
        memory_model.working_bytes(*args)


def test_loaded_bytes_needs_a_census():
    with pytest.raises(TypeError, match="counts must be a memory_model.Census.*not NoneType"):
        memory_model.loaded_bytes(None, torch.bfloat16)
    with pytest.raises(ValueError, match="dtype must be"):
        memory_model.loaded_bytes(memory_model.FULL_SIZE["large"]["vae"], "bfloat16")


@pytest.mark.parametrize("pipe", ["tiny", None, 123])
def test_save_quantized_names_what_it_was_given(pipe, tmp_path):
    with pytest.raises(TypeError, match="save_quantized needs a loaded pipeline"):
        save_quantized(pipe, tmp_path / "q")
    assert not (tmp_path / "q").exists()
