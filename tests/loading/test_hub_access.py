"""Token lookup through huggingface_hub, and the access check before any download."""

import pytest

from helpers.errors import GatedModelError
from helpers.loading import hub_access


def test_no_token_in_the_test_environment():
    assert hub_access.find_token() is None


def test_env_token_is_found(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    assert hub_access.find_token() == "hf_" + "x" * 34


def test_gated_without_token_or_cache_is_refused():
    assert not hub_access.is_cached("stabilityai/stable-diffusion-3.5-large")
    with pytest.raises(GatedModelError, match="hf auth login"):
        hub_access.require_access("stabilityai/stable-diffusion-3.5-large", None)
    hub_access.require_access("stabilityai/stable-diffusion-3.5-large", "hf_" + "x" * 34)  # a token: go on


def test_offline_is_detected():
    assert hub_access.offline()


def test_hub_refusal_becomes_instructions():
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    response = httpx2.Response(403, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    hub_error = GatedRepoError("Access to model x is restricted.", response=response)
    try:  # diffusers wraps the Hub's error in an OSError
        raise OSError("could not load") from hub_error
    except OSError as wrapped:
        explained = hub_access.explain_hub_error(wrapped, "stabilityai/stable-diffusion-3.5-large")
    assert isinstance(explained, GatedModelError)
    assert "accept the licence" in str(explained)
    assert hub_access.explain_hub_error(OSError("disk full"), "x") is None


def test_a_saved_pipeline_folder_counts_as_local_and_is_never_looked_up_on_the_hub(tiny_dir, tmp_path):
    assert hub_access.is_cached(str(tiny_dir))
    assert not hub_access.is_cached(str(tmp_path))  # a folder, but no pipeline in it
    assert not hub_access.is_cached("./not a repo id at all")


def test_a_pipeline_folder_on_disk_loads_offline(tiny_dir):
    import helpers

    assert hub_access.offline()
    pipe = helpers.load_pipeline(str(tiny_dir), stand_in=False)
    try:
        assert pipe.load_info.plan.stand_in is False and pipe.load_info.plan.model_id == str(tiny_dir)
        result = helpers.generate(pipe, "a cat", height=64, width=64, num_inference_steps=2)
        assert result.image.size == (64, 64)
    finally:
        helpers.release_current_pipeline()
