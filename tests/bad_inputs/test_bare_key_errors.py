"""Class 8 (rest): original_sd3_state_dict and the quantization_backends functions name what is
wrong (an unknown backend or family, a state dict missing a key, rows without their columns)
instead of raising a bare KeyError."""

import property_settings  # noqa: F401 (the folder's Hypothesis settings)
import pytest
import torch
from diffusers import SD3Transformer2DModel
from hypothesis import given
from hypothesis import strategies as st

from helpers.loading import gguf_checkpoints, memory_model
from helpers.loading import quantization_backends as backends
from helpers.loading.hardware_profiles import get_profile
from helpers.stand_in import TRANSFORMER_CONFIG

SMALL = dict(TRANSFORMER_CONFIG, sample_size=8, pos_embed_max_size=8)
STATE = SD3Transformer2DModel(**SMALL).state_dict()
# The q/k norms are optional in the original keys (only with qk_norm): every other key is required.
REQUIRED = sorted(k for k in STATE if ".norm_q." not in k and ".norm_k." not in k and ".norm_added_" not in k)
NAMES = st.one_of(st.text(max_size=12), st.none(), st.integers())


@given(key=st.sampled_from(REQUIRED))
def test_a_state_dict_missing_a_key_is_named(key):
    state = {k: v for k, v in STATE.items() if k != key}
    with pytest.raises(ValueError, match=f"state_dict has no '{key}'.*whole SD3Transformer2DModel"):
        gguf_checkpoints.original_sd3_state_dict(state, SMALL["num_layers"])


@given(extra=st.integers(1, 3))
def test_too_many_layers_or_a_bad_count_is_named(extra):
    with pytest.raises(ValueError, match=r"state_dict has no 'transformer_blocks\.\d+\..*num_layers"):
        gguf_checkpoints.original_sd3_state_dict(STATE, SMALL["num_layers"] + extra)
    with pytest.raises(ValueError, match="num_layers must be a whole number"):
        gguf_checkpoints.original_sd3_state_dict(STATE, 1 - extra)
    with pytest.raises(TypeError, match="state_dict must be a transformer's state dict"):
        gguf_checkpoints.original_sd3_state_dict(list(STATE), SMALL["num_layers"])


@given(name=NAMES.filter(lambda n: n not in backends.BACKENDS))
def test_an_unknown_backend_is_named(name):
    profile = get_profile("free Colab T4")
    for call in (lambda: backends.source_says(name), lambda: backends.runs_on_profile(name, profile),
                 lambda: backends.measure(name, load=lambda: None, bench=None)):
        with pytest.raises(ValueError, match="backend must be one of 'bf16'"):
            call()


@given(name=NAMES.filter(lambda n: n not in memory_model.FULL_SIZE))
def test_an_unknown_family_or_left_out_name_is_named(name):
    with pytest.raises(ValueError, match="family must be one of 'large'"):
        backends.full_size_bytes(name)
    with pytest.raises(ValueError, match="name must be one of .optimum-quanto"):
        backends.left_out_says(name)


@given(missing=st.sampled_from(["in_channels", "joint_attention_dim", "pooled_projection_dim"]))
def test_a_config_without_a_needed_field_is_named(missing):
    config = {k: v for k, v in TRANSFORMER_CONFIG.items() if k != missing}
    with pytest.raises(ValueError, match="config must be a transformer's config"):
        backends.forward_inputs(config, 64, dtype=torch.float32, device="cpu")
    assert backends.forward_inputs(TRANSFORMER_CONFIG, 64, dtype=torch.float32, device="cpu")["hidden_states"].shape[-1] == 8


@given(row=st.dictionaries(st.sampled_from(["status", "relative_error", "gpu", "s_per_forward"]), st.just("x")))
def test_rows_without_their_columns_are_named(row):
    with pytest.raises(ValueError, match="rows must be dicts with backend"):
        backends.chooser([row])
    with pytest.raises(ValueError, match="measured must be dicts with backend"):
        backends.chooser([], [row])
    with pytest.raises(ValueError, match="results must be dicts with meta, rows"):
        backends.measured_rows([row])
    with pytest.raises(ValueError, match="results' meta must name the device"):
        backends.measured_rows([{"meta": {}, "rows": []}])
