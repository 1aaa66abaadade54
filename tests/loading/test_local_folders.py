"""Local model folders that are not what diffusers needs are refused first, saying what is missing;
a misspelt Hub id is named as missing before any memory complaint."""

import shutil

import pytest

import helpers
from helpers.errors import GPUOutOfMemoryError
from helpers.loading import devices, hub_access
from helpers.measuring import GiB

NOT_A_FOLDER = "not a saved pipeline or transformer folder: "


@pytest.fixture
def copy_of_tiny(tiny_dir, tmp_path):
    """A private copy of the stand-in pipeline folder, to break."""
    folder = tmp_path / "pipeline"
    shutil.copytree(tiny_dir, folder)
    return folder


def refused(model, what, **options):
    with pytest.raises(ValueError) as info:
        helpers.load_pipeline(str(model), stand_in=False, **options)
    assert str(info.value).startswith(NOT_A_FOLDER), info.value
    assert what in str(info.value), info.value
    return str(info.value)


def test_an_empty_folder(tmp_path):
    refused(tmp_path, "it is empty")


def test_a_folder_that_is_no_pipeline():
    refused("../..", "it has no model_index.json")


def test_a_path_to_nothing(tmp_path):
    refused(tmp_path / "missing", "there is no such folder")
    refused("./no/such/folder", "there is no such folder")


def test_a_10000_character_name():
    message = refused("x" * 10_000, "too long")
    assert len(message) < 300  # the name is shortened in the message


def test_a_broken_config(copy_of_tiny):
    (copy_of_tiny / "transformer" / "config.json").write_text('{"patch_size": 2,')
    refused(copy_of_tiny, "config.json in transformer cannot be read as JSON")
    (copy_of_tiny / "model_index.json").write_text("[1, 2]")
    refused(copy_of_tiny, "model_index.json holds a list")


def test_a_config_without_weights(copy_of_tiny):
    (copy_of_tiny / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    refused(copy_of_tiny, "vae/ has config.json but no weights")


def test_a_missing_component(copy_of_tiny):
    shutil.rmtree(copy_of_tiny / "text_encoder_2")
    refused(copy_of_tiny, "text_encoder_2/ is missing, though model_index.json lists it")


def test_truncated_safetensors(copy_of_tiny):
    weights = copy_of_tiny / "transformer" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    refused(copy_of_tiny, "transformer/diffusion_pytorch_model.safetensors is damaged or was cut short")


def test_a_damaged_transformer_folder_given_as_transformer(copy_of_tiny, tmp_path):
    folder = tmp_path / "saved"
    shutil.copytree(copy_of_tiny / "transformer", folder / "transformer")
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError, match=f"{NOT_A_FOLDER}.*saved: transformer/diffusion_pytorch_model.safetensors is damaged"):
        helpers.plan_loading("sd35-large-nf4", stand_in=True, transformer=str(folder))


def test_an_intact_copy_still_loads(copy_of_tiny):
    plan = helpers.plan_loading(str(copy_of_tiny), stand_in=False)
    assert plan.model_id == str(copy_of_tiny)


def test_a_misspelt_hub_id_is_named_before_any_memory_complaint(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "Xy4" * 12)
    monkeypatch.setattr(devices, "host_memory_available", lambda: 16 * GiB)  # too small for SD3.5 Large
    with pytest.raises(FileNotFoundError) as info:
        helpers.load_pipeline("stabilityai/stable-diffusion-3.5-larg", stand_in=False)
    message = str(info.value)
    assert "stabilityai/stable-diffusion-3.5-larg is not in the local Hugging Face cache" in message
    assert "not a known preset" in message and "Did you mean 'stabilityai/stable-diffusion-3.5-large'" in message
    assert "host RAM" not in message


def test_online_a_hub_id_the_hub_does_not_know_is_named(monkeypatch):
    """Online, one question to the Hub (faked here: the tests never touch the network)."""
    asked = []
    monkeypatch.setenv("HF_TOKEN", "hf_" + "Xy4" * 12)
    monkeypatch.setattr(hub_access, "offline", lambda: False)
    monkeypatch.setattr(hub_access.huggingface_hub, "repo_exists",
                        lambda repo_id, token=None: asked.append(repo_id) or False)
    monkeypatch.setattr(devices, "host_memory_available", lambda: 16 * GiB)
    with pytest.raises(FileNotFoundError, match="The Hub has no model someone/sd35-nope"):
        helpers.load_pipeline("someone/sd35-nope", stand_in=False)
    assert asked == ["someone/sd35-nope"]
    # A model the Hub has goes on to the memory check as before.
    monkeypatch.setattr(hub_access.huggingface_hub, "repo_exists", lambda repo_id, token=None: True)
    with pytest.raises(GPUOutOfMemoryError, match="host RAM"):
        helpers.load_pipeline("someone/sd35-large-finetune", stand_in=False)


def test_is_cached_is_false_for_a_broken_folder_name():
    assert hub_access.is_cached("x" * 10_000) is False
