"""save_quantized → load_pipeline(transformer=folder): the second load skips quantization."""

import os

import pytest
import torch
from conftest import REPO, TESTS

import helpers
from helpers.loading.quantized_checkpoints import folder_bytes, save_quantized, saved_quantization
from tools.subprocess_probe import measure_in_subprocess

GEN = dict(num_inference_steps=2, height=64, width=64, seed=3)


def linear4bit_count(module) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in module.modules())


@pytest.fixture
def saved_nf4(bnb_cpu, tmp_path):
    """A freshly quantized stand-in pipeline, its image, and its quantized parts saved right away."""
    pipe = helpers.load_pipeline("sd35-large-nf4", stand_in=True, quantize_t5=True)
    folder = tmp_path / "nf4"
    saved = save_quantized(pipe, folder)
    image = helpers.generate(pipe, "a cat on a sofa", **GEN).image
    yield folder, saved, image
    helpers.release_current_pipeline()


def test_reload_gives_linear4bit_and_identical_image(saved_nf4):
    folder, saved, image = saved_nf4
    assert set(saved) == {"transformer", "text_encoder_3"}
    assert saved_quantization(folder) == "nf4"
    pipe = helpers.load_pipeline("sd35-large-nf4", stand_in=True, quantize_t5=True, transformer=folder)
    assert pipe.load_info.plan.transformer_source == str(folder)
    assert linear4bit_count(pipe.transformer) > 0
    assert linear4bit_count(pipe.text_encoder_3) > 0
    again = helpers.generate(pipe, "a cat on a sofa", **GEN)
    assert again.recipe["transformer_source"] == str(folder)
    assert again.image.tobytes() == image.tobytes()


def test_reload_computes_in_the_requested_dtype(saved_nf4):
    """Saved with bf16 compute; reloaded with dtype=float16 (a T4) the 4-bit maths must follow."""
    import bitsandbytes as bnb

    folder, _, _ = saved_nf4
    pipe = helpers.load_pipeline("sd35-large-nf4", stand_in=True, quantize_t5=True, transformer=folder,
                                 dtype=torch.float16)
    for component in (pipe.transformer, pipe.text_encoder_3):
        layers = [m for m in component.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and {m.compute_dtype for m in layers} == {torch.float16}
    assert helpers.loading.load.compute_dtypes(pipe) == {"transformer": "float16", "text_encoder_3": "float16"}
    assert pipe.load_info.plan.dtype == torch.float16


def test_saved_transformer_is_smaller_than_bf16(saved_nf4, tiny_dir):
    folder, _, _ = saved_nf4
    # Compare the transformer folders: the stand-in's bf16 weights vs the saved NF4 ones.
    bf16 = helpers.load_pipeline("sd35-large", stand_in=True, dtype=torch.bfloat16)
    bf16.transformer.save_pretrained(folder.parent / "bf16")
    assert folder_bytes(folder / "transformer") < folder_bytes(folder.parent / "bf16")


def test_refuses_to_overwrite(saved_nf4, bnb_cpu):
    folder, _, _ = saved_nf4
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    pipe = helpers.load_pipeline("sd35-large-nf4", stand_in=True)
    with pytest.raises(FileExistsError, match="not empty"):
        save_quantized(pipe, folder)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_a_full_disk_leaves_no_half_checkpoint(bnb_cpu, tmp_path):
    """A save that fails part-way (the transformer's config written, its weights refused) leaves
    no folder to reload by mistake; the next save, with room, is whole."""
    from disk_full import disk_full_after, is_disk_full

    pipe = helpers.load_pipeline("sd35-large-nf4", stand_in=True)
    folder = tmp_path / "nf4"
    with disk_full_after(8192), pytest.raises(OSError, match=r"nf4 could not be written .*is the disk full\? "
                                                 "Nothing was left behind") as full:  # room for config.json only
        save_quantized(pipe, folder)
    assert is_disk_full(full.value)
    assert list(tmp_path.iterdir()) == []  # neither nf4/ nor a temporary folder
    with pytest.raises(ValueError, match="not a saved pipeline or transformer folder: .*no such folder"):
        helpers.plan_loading("sd35-large-nf4", stand_in=True, transformer=str(folder))

    (tmp_path / ".nf4.partial-abc123").mkdir()  # what a hard kill mid-save leaves
    with pytest.raises(ValueError, match=r"\.nf4\.partial-abc123 is an unfinished save_quantized"):
        helpers.plan_loading("sd35-large-nf4", stand_in=True, transformer=str(folder))
    saved = save_quantized(pipe, folder)
    assert saved_quantization(folder) == "nf4" and saved["transformer"] == folder / "transformer"
    for bad in (None, 123):
        with pytest.raises(TypeError, match="folder must be a folder path"):
            save_quantized(pipe, bad)
    helpers.release_current_pipeline()


def test_refuses_unquantized_pipeline(tiny_pipe, tmp_path):
    with pytest.raises(ValueError, match="not quantized"):
        save_quantized(tiny_pipe, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_bad_transformer_source_fails_before_loading(tmp_path):
    with pytest.raises(ValueError, match="not a saved pipeline or transformer folder: .*: it is empty"):
        helpers.plan_loading("sd35-large-nf4", stand_in=True, transformer=str(tmp_path))
    with pytest.raises(ValueError, match="neither a folder"):
        helpers.plan_loading("sd35-large-nf4", stand_in=True, transformer="no-such-folder")


def test_subprocess_measures_both_loads(saved_nf4, tiny_dir):
    """Both loads measured in fresh processes with the shim on PYTHONPATH (as the notebook does)."""
    folder, _, _ = saved_nf4
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS / "kernel_site"), str(REPO)]))
    code = (
        "import helpers\n"
        "pipe = helpers.load_pipeline('sd35-large-nf4', stand_in=True{extra})\n"
        "result = pipe.load_info.plan.transformer_source\n"
    )
    fresh = measure_in_subprocess(code.format(extra=""), env=env)
    reload = measure_in_subprocess(code.format(extra=f", transformer={str(folder)!r}"), env=env)
    assert fresh["error"] is None and reload["error"] is None
    assert fresh["result"] is None and reload["result"] == str(folder)
    assert fresh["peak_rss_bytes"] > 50 * 2**20 and reload["peak_rss_bytes"] > 50 * 2**20
