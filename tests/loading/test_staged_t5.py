"""Staged T5 on the free Colab T4: the text encoders (T5 in NF4) encode, are released, then the
T5-less T4 plan loads and renders from the embeddings, the image a pipeline with that T5 renders."""

import pytest
import torch

import helpers
from helpers.errors import GPUOutOfMemoryError
from helpers.generation.prompt_embeddings import TEXT_ENCODERS, encode_prompt
from helpers.loading import host_memory, memory_model
from helpers.loading.hardware_profiles import colab_t4_plan, get_profile, on_profile, plan_on
from helpers.loading.staged_t5 import encode_with_t5, encoder_bytes, text_encoder_plan

PROMPT = "a capybara holding a sign that reads hello world"


def test_staged_t5_on_the_t4_plan_renders_what_a_pipeline_with_t5_renders(bnb_cpu):
    t4 = colab_t4_plan()
    assert t4.get("staged_t5") and t4["dtype"] == torch.float16  # the T4 plan has no room for a resident T5
    [staged] = encode_with_t5([PROMPT], **t4, stand_in=True)
    assert staged.staged_t5 == "nf4" and "text_encoder_3=T5EncoderModel" in staged.source
    pipe = helpers.load_pipeline(**t4, stand_in=True)
    assert pipe.text_encoder_3 is None
    result = helpers.generate(pipe, embeddings=staged, num_inference_steps=2)
    assert result.recipe["t5"] == "nf4, staged" and result.recipe["prompt"] == PROMPT

    # The same model with the same NF4 T5 on board: equal embeddings, a byte-identical image.
    with_t5 = helpers.load_pipeline(t4["model"], dtype=t4["dtype"], quantize_t5=True, stand_in=True)
    assert torch.equal(encode_prompt(with_t5, PROMPT).prompt_embeds, staged.prompt_embeds)
    same = helpers.generate(with_t5, PROMPT, num_inference_steps=2)
    assert same.image.tobytes() == result.image.tobytes()
    # Without T5 the picture changes: T5 is what the staged embeddings bring back.
    no_t5 = helpers.load_pipeline(**dict(t4, staged_t5=False, drop_t5=True), stand_in=True)
    assert helpers.generate(no_t5, PROMPT, num_inference_steps=2).image.tobytes() != result.image.tobytes()


def test_staged_embeddings_only_fit_the_pipeline_of_the_same_text_encoders(bnb_cpu):
    [staged] = encode_with_t5(PROMPT, **colab_t4_plan(), stand_in=True)
    other = helpers.load_pipeline("tiny", dtype=torch.float32)  # other CLIPs (dtype, folder)
    with pytest.raises(ValueError, match="made by other text encoders"):
        helpers.generate(other, embeddings=staged, num_inference_steps=1)


@pytest.mark.parametrize("prompts,message", [([], "prompts is empty"), ("  ", "prompt is empty"), ([3], "string")])
def test_bad_prompts_are_refused_before_the_current_pipeline_is_released(tiny_dir, prompts, message):
    pipe = helpers.load_pipeline("tiny")
    with pytest.raises((ValueError, TypeError), match=message):
        encode_with_t5(prompts, stand_in=True)
    assert helpers.generate(pipe, "a cat", num_inference_steps=1).image  # still loaded


def test_encoders_that_do_not_fit_are_refused_before_loading(tiny_dir):
    with pytest.raises(GPUOutOfMemoryError, match=r"text encoders of tiny \(T5 nf4\) need about .* of GPU memory, but 0.0 MiB is free"):
        encode_with_t5(PROMPT, "tiny", stand_in=True, free_bytes=1)  # planning's "what if only 1 byte were free"


