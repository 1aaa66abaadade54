"""The planner's bytes for the stand-in, held to a count made another way: the tensors listed in the
safetensors files on disk (read from their headers, not through memory_model), at the plan's dtype.

Two differences are derived by hand: each CLIP text encoder builds a `position_ids` buffer at load
(int64, max_position_embeddings = 77 entries: 616 bytes) that is not in its file; and under float16
transformers keeps T5's `wo` weights in float32 (T5's `_keep_in_fp32_modules`), 2 more bytes each.
Quantized components have no such reference on disk: they are held to the bytes bitsandbytes really
allocates (test_memory_model.test_rule_matches_the_stand_in_byte_for_byte)."""

import json
import struct

import pytest
import torch

from helpers.loading.planner import plan_loading

STORED = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1}
CLIP_POSITION_IDS = 77 * 8


def tensors_on_disk(folder):
    """[(name, dtype as stored, element count)] from every safetensors header in `folder`."""
    found = []
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        for name, entry in header.items():
            count = 1
            for dim in entry["shape"]:
                count *= dim
            found.append((name, entry["dtype"], count))
    assert found, f"no safetensors in {folder}"
    return found


def expected_bytes(folder, component, dtype):
    size = torch.finfo(dtype).bits // 8
    total = 0
    for name, stored, count in tensors_on_disk(folder / component):
        floating = stored in ("F32", "F16", "BF16")
        kept_fp32 = component == "text_encoder_3" and dtype == torch.float16 and ".wo." in name
        total += count * (4 if kept_fp32 else size if floating else STORED[stored])
    if component in ("text_encoder", "text_encoder_2"):
        total += CLIP_POSITION_IDS
    return total


@pytest.mark.parametrize("drop_t5", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_stand_in_plan_bytes_are_the_state_dicts_on_disk(tiny_dir, dtype, drop_t5):
    plan = plan_loading("tiny", stand_in=True, dtype=dtype, drop_t5=drop_t5)
    components = {"transformer", "text_encoder", "text_encoder_2", "vae"} | ({"text_encoder_3"} if not drop_t5 else set())
    assert set(plan.estimated_bytes) == components
    for component in components:
        assert plan.estimated_bytes[component] == expected_bytes(tiny_dir, component, dtype), component
