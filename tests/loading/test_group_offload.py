"""Group offloading (helpers.loading.group_offload): what it keeps on the GPU per phase, where the planner
takes it, and that diffusers' group-offload hooks run the stand-in's bitsandbytes 4-bit transformer."""

import json

import pytest
import torch

import helpers
from helpers.loading import group_offload, host_memory, memory_model
from helpers.loading.architectures import TRANSFORMER_CONFIGS
from helpers.loading.hardware_profiles import get_profile, plan_on


@pytest.mark.parametrize("family", ["large", "medium"])
def test_the_block_counts_are_the_published_architectures(family):
    rebuilt = group_offload._census_by_block(json.dumps(TRANSFORMER_CONFIGS[family], sort_keys=True, default=list))
    assert rebuilt == group_offload.FULL_SIZE_BLOCKS[family]
    block, rest = rebuilt
    whole = memory_model.FULL_SIZE[family]["transformer"]
    layers = TRANSFORMER_CONFIGS[family]["num_layers"]
    assert whole.linear_weights - rest.linear_weights <= layers * block.linear_weights  # the largest block bounds all


def test_group_offload_keeps_two_blocks_and_every_4bit_quant_state_on_the_gpu():
    plan = plan_on(get_profile("RTX 4060 8 GB"), "sd35-large-nf4", quantize_t5=True, offload="group")
    counts, groups = memory_model.FULL_SIZE["large"], plan.groups
    block, rest = group_offload.FULL_SIZE_BLOCKS["large"]
    states = group_offload.quant_state_bytes(counts["transformer"]) + group_offload.quant_state_bytes(
        counts["text_encoder_3"])
    assert groups.denoise == (memory_model.loaded_bytes(rest, plan.dtype, "nf4")
                              + 2 * memory_model.loaded_bytes(block, plan.dtype, "nf4") + states)
    weights = plan.estimated_bytes
    assert groups.text == weights["text_encoder_3"] + weights["text_encoder_2"] + states
    # Loading: the transformer is group-offloaded before T5 loads, so one 4-bit component at a time.
    assert groups.loading == max(weights["transformer"], weights["text_encoder_3"]) + states
    assert groups.loading < weights["transformer"] + weights["text_encoder_3"]
    phases = plan.gpu_phases
    assert phases["denoise"] == groups.denoise + plan.working.denoise < weights["transformer"]
    # Host RAM: a pinned copy of every offloaded weight, as with model offload.
    assert plan.host_bytes_needed >= plan.total_bytes + host_memory.CUDA_LOAD_HOST_BYTES
    assert plan.fits and plan.offload == "group"


def test_the_8_and_12_gb_cards_take_group_offload_where_it_is_the_better_plan():
    eight, twelve = get_profile("RTX 4060 8 GB"), get_profile("RTX 3060 12 GB")
    nf4 = plan_on(eight, "sd35-large-nf4")  # NF4 + NF4 T5, blocks streamed: T5 kept, no wait per prompt
    assert (nf4.t5, nf4.offload) == ("nf4", "group"), nf4.reason
    assert "one transformer block at a time" in nf4.reason
    # The model offload with staged T5 is faster per image: named as not picked.
    assert any(b.get("staged_t5") and b["offload"] == "model" for b in nf4.better)
    bf16 = plan_on(twelve, "sd35-large")  # bf16 Large with its full T5: blocks, not layers
    assert (bf16.t5, bf16.offload) == ("full", "group") and bf16.fits
    sequential = plan_on(twelve, "sd35-large", offload="sequential")
    assert sequential.gpu_bytes_needed < bf16.gpu_bytes_needed  # layer by layer holds less, but is far slower
    assert plan_on(twelve, "sd35-large-nf4").offload == "model"  # model offload fits: it ranks higher


def test_group_offload_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="unified memory"):
        plan_on(get_profile("Apple M2 16 GB"), "sd35-medium", offload="group")
    with pytest.raises(ValueError, match="8-bit"):
        plan_on(get_profile("RTX 4090 24 GB"), "sd35-large-8bit", offload="group")
    plan = plan_on(get_profile("RTX 4060 8 GB"), "sd35-large-nf4", offload="group")
    from helpers.loading.checks import check_fast

    with pytest.raises(ValueError, match="fast=True cannot speed up offload='group'"):
        check_fast(plan, True)


def test_group_offload_hooks_run_the_stand_ins_4bit_transformer(bnb_cpu):
    """The same hooks load_pipeline installs, on the CPU (onload and offload both "cpu": no stream, the
    copies are no-ops): the 4-bit layers keep their quant state, and the image is the one without hooks."""
    import bitsandbytes as bnb
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    pipe = helpers.load_pipeline("sd35-large-nf4", stand_in=True)
    before = helpers.generate(pipe, "a lighthouse", num_inference_steps=2)
    group_offload.apply_group_offload(pipe.transformer, "cpu")
    group_offload.apply_group_offload(pipe, "cpu", skip=("transformer",))
    assert all(_is_group_offload_enabled(c) for c in pipe.components.values() if isinstance(c, torch.nn.Module))
    layers = [m for m in pipe.transformer.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.quant_state is not None for m in layers)
    after = helpers.generate(pipe, "a lighthouse", num_inference_steps=2)
    assert after.image.tobytes() == before.image.tobytes()
    assert after.recipe["quantization"] == "nf4"
    helpers.release_current_pipeline()  # no pipeline left held for the next test (load_pipeline's order of checks)
