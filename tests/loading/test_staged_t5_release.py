"""Staged T5 gives its GPU memory back: after `encode_with_t5` returns, the text encoders it loaded
are gone, even where something still holds the pipeline object they came in (a traceback, IPython's
output history). The free T4 path depends on it: the transformer loads into the room T5 left."""

import gc
import weakref

import torch

from helpers.generation.prompt_embeddings import TEXT_ENCODERS
from helpers.loading import load
from helpers.loading.staged_t5 import encode_with_t5

PROMPT = "a capybara holding a sign that reads hello world"


def test_encode_with_t5_releases_its_encoders(tiny_dir, monkeypatch):
    loaded = []

    def keep(*args, **kwargs):  # the real loader; the test keeps what it returned
        pipe = real(*args, **kwargs)
        loaded.append(pipe)
        return pipe

    real = load._from_pretrained
    monkeypatch.setattr(load, "_from_pretrained", keep)
    on_cuda = torch.cuda.is_available()
    if on_cuda:
        load.release_current_pipeline()
        gc.collect()
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated()

    [staged] = encode_with_t5([PROMPT], "tiny", stand_in=True, quantize_t5=False)

    [pipe] = loaded
    assert staged.prompt_embeds is not None
    # The pipeline object may outlive the call; its encoders must not.
    assert all(getattr(pipe, name) is None for name in TEXT_ENCODERS), {n: type(getattr(pipe, n)) for n in TEXT_ENCODERS}
    assert not [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]  # nothing left in it
    if on_cuda:  # what the T4 needs: the encoders' bytes back, within 1 MiB (the embeddings are KiB)
        assert torch.cuda.memory_allocated() - baseline < 2**20, torch.cuda.memory_allocated() - baseline


def test_the_encoders_die_with_the_call(tiny_dir, monkeypatch):
    """Weak references to the encoder modules are dead once encode_with_t5 returns, without the test
    collecting garbage (release_pipeline collects it: nothing waits for a later gc cycle)."""
    refs = []

    def watch(*args, **kwargs):
        pipe = real(*args, **kwargs)
        refs.extend(weakref.ref(getattr(pipe, name)) for name in TEXT_ENCODERS if getattr(pipe, name) is not None)
        return pipe

    real = load._from_pretrained
    monkeypatch.setattr(load, "_from_pretrained", watch)
    encode_with_t5(PROMPT, "tiny", stand_in=True, quantize_t5=False)
    assert len(refs) == 3
    assert [ref() for ref in refs] == [None, None, None]
