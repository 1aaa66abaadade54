"""The stand-in: SD3.5-shaped, deterministic, built fast, loaded through from_pretrained."""

import json
import time

import torch
from diffusers import StableDiffusion3Pipeline

from helpers.stand_in import is_stand_in, save_tiny_pipeline, tiny_pipeline_dir


def test_folder_has_every_sd35_component(tiny_dir):
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    for name in ("transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "text_encoder_3",
                 "tokenizer", "tokenizer_2", "tokenizer_3"):
        assert index[name][0] is not None, name
    assert is_stand_in(tiny_dir)
    size = sum(f.stat().st_size for f in tiny_dir.rglob("*") if f.is_file())
    assert size < 10 * 1024**2


def test_loads_through_from_pretrained_with_sd35_shapes(tiny_dir):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_dir)
    assert pipe.vae.config.latent_channels == 16
    assert pipe.vae.config.shift_factor == 0.0609 and pipe.vae.config.scaling_factor == 1.5305
    assert pipe.transformer.config.in_channels == 16
    assert type(pipe.text_encoder).__name__ == "CLIPTextModelWithProjection"
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel"
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    # Two CLIP projections side by side make the transformer's pooled input.
    pooled = pipe.text_encoder.config.projection_dim + pipe.text_encoder_2.config.projection_dim
    assert pooled == pipe.transformer.config.pooled_projection_dim


def test_every_quantizable_linear_is_a_multiple_of_64(tiny_dir):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_dir)
    for model in (pipe.transformer, pipe.text_encoder_3):
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                assert module.in_features % 64 == 0 and module.out_features % 64 == 0, name


def test_tokenizers_are_real_and_local(tiny_dir):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_dir)
    ids = pipe.tokenizer("a birthday cake").input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id
    assert len(ids) > 3
    assert pipe.tokenizer.decode(ids, skip_special_tokens=True).strip() == "a birthday cake"
    t5_ids = pipe.tokenizer_3("a birthday cake").input_ids
    assert t5_ids[-1] == pipe.tokenizer_3.eos_token_id
    assert pipe.tokenizer_3.decode(t5_ids, skip_special_tokens=True) == "a birthday cake"


def test_build_is_deterministic_and_fast(tmp_path):
    started = time.perf_counter()
    first = save_tiny_pipeline(tmp_path / "a")
    build_seconds = time.perf_counter() - started
    second = save_tiny_pipeline(tmp_path / "b")
    for file in sorted(first.rglob("*.safetensors")):
        twin = second / file.relative_to(first)
        assert file.read_bytes() == twin.read_bytes(), file.name
    assert build_seconds < 60  # "a few seconds" on a quiet machine; generous for a busy CI box


def test_tiny_pipeline_dir_reuses_a_finished_build(tmp_path):
    folder = tiny_pipeline_dir(tmp_path / "tiny")
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert tiny_pipeline_dir(tmp_path / "tiny") == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".tiny-build-*"))  # no scratch folders left behind


def test_generates_64px_quickly_on_one_core(tiny_dir):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_dir)
    kwargs = dict(num_inference_steps=4, height=64, width=64, generator=torch.Generator().manual_seed(0))
    pipe("warm-up", **kwargs)
    started = time.perf_counter()
    image = pipe("a cat", **kwargs).images[0]
    assert image.size == (64, 64)
    assert time.perf_counter() - started < 5  # ~0.05 s here; the bound only catches a broken build


def test_clip_tokenizer_counts_everyday_english_about_one_token_per_word(tiny_dir):
    """Like the real CLIP tokenizer, so the blog's prompts are not reported as truncated."""
    from helpers.studies.jobs import BLOG_PLACEMENT_PROMPT

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_dir)
    words = BLOG_PLACEMENT_PROMPT.split()
    ids = pipe.tokenizer(BLOG_PLACEMENT_PROMPT).input_ids
    assert len(ids) - 2 == len(words) < pipe.tokenizer.model_max_length - 2
    everyday = "a little girl is reading a book by the window on a rainy winter morning"
    assert len(pipe.tokenizer(everyday).input_ids) - 2 <= 1.2 * len(everyday.split())
    # Rare words still split into pieces, as in CLIP; nothing is lost.
    rare = "a zyzzyva"
    assert pipe.tokenizer.decode(pipe.tokenizer(rare).input_ids, skip_special_tokens=True).strip() == rare
