"""The working-memory constants of memory_model held to what the committed GPU rows measured
(benchmarks/results/*.json), each on its own: a total of 10 GiB hides a 0.05 GiB constant, so each
constant is compared with the part of a row that it alone predicts. Fails, never skips, without rows."""

import json
from pathlib import Path

import pytest
import torch

from helpers.loading import memory_model
from helpers.measuring import GiB

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _rows():
    files = sorted(RESULTS.glob("*.json"))
    assert files, f"no committed GPU results in {RESULTS}: run `make gpu-check` on a GPU and commit them"
    rows = []
    for file in files:
        data = json.loads(file.read_text())
        rows += [(data["meta"], row) for row in data["rows"] if row.get("status") == "ok" and row.get("load_pipeline")]
    return rows


def test_text_encoding_bytes_is_what_encoding_added_above_t5_and_clip_g():
    """Under model offload the peak is the text phase: T5 and CLIP-G on the GPU together, plus the
    encoding's activations. Measured: peak allocated minus the two encoders' measured bytes (H200:
    10.21 GiB - 10.16 GiB = 0.046 GiB). TEXT_ENCODING_BYTES must be that within 25%; 0.5x or 2x fails."""
    rows = [row for _, row in _rows() if row["load_pipeline"].get("offload") == "model" and row.get("measured_bytes")]
    assert rows, "no measured model-offload row"
    for row in rows:
        encoders = row["measured_bytes"]["text_encoder_3"] + row["measured_bytes"]["text_encoder_2"]
        encoding = row["peak_allocated_bytes"] - encoders
        assert 0 < encoding < 0.5 * GiB, (row["plan"], encoding / GiB)  # the row is the text phase's peak
        ratio = memory_model.TEXT_ENCODING_BYTES / encoding
        assert 0.8 <= ratio <= 1.25, (row["plan"], memory_model.TEXT_ENCODING_BYTES / GiB, encoding / GiB)


def test_activation_widths_give_the_measured_denoising_memory():
    """Denoising's working memory above the weights (`denoise_working_bytes`, H200: 0.50 GiB for Large
    at 1024x1024, CFG batch 2, uncompiled, no offload) against phase_working's denoise phase, which is
    CFG_BATCH x tokens x hidden x 2 bytes x ACTIVATION_WIDTHS = 2 x 4429 x 2432 x 2 x 13 = 0.52 GiB.
    Within 10%: any width but 12 or 13 fails (11 gives 0.88x, 14 gives 1.11x)."""
    checked = 0
    for meta, row in _rows():
        options = row["load_pipeline"]
        if options.get("offload") != "none" or options.get("fast") or not row.get("denoise_working_bytes"):
            continue  # offload moves weights mid-phase; compiled runs fuse activations away
        family = "medium" if "medium" in options["model"] else "large"
        dtype = getattr(torch, options.get("dtype", row["dtype"]))
        predicted = memory_model.phase_working(family, meta["size"], dtype).denoise
        ratio = predicted / row["denoise_working_bytes"]
        assert 0.9 <= ratio <= 1.1, (row["plan"], predicted / GiB, row["denoise_working_bytes"] / GiB)
        checked += 1
    assert checked >= 2, "fewer than two uncompiled, unoffloaded rows measured denoising"


def test_the_hand_derived_denoise_figure():
    """The same figure by hand, for Large (38 heads x 64 = 2432 wide; (1024/16)^2 = 4096 image tokens
    + 333 text tokens) in bf16: 2 x 4429 x 2432 x 2 x 13 = 560,109,056 bytes."""
    assert memory_model.phase_working("large", 1024, torch.bfloat16).denoise == 2 * 4429 * 2432 * 2 * 13
    assert memory_model.phase_working("large", 1024, torch.bfloat16).denoise == 560_109_056


@pytest.mark.parametrize("name", ["TEXT_ENCODING_BYTES", "ACTIVATION_WIDTHS"])
def test_each_constant_is_marked_measured(name):
    source = (Path(memory_model.__file__)).read_text()
    line = next(line for line in source.splitlines() if line.startswith(f"{name} ="))
    assert "MEASURED" in line
