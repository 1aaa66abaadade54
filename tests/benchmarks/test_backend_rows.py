"""benchmarks/backend_rows.py: the GPU check's backend rows, run on the CPU stand-in."""

import importlib.util
import sys
from argparse import Namespace

import pytest
import torch
from conftest import REPO
from hypothesis import given
from hypothesis import strategies as st

from helpers.loading import memory_model
from tests.bad_inputs import property_settings  # noqa: F401 (the Hypothesis settings of the bad-input tests)


def load_script():
    spec = importlib.util.spec_from_file_location("backend_rows", REPO / "benchmarks" / "backend_rows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(tiny_dir, tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests"))
    from bnb_cpu_shim import bnb_cpu_shim

    script = load_script()
    args = Namespace(size=64, steps=2, scratch=tmp_path_factory.mktemp("scratch"))
    with bnb_cpu_shim():
        return {name: script.measure_backend_row(name, tiny_dir, args)
                for name in ("bf16", "nf4", "torchao-int8", "float8", "gguf-q4_0", "fp8-layerwise")}, args


def test_rows_measure_bytes_time_and_error_against_bf16(rows, tiny_dir):
    rows, args = rows
    counts = memory_model.folder_census(tiny_dir)["transformer"]
    for name, row in rows.items():
        if name == "float8":  # torchao's float8 kernels need CUDA sm_89+: the row says so, on the CPU
            assert row["status"].startswith("cannot run here: Float8 dynamic quantization requires CUDA"), row
            continue
        assert row["status"] == "ok", row
        assert row["held_bytes"] == row["model_bytes"] == memory_model.loaded_bytes(
            counts, torch.bfloat16, None if name == "bf16" else name)
        assert row["s_per_forward"] > 0 and row["transformer_s_per_image"] == 2 * row["s_per_forward"]
        assert row["plan"].startswith("backend: ") and "runs_on" in row
    assert rows["bf16"]["relative_error"] == 0
    assert 0 < rows["torchao-int8"]["relative_error"] < rows["gguf-q4_0"]["relative_error"] < 0.2
    assert 0 < rows["nf4"]["relative_error"] < 0.2
    # Every column notebook 07 shows for the GPU rows is one the row has (GPU memory only on CUDA).
    from helpers.loading import quantization_backends as backends

    shown = backends.measured_rows([{"meta": {"device": "CPU"}, "rows": [rows["torchao-int8"]]}])[0]
    assert set(backends.GPU_COLUMNS) - {"gpu_bytes"} <= set(shown) and shown["error"].endswith("%")
    # The GGUF file was written from the folder's weights into scratch, and is reused.
    assert rows["gguf-q4_0"]["gguf_file_bytes"] == next(args.scratch.glob("*-Q4_0.gguf")).stat().st_size


def test_unknown_backend_is_refused_before_any_work(tiny_dir):
    script = load_script()
    with pytest.raises(ValueError, match="backend must be one of"):
        script.measure_backend_row("q3_k", tiny_dir, Namespace())
    assert script.backend_key("backend: torchao int8 weight-only") == script.backend_key("torchao-int8") == "torchao-int8"
    assert script.backend_key("GGUF Q4_0") == "gguf-q4_0"


# Hardening (issue 27 §5, class 12): a bogus backend, a missing folder and a damaged cached GGUF are
# refused before any weights are read.
BOGUS = st.text(max_size=12).filter(lambda name: name not in BACKEND_KEYS)
BACKEND_KEYS = ("bf16", "nf4", "int8", "torchao-int8", "float8", "gguf-q8_0", "gguf-q4_0", "fp8-layerwise")


def weightless_folder(tmp_path_factory, tiny_dir):
    """The stand-in's transformer config without its weights: any load from it would fail."""
    folder = tmp_path_factory.mktemp("weightless")
    (folder / "transformer").mkdir()
    (folder / "transformer" / "config.json").write_text((tiny_dir / "transformer" / "config.json").read_text())
    return folder


@given(name=BOGUS)
def test_a_bogus_backend_is_refused_before_loading_weights(tmp_path_factory, tiny_dir, name):
    script = load_script()
    with pytest.raises(ValueError, match="backend must be one of"):
        script.load_transformer(name, weightless_folder(tmp_path_factory, tiny_dir), torch.bfloat16, "cpu",
                                tmp_path_factory.mktemp("scratch"))


def test_a_missing_folder_is_named_not_looked_up_on_the_hub(tmp_path):
    script = load_script()
    missing = tmp_path / "no-such-pipeline"
    with pytest.raises(FileNotFoundError, match="no such folder: .*no-such-pipeline"):
        script.load_transformer("bf16", missing, torch.bfloat16, "cpu", tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        script.measure_backend_row("bf16", missing, Namespace(scratch=tmp_path))
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline folder"):
        script.load_transformer("nf4", tmp_path, torch.bfloat16, "cpu", tmp_path)


def small_gguf(path):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="sd3")
    writer.add_tensor("a.weight", np.ones((32, 64), np.float16))
    writer.add_tensor("b.bias", np.zeros(64, np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@given(cut=st.floats(0, 0.999), magic=st.binary(min_size=4, max_size=4).filter(lambda m: m != b"GGUF"),
       truncate=st.booleans())
def test_a_damaged_cached_gguf_is_refused_before_diffusers_reads_it(tmp_path_factory, tiny_dir, cut, magic, truncate):
    script = load_script()
    scratch = tmp_path_factory.mktemp("scratch")
    good = small_gguf(scratch / "good.gguf")
    script.check_gguf(scratch / "good.gguf")  # the control: a whole file reads
    damaged = good[:int(len(good) * cut)] if truncate else magic + good[4:]  # cut short, or not GGUF
    cached = scratch / f"{tiny_dir.name}-transformer-Q4_0.gguf"
    cached.write_bytes(damaged)
    with pytest.raises(ValueError, match="cached GGUF file .* is damaged .*delete it and run again"):
        script.gguf_file(tiny_dir, "Q4_0", scratch)
    assert cached.read_bytes() == damaged  # refused, not overwritten
