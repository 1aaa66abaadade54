"""Class 7 (and class 8's write_gguf items): write_gguf writes through the project's atomic writer,
so a full disk leaves nothing, a user's own file is never touched, and of two writers to one path
exactly one succeeds; what is not a plain SD3 transformer is refused before any tensor is converted."""

import threading

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
import torch
from disk_full import disk_full_after, is_disk_full
from hypothesis import given
from hypothesis import strategies as st

from helpers.loading import gguf_checkpoints
from helpers.output_folders import PARTIAL


@pytest.fixture(scope="module")
def transformer(tiny_dir):
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel.from_pretrained(tiny_dir, subfolder="transformer", dtype=torch.bfloat16)


@given(limit=st.integers(0, 20_000), name=st.sampled_from(["model.gguf", "a b.gguf", "x"]))
def test_a_full_disk_leaves_no_file_and_no_temporary(transformer, tmp_path_factory, limit, name):
    folder = tmp_path_factory.mktemp("gguf")
    mine = folder / f"{name}.partial"  # a user's own file with the old fixed temporary name
    mine.write_bytes(b"mine")
    with pytest.raises(OSError, match=f"{name} could not be written.*is the disk full") as full, disk_full_after(limit):
        gguf_checkpoints.write_gguf(transformer, folder / name, "Q4_0")
    assert is_disk_full(full.value) or "written" in str(full.value.__cause__)  # numpy's words for a short write
    assert sorted(p.name for p in folder.iterdir()) == [mine.name] and mine.read_bytes() == b"mine"


def test_two_writers_to_one_path_one_wins_the_other_is_told(transformer, tmp_path):
    path, outcomes = tmp_path / "model.gguf", []
    start = threading.Barrier(2)

    def write():
        start.wait()
        try:
            gguf_checkpoints.write_gguf(transformer, path, "Q8_0")
            outcomes.append("written")
        except FileExistsError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert sorted(outcomes)[-1] == "written" and "nothing is overwritten" in sorted(outcomes)[0]
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"] and PARTIAL not in str(list(tmp_path.iterdir()))
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize("bad, error, match", [
    (None, TypeError, "transformer must be an SD3 transformer.*released pipeline"),
    ("transformer", TypeError, "transformer must be an SD3 transformer"),
    (torch.nn.Linear(2, 2), TypeError, "transformer must be an SD3 transformer"),
])
def test_what_is_not_a_transformer_is_refused(tmp_path, bad, error, match):
    with pytest.raises(error, match=match):
        gguf_checkpoints.write_gguf(bad, tmp_path / "x.gguf")
    assert not any(tmp_path.iterdir())


def test_a_quantized_transformer_is_refused_with_what_to_pass(transformer, tmp_path, monkeypatch):
    monkeypatch.setattr(transformer, "is_quantized", True, raising=False)
    with pytest.raises(ValueError, match="quantized models cannot be written as GGUF: pass the bf16 transformer"):
        gguf_checkpoints.write_gguf(transformer, tmp_path / "x.gguf")