def test_on_the_free_t4_each_phase_fits_and_together_they_do_not():
    t4 = get_profile("free Colab T4")
    with on_profile(t4):
        encoders = text_encoder_plan(**colab_t4_plan(), stand_in=False)
        transformer = helpers.plan_loading(**colab_t4_plan(), stand_in=False)
    assert encoders.t5 == "nf4" and encoders.dtype == torch.float16
    free = t4.free_gpu_bytes
    assert encoder_bytes(encoders) <= free and transformer.gpu_bytes_needed <= free
    t5 = encoders.estimated_bytes["text_encoder_3"]
    assert transformer.gpu_bytes_needed + t5 > free  # T5 beside the transformer: no room
    # Loading the encoders straight to the GPU reads one checkpoint shard at a time (T5's 5 GB is the
    # largest): Colab's RAM holds it with room to spare.
    reads = host_memory.checkpoint_read_bytes(memory_model.FULL_SIZE["large"], None, "nf4", prequantized=False)
    weights = {name: encoders.estimated_bytes[name] for name in TEXT_ENCODERS}
    host = host_memory.host_bytes("none", "cuda", weights, {name: reads[name] for name in TEXT_ENCODERS})
    assert max(host.values()) <= t4.host_available_bytes - 4 * 1024**3


def test_a_pipeline_loaded_with_staged_t5_encodes_each_new_prompt_once_as_encode_with_t5_does(bnb_cpu, tmp_path):
    from helpers.generation.png_metadata import read_png_recipe, save_png_with_recipe
    from helpers.generation.prompt_embeddings import PromptCache

    t4 = colab_t4_plan()
    [by_hand] = encode_with_t5([PROMPT], **t4, stand_in=True)  # the two phases, by hand
    pipe = helpers.load_pipeline(**t4, stand_in=True)
    info = pipe.load_info
    assert info.plan.t5 == "staged" and info.staged_t5 == "nf4" and pipe.text_encoder_3 is None
    assert "text_encoder_3" not in info.plan.estimated_bytes and info.staged_encodes == 0  # nothing encoded yet

    first = helpers.generate(pipe, PROMPT, num_inference_steps=2)
    again = helpers.generate(pipe, PROMPT, seed=1, num_inference_steps=2)
    assert info.staged_encodes == 1 and pipe.text_encoder_3 is None  # T5 loaded once, and released
    given = helpers.generate(pipe, embeddings=by_hand, num_inference_steps=2)
    assert first.image.tobytes() == given.image.tobytes() != again.image.tobytes()
    assert first.recipe["t5"] == again.recipe["t5"] == "nf4, staged"
    _, recipe = read_png_recipe(save_png_with_recipe(first.image, first.recipe, tmp_path))
    assert recipe["t5"] == "nf4, staged"  # the PNG says T5 was staged

    # PromptCache (and so the studio) goes through the same per-pipeline cache: a new prompt once.
    cache = PromptCache(pipe)
    other = cache.get("a red fox", "blurry")
    assert info.staged_encodes == 2 and other.staged_t5 == "nf4"
    cache.get("a red fox", "blurry")
    helpers.generate(pipe, "a red fox", negative_prompt="blurry", num_inference_steps=1)
    assert info.staged_encodes == 2
    assert torch.equal(cache.get(PROMPT).prompt_embeds, by_hand.prompt_embeds)  # encoded once, by generate
    helpers.release_current_pipeline()


def test_the_planner_stages_t5_only_where_a_resident_t5_does_not_fit():
    t4, h100 = get_profile("free Colab T4"), get_profile("H100 80 GB")

    on_t4 = plan_on(t4, "sd35-large-nf4")
    assert on_t4.fits and on_t4.t5 == "staged" and on_t4.staged_t5 == "nf4" and "new prompt" in on_t4.reason
    # Its text phase holds T5 beside the resident pipeline; denoising and decoding do not.
    phases = on_t4.gpu_phases
    t5 = on_t4.working.text_weights
    assert t5 > 5 * 1024**3 and phases["text"] - t5 < phases["decode"] < phases["text"] <= t4.free_gpu_bytes
    resident = plan_on(t4, "sd35-large-nf4", quantize_t5=True)
    assert not resident.fits  # the same T5 kept resident does not fit
    assert plan_on(h100, "sd35-large-nf4").t5 == "full"  # room for T5: never staged
    with pytest.raises(ValueError, match="staged_t5=True contradict"):
        plan_on(t4, "sd35-large-nf4", staged_t5=True, drop_t5=True)
    with pytest.raises(ValueError, match="staged_t5 must be True, False or None"):
        plan_on(t4, "sd35-large-nf4", staged_t5="yes")
    assert plan_on(t4, "sd35-large-nf4", staged_t5=False).t5 == "dropped"  # asked not to: T5 goes, and it says so
